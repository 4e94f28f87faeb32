"""Integration: the real embedded SmolLM2-135M loads offline, has its chat template and answers in English."""

from __future__ import annotations

import subprocess
import sys

import pytest

from playground import config, generation, models

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def engine():
    return models.Engine.load(models.resolve_base_model(None, {}), models.pick_device("cpu"))


def test_loads_offline_with_chat_template(engine):
    assert engine.source.kind == "embedded"
    assert "<|im_start|>" in engine.tokenizer.chat_template
    assert engine.base_model.config.architectures == ["LlamaForCausalLM"]
    assert not getattr(engine.base_model, "is_quantized", False)
    assert sum(p.numel() for p in engine.base_model.parameters()) == pytest.approx(134.5e6, rel=0.01)


def test_greedy_answer_is_english(engine):
    out = generation.generate(engine, "What is the capital of France?", ["base"],
                              config.GenerationConfig(max_new_tokens=24))
    text = out["base"].text
    assert "Paris" in text
    assert sum(ch.isascii() for ch in text) / len(text) > 0.95


def test_generate_cli_reports_missing_variants():
    done = subprocess.run([sys.executable, "-m", "playground.generate", "Say hello.", "--variants",
                           "base,nonexistent", "--max-new-tokens", "12"], capture_output=True, text=True, timeout=300,
                          cwd=config.REPO_ROOT)
    assert done.returncode == 0, done.stderr
    assert "=== base ===" in done.stdout
    assert "variant 'nonexistent' does not exist" in done.stderr
    assert "Traceback" not in done.stderr
