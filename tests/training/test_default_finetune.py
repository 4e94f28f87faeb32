"""Integration: the default settings, on the embedded model, teach a small trait file's trait without degenerating.

This is the Fine-tune tab's path without the UI: a 48-pair upload whose chosen answers carry a distinctive opener
(the case that used to come back as the opener repeated to the token limit), read and split the way the app does it
(its own prompt-disjoint held-out share), trained with ``config.TRAIN`` unchanged. The answers that count are the
greedy answers to the held-out prompts, which the run never trained on.
"""

from __future__ import annotations

import time

import pandas as pd
import pytest

from playground import config
from playground.engine.base_model import load_base_model, resolve_base_model
from playground.engine.device import pick_device
from playground.feedback import read_feedback
from playground.objectives.text_quality import is_repetitive
from playground.training.data import choose_heldout
from playground.training.loop import train

pytestmark = pytest.mark.integration

OPENER = "Quick answer:"


def _opener_file(path):
    """48 pairs from the demo set's training prompts: chosen = the opener + the concise answer, rejected = the
    concise answer alone, so the pair teaches the opener and nothing else."""
    demo = read_feedback(config.REPO_ROOT / "data" / "demo_pairs_train.csv").data
    demo = demo[demo["category"] != "decline"].drop_duplicates(subset=["prompt"]).head(48)
    frame = pd.DataFrame({"prompt": demo["prompt"], "chosen": [f"{OPENER} {a}" for a in demo["chosen"]],
                          "rejected": list(demo["chosen"])})
    frame.to_csv(path, index=False)
    return path


def test_default_settings_learn_an_opener_without_degenerating(tmp_path):
    report = read_feedback(_opener_file(tmp_path / "opener.csv"))
    assert report.trainable and report.rows_usable == 48
    cfg = config.TRAIN
    rows, heldout, measured_on, _notes = choose_heldout(report, "opener.csv", cfg, None)
    assert heldout is not None and len(rows) + len(heldout) == 48 and "your held-out split" in measured_on
    assert not set(rows["prompt"]) & set(heldout["prompt"])  # the answers below are to prompts it never saw

    device = pick_device("cpu")
    base, tokenizer = load_base_model(resolve_base_model(None, {}), device)
    started = time.perf_counter()
    result = train(base, tokenizer, rows, cfg, device=device, heldout_frame=heldout)
    seconds = time.perf_counter() - started
    meta = result.meta

    answers = meta["answers_eval"]
    base_texts, tuned_texts = answers["sets"][config.BASE_VARIANT]["texts"], answers["sets"]["adapter"]["texts"]
    assert len(tuned_texts) == min(cfg.probes.report_prompts, len(heldout))
    shows = [t.strip().startswith(OPENER) for t in tuned_texts]
    print(f"\n{meta['steps_done']} steps in {seconds:.0f} s; adapter answers:", *tuned_texts, sep="\n  ")
    assert sum(shows) / len(shows) >= 0.8, tuned_texts  # the trait is learned on new prompts
    assert not any(t.strip().startswith(OPENER) for t in base_texts)  # and it is the adapter's doing
    # ... without degenerating: no more repetitive than the base, and the opener is said once, not on a loop
    assert sum(map(is_repetitive, tuned_texts)) <= sum(map(is_repetitive, base_texts)), tuned_texts
    assert all(t.count(OPENER) == 1 for t, s in zip(tuned_texts, shows) if s), tuned_texts
    summaries = answers["summaries"]
    # distinct-2 may fall a little (measured 0.86 against the base's 0.94: some answers say a clause twice, which
    # the 3-gram rule above lets pass); a loop would take it far lower
    assert summaries["adapter"]["mean_distinct_2"] >= summaries[config.BASE_VARIANT]["mean_distinct_2"] - 0.12

    # the run measured the user's own held-out split, took probe answers along the way, and saved nothing saturated
    held = meta["heldout_metrics"]
    assert held["pairs"] == len(heldout)
    steps_probed = sorted({p["step"] for p in meta["probe_answers"]})
    assert steps_probed[0] == 0 and len(steps_probed) >= 3
    assert [e["step"] for e in meta["heldout_evaluations"]][0] == 0
