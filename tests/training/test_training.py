"""The DPO/KTO loop on a tiny random Llama: learning, isolation of the base, determinism, cancel, atomic save."""

from __future__ import annotations

import dataclasses
import json
import threading

import pandas as pd
import pytest
import torch
from conftest import make_tiny_model

from playground import config
from playground.engine.adapters import discover_adapters, validate_adapter_dir  # noqa: E402
from playground.engine.device import DeviceChoice  # noqa: E402
from playground.training import saving  # noqa: E402
from playground.training.data import TrainingInputError, plan_batches, validate_train_config  # noqa: E402
from playground.training.jobs import AdapterNameError, TrainingQueue, sanitise_adapter_name  # noqa: E402
from playground.training.loop import StepMetrics, attach_lora, train  # noqa: E402
from playground.training.saving import clean_stale_tmp, save_adapter_atomically  # noqa: E402

CPU = DeviceChoice(torch.device("cpu"), torch.float32, None)
PROMPTS = ["Is the sky blue?", "Do cats purr?", "Is water wet?", "Can birds fly?", "Is fire hot?", "Is ice cold?"]
PAIRS = pd.DataFrame({"prompt": PROMPTS, "chosen": ["Yes, it is."] * 6, "rejected": ["Go away."] * 6})
UNPAIRED = pd.DataFrame({"prompt": PROMPTS * 2, "completion": ["Yes, it is."] * 6 + ["Go away."] * 6,
                         "label": [True] * 6 + [False] * 6})


def tiny_config(method: str, **changes) -> config.TrainConfig:
    base = dataclasses.replace(config.TRAIN, method=method, steps=8, batch_size=4, learning_rate=1e-2,
                               max_length=64, warmup_ratio=0.0, lora=dataclasses.replace(config.TRAIN.lora, r=4,
                                                                                          alpha=8))
    return dataclasses.replace(base, **changes)


def lora_state(model) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items() if "lora_" in k}


@pytest.mark.parametrize(("method", "frame"), [("dpo", PAIRS), ("kto", UNPAIRED)])
def test_loss_falls_lora_changes_base_frozen(tokenizer, method, frame):
    base = make_tiny_model(len(tokenizer), 0)
    frozen_before = {k: v.clone() for k, v in base.state_dict().items()}
    steps: list[StepMetrics] = []
    loss = dataclasses.replace(config.LOSS, beta=0.5)  # the default SFT term rides on top of the preference loss
    result = train(base, tokenizer, frame, tiny_config(method, loss=loss), device=CPU, callback=steps.append,
                   heldout_frame=PAIRS)
    assert len(steps) == 8 and not result.cancelled
    assert loss.sft_weight > 0 and steps[0].sft_loss > 0
    preference_part = steps[0].loss - steps[0].sft_loss
    assert preference_part == pytest.approx(0.5 if method == "kto" else 0.693147, abs=1e-4)  # policy == reference
    assert steps[-1].loss < steps[0].loss - 0.05
    assert result.meta["heldout_metrics"]["preference_accuracy"] == 1.0
    for key, value in base.state_dict().items():  # PEFT wraps the same modules: base weights must be untouched
        if "lora_" not in key:
            plain = key.replace("base_model.model.", "").replace(".base_layer", "")
            torch.testing.assert_close(value, frozen_before[plain], atol=0, rtol=0)
    assert all(v.abs().sum() > 0 for k, v in base.state_dict().items() if "lora_B" in k)
    per_sample = steps[-1].per_sample
    assert len(per_sample["loss"]) == len(per_sample["row"]) >= 2
    if method == "kto":
        assert all(s.z0 >= 0 for s in steps)


def test_same_seed_same_adapter(tokenizer):
    states = []
    for _ in range(2):
        base = make_tiny_model(len(tokenizer), 0)
        train(base, tokenizer, PAIRS, tiny_config("dpo", steps=3), device=CPU)
        states.append(lora_state(base))
    assert states[0].keys() == states[1].keys()
    for key in states[0]:
        torch.testing.assert_close(states[0][key], states[1][key], atol=0, rtol=0)
    base = make_tiny_model(len(tokenizer), 0)
    train(base, tokenizer, PAIRS, tiny_config("dpo", steps=3, seed=1), device=CPU)
    assert any(not torch.equal(states[0][k], v) for k, v in lora_state(base).items())


def test_cancel_stops_within_one_step(tokenizer, tmp_path):
    cancel = threading.Event()
    seen = []

    def on_step(metrics):
        seen.append(metrics.step)
        if metrics.step == 2:
            cancel.set()

    result = train(make_tiny_model(len(tokenizer)), tokenizer, PAIRS, tiny_config("dpo"), device=CPU,
                            callback=on_step, cancel=cancel, out_dir=tmp_path / "adapter")
    assert result.cancelled and seen == [1, 2] and result.adapter_dir is None
    assert not (tmp_path / "adapter").exists()


def test_saved_adapter_is_standard_peft_with_meta(tokenizer, tmp_path):
    from peft import PeftModel

    out = tmp_path / "mine"
    result = train(make_tiny_model(len(tokenizer)), tokenizer, PAIRS, tiny_config("dpo", steps=2),
                            device=CPU, out_dir=out, extra_meta={"base_model": "tiny", "data_sha256": "abc"})
    assert result.adapter_dir == out
    assert sorted(p.name for p in out.iterdir()) == ["README.md", "adapter_config.json", "adapter_model.safetensors",
                                                      "meta.json"]
    meta = json.loads((out / "meta.json").read_text())
    assert meta["method"] == "dpo" and meta["steps_done"] == 2 and len(meta["history"]) == 2
    assert meta["hyperparameters"]["lora"]["r"] == 4 and meta["data_sha256"] == "abc"
    loaded = PeftModel.from_pretrained(make_tiny_model(len(tokenizer)), str(out))
    assert any("lora_B" in k and v.abs().sum() > 0 for k, v in loaded.state_dict().items())
    assert validate_adapter_dir(out)["method"] == "dpo"


def test_interrupted_save_leaves_nothing_half_written(tokenizer, tmp_path, monkeypatch):
    model = attach_lora(make_tiny_model(len(tokenizer)), config.TRAIN.lora, 0)
    out = tmp_path / "adapters" / "broken"

    def crash(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(saving, "model_card", crash)  # fails after the weights were written
    with pytest.raises(OSError, match="disk full"):
        save_adapter_atomically(model, out, {"method": "dpo"})
    assert list((tmp_path / "adapters").iterdir()) == []
    # A hard crash leaves a dot-folder: the registry ignores it and the start-up clean-up removes it.
    (tmp_path / "adapters" / ".tmp-broken-x").mkdir()
    assert discover_adapters(tmp_path / "adapters") == ([], [])
    assert clean_stale_tmp(tmp_path / "adapters") == [".tmp-broken-x"]


def test_plan_batches_is_deterministic_and_covers_each_epoch():
    lengths = [5, 9, 3, 7, 11, 2, 8]
    plan = plan_batches(lengths, batch_size=3, total_steps=6, seed=0)
    assert plan == plan_batches(lengths, batch_size=3, total_steps=6, seed=0)
    assert all(len(b) >= 2 for b in plan)
    first_epoch = plan[:2] if sum(len(b) for b in plan[:2]) == 7 else plan[:3]
    assert sorted(i for b in first_epoch for i in b) == list(range(7))


@pytest.mark.parametrize(("changes", "message"), [
    ({"loss": dataclasses.replace(config.LOSS, beta=0.0)}, "beta must be > 0"),
    ({"learning_rate": 0.0}, "learning rate must be in"),
    ({"steps": 0, "epochs": 0.0}, "0 steps trains nothing"),
    ({"batch_size": 50}, "larger than the data"),
    ({"method": "kto", "batch_size": 1}, "KTO needs 2 samples"),
])
def test_out_of_range_hyperparameters_are_refused(changes, message):
    with pytest.raises(TrainingInputError, match=message):
        validate_train_config(dataclasses.replace(tiny_config("dpo"), **changes), 6)


def test_queue_runs_one_job_attaches_adapter_and_recovers(tiny_engine, tmp_path):
    queue = TrainingQueue(tiny_engine, tmp_path / "adapters", tmp_path / "runs")
    first = queue.submit(PAIRS, tiny_config("dpo", steps=2), "first")
    second = queue.submit(UNPAIRED, tiny_config("kto", steps=2), "second")
    third = queue.submit(PAIRS, tiny_config("dpo", steps=2), "third")
    assert queue.position(third.id) >= 1
    assert queue.cancel(third.id)
    with pytest.raises(AdapterNameError, match="already exists"):
        queue.submit(PAIRS, tiny_config("dpo", steps=2), "first")
    for job in (first, second):
        for _ in range(600):
            if job.finished:
                break
            threading.Event().wait(0.1)
    assert (first.status, second.status, third.status) == ("done", "done", "cancelled")
    assert {"first", "second"} <= set(tiny_engine.variant_names())
    assert len(first.history) == 2 and (tmp_path / "runs" / first.id / "progress.jsonl").is_file()
    # A job that was running when the server died comes back as interrupted with its partial metrics.
    record = json.loads((tmp_path / "runs" / first.id / "job.json").read_text())
    record["status"] = "running"
    (tmp_path / "runs" / first.id / "job.json").write_text(json.dumps(record))
    reloaded = TrainingQueue(tiny_engine, tmp_path / "adapters", tmp_path / "runs")
    assert reloaded.get(first.id).status == "interrupted" and len(reloaded.get(first.id).history) == 2


def test_closing_the_queue_at_exit_interrupts_the_running_job_so_it_can_run_again(tiny_engine, tmp_path):
    queue = TrainingQueue(tiny_engine, tmp_path / "adapters", tmp_path / "runs")
    job = queue.submit(PAIRS, tiny_config("dpo", steps=400), "long", owner="me")
    waiting = queue.submit(PAIRS, tiny_config("dpo", steps=2), "next")
    for _ in range(600):
        if job.history:
            break
        threading.Event().wait(0.05)
    queue.close()
    assert job.status == "interrupted" and "server's exit" in job.phase and 0 < len(job.history) < 400
    assert waiting.status == "queued" and not queue._worker
    assert json.loads((tmp_path / "runs" / job.id / "job.json").read_text())["status"] == "interrupted"
    reloaded = TrainingQueue(tiny_engine, tmp_path / "adapters", tmp_path / "runs")
    assert reloaded.get(waiting.id).status == "interrupted"  # a queued job comes back as interrupted too
    again = reloaded.restart(job.id, "me")  # its rows were kept: it can run again
    assert again.name == "long" and again.total_steps == 400
    reloaded.close()


EXIT_MID_TRAINING = """
import dataclasses, sys, time
sys.path[:0] = [{tests!r}, {root!r}]
import pandas as pd
from tiny_server import tiny_engine
from playground import config
from playground.training.jobs import TrainingQueue
queue = TrainingQueue(tiny_engine(), {data!r} + "/adapters", {data!r} + "/runs")
pairs = pd.DataFrame({{"prompt": [f"q{{i}}?" for i in range(8)], "chosen": ["yes"] * 8, "rejected": ["no"] * 8}})
cfg = dataclasses.replace(config.TRAIN, method="dpo", steps=500, batch_size=4, max_length=64,
                          probes=dataclasses.replace(config.TRAIN.probes, enabled=False))
job = queue.submit(pairs, cfg, "long")
while len(job.history) < 2:
    time.sleep(0.05)
print("leaving", job.id, flush=True)
"""


def test_a_process_that_exits_mid_training_exits_cleanly_and_records_the_job(tmp_path):
    """Without the queue's close at exit, torch aborted the process (exit code 134, "terminate called without an
    active exception") and the job read as running until the next start."""
    import subprocess
    import sys
    from pathlib import Path

    tests = Path(__file__).resolve().parents[1]
    script = tmp_path / "exit_mid_training.py"
    script.write_text(EXIT_MID_TRAINING.format(tests=str(tests), root=str(tests.parent), data=str(tmp_path)))
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0 and "terminate called" not in done.stderr, done.stderr[-2000:]
    job_id = done.stdout.split()[-1]
    record = json.loads((tmp_path / "runs" / job_id / "job.json").read_text())
    assert record["status"] == "interrupted" and "server's exit" in record["phase"]


@pytest.mark.parametrize("bad", ["../etc", "a/b", "x\x00y", "base", "__base__", "", "  ", "a" * 60, "-lead"])
def test_unsafe_adapter_names_are_refused(bad):
    with pytest.raises(AdapterNameError):
        sanitise_adapter_name(bad)


def test_adapter_name_spaces_become_dashes():
    assert sanitise_adapter_name(" my votes v2 ") == "my-votes-v2"
