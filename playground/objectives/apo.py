"""Anchored Preference Optimization (D'Oosterlinck et al. 2024, "Anchored Preference Optimization and Contrastive
Revisions"): APO-zero and APO-down, per-pair terms.

DPO only fixes the *difference* of the two log-ratios, so both answers may drift down together. APO anchors each
answer to the reference, with r = log pi_theta(y|x) - log pi_ref(y|x) and sigma the logistic function:

- APO-zero (Eq. (7); chosen answers better than the model's own): push y_w up and y_l down, each on its own,
  loss = (1 - sigma(beta r_w)) + sigma(beta r_l).
- APO-down (Eq. (8); chosen answers worse than the model's own): y_w's own term pulls it down while the pair term
  keeps it above y_l, so y_l goes down further, loss = sigma(beta r_w) + (1 - sigma(beta (r_w - r_l))).

These are TRL 1.16's ``DPOTrainer`` loss types ``"apo_zero"`` and ``"apo_down"`` term for term (its code cites the
same equations); the constants 1 keep the loss in [0, 2] and change no gradient. TRL logs DPO's rewards beta * r for
them. The unpaired APO-zero (KTO with z0 = 0) is ``objectives.kto``'s ``apo_zero_unpaired``.

Needs the reference (``NEEDS_REFERENCE``).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from playground.objectives.pairwise import PairwiseTerms
from playground.objectives.validation import check_beta, check_same_shape

NEEDS_REFERENCE = True
PAIRED = True
LENGTH_NORMALISED = False

APO_VARIANTS = ("zero", "down")


@dataclass(frozen=True)
class APOTerms(PairwiseTerms):
    """Per-pair APO quantities, every field shape (B,) except the string ``variant``.

    ``chosen_reward`` = beta * ``chosen_logratio`` (TRL's rewards/chosen). The pushes are minus the loss's derivative
    with respect to each answer's log-prob: positive raises that answer's likelihood, negative lowers it. ``loss``
    carries the graph; the rest are detached.
    """

    chosen_logratio: Tensor  # r_w = log pi_theta(y_w|x) - log pi_ref(y_w|x)
    rejected_logratio: Tensor  # r_l
    chosen_push: Tensor  # -d loss / d log pi_theta(y_w|x)
    rejected_push: Tensor  # -d loss / d log pi_theta(y_l|x)
    variant: str  # "zero" or "down"


def apo_zero_loss(chosen_logratio: Tensor, rejected_logratio: Tensor, *, beta: float) -> Tensor:
    """APO-zero, Eq. (7) as TRL writes it: (1 - sigma(beta r_w)) + sigma(beta r_l). Shapes: (B,), (B,) -> (B,)."""
    return (1.0 - torch.sigmoid(beta * chosen_logratio)) + torch.sigmoid(beta * rejected_logratio)


def apo_down_loss(chosen_logratio: Tensor, rejected_logratio: Tensor, *, beta: float) -> Tensor:
    """APO-down, Eq. (8) as TRL writes it: sigma(beta r_w) + (1 - sigma(beta (r_w - r_l))). Shapes: (B,) -> (B,)."""
    return torch.sigmoid(beta * chosen_logratio) + (1.0 - torch.sigmoid(beta * (chosen_logratio - rejected_logratio)))


def _sigmoid_slope(z: Tensor) -> Tensor:
    """d sigma(z) / dz = sigma(z) sigma(-z)."""
    return torch.sigmoid(z) * torch.sigmoid(-z)


def apo_loss(
    policy_chosen_logps: Tensor,
    policy_rejected_logps: Tensor,
    reference_chosen_logps: Tensor,
    reference_rejected_logps: Tensor,
    *,
    beta: float,
    variant: str = "zero",
) -> APOTerms:
    """Per-pair APO terms (D'Oosterlinck et al. 2024, Eqs. (7)-(8)); ``variant`` is ``"zero"`` or ``"down"``.

    Shapes: the four tensors (B,) of summed response log-probs under the policy (graph kept) and the reference.
    """
    check_beta(beta)
    if variant not in APO_VARIANTS:
        raise ValueError(f"unknown APO variant {variant!r}; choose one of {', '.join(APO_VARIANTS)}")
    check_same_shape({
        "policy_chosen_logps": policy_chosen_logps,
        "policy_rejected_logps": policy_rejected_logps,
        "reference_chosen_logps": reference_chosen_logps,
        "reference_rejected_logps": reference_rejected_logps,
    })
    chosen_logratio = policy_chosen_logps - reference_chosen_logps
    rejected_logratio = policy_rejected_logps - reference_rejected_logps
    loss_fn = apo_zero_loss if variant == "zero" else apo_down_loss
    loss = loss_fn(chosen_logratio, rejected_logratio, beta=beta)

    r_w, r_l = chosen_logratio.detach(), rejected_logratio.detach()
    if variant == "zero":
        chosen_push = beta * _sigmoid_slope(beta * r_w)
        rejected_push = -beta * _sigmoid_slope(beta * r_l)
    else:
        pair_slope = beta * _sigmoid_slope(beta * (r_w - r_l))
        chosen_push = pair_slope - beta * _sigmoid_slope(beta * r_w)
        rejected_push = -pair_slope
    chosen_reward, rejected_reward = beta * r_w, beta * r_l
    return APOTerms(
        chosen_reward=chosen_reward,
        rejected_reward=rejected_reward,
        margin=chosen_reward - rejected_reward,
        loss=loss,
        chosen_preferred=chosen_reward > rejected_reward,
        chosen_logratio=r_w,
        rejected_logratio=r_l,
        chosen_push=chosen_push,
        rejected_push=rejected_push,
        variant=variant,
    )
