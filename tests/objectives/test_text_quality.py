"""The degeneration measures on literal strings."""

from __future__ import annotations

import math

import pytest

from playground.objectives.text_quality import (
    answer_quality,
    distinct_n,
    is_repetitive,
    max_ngram_repeats,
    quality_summary,
    words,
)

LOOP = "Quick answer: Quick answer: Quick answer: Quick answer:"
NORMAL = "Boil it for 9 to 12 minutes, then move it to cold water."


def test_words_ignore_case_and_punctuation():
    assert words("Don't stop, DON'T!") == ["don't", "stop", "don't"]


def test_repeated_trigram_marks_a_loop():
    assert max_ngram_repeats(LOOP) == 3  # "quick answer quick" x3, "answer quick answer" x3
    assert is_repetitive(LOOP)
    assert max_ngram_repeats(NORMAL) == 1 and not is_repetitive(NORMAL)
    # twice is a phrase used twice, not a loop
    assert not is_repetitive("I like tea. I like tea. Do you?")
    assert is_repetitive("I like tea. I like tea. I like tea.")


def test_a_list_that_repeats_its_item_is_a_loop():
    # Measured on a numbered-list adapter: every repetition carries another item number, so without ignoring the list
    # markers no word 3-gram repeats at all.
    looping_list = "1. 120 minutes\n2. 120 minutes\n3. 120 minutes\n4. 120 minutes"
    assert words(looping_list) == ["120", "minutes"] * 4
    assert max_ngram_repeats(looping_list) == 3 and is_repetitive(looping_list)  # "120 minutes 120" x3
    assert words("- salt\n* pepper\n3) oil, 2 spoons") == ["salt", "pepper", "oil", "2", "spoons"]
    assert not is_repetitive("1. Rinse the rice.\n2. Boil the water.\n3. Add the rice.")


def test_distinct_2():
    assert distinct_n("a b a b", 2) == pytest.approx(2 / 3)  # (a b), (b a), (a b)
    assert distinct_n(NORMAL, 2) == 1.0
    assert math.isnan(distinct_n("one", 2))


def test_answer_quality_and_summary():
    quality = answer_quality(LOOP)
    assert (quality.words, quality.max_repeats, quality.repetitive) == (8, 3, True)
    summary = quality_summary([LOOP, NORMAL])
    assert summary.answers == 2 and summary.share_repetitive == 0.5
    assert summary.mean_words == pytest.approx((8 + 13) / 2)  # NORMAL: boil it for 9 to 12 minutes then ... (13)
    assert summary.mean_distinct_2 == pytest.approx((distinct_n(LOOP, 2) + 1.0) / 2)
    empty = quality_summary([])
    assert empty.answers == 0 and math.isnan(empty.share_repetitive)
