"""The source material's prospect-theory view: value constructions V(x, y), thresholds tau, gain/loss decomposition.

Everything here is a cheap pure function of per-sample quantities computed once and cached (summed log-probs, lengths,
reward-head outputs, task metrics), so a slider change recomputes in milliseconds. Task metrics (ROUGE-L, BLEU) are
the one slow part: compute them once per data set with ``task_metric_scores`` and keep them in ``ValueInputs``; they
do not depend on any slider.

Shapes: (N,) means one entry per sample (a prompt with one response).
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import torch
from torch import Tensor

from playground.config import LOSS, VALUES, ValueConfig
from playground.losses import kto_reference_point

LIKELIHOOD_REDUCTIONS = ("mean", "sum")
REWARD_SOURCES = ("implied", "head")
TASK_METRICS = ("rougeL", "bleu", "length", "keywords")
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
class TaskScores:
    """A task metric R_task(x, y) in [0, 1] per sample, computed once per data set and cached."""

    scores: Tensor  # (N,) in [0, 1]
    metrics: tuple[str, ...]  # the metric actually used per sample (a fallback where a reference answer is missing)
    requested: str


def rouge_l_scores(responses: Sequence[str], references: Sequence[str]) -> np.ndarray:
    """ROUGE-L F1 (longest common subsequence, Lin 2004) of each response against its reference; (N,) in [0, 1]."""
    from rouge_score import rouge_scorer  # lazy: only the hybrid construction needs it

    scorer = rouge_scorer.RougeScorer(["rougeL"])
    pairs = zip(responses, references, strict=True)
    return np.array([scorer.score(ref, resp)["rougeL"].fmeasure for resp, ref in pairs])


def bleu_scores(responses: Sequence[str], references: Sequence[str]) -> np.ndarray:
    """Sentence BLEU (sacrebleu defaults, exp smoothing) / 100 of each response against its reference; (N,), [0, 1]."""
    import sacrebleu  # lazy: only the hybrid construction needs it

    raw = [sacrebleu.sentence_bleu(resp, [ref]).score / 100.0 for resp, ref in zip(responses, references, strict=True)]
    return np.clip(np.array(raw), 0.0, 1.0)  # sacrebleu can return 100.00000000000004


def length_scores(responses: Sequence[str], *, min_words: int, max_words: int) -> np.ndarray:
    """Length rule: 1 when the word count n lies in [min_words, max_words], n / min_words below, max_words / n above.

    A stand-in business metric for data without reference answers: it rewards answers of the intended size and
    decays smoothly (never below 0) for too short or too long ones. (N,) in [0, 1].
    """
    if not 0 < min_words <= max_words:
        raise ValueError(f"need 0 < min_words <= max_words, got {min_words}, {max_words}")
    counts = np.array([len(r.split()) for r in responses], dtype=float)
    too_long = np.where(counts > max_words, max_words / np.maximum(counts, 1), 1.0)
    return np.where(counts < min_words, counts / min_words, too_long)


def keyword_scores(responses: Sequence[str], keywords: Sequence[str]) -> np.ndarray:
    """Keyword rule: the share of ``keywords`` that occur in the response as whole words, case-insensitive.

    A stand-in business metric ("mentions the refund policy and the deadline"). (N,) in [0, 1].
    """
    if not keywords:
        raise ValueError("the keyword rule needs at least one keyword")
    patterns = [re.compile(rf"\b{re.escape(k.strip())}\b", re.IGNORECASE) for k in keywords]
    return np.array([sum(bool(p.search(r)) for p in patterns) / len(patterns) for r in responses])


def task_metric_scores(
    responses: Sequence[str],
    references: Sequence[str | None] | None = None,
    *,
    metric: str = VALUES.task_metric,
    keywords: Sequence[str] = VALUES.keywords,
    min_words: int = VALUES.length_min_words,
    max_words: int = VALUES.length_max_words,
) -> TaskScores:
    """R_task(x, y) in [0, 1] for each response. Slow (ROUGE/BLEU): compute once per data set and cache.

    ``rougeL`` and ``bleu`` compare against the data's ``reference`` answer. Samples without one fall back to the
    keyword rule when keywords are given, else to the length rule; ``TaskScores.metrics`` says which was used.
    """
    if metric not in TASK_METRICS:
        raise ValueError(f"unknown task metric {metric!r}; choose one of {', '.join(TASK_METRICS)}")
    n = len(responses)
    fallback = "keywords" if keywords else "length"
    chosen = [metric] * n
    if metric in ("rougeL", "bleu"):
        refs = list(references) if references is not None else [None] * n
        if len(refs) != n:
            raise ValueError(f"{len(refs)} references for {n} responses")
        chosen = [metric if (ref is not None and str(ref).strip()) else fallback for ref in refs]
    scores = np.zeros(n)
    for name in set(chosen):
        idx = [i for i, m in enumerate(chosen) if m == name]
        subset = [responses[i] for i in idx]
        if name == "length":
            scores[idx] = length_scores(subset, min_words=min_words, max_words=max_words)
        elif name == "keywords":
            scores[idx] = keyword_scores(subset, keywords)
        else:
            metric_fn = rouge_l_scores if name == "rougeL" else bleu_scores
            scores[idx] = metric_fn(subset, [str(references[i]) for i in idx])
    return TaskScores(scores=torch.tensor(scores, dtype=torch.float32), metrics=tuple(chosen), requested=metric)


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


# --------------------------------------------------------------------------------------------------------------------
# Thresholds tau
# --------------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TauOptions:
    """Settings of every tau method; each method reads its own."""

    quantile: float = VALUES.tau_quantile
    ema_eta: float = VALUES.tau_ema_eta
    ema_batch_size: int = VALUES.tau_ema_batch_size
    ema_initial: float | None = None  # tau_0; None starts at the first batch's mean
    fixed: float = VALUES.tau_fixed
    kl_logratios: Tensor | None = None  # (M,) log pi_theta - log pi_ref on mismatched pairs, for the z0 method

    @classmethod
    def from_config(cls, config: ValueConfig, kl_logratios: Tensor | None = None) -> TauOptions:
        return cls(
            quantile=config.tau_quantile,
            ema_eta=config.tau_ema_eta,
            ema_batch_size=config.tau_ema_batch_size,
            fixed=config.tau_fixed,
            kl_logratios=kl_logratios,
        )


@dataclass(frozen=True)
class TauResult:
    """A threshold and how it was set."""

    tau: float
    method: str
    trajectory: Tensor | None = None  # (T,) tau after each batch, EMA only


def tau_quantile(values: Tensor, q: float = VALUES.tau_quantile) -> float:
    """Data-quantile threshold: tau = Q_q(V), linear interpolation between order statistics (numpy's default).

    With q = 0.7 the top 30% of samples are gains. The source's choice for small, offline data. Shapes: (N,) -> float.
    """
    if not 0.0 <= q <= 1.0:
        raise ValueError(f"quantile must lie in [0, 1], got {q!r}")
    if values.numel() == 0:
        raise ValueError("the quantile of no values is undefined")
    return torch.quantile(values.double(), q).item()


def tau_ema(batches: Sequence[Tensor], *, eta: float = VALUES.tau_ema_eta, initial: float | None = None) -> Tensor:
    """Dynamic threshold for online data: tau_t = tau_{t-1} + eta * (mean V_t - tau_{t-1}), one step per batch.

    tau_0 = ``initial``, or the first batch's mean when None (so tau_1 equals it). Returns the trajectory
    (tau_1, ..., tau_T), shape (T,); the current threshold is its last entry.
    """
    if not 0.0 < eta <= 1.0:
        raise ValueError(f"eta must lie in (0, 1], got {eta!r}")
    if not batches:
        raise ValueError("the EMA threshold needs at least one batch")
    means = [batch.double().mean().item() for batch in batches]
    tau = means[0] if initial is None else float(initial)
    trajectory = []
    for mean in means:
        tau = tau + eta * (mean - tau)
        trajectory.append(tau)
    return torch.tensor(trajectory, dtype=torch.float64)


def _tau_by_quantile(values: Tensor, options: TauOptions) -> TauResult:
    return TauResult(tau_quantile(values, options.quantile), "quantile")


def _tau_by_ema(values: Tensor, options: TauOptions) -> TauResult:
    if options.ema_batch_size < 1:
        raise ValueError(f"ema_batch_size must be >= 1, got {options.ema_batch_size}")
    # the samples in data order stand in for the stream of training batches
    trajectory = tau_ema(list(values.split(options.ema_batch_size)), eta=options.ema_eta, initial=options.ema_initial)
    return TauResult(trajectory[-1].item(), "ema", trajectory)


def _tau_fixed(values: Tensor, options: TauOptions) -> TauResult:
    # a bar the task defines (e.g. "ROUGE-L >= 0.4"): independent of the data
    return TauResult(float(options.fixed), "fixed")


def _tau_by_z0(values: Tensor, options: TauOptions) -> TauResult:
    # KTO's reference point; on the scale of the log-ratio r, so pair it with V = r (calibrated summed likelihood)
    if options.kl_logratios is None:
        raise ValueError("the z0 threshold needs kl_logratios (log-ratios of mismatched pairs)")
    kl = options.kl_logratios
    return TauResult(kto_reference_point(kl, torch.zeros_like(kl)).item(), "z0")


TAU_METHODS: dict[str, Callable[[Tensor, TauOptions], TauResult]] = {
    "quantile": _tau_by_quantile,
    "ema": _tau_by_ema,
    "fixed": _tau_fixed,
    "z0": _tau_by_z0,
}


def compute_tau(method: str, values: Tensor, options: TauOptions | None = None) -> TauResult:
    """Threshold tau by method name: quantile | ema | fixed | z0 (KTO's reference point). ``values`` (N,)."""
    if method not in TAU_METHODS:
        raise ValueError(f"unknown tau method {method!r}; choose one of {', '.join(TAU_METHODS)}")
    return TAU_METHODS[method](values, options or TauOptions())


# --------------------------------------------------------------------------------------------------------------------
# Prospect decomposition
# --------------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ProspectTerms:
    """Gain/loss split of V around tau, tensors (N,).

    ``value`` is prospect theory's (lambda on losses); ``source_objective`` is the source document's (lambda on gains).
    """

    gain: Tensor  # max(0, V - tau)
    loss: Tensor  # lambda * max(0, tau - V), already weighted by loss aversion
    value: Tensor  # gain - loss: prospect theory (Kahneman & Tversky 1979), losses loom larger
    source_objective: Tensor  # lambda * relu(V - tau) - relu(tau - V): the source document's formula, for contrast
    is_gain: Tensor  # bool: V > tau
    tau: float
    loss_aversion: float


def prospect_value(values: Tensor, tau: float, loss_aversion: float) -> Tensor:
    """Prospect theory's piecewise-linear value: relu(V - tau) - lambda * relu(tau - V). CORRECT form.

    Kahneman & Tversky weigh *losses* by lambda > 1; slope 1 above tau, slope lambda below, continuous at tau. KTO's
    value (Ethayarajh et al. 2024, Eq. (8)) is the trainable, sigmoid-saturated form of the same idea.
    Shapes: (N,) -> (N,).
    """
    return torch.relu(values - tau) - loss_aversion * torch.relu(tau - values)


def source_objective(values: Tensor, tau: float, loss_aversion: float) -> Tensor:
    """The source document's written objective, per sample: lambda * relu(V - tau) - relu(tau - V). WRONG, shown as is.

    It puts lambda on the *gain* side (prospect theory puts it on losses) and uses no desirable/undesirable labels, so
    minimising its mean pushes every V down whatever the feedback. Kept so the app can show it beside
    ``prospect_value``. Shapes: (N,) -> (N,).
    """
    return loss_aversion * torch.relu(values - tau) - torch.relu(tau - values)


def prospect_decomposition(values: Tensor, tau: float, loss_aversion: float = VALUES.loss_aversion) -> ProspectTerms:
    """Split V (N,) around tau into gains and lambda-weighted losses, plus the source's objective for comparison."""
    if not (math.isfinite(loss_aversion) and loss_aversion > 0):
        raise ValueError(f"loss_aversion must be a finite number > 0, got {loss_aversion!r}")
    gain = torch.relu(values - tau)
    loss = loss_aversion * torch.relu(tau - values)
    return ProspectTerms(
        gain=gain,
        loss=loss,
        value=gain - loss,
        source_objective=source_objective(values, tau, loss_aversion),
        is_gain=values > tau,
        tau=float(tau),
        loss_aversion=float(loss_aversion),
    )


@dataclass(frozen=True)
class ValueReport:
    """One slider evaluation: V, its threshold and the decomposition."""

    values: ValueResult
    tau: TauResult
    prospect: ProspectTerms


def value_report(
    inputs: ValueInputs, config: ValueConfig = VALUES, *, beta: float = LOSS.beta, kl_logratios: Tensor | None = None
) -> ValueReport:
    """V by ``config.construction``, tau by ``config.tau_method``, then the prospect decomposition with lambda."""
    values = compute_value(inputs, config, beta=beta)
    tau = compute_tau(config.tau_method, values.value, TauOptions.from_config(config, kl_logratios))
    return ValueReport(values, tau, prospect_decomposition(values.value, tau.tau, config.loss_aversion))
