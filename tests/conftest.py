"""Shared fixtures: the real SmolLM2 tokenizer (offline, from the embedded checkpoint) and tiny random Llamas."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch

from playground.engine.base_model import BaseModelSource, ensure_embedded_checkpoint, load_tokenizer  # noqa: E402
from playground.engine.device import DeviceChoice  # noqa: E402
from playground.engine.engine import Engine  # noqa: E402

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # tests never reach a hub
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

TINY_LORA_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


@pytest.fixture(scope="session")
def embedded_dir() -> Path:

    return ensure_embedded_checkpoint()


@pytest.fixture(scope="session")
def tokenizer(embedded_dir):

    return load_tokenizer(str(embedded_dir))


def make_tiny_model(vocab_size: int, seed: int = 0):
    """A 2-layer Llama with the real vocabulary, random weights, fp32, eval mode."""
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    cfg = LlamaConfig(vocab_size=vocab_size, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=1024,
                      tie_word_embeddings=True, bos_token_id=1, eos_token_id=2, pad_token_id=2)
    cfg.architectures = ["LlamaForCausalLM"]
    model = LlamaForCausalLM(cfg)
    model.generation_config.pad_token_id = 2
    model.generation_config.eos_token_id = 2
    return model.eval()


@pytest.fixture(scope="session")
def tiny_model_factory(tokenizer):
    def factory(seed: int = 0):
        return make_tiny_model(len(tokenizer), seed)

    return factory


def save_random_adapter(base, path: Path, seed: int, method: str = "dpo", r: int = 4) -> Path:
    """Write a PEFT LoRA adapter with random (non-zero) weights for ``base`` plus a meta.json."""
    import copy

    from peft import LoraConfig, get_peft_model

    torch.manual_seed(seed)
    peft_model = get_peft_model(copy.deepcopy(base), LoraConfig(r=r, lora_alpha=2 * r, target_modules=TINY_LORA_TARGETS,
                                                               init_lora_weights=False))
    peft_model.save_pretrained(str(path), safe_serialization=True)
    (path / "meta.json").write_text(json.dumps({"method": method, "base_model": "tiny-random-llama",
                                                "base_architecture": "LlamaForCausalLM"}))
    return path


@pytest.fixture()
def tiny_engine(tokenizer, tiny_model_factory, tmp_path):
    """An Engine on a tiny random base with two random adapters, 'dpo' and 'kto', attached."""

    base = tiny_model_factory(0)
    root = tmp_path / "adapters"
    root.mkdir()
    save_random_adapter(base, root / "dpo", seed=1, method="dpo")
    save_random_adapter(base, root / "kto", seed=2, method="kto")
    engine = Engine(base, tokenizer, DeviceChoice(torch.device("cpu"), torch.float32, None),
                           BaseModelSource("local", "tiny-random-llama", "test"),
                           base_factory=lambda: make_tiny_model(len(tokenizer), 0))
    skipped = engine.attach_all(root)
    assert skipped == []
    return engine
