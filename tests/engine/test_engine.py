"""Base-model resolution, device choice and the adapter registry."""

from __future__ import annotations

import json

import pytest
import torch
from conftest import make_tiny_model, save_random_adapter

from playground import config
from playground.engine.adapters import AdapterError, AdapterInfo, discover_adapters  # noqa: E402
from playground.engine.base_model import BaseModelSource, ModelSourceError, load_base_model, resolve_base_model  # noqa: E402
from playground.engine.device import cpu_supports_bf16, pick_device  # noqa: E402
from playground.engine.engine import Engine  # noqa: E402


def test_resolution_order(tmp_path):
    assert resolve_base_model(None, {}).kind == "embedded"
    assert resolve_base_model(None, {"SPACE_ID": "me/app"}).name == config.HUB_BASE_MODEL
    env = {"SPACE_ID": "me/app", "PLAYGROUND_BASE_MODEL": "org/model"}
    assert resolve_base_model(None, env) == BaseModelSource("hub", "org/model", "PLAYGROUND_BASE_MODEL")
    chosen = resolve_base_model(str(tmp_path), env)
    assert (chosen.kind, chosen.name, chosen.reason) == ("local", str(tmp_path.resolve()), "--base-model")


def test_bad_model_source_gives_one_clear_message(tmp_path):
    with pytest.raises(ModelSourceError, match="neither an existing local directory nor a hub id"):
        resolve_base_model(str(tmp_path / "missing" / "dir"), {})
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ModelSourceError, match="Could not load the base model"):
        load_base_model(BaseModelSource("local", str(empty), "test"))


def test_pick_device_on_cpu(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    choice = pick_device()
    assert choice.device.type == "cpu" and choice.weight_dtype == torch.float32
    assert choice.autocast_dtype == (torch.bfloat16 if cpu_supports_bf16() else None)
    monkeypatch.setenv("PLAYGROUND_AUTOCAST", "0")
    assert pick_device().autocast_dtype is None
    assert "cpu" in choice.describe()


def test_registry_lists_valid_adapters_and_refuses_pickles(tmp_path, tokenizer):
    base = make_tiny_model(len(tokenizer))
    save_random_adapter(base, tmp_path / "good", seed=1)
    bad = save_random_adapter(base, tmp_path / "pickled", seed=2)
    (bad / "adapter_model.bin").write_bytes(b"\x80\x04not really a pickle")
    (tmp_path / "no_meta").mkdir()
    (tmp_path / "no_meta" / "adapter_config.json").write_text("{}")
    found, skipped = discover_adapters(tmp_path)
    assert [info.name for info in found] == ["good"]
    assert any("pickled files ['adapter_model.bin']" in message for message in skipped)
    assert any("lacks adapter_model.safetensors" in message for message in skipped)


def test_adapter_for_another_base_is_refused_naming_both(tmp_path, tokenizer):
    from transformers import LlamaConfig, LlamaForCausalLM

    other = LlamaForCausalLM(LlamaConfig(vocab_size=len(tokenizer), hidden_size=48, intermediate_size=96,
                                         num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2))
    path = save_random_adapter(other, tmp_path / "other", seed=3)
    meta = json.loads((path / "meta.json").read_text())
    meta["base_model"] = "some/bigger-model"
    (path / "meta.json").write_text(json.dumps(meta))
    engine = Engine(make_tiny_model(len(tokenizer)), tokenizer, pick_device("cpu"),
                           BaseModelSource("local", "tiny-random-llama", "test"))
    expected = "made for base 'some/bigger-model'.*loaded base is 'tiny-random-llama'"
    with pytest.raises(AdapterError, match=expected):
        engine.attach(AdapterInfo("other", path, meta))
    assert engine.adapters == {}


def test_engine_variant_names(tiny_engine):
    assert tiny_engine.variant_names() == ["base", "dpo", "kto"]
    assert tiny_engine.adapter_names_for(["base", "kto"]) == [config.PEFT_BASE_ADAPTER, "kto"]
    with pytest.raises(KeyError, match="Unknown variant"):
        tiny_engine.adapter_names_for(["nope"])
