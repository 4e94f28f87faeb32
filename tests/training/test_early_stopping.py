"""Early stopping on scripted held-out sequences, the evaluation schedule, the held-out split policy, probe advice."""

from __future__ import annotations

import dataclasses

import pandas as pd
import pytest

from playground import config
from playground.feedback import FeedbackReport, split_heldout
from playground.training.data import choose_heldout
from playground.training.evaluation import EarlyStopper, HeldoutEval, evaluation_steps
from playground.training.probes import ProbeAnswer, answers_degeneration, degeneration, probe_advice, probe_steps


def evaluation(step, loss, drift=0.0):
    return HeldoutEval(step, loss, accuracy=0.5, margin=0.0, chosen_reward=0.0, rejected_reward=0.0, drift=drift,
                       chosen_nll=1.0)


def run(stopper, losses, drifts=None):
    """Feed a scripted sequence; return the decisions up to and including the first stop."""
    decisions = []
    for i, loss in enumerate(losses):
        decisions.append(stopper.update(evaluation(2 * i, loss, (drifts or [0.0] * len(losses))[i])))
        if decisions[-1].stop:
            break
    return decisions


def test_patience_stops_after_evaluations_without_improvement_and_keeps_the_best():
    decisions = run(EarlyStopper(patience=2), [0.69, 0.5, 0.4, 0.45, 0.41, 0.3])
    assert [d.stop for d in decisions] == [False, False, False, False, True]
    assert decisions[-1].best_step == 4  # loss 0.4 at the third evaluation (step 4)
    assert decisions[-1].reason == "the held-out loss has not improved for 2 evaluations (best 0.4 at step 4)"


def test_an_improvement_resets_the_wait_and_min_delta_ignores_tiny_ones():
    assert not any(d.stop for d in run(EarlyStopper(patience=2), [0.69, 0.6, 0.61, 0.5, 0.51, 0.4]))
    decisions = run(EarlyStopper(patience=2, min_delta=0.05), [0.69, 0.6, 0.58, 0.57])
    assert decisions[-1].stop and decisions[-1].best_step == 2


def test_the_drift_budget_stops_at_once_and_keeps_the_last_step_within_it():
    decisions = run(EarlyStopper(patience=5, drift_budget=0.3), [0.69, 0.5, 0.3, 0.2], [0.0, 0.1, 0.25, 0.4])
    assert decisions[-1].stop and decisions[-1].best_step == 4
    assert "drift budget was exceeded at step 6" in decisions[-1].reason and "over the budget of 0.3" in \
        decisions[-1].reason


def test_step_zero_is_the_baseline_never_the_adapter_kept():
    # the held-out loss never gets below the base's: the first trained evaluation is kept, not the base (step 0)
    decisions = run(EarlyStopper(patience=2), [0.69, 0.70, 0.71, 0.72])
    assert [d.stop for d in decisions] == [False, False, False, True]
    assert [d.best_step for d in decisions] == [0, 2, 2, 2]
    assert decisions[-1].reason == "the held-out loss has not improved for 2 evaluations (best 0.7 at step 2)"


def test_patience_must_be_positive():
    with pytest.raises(ValueError, match="patience must be >= 1"):
        EarlyStopper(patience=0)


@pytest.mark.parametrize(("total", "evaluations", "expected"), [
    (6, 4, [2, 4, 6]), (12, 4, [3, 6, 9, 12]), (10, 4, [3, 6, 9, 10]), (2, 4, [1, 2]), (5, 0, []), (0, 4, []),
])
def test_evaluation_schedule(total, evaluations, expected):
    assert evaluation_steps(total, evaluations) == expected


def test_probe_schedule():
    assert probe_steps(12, 4) == [0, 3, 6, 9, 12]
    assert probe_steps(2, 4) == [0, 1, 2]
    assert probe_steps(6, 0) == [0]


def test_heldout_split_is_prompt_disjoint_and_deterministic_by_seed():
    frame = pd.DataFrame({"prompt": [f"q{i // 2}" for i in range(40)], "chosen": [f"c{i}" for i in range(40)],
                          "rejected": [f"r{i}" for i in range(40)]})
    train, held = split_heldout(frame, "paired", 0.15, seed=3)
    assert set(train["prompt"]).isdisjoint(held["prompt"])
    assert held["prompt"].nunique() == 3 and len(train) + len(held) == 40  # round(0.15 * 20) prompts
    again_train, again_held = split_heldout(frame, "paired", 0.15, seed=3)
    assert again_held.equals(held) and again_train.equals(train)
    _, other = split_heldout(frame, "paired", 0.15, seed=4)
    assert set(other["prompt"]) != set(held["prompt"])


def _report(rows: int) -> FeedbackReport:
    data = pd.DataFrame({"prompt": [f"q{i}" for i in range(rows)], "chosen": ["c"] * rows, "rejected": ["r"] * rows})
    return FeedbackReport(format="paired", rows_total=rows, rows_usable=rows, data=data, sha256="x")


def test_choose_heldout_policy():
    tc = config.TRAIN
    rows, held, source, notes = choose_heldout(_report(40), "mine.csv", tc, None)
    assert len(held) == 6 and len(rows) == 34  # 15% of 40 prompts
    assert source == "your held-out split: 6 pairs from 6 prompts of mine.csv kept out of training"
    rows, held, source, notes = choose_heldout(_report(12), "small.csv", tc, None)
    assert held is None and len(rows) == 12 and "12 rows are fewer than 20" in notes[0]
    rows, held, _, notes = choose_heldout(_report(40), "mine.csv", tc, 0.0)
    assert held is None and "No held-out share" in notes[0]
    demo = pd.DataFrame({"prompt": ["p"], "chosen": ["a"], "rejected": ["b"]})
    rows, held, source, _ = choose_heldout(_report(40), "demo.csv", tc, None, (demo, "demo_pairs_heldout.csv"))
    assert held is demo and len(rows) == 40 and "bundled demo held-out set" in source
    lower = dataclasses.replace(tc, held_out_min_rows=5)
    assert choose_heldout(_report(12), "small.csv", lower, None)[1] is not None


def test_probe_advice_in_words():
    start = [{"step": 0, "prompt_index": 0, "repetitive": False, "degenerate": ""}]
    assert probe_advice(start).startswith("The start row is the base model's own answers")
    fine = start + [{"step": 4, "prompt_index": 0, "repetitive": False, "degenerate": ""}]
    assert probe_advice(fine).startswith("✅ Step 4: the probe answers read as well as the base's")
    looping = fine + [{"step": 8, "prompt_index": 0, "repetitive": True, "degenerate": "repeats a phrase"},
                      {"step": 8, "prompt_index": 1, "repetitive": False, "degenerate": ""}]
    advice = probe_advice(looping)
    assert advice.startswith("⚠️ Step 8: 1 of 2 probe answers repeat a phrase.")
    assert "fewer steps, a lower learning rate, or a larger SFT weight" in advice
    garbled = [{"step": 8, "prompt_index": 0, "repetitive": False,
                "degenerate": "reads far less fluently than the base"}]
    assert probe_advice(garbled).startswith("⚠️ Step 8: 1 of 1 probe answers read far less fluently than the base's")
    assert probe_advice([]) == ""


def test_degeneration_is_judged_against_the_base_answer_to_the_same_prompt():
    def start(repetitive=False, fluency=-1.0):
        return ProbeAnswer(0, 0, "q", "a", 5, repetitive, 0.9, fluency)

    assert degeneration(True, -1.2, None) == ""  # step 0 is the base itself: the yardstick, never a warning
    assert degeneration(True, -1.2, start()) == "repeats a phrase"
    assert degeneration(True, -1.2, start(repetitive=True)) == ""  # the base loops on this prompt too
    assert degeneration(False, -4.0, start()) == "reads far less fluently than the base"  # below -3.5, 3 nats down
    assert degeneration(False, -4.0, start(fluency=-3.6)) == ""  # only 0.4 below a base that reads as badly
    assert degeneration(False, -3.0, start(fluency=-1.0)) == ""  # 2 nats down but above the floor of -3.5
    assert degeneration(False, float("nan"), start()) == ""


def test_the_after_run_report_uses_the_same_judgement():
    base = {"share_repetitive": 0.1, "mean_fluency": -1.0}
    assert answers_degeneration(base, {"share_repetitive": 0.1, "mean_fluency": -1.8}) == ""  # a trait costs fluency
    assert answers_degeneration(base, {"share_repetitive": 0.3, "mean_fluency": -1.0}) == (
        "more of its answers repeat a phrase than the base's")
    assert answers_degeneration(base, {"share_repetitive": 0.0, "mean_fluency": -4.2}) == (
        "its answers read far less fluently than the base's")
