"""DPO and KTO per-sample terms against hand-computed numbers, plus properties that must hold for any input."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from playground.objectives.dpo import dpo_loss, preference_accuracy  # noqa: E402
from playground.objectives.kto import (  # noqa: E402
    KTO_WEIGHT_BAND,
    kto_loss,
    kto_reference_point,
    kto_weight_advice,
    mismatched_pairs,
)

LN2 = math.log(2.0)


def t(*values: float) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.float64)


# The hand example: beta = 0.1, policy (chosen, rejected) = (-10, -12), reference = (-11, -11).
# Log-ratios +1 and -1, so D = 2 and beta D = 0.2.
HAND = dict(
    policy_chosen_logps=t(-10.0),
    policy_rejected_logps=t(-12.0),
    reference_chosen_logps=t(-11.0),
    reference_rejected_logps=t(-11.0),
)


def test_sigmoid_loss_and_terms_by_hand():
    terms = dpo_loss(**HAND, beta=0.1)
    # -log sigma(0.2) = log(1 + e^-0.2)
    assert terms.loss.item() == pytest.approx(0.598139, abs=1e-6)
    assert terms.chosen_logratio.item() == pytest.approx(1.0)
    assert terms.rejected_logratio.item() == pytest.approx(-1.0)
    assert terms.chosen_reward.item() == pytest.approx(0.1)
    assert terms.rejected_reward.item() == pytest.approx(-0.1)
    assert terms.margin.item() == pytest.approx(0.2)
    # sigma(-0.2) = 1 / (1 + e^0.2)
    assert terms.grad_weight.item() == pytest.approx(0.450166, abs=1e-6)
    assert terms.chosen_preferred.tolist() == [True]
    assert terms.accuracy == 1.0


def test_conservative_label_smoothing_by_hand():
    # 0.9 * 0.598139 + 0.1 * (-log sigma(-0.2) = 0.798139)
    terms = dpo_loss(**HAND, beta=0.1, label_smoothing=0.1)
    assert terms.loss.item() == pytest.approx(0.618139, abs=1e-6)


def test_hinge_by_hand():
    assert dpo_loss(**HAND, beta=0.1, loss_type="hinge").loss.item() == pytest.approx(0.8)
    # beyond the hinge the loss is exactly zero
    far = dpo_loss(t(0.0), t(-30.0), t(-1.0), t(-1.0), beta=0.1, loss_type="hinge")
    assert far.loss.item() == 0.0


def test_ipo_is_length_normalised_like_trl():
    # pair 1: (1/4 - (-1)/2) - 1/(2*0.1) = 0.75 - 5 -> 18.0625; pair 2: (0 - 0) - 5 -> 25
    terms = dpo_loss(
        t(-10.0, -3.0),
        t(-12.0, -4.0),
        t(-11.0, -3.0),
        t(-11.0, -4.0),
        beta=0.1,
        loss_type="ipo",
        chosen_lengths=torch.tensor([4, 1]),
        rejected_lengths=torch.tensor([2, 7]),
    )
    assert terms.loss.tolist() == pytest.approx([18.0625, 25.0])
    assert terms.batch_loss.item() == pytest.approx(21.53125)


def test_robust_by_hand():
    # (-(1-e) log sigma(bD) + e log sigma(-bD)) / (1 - 2e), e = 0.1:
    # bD = 0.2: (0.9 * 0.598139 - 0.1 * 0.798139) / 0.8 = 0.573139
    # bD = -0.3: (0.9 * 0.854355 - 0.1 * 0.554355) / 0.8 = 0.891855
    terms = dpo_loss(
        t(-10.0, -5.0), t(-12.0, -2.0), t(-11.0, -5.0), t(-11.0, -5.0), beta=0.1, loss_type="robust",
        label_smoothing=0.1,
    )
    assert terms.loss.tolist() == pytest.approx([0.573139, 0.891855], abs=1e-6)
    assert terms.chosen_preferred.tolist() == [True, False]
    assert terms.accuracy == 0.5
    # with e = 0 robust DPO is plain DPO
    plain = dpo_loss(**HAND, beta=0.1, loss_type="robust")
    assert plain.loss.item() == pytest.approx(0.598139, abs=1e-6)


def test_batch_loss_is_the_mean_of_per_sample_losses():
    terms = dpo_loss(t(-10.0, -5.0, -1.0), t(-12.0, -2.0, -1.0), t(-11.0, -5.0, -2.0), t(-11.0, -5.0, -3.0), beta=0.5)
    assert terms.batch_loss.item() == pytest.approx(sum(terms.loss.tolist()) / 3)


@settings(max_examples=40, deadline=None)
@given(
    st.lists(st.floats(-200, 0, allow_nan=False), min_size=4, max_size=4),
    st.sampled_from(["sigmoid", "robust"]),
    st.floats(0.01, 5.0),
)
def test_loss_is_ln2_when_policy_equals_reference(logps, variant, beta):
    chosen, rejected = t(logps[0], logps[1]), t(logps[2], logps[3])
    terms = dpo_loss(chosen, rejected, chosen.clone(), rejected.clone(), beta=beta, loss_type=variant)
    assert terms.loss.tolist() == pytest.approx([LN2, LN2])
    assert terms.margin.tolist() == [0.0, 0.0]
    assert terms.grad_weight.tolist() == pytest.approx([0.5, 0.5])


@settings(max_examples=40, deadline=None)
@given(
    # margins on a 0.1 grid: distinct enough that float64 losses are strictly ordered
    st.lists(st.integers(-200, 200), min_size=8, max_size=8, unique=True),
    st.floats(0.01, 2.0),
    st.floats(0.0, 0.45),
    st.sampled_from(["sigmoid", "robust", "hinge"]),
)
def test_dpo_loss_falls_as_the_margin_grows(deltas, beta, label_smoothing, variant):
    # conservative smoothing makes sigmoid DPO turn back up past its optimum (see the next test): plain sigmoid only
    label_smoothing = 0.0 if variant == "sigmoid" else label_smoothing
    ordered = [d / 10 for d in sorted(deltas)]
    zeros = torch.zeros(len(ordered), dtype=torch.float64)
    terms = dpo_loss(t(*ordered), zeros, zeros, zeros, beta=beta, loss_type=variant, label_smoothing=label_smoothing)
    losses = terms.loss.tolist()
    assert terms.margin.tolist() == pytest.approx([beta * d for d in ordered])
    if variant == "hinge":  # flat at zero past the hinge
        assert all(a >= b for a, b in zip(losses, losses[1:]))
    else:
        assert all(a > b for a, b in zip(losses, losses[1:]))
    grad_weights = terms.grad_weight.tolist()
    assert all(a >= b for a, b in zip(grad_weights, grad_weights[1:]))  # >=: sigma saturates at 1 in float64


def test_conservative_dpo_is_minimal_at_a_finite_margin():
    # d/dz [-(1-e) log sigma(z) - e log sigma(-z)] = 0 at z = log((1-e)/e): cDPO stops pushing there
    e, beta = 0.1, 0.5
    best = math.log((1 - e) / e) / beta
    deltas = t(best - 1.0, best, best + 1.0)
    zeros = torch.zeros(3, dtype=torch.float64)
    losses = dpo_loss(deltas, zeros, zeros, zeros, beta=beta, label_smoothing=e).loss.tolist()
    assert losses[1] < losses[0] and losses[1] < losses[2]
    # the minimum is the binary entropy of e
    assert losses[1] == pytest.approx(-(1 - e) * math.log(1 - e) - e * math.log(e))


@settings(max_examples=40, deadline=None)
@given(st.lists(st.floats(-100, 0, allow_nan=False), min_size=4, max_size=4), st.floats(0.01, 2.0))
def test_swapping_chosen_and_rejected_flips_the_margin(logps, beta):
    pc, pr, rc, rr = (t(v) for v in logps)
    forward = dpo_loss(pc, pr, rc, rr, beta=beta)
    swapped = dpo_loss(pr, pc, rr, rc, beta=beta)
    assert swapped.margin.item() == pytest.approx(-forward.margin.item(), abs=1e-12)
    assert swapped.chosen_reward.item() == forward.rejected_reward.item()


def test_loss_keeps_the_graph_and_reports_are_detached():
    policy_chosen = t(-10.0).requires_grad_()
    terms = dpo_loss(policy_chosen, t(-12.0), t(-11.0), t(-11.0), beta=0.1)
    terms.batch_loss.backward()
    # d/ds_w of -log sigma(beta (s_w - ...)) = -beta * sigma(-beta D) = -beta * grad_weight
    assert policy_chosen.grad.item() == pytest.approx(-0.1 * terms.grad_weight.item())
    assert not terms.chosen_reward.requires_grad


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (dict(beta=0.0), "beta"),
        (dict(beta=-1.0), "beta"),
        (dict(beta=0.1, label_smoothing=0.5), "label_smoothing"),
        (dict(beta=0.1, label_smoothing=-0.1), "label_smoothing"),
        (dict(beta=0.1, loss_type="ipo"), "chosen_lengths"),
        (dict(beta=0.1, loss_type="nope"), "unknown DPO loss type"),
    ],
)
def test_dpo_rejects_bad_settings(kwargs, message):
    with pytest.raises(ValueError, match=message):
        dpo_loss(**HAND, **kwargs)


def test_dpo_rejects_shape_mismatch():
    with pytest.raises(ValueError, match="one shape"):
        dpo_loss(t(-1.0, -2.0), t(-1.0), t(-1.0), t(-1.0), beta=0.1)
    with pytest.raises(ValueError, match="one shape"):
        dpo_loss(
            **HAND, beta=0.1, loss_type="ipo", chosen_lengths=torch.tensor([1, 2]), rejected_lengths=torch.tensor([1])
        )


def test_preference_accuracy_counts_ties_as_wrong():
    assert preference_accuracy(t(1.0, 2.0, 3.0, 0.0), t(0.0, 2.0, 4.0, -1.0)) == 0.5
    assert math.isnan(preference_accuracy(t(), t()))


# --------------------------------------------------------------------------------------------------------------------
# KTO
# --------------------------------------------------------------------------------------------------------------------

# Mismatched log-ratios {+0.5, -0.3}: z0 = max(0, 0.1) = 0.1.
KL_POLICY, KL_REFERENCE = t(-9.5, -12.3), t(-10.0, -12.0)


def test_kto_by_hand():
    # desirable r = +1, undesirable r = -1
    terms = kto_loss(t(-9.0, -11.0), t(-10.0, -10.0), torch.tensor([True, False]), KL_POLICY, KL_REFERENCE, beta=0.1)
    assert terms.z0.item() == pytest.approx(0.1)
    # 1 - sigma(0.1 * (1 - 0.1)) and 1 - sigma(0.1 * (0.1 + 1))
    assert terms.loss.tolist() == pytest.approx([0.477515, 0.472528], abs=1e-6)
    assert terms.value.tolist() == pytest.approx([1 - 0.477515, 1 - 0.472528], abs=1e-6)
    assert terms.weight.tolist() == [1.0, 1.0]
    assert terms.reward.tolist() == pytest.approx([0.1, -0.1])
    assert terms.logratio.tolist() == pytest.approx([1.0, -1.0])
    assert terms.batch_loss.item() == pytest.approx((0.477515 + 0.472528) / 2, abs=1e-6)
    assert terms.desirable_reward_mean == pytest.approx(0.1)
    assert terms.undesirable_reward_mean == pytest.approx(-0.1)


def test_kto_weights_scale_value_and_loss():
    terms = kto_loss(
        t(-9.0, -11.0),
        t(-10.0, -10.0),
        torch.tensor([True, False]),
        KL_POLICY,
        KL_REFERENCE,
        beta=0.1,
        desirable_weight=2.0,
        undesirable_weight=0.5,
    )
    assert terms.weight.tolist() == [2.0, 0.5]
    assert terms.loss.tolist() == pytest.approx([2 * 0.477515, 0.5 * 0.472528], abs=1e-6)


def test_kto_z0_is_clamped_at_zero_and_detached():
    policy_kl = t(-11.0, -13.0).requires_grad_()
    z0 = kto_reference_point(policy_kl, t(-10.0, -12.0))  # mean log-ratio -1
    assert z0.item() == 0.0
    assert not z0.requires_grad
    terms = kto_loss(t(-9.0), t(-10.0), torch.tensor([True]), policy_kl, t(-10.0, -12.0), beta=0.1)
    # z0 = 0: 1 - sigma(0.1)
    assert terms.loss.item() == pytest.approx(0.475021, abs=1e-6)


def test_apo_zero_unpaired_by_hand():
    # desirable: 1 - sigma(beta r); undesirable: sigma(beta r); z0 unused and reported as 0
    terms = kto_loss(
        t(-9.0, -11.0, -9.5),
        t(-10.0, -10.0, -10.0),
        torch.tensor([True, False, False]),
        None,
        None,
        beta=0.1,
        loss_type="apo_zero_unpaired",
        desirable_weight=2.0,
    )
    # r = 1, -1, 0.5: 2 * (1 - sigma(0.1)), sigma(-0.1), sigma(0.05)
    assert terms.loss.tolist() == pytest.approx([0.950042, 0.475021, 0.512497], abs=1e-6)
    assert terms.z0.item() == 0.0


def test_apo_zero_ignores_the_kl_batch():
    with_kl = kto_loss(
        t(-9.0), t(-10.0), torch.tensor([True]), KL_POLICY, KL_REFERENCE, beta=0.1, loss_type="apo_zero_unpaired"
    )
    assert with_kl.loss.item() == pytest.approx(0.475021, abs=1e-6)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (dict(beta=0.0), "beta"),
        (dict(beta=0.1, loss_type="bco"), "unknown KTO loss type"),
        (dict(beta=0.1, desirable_weight=0.0), "desirable_weight"),
    ],
)
def test_kto_rejects_bad_settings(kwargs, message):
    with pytest.raises(ValueError, match=message):
        kto_loss(t(-9.0), t(-10.0), torch.tensor([True]), KL_POLICY, KL_REFERENCE, **kwargs)


def test_kto_needs_kl_logps_and_bool_labels():
    with pytest.raises(ValueError, match="z0"):
        kto_loss(t(-9.0), t(-10.0), torch.tensor([True]), None, None, beta=0.1)
    with pytest.raises(ValueError, match="bool"):
        kto_loss(t(-9.0), t(-10.0), torch.tensor([1]), KL_POLICY, KL_REFERENCE, beta=0.1)


@settings(max_examples=50, deadline=None)
@given(st.lists(st.tuples(st.floats(-100, 0), st.floats(-100, 0)), min_size=1, max_size=16))
def test_z0_is_never_negative(pairs):
    z0 = kto_reference_point(t(*(p for p, _ in pairs)), t(*(r for _, r in pairs)))
    assert z0.item() >= 0.0


def test_mismatched_pairs():
    assert mismatched_pairs(4).tolist() == [1, 2, 3, 0]  # (x_i, y_{i+1 mod B})
    assert mismatched_pairs(4, shift=-1).tolist() == [3, 0, 1, 2]  # TRL 1.16's rotation
    assert mismatched_pairs(1).tolist() == [0]
    with pytest.raises(ValueError):
        mismatched_pairs(3, shift=3)
    with pytest.raises(ValueError):
        mismatched_pairs(0)


@settings(max_examples=30, deadline=None)
@given(st.integers(2, 64), st.integers(-5, 5).filter(lambda s: s != 0))
def test_mismatched_pairs_is_a_derangement(batch_size, shift):
    if shift % batch_size == 0:
        return
    perm = mismatched_pairs(batch_size, shift).tolist()
    assert sorted(perm) == list(range(batch_size))
    assert all(perm[i] != i for i in range(batch_size))


def test_weight_advice_in_band():
    advice = kto_weight_advice(100, 100)
    assert advice.ratio == 1.0
    assert advice.in_band
    assert (advice.suggested_desirable_weight, advice.suggested_undesirable_weight) == (1.0, 1.0)
    assert "inside" in advice.message
    assert KTO_WEIGHT_BAND == (1.0, 4 / 3)


def test_weight_advice_too_few_desirable():
    advice = kto_weight_advice(100, 900)
    assert advice.ratio == pytest.approx(1 / 9)
    assert not advice.in_band
    assert advice.suggested_desirable_weight == pytest.approx(9.0)
    assert advice.suggested_undesirable_weight == 1.0
    assert "below" in advice.message and "\n" not in advice.message
    # the suggestion itself lands in the band
    assert kto_weight_advice(100, 900, advice.suggested_desirable_weight, 1.0).in_band


def test_weight_advice_too_many_desirable():
    advice = kto_weight_advice(600, 400)
    assert advice.ratio == pytest.approx(1.5)
    assert not advice.in_band
    assert advice.suggested_desirable_weight == 1.0
    assert advice.suggested_undesirable_weight == pytest.approx(1.125)  # 600 / (4/3 * 400)
    assert kto_weight_advice(600, 400, 1.0, advice.suggested_undesirable_weight).in_band


def test_weight_advice_one_label_only():
    advice = kto_weight_advice(10, 0)
    assert not advice.in_band
    assert math.isinf(advice.ratio)
    assert "Only one label" in advice.message
