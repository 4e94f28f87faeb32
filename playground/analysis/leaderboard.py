"""A stakeholder leaderboard from the Compare tab's pairwise votes: win rates, Bradley-Terry strengths with bootstrap
intervals, and a length-controlled fit.

Pure functions of a vote table (``feedback.votes.COLUMNS``: ``kind``, ``variant_a``/``answer_a`` = the left answer,
``variant_b``/``answer_b`` = the right one); numpy and pandas only, no model call.

* :func:`pairwise_outcomes`: one row per comparison, oriented as recorded (model_a = left, model_b = right), with
  ``outcome`` 1 / 0 / 0.5 for a left win / right win / tie. ``both_bad`` is a tie (neither answer preferred); thumbs
  votes rate one answer and are no comparison: they are ignored and counted.
* :func:`win_matrix`: the share of i-vs-j comparisons i won, ties half.
* :func:`bradley_terry`: the Bradley-Terry model (Bradley & Terry 1952) on the logit scale,
  P(i beats j) = sigmoid(s_i - s_j), fitted as the arena does (Chiang et al. 2024, "Chatbot Arena", Sec. 5: a logistic
  regression on +1/-1 model indicators), a tie as half a win for each side, with a weak Gaussian prior.
* :func:`bootstrap_intervals`: percentile intervals over resampled comparisons (FastChat's arena notebook).
* :func:`length_controlled`: the same fit plus an answer-length covariate (Dubois et al. 2024, "Length-Controlled
  AlpacaEval", Eq. 1; the arena's style control, LMSYS 2024), read at zero length difference.
* :func:`leaderboard`: all of it for one vote table, with a plain-words warning when the votes are too few to rank.

Shapes: M comparisons, K models (``names``, in the order of every array), R bootstrap rounds.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from playground.config import BASE_VARIANT, LEADERBOARD
from playground.feedback.votes import PAIR_KINDS

# The tunable defaults live in config.LEADERBOARD; these names are the module's short handles on them.
BT_PRIOR = LEADERBOARD.prior  # an undefeated model stays finite; A beating B 3:1 gives a gap 0.007 below log(3)
BOOTSTRAP_ROUNDS = LEADERBOARD.bootstrap_rounds
INTERVAL_LEVEL = LEADERBOARD.interval_level
MIN_PAIRWISE_VOTES = LEADERBOARD.min_pairwise_votes
MIN_MODEL_VOTES = LEADERBOARD.min_model_votes
TIE_KINDS = ("tie", "both_bad")  # pairwise kinds that prefer neither answer: half a win for each side

OUTCOME_COLUMNS = ("model_a", "model_b", "outcome", "tie", "winner", "loser", "kind", "words_a", "words_b",
                   "len_diff")
TABLE_COLUMNS = ("model", "votes", "wins", "losses", "ties", "win_rate", "strength", "low", "high", "lc_strength",
                 "lc_win_rate", "group")

_MAX_ITER = 100  # Newton iterations (a well-posed fit converges in under 15)
_MAX_HALVINGS = 40  # step halvings of the line search per iteration
_TOL = 1e-10  # stop once no coefficient moves more than this


# --------------------------------------------------------------------------------------------------------------------
# Comparisons


def _words(frame: pd.DataFrame, column: str) -> np.ndarray:
    """Whitespace-separated words per answer, (M,) ints; 0 for a missing column or an empty answer."""
    if column not in frame.columns:
        return np.zeros(len(frame), dtype=int)
    return frame[column].fillna("").astype(str).str.split().str.len().to_numpy(dtype=int)


def _empty_outcomes() -> pd.DataFrame:
    return pd.DataFrame({name: pd.Series(dtype=dtype) for name, dtype in zip(
        OUTCOME_COLUMNS, (object, object, float, bool, object, object, object, int, int, int))})


def pairwise_outcomes(votes: pd.DataFrame) -> tuple[pd.DataFrame, int]:
    """One row per pairwise comparison, and how many votes were no comparison.

    ``votes``: the vote table (columns ``kind``, ``variant_a``, ``variant_b``; ``answer_a``/``answer_b`` optional, as
    no words). Each comparison keeps the orientation it was recorded in: ``model_a`` = the left answer's variant,
    ``model_b`` = the right's. Columns (:data:`OUTCOME_COLUMNS`):

    ``outcome``  1.0 when model_a won (left_better), 0.0 when model_b won (right_better), 0.5 for a tie; ``tie`` and
                 ``both_bad`` are both ties (:data:`TIE_KINDS`: "both bad" prefers neither answer, as the arena scores
                 its "both are bad" button), counted as half a win for each side
    ``tie``      bool; ``winner``/``loser`` the models' names, "" for both on a tie
    ``words_a``, ``words_b``  word counts of model_a's and model_b's answers
    ``len_diff`` words_a - words_b: > 0 when model_a's answer is the longer one

    Not comparisons, so ignored and counted in the returned int: thumbs votes (one answer rated alone) and any row of
    an unknown kind, with no right-hand model, or comparing a model with itself. Shapes: (N votes) -> (M, 10), int.
    """
    if votes is None or len(votes) == 0:
        return _empty_outcomes(), 0
    missing = [column for column in ("kind", "variant_a", "variant_b") if column not in votes.columns]
    if missing:
        raise ValueError(f"the vote table has no column {', '.join(missing)}")
    kind = votes["kind"].fillna("").astype(str)
    left = votes["variant_a"].fillna("").astype(str)
    right = votes["variant_b"].fillna("").astype(str)
    keep = (kind.isin(PAIR_KINDS) & (left != "") & (right != "") & (left != right)).to_numpy()
    ignored = int((~keep).sum())
    if not keep.any():
        return _empty_outcomes(), ignored
    kept = votes[keep]
    kind, left, right = kind[keep].to_numpy(), left[keep].to_numpy(), right[keep].to_numpy()
    outcome = np.select([kind == "left_better", kind == "right_better"], [1.0, 0.0], 0.5)
    words_a, words_b = _words(kept, "answer_a"), _words(kept, "answer_b")
    outcomes = pd.DataFrame({
        "model_a": left,
        "model_b": right,
        "outcome": outcome,
        "tie": outcome == 0.5,
        "winner": np.where(outcome == 1.0, left, np.where(outcome == 0.0, right, "")),
        "loser": np.where(outcome == 1.0, right, np.where(outcome == 0.0, left, "")),
        "kind": kind,
        "words_a": words_a,
        "words_b": words_b,
        "len_diff": words_a - words_b,
    })
    return outcomes, ignored


def model_names(outcomes: pd.DataFrame) -> tuple[str, ...]:
    """Every model in the comparisons, sorted by name: the order of the arrays below."""
    return tuple(sorted(set(outcomes["model_a"]) | set(outcomes["model_b"])))


def _indices(outcomes: pd.DataFrame, names: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """(M,) positions in ``names`` of model_a and model_b; ValueError naming a model that is not in ``names``."""
    position = {name: i for i, name in enumerate(names)}
    unknown = sorted((set(outcomes["model_a"]) | set(outcomes["model_b"])) - set(position))
    if unknown:
        raise ValueError(f"models not in names: {', '.join(map(str, unknown))}")
    return (outcomes["model_a"].map(position).to_numpy(dtype=int),
            outcomes["model_b"].map(position).to_numpy(dtype=int))


def win_matrix(outcomes: pd.DataFrame, names: Sequence[str] | None = None
               ) -> tuple[tuple[str, ...], np.ndarray, np.ndarray]:
    """(names, wins, counts): counts[i, j] = comparisons of i with j (either side; symmetric, int), wins[i, j] =
    (i's wins over j + half the ties) / counts[i, j], so wins[i, j] + wins[j, i] = 1; NaN where never compared and on
    the diagonal. ``names`` defaults to :func:`model_names`. Shapes: (M,) rows -> (K,), (K, K), (K, K)."""
    names = model_names(outcomes) if names is None else tuple(names)
    k = len(names)
    counts = np.zeros((k, k), dtype=int)
    score = np.zeros((k, k))
    if len(outcomes):
        ia, ib = _indices(outcomes, names)
        y = outcomes["outcome"].to_numpy(dtype=float)
        np.add.at(counts, (ia, ib), 1)
        np.add.at(score, (ia, ib), y)
        np.add.at(score, (ib, ia), 1.0 - y)
        counts = counts + counts.T
    wins = np.divide(score, counts, out=np.full((k, k), np.nan), where=counts > 0)
    return names, wins, counts


def groups(counts: np.ndarray) -> np.ndarray:
    """Connected components of the comparison graph (an edge where counts[i, j] > 0): (K, K) -> (K,) labels 0, 1, ...
    numbered by their first model. Strengths of models in different groups are not comparable."""
    k = len(counts)
    labels = np.full(k, -1)
    label = 0
    for start in range(k):
        if labels[start] >= 0:
            continue
        labels[start], frontier = label, [start]
        while frontier:
            node = frontier.pop()
            for other in np.flatnonzero((counts[node] > 0) & (labels < 0)):
                labels[other] = label
                frontier.append(other)
        label += 1
    return labels


# --------------------------------------------------------------------------------------------------------------------
# The fit


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * x))


def _fit_logistic(design: np.ndarray, y: np.ndarray, weights: np.ndarray, penalty: np.ndarray) -> np.ndarray:
    """Penalised logistic regression with fractional targets, R weightings of the same rows at once.

    Maximises  sum_m w_rm [y_m eta_rm - log(1 + e^eta_rm)] - 1/2 sum_d penalty_d beta_rd^2,  eta_r = design beta_r,
    by Newton's method with a step-halving line search (the objective is strictly concave for penalty > 0, so each
    accepted step ascends and the fit converges, also for an undefeated model). Shapes: design (M, D), y (M,) in
    [0, 1], weights (R, M) >= 0, penalty (D,) > 0 -> (R, D).
    """
    rounds, dims = weights.shape[0], design.shape[1]
    beta = np.zeros((rounds, dims))
    ridge = np.diag(penalty)

    def objective(b: np.ndarray) -> np.ndarray:
        eta = b @ design.T
        return (weights * (y * eta - np.logaddexp(0.0, eta))).sum(axis=1) - 0.5 * (penalty * b * b).sum(axis=1)

    current = objective(beta)
    for _ in range(_MAX_ITER):
        p = _sigmoid(beta @ design.T)
        gradient = (weights * (y - p)) @ design - penalty * beta
        hessian = np.einsum("rm,md,me->rde", weights * p * (1.0 - p), design, design) + ridge
        step = np.linalg.solve(hessian, gradient[..., None])[..., 0]
        scale = np.ones(rounds)
        for _ in range(_MAX_HALVINGS):
            candidate = beta + scale[:, None] * step
            value = objective(candidate)
            worse = value < current - 1e-12 * (1.0 + np.abs(current))
            if not worse.any():
                break
            scale = np.where(worse, 0.5 * scale, scale)
        beta, current = candidate, value
        if np.max(np.abs(scale[:, None] * step), initial=0.0) < _TOL:
            break
    return beta


def _check_prior(prior: float) -> None:
    if not prior > 0.0 or not math.isfinite(prior):
        raise ValueError(f"prior must be a positive precision (0 lets an undefeated model run to infinity), got "
                         f"{prior!r}")


def _pair_rows(outcomes: pd.DataFrame, names: Sequence[str]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The comparisons folded into distinct (model_a, model_b, outcome) rows: design (U, K) with +1 at model_a and -1
    at model_b, y (U,), and counts (U,): how many comparisons each row stands for. Exact for the BT likelihood."""
    k = len(names)
    ia, ib = _indices(outcomes, names)
    doubled = outcomes["outcome"].to_numpy(dtype=float) * 2.0
    code = np.rint(doubled).astype(int)
    if np.any(np.abs(doubled - code) > 1e-9) or np.any((code < 0) | (code > 2)):
        raise ValueError("outcome must be 1 (model_a won), 0 (model_b won) or 0.5 (a tie)")
    unique, counts = np.unique((ia * k + ib) * 3 + code, return_counts=True)
    rows = np.arange(len(unique))
    design = np.zeros((len(unique), k))
    design[rows, unique // 3 // k] += 1.0
    design[rows, (unique // 3) % k] -= 1.0
    return design, (unique % 3) / 2.0, counts


def bradley_terry(outcomes: pd.DataFrame, names: Sequence[str], *, prior: float = BT_PRIOR) -> np.ndarray:
    """Bradley-Terry strengths on the logit scale, (M,) comparisons -> (K,), in the order of ``names``.

    P(i beats j) = sigmoid(s_i - s_j) (Bradley & Terry 1952; the arena's logistic form, Chiang et al. 2024 Eq. 5).
    A tie adds half a win to each side (y = 0.5 in the log-likelihood y log p + (1 - y) log(1 - p)), as the arena's
    ratings do. The prior N(0, 1/prior) on each s_i (a ridge of prior/2 * sum s_i^2; :data:`BT_PRIOR`) keeps a model
    that won or lost every comparison finite and barely moves the rest: two models, 3 wins to 1, give a gap of log(3)
    minus prior * log(3) / 1.5 to first order. Identifiable because the ridge centres each connected group at mean 0;
    the returned strengths have mean 0. Multiply by 400 / ln(10) for Elo points.
    """
    _check_prior(prior)
    names = tuple(names)
    if not names or not len(outcomes):
        return np.zeros(len(names))
    design, y, counts = _pair_rows(outcomes, names)
    strengths = _fit_logistic(design, y, counts[None, :].astype(float), np.full(len(names), prior))[0]
    return strengths - strengths.mean()


def bootstrap_intervals(outcomes: pd.DataFrame, names: Sequence[str], *, rounds: int = BOOTSTRAP_ROUNDS,
                        seed: int = 0, level: float = INTERVAL_LEVEL, prior: float = BT_PRIOR
                        ) -> tuple[np.ndarray, np.ndarray]:
    """Percentile bootstrap intervals of :func:`bradley_terry`: (low, high), each (K,).

    Each round resamples the M comparisons with replacement (as FastChat's arena notebook does), drawn as one
    multinomial count per distinct (model_a, model_b, outcome) row, which is the same distribution; all rounds are
    fitted at once. A model that a round happens not to draw sits at its prior mean 0 there, which widens its
    interval. Deterministic for a seed; NaN bounds for rounds = 0 or no comparison.
    """
    _check_prior(prior)
    if not 0.0 < level < 1.0:
        raise ValueError(f"level must lie in (0, 1), got {level!r}")
    if rounds < 0:
        raise ValueError(f"rounds must be >= 0, got {rounds!r}")
    names = tuple(names)
    if rounds == 0 or not names or not len(outcomes):
        return np.full(len(names), np.nan), np.full(len(names), np.nan)
    design, y, counts = _pair_rows(outcomes, names)
    rng = np.random.default_rng(seed)
    weights = rng.multinomial(int(counts.sum()), counts / counts.sum(), size=int(rounds)).astype(float)
    strengths = _fit_logistic(design, y, weights, np.full(len(names), prior))
    strengths -= strengths.mean(axis=1, keepdims=True)
    tail = (1.0 - level) / 2.0
    low, high = np.quantile(strengths, [tail, 1.0 - tail], axis=0)
    return low, high


@dataclass(frozen=True, eq=False)
class LengthControlled:
    """The Bradley-Terry fit with an answer-length covariate, read at zero length difference."""
    strengths: np.ndarray  # (K,) logit-scale strengths at equal answer lengths, mean 0
    length_coef: float  # logit gain of model_a per length_scale of relative length difference: > 0 = longer wins more
    length_scale: float  # RMS over the comparisons of the relative difference (words_a - words_b) / (words_a + words_b)
    win_rate: np.ndarray  # (K,) sigmoid(s_i - s_ref); NaN when the reference is absent or in another group
    reference: str


def length_controlled(outcomes: pd.DataFrame, names: Sequence[str], *, reference: str = BASE_VARIANT,
                      prior: float = BT_PRIOR) -> LengthControlled:
    """Length-controlled Bradley-Terry strengths and win rates against ``reference``. (M,) comparisons -> (K,).

    logit P(model_a beats model_b) = s_a - s_b + gamma * z,  z = r / rms(r),  r = (words_a - words_b) /
    (words_a + words_b) (0 when both are empty): the arena's style-control length feature, a bounded log-ratio
    (r = tanh(log(words_a / words_b) / 2)), scaled by its root mean square but not centred, so that z = 0 is exactly
    "equal lengths". As in AlpacaEval 2's length-controlled win rate (Dubois et al. 2024, Eq. 1), the strengths are
    read with the length term at 0: lc win rate_i = sigmoid(s_i - s_ref). Ties are half a win; the same prior as
    :func:`bradley_terry` holds each s_i and gamma (gamma stays 0 when every pair has equal lengths).
    """
    _check_prior(prior)
    names = tuple(names)
    k = len(names)
    if not k or not len(outcomes):
        return LengthControlled(np.zeros(k), 0.0, 0.0, np.full(k, np.nan), reference)
    ia, ib = _indices(outcomes, names)
    words_a = outcomes["words_a"].to_numpy(dtype=float)
    words_b = outcomes["words_b"].to_numpy(dtype=float)
    total = words_a + words_b
    relative = np.divide(words_a - words_b, total, out=np.zeros(len(total)), where=total > 0)
    scale = float(np.sqrt(np.mean(relative**2)))
    z = relative / scale if scale > 0 else np.zeros(len(relative))
    design = np.zeros((len(outcomes), k + 1))
    rows = np.arange(len(outcomes))
    design[rows, ia] += 1.0
    design[rows, ib] -= 1.0
    design[:, k] = z
    y = outcomes["outcome"].to_numpy(dtype=float)
    coef = _fit_logistic(design, y, np.ones((1, len(y))), np.full(k + 1, prior))[0]
    strengths = coef[:k] - coef[:k].mean()
    win_rate = np.full(k, np.nan)
    if reference in names:
        ref = names.index(reference)
        labels = groups(win_matrix(outcomes, names)[2])
        same = labels == labels[ref]
        win_rate[same] = _sigmoid(strengths[same] - strengths[ref])
    return LengthControlled(strengths, float(coef[k]), scale, win_rate, reference)


# --------------------------------------------------------------------------------------------------------------------
# The leaderboard


@dataclass(frozen=True, eq=False)
class Leaderboard:
    """Everything a leaderboard page shows for one vote table."""
    table: pd.DataFrame  # one row per model (TABLE_COLUMNS), strongest first
    names: tuple[str, ...]  # the order of win_matrix and counts (sorted by name)
    win_matrix: np.ndarray  # (K, K) share of i-vs-j comparisons i won, ties half; NaN where never compared
    counts: np.ndarray  # (K, K) comparisons of i with j
    outcomes: pd.DataFrame  # the comparisons (pairwise_outcomes)
    pairwise_votes: int  # comparisons counted
    ignored_votes: int  # votes that are no comparison (thumbs up/down; also unknown kinds, a missing right model)
    length_coef: float  # LengthControlled.length_coef: > 0 = longer answers win more
    length_scale: float  # LengthControlled.length_scale
    reference: str  # the model lc_win_rate is measured against
    level: float  # coverage of low/high
    small_sample_warning: str  # "" when the votes suffice; otherwise what is wrong, in words


def _warning(pairwise: int, ignored: int, names: tuple[str, ...], per_model: np.ndarray, labels: np.ndarray) -> str:
    if pairwise == 0:
        text = ("No pairwise votes yet: the leaderboard needs left-better, right-better, tie or both-bad votes "
                "between two answers.")
        if ignored:
            text += f" {ignored} other vote{'s' if ignored != 1 else ''} (thumbs up/down) do not compare two models."
        return text
    parts = []
    if pairwise < MIN_PAIRWISE_VOTES:
        parts.append(f"Only {pairwise} pairwise vote{'s' if pairwise != 1 else ''} (fewer than {MIN_PAIRWISE_VOTES}): "
                     "the ranking is a small sample and its intervals are wide.")
    thin = [f"{name} ({int(n)})" for name, n in zip(names, per_model) if n < MIN_MODEL_VOTES]
    if thin:
        parts.append(f"Fewer than {MIN_MODEL_VOTES} votes for {', '.join(thin)}: their strengths rest on little.")
    if labels.size and labels.max() > 0:
        sets = " | ".join(", ".join(name for name, label in zip(names, labels) if label == group)
                          for group in range(labels.max() + 1))
        parts.append(f"The models fall into {labels.max() + 1} groups never compared with each other ({sets}): "
                     "strengths are comparable only within a group, not between groups.")
    return " ".join(parts)


def _empty_table() -> pd.DataFrame:
    dtypes = (object, int, int, int, int, float, float, float, float, float, float, int)
    return pd.DataFrame({name: pd.Series(dtype=dtype) for name, dtype in zip(TABLE_COLUMNS, dtypes)})


def leaderboard(votes: pd.DataFrame, *, reference: str = BASE_VARIANT, rounds: int = BOOTSTRAP_ROUNDS, seed: int = 0,
                level: float = INTERVAL_LEVEL, prior: float = BT_PRIOR) -> Leaderboard:
    """The leaderboard of a vote table: per model its votes, wins/losses/ties, raw win rate ((wins + ties / 2) /
    votes), Bradley-Terry strength with a ``level`` bootstrap interval (low, high), length-controlled strength and
    length-controlled win rate against ``reference``, and its ``group`` of the comparison graph; plus the win matrix
    and a warning when the sample is small or the graph disconnected. An empty table gives an empty leaderboard with
    the warning. Deterministic for a seed.
    """
    outcomes, ignored = pairwise_outcomes(votes)
    names, wins, counts = win_matrix(outcomes)
    labels = groups(counts)
    per_model = counts.sum(axis=1)
    warning = _warning(len(outcomes), ignored, names, per_model, labels)
    if not names:
        return Leaderboard(_empty_table(), names, wins, counts, outcomes, 0, ignored, 0.0, 0.0, reference, level,
                           warning)
    strengths = bradley_terry(outcomes, names, prior=prior)
    low, high = bootstrap_intervals(outcomes, names, rounds=rounds, seed=seed, level=level, prior=prior)
    controlled = length_controlled(outcomes, names, reference=reference, prior=prior)
    position = {name: i for i, name in enumerate(names)}
    ties = np.zeros(len(names), dtype=int)
    tied = outcomes[outcomes["tie"]]
    np.add.at(ties, tied["model_a"].map(position).to_numpy(dtype=int), 1)
    np.add.at(ties, tied["model_b"].map(position).to_numpy(dtype=int), 1)
    won = outcomes["winner"].value_counts().reindex(list(names), fill_value=0).to_numpy(dtype=int)
    lost = outcomes["loser"].value_counts().reindex(list(names), fill_value=0).to_numpy(dtype=int)
    table = pd.DataFrame({
        "model": list(names),
        "votes": per_model.astype(int),
        "wins": won,
        "losses": lost,
        "ties": ties,
        "win_rate": (won + 0.5 * ties) / per_model,
        "strength": strengths,
        "low": low,
        "high": high,
        "lc_strength": controlled.strengths,
        "lc_win_rate": controlled.win_rate,
        "group": labels.astype(int),
    })
    table = table.sort_values(["strength", "model"], ascending=[False, True], kind="stable").reset_index(drop=True)
    return Leaderboard(table, names, wins, counts, outcomes, len(outcomes), ignored, controlled.length_coef,
                       controlled.length_scale, reference, level, warning)
