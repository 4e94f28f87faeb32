"""Portable adapters: every adapter written names its base by hub id in adapter_config.json and records the base
weights' fingerprint in meta.json; the shipped ones load with plain PEFT from their folder (a throwaway hub cache
holding the embedded base stands in for the hub: no network)."""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path

import pandas as pd
import pytest
import torch
from conftest import make_tiny_model

from playground import config
from playground.engine.device import DeviceChoice
from playground.engine.fingerprint import weights_fingerprint
from playground.training.loop import train
from playground.training.saving import save_adapter_atomically

CPU = DeviceChoice(torch.device("cpu"), torch.float32, None)
PAIRS = pd.DataFrame({"prompt": ["Is the sky blue?", "Do cats purr?", "Is water wet?", "Can birds fly?"],
                      "chosen": ["Yes, it is."] * 4, "rejected": ["Go away."] * 4})
CHECKPOINTS = config.REPO_ROOT / "checkpoints"
SNAPSHOT = "0123456789abcdef0123456789abcdef01234567"  # any 40-hex commit


def tiny_config() -> config.TrainConfig:
    return dataclasses.replace(config.TRAIN, method="dpo", steps=2, batch_size=4, learning_rate=1e-2, max_length=64,
                               warmup_ratio=0.0, lora=dataclasses.replace(config.TRAIN.lora, r=4, alpha=8))


def test_a_trained_adapter_names_the_hub_id_and_records_the_base_weights(tokenizer, tmp_path):
    base = make_tiny_model(len(tokenizer))
    expected = weights_fingerprint(base)
    out = tmp_path / "mine"
    result = train(base, tokenizer, PAIRS, tiny_config(), device=CPU, out_dir=out,
                   extra_meta={"base_model": config.HUB_BASE_MODEL})
    adapter_config = json.loads((out / "adapter_config.json").read_text())
    assert adapter_config["base_model_name_or_path"] == config.HUB_BASE_MODEL  # not a local cache path
    assert adapter_config["peft_type"] == "LORA" and adapter_config["r"] == 4  # the rest as PEFT wrote it
    meta = json.loads((out / "meta.json").read_text())
    assert meta["base_fingerprint"] == expected == result.meta["base_fingerprint"]
    assert expected[:16] in (out / "README.md").read_text()


def test_without_a_base_model_the_config_is_left_as_peft_wrote_it(tokenizer, tmp_path):
    from peft import LoraConfig, get_peft_model

    model = get_peft_model(make_tiny_model(len(tokenizer)), LoraConfig(r=2, target_modules=["q_proj"]))
    save_adapter_atomically(model, tmp_path / "a", {"method": "dpo"})
    assert json.loads((tmp_path / "a" / "adapter_config.json").read_text())["base_model_name_or_path"] is None


def test_the_trl_export_names_the_hub_id(tiny_engine, tmp_path):
    from playground.engine.base_model import BaseModelSource, base_model_id
    from playground.training.export_trl import write_trl_project

    embedded = base_model_id(BaseModelSource("embedded", config.EMBEDDED_CHECKPOINT_NAME, "test"))
    write_trl_project(tmp_path / "p", PAIRS, tiny_config(), embedded)
    assert json.loads((tmp_path / "p" / "settings.json").read_text())["base_model"] == config.HUB_BASE_MODEL


# --------------------------------------------------------------------------------------------------------------------
# The shipped adapters and the embedded base (integration)


@pytest.fixture(scope="module")
def embedded_engine():
    from playground.engine.base_model import resolve_base_model
    from playground.engine.engine import Engine

    engine = Engine.load(resolve_base_model(None, {}), CPU)
    assert engine.attach_all(CHECKPOINTS) == []
    return engine


@pytest.mark.integration
@pytest.mark.parametrize("name", ["dpo", "kto"])
def test_the_shipped_adapters_name_the_hub_id_and_the_embedded_weights(embedded_engine, name):
    adapter_config = json.loads((CHECKPOINTS / name / "adapter_config.json").read_text())
    assert adapter_config["base_model_name_or_path"] == config.HUB_BASE_MODEL == embedded_engine.hub_id
    meta = json.loads((CHECKPOINTS / name / "meta.json").read_text())
    assert meta["base_fingerprint"] == embedded_engine.base_fingerprint  # trained on the embedded base
    assert meta["evaluation"]["base_fingerprint"] == embedded_engine.base_fingerprint  # and measured on it
    assert embedded_engine.adapters[name].base_weights == "same" and embedded_engine.base_weights_notice() == ""


def fake_hub_cache(root: Path, embedded_dir: Path) -> Path:
    """A Hugging Face hub cache holding the embedded base as ``HUB_BASE_MODEL`` (files linked, not copied)."""
    repo = root / ("models--" + config.HUB_BASE_MODEL.replace("/", "--"))
    snapshot = repo / "snapshots" / SNAPSHOT
    snapshot.mkdir(parents=True)
    for path in Path(embedded_dir).iterdir():
        if path.is_file():
            os.symlink(path.resolve(), snapshot / path.name)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(SNAPSHOT)
    return root


@pytest.mark.integration
def test_a_shipped_adapter_loads_with_plain_peft_given_the_hub_id(embedded_engine, embedded_dir, tmp_path,
                                                                 monkeypatch):
    import huggingface_hub
    import huggingface_hub.constants as hub_constants
    from peft import AutoPeftModelForCausalLM

    from playground.engine.multi_lora import per_row_adapters

    cache = fake_hub_cache(tmp_path / "hub", embedded_dir)
    monkeypatch.setenv("HF_HOME", str(tmp_path))
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    # huggingface_hub reads these once, at import; its functions (and transformers') read the module's constants at
    # call time, so the constants are what must point at the throwaway cache
    monkeypatch.setattr(hub_constants, "HF_HOME", str(tmp_path))
    monkeypatch.setattr(hub_constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(hub_constants, "HF_HUB_OFFLINE", True)

    model = AutoPeftModelForCausalLM.from_pretrained(str(CHECKPOINTS / "dpo"), dtype=torch.float32).eval()
    assert model.peft_config["default"].base_model_name_or_path == config.HUB_BASE_MODEL
    found = huggingface_hub.try_to_load_from_cache(config.HUB_BASE_MODEL, "model.safetensors")
    snapshot = cache / ("models--" + config.HUB_BASE_MODEL.replace("/", "--")) / "snapshots" / SNAPSHOT
    assert found is not None and Path(found).parent == snapshot  # the base was found in the throwaway hub cache

    ids = embedded_engine.tokenizer.apply_chat_template([{"role": "user", "content": "How do I boil an egg?"}],
                                                        add_generation_prompt=True, return_tensors="pt")
    ids = ids["input_ids"] if not torch.is_tensor(ids) else ids
    with torch.inference_mode():
        theirs = model(input_ids=ids).logits[0, -1]
        with embedded_engine.lock, per_row_adapters(embedded_engine.model, ["dpo"], torch.device("cpu")) as (_, kw):
            ours = embedded_engine.model(input_ids=ids, **kw).logits[0, -1]
        with embedded_engine.lock, per_row_adapters(embedded_engine.model, [config.PEFT_BASE_ADAPTER],
                                                    torch.device("cpu")) as (_, kw):
            base = embedded_engine.model(input_ids=ids, **kw).logits[0, -1]
    torch.testing.assert_close(theirs, ours, atol=1e-4, rtol=1e-4)
    assert (theirs - base).abs().max() > 1e-2  # the adapter is on: not the base's logits
