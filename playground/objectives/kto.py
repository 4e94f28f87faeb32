"""The KTO family's per-sample terms (Ethayarajh et al. 2024), its reference point z0 and weight rule.

Inputs are summed response log-probs, shape (B,), one entry per labelled sample, under the policy and the reference;
KL inputs (M,) are the mismatched pairs of the batch. The loss keeps its graph; the rest is detached. Loss types
follow TRL 1.16 (``trl/trainer/kto_trainer.py``) term for term.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from playground.objectives.validation import check_beta, check_same_shape

KTO_LOSS_TYPES = ("kto", "apo_zero_unpaired")


# Eq. (8) of Ethayarajh et al. 2024: lambda_D n_D / (lambda_U n_U) should lie in [1, 4/3].
KTO_WEIGHT_BAND = (1.0, 4.0 / 3.0)


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
        return masked_mean(self.reward, self.desirable)

    @property
    def undesirable_reward_mean(self) -> float:
        """Mean implied reward of the undesirable samples (TRL's rewards/rejected); NaN if there are none."""
        return masked_mean(self.reward, ~self.desirable)


def masked_mean(values: Tensor, mask: Tensor) -> float:
    """Mean of ``values`` (B,) where ``mask`` (B,) bool is set, as a float; NaN when nothing is set."""
    return values[mask].mean().item() if bool(mask.any()) else math.nan


def kto_reference_point(policy_kl_logps: Tensor, reference_kl_logps: Tensor) -> Tensor:
    """KTO's reference point z0 (Ethayarajh et al. 2024, Eq. (8) and Sec. 4.1).

    z0 = max(0, mean_i [log pi_theta(y'_i|x_i) - log pi_ref(y'_i|x_i)]) over mismatched pairs (x_i, y'_i), a biased
    but low-variance estimate of KL(pi_theta || pi_ref). Detached: the paper passes no gradient through it.
    Shapes: (M,), (M,) -> 0-d tensor.
    """
    check_same_shape({"policy_kl_logps": policy_kl_logps, "reference_kl_logps": reference_kl_logps})
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
    loss_type: str = "kto",
) -> KTOTerms:
    """Per-sample KTO terms (Ethayarajh et al. 2024, Eq. (8)): loss = lambda_y - v(x, y).

    Shapes: ``policy_logps``, ``reference_logps`` (B,) summed response log-probs; ``desirable`` (B,) bool labels;
    ``policy_kl_logps``, ``reference_kl_logps`` (M,) summed log-probs of the mismatched pairs (see
    ``mismatched_pairs``). ``apo_zero_unpaired`` does not use z0, so the KL log-probs may be None there (z0 reports 0).
    """
    check_beta(beta)
    if loss_type not in KTO_LOSS_TYPES:
        raise ValueError(f"unknown KTO loss type {loss_type!r}; choose one of {', '.join(KTO_LOSS_TYPES)}")
    for name, w in (("desirable_weight", desirable_weight), ("undesirable_weight", undesirable_weight)):
        if not (math.isfinite(w) and w > 0):
            raise ValueError(f"{name} must be a finite number > 0, got {w!r}")
    desirable = torch.as_tensor(desirable, device=policy_logps.device)
    if desirable.dtype != torch.bool:
        raise ValueError(f"desirable must be a bool tensor, got dtype {desirable.dtype}")
    check_same_shape({"policy_logps": policy_logps, "reference_logps": reference_logps, "desirable": desirable})

    have_kl = policy_kl_logps is not None and reference_kl_logps is not None
    if loss_type == "kto" and not have_kl:
        raise ValueError("the kto loss needs policy_kl_logps and reference_kl_logps for its reference point z0")
    # apo_zero_unpaired has no reference point; report 0, as TRL logs kl = 0 for it
    z0 = kto_reference_point(policy_kl_logps, reference_kl_logps) if have_kl else policy_logps.new_zeros(())

    logratio = policy_logps - reference_logps
    weight = torch.where(
        desirable, logratio.new_tensor(desirable_weight), logratio.new_tensor(undesirable_weight)
    ).detach()
    if loss_type == "kto":
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
