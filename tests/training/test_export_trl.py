"""The way out to TRL: the export's rows in TRL's conversational format (literal records), its settings equal to the
playground's run (steps, warmup, the learning-rate schedule at every step), the CLI, and the exported train.py run
with TRL itself on a tiny model; the adapter it writes (a plain PEFT folder, no meta.json) attaches here."""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from playground import config
from playground.engine.adapters import AdapterInfo
from playground.training.export_trl import trl_rows, trl_settings, write_trl_project
from playground.training.loop import _lr_at

ROOT = Path(__file__).resolve().parents[2]


def test_rows_in_trl_conversational_format():
    paired = pd.DataFrame([{"prompt": "Hi?", "chosen": "Hello!", "rejected": "Go away.", "system": "Be kind."},
                           {"prompt": [{"role": "user", "content": "Sort?"}], "chosen": "sorted()",
                            "rejected": "No.", "system": ""}])
    assert trl_rows(paired, "dpo") == [
        {"prompt": [{"role": "system", "content": "Be kind."}, {"role": "user", "content": "Hi?"}],
         "chosen": [{"role": "assistant", "content": "Hello!"}],
         "rejected": [{"role": "assistant", "content": "Go away."}]},
        {"prompt": [{"role": "user", "content": "Sort?"}], "chosen": [{"role": "assistant", "content": "sorted()"}],
         "rejected": [{"role": "assistant", "content": "No."}]},
    ]
    unpaired = pd.DataFrame([{"prompt": "Hi?", "completion": "Hello!", "label": True}])
    assert trl_rows(unpaired, "kto") == [{"prompt": [{"role": "user", "content": "Hi?"}],
                                          "completion": [{"role": "assistant", "content": "Hello!"}], "label": True}]


def _settings(method="dpo", **over):
    loss = dataclasses.replace(config.TRAIN.loss, sft_weight=over.pop("sft_weight", 1.0))
    return dataclasses.replace(config.TRAIN, method=method, loss=loss, **over)


def test_settings_are_the_playground_run_and_the_schedule_matches_at_every_step(tmp_path):
    train_config = _settings(steps=0, epochs=2.0, batch_size=4, warmup_ratio=0.1, learning_rate=5e-4)
    settings = trl_settings(train_config, rows=30, base_model="org/base")
    assert settings["total_steps"] == 15 and settings["warmup_steps"] == 2  # ceil(2 * 30 / 4), round(0.1 * 15)
    assert settings["lora"] == {"r": 16, "alpha": 32, "dropout": 0.0,
                                "target_modules": list(config.TRAIN.lora.target_modules)}
    assert (settings["beta"], settings["sft_weight"], settings["seed"]) == (0.1, 1.0, 0)
    frame = pd.DataFrame([{"prompt": f"Q{i}?", "chosen": f"Good {i}.", "rejected": f"Bad {i}."} for i in range(30)])
    write_trl_project(tmp_path / "project", frame, train_config, "org/base")
    spec = importlib.util.spec_from_file_location("exported_train", tmp_path / "project" / "train.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)  # reads settings.json next to it; imports only, runs nothing
    for step in range(15):
        assert module.playground_schedule(step) * 5e-4 == pytest.approx(_lr_at(step, 15, 2, 5e-4), rel=1e-12)


def test_the_cli_exports_and_refuses_a_bad_file(tmp_path, capsys):
    from playground.cli.export import main

    out = tmp_path / "project"
    assert main(["--method", "kto", "--data", str(ROOT / "data/examples/paired_example.csv"), "--out", str(out),
                 "--steps", "3", "--zip"]) == 0
    names = sorted(p.name for p in out.iterdir())
    assert names == ["README.md", "accelerate_config.yaml", "eval.jsonl", "settings.json", "train.jsonl", "train.py"]
    rows = [json.loads(line) for line in (out / "train.jsonl").read_text().splitlines()]
    assert {"prompt", "completion", "label"} == set(rows[0]) and {r["label"] for r in rows} == {True, False}
    assert json.loads((out / "settings.json").read_text())["total_steps"] == 3
    assert "no KTOTrainer equivalent" in (out / "README.md").read_text()  # the SFT term's difference is said
    assert (tmp_path / "project.zip").is_file()
    assert main(["--method", "dpo", "--data", str(ROOT / "tests/bad_files/cut_last_row.csv"), "--out",
                 str(tmp_path / "bad")]) == 2
    assert "looks cut off or corrupt" in capsys.readouterr().out


@pytest.mark.parametrize("method", ["dpo", "kto", "apo_zero", "simpo", "orpo"])
def test_the_exported_script_trains_with_trl_and_its_adapter_attaches_here(method, tmp_path, tokenizer,
                                                                           tiny_model_factory, tiny_engine):
    """TRL's DPOTrainer / KTOTrainer run the exported project for 2 steps on a tiny local model (CPU, offline); an
    APO run goes to DPOTrainer with its loss type, SimPO to trl.experimental's CPOTrainer, ORPO to its ORPOTrainer."""
    base_dir = tmp_path / "tiny-base"
    tiny_model_factory(0).save_pretrained(base_dir)
    tokenizer.save_pretrained(base_dir)
    examples = ROOT / "data/examples" / ("paired_example.csv" if config.is_paired(method) else "unpaired_example.csv")
    from playground.feedback import frame_for_method, read_feedback

    report = read_feedback(examples)
    frame, _ = frame_for_method(report.data, report.format, method)
    lora = dataclasses.replace(config.TRAIN.lora, r=4, alpha=8, target_modules=("q_proj", "v_proj"))
    train_config = _settings(method, steps=2, batch_size=2, max_length=64, lora=lora, sft_weight=0.5)
    write_trl_project(tmp_path / "project", frame, train_config, str(base_dir))
    settings = json.loads((tmp_path / "project" / "settings.json").read_text())
    assert (settings["trainer"], settings["dpo_loss_type"] if settings["trainer"] == "dpo" else "-") == {
        "dpo": ("dpo", "sigmoid"), "kto": ("kto", "-"), "apo_zero": ("dpo", "apo_zero"), "simpo": ("cpo", "-"),
        "orpo": ("orpo", "-")}[method]
    readme = (tmp_path / "project" / "README.md").read_text()
    experimental = method in ("simpo", "orpo")
    assert ('pip install "trl==1.16.*"' in readme) == experimental and ("trl.experimental" in readme) == experimental
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1",
           "CUDA_VISIBLE_DEVICES": "", "WANDB_DISABLED": "true", "HF_DATASETS_CACHE": str(tmp_path / "ds-cache")}
    done = subprocess.run([sys.executable, "train.py", "--out", str(tmp_path / "adapter")], cwd=tmp_path / "project",
                          env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-4000:]
    adapter_config = json.loads((tmp_path / "adapter" / "adapter_config.json").read_text())
    assert (adapter_config["r"], adapter_config["lora_alpha"]) == (4, 8)
    assert sorted(adapter_config["target_modules"]) == ["q_proj", "v_proj"]
    assert not (tmp_path / "adapter" / "meta.json").exists()
    assert {p.name for p in (tmp_path / "adapter").iterdir()} <= {"adapter_config.json", "adapter_model.safetensors",
                                                                  "README.md"}  # nothing pickled
    tiny_engine.attach(AdapterInfo(f"from-trl-{method}", tmp_path / "adapter", {"method": "peft"}, "user"))
    assert f"from-trl-{method}" in tiny_engine.variant_names()


# --------------------------------------------------------------------------------------------------------------------
# Export of an adapter already trained: from the rows kept with it, or the data file its meta.json names

TINY_FORM = {"method": "DPO (pairs)", "beta": 0.1, "learning_rate": 5e-4, "steps": 2, "epochs": 1.0, "batch_size": 2,
             "max_length": 64, "desirable_weight": 1.0, "undesirable_weight": 1.0, "lora_r": 4, "lora_alpha": 8,
             "lora_dropout": 0.0, "sft_weight": 0.0, "early_stop": False, "drift_budget": 0.0, "heldout_share": 0.0,
             "probe_prompts": ""}
SESSION = "e" * 32


def test_a_finished_run_keeps_its_rows_and_exports_them_with_its_settings(tiny_engine, tmp_path):
    import time
    import zipfile

    from playground.common.files import read_jsonl
    from playground.serving.services import Services
    from playground.serving.settings import ServiceInputError
    from playground.training.jobs import KEPT_ROWS_FILE, ROWS_FILE
    from playground.ui import finetune_tab

    services = Services.for_engine(tiny_engine, tmp_path / "data")
    data = finetune_tab.load_data(services, finetune_tab.SOURCE_EXAMPLE, None, "paired_example.csv", SESSION,
                                  "DPO (pairs)")[0]
    finetune_tab.start_training(services, SESSION, data, {**TINY_FORM, "name": "kept-run"})
    job = services.latest_job_for(SESSION)
    deadline = time.time() + 240
    while not job.finished and time.time() < deadline:
        time.sleep(0.2)
    assert job.status == "done", job.error
    adapter = services.engine.adapters["kept-run"].path
    kept = read_jsonl(adapter / KEPT_ROWS_FILE)
    example = pd.read_csv(ROOT / "data" / "examples" / "paired_example.csv")
    assert [row["prompt"] for row in kept] == example["prompt"].tolist()  # all 20 rows, in file order
    assert [row["chosen"] for row in kept] == example["chosen"].tolist()
    assert not (services.data_dir / "runs" / job.id / ROWS_FILE).exists()  # moved, not copied

    with zipfile.ZipFile(services.export_adapter_trl("kept-run")) as archive:
        settings = json.loads(archive.read("kept-run-trl/settings.json"))
        train = [json.loads(line) for line in archive.read("kept-run-trl/train.jsonl").decode().splitlines()]
        assert "eval.jsonl" not in " ".join(archive.namelist())  # no held-out split in this run
        readme = archive.read("kept-run-trl/README.md").decode()
    assert (settings["method"], settings["total_steps"], settings["batch_size"], settings["seed"]) == ("dpo", 2, 2, 0)
    assert (settings["lora"]["r"], settings["lora"]["alpha"], settings["learning_rate"]) == (4, 8, 5e-4)
    assert train == trl_rows(pd.DataFrame(kept), "dpo")
    assert "the 20 rows kept-run was trained on" in readme
    for name, match in (("nope", "No adapter named 'nope'"), ("dpo", "records no training settings")):
        with pytest.raises(ServiceInputError, match=match):
            services.export_adapter_trl(name)  # the tiny engine's 'dpo' is a random adapter without settings


def test_a_shipped_adapter_exports_from_the_data_file_its_meta_names(tmp_path):
    from playground.training.export_trl import recorded_training

    meta = json.loads((ROOT / "checkpoints" / "dpo" / "meta.json").read_text())
    heldout_file = ROOT / "data" / "demo_pairs_heldout.csv"
    frame, heldout, source = recorded_training(ROOT / "checkpoints" / "dpo", meta, (ROOT / "data",), heldout_file)
    assert len(frame) == meta["data_rows"]["trained"] == 370 and len(heldout) == 120
    assert source.startswith("`demo_pairs_train.csv` (sha256 ")
    kto_meta = json.loads((ROOT / "checkpoints" / "kto" / "meta.json").read_text())
    frame, _heldout, _ = recorded_training(ROOT / "checkpoints" / "kto", kto_meta, (ROOT / "data",), heldout_file)
    assert len(frame) == kto_meta["data_rows"]["trained"] and set(frame["label"]) == {True, False}

    changed = tmp_path / "demo_pairs_train.csv"
    changed.write_bytes((ROOT / "data" / "demo_pairs_train.csv").read_bytes() + b"\n")
    with pytest.raises(ValueError, match=r"\(demo_pairs_train.csv\) is not on this server, or has changed since"):
        recorded_training(ROOT / "checkpoints" / "dpo", meta, (tmp_path,), heldout_file)
    with pytest.raises(ValueError, match="keeps no record of its training data"):
        recorded_training(tmp_path, {"method": "peft"}, (ROOT / "data",))


def test_the_cli_and_the_runs_tab_export_an_adapter_s_run(tmp_path, tiny_engine, capsys):
    import zipfile

    from playground.cli.export import main
    from playground.serving.services import Services
    from playground.ui import runs_tab

    out = tmp_path / "dpo-run"
    assert main(["--adapter", "dpo", "--out", str(out), "--zip"]) == 0
    settings = json.loads((out / "settings.json").read_text())
    meta = json.loads((ROOT / "checkpoints" / "dpo" / "meta.json").read_text())
    hp = meta["hyperparameters"]
    assert (settings["total_steps"], settings["batch_size"], settings["learning_rate"]) == (
        meta["total_steps"], hp["batch_size"], hp["learning_rate"])
    assert settings["base_model"] == config.HUB_BASE_MODEL and settings["sft_weight"] == hp["loss"]["sft_weight"]
    assert len((out / "train.jsonl").read_text().splitlines()) == 370
    assert len((out / "eval.jsonl").read_text().splitlines()) == 120
    assert zipfile.ZipFile(out.with_suffix(".zip")).namelist()
    assert main(["--adapter", "no-such-adapter", "--out", str(tmp_path / "x")]) == 2
    assert "no adapter folder 'no-such-adapter'" in capsys.readouterr().err

    services = Services.for_engine(tiny_engine, tmp_path / "data")
    with pytest.raises(runs_tab.gr.Error, match="records no training settings"):
        runs_tab.trl_download(services, "dpo")  # the tiny engine's random adapters record no run
    with pytest.raises(runs_tab.gr.Error, match="Choose an attached adapter"):
        runs_tab.trl_download(services, None)
