"""Task metrics R_task(x, y) in [0, 1] of the source material's hybrid V: ROUGE-L, BLEU, a length rule, keywords.

The one slow part of the prospect view (ROUGE/BLEU): compute once per data set with ``task_metric_scores`` and cache
the result; no slider changes it. Shapes: (N,) means one entry per response.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from playground.config import VALUES

TASK_METRICS = ("rougeL", "bleu", "length", "keywords")


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
