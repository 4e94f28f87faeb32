"""Exactness of the per-token log-probs: boundary, padding, adapters, reference."""

from __future__ import annotations

import copy

import pytest
import torch
from peft import PeftModel

from playground.engine.scoring import collate, response_token_logps, score  # noqa: E402
from playground.engine.templating import TokenizedPair, tokenize_pair  # noqa: E402

PROMPTS = ["What is 2+2?", "Name a fruit that is yellow.", [{"role": "user", "content": "Say hi."}]]
RESPONSES = ["4.", "A banana is yellow, and so is a lemon.", "Hi there! How can I help you today?"]


def full_sequence_logp(model, pair: TokenizedPair) -> float:
    """Independent reference: one unpadded forward pass, full log-softmax, sum over the response tokens."""
    ids = torch.tensor([pair.input_ids])
    with torch.no_grad():
        logps = torch.log_softmax(model(ids).logits[0].float(), dim=-1)
    start = len(pair.prompt_ids)
    return sum(logps[t - 1, ids[0, t]].item() for t in range(start, ids.shape[1]))


def test_boundary_matches_literal_tokens(tokenizer):
    pair = tokenize_pair(tokenizer, "What is 2+2?", "4.")
    # <|im_start|>assistant\n closes the prompt; the response is "4." then <|im_end|> and the template's newline.
    assert pair.prompt_ids[-4:] == [1, 520, 9531, 198]
    assert pair.response_ids == [36, 30, 2, 198]
    assert tokenizer.convert_ids_to_tokens(pair.response_ids) == ["4", ".", "<|im_end|>", "Ċ"]
    # One BOS-like <|im_start|> per turn (system, user, assistant) and none doubled at the start.
    assert pair.prompt_ids[:2] == [1, 9690]
    assert pair.prompt_ids.count(1) == 3


def test_system_prompt_and_message_list(tokenizer):
    with_system = tokenize_pair(tokenizer, "Hi", "Hello.", system="Be brief.")
    as_messages = tokenize_pair(
        tokenizer, [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}], "Hello.")
    assert with_system == as_messages
    assert "Be brief." in tokenizer.decode(with_system.prompt_ids)


def test_truncation_keeps_some_response(tokenizer):
    pair = tokenize_pair(tokenizer, "word " * 200, "answer " * 50, max_length=64)
    assert pair.truncated and len(pair.input_ids) <= 64 and len(pair.response_ids) >= 1


def test_sum_equals_full_sequence_computation(tokenizer, tiny_model_factory):
    model = tiny_model_factory(3)
    scores = score(model, tokenizer, PROMPTS, RESPONSES, batch_size=3)
    for i, (prompt, response) in enumerate(zip(PROMPTS, RESPONSES)):
        pair = tokenize_pair(tokenizer, prompt, response)
        assert scores.lengths[i].item() == len(pair.response_ids)
        assert scores.sum_logps[i].item() == pytest.approx(full_sequence_logp(model, pair), abs=1e-4)
        assert scores.mean_logps[i].item() == pytest.approx(scores.sum_logps[i].item() / len(pair.response_ids))


def test_padding_side_and_batching_do_not_change_numbers(tokenizer, tiny_model_factory):
    model = tiny_model_factory(4)
    right = score(model, tokenizer, PROMPTS, RESPONSES, batch_size=3, padding_side="right")
    left = score(model, tokenizer, PROMPTS, RESPONSES, batch_size=3, padding_side="left")
    alone = score(model, tokenizer, PROMPTS, RESPONSES, batch_size=1)
    for other in (left, alone):
        torch.testing.assert_close(right.sum_logps, other.sum_logps, atol=1e-4, rtol=0)
        for a, b in zip(right.token_logps, other.token_logps):
            torch.testing.assert_close(a, b, atol=1e-4, rtol=0)


def test_response_mask_covers_exactly_the_response(tokenizer):
    pairs = [tokenize_pair(tokenizer, p, r) for p, r in zip(PROMPTS, RESPONSES)]
    for side in ("right", "left"):
        batch = collate(pairs, tokenizer.pad_token_id, side)
        for row, pair in enumerate(pairs):
            assert batch.input_ids[row][batch.response_mask[row]].tolist() == pair.response_ids
            assert int(batch.attention_mask[row].sum()) == len(pair.input_ids)


def test_reference_is_base_with_adapter_disabled(tokenizer, tiny_model_factory, tiny_engine):
    plain_base = tiny_model_factory(0)  # same seed as the engine's base: identical weights
    expected = score(plain_base, tokenizer, PROMPTS, RESPONSES)
    via_name = score(tiny_engine.model, tokenizer, PROMPTS, RESPONSES, adapter="__base__")
    with tiny_engine.model.disable_adapter():
        disabled = score(tiny_engine.model, tokenizer, PROMPTS, RESPONSES)
    torch.testing.assert_close(via_name.sum_logps, expected.sum_logps, atol=1e-5, rtol=0)
    torch.testing.assert_close(disabled.sum_logps, expected.sum_logps, atol=1e-5, rtol=0)
    adapted = score(tiny_engine.model, tokenizer, PROMPTS, RESPONSES, adapter="dpo")
    assert not torch.allclose(adapted.sum_logps, expected.sum_logps, atol=1e-3)


def test_two_adapters_on_one_base_match_each_alone(tokenizer, tiny_model_factory, tiny_engine):
    mixed_names = ["dpo", "kto", "__base__"]
    mixed = score(tiny_engine.model, tokenizer, PROMPTS, RESPONSES, adapter=mixed_names)
    for i, name in enumerate(mixed_names):
        if name == "__base__":
            alone_model = tiny_model_factory(0)
        else:
            alone_model = PeftModel.from_pretrained(copy.deepcopy(tiny_model_factory(0)),
                                                    str(tiny_engine.adapters[name].path)).eval()
        alone = score(alone_model, tokenizer, [PROMPTS[i]], [RESPONSES[i]])
        assert mixed.sum_logps[i].item() == pytest.approx(alone.sum_logps[0].item(), abs=1e-5)


def test_gradients_flow_only_through_response_positions(tokenizer, tiny_model_factory):
    model = tiny_model_factory(5).train()
    pairs = [tokenize_pair(tokenizer, p, r) for p, r in zip(PROMPTS, RESPONSES)]
    batch = collate(pairs, tokenizer.pad_token_id)
    token_logps, mask = response_token_logps(model, batch)
    assert token_logps.shape == mask.shape and int(mask.sum()) == sum(len(p.response_ids) for p in pairs)
    token_logps.sum().backward()
    assert model.model.embed_tokens.weight.grad.abs().sum() > 0
