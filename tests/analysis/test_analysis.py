"""The Inspect engine on a tiny random model: scores equal direct scoring, the cache avoids model calls, and the
recomputed views equal the loss functions on the same inputs."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import torch

from playground import config
from playground.analysis.cache import InspectCache, adapter_identity  # noqa: E402
from playground.analysis.curves import pair_focus  # noqa: E402
from playground.analysis.datasets import prepare_pairs, unpaired_view  # noqa: E402
from playground.analysis.precomputed import load_precomputed, save_precomputed  # noqa: E402
from playground.analysis.scores import score_dataset  # noqa: E402
from playground.analysis.views import InspectSettings, analyse, summary_json  # noqa: E402
from playground.engine import packed as packed_module  # noqa: E402
from playground.engine import scoring as scoring_module  # noqa: E402
from playground.engine.scoring import score  # noqa: E402
from playground.objectives.dpo import dpo_loss  # noqa: E402
from playground.objectives.kto import kto_loss, mismatched_pairs  # noqa: E402
from playground.objectives.prospect import value_report  # noqa: E402
from playground.objectives.thresholds import TAU_METHODS  # noqa: E402
from playground.objectives.value_functions import ALPHA_GRID, ValueInputs  # noqa: E402

PAIRS = pd.DataFrame({
    "prompt": ["What is 2+2?", "Name a yellow fruit.", "Say hi.", "Capital of France?", "A colour?",
               '[{"role": "user", "content": "Count to three."}]'],
    "chosen": ["4.", "A banana.", "Hi there!", "Paris.", "Blue.", "One, two, three."],
    "rejected": ["5.", "A cucumber, obviously.", "No.", "Lyon, I think.", "Seven.", "Three."],
    "reference": ["4", "banana", "", "Paris", "", "one two three"],
})
VARIANTS = ["base", "dpo", "kto"]


def direct(engine, prompts, responses, adapter):
    with engine.lock:
        return score(engine.model, engine.tokenizer, prompts, responses, adapter=adapter)


@pytest.fixture()
def scored(tiny_engine):
    cache = InspectCache()
    events = []
    scores = score_dataset(tiny_engine, PAIRS, VARIANTS, lambda f, m: events.append((f, m)), cache=cache)
    return tiny_engine, cache, scores, events


def test_scores_equal_direct_scoring(scored):
    engine, cache, scores, events = scored
    pairs = scores.pairs
    assert scores.n_pairs == 6 and scores.variants == VARIANTS
    assert isinstance(pairs["prompt"][5], list)  # a JSON chat prompt became messages
    prompts = list(pairs["prompt"])
    for variant, adapter in (("dpo", "dpo"), ("kto", "kto"), ("base", "__base__")):
        side = scores.side(variant)
        chosen = direct(engine, prompts, list(pairs["chosen"]), adapter)
        rejected = direct(engine, prompts, list(pairs["rejected"]), adapter)
        np.testing.assert_allclose(side.chosen_sum, chosen.sum_logps.numpy(), atol=1e-4)
        np.testing.assert_allclose(side.rejected_sum, rejected.sum_logps.numpy(), atol=1e-4)
        np.testing.assert_array_equal(side.chosen_len, chosen.lengths.numpy())
        np.testing.assert_allclose(side.rejected_mean, rejected.mean_logps.numpy(), atol=1e-4)
        # mismatched pairs of the unpaired view: sample k = (x_k, y_{k+1 mod 2P})
        up_prompts, completions, _, _ = unpaired_view(pairs)
        index = mismatched_pairs(12).tolist()
        kl = direct(engine, up_prompts, [completions[j] for j in index], adapter)
        np.testing.assert_allclose(side.kl_sum, kl.sum_logps.numpy(), atol=1e-4)
    assert scores.side("base") is scores.reference
    # adapters really differ from the reference, so the checks above are not vacuous
    assert not np.allclose(scores.side("dpo").chosen_sum, scores.reference.chosen_sum)
    assert events[0][0] == 0.0 and events[-1][0] == pytest.approx(1.0)
    assert all(a[0] <= b[0] for a, b in zip(events, events[1:]))


def test_cache_hit_makes_no_model_call(scored, monkeypatch):
    engine, cache, scores, _ = scored
    calls = []
    real, real_packed = score, packed_module.packed_sequence_logps
    monkeypatch.setattr(scoring_module, "score", lambda *a, **k: calls.append(1) or real(*a, **k))
    monkeypatch.setattr(packed_module, "packed_sequence_logps", lambda *a, **k: calls.append(1) or real_packed(*a, **k))
    again = score_dataset(engine, PAIRS, VARIANTS, cache=cache)
    assert calls == []
    np.testing.assert_array_equal(again.side("kto").kl_sum, scores.side("kto").kl_sum)
    # a subset of variants is served from the cache too; only a new adapter identity would score again
    score_dataset(engine, PAIRS, ["dpo"], cache=cache)
    assert calls == []
    # a different data set is scored
    score_dataset(engine, PAIRS.iloc[:3], ["dpo"], cache=cache)
    assert calls


def test_cache_is_bounded_lru():
    cache = InspectCache(max_entries=2)
    cache.put(("a", "", "", ""), 1)
    cache.put(("b", "", "", ""), 2)
    assert cache.get(("a", "", "", "")) == 1  # "a" is now the most recent
    cache.put(("c", "", "", ""), 3)
    assert ("b", "", "", "") not in cache and len(cache) == 2
    assert InspectCache().max_entries == 16


def test_adapter_identity_changes_with_the_file(tiny_engine):
    before = adapter_identity(tiny_engine, "dpo")
    path = tiny_engine.adapters["dpo"].path / "adapter_model.safetensors"
    stat = path.stat()
    import os

    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    assert adapter_identity(tiny_engine, "dpo") != before
    assert adapter_identity(tiny_engine, "base") == config.BASE_VARIANT


LOSS_CASES = [("sigmoid", 0.0), ("sigmoid", 0.1), ("ipo", 0.0), ("hinge", 0.0), ("robust", 0.2)]


def test_analyse_matches_loss_functions(scored):
    _, _, scores, _ = scored
    for dpo_loss_type, smoothing in LOSS_CASES:  # one scoring for every case: the tiny engine is slow to build
        check_losses(scores, dpo_loss_type, smoothing)


def check_losses(scores, dpo_loss_type, smoothing):
    settings = InspectSettings(beta=0.3, dpo_loss_type=dpo_loss_type, label_smoothing=smoothing,
                                        desirable_weight=1.2, undesirable_weight=0.9)
    result = analyse(scores, "dpo", settings)
    pol, ref = scores.side("dpo"), scores.reference
    t = torch.as_tensor
    expected = dpo_loss(t(pol.chosen_sum), t(pol.rejected_sum), t(ref.chosen_sum), t(ref.rejected_sum),
                               beta=0.3, loss_type=dpo_loss_type, label_smoothing=smoothing,
                               chosen_lengths=t(pol.chosen_len), rejected_lengths=t(pol.rejected_len))
    np.testing.assert_allclose(result.pairs["dpo_loss"], expected.loss.numpy(), rtol=1e-12)
    np.testing.assert_allclose(result.pairs["margin"], expected.margin.numpy(), rtol=1e-12)
    np.testing.assert_allclose(result.pairs["grad_weight"], expected.grad_weight.numpy(), rtol=1e-12)
    assert result.summary.preference_accuracy == pytest.approx(expected.accuracy)
    assert result.summary.mean_dpo_loss == pytest.approx(expected.loss.mean().item())
    # the scatter axes: policy log-ratio - reference log-ratio = D
    np.testing.assert_allclose(result.pairs["policy_logratio"] - result.pairs["ref_logratio"],
                               result.pairs["delta"], atol=1e-9)

    n = scores.n_pairs
    kto = kto_loss(t(np.r_[pol.chosen_sum, pol.rejected_sum]), t(np.r_[ref.chosen_sum, ref.rejected_sum]),
                          torch.arange(2 * n) < n, t(pol.kl_sum), t(ref.kl_sum), beta=0.3, desirable_weight=1.2,
                          undesirable_weight=0.9)
    np.testing.assert_allclose(result.samples["kto_loss"], kto.loss.numpy(), rtol=1e-12)
    assert result.summary.z0 == pytest.approx(kto.z0.item())
    assert (result.samples["label"] == "desirable").sum() == n
    np.testing.assert_allclose(result.pairs["kto_loss_rejected"], kto.loss.numpy()[n:], rtol=1e-12)


def test_base_variant_is_the_reference(scored):
    _, _, scores, _ = scored
    result = analyse(scores, "base")
    assert np.allclose(result.pairs["dpo_loss"], math.log(2))
    assert result.summary.z0 == 0.0


def test_value_views_match_values_module(scored):
    _, _, scores, _ = scored
    for construction in ("likelihood", "reward", "hybrid"):
        for tau_method in TAU_METHODS:
            check_values(scores, construction, tau_method)


def check_values(scores, construction, tau_method):
    settings = InspectSettings(construction=construction, tau_method=tau_method, calibrate=True,
                                        likelihood_reduce="sum", loss_aversion=2.0, alpha=0.4, task_metric="rougeL")
    result = analyse(scores, "kto", settings)
    pol, ref = scores.side("kto"), scores.reference
    task = scores.task_scores("rougeL")
    t = torch.as_tensor
    inputs = ValueInputs(
        policy_sum_logps=t(np.r_[pol.chosen_sum, pol.rejected_sum]), lengths=t(np.r_[pol.chosen_len, pol.rejected_len]),
        reference_sum_logps=t(np.r_[ref.chosen_sum, ref.rejected_sum]),
        task_scores=t(np.r_[task["chosen"], task["rejected"]]))
    report = value_report(inputs, settings.value_config(), beta=settings.beta,
                                 kl_logratios=t(pol.kl_sum - ref.kl_sum))
    np.testing.assert_allclose(result.samples["V"], report.values.value.numpy(), rtol=1e-9)
    np.testing.assert_allclose(result.samples["prospect_value"], report.prospect.value.numpy(), rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(result.samples["source_objective"], report.prospect.source_objective.numpy(),
                               rtol=1e-9, atol=1e-12)
    assert result.summary.tau == pytest.approx(report.tau.tau)
    assert result.taus[tau_method] == pytest.approx(report.tau.tau)
    assert set(result.taus) == set(TAU_METHODS)
    assert len(result.alpha_search.alphas) == len(ALPHA_GRID)
    # rows without a reference answer fell back to another metric, and the note says so
    assert any("fell back" in note for note in result.notes)


def test_pair_focus_and_summary_json(scored):
    _, _, scores, _ = scored
    for variant in ("sigmoid", "ipo"):
        result = analyse(scores, "dpo", InspectSettings(dpo_loss_type=variant))
        focus = pair_focus(result, scores, 2)
        assert focus["policy_logratio"] - focus["ref_logratio"] == pytest.approx(focus["delta"])
        assert focus["loss"] == pytest.approx(result.pairs["dpo_loss"][2])
        assert len(focus["curve_x"]) == len(focus["curve_y"]) == 201
        assert focus["samples"] == [2, 8]
    data = summary_json(result)
    import json

    json.dumps(data, allow_nan=False)
    assert data["settings"]["dpo_loss_type"] == "ipo"
    with pytest.raises(IndexError):
        pair_focus(result, scores, 99)


def test_settings_from_mapping():
    settings = InspectSettings.from_mapping({"beta": "0.2", "calibrate": "true", "unknown": 1})
    assert settings.beta == 0.2 and settings.calibrate is True
    assert InspectSettings.from_mapping(None) == InspectSettings()


def test_unpaired_input_is_paired_and_unknown_variant_refused(tiny_engine):
    unpaired = pd.DataFrame({"prompt": ["a?", "a?", "b?", "b?"], "completion": ["yes", "no", "ok", "bad"],
                             "label": [True, False, True, False]})
    pairs, notes = prepare_pairs(unpaired)
    assert list(pairs["chosen"]) == ["yes", "ok"] and list(pairs["rejected"]) == ["no", "bad"] and notes
    with pytest.raises(KeyError):
        score_dataset(tiny_engine, PAIRS, ["nope"])
    with pytest.raises(ValueError):
        prepare_pairs(pd.DataFrame({"prompt": ["x"], "answer": ["y"]}))


def test_disk_cache_roundtrip_and_staleness(scored, tmp_path, monkeypatch):
    engine, _, scores, _ = scored
    path = save_precomputed(engine, scores, tmp_path / "cache.json")
    fresh = InspectCache()
    loaded = load_precomputed(engine, PAIRS, fresh, path)
    assert loaded is not None and loaded.from_disk and loaded.variants == VARIANTS
    np.testing.assert_array_equal(loaded.side("dpo").kl_sum, scores.side("dpo").kl_sum)
    calls = []
    monkeypatch.setattr(scoring_module, "score", lambda *a, **k: calls.append(1))
    score_dataset(engine, PAIRS, VARIANTS, cache=fresh)  # served by what the file put in the cache
    assert calls == []
    # another data set: stale
    assert load_precomputed(engine, PAIRS.iloc[:4], None, path) is None
    # a changed adapter file: that adapter's entry is dropped, the rest stays
    weights = engine.adapters["kto"].path / "adapter_model.safetensors"
    weights.write_bytes(weights.read_bytes() + b" ")
    partial = load_precomputed(engine, PAIRS, None, path)
    assert partial is not None and partial.variants == ["base", "dpo"]
    assert load_precomputed(engine, PAIRS, None, tmp_path / "missing.json") is None
