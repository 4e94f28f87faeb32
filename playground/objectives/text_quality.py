"""How an answer reads, measured on its text alone: repetition, distinct bigrams, and a summary over many answers.

A short fine-tune that learns its trait by repeating it is broken whatever its loss says, so every place that shows
an adapter's answers (the live probes during training, the before/after table, ``playground.evaluate``, the defaults
sweep) measures them with these functions. Fluency needs the base model and is computed in ``engine.metrics``.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

WORD = re.compile(r"[\w']+", re.UNICODE)
# A list's item numbers and bullets are layout, not words: without this, "1. 120 minutes 2. 120 minutes 3. ..." has
# no repeated 3-gram, because every repetition carries a different item number.
LIST_MARKER = re.compile(r"(?m)^\s*(?:\d+[.)]|[-*\u2022])\s+")
REPEAT_N = 3  # a word 3-gram ...
REPEAT_TIMES = 3  # ... that occurs 3 or more times marks an answer as degenerate


def words(text: str) -> list[str]:
    """The lower-cased words of ``text`` (letters, digits, apostrophes); punctuation, spacing and list markers at the
    start of a line ("1.", "2)", "-", "*") are ignored."""
    return [w.lower() for w in WORD.findall(LIST_MARKER.sub(" ", text or ""))]


def ngrams(tokens: Sequence[str], n: int) -> list[tuple[str, ...]]:
    return [tuple(tokens[i: i + n]) for i in range(len(tokens) - n + 1)]


def max_ngram_repeats(text: str, n: int = REPEAT_N) -> int:
    """How often the most frequent word n-gram of ``text`` occurs (0 for a text shorter than n words)."""
    counts = Counter(ngrams(words(text), n))
    return max(counts.values(), default=0)


def is_repetitive(text: str, n: int = REPEAT_N, times: int = REPEAT_TIMES) -> bool:
    """True when some word n-gram occurs ``times`` times or more: the signature of a degenerate loop."""
    return max_ngram_repeats(text, n) >= times


def distinct_n(text: str, n: int = 2) -> float:
    """Distinct-n (Li et al. 2016): unique word n-grams / all word n-grams, in [0, 1]; NaN below n words."""
    grams = ngrams(words(text), n)
    return len(set(grams)) / len(grams) if grams else math.nan


@dataclass(frozen=True)
class AnswerQuality:
    """One answer's text measures."""

    words: int
    max_repeats: int  # occurrences of its most frequent word 3-gram
    repetitive: bool
    distinct_2: float


def answer_quality(text: str) -> AnswerQuality:
    repeats = max_ngram_repeats(text)
    return AnswerQuality(len(words(text)), repeats, repeats >= REPEAT_TIMES, distinct_n(text, 2))


@dataclass(frozen=True)
class QualitySummary:
    """The same measures over a set of answers: what a table row or a sweep cell shows."""

    answers: int
    mean_words: float
    share_repetitive: float  # share of answers with a word 3-gram repeated 3+ times
    mean_distinct_2: float  # over answers of at least 2 words


def quality_summary(texts: Sequence[str]) -> QualitySummary:
    if not texts:
        return QualitySummary(0, math.nan, math.nan, math.nan)
    measured = [answer_quality(t) for t in texts]
    distinct = [m.distinct_2 for m in measured if not math.isnan(m.distinct_2)]
    return QualitySummary(
        answers=len(measured),
        mean_words=sum(m.words for m in measured) / len(measured),
        share_repetitive=sum(m.repetitive for m in measured) / len(measured),
        mean_distinct_2=sum(distinct) / len(distinct) if distinct else math.nan,
    )
