"""The training loop's fast path: packed, prompt-sharing log-probs and low-precision frozen weights under autocast.

Both must compute what the plain padded path computes: the same log-probs and gradients (up to float summation
order), and, for the frozen-weight swap, bit for bit the same numbers with the model's weights put back afterwards.
"""

from __future__ import annotations

import dataclasses

import pytest
import torch
from conftest import make_tiny_model

from playground import config
from playground.engine.device import DeviceChoice  # noqa: E402
from playground.engine.packed import (  # noqa: E402
    _buckets,
    _group_by_prompt,
    packed_logps_supported,
    packed_logps_with_continuations,
    packed_sequence_logps,
)
from playground.engine.scoring import collate, response_token_logps  # noqa: E402
from playground.engine.templating import TokenizedPair, tokenize_pair  # noqa: E402
from playground.training.forward import sequence_logps  # noqa: E402
from playground.training.loop import attach_lora, autocast_weights, train  # noqa: E402

PROMPTS = ["Is the sky blue?", "Do cats purr?", "Is the sky blue?", "Why?", "Is the sky blue?",
           "Tell me a long story about dragons and knights, please."]
RESPONSES = ["Yes, it is.", "Go away.", "No!", "Because light scatters in the air, mostly the blue part of it.",
             "Yes.", "Once upon a time"]


def _lora_model(tokenizer, attn: str = "sdpa"):
    base = make_tiny_model(len(tokenizer), 3)
    with torch.no_grad():
        base.get_input_embeddings().weight.mul_(4.0)  # far from uniform, so differences would show
    base.config._attn_implementation = attn
    lora = dataclasses.replace(config.TRAIN.lora, r=4, alpha=8)
    model = attach_lora(base, lora, 0)
    torch.manual_seed(1)
    for name, param in model.named_parameters():
        if "lora_B" in name:
            torch.nn.init.normal_(param, std=0.2)
    return model.train()


def _padded(model, tokenizer, sequences):
    batch = collate(sequences, tokenizer.pad_token_id)
    token_logps, mask = response_token_logps(model, batch)
    return token_logps.sum(-1), mask.sum(-1)


@pytest.mark.parametrize("attn", ["sdpa", "eager"])
def test_packed_logps_and_gradients_match_padded(tokenizer, attn):
    model = _lora_model(tokenizer, attn)
    sequences = [tokenize_pair(tokenizer, p, r) for p, r in zip(PROMPTS, RESPONSES)]
    assert packed_logps_supported(model)
    trainable = [p for p in model.parameters() if p.requires_grad]

    expected, expected_lengths = _padded(model, tokenizer, sequences)
    expected_grads = torch.autograd.grad((expected * torch.arange(1.0, 7.0)).sum(), trainable)
    packed, lengths = packed_sequence_logps(model, sequences, tokenizer.pad_token_id)
    grads = torch.autograd.grad((packed * torch.arange(1.0, 7.0)).sum(), trainable)

    assert lengths.tolist() == expected_lengths.tolist()
    torch.testing.assert_close(packed, expected, atol=5e-5, rtol=1e-6)
    for got, want in zip(grads, expected_grads):
        torch.testing.assert_close(got, want, atol=1e-4, rtol=1e-4)
    # without prompt sharing (one group per sequence, packed rows) the numbers are the same too
    unshared, _ = packed_sequence_logps(model, sequences, tokenizer.pad_token_id, share_prompts=False)
    torch.testing.assert_close(unshared, expected, atol=5e-5, rtol=1e-6)


def test_prompts_are_shared_and_attention_buckets_bound_padding():
    seq = TokenizedPair
    sequences = [seq([1, 2, 3], [4, 5]), seq([9], [8]), seq([1, 2, 3], [6]), seq([7, 7], [5, 5, 5])]
    groups = _group_by_prompt(sequences, max_group_tokens=100)
    assert groups == [([1, 2, 3], [0, 2]), ([9], [1]), ([7, 7], [3])]
    assert _buckets([100, 50, 95, 81, 79, 10]) == [[0, 2, 3], [4], [1], [5]]


def test_trainable_head_falls_back_to_padded_path(tokenizer):
    model = make_tiny_model(len(tokenizer), 0).train()  # every weight trainable, the tied head included
    assert not packed_logps_supported(model)
    sequences = [tokenize_pair(tokenizer, p, r) for p, r in zip(PROMPTS[:3], RESPONSES[:3])]
    sums, _ = sequence_logps(model, sequences, tokenizer.pad_token_id, torch.device("cpu"))
    expected, _ = _padded(model, tokenizer, sequences)
    torch.testing.assert_close(sums, expected)


def test_autocast_weights_is_bit_identical_and_restores(tokenizer):
    model = _lora_model(tokenizer)
    device = DeviceChoice(torch.device("cpu"), torch.float32, torch.bfloat16)
    sequences = [tokenize_pair(tokenizer, p, r) for p, r in zip(PROMPTS, RESPONSES)]
    before = {name: p for name, p in model.named_parameters()}
    snapshot = {name: p.detach().clone() for name, p in before.items()}
    trainable = [p for p in model.parameters() if p.requires_grad]

    with device.autocast():
        plain, _ = packed_sequence_logps(model, sequences, tokenizer.pad_token_id)
    plain_grads = torch.autograd.grad(plain.sum(), trainable)
    with autocast_weights(model, device):
        swapped = [m.get_base_layer().weight.dtype for m in model.modules() if hasattr(m, "lora_A")]
        assert swapped and all(d == torch.bfloat16 for d in swapped)
        with device.autocast():
            fast, _ = packed_sequence_logps(model, sequences, tokenizer.pad_token_id)
        fast_grads = torch.autograd.grad(fast.sum(), trainable)
    assert torch.equal(fast, plain)
    for got, want in zip(fast_grads, plain_grads):
        assert torch.equal(got, want)
    after = dict(model.named_parameters())
    assert after.keys() == before.keys()
    for name, param in after.items():
        assert param is before[name] and param.dtype == snapshot[name].dtype
        assert torch.equal(param, snapshot[name])


def test_training_under_autocast_leaves_base_weights_untouched(tokenizer):
    import pandas as pd

    base = make_tiny_model(len(tokenizer), 0)
    frozen = {k: v.clone() for k, v in base.state_dict().items()}
    frame = pd.DataFrame({"prompt": PROMPTS[:4], "chosen": ["Yes, it is."] * 4, "rejected": ["Go away."] * 4})
    train_config = dataclasses.replace(config.TRAIN, method="dpo", steps=2, batch_size=2, max_length=64,
                                       lora=dataclasses.replace(config.TRAIN.lora, r=4, alpha=8))
    device = DeviceChoice(torch.device("cpu"), torch.float32, torch.bfloat16)
    result = train(base, tokenizer, frame, train_config, device=device)
    assert len(result.history) == 2
    for key, value in base.state_dict().items():
        if "lora_" not in key:
            plain = key.replace("base_model.model.", "").replace(".base_layer", "")
            assert value.dtype == torch.float32
            torch.testing.assert_close(value, frozen[plain], atol=0, rtol=0)



@pytest.mark.parametrize("attn", ["sdpa", "eager"])
def test_continuations_reuse_the_prompt_pass_and_match_separate_scoring(tokenizer, attn):
    model = _lora_model(tokenizer, attn)
    samples = [tokenize_pair(tokenizer, p, r) for p, r in zip(PROMPTS, RESPONSES)]
    # KTO's mismatched pairs: prompt i with response i+1; plus a prompt no sample has, and a one-token continuation
    continuations = [TokenizedPair(samples[i].prompt_ids, samples[(i + 1) % len(samples)].response_ids)
                     for i in range(len(samples))]
    continuations.append(tokenize_pair(tokenizer, "An unseen prompt?", "An answer."))
    continuations.append(TokenizedPair(samples[0].prompt_ids, samples[1].response_ids[:1]))
    trainable = [p for p in model.parameters() if p.requires_grad]

    sums, lengths, cont = packed_logps_with_continuations(model, samples, continuations,
                                                                  tokenizer.pad_token_id)
    assert not cont.requires_grad
    expected, expected_lengths = _padded(model, tokenizer, samples)
    with torch.no_grad():
        expected_cont, _ = _padded(model, tokenizer, continuations)
    assert lengths.tolist() == expected_lengths.tolist()
    torch.testing.assert_close(sums, expected, atol=5e-5, rtol=1e-6)
    torch.testing.assert_close(cont, expected_cont, atol=5e-5, rtol=1e-6)
    grads = torch.autograd.grad(sums.sum(), trainable)
    expected_grads = torch.autograd.grad(expected.sum(), trainable)
    for got, want in zip(grads, expected_grads):
        torch.testing.assert_close(got, want, atol=1e-4, rtol=1e-4)
