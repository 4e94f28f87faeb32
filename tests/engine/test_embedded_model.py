"""Integration: the real embedded SmolLM2-135M loads offline, has its chat template and answers in English."""

from __future__ import annotations

import subprocess
import sys

import pytest

from playground import config
from playground.engine.base_model import resolve_base_model  # noqa: E402
from playground.engine.device import pick_device  # noqa: E402
from playground.engine.engine import Engine  # noqa: E402
from playground.engine.generation import generate  # noqa: E402

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def engine():
    return Engine.load(resolve_base_model(None, {}), pick_device("cpu"))


def test_loads_offline_with_chat_template(engine):
    assert engine.source.kind == "embedded"
    assert "<|im_start|>" in engine.tokenizer.chat_template
    assert engine.base_model.config.architectures == ["LlamaForCausalLM"]
    assert not getattr(engine.base_model, "is_quantized", False)
    assert sum(p.numel() for p in engine.base_model.parameters()) == pytest.approx(134.5e6, rel=0.01)


def test_greedy_answer_is_english(engine):
    out = generate(engine, "What is the capital of France?", ["base"],
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


def test_generate_cli_exits_cleanly_after_the_decoder_thread_ran():
    # the decoder thread must end before the interpreter finalises, or torch aborts the process (exit code 134)
    for _ in range(2):
        done = subprocess.run([sys.executable, "-m", "playground.generate", "Hi", "--variants", "base,dpo",
                               "--max-new-tokens", "4"], capture_output=True, text=True, timeout=300,
                              cwd=config.REPO_ROOT)
        assert done.returncode == 0, done.stderr[-500:]
        assert "terminate called" not in done.stderr and "=== dpo ===" in done.stdout
