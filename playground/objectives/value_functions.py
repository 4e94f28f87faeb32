"""The source material's three constructions of a per-sample value V(x, y), and the hybrid's alpha search.

Each is a cheap pure function of quantities cached once per data set (summed log-probs, lengths, reward-head outputs,
task metrics), so a slider change recomputes in milliseconds. Shapes: (N,) means one entry per sample (a prompt with
one response).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import torch
from torch import Tensor

from playground.config import LOSS, VALUES, ValueConfig

LIKELIHOOD_REDUCTIONS = ("mean", "sum")
REWARD_SOURCES = ("implied", "head")


# alpha grid of the hybrid search, 0.0 .. 1.0 in steps of 0.1; rounded so 0.3 is 0.3, not 0.30000000000000004
ALPHA_GRID = np.round(np.linspace(0.0, 1.0, 11), 1)
BASELINE_REFERENCE = "reference samples"
BASELINE_LEAVE_ONE_OUT = "leave-one-out batch mean (approximation)"
BASELINE_NONE = "none (single sample)"


# --------------------------------------------------------------------------------------------------------------------
# Construction 1: LM likelihood
# --------------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class LikelihoodValue:
    """V(x, y) from the response likelihood; tensors (N,)."""
    construction: ClassVar[str] = "likelihood"
    value: Tensor  # policy_part - reference_part when calibrated, else policy_part
    policy_part: Tensor  # mean (or sum) token log-prob of y under the policy
    reference_part: Tensor | None  # the same under the reference, when calibrated
    reduce: str  # "mean" or "sum"


def reduce_logps(sum_logps: Tensor, lengths: Tensor, reduce: str) -> Tensor:
    """Summed response log-probs (N,) -> per-sample "sum" (unchanged) or "mean" (sum / token count, count >= 1)."""
    if reduce not in LIKELIHOOD_REDUCTIONS:
        raise ValueError(f"unknown reduction {reduce!r}; choose one of {', '.join(LIKELIHOOD_REDUCTIONS)}")
    if reduce == "sum":
        return sum_logps
    return sum_logps / lengths.clamp(min=1).to(sum_logps.dtype)


def likelihood_value(
    policy_sum_logps: Tensor,
    lengths: Tensor,
    *,
    reduce: str = "mean",
    calibrate: bool = False,
    reference_sum_logps: Tensor | None = None,
) -> LikelihoodValue:
    """Source construction 1: V = (1/|y|) sum_t log pi_theta(y_t | x, y_<t), the mean token log-prob.

    ``reduce="sum"`` uses log pi_theta(y|x) itself (longer answers then score lower). ``calibrate`` subtracts the same
    quantity under pi_ref, the source's "calibration against contrastive samples": with the sum this is the log-ratio
    r(x, y) of DPO/KTO, with the mean r / |y|. Shapes: (N,) each -> fields (N,).
    """
    policy_part = reduce_logps(policy_sum_logps, lengths, reduce)
    if not calibrate:
        return LikelihoodValue(value=policy_part, policy_part=policy_part, reference_part=None, reduce=reduce)
    if reference_sum_logps is None:
        raise ValueError("calibrate=True needs reference_sum_logps (the response log-probs under the reference)")
    reference_part = reduce_logps(reference_sum_logps, lengths, reduce)
    return LikelihoodValue(
        value=policy_part - reference_part, policy_part=policy_part, reference_part=reference_part, reduce=reduce
    )


# --------------------------------------------------------------------------------------------------------------------
# Construction 2: reward model
# --------------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RewardValue:
    """V(x, y) = (R(x, y) - baseline(x)) / scale; tensors (N,)."""
    construction: ClassVar[str] = "reward"
    value: Tensor
    reward: Tensor  # R(x, y)
    baseline: Tensor  # estimate of E_{y' ~ pi_ref}[R(x, y')]
    baseline_from_reference: Tensor  # bool: True where the baseline came from reference samples of this prompt
    baseline_label: str  # which baseline was used, in words (mixed when both kinds occur)
    scale: float  # the std of R when normalised, else 1.0


def implied_reward(policy_sum_logps: Tensor, reference_sum_logps: Tensor, *, beta: float) -> Tensor:
    """DPO's implied reward (Rafailov et al. 2023, Eq. (5) up to the partition term): beta * log(pi_theta / pi_ref).

    Shapes: (N,), (N,) -> (N,).
    """
    return beta * (policy_sum_logps - reference_sum_logps)


def reward_baseline(
    rewards: Tensor,
    prompts: Sequence[str] | None = None,
    reference_rewards: Mapping[str, Sequence[float]] | None = None,
) -> tuple[Tensor, Tensor, str]:
    """Estimate b(x) = E_{y' ~ pi_ref}[R(x, y')] per sample.

    Where ``reference_rewards[prompt]`` holds R values of K responses sampled from pi_ref, b(x) is their mean (the
    source's definition). Otherwise b is the mean R of the *other* samples in the batch (leave-one-out): an
    approximation, since those are other prompts' responses from the data, not samples from pi_ref for this x.
    A lone sample without reference samples gets b = 0. Shapes: rewards (N,) -> baseline (N,), from_reference (N,)
    bool, and a label naming the baseline used.
    """
    n = rewards.numel()
    from_reference = torch.zeros(n, dtype=torch.bool)
    baseline = (rewards.sum() - rewards) / (n - 1) if n > 1 else torch.zeros_like(rewards)
    if reference_rewards and prompts is not None:
        if len(prompts) != n:
            raise ValueError(f"{len(prompts)} prompts for {n} rewards")
        # one pass in Python, one tensor op after: per-element tensor writes cost microseconds each
        samples = [reference_rewards.get(prompt) for prompt in prompts]
        from_reference = torch.tensor([bool(s) for s in samples], dtype=torch.bool)
        means = torch.tensor([sum(s) / len(s) if s else 0.0 for s in samples], dtype=rewards.dtype)
        baseline = torch.where(from_reference, means, baseline)
    fallback = BASELINE_LEAVE_ONE_OUT if n > 1 else BASELINE_NONE
    if bool(from_reference.all()):
        label = BASELINE_REFERENCE
    elif bool(from_reference.any()):
        label = f"mixed: {BASELINE_REFERENCE} for {int(from_reference.sum())} of {n}, else {fallback}"
    else:
        label = fallback
    return baseline, from_reference, label


def reward_value(
    rewards: Tensor,
    *,
    prompts: Sequence[str] | None = None,
    reference_rewards: Mapping[str, Sequence[float]] | None = None,
    normalise_std: bool = False,
) -> RewardValue:
    """Source construction 2: V = (R(x, y) - E_{y' ~ pi_ref}[R(x, y')]) / std(R).

    R is the implied reward (``implied_reward``) or a learned head (``playground.reward_head``). The baseline is
    explained in ``reward_baseline``. ``normalise_std`` divides by the population std of R over the N samples; when that
    std is 0 (or N = 1) nothing is divided. Shapes: rewards (N,) -> fields (N,).
    """
    baseline, from_reference, label = reward_baseline(rewards, prompts, reference_rewards)
    scale = 1.0
    if normalise_std and rewards.numel() > 1:
        std = rewards.std(correction=0).item()
        scale = std if std > 1e-12 else 1.0
    return RewardValue(
        value=(rewards - baseline) / scale,
        reward=rewards,
        baseline=baseline,
        baseline_from_reference=from_reference,
        baseline_label=label,
        scale=scale,
    )


# --------------------------------------------------------------------------------------------------------------------
# Construction 3: hybrid (LM probability + task metric)
# --------------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class HybridValue:
    """V = alpha * P_LM + (1 - alpha) * R_task; tensors (N,)."""
    construction: ClassVar[str] = "hybrid"
    value: Tensor
    lm_probability: Tensor  # P_LM(y|x) = exp(mean token log-prob), in [0, 1]
    task_score: Tensor  # R_task(x, y), in [0, 1]
    alpha: float


def geometric_mean_probability(mean_logps: Tensor) -> Tensor:
    """P_LM(y|x) = exp((1/|y|) sum_t log pi(y_t|...)) = (prod_t pi(y_t|...))^(1/|y|), the per-token geometric mean.

    The plain product would vanish for any real answer; the geometric mean stays in [0, 1] on the same scale as a
    task metric. Shapes: (N,) -> (N,).
    """
    return mean_logps.exp()


def hybrid_value(mean_logps: Tensor, task_scores: Tensor, *, alpha: float) -> HybridValue:
    """Source construction 3: V = alpha * P_LM(y|x) + (1 - alpha) * R_task(x, y), both terms in [0, 1].

    alpha -> 1 trusts the model's fluency alone (safe but bland), alpha -> 0 chases the metric. Shapes: (N,) -> (N,).
    """
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must lie in [0, 1], got {alpha!r}")
    if mean_logps.shape != task_scores.shape:
        raise ValueError(
            f"shapes differ: mean_logps {tuple(mean_logps.shape)} vs task_scores {tuple(task_scores.shape)}"
        )
    p_lm = geometric_mean_probability(mean_logps)
    task = task_scores.to(p_lm.dtype)
    return HybridValue(value=alpha * p_lm + (1.0 - alpha) * task, lm_probability=p_lm, task_score=task, alpha=alpha)


@dataclass(frozen=True)
class AlphaSearch:
    """Preference accuracy of the hybrid V over the alpha grid, for the UI's curve."""
    alphas: np.ndarray  # (A,)
    accuracies: np.ndarray  # (A,) share of validation pairs with V(chosen) > V(rejected)
    best_alpha: float
    best_accuracy: float
    highlighted: np.ndarray  # (A,) bool: alpha in the source's usual range [0.3, 0.7]


def search_alpha(
    chosen_mean_logps: Tensor,
    rejected_mean_logps: Tensor,
    chosen_task_scores: Tensor,
    rejected_task_scores: Tensor,
    *,
    alphas: np.ndarray = ALPHA_GRID,
    highlight: tuple[float, float] = VALUES.alpha_highlight,
) -> AlphaSearch:
    """Grid search of the hybrid's alpha for preference accuracy on validation pairs (the source's recipe).

    Shapes: four (P,) tensors, one entry per validation pair. Ties in accuracy go to the alpha nearest 0.5, the middle
    of the usual range, so a flat curve does not pick an extreme.
    """
    p_chosen = geometric_mean_probability(chosen_mean_logps).double()
    p_rejected = geometric_mean_probability(rejected_mean_logps).double()
    a = torch.as_tensor(np.asarray(alphas, dtype=float)).unsqueeze(1)  # (A, 1)
    v_chosen = a * p_chosen + (1 - a) * chosen_task_scores.double()  # (A, P)
    v_rejected = a * p_rejected + (1 - a) * rejected_task_scores.double()
    accuracies = (v_chosen > v_rejected).double().mean(dim=1).numpy()
    alphas = np.asarray(alphas, dtype=float)
    best = max(range(len(alphas)), key=lambda i: (accuracies[i], -abs(alphas[i] - 0.5)))
    low, high = highlight
    return AlphaSearch(
        alphas=alphas,
        accuracies=accuracies,
        best_alpha=float(alphas[best]),
        best_accuracy=float(accuracies[best]),
        highlighted=(alphas >= low - 1e-9) & (alphas <= high + 1e-9),
    )


# --------------------------------------------------------------------------------------------------------------------
# Choosing a construction from cached inputs
# --------------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ValueInputs:
    """Per-sample quantities cached once per data set (N,); every V construction is a cheap function of these."""
    policy_sum_logps: Tensor
    lengths: Tensor  # response token counts
    reference_sum_logps: Tensor | None = None
    prompts: tuple[str, ...] | None = None  # keys of reference_rewards
    head_rewards: Tensor | None = None  # R from the learned reward head
    reference_rewards: Mapping[str, Sequence[float]] | None = None  # prompt -> R of K samples from pi_ref
    task_scores: Tensor | None = None  # R_task in [0, 1], see task_metric_scores


def _require(tensor: Tensor | None, what: str) -> Tensor:
    if tensor is None:
        raise ValueError(f"this V construction needs {what}, which the inputs lack")
    return tensor


def _likelihood_from(inputs: ValueInputs, config: ValueConfig, beta: float) -> LikelihoodValue:
    return likelihood_value(
        inputs.policy_sum_logps,
        inputs.lengths,
        reduce=config.likelihood_reduce,
        calibrate=config.calibrate,
        reference_sum_logps=inputs.reference_sum_logps,
    )


def _reward_from(inputs: ValueInputs, config: ValueConfig, beta: float) -> RewardValue:
    if config.reward_source not in REWARD_SOURCES:
        raise ValueError(f"unknown reward source {config.reward_source!r}; choose one of {', '.join(REWARD_SOURCES)}")
    if config.reward_source == "head":
        rewards = _require(inputs.head_rewards, "head_rewards (train a reward head first)")
    else:
        reference = _require(inputs.reference_sum_logps, "reference_sum_logps")
        rewards = implied_reward(inputs.policy_sum_logps, reference, beta=beta)
    return reward_value(
        rewards, prompts=inputs.prompts, reference_rewards=inputs.reference_rewards, normalise_std=config.normalise_std
    )


def _hybrid_from(inputs: ValueInputs, config: ValueConfig, beta: float) -> HybridValue:
    task = _require(inputs.task_scores, "task_scores (see task_metric_scores)")
    mean_logps = reduce_logps(inputs.policy_sum_logps, inputs.lengths, "mean")
    return hybrid_value(mean_logps, task, alpha=config.alpha)


ValueResult = LikelihoodValue | RewardValue | HybridValue  # each has .value (N,) and .construction
VALUE_CONSTRUCTIONS: dict[str, Callable[[ValueInputs, ValueConfig, float], ValueResult]] = {
    "likelihood": _likelihood_from,
    "reward": _reward_from,
    "hybrid": _hybrid_from,
}


def compute_value(inputs: ValueInputs, config: ValueConfig = VALUES, *, beta: float = LOSS.beta) -> ValueResult:
    """V(x, y) per sample by ``config.construction`` (likelihood | reward | hybrid); ``beta`` scales implied rewards."""
    if config.construction not in VALUE_CONSTRUCTIONS:
        raise ValueError(
            f"unknown V construction {config.construction!r}; choose one of {', '.join(VALUE_CONSTRUCTIONS)}"
        )
    return VALUE_CONSTRUCTIONS[config.construction](inputs, config, beta)
