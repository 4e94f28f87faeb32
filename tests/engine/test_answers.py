"""The answer measures' pure parts on literal records (the model-facing parts run in the training tests)."""

from __future__ import annotations

import math

import pytest

from playground.engine.answers import answer_rows, answer_set, rouge_to_references


def test_rouge_to_references_is_nan_where_there_is_no_reference():
    values = rouge_to_references(["boil it for nine minutes", "anything"], ["boil it for nine minutes", None])
    assert values[0] == pytest.approx(1.0) and math.isnan(values[1])


def test_answer_rows_one_row_per_prompt_and_variant_with_its_measures():
    record = {"prompts": ["How do I boil an egg?"],
              "sets": {"base": {"texts": ["Boil it for nine minutes."], "fluency": [-1.2], "rouge_l": [0.5]},
                       "adapter": {"texts": ["Quick answer: Quick answer: Quick answer: Quick answer:"],
                                   "fluency": [-2.0], "rouge_l": [0.1]}}}
    rows = answer_rows(record)
    assert [(r["variant"], r["words"], r["repetitive"]) for r in rows] == [("base", 5, False), ("adapter", 8, True)]
    assert rows[1]["distinct_2"] == pytest.approx(2 / 7)  # (quick answer) x4, (answer quick) x3
    assert rows[0]["fluency"] == -1.2 and rows[1]["rouge_l"] == 0.1
    assert answer_rows(None) == [] and answer_rows({}) == []


def test_answer_set_marks_the_trait():
    answers = answer_set(["Quick answer: yes", "no"], [-1.0, -1.5], ["yes", "no"], trait=lambda t: "Quick" in t)
    assert answers.trait == [True, False]
    assert answers.summary()["share_trait"] == 0.5
