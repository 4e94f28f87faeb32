"""SimPO, ORPO, APO-zero/down and BCO against hand-computed numbers, their properties, the SFT term on top, and the
objectives' registry. TRL parity is in ``test_more_objectives_trl.py``."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from playground.objectives import apo, bco, orpo, simpo
from playground.objectives.apo import apo_loss
from playground.objectives.bco import RewardBaseline, bco_loss, bco_rewards
from playground.objectives.orpo import log1mexp, log_odds, orpo_loss
from playground.objectives.registry import OBJECTIVES, objective, reference_free
from playground.objectives.sft import sft_terms
from playground.objectives.simpo import simpo_loss


def t(*values: float) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.float64)


def n(*values: int) -> torch.Tensor:
    return torch.tensor(values)


def softplus_neg(z: float) -> float:
    """-log sigma(z) = log(1 + e^-z)."""
    return math.log1p(math.exp(-z))


logp = st.floats(min_value=-60.0, max_value=-0.01, allow_nan=False)
logratio = st.floats(min_value=-30.0, max_value=30.0, allow_nan=False)
betas = st.floats(min_value=0.01, max_value=2.0)


# --------------------------------------------------------------------------------------------------------------------
# SimPO


def test_simpo_by_hand():
    # beta = 2, gamma = 0.5.
    # pair 1: chosen -4 over 4 tokens (avg -1), rejected -9 over 3 (avg -3): r_w = -2, r_l = -6, margin 4,
    #         z = 4 - 0.5 = 3.5, loss = log(1 + e^-3.5) = 0.0297504
    # pair 2: chosen -6 over 2 (avg -3), rejected -2 over 2 (avg -1): r_w = -6, r_l = -2, margin -4,
    #         z = -4.5, loss = log(1 + e^4.5) = 4.5110477
    terms = simpo_loss(t(-4.0, -6.0), t(-9.0, -2.0), n(4, 2), n(3, 2), beta=2.0, gamma=0.5)
    assert terms.chosen_avg_logp.tolist() == pytest.approx([-1.0, -3.0])
    assert terms.rejected_avg_logp.tolist() == pytest.approx([-3.0, -1.0])
    assert terms.chosen_reward.tolist() == pytest.approx([-2.0, -6.0])
    assert terms.rejected_reward.tolist() == pytest.approx([-6.0, -2.0])
    assert terms.margin.tolist() == pytest.approx([4.0, -4.0])
    assert terms.loss.tolist() == pytest.approx([0.0297504183, 4.5110477448], abs=1e-9)
    assert terms.batch_loss.item() == pytest.approx((0.0297504183 + 4.5110477448) / 2, abs=1e-9)
    # sigma(-3.5), sigma(4.5)
    assert terms.grad_weight.tolist() == pytest.approx([0.0293122308, 0.9890130574], abs=1e-9)
    assert terms.chosen_preferred.tolist() == [True, False]
    assert terms.accuracy == 0.5


def test_simpo_label_smoothing_by_hand():
    # pair 1 above with e = 0.1: 0.9 log(1 + e^-3.5) + 0.1 log(1 + e^3.5) = 0.0267754 + 0.3529750
    terms = simpo_loss(t(-4.0), t(-9.0), n(4), n(3), beta=2.0, gamma=0.5, label_smoothing=0.1)
    assert terms.loss.item() == pytest.approx(0.3797504183, abs=1e-9)


@settings(max_examples=60, deadline=None)
@given(logp, logp, st.integers(1, 40), st.integers(1, 40), st.integers(2, 9), betas,
       st.floats(min_value=-2.0, max_value=3.0))
def test_simpo_depends_only_on_the_average_log_prob(avg_w, avg_l, len_w, len_l, scale, beta, gamma):
    """Scaling a response's length with the same per-token log-prob leaves every SimPO term unchanged."""
    short = simpo_loss(t(avg_w * len_w), t(avg_l * len_l), n(len_w), n(len_l), beta=beta, gamma=gamma)
    long = simpo_loss(t(avg_w * len_w * scale), t(avg_l * len_l * scale), n(len_w * scale), n(len_l * scale),
                      beta=beta, gamma=gamma)
    for name in ("loss", "chosen_reward", "rejected_reward", "margin", "grad_weight"):
        assert getattr(long, name).item() == pytest.approx(getattr(short, name).item(), rel=1e-9, abs=1e-12)


def test_simpo_grad_weight_is_the_gradient_scale():
    chosen, rejected = t(-4.0, -6.0).requires_grad_(), t(-9.0, -2.0).requires_grad_()
    lengths_w, lengths_l = n(4, 2), n(3, 2)
    terms = simpo_loss(chosen, rejected, lengths_w, lengths_l, beta=2.0, gamma=0.5)
    terms.loss.sum().backward()
    # d loss / d log pi(y_w) = -beta sigma(-z) / |y_w|, and + beta sigma(-z) / |y_l| for y_l
    assert chosen.grad.tolist() == pytest.approx((-2.0 * terms.grad_weight / lengths_w).tolist())
    assert rejected.grad.tolist() == pytest.approx((2.0 * terms.grad_weight / lengths_l).tolist())


def test_simpo_refuses_bad_input():
    with pytest.raises(ValueError, match="at least one token"):
        simpo_loss(t(-1.0), t(-1.0), n(0), n(1), beta=2.0, gamma=0.5)
    with pytest.raises(ValueError, match="beta"):
        simpo_loss(t(-1.0), t(-1.0), n(1), n(1), beta=0.0, gamma=0.5)
    with pytest.raises(ValueError, match="label_smoothing"):
        simpo_loss(t(-1.0), t(-1.0), n(1), n(1), beta=2.0, gamma=0.5, label_smoothing=0.5)
    with pytest.raises(ValueError, match="shape"):
        simpo_loss(t(-1.0, -2.0), t(-1.0), n(1), n(1), beta=2.0, gamma=0.5)


# --------------------------------------------------------------------------------------------------------------------
# ORPO


def test_log1mexp_is_stable_at_both_ends():
    x = t(-1e-10, -0.5, -math.log(2.0), -1.5, -50.0)
    expected = [math.log(-math.expm1(v)) for v in x.tolist()]
    assert log1mexp(x).tolist() == pytest.approx(expected, rel=1e-12)
    # the naive form loses the first one entirely in float32; the stable one keeps log(1e-6)
    assert log1mexp(torch.tensor([-1e-6])).item() == pytest.approx(math.log(1e-6), rel=1e-5)
    assert log1mexp(torch.tensor([-50.0])).item() == pytest.approx(-math.exp(-50.0), rel=1e-5)
    # log odds = log P - log(1 - P): P = 1/2 has odds 1
    assert log_odds(t(-math.log(2.0))).item() == pytest.approx(0.0, abs=1e-12)


def test_orpo_by_hand():
    # beta = 0.1. pair 1: chosen -2 over 4 tokens (log P = -0.5), rejected -3 over 2 (log P = -1.5).
    #   log odds(-0.5) = -0.5 - log(1 - e^-0.5) = 0.4327521; log odds(-1.5) = -1.5 - log(1 - e^-1.5) = -1.2475175
    #   ratio 1.6802697, log sigma(ratio) = -0.1708592
    # pair 2: chosen -6 over 3 (log P = -2), rejected -1 over 5 (log P = -0.2).
    #   log odds -1.8545865 and 1.5077718, ratio -3.3623583, log sigma = -3.3964249
    # NLL, token-weighted (TRL): 8 nats over 7 chosen tokens; shares B * nats / 7 = 4/7 and 12/7
    terms = orpo_loss(t(-2.0, -6.0), t(-3.0, -1.0), n(4, 3), n(2, 5), beta=0.1)
    assert terms.chosen_avg_logp.tolist() == pytest.approx([-0.5, -2.0])
    assert terms.rejected_avg_logp.tolist() == pytest.approx([-1.5, -0.2])
    assert terms.log_odds_ratio.tolist() == pytest.approx([1.6802696706, -3.3623583431], abs=1e-9)
    assert terms.log_sigmoid_ratio.tolist() == pytest.approx([-0.1708592171, -3.3964248710], abs=1e-9)
    assert terms.odds_ratio_loss.tolist() == pytest.approx([0.0170859217, 0.3396424871], abs=1e-9)
    assert terms.nll.tolist() == pytest.approx([0.5, 2.0])  # each answer's mean token NLL
    assert terms.nll_share.tolist() == pytest.approx([4 / 7, 12 / 7])
    assert terms.batch_nll.item() == pytest.approx(8 / 7)
    assert terms.loss.tolist() == pytest.approx([4 / 7 + 0.0170859217, 12 / 7 + 0.3396424871], abs=1e-9)
    # rewards as TRL logs them: beta * log P
    assert terms.chosen_reward.tolist() == pytest.approx([-0.05, -0.2])
    assert terms.rejected_reward.tolist() == pytest.approx([-0.15, -0.02])
    assert terms.chosen_preferred.tolist() == [True, False]


def test_orpo_sample_reduction_is_each_answers_mean_nll():
    # the paper's per-sample L_SFT: 0.5 and 2.0, whatever the lengths
    terms = orpo_loss(t(-2.0, -6.0), t(-3.0, -1.0), n(4, 3), n(2, 5), beta=0.1, nll_reduction="sample")
    assert terms.nll_share.tolist() == pytest.approx([0.5, 2.0])
    assert terms.batch_nll.item() == pytest.approx(1.25)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(logp, logp, st.integers(1, 30), st.integers(1, 30)), min_size=1, max_size=4),
       st.sampled_from(orpo.NLL_REDUCTIONS))
def test_orpo_reduces_to_the_nll_at_beta_zero(rows, reduction):
    chosen, rejected, len_w, len_l = (list(column) for column in zip(*rows))
    terms = orpo_loss(t(*chosen), t(*rejected), n(*len_w), n(*len_l), beta=0.0, nll_reduction=reduction)
    assert terms.odds_ratio_loss.abs().max().item() == 0.0
    assert torch.equal(terms.loss, terms.nll_share)
    if reduction == "token":
        assert terms.batch_loss.item() == pytest.approx(-sum(chosen) / sum(len_w), rel=1e-12)
    else:
        assert terms.batch_loss.item() == pytest.approx(sum(-c / k for c, k in zip(chosen, len_w)) / len(rows))


def test_orpo_nll_can_cover_another_sequence():
    # TRL's NLL covers prompt + response: pass that sequence's log-probs and token count
    terms = orpo_loss(t(-2.0), t(-3.0), n(4), n(2), beta=0.1, nll_logps=t(-9.0), nll_lengths=n(10))
    assert terms.nll.item() == pytest.approx(0.9)
    assert terms.batch_nll.item() == pytest.approx(0.9)
    assert terms.log_odds_ratio.item() == pytest.approx(1.6802696706, abs=1e-9)  # the odds use the response only
    with pytest.raises(ValueError, match="together"):
        orpo_loss(t(-2.0), t(-3.0), n(4), n(2), beta=0.1, nll_logps=t(-9.0))
    with pytest.raises(ValueError, match="nll_reduction"):
        orpo_loss(t(-2.0), t(-3.0), n(4), n(2), beta=0.1, nll_reduction="mean")


def test_orpo_gradient_is_finite_near_certain_answers():
    chosen = t(-1e-6, -2.0).requires_grad_()
    orpo_loss(chosen, t(-3.0, -1e-7), n(3, 3), n(2, 2), beta=0.2).batch_loss.backward()
    assert torch.isfinite(chosen.grad).all()


# --------------------------------------------------------------------------------------------------------------------
# APO


def test_apo_by_hand():
    # beta = 0.1; pair 1: r_w = +1, r_l = -1; pair 2: r_w = -2, r_l = +3
    policy_w, policy_l, reference_w, reference_l = t(-10.0, -14.0), t(-12.0, -8.0), t(-11.0, -12.0), t(-11.0, -11.0)
    zero = apo_loss(policy_w, policy_l, reference_w, reference_l, beta=0.1, variant="zero")
    # 1 - sigma(0.1) + sigma(-0.1) = 0.9500416; 1 - sigma(-0.2) + sigma(0.3) = 1.1242765
    assert zero.loss.tolist() == pytest.approx([0.9500416250, 1.1242765141], abs=1e-9)
    down = apo_loss(policy_w, policy_l, reference_w, reference_l, beta=0.1, variant="down")
    # sigma(0.1) + 1 - sigma(0.2) = 0.9751452; sigma(-0.2) + 1 - sigma(-0.5) = 1.0726253
    assert down.loss.tolist() == pytest.approx([0.9751451902, 1.0726253339], abs=1e-9)
    for terms in (zero, down):
        assert terms.chosen_logratio.tolist() == pytest.approx([1.0, -2.0])
        assert terms.rejected_logratio.tolist() == pytest.approx([-1.0, 3.0])
        assert terms.chosen_reward.tolist() == pytest.approx([0.1, -0.2])  # TRL logs DPO's rewards
        assert terms.margin.tolist() == pytest.approx([0.2, -0.5])
        assert terms.accuracy == 0.5
    # APO-zero's pushes: beta sigma'(beta r): 0.1 sigma(0.1) sigma(-0.1) = 0.0249376
    assert zero.chosen_push[0].item() == pytest.approx(0.0249376040, abs=1e-9)
    assert zero.rejected_push[0].item() == pytest.approx(-0.0249376040, abs=1e-9)


@pytest.mark.parametrize("variant", apo.APO_VARIANTS)
def test_apo_pushes_are_minus_the_gradient(variant):
    policy_w, policy_l = t(-10.0, -14.0, -3.0).requires_grad_(), t(-12.0, -8.0, -30.0).requires_grad_()
    terms = apo_loss(policy_w, policy_l, t(-11.0, -12.0, -9.0), t(-11.0, -11.0, -2.0), beta=0.3, variant=variant)
    terms.loss.sum().backward()
    assert terms.chosen_push.tolist() == pytest.approx((-policy_w.grad).tolist(), abs=1e-12)
    assert terms.rejected_push.tolist() == pytest.approx((-policy_l.grad).tolist(), abs=1e-12)


@settings(max_examples=80, deadline=None)
@given(logratio, logratio, logp, logp, st.floats(min_value=0.01, max_value=1.0))
def test_apo_zero_pushes_chosen_up_and_rejected_down(r_w, r_l, ref_w, ref_l, beta):
    """Whatever the log-ratios, APO-zero's gradient raises log pi(y_w) and lowers log pi(y_l), each on its own.

    |beta r| <= 30 here: beyond ~37 sigma(beta r) rounds to 1 in float64 and the gradient to exactly 0.
    """
    policy_w, policy_l = t(ref_w + r_w).requires_grad_(), t(ref_l + r_l).requires_grad_()
    apo_loss(policy_w, policy_l, t(ref_w), t(ref_l), beta=beta, variant="zero").batch_loss.backward()
    assert policy_w.grad.item() < 0  # gradient descent raises the chosen log-prob
    assert policy_l.grad.item() > 0  # and lowers the rejected one
    # each answer's push depends on its own log-ratio only (anchored, unlike DPO's difference)
    other = apo_loss(t(ref_w + r_w), t(ref_l + r_l + 5.0), t(ref_w), t(ref_l), beta=beta, variant="zero")
    assert other.chosen_push.item() == pytest.approx(beta * torch.sigmoid(t(beta * r_w)).item()
                                                     * torch.sigmoid(t(-beta * r_w)).item(), rel=1e-9)


def test_apo_refuses_an_unknown_variant():
    with pytest.raises(ValueError, match="variant"):
        apo_loss(t(-1.0), t(-1.0), t(-1.0), t(-1.0), beta=0.1, variant="up")


# --------------------------------------------------------------------------------------------------------------------
# BCO


def test_bco_by_hand():
    # beta = 0.1, delta = 0.05. desirable: log-ratio +2, r = 0.2, loss = -log sigma(0.15) = 0.6209570;
    # undesirable: log-ratio -3, r = -0.3, loss = -log sigma(-(-0.3 - 0.05)) = -log sigma(0.35) = 0.5333822
    terms = bco_loss(t(-8.0, -14.0), t(-10.0, -11.0), torch.tensor([True, False]), beta=0.1, delta=0.05)
    assert terms.logratio.tolist() == pytest.approx([2.0, -3.0])
    assert terms.reward.tolist() == pytest.approx([0.2, -0.3])
    assert terms.delta.item() == pytest.approx(0.05)
    assert terms.loss.tolist() == pytest.approx([0.6209570478, 0.5333821554], abs=1e-9)
    assert terms.batch_loss.item() == pytest.approx((0.6209570478 + 0.5333821554) / 2, abs=1e-9)
    assert terms.desirable_reward_mean == pytest.approx(0.2)
    assert terms.undesirable_reward_mean == pytest.approx(-0.3)
    assert terms.accuracy == 1.0


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(logratio, st.booleans()), min_size=1, max_size=6), betas)
def test_bco_with_zero_delta_is_minus_logsigmoid_of_the_reward(rows, beta):
    ratios, labels = zip(*rows)
    desirable = torch.tensor(labels)
    terms = bco_loss(t(*ratios), torch.zeros(len(rows), dtype=torch.float64), desirable, beta=beta)
    reward = beta * t(*ratios)
    expected = torch.where(desirable, -torch.nn.functional.logsigmoid(reward),
                           -torch.nn.functional.logsigmoid(-reward))
    assert torch.allclose(terms.loss, expected, rtol=1e-12, atol=1e-15)


def test_bco_undesirable_weights_touch_only_undesirable_samples():
    desirable = torch.tensor([True, False])
    plain = bco_loss(t(-8.0, -14.0), t(-10.0, -11.0), desirable, beta=0.1)
    weighted = bco_loss(t(-8.0, -14.0), t(-10.0, -11.0), desirable, beta=0.1, undesirable_weights=t(7.0, 2.5))
    assert weighted.weight.tolist() == [1.0, 2.5]
    assert weighted.loss.tolist() == pytest.approx([plain.loss[0].item(), 2.5 * plain.loss[1].item()])


def test_running_baseline_is_trls_count_weighted_mean():
    # TRL's RunningMoments: every reward seen weighs the same. Batch 1 [0.2, -0.4] -> -0.1;
    # batch 2 [0.5, 0.1, 0.3] -> (0.2 - 0.4 + 0.5 + 0.1 + 0.3) / 5 = 0.14 (not the mean of batch means, 0.1)
    baseline = RewardBaseline()
    assert baseline.delta == 0.0  # before any update, as TRL's mean = 0
    assert baseline.update(t(0.2, -0.4)) == pytest.approx(-0.1)
    assert baseline.update(t(0.5, 0.1, 0.3)) == pytest.approx(0.14)
    assert baseline.count == 5
    assert baseline.update(t()) == pytest.approx(0.14)  # an empty batch changes nothing


def test_running_baseline_as_an_exponential_moving_average():
    # decay 0.9: first batch's mean -0.1, then 0.9 * -0.1 + 0.1 * 0.3 = -0.06
    baseline = RewardBaseline(decay=0.9)
    assert baseline.update(t(0.2, -0.4)) == pytest.approx(-0.1)
    assert baseline.update(t(0.5, 0.1, 0.3)) == pytest.approx(-0.06)
    with pytest.raises(ValueError, match="decay"):
        RewardBaseline(decay=1.0)


def test_bco_step_updates_delta_before_using_it():
    """TRL's order: the batch's rewards join the running mean, then the loss uses the updated delta."""
    policy, reference, desirable = t(-8.0, -14.0), t(-10.0, -11.0), torch.tensor([True, False])
    baseline = RewardBaseline()
    delta = baseline.update(bco_rewards(policy, reference, beta=0.1))
    assert delta == pytest.approx((0.2 - 0.3) / 2)
    terms = bco_loss(policy, reference, desirable, beta=0.1, delta=delta)
    assert terms.loss.tolist() == pytest.approx([softplus_neg(0.2 + 0.05), softplus_neg(0.3 - 0.05)])


def test_no_gradient_flows_through_delta():
    policy = t(-8.0, -14.0).requires_grad_()
    delta = torch.tensor(0.3, dtype=torch.float64, requires_grad=True)
    bco_loss(policy, t(-10.0, -11.0), torch.tensor([True, False]), beta=0.1, delta=delta).batch_loss.backward()
    assert delta.grad is None and policy.grad is not None


# --------------------------------------------------------------------------------------------------------------------
# The SFT term on top of any of them (RPO)


PAIRS = dict(chosen=t(-4.0, -6.0, -3.0), rejected=t(-9.0, -2.0, -5.0), len_w=n(4, 2, 3), len_l=n(3, 2, 5))


def _pairwise_terms(name: str):
    p = PAIRS
    if name == "simpo":
        return simpo_loss(p["chosen"], p["rejected"], p["len_w"], p["len_l"], beta=2.0, gamma=0.5)
    return apo_loss(p["chosen"], p["rejected"], t(-5.0, -5.0, -5.0), t(-5.0, -5.0, -5.0), beta=0.1,
                    variant=name.removeprefix("apo_"))


@pytest.mark.parametrize("name", ["simpo", "apo_zero", "apo_down"])
@pytest.mark.parametrize("alpha", [0.0, 0.5, 2.0])
def test_sft_term_adds_exactly_alpha_times_the_nll(name, alpha):
    terms = _pairwise_terms(name)
    sft = sft_terms(PAIRS["chosen"], PAIRS["len_w"], weight=alpha)
    # 13 nats over 9 chosen tokens, token-weighted as TRL's "sft" loss type
    assert (terms.batch_loss + sft.batch).item() - terms.batch_loss.item() == pytest.approx(alpha * 13 / 9)
    assert (terms.loss + sft.share).mean().item() == pytest.approx(terms.batch_loss.item() + alpha * 13 / 9)


def test_sft_term_on_bco_covers_the_desirable_answers():
    policy, desirable, lengths = t(-4.0, -6.0, -3.0), torch.tensor([True, False, True]), n(4, 2, 3)
    terms = bco_loss(policy, t(-5.0, -5.0, -5.0), desirable, beta=0.1)
    sft = sft_terms(policy, lengths, weight=0.5, covered=desirable)
    assert sft.batch.item() == pytest.approx(0.5 * 7 / 7)  # 7 nats over the 7 desirable tokens
    assert (terms.loss + sft.share).mean().item() == pytest.approx(terms.batch_loss.item() + 0.5)


# --------------------------------------------------------------------------------------------------------------------
# The registry


def test_reference_free_objectives_are_marked():
    assert reference_free() == ("simpo", "orpo")
    assert simpo.NEEDS_REFERENCE is False and orpo.NEEDS_REFERENCE is False
    assert apo.NEEDS_REFERENCE is True and bco.NEEDS_REFERENCE is True
    assert [name for name, spec in OBJECTIVES.items() if not spec.paired] == ["kto", "bco"]
    assert objective("orpo").builtin_nll and objective("orpo").sft_covers is None
    assert objective("simpo").sft_covers == "chosen" and objective("bco").sft_covers == "desirable"


def _call(spec, **overrides):
    chosen, rejected, lengths = t(-4.0, -6.0), t(-9.0, -2.0), n(4, 2)
    reference = t(-5.0, -5.0)
    kwargs = spec.kwargs(**overrides)
    if not spec.paired:
        desirable = torch.tensor([True, False])
        if spec.name == "kto":
            return spec.loss(chosen, reference, desirable, rejected, reference, **kwargs)
        return spec.loss(chosen, reference, desirable, **kwargs)
    if not spec.needs_reference:
        return spec.loss(chosen, rejected, lengths, lengths, **kwargs)
    return spec.loss(chosen, rejected, reference, reference, **kwargs)


@pytest.mark.parametrize("name", list(OBJECTIVES))
def test_every_entry_runs_with_its_defaults(name):
    spec = objective(name)
    terms = _call(spec)
    assert terms.loss.shape == (2,) and torch.isfinite(terms.loss).all()
    assert spec.name == name and spec.trl and spec.paper


def test_entries_fix_their_variant_and_refuse_unknown_hyperparameters():
    zero, down = _call(objective("apo_zero")), _call(objective("apo_down"))
    assert (zero.variant, down.variant) == ("zero", "down")
    assert _call(objective("dpo"), beta=0.5).chosen_reward.tolist() == pytest.approx([0.5, -0.5])
    with pytest.raises(ValueError, match="no hyperparameter gamma"):
        objective("dpo").kwargs(gamma=1.0)
    with pytest.raises(ValueError, match="unknown objective"):
        objective("ppo")
