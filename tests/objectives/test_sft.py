"""The SFT regulariser (RPO's NLL term): hand-computed shares, TRL's token-weighted batch form, the covered mask."""

from __future__ import annotations

import math

import pytest
import torch

from playground.objectives.sft import sft_terms


def t(*values):
    return torch.tensor(values, dtype=torch.float64)


def test_hand_computed_shares_and_batch_term():
    # answers of 2 and 4 tokens with summed log-probs -2 and -8: 10 nats over 6 tokens
    terms = sft_terms(t(-2.0, -8.0), torch.tensor([2, 4]), weight=0.5)
    assert terms.nll.tolist() == pytest.approx([1.0, 2.0])  # per-token NLL of each answer
    # share_i = w * -logp_i * B / tokens: 0.5 * 2 * 2 / 6 and 0.5 * 8 * 2 / 6
    assert terms.share.tolist() == pytest.approx([1 / 3, 4 / 3])
    assert terms.batch.item() == pytest.approx(0.5 * 10 / 6)  # TRL: w * -sum(logp) / sum(tokens)


def test_only_covered_answers_count():
    # KTO: the term covers the desirable answers only
    terms = sft_terms(t(-2.0, -8.0, -3.0), torch.tensor([2, 4, 3]), weight=1.0,
                      covered=torch.tensor([True, False, True]))
    assert terms.nll.tolist() == pytest.approx([1.0, 0.0, 1.0])
    assert terms.batch.item() == pytest.approx((2.0 + 3.0) / 5)
    assert terms.share[1].item() == 0.0


def test_zero_weight_and_no_covered_answer_give_zero():
    assert sft_terms(t(-2.0), torch.tensor([2]), weight=0.0).batch.item() == 0.0
    none = sft_terms(t(-2.0, -1.0), torch.tensor([2, 1]), weight=1.0, covered=torch.tensor([False, False]))
    assert none.batch.item() == 0.0 and not math.isnan(none.batch.item())


def test_the_share_carries_the_gradient():
    logps = t(-2.0, -8.0).requires_grad_()
    sft_terms(logps, torch.tensor([2, 4]), weight=0.5).batch.backward()
    # d/dlogp_i of -w * sum(logp) / tokens = -w / tokens
    assert logps.grad.tolist() == pytest.approx([-0.5 / 6, -0.5 / 6])


def test_refuses_a_negative_weight():
    with pytest.raises(ValueError, match="SFT weight must be >= 0"):
        sft_terms(t(-1.0), torch.tensor([1]), weight=-1.0)
