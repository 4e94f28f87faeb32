"""The DPO family's per-pair terms (Rafailov et al. 2023 and its variants): what the plots and the optimiser share.

Inputs are summed response log-probs, shape (B,), one entry per pair, under the policy and the reference. The loss
keeps its autograd graph (the trainer back-propagates through ``terms.loss.mean()``); the other fields are reporting
quantities and are detached, as TRL detaches its logged rewards. Loss types follow TRL 1.16
(``trl/trainer/dpo_trainer.py``) term for term; ``tests/objectives/test_trl_parity.py`` checks it.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from playground.objectives.validation import check_beta, check_same_shape

DPO_LOSS_TYPES = ("sigmoid", "ipo", "hinge", "robust")


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
    loss: Tensor  # per-pair loss of the selected loss type
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
# to the per-pair loss; a dict keeps the loss-type names in one place and avoids a chain of string comparisons.
_DPO_LOSSES: dict[str, Callable[..., Tensor]] = {
    "sigmoid": lambda c, r, lc, lr, beta, eps: sigmoid_dpo_loss(c - r, beta=beta, label_smoothing=eps),
    "ipo": lambda c, r, lc, lr, beta, eps: ipo_loss(c, r, lc, lr, beta=beta),
    "hinge": lambda c, r, lc, lr, beta, eps: hinge_dpo_loss(c - r, beta=beta),
    "robust": lambda c, r, lc, lr, beta, eps: robust_dpo_loss(c - r, beta=beta, label_smoothing=eps),
}


def dpo_loss(
    policy_chosen_logps: Tensor,
    policy_rejected_logps: Tensor,
    reference_chosen_logps: Tensor,
    reference_rejected_logps: Tensor,
    *,
    beta: float,
    loss_type: str = "sigmoid",
    label_smoothing: float = 0.0,
    chosen_lengths: Tensor | None = None,
    rejected_lengths: Tensor | None = None,
) -> DPOTerms:
    """Per-pair DPO terms (Rafailov et al. 2023, Eq. (7)) for one of ``DPO_LOSS_TYPES``.

    Shapes: the four log-prob tensors (B,) of summed response log-probs; ``chosen_lengths``/``rejected_lengths``
    (B,) response token counts, needed by ``ipo`` only. ``label_smoothing`` is the noise rate e of ``sigmoid``
    (cDPO) and ``robust``; ``ipo`` and ``hinge`` ignore it, as TRL does. The batch loss is ``terms.loss.mean()``.
    """
    check_beta(beta)
    if loss_type not in _DPO_LOSSES:
        raise ValueError(f"unknown DPO loss type {loss_type!r}; choose one of {', '.join(DPO_LOSS_TYPES)}")
    if not 0.0 <= label_smoothing < 0.5:
        raise ValueError(f"label_smoothing must lie in [0, 0.5), got {label_smoothing!r}")
    tensors = {
        "policy_chosen_logps": policy_chosen_logps,
        "policy_rejected_logps": policy_rejected_logps,
        "reference_chosen_logps": reference_chosen_logps,
        "reference_rejected_logps": reference_rejected_logps,
    }
    if loss_type == "ipo" and (chosen_lengths is None or rejected_lengths is None):
        raise ValueError("the ipo loss normalises by response length: pass chosen_lengths and rejected_lengths")
    if chosen_lengths is not None:
        tensors["chosen_lengths"] = chosen_lengths
    if rejected_lengths is not None:
        tensors["rejected_lengths"] = rejected_lengths
    check_same_shape(tensors)

    chosen_logratio = policy_chosen_logps - reference_chosen_logps
    rejected_logratio = policy_rejected_logps - reference_rejected_logps
    loss = _DPO_LOSSES[loss_type](
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
