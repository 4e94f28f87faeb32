"""Base-model resolution, device choice and the adapter registry."""

from __future__ import annotations

import json

import pytest
import torch

from playground import config, models
from tests.conftest import make_tiny_model, save_random_adapter


def test_resolution_order(tmp_path):
    assert models.resolve_base_model(None, {}).kind == "embedded"
    assert models.resolve_base_model(None, {"SPACE_ID": "me/app"}).name == config.HUB_BASE_MODEL
    env = {"SPACE_ID": "me/app", "PLAYGROUND_BASE_MODEL": "org/model"}
    assert models.resolve_base_model(None, env) == models.BaseModelSource("hub", "org/model", "PLAYGROUND_BASE_MODEL")
    chosen = models.resolve_base_model(str(tmp_path), env)
    assert (chosen.kind, chosen.name, chosen.reason) == ("local", str(tmp_path.resolve()), "--base-model")


def test_bad_model_source_gives_one_clear_message(tmp_path):
    with pytest.raises(models.ModelSourceError, match="neither an existing local directory nor a hub id"):
        models.resolve_base_model(str(tmp_path / "missing" / "dir"), {})
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(models.ModelSourceError, match="Could not load the base model"):
        models.load_base_model(models.BaseModelSource("local", str(empty), "test"))


def test_pick_device_on_cpu(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    choice = models.pick_device()
    assert choice.device.type == "cpu" and choice.weight_dtype == torch.float32
    assert choice.autocast_dtype == (torch.bfloat16 if models.cpu_supports_bf16() else None)
    monkeypatch.setenv("PLAYGROUND_AUTOCAST", "0")
    assert models.pick_device().autocast_dtype is None
    assert "cpu" in choice.describe()


def test_registry_lists_valid_adapters_and_refuses_pickles(tmp_path, tokenizer):
    base = make_tiny_model(len(tokenizer))
    save_random_adapter(base, tmp_path / "good", seed=1)
    bad = save_random_adapter(base, tmp_path / "pickled", seed=2)
    (bad / "adapter_model.bin").write_bytes(b"\x80\x04not really a pickle")
    (tmp_path / "no_meta").mkdir()
    (tmp_path / "no_meta" / "adapter_config.json").write_text("{}")
    found, skipped = models.discover_adapters(tmp_path)
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
    engine = models.Engine(make_tiny_model(len(tokenizer)), tokenizer, models.pick_device("cpu"),
                           models.BaseModelSource("local", "tiny-random-llama", "test"))
    expected = "made for base 'some/bigger-model'.*loaded base is 'tiny-random-llama'"
    with pytest.raises(models.AdapterError, match=expected):
        engine.attach(models.AdapterInfo("other", path, meta))
    assert engine.adapters == {}


def test_engine_variant_names(tiny_engine):
    assert tiny_engine.variant_names() == ["base", "dpo", "kto"]
    assert tiny_engine.adapter_names_for(["base", "kto"]) == [config.BASE_VARIANT, "kto"]
    with pytest.raises(KeyError, match="Unknown variant"):
        tiny_engine.adapter_names_for(["nope"])
