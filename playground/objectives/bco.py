"""BCO (Jung et al. 2024, "Binary Classifier Optimization for Large Language Model Alignment"): per-sample terms.

Unpaired, like KTO: each answer is labelled desirable or undesirable. The implied reward r = beta (log pi_theta(y|x) -
log pi_ref(y|x)) is the logit of a binary classifier, shifted by a reward baseline delta:

    loss = -log sigma(r - delta)      for a desirable answer,
    loss = -log sigma(-(r - delta))   for an undesirable one.

delta is the running mean of the rewards seen in training (``RewardBaseline``). TRL's ``BCOTrainer`` (``trl/
experimental/bco``, gone from the TRL 1.16 installed here) keeps it in ``trl.trainer.utils.RunningMoments`` and, on
each training batch, first adds the batch's rewards (all of them, desirable and undesirable, detached) and then uses
the updated mean, so the current batch counts. ``RunningMoments`` is a count-weighted running mean (Chan et al.'s
parallel update, every reward seen weighs the same), not an exponential moving average; ``RewardBaseline(decay=...)``
offers the exponential one as an option. Evaluation batches use delta without updating it.

Not here: BCO's underlying-distribution matching (UDM, TRL's ``match_underlying_distribution``), which weighs each
undesirable sample by a density ratio p(desirable | prompt) / p(undesirable | prompt) from a logistic-regression
classifier on prompt embeddings of a separate embedding model, clamped to [0.5, 10]. That classifier is not built;
``bco_loss`` takes the weights (``undesirable_weights``) for when it is.

TRL 1.16's ``DPOTrainer`` loss type ``"bco_pair"`` is the paired form with delta = 0: per pair
-log sigma(beta r_w) - log sigma(-beta r_l), i.e. the sum of this loss on the pair's two answers.

Needs the reference (``NEEDS_REFERENCE``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from playground.objectives.kto import masked_mean
from playground.objectives.validation import check_beta, check_same_shape

NEEDS_REFERENCE = True
PAIRED = False  # labelled answers, like KTO
LENGTH_NORMALISED = False


@dataclass(frozen=True)
class BCOTerms:
    """Per-sample BCO quantities, every field shape (B,) except the scalar ``delta``.

    ``loss`` carries the graph; the rest are detached reporting values.
    """

    logratio: Tensor  # log pi_theta(y|x) - log pi_ref(y|x)
    reward: Tensor  # r = beta * logratio (TRL's rewards/chosen and rewards/rejected, by label)
    delta: Tensor  # 0-d: the reward baseline the loss used (TRL's logged "delta")
    loss: Tensor  # weight * -log sigma(+-(r - delta))
    weight: Tensor  # 1 for desirable samples; the UDM weight (default 1) for undesirable ones
    desirable: Tensor  # bool label

    @property
    def batch_loss(self) -> Tensor:
        """Scalar batch loss: exactly the mean of ``loss`` (TRL's ``losses.nanmean()`` over all samples)."""
        return self.loss.mean()

    @property
    def desirable_reward_mean(self) -> float:
        """Mean reward of the desirable samples; NaN if there are none."""
        return masked_mean(self.reward, self.desirable)

    @property
    def undesirable_reward_mean(self) -> float:
        """Mean reward of the undesirable samples; NaN if there are none."""
        return masked_mean(self.reward, ~self.desirable)

    @property
    def accuracy(self) -> float:
        """Share of samples the classifier puts on their label's side: r > delta if desirable, r < delta if not."""
        if self.reward.numel() == 0:
            return math.nan
        correct = torch.where(self.desirable, self.reward > self.delta, self.reward < self.delta)
        return correct.float().mean().item()


def bco_rewards(policy_logps: Tensor, reference_logps: Tensor, *, beta: float) -> Tensor:
    """BCO's implied rewards beta (log pi_theta - log pi_ref), detached: what ``RewardBaseline.update`` takes.

    Shapes: (B,), (B,) -> (B,).
    """
    check_beta(beta)
    check_same_shape({"policy_logps": policy_logps, "reference_logps": reference_logps})
    return (beta * (policy_logps - reference_logps)).detach()


@dataclass
class RewardBaseline:
    """BCO's reward baseline delta, a running mean of the rewards (state kept by the training run, not here).

    ``decay=None`` (default) is TRL's ``RunningMoments``: delta = the mean of every reward seen so far, each weighing
    the same; an update with n rewards of mean m moves it by (m - delta) * n / (count + n). ``decay`` in [0, 1) is
    an exponential moving average of the batch means instead, delta <- decay * delta + (1 - decay) * m, starting
    at the first batch's mean. Before any update delta is 0, as in TRL.
    """

    decay: float | None = None
    mean: float = 0.0
    count: float = 0.0

    def __post_init__(self) -> None:
        if self.decay is not None and not 0.0 <= self.decay < 1.0:
            raise ValueError(f"decay must lie in [0, 1) (or be None for the running mean), got {self.decay!r}")

    @property
    def delta(self) -> float:
        return self.mean

    def update(self, rewards: Tensor) -> float:
        """Add one training batch's rewards (B,) (all labels, detached) and return the new delta."""
        n = rewards.numel()
        if n == 0:
            return self.mean
        # TRL takes the batch mean in float32 and accumulates in Python floats
        batch_mean = rewards.detach().float().mean().item()
        if not math.isfinite(batch_mean):
            raise ValueError(f"rewards must be finite to update the baseline, got mean {batch_mean!r}")
        if self.decay is None or self.count == 0:
            total = self.count + n
            self.mean += (batch_mean - self.mean) * n / total
        else:
            self.mean = self.decay * self.mean + (1.0 - self.decay) * batch_mean
        self.count += n
        return self.mean


def bco_loss(
    policy_logps: Tensor,
    reference_logps: Tensor,
    desirable: Tensor,
    *,
    beta: float,
    delta: float | Tensor = 0.0,
    undesirable_weights: Tensor | None = None,
) -> BCOTerms:
    """Per-sample BCO terms (Jung et al. 2024): -log sigma(r - delta) if desirable, -log sigma(-(r - delta)) if not.

    Shapes: ``policy_logps``, ``reference_logps`` (B,) summed response log-probs; ``desirable`` (B,) bool labels;
    ``delta`` a float or 0-d tensor, the reward baseline (no gradient flows through it; TRL's order is
    ``delta = baseline.update(bco_rewards(...))`` first, then this call); ``undesirable_weights`` (B,) optional UDM
    density-ratio weights, applied to the undesirable samples only (entries of desirable samples are ignored).
    With ``delta = 0`` the loss is -log sigma(+-r).
    """
    check_beta(beta)
    desirable = torch.as_tensor(desirable, device=policy_logps.device)
    if desirable.dtype != torch.bool:
        raise ValueError(f"desirable must be a bool tensor, got dtype {desirable.dtype}")
    tensors = {"policy_logps": policy_logps, "reference_logps": reference_logps, "desirable": desirable}
    if undesirable_weights is not None:
        tensors["undesirable_weights"] = undesirable_weights
    check_same_shape(tensors)
    delta = torch.as_tensor(delta, dtype=policy_logps.dtype, device=policy_logps.device).detach()
    if delta.dim() != 0 or not bool(torch.isfinite(delta)):
        raise ValueError(f"delta must be one finite number, got {delta}")

    logratio = policy_logps - reference_logps
    reward = beta * logratio
    shifted = reward - delta
    per_sample = -F.logsigmoid(torch.where(desirable, shifted, -shifted))
    if undesirable_weights is None:
        weight = torch.ones_like(per_sample).detach()
    else:
        weight = torch.where(desirable, torch.ones_like(per_sample), undesirable_weights.to(per_sample.dtype)).detach()
    return BCOTerms(
        logratio=logratio.detach(),
        reward=reward.detach(),
        delta=delta,
        loss=weight * per_sample,
        weight=weight,
        desirable=desirable,
    )
