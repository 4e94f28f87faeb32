"""Batched multi-variant generation equals per-variant generation; settings are validated."""

from __future__ import annotations

import pytest

from playground import config
from playground.engine.generation import GenerationInputError, generate, stream_generate  # noqa: E402

GREEDY = config.GenerationConfig(max_new_tokens=12, do_sample=False)


def test_mixed_batch_greedy_equals_per_variant(tiny_engine):
    together = generate(tiny_engine, "Tell me a story.", ["base", "dpo", "kto"], GREEDY)
    for name in ("base", "dpo", "kto"):
        alone = generate(tiny_engine, "Tell me a story.", [name], GREEDY)
        assert together[name].token_ids == alone[name].token_ids
    assert together["dpo"].token_ids != together["base"].token_ids  # the adapters do change the answer
    assert all(len(out.token_ids) <= 12 for out in together.values())


def test_streaming_grows_and_finishes(tiny_engine):
    states = list(stream_generate(tiny_engine, "Hello", ["base", "kto"], GREEDY))
    assert len(states) >= 2 and states[-1].done
    lengths = [len(state.outputs["base"].token_ids) for state in states]
    assert lengths == sorted(lengths)


def test_same_seed_same_sampled_text(tiny_engine):
    sampled = config.GenerationConfig(max_new_tokens=10, do_sample=True, temperature=1.0, top_p=0.95, seed=7)
    first = generate(tiny_engine, "Hi", ["base", "dpo"], sampled)
    second = generate(tiny_engine, "Hi", ["base", "dpo"], sampled)
    assert {k: v.token_ids for k, v in first.items()} == {k: v.token_ids for k, v in second.items()}


@pytest.mark.parametrize(("settings", "message"), [
    (config.GenerationConfig(max_new_tokens=0), "max new tokens must be between 1"),
    (config.GenerationConfig(max_new_tokens=10_000), "max new tokens must be between 1"),
    (config.GenerationConfig(do_sample=True, temperature=0.0), "temperature must be in"),
    (config.GenerationConfig(do_sample=True, top_p=1.5), "top-p must be in"),
])
def test_absurd_settings_are_refused(tiny_engine, settings, message):
    with pytest.raises(GenerationInputError, match=message):
        generate(tiny_engine, "Hi", ["base"], settings)


def test_empty_and_overlong_prompts_are_refused(tiny_engine):
    with pytest.raises(GenerationInputError, match="prompt is empty"):
        generate(tiny_engine, "   ", ["base"], GREEDY)
    with pytest.raises(GenerationInputError, match="exceeds the model's context"):
        generate(tiny_engine, "word " * 1100, ["base"], GREEDY)
    with pytest.raises(KeyError, match="Unknown variant"):
        generate(tiny_engine, "Hi", ["missing"], GREEDY)
