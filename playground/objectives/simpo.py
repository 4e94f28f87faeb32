"""SimPO (Meng et al. 2024, "SimPO: Simple Preference Optimization with a Reference-Free Reward"): per-pair terms.

The reward is the policy's average token log-prob scaled by beta, with no reference model:
r(x, y) = beta / |y| * log pi_theta(y|x). The loss, Eq. (6) of the paper, asks the chosen reward to beat the rejected
one by a target margin gamma: loss = -log sigma(r(x, y_w) - r(x, y_l) - gamma).

TRL 1.16 has it as ``trl.experimental.cpo.CPOTrainer`` with ``loss_type="simpo"`` (``CPOTrainer.cpo_loss``):
``logits = (avg_w - avg_l) - simpo_gamma / beta``, loss ``-(1 - e) logsigmoid(beta * logits) - e logsigmoid(-beta *
logits)``. That is the paper's loss with TRL's ``simpo_gamma`` = the paper's gamma, plus TRL's optional label
smoothing e (the paper has none; e = 0 is the paper). The SimPO authors' own trainer takes gamma / beta
(``gamma_beta_ratio``) instead; gamma = beta * gamma_beta_ratio converts. Two things differ from the paper in TRL's
defaults: ``CPOConfig`` starts at beta = 0.1, simpo_gamma = 0.5 (gamma / beta = 5, a margin far above the SimPO
authors' beta = 2, gamma / beta = 0.5), and ``cpo_alpha`` = 1 adds a behaviour-cloning NLL on the chosen answers that
SimPO does not have (set ``cpo_alpha=0`` for the paper). That NLL is ``objectives.sft.sft_terms`` with weight
cpo_alpha; ``tests/objectives/test_more_objectives_trl.py`` checks both against TRL's own code.

Reference-free: the training loop may skip the reference forward pass (``NEEDS_REFERENCE``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from playground.objectives.pairwise import PairwiseTerms, average_logps
from playground.objectives.validation import check_beta, check_same_shape

NEEDS_REFERENCE = False  # the reward uses the policy alone
PAIRED = True  # trains on (prompt, chosen, rejected) pairs
LENGTH_NORMALISED = True  # needs each response's token count


@dataclass(frozen=True)
class SimPOTerms(PairwiseTerms):
    """Per-pair SimPO quantities, every field shape (B,) except the float ``gamma``.

    ``chosen_reward`` = beta * ``chosen_avg_logp`` (TRL's rewards/chosen), ``margin`` = the reward difference before
    gamma is taken off; ``loss`` carries the graph, the rest are detached.
    """

    chosen_avg_logp: Tensor  # log pi_theta(y_w|x) / |y_w|
    rejected_avg_logp: Tensor  # log pi_theta(y_l|x) / |y_l|
    grad_weight: Tensor  # sigma(-(margin - gamma)): how hard the pair still pushes (e = 0)
    gamma: float


def simpo_loss(
    policy_chosen_logps: Tensor,
    policy_rejected_logps: Tensor,
    chosen_lengths: Tensor,
    rejected_lengths: Tensor,
    *,
    beta: float,
    gamma: float,
    label_smoothing: float = 0.0,
) -> SimPOTerms:
    """Per-pair SimPO terms, Eq. (6) of Meng et al. 2024, with TRL's optional label smoothing e.

    r_w = beta / |y_w| * log pi_theta(y_w|x), r_l likewise, z = r_w - r_l - gamma;
    loss = -(1 - e) log sigma(z) - e log sigma(-z) (e = 0: the paper's -log sigma(z)).

    Shapes: ``policy_chosen_logps``, ``policy_rejected_logps`` (B,) summed response log-probs under the policy (graph
    kept); ``chosen_lengths``, ``rejected_lengths`` (B,) response token counts (>= 1). No reference log-probs.
    """
    check_beta(beta)
    if not math.isfinite(gamma):
        raise ValueError(f"gamma must be a finite number, got {gamma!r}")
    if not 0.0 <= label_smoothing < 0.5:
        raise ValueError(f"label_smoothing must lie in [0, 0.5), got {label_smoothing!r}")
    check_same_shape({
        "policy_chosen_logps": policy_chosen_logps,
        "policy_rejected_logps": policy_rejected_logps,
        "chosen_lengths": chosen_lengths,
        "rejected_lengths": rejected_lengths,
    })
    chosen_avg = average_logps(policy_chosen_logps, chosen_lengths)
    rejected_avg = average_logps(policy_rejected_logps, rejected_lengths)
    logits = beta * (chosen_avg - rejected_avg) - gamma
    loss = -(1.0 - label_smoothing) * F.logsigmoid(logits) - label_smoothing * F.logsigmoid(-logits)

    chosen_avg, rejected_avg = chosen_avg.detach(), rejected_avg.detach()
    chosen_reward, rejected_reward = beta * chosen_avg, beta * rejected_avg
    margin = chosen_reward - rejected_reward
    return SimPOTerms(
        chosen_reward=chosen_reward,
        rejected_reward=rejected_reward,
        margin=margin,
        loss=loss,
        chosen_preferred=chosen_reward > rejected_reward,
        chosen_avg_logp=chosen_avg,
        rejected_avg_logp=rejected_avg,
        # d(-log sigma(z))/dz = -sigma(-z)
        grad_weight=torch.sigmoid(-(margin - gamma)),
        gamma=float(gamma),
    )
