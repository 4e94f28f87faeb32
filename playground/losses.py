"""Per-sample DPO and KTO terms: the one implementation the plots and the optimiser share.

Inputs are summed response log-probs, shape (B,), one entry per sample, under the policy and the reference.
Every loss keeps its autograd graph (the trainer back-propagates through ``terms.loss.mean()``); the other
fields are reporting quantities and are detached, as TRL detaches its logged rewards.

Variants follow TRL 1.16 (``trl/trainer/dpo_trainer.py`` and ``kto_trainer.py``) term for term, so a run here and a
run there report the same numbers; ``tests/test_trl_parity.py`` checks it.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

DPO_VARIANTS = ("sigmoid", "ipo", "hinge", "robust")
KTO_VARIANTS = ("kto", "apo_zero_unpaired")
# Eq. (8) of Ethayarajh et al. 2024: lambda_D n_D / (lambda_U n_U) should lie in [1, 4/3].
KTO_WEIGHT_BAND = (1.0, 4.0 / 3.0)


# --------------------------------------------------------------------------------------------------------------------
# DPO
# --------------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class DPOTerms:
    """Per-pair DPO quantities, every field shape (B,).

    ``loss`` carries the graph; the rest are detached reporting values.
    """

    chosen_logratio: Tensor  # log pi_theta(y_w|x) - log pi_ref(y_w|x)
    rejected_logratio: Tensor  # log pi_theta(y_l|x) - log pi_ref(y_l|x)
    chosen_reward: Tensor  # beta * chosen_logratio, the implied reward of y_w
    rejected_reward: Tensor  # beta * rejected_logratio
    margin: Tensor  # chosen_reward - rejected_reward
    loss: Tensor  # per-pair loss of the selected variant
    grad_weight: Tensor  # sigma(-beta * (chosen_logratio - rejected_logratio)): how hard the pair still pushes
    chosen_preferred: Tensor  # bool: chosen_reward > rejected_reward (TRL's rewards/accuracies)

    @property
    def batch_loss(self) -> Tensor:
        """Scalar batch loss: exactly the mean of ``loss`` (what TRL back-propagates)."""
        return self.loss.mean()

    @property
    def accuracy(self) -> float:
        """Preference accuracy: share of pairs whose implied reward ranks the chosen response first."""
        return preference_accuracy(self.chosen_reward, self.rejected_reward)


def preference_accuracy(chosen_scores: Tensor, rejected_scores: Tensor) -> float:
    """Share of pairs with ``chosen_scores > rejected_scores`` (strict; ties count as wrong, as in TRL).

    Shapes: both (B,). Returns a Python float in [0, 1]; NaN for an empty batch.
    """
    if chosen_scores.shape != rejected_scores.shape:
        raise ValueError(
            f"shapes differ: chosen {tuple(chosen_scores.shape)} vs rejected {tuple(rejected_scores.shape)}"
        )
    if chosen_scores.numel() == 0:
        return math.nan
    return (chosen_scores > rejected_scores).float().mean().item()


def sigmoid_dpo_loss(logratio_delta: Tensor, *, beta: float, label_smoothing: float = 0.0) -> Tensor:
    """DPO loss, Eq. (7) of Rafailov et al. 2023, with conservative label smoothing (cDPO).

    loss = -(1 - e) log sigma(beta D) - e log sigma(-beta D), D = logratio_w - logratio_l, e = label_smoothing.
    With e = 0 this is the paper's -log sigma(beta D). Shapes: (B,) -> (B,).
    """
    logits = beta * logratio_delta
    return -(1.0 - label_smoothing) * F.logsigmoid(logits) - label_smoothing * F.logsigmoid(-logits)


def ipo_loss(
    chosen_logratio: Tensor, rejected_logratio: Tensor, chosen_lengths: Tensor, rejected_lengths: Tensor, *, beta: float
) -> Tensor:
    """IPO loss, Eq. (17) of Azar et al. 2023, length-normalised as TRL 1.16 does.

    loss = ((s_w / len_w - s_l / len_l) - 1 / (2 beta))^2 with s the summed log-ratios and len the response token
    counts (clamped to at least 1, as TRL clamps them). TRL normalises because summed log-ratios make the squared loss
    grow with response length. Shapes: all (B,) -> (B,).
    """
    chosen_avg = chosen_logratio / chosen_lengths.clamp(min=1)
    rejected_avg = rejected_logratio / rejected_lengths.clamp(min=1)
    return (chosen_avg - rejected_avg - 1.0 / (2.0 * beta)) ** 2


def hinge_dpo_loss(logratio_delta: Tensor, *, beta: float) -> Tensor:
    """Hinge loss of SLiC (Zhao et al. 2023) on the DPO margin: relu(1 - beta D). Shapes: (B,) -> (B,)."""
    return torch.relu(1.0 - beta * logratio_delta)


def robust_dpo_loss(logratio_delta: Tensor, *, beta: float, label_smoothing: float) -> Tensor:
    """Robust DPO (Chowdhury et al. 2024, Eq. (8)), an unbiased loss under label-flip rate e, as TRL defines it.

    loss = (-(1 - e) log sigma(beta D) + e log sigma(-beta D)) / (1 - 2e). With e = 0 it equals sigmoid DPO.
    Unlike cDPO the flipped term enters with a plus sign, so the loss can be negative. Shapes: (B,) -> (B,).
    """
    logits = beta * logratio_delta
    clean = -(1.0 - label_smoothing) * F.logsigmoid(logits)
    flipped = -label_smoothing * F.logsigmoid(-logits)
    return (clean - flipped) / (1.0 - 2.0 * label_smoothing)


# Each entry maps (chosen_logratio, rejected_logratio, chosen_lengths, rejected_lengths, beta, label_smoothing)
# to the per-pair loss; a dict keeps the variant names in one place and avoids a chain of string comparisons.
_DPO_LOSSES: dict[str, Callable[..., Tensor]] = {
    "sigmoid": lambda c, r, lc, lr, beta, eps: sigmoid_dpo_loss(c - r, beta=beta, label_smoothing=eps),
    "ipo": lambda c, r, lc, lr, beta, eps: ipo_loss(c, r, lc, lr, beta=beta),
    "hinge": lambda c, r, lc, lr, beta, eps: hinge_dpo_loss(c - r, beta=beta),
    "robust": lambda c, r, lc, lr, beta, eps: robust_dpo_loss(c - r, beta=beta, label_smoothing=eps),
}


def _check_beta(beta: float) -> None:
    if not (math.isfinite(beta) and beta > 0):
        raise ValueError(f"beta must be a finite number > 0, got {beta!r}")


def _check_same_shape(named: dict[str, Tensor]) -> None:
    shapes = {name: tuple(t.shape) for name, t in named.items()}
    first = next(iter(shapes.values()))
    if len(first) != 1 or any(shape != first for shape in shapes.values()):
        listing = ", ".join(f"{name} {shape}" for name, shape in shapes.items())
        raise ValueError(f"expected 1-D tensors of one shape (B,), got {listing}")


def dpo_loss(
    policy_chosen_logps: Tensor,
    policy_rejected_logps: Tensor,
    reference_chosen_logps: Tensor,
    reference_rejected_logps: Tensor,
    *,
    beta: float,
    variant: str = "sigmoid",
    label_smoothing: float = 0.0,
    chosen_lengths: Tensor | None = None,
    rejected_lengths: Tensor | None = None,
) -> DPOTerms:
    """Per-pair DPO terms (Rafailov et al. 2023, Eq. (7)) for one of ``DPO_VARIANTS``.

    Shapes: the four log-prob tensors (B,) of summed response log-probs; ``chosen_lengths``/``rejected_lengths``
    (B,) response token counts, needed by ``ipo`` only. ``label_smoothing`` is the noise rate e of ``sigmoid``
    (cDPO) and ``robust``; ``ipo`` and ``hinge`` ignore it, as TRL does. The batch loss is ``terms.loss.mean()``.
    """
    _check_beta(beta)
    if variant not in _DPO_LOSSES:
        raise ValueError(f"unknown DPO variant {variant!r}; choose one of {', '.join(DPO_VARIANTS)}")
    if not 0.0 <= label_smoothing < 0.5:
        raise ValueError(f"label_smoothing must lie in [0, 0.5), got {label_smoothing!r}")
    tensors = {
        "policy_chosen_logps": policy_chosen_logps,
        "policy_rejected_logps": policy_rejected_logps,
        "reference_chosen_logps": reference_chosen_logps,
        "reference_rejected_logps": reference_rejected_logps,
    }
    if variant == "ipo" and (chosen_lengths is None or rejected_lengths is None):
        raise ValueError("the ipo variant normalises by response length: pass chosen_lengths and rejected_lengths")
    if chosen_lengths is not None:
        tensors["chosen_lengths"] = chosen_lengths
    if rejected_lengths is not None:
        tensors["rejected_lengths"] = rejected_lengths
    _check_same_shape(tensors)

    chosen_logratio = policy_chosen_logps - reference_chosen_logps
    rejected_logratio = policy_rejected_logps - reference_rejected_logps
    loss = _DPO_LOSSES[variant](
        chosen_logratio, rejected_logratio, chosen_lengths, rejected_lengths, beta, label_smoothing
    )
    chosen_logratio, rejected_logratio = chosen_logratio.detach(), rejected_logratio.detach()
    chosen_reward = beta * chosen_logratio
    rejected_reward = beta * rejected_logratio
    return DPOTerms(
        chosen_logratio=chosen_logratio,
        rejected_logratio=rejected_logratio,
        chosen_reward=chosen_reward,
        rejected_reward=rejected_reward,
        margin=chosen_reward - rejected_reward,
        loss=loss,
        # d(-log sigma(beta D))/dD = -beta sigma(-beta D): the sigmoid loss's per-pair gradient scale
        grad_weight=torch.sigmoid(-beta * (chosen_logratio - rejected_logratio)),
        chosen_preferred=chosen_reward > rejected_reward,
    )


# --------------------------------------------------------------------------------------------------------------------
# KTO
# --------------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class KTOTerms:
    """Per-sample KTO quantities, every field shape (B,) except the scalar ``z0``.

    ``loss`` carries the graph; the rest are detached reporting values.
    """

    logratio: Tensor  # r = log pi_theta(y|x) - log pi_ref(y|x)
    z0: Tensor  # 0-d: reference point max(0, mean KL log-ratio), detached (TRL's logged "kl")
    value: Tensor  # lambda_y * sigma(beta (r - z0)) if desirable, lambda_y * sigma(beta (z0 - r)) if not
    loss: Tensor  # weight - value
    weight: Tensor  # lambda_y applied to the sample: desirable_weight or undesirable_weight
    reward: Tensor  # beta * r, the implied reward
    desirable: Tensor  # bool label

    @property
    def batch_loss(self) -> Tensor:
        """Scalar batch loss: exactly the mean of ``loss`` (TRL's ``losses.nanmean()``)."""
        return self.loss.mean()

    @property
    def desirable_reward_mean(self) -> float:
        """Mean implied reward of the desirable samples (TRL's rewards/chosen); NaN if there are none."""
        return _masked_mean(self.reward, self.desirable)

    @property
    def undesirable_reward_mean(self) -> float:
        """Mean implied reward of the undesirable samples (TRL's rewards/rejected); NaN if there are none."""
        return _masked_mean(self.reward, ~self.desirable)


def _masked_mean(values: Tensor, mask: Tensor) -> float:
    return values[mask].mean().item() if bool(mask.any()) else math.nan


def kto_reference_point(policy_kl_logps: Tensor, reference_kl_logps: Tensor) -> Tensor:
    """KTO's reference point z0 (Ethayarajh et al. 2024, Eq. (8) and Sec. 4.1).

    z0 = max(0, mean_i [log pi_theta(y'_i|x_i) - log pi_ref(y'_i|x_i)]) over mismatched pairs (x_i, y'_i), a biased
    but low-variance estimate of KL(pi_theta || pi_ref). Detached: the paper passes no gradient through it.
    Shapes: (M,), (M,) -> 0-d tensor.
    """
    _check_same_shape({"policy_kl_logps": policy_kl_logps, "reference_kl_logps": reference_kl_logps})
    if policy_kl_logps.numel() == 0:
        raise ValueError("z0 needs at least one mismatched pair")
    return (policy_kl_logps - reference_kl_logps).mean().clamp(min=0).detach()


def kto_value(logratio: Tensor, desirable: Tensor, z0: Tensor, weight: Tensor, *, beta: float) -> Tensor:
    """KTO value, Eq. (8) of Ethayarajh et al. 2024.

    v = lambda_D sigma(beta (r - z0)) for desirable y, lambda_U sigma(beta (z0 - r)) for undesirable y.
    Shapes: logratio, desirable (bool), weight (B,); z0 0-d -> (B,).
    """
    signed = torch.where(desirable, logratio - z0, z0 - logratio)
    return weight * torch.sigmoid(beta * signed)


def apo_zero_unpaired_value(logratio: Tensor, desirable: Tensor, weight: Tensor, *, beta: float) -> Tensor:
    """Unpaired APO-zero value (D'Oosterlinck et al. 2024, Eq. (7), unpaired as in TRL): KTO with z0 fixed at 0.

    v = lambda_D sigma(beta r) for desirable y, lambda_U sigma(-beta r) for undesirable y, so TRL's losses
    1 - sigma(beta r) and sigma(beta r) are weight - v. Shapes: (B,) -> (B,).
    """
    signed = torch.where(desirable, logratio, -logratio)
    return weight * torch.sigmoid(beta * signed)


def kto_loss(
    policy_logps: Tensor,
    reference_logps: Tensor,
    desirable: Tensor,
    policy_kl_logps: Tensor | None,
    reference_kl_logps: Tensor | None,
    *,
    beta: float,
    desirable_weight: float = 1.0,
    undesirable_weight: float = 1.0,
    variant: str = "kto",
) -> KTOTerms:
    """Per-sample KTO terms (Ethayarajh et al. 2024, Eq. (8)): loss = lambda_y - v(x, y).

    Shapes: ``policy_logps``, ``reference_logps`` (B,) summed response log-probs; ``desirable`` (B,) bool labels;
    ``policy_kl_logps``, ``reference_kl_logps`` (M,) summed log-probs of the mismatched pairs (see
    ``mismatched_pairs``). ``apo_zero_unpaired`` does not use z0, so the KL log-probs may be None there (z0 reports 0).
    """
    _check_beta(beta)
    if variant not in KTO_VARIANTS:
        raise ValueError(f"unknown KTO variant {variant!r}; choose one of {', '.join(KTO_VARIANTS)}")
    for name, w in (("desirable_weight", desirable_weight), ("undesirable_weight", undesirable_weight)):
        if not (math.isfinite(w) and w > 0):
            raise ValueError(f"{name} must be a finite number > 0, got {w!r}")
    desirable = torch.as_tensor(desirable, device=policy_logps.device)
    if desirable.dtype != torch.bool:
        raise ValueError(f"desirable must be a bool tensor, got dtype {desirable.dtype}")
    _check_same_shape({"policy_logps": policy_logps, "reference_logps": reference_logps, "desirable": desirable})

    have_kl = policy_kl_logps is not None and reference_kl_logps is not None
    if variant == "kto" and not have_kl:
        raise ValueError("the kto variant needs policy_kl_logps and reference_kl_logps for its reference point z0")
    # apo_zero_unpaired has no reference point; report 0, as TRL logs kl = 0 for it
    z0 = kto_reference_point(policy_kl_logps, reference_kl_logps) if have_kl else policy_logps.new_zeros(())

    logratio = policy_logps - reference_logps
    weight = torch.where(
        desirable, logratio.new_tensor(desirable_weight), logratio.new_tensor(undesirable_weight)
    ).detach()
    if variant == "kto":
        value = kto_value(logratio, desirable, z0, weight, beta=beta)
    else:
        value = apo_zero_unpaired_value(logratio, desirable, weight, beta=beta)
    loss = weight - value
    logratio = logratio.detach()
    return KTOTerms(
        logratio=logratio,
        z0=z0,
        value=value.detach(),
        loss=loss,
        weight=weight,
        reward=beta * logratio,
        desirable=desirable,
    )


def mismatched_pairs(batch_size: int, shift: int = 1) -> Tensor:
    """Completion index for each prompt in KTO's KL batch: prompt i is paired with completion (i + shift) mod B.

    The default shift=1 gives (x_i, y_{i+1 mod B}); TRL 1.16 rotates the other way, (x_i, y_{i-1 mod B}), which is
    shift=-1. Either is a derangement for B >= 2, so no prompt meets its own completion. With B = 1 the only pair is
    the sample itself and z0 degenerates into the sample's own log-ratio (TRL refuses batch size 1 for that reason).
    Returns a LongTensor (B,).
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if batch_size >= 2 and shift % batch_size == 0:
        raise ValueError(f"shift {shift} is a multiple of batch_size {batch_size}: each prompt would keep its answer")
    return (torch.arange(batch_size) + shift) % batch_size


@dataclass(frozen=True)
class KTOWeightAdvice:
    """Whether lambda_D n_D / (lambda_U n_U) lies in the KTO paper's band [1, 4/3], and weights that put it there."""

    n_desirable: int
    n_undesirable: int
    ratio: float  # lambda_D n_D / (lambda_U n_U); inf or nan when a class is empty
    in_band: bool
    suggested_desirable_weight: float
    suggested_undesirable_weight: float
    message: str  # one line for the UI


def kto_weight_advice(
    n_desirable: int,
    n_undesirable: int,
    desirable_weight: float = 1.0,
    undesirable_weight: float = 1.0,
    band: tuple[float, float] = KTO_WEIGHT_BAND,
) -> KTOWeightAdvice:
    """Check Eq. (8)'s recommendation of Ethayarajh et al. 2024: lambda_D n_D / (lambda_U n_U) in [1, 4/3].

    When out of band, the suggestion raises the weight of the under-represented side to the nearest band edge and
    keeps the other weight: too few desirable samples (ratio < 1) -> larger desirable_weight; too many
    (ratio > 4/3) -> larger undesirable_weight. In band, the current weights are returned unchanged.
    """
    low, high = band
    if n_desirable < 0 or n_undesirable < 0:
        raise ValueError("sample counts must be >= 0")
    if n_desirable == 0 or n_undesirable == 0:
        ratio = math.nan if n_desirable == n_undesirable else math.inf if n_undesirable == 0 else 0.0
        return KTOWeightAdvice(
            n_desirable,
            n_undesirable,
            ratio,
            False,
            desirable_weight,
            undesirable_weight,
            f"Only one label present ({n_desirable} desirable, {n_undesirable} undesirable): the weight band does not "
            "apply; add examples of the other label for a balanced signal.",
        )
    ratio = desirable_weight * n_desirable / (undesirable_weight * n_undesirable)
    # a tiny tolerance so a suggestion that lands exactly on a band edge reads as in band
    in_band = low - 1e-9 <= ratio <= high + 1e-9
    suggested_d, suggested_u = desirable_weight, undesirable_weight
    if ratio < low:
        suggested_d = low * undesirable_weight * n_undesirable / n_desirable
    elif ratio > high:
        suggested_u = desirable_weight * n_desirable / (high * n_undesirable)
    if in_band:
        message = f"`λ_D·n_D / (λ_U·n_U)` = {ratio:.3g}, inside the KTO paper's band [1, 4/3]."
    else:
        side = "below" if ratio < low else "above"
        message = (
            f"`λ_D·n_D / (λ_U·n_U)` = {ratio:.3g}, {side} the KTO paper's band [1, 4/3]: try "
            f"desirable_weight={suggested_d:.3g}, undesirable_weight={suggested_u:.3g}."
        )
    return KTOWeightAdvice(n_desirable, n_undesirable, ratio, in_band, suggested_d, suggested_u, message)
