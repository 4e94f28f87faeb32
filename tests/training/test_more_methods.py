"""SimPO, ORPO, APO-zero/down and BCO train through the same loop as DPO and KTO (``training.steps.METHODS``): the
loss falls, the first step has the value the objective gives when policy == reference, the reference-free methods
never run a reference pass, and the rows each method trains on come from ``config.METHOD_FORMATS``."""

from __future__ import annotations

import dataclasses

import pytest
from conftest import make_tiny_model
from test_training import CPU, PAIRS, UNPAIRED, tiny_config

from playground import config
from playground.objectives.registry import OBJECTIVES
from playground.training import steps
from playground.training.loop import train

NEW = ("simpo", "orpo", "apo_zero", "apo_down", "bco")


def test_the_method_table_agrees_with_the_objectives_registry():
    assert set(steps.METHODS) == set(config.METHOD_FORMATS) == set(config.METHOD_BETAS)
    for name, spec in OBJECTIVES.items():
        assert config.is_paired(name) == spec.paired, name
        assert (name in config.REFERENCE_FREE_METHODS) == (not spec.needs_reference), name
        assert config.METHOD_BETAS[name] == spec.defaults.get("beta", config.LOSS.beta), name
    assert OBJECTIVES["simpo"].defaults["gamma"] == config.LOSS.simpo_gamma


# the preference part of the first step's loss, when the adapter is still zero (policy == reference)
FIRST_STEP = {"apo_zero": 1.0, "apo_down": 1.0, "bco": 0.693147}


@pytest.mark.parametrize("method", NEW)
def test_each_new_method_trains(tokenizer, method, monkeypatch):
    frame = PAIRS if config.is_paired(method) else UNPAIRED
    reference_calls = []
    real = steps.precompute_reference
    monkeypatch.setattr(steps, "precompute_reference",
                        lambda *a, **k: reference_calls.append(1) or real(*a, **k))
    phases: list[str] = []
    loss = dataclasses.replace(config.LOSS, beta=config.METHOD_BETAS[method], sft_weight=0.0)
    seen = []
    result = train(make_tiny_model(len(tokenizer), 0), tokenizer, frame, tiny_config(method, loss=loss), device=CPU,
                   callback=seen.append, heldout_frame=PAIRS, on_phase=phases.append)
    assert len(seen) == 8 and not result.cancelled and result.meta["method"] == method
    assert seen[-1].loss < seen[0].loss - 0.02, [s.loss for s in seen]
    if method in FIRST_STEP:
        assert seen[0].loss == pytest.approx(FIRST_STEP[method], abs=1e-4)
    if method in config.REFERENCE_FREE_METHODS:
        assert not reference_calls and any("No reference pass" in p for p in phases)
    else:
        assert reference_calls and any("reference log-probs" in p for p in phases)
    per_sample = seen[-1].per_sample
    assert len(per_sample["loss"]) == len(per_sample["row"]) >= 2
    if method == "bco":
        assert seen[0].z0 == pytest.approx(0.0, abs=1e-6)  # the baseline starts at the first batch's mean reward: 0
        assert any(abs(s.z0) > 0 for s in seen[1:])  # and moves as the rewards do


def test_orpo_ignores_the_sft_weight_since_its_nll_is_built_in(tokenizer):
    loss = dataclasses.replace(config.LOSS, beta=0.1, sft_weight=1.0)
    seen = []
    train(make_tiny_model(len(tokenizer), 0), tokenizer, PAIRS, tiny_config("orpo", loss=loss, steps=1), device=CPU,
          callback=seen.append)
    assert seen[0].sft_loss == 0.0


# --------------------------------------------------------------------------------------------------------------------
# The same methods from the settings parser, the Fine-tune tab, the API and the TRL export


def test_settings_take_every_method_with_its_own_beta():
    from playground.serving.settings import ServiceInputError, train_config_from

    simpo = train_config_from({"method": "simpo"})
    assert (simpo.method, simpo.loss.beta, simpo.loss.simpo_gamma) == ("simpo", 2.0, config.LOSS.simpo_gamma)
    assert train_config_from({"method": "SimPO", "beta": 2.5, "simpo_gamma": 0.8}).loss.beta == 2.5
    assert train_config_from({"method": "APO-zero"}).method == "apo_zero"
    assert train_config_from({"method": "bco"}).loss.beta == 0.1
    with pytest.raises(ServiceInputError, match="method must be one of dpo, kto, simpo, orpo, apo_zero"):
        train_config_from({"method": "ppo"})
    with pytest.raises(ServiceInputError, match="SimPO gamma .* between 0 and 20"):
        train_config_from({"method": "simpo", "simpo_gamma": 50})


def test_the_fine_tune_tab_shows_each_method_s_fields():
    from playground.ui import finetune_tab

    assert set(finetune_tab.METHODS.values()) == set(config.METHOD_FORMATS)
    lam_d, _lam_u, gamma, sft = finetune_tab.method_changed("SimPO (pairs, no reference)")
    assert gamma["visible"] and not lam_d["visible"] and sft["interactive"]
    lam_d, _lam_u, gamma, sft = finetune_tab.method_changed("ORPO (pairs, no reference)")
    assert not gamma["visible"] and not sft["interactive"] and "part of its loss" in sft["info"]
    assert finetune_tab.method_changed("KTO (labelled answers)")[0]["visible"]
    assert finetune_tab.method_beta("SimPO (pairs, no reference)")["value"] == 2.0


def test_a_simpo_run_from_the_tab_and_an_orpo_run_through_the_api(tiny_engine, tmp_path):
    import time

    from gradio_client import Client, handle_file
    from tiny_server import serving

    from playground.serving.services import Services
    from playground.ui import finetune_tab
    from playground.ui.page import build_app

    services = Services.for_engine(tiny_engine, tmp_path / "data")
    session = "s" * 32
    data = finetune_tab.load_data(services, finetune_tab.SOURCE_EXAMPLE, None, "paired_example.csv", session,
                                  "SimPO (pairs, no reference)")[0]
    assert data["rows_for"]["simpo"] == 20 and data["rows_for"]["bco"] == 40
    form = {"method": "SimPO (pairs, no reference)", "beta": 2.0, "simpo_gamma": 0.5, "learning_rate": 5e-4,
            "steps": 2, "epochs": 1.0, "batch_size": 2, "max_length": 64, "desirable_weight": 1.0,
            "undesirable_weight": 1.0, "lora_r": 4, "lora_alpha": 8, "lora_dropout": 0.0, "sft_weight": 0.0,
            "early_stop": False, "drift_budget": 0.0, "heldout_share": 0.0, "probe_prompts": "", "name": "tab-simpo"}
    finetune_tab.start_training(services, session, data, form)
    job = services.latest_job_for(session)
    deadline = time.time() + 240
    while not job.finished and time.time() < deadline:
        time.sleep(0.2)
    assert job.status == "done", job.error
    meta = services.engine.adapters["tab-simpo"].meta
    assert meta["method"] == "simpo" and meta["hyperparameters"]["loss"]["simpo_gamma"] == 0.5
    assert meta["seconds"]["reference"] < 0.05  # no reference pass
    simpo_export = finetune_tab.export_trl_project(services, session, data, {**form, "name": "simpo-export"})
    assert simpo_export  # SimPO exports: trl.experimental's CPOTrainer with loss_type="simpo"
    with pytest.raises(finetune_tab.gr.Error, match="BCO cannot be exported to TRL: TRL 1.16 has no trainer"):
        finetune_tab.export_trl_project(services, session, data, {**form, "method": "BCO (labelled answers)",
                                                                    "name": "bco-export"})
    apo = finetune_tab.export_trl_project(services, session, data, {**form, "method": "APO-zero (pairs)",
                                                                    "name": "apo-export"})
    assert apo  # APO exports: DPOTrainer with loss_type="apo_zero"

    with serving(build_app(services)) as url:
        client = Client(url, verbose=False)
        started = client.predict(file=handle_file(str(config.REPO_ROOT / "data" / "examples" / "paired_example.csv")),
                                 method="orpo", name="api-orpo",
                                 hyperparameters={"steps": 2, "batch_size": 2, "max_length": 64, "lora_r": 4,
                                                  "lora_alpha": 8, "early_stop": False},
                                 heldout_share=0.0, api_name="/train_start")
        assert started["method"] == "orpo"
        deadline = time.time() + 240
        while time.time() < deadline:
            status = client.predict(job_id=started["job_id"], api_name="/train_status")
            if status["status"] in ("done", "failed", "cancelled"):
                break
            time.sleep(0.5)
        assert status["status"] == "done", status
    assert services.engine.adapters["api-orpo"].meta["hyperparameters"]["loss"]["beta"] == 0.1
