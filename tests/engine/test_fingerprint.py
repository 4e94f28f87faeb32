"""The base weights' fingerprint: stable, sensitive to the weights, blind to LoRA and bf16 rounding; what an adapter
trained on other weights of the same base gets (it attaches, with a notice); and the hub id of the loaded base."""

from __future__ import annotations

import copy
import json

import pytest
import torch
from conftest import make_tiny_model, save_random_adapter

from playground import config
from playground.engine import fingerprint
from playground.engine.adapters import AdapterInfo
from playground.engine.base_model import BaseModelSource, base_model_id, hub_base_id, weights_origin
from playground.engine.device import DeviceChoice
from playground.engine.engine import Engine

CPU = DeviceChoice(torch.device("cpu"), torch.float32, None)


def test_the_fingerprint_is_stable_and_changes_with_one_weight(tokenizer):
    base = make_tiny_model(len(tokenizer), seed=0)
    first = fingerprint.weights_fingerprint(base)
    assert len(first) == 64 and int(first, 16) >= 0
    assert fingerprint.weights_fingerprint(base) == first  # twice: the same
    assert fingerprint.weights_fingerprint(make_tiny_model(len(tokenizer), seed=0)) == first  # rebuilt: the same
    assert fingerprint.weights_fingerprint(copy.deepcopy(base).to(torch.bfloat16)) == first  # CUDA's bf16 load
    for name in ("model.embed_tokens.weight", "model.layers.0.mlp.down_proj.weight", "model.norm.weight"):
        changed = copy.deepcopy(base)
        with torch.no_grad():
            changed.get_parameter(name).view(-1)[0] += 0.5  # one weight
        assert fingerprint.weights_fingerprint(changed) != first, name
    assert fingerprint.weights_fingerprint(make_tiny_model(len(tokenizer), seed=1)) != first  # other weights
    assert fingerprint.weights_fingerprint(base) == first  # nothing was modified by hashing


def test_lora_layers_do_not_change_the_fingerprint(tokenizer, tmp_path):
    from peft import PeftModel

    base = make_tiny_model(len(tokenizer), seed=0)
    expected = fingerprint.weights_fingerprint(base)
    save_random_adapter(base, tmp_path / "a", seed=3)
    wrapped = PeftModel.from_pretrained(copy.deepcopy(base), str(tmp_path / "a"))
    assert fingerprint.weights_fingerprint(wrapped) == expected
    assert fingerprint.weights_fingerprint(wrapped.get_base_model()) == expected


def test_statuses_and_their_words():
    assert fingerprint.compare("a" * 64, "a" * 64) == fingerprint.SAME
    assert fingerprint.compare("a" * 64, "b" * 64) == fingerprint.OTHER
    assert fingerprint.compare(None, "b" * 64) == fingerprint.UNRECORDED
    assert fingerprint.compare("a" * 64, None) == fingerprint.UNCHECKED
    assert fingerprint.note(fingerprint.SAME) == "" and fingerprint.note("") == ""
    assert fingerprint.note(fingerprint.UNRECORDED) == "base weights not recorded"
    notice = fingerprint.base_weights_notice({"dpo": "other", "kto": "other", "mine": "same", "trl": "unrecorded"})
    assert "dpo and kto were trained on other weights of this base" in notice
    assert "trl: base weights not recorded" in notice and "mine" not in notice
    assert fingerprint.base_weights_notice({"mine": "same"}) == ""


def _engine(tokenizer, seed: int) -> Engine:
    return Engine(make_tiny_model(len(tokenizer), seed), tokenizer, CPU, BaseModelSource("local", "tiny", "test"))


def _adapter_trained_on(base, folder, seed: int = 1):
    save_random_adapter(base, folder, seed=seed)
    meta = json.loads((folder / "meta.json").read_text())
    meta["base_fingerprint"] = fingerprint.weights_fingerprint(base)
    (folder / "meta.json").write_text(json.dumps(meta))
    return folder


def test_an_adapter_of_base_a_attaches_to_a_same_shaped_base_b_with_a_notice(tokenizer, tmp_path):
    base_a = make_tiny_model(len(tokenizer), seed=0)
    root = tmp_path / "adapters"
    _adapter_trained_on(base_a, root / "from-a")
    save_random_adapter(base_a, root / "plain", seed=2)
    (root / "plain" / "meta.json").unlink()  # a plain PEFT folder (TRL's): no record of its base's weights

    on_b = _engine(tokenizer, seed=1)  # same shapes, other weights
    assert on_b.attach_all(root) == []  # both attach
    info = on_b.adapters["from-a"]
    assert info.base_weights == fingerprint.OTHER
    assert info.base_note.startswith("trained on other base weights")
    assert info.describe() == "DPO adapter, shipped, " + info.base_note
    assert on_b.adapters["plain"].base_weights == fingerprint.UNRECORDED
    assert on_b.adapters["plain"].describe() == "PEFT adapter, shipped, base weights not recorded"
    notice = on_b.base_weights_notice()
    assert "from-a was trained on other weights of this base" in notice
    assert "plain: base weights not recorded" in notice
    with on_b.lock:  # and it runs on base B
        out = on_b.model(input_ids=torch.tensor([[1, 2, 3]]), adapter_names=["from-a"]).logits
    assert torch.isfinite(out).all()

    on_a = Engine(base_a, tokenizer, CPU, BaseModelSource("local", "tiny", "test"))
    on_a.attach(AdapterInfo("from-a", root / "from-a", json.loads((root / "from-a" / "meta.json").read_text())))
    assert on_a.adapters["from-a"].base_weights == fingerprint.SAME and on_a.adapters["from-a"].base_note == ""
    assert on_a.base_weights_notice() == ""
    assert on_a.adapters["from-a"].describe() == "DPO adapter, shipped"


def test_the_engine_knows_the_hub_id_of_its_base(tmp_path):
    assert hub_base_id(BaseModelSource("embedded", config.EMBEDDED_CHECKPOINT_NAME, "x")) == config.HUB_BASE_MODEL
    assert hub_base_id(BaseModelSource("hub", "owner/model", "x")) == "owner/model"
    snapshot = tmp_path / "hub" / "models--owner--some-model" / "snapshots" / ("0123456789abcdef" * 2 + "01234567")
    assert hub_base_id(BaseModelSource("local", str(snapshot), "x")) == "owner/some-model"
    assert hub_base_id(BaseModelSource("local", str(tmp_path / "my-model"), "x")) is None
    assert base_model_id(BaseModelSource("local", str(tmp_path / "my-model"), "x")) == str(tmp_path / "my-model")
    assert base_model_id(BaseModelSource("embedded", config.EMBEDDED_CHECKPOINT_NAME, "x")) == config.HUB_BASE_MODEL
    assert "4-bit GGUF" in weights_origin(BaseModelSource("embedded", config.EMBEDDED_CHECKPOINT_NAME, "x"))
    assert weights_origin(BaseModelSource("hub", "owner/model", "x")) == "the hub's weights"


@pytest.mark.parametrize("given", [None, "f" * 64])
def test_the_engine_fingerprints_its_base_once(tokenizer, given):
    base = make_tiny_model(len(tokenizer), seed=0)
    engine = Engine(base, tokenizer, CPU, BaseModelSource("local", "tiny", "test"), base_fingerprint=given)
    assert engine.base_fingerprint == (given or fingerprint.weights_fingerprint(base))
