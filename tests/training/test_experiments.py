"""The claims experiments' runner on the tiny model: a two-point sweep trains, measures, and writes its JSON with
what reproduces it; the run lists hold the data and settings each claim needs."""

from __future__ import annotations

import pandas as pd
import pytest
import torch
from conftest import make_tiny_model

from playground import config
from playground.cli.experiments import main
from playground.engine.device import DeviceChoice
from playground.training import experiments

CPU = DeviceChoice(torch.device("cpu"), torch.float32, None)
PROMPTS = [f"Question {i}?" for i in range(8)]
PAIRS = pd.DataFrame({"prompt": PROMPTS, "chosen": ["Yes, gladly."] * 8, "rejected": ["Go away."] * 8})


def test_the_claims_run_lists():
    compute = experiments.compute_runs(PAIRS, steps=3)
    assert [r.method for r in compute] == ["dpo", "kto", "simpo", "orpo"]
    assert len(compute[1].rows) == 2 * len(PAIRS) and set(compute[1].rows.columns) >= {"completion", "label"}
    assert compute[2].train_config.loss.beta == 2.0 and compute[0].train_config.loss.beta == 0.1
    assert not compute[0].train_config.early_stopping.enabled and not compute[0].train_config.probes.enabled
    unpaired = experiments.unpaired_runs(PAIRS, steps=3)
    assert [len(r.rows) for r in unpaired] == [8, 16, 8]  # thumbs-only: one judgment per prompt
    noise = experiments.noise_runs(PAIRS, steps=3, rates=(0.0, 0.25), seeds=(0, 1))
    assert len(noise) == 2 * 2 * 3 and {r.x for r in noise} == {0.0, 0.25}
    robust = [r for r in noise if r.train_config.loss.dpo_loss_type == "robust" and r.x == 0.25][0]
    assert robust.train_config.loss.label_smoothing == 0.25
    flipped = noise[3].rows  # seed 0, rate 0.25, DPO
    assert (flipped["chosen"] == "Go away.").sum() == 2
    imbalance = experiments.imbalance_runs(PAIRS, steps=3, shares=(0.2,))
    plain, ruled = imbalance
    assert int(plain.rows["label"].sum()) == 2 and int((~plain.rows["label"]).sum()) == 8
    ratio = ruled.train_config.loss.desirable_weight * 2 / (ruled.train_config.loss.undesirable_weight * 8)
    assert 1.0 <= ratio <= 4 / 3 + 1e-9 and plain.train_config.loss.desirable_weight == 1.0


def test_a_two_point_sweep_trains_measures_and_writes_its_json(tokenizer, tmp_path):
    specs = experiments.noise_runs(PAIRS, steps=2, rates=(0.0, 0.5))[::3]  # DPO at 0% and at 50% flips
    seen = []
    records = experiments.run_experiment(specs, lambda: make_tiny_model(len(tokenizer), 0), tokenizer, CPU,
                                         PAIRS.head(4), progress=lambda d, t, label: seen.append((d, t, label)))
    assert seen == [(1, 2, "noise: DPO"), (2, 2, "noise: DPO")]
    assert [r["x"] for r in records] == [0.0, 0.5] and all(r["method"] == "dpo" for r in records)
    for record in records:
        assert 0.0 <= record["heldout_accuracy"] <= 1.0 and record["heldout_pairs"] == 4
        assert record["seconds_per_step"] > 0 and record["peak_memory_mb"] > 0
        assert record["answers"]["base"]["answers"] >= 1 and record["settings"]["steps"] == 2
    assert records[0]["rows_sha256"] != records[1]["rows_sha256"]  # the flipped rows are other data
    payload = experiments.results_payload(records, command="python -m playground.experiments noise", base="tiny",
                                          device="cpu", data={"train": "abc"})
    assert payload["format"] == experiments.RESULTS_FORMAT and payload["command"].endswith("noise")
    assert set(payload["versions"]) == {"python", "torch", "transformers", "peft"} and len(payload["runs"]) == 2
    for record in records:  # a run's own memory: sampled during it, never below what it started with
        assert record["peak_memory_mb"] >= record["added_memory_mb"] >= 0
        assert "during the run" in record["memory_kind"]

    from playground.analysis.claims import load_results, merge_into

    combined = tmp_path / "claims_results.json"
    merge_into(combined, "compute", {"runs": [], "command": "earlier"})
    merge_into(combined, "noise", payload)
    merge_into(combined, "noise", payload)  # a claim measured again replaces its runs
    claims = load_results(combined)
    assert sorted(claims) == ["compute", "noise"] and len(claims["noise"]["runs"]) == 2
    assert claims["compute"]["command"] == "earlier"


def test_reference_free_runs_record_no_reference_pass(tokenizer):
    specs = experiments.compute_runs(PAIRS, steps=1, methods=("dpo", "simpo"))
    records = experiments.run_experiment(specs, lambda: make_tiny_model(len(tokenizer), 0), tokenizer, CPU,
                                         PAIRS.head(2))
    dpo, simpo = records
    assert simpo["reference_seconds"] <= 0.01 and dpo["reference_seconds"] > simpo["reference_seconds"]
    assert simpo["method"] in config.REFERENCE_FREE_METHODS


def test_every_claim_s_runs_and_the_command_that_makes_them():
    counts = {claim: len(experiments.claim_runs(claim, PAIRS, 2, (0, 1), (0.0, 0.5))) for claim in experiments.CLAIMS}
    assert counts == {"compute": 4, "unpaired": 3, "noise": 2 * 2 * 3, "imbalance": 6}
    sweep = config.ClaimSweep(steps=6, pairs=96, heldout=40, rates=(0.0, 0.4), seeds=(0,))
    assert experiments.sweep_command("noise", sweep, "r.json") == (
        "python -m playground.experiments noise --steps 6 --pairs 96 --heldout 40 --seeds 0 --rates 0 0.4 --out r.json")
    assert experiments.sweep_command("compute", sweep, "r.json").endswith("--seeds 0 --out r.json")


def test_the_cli_puts_a_claim_into_the_combined_file(tokenizer, monkeypatch, tmp_path, capsys):
    import playground.engine.base_model as base_model
    from playground.analysis.claims import load_results

    monkeypatch.setattr(base_model, "resolve_base_model", lambda name: "tiny")
    monkeypatch.setattr(base_model, "base_model_id", lambda source: "tiny")
    monkeypatch.setattr(base_model, "load_base_model", lambda source, device: (make_tiny_model(len(tokenizer), 0),
                                                                                tokenizer))
    combined = tmp_path / "claims_results.json"
    argv = ["unpaired", "--steps", "1", "--pairs", "8", "--heldout", "2", "--into", str(combined)]
    assert main(argv) == 0
    claims = load_results(combined)
    assert list(claims) == ["unpaired"] and len(claims["unpaired"]["runs"]) == 3
    assert claims["unpaired"]["command"] == "python -m playground.experiments " + " ".join(argv)
    assert f"wrote {combined}" in capsys.readouterr().out


def test_the_cli_refuses_bad_arguments(capsys):
    assert main(["compute", "--out", "x.json", "--steps", "0"]) == 2
    assert "--steps and --heldout must be >= 1" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["no-such-claim", "--out", "x.json"])
