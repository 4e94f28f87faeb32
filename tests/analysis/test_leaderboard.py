"""The pairwise-vote leaderboard: hand-computed Bradley-Terry values, recovery of known strengths from simulated votes,
length control, bootstrap intervals, and the warnings for small or disconnected samples."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from playground.analysis.leaderboard import (
    BT_PRIOR,
    OUTCOME_COLUMNS,
    TABLE_COLUMNS,
    bootstrap_intervals,
    bradley_terry,
    groups,
    leaderboard,
    length_controlled,
    model_names,
    pairwise_outcomes,
    win_matrix,
)
from playground.feedback.votes import COLUMNS


def vote(kind: str, left: str, right: str = "", words_left: int = 3, words_right: int = 3) -> dict:
    return {"id": 0, "created": "", "kind": kind, "prompt": "p", "system": "", "variant_a": left,
            "answer_a": " ".join(["w"] * words_left), "variant_b": right,
            "answer_b": " ".join(["w"] * words_right) if right else ""}


def table(*votes: dict) -> pd.DataFrame:
    return pd.DataFrame(list(votes), columns=list(COLUMNS))


def simulate(strength: dict[str, float], n: int, seed: int, words: dict[str, tuple[int, int]] | None = None,
             length_effect: float = 0.0) -> pd.DataFrame:
    """n votes between random distinct pairs, random sides; left wins with probability
    sigmoid(s_left - s_right + length_effect * (w_left - w_right) / (w_left + w_right)); no ties."""
    rng = np.random.default_rng(seed)
    names = list(strength)
    s = np.array([strength[name] for name in names])
    left = rng.integers(0, len(names), n)
    right = (left + rng.integers(1, len(names), n)) % len(names)
    words = words or {name: (20, 20) for name in names}
    low = np.array([words[name][0] for name in names])
    high = np.array([words[name][1] for name in names])
    w_left = rng.integers(low[left], high[left] + 1)
    w_right = rng.integers(low[right], high[right] + 1)
    logit = s[left] - s[right] + length_effect * (w_left - w_right) / (w_left + w_right)
    left_wins = rng.random(n) < 1.0 / (1.0 + np.exp(-logit))
    return pd.DataFrame({
        "kind": np.where(left_wins, "left_better", "right_better"),
        "prompt": "p",
        "variant_a": np.array(names)[left],
        "answer_a": [" ".join(["w"] * k) for k in w_left],
        "variant_b": np.array(names)[right],
        "answer_b": [" ".join(["w"] * k) for k in w_right],
    })


# --------------------------------------------------------------------------------------------------------------------
# Hand-computed


def test_outcomes_orientation_ties_and_lengths():
    votes = table(vote("left_better", "A", "B", 5, 2), vote("right_better", "A", "B", 1, 4), vote("tie", "B", "A"),
                  vote("both_bad", "A", "C", 7, 7), vote("thumbs_up", "A"), vote("thumbs_down", "B"))
    outcomes, ignored = pairwise_outcomes(votes)
    assert tuple(outcomes.columns) == OUTCOME_COLUMNS
    assert ignored == 2
    assert outcomes["model_a"].tolist() == ["A", "A", "B", "A"]
    assert outcomes["model_b"].tolist() == ["B", "B", "A", "C"]
    assert outcomes["outcome"].tolist() == [1.0, 0.0, 0.5, 0.5]
    assert outcomes["tie"].tolist() == [False, False, True, True]
    assert outcomes["winner"].tolist() == ["A", "B", "", ""]
    assert outcomes["loser"].tolist() == ["B", "A", "", ""]
    assert outcomes["len_diff"].tolist() == [3, -3, 0, 0]
    assert outcomes["words_a"].tolist() == [5, 1, 3, 7]


def test_three_to_one_gives_log_three_and_the_win_matrix():
    votes = table(*[vote("left_better", "A", "B")] * 2, vote("right_better", "B", "A"), vote("left_better", "B", "A"))
    outcomes, _ = pairwise_outcomes(votes)
    names, wins, counts = win_matrix(outcomes)
    assert names == ("A", "B")
    np.testing.assert_array_equal(counts, [[0, 4], [4, 0]])
    np.testing.assert_allclose(wins, [[np.nan, 0.75], [0.25, np.nan]])
    exact = bradley_terry(outcomes, names, prior=1e-9)
    assert exact[0] - exact[1] == pytest.approx(math.log(3), abs=1e-6)
    assert exact.sum() == pytest.approx(0.0, abs=1e-12)
    # the default prior pulls the gap in by about prior * log(3) / 1.5 (first order), under 0.01
    default = bradley_terry(outcomes, names)
    gap = default[0] - default[1]
    assert gap == pytest.approx(math.log(3) - BT_PRIOR * math.log(3) / 1.5, abs=1e-4)
    assert math.log(3) - 0.01 < gap < math.log(3)


def test_ties_count_half():
    # A: 2 wins and 2 ties against B -> (2 + 2/2) / 4 = 0.75, the same as 3 wins to 1
    votes = table(vote("left_better", "A", "B"), vote("right_better", "B", "A"), vote("tie", "A", "B"),
                  vote("both_bad", "B", "A"))
    outcomes, _ = pairwise_outcomes(votes)
    names, wins, _ = win_matrix(outcomes)
    assert wins[0, 1] == 0.75 and wins[1, 0] == 0.25
    s = bradley_terry(outcomes, names, prior=1e-9)
    assert s[0] - s[1] == pytest.approx(math.log(3), abs=1e-6)
    board = leaderboard(votes, reference="B", rounds=50)
    row = board.table.set_index("model").loc["A"]
    assert (row["votes"], row["wins"], row["losses"], row["ties"], row["win_rate"]) == (4, 2, 0, 2, 0.75)


def test_win_matrix_three_models_literal():
    votes = table(vote("left_better", "A", "B"), vote("left_better", "A", "B"), vote("right_better", "A", "B"),
                  vote("tie", "C", "A"), vote("left_better", "B", "C"))
    names, wins, counts = win_matrix(pairwise_outcomes(votes)[0])
    assert names == ("A", "B", "C")
    np.testing.assert_array_equal(counts, [[0, 3, 1], [3, 0, 1], [1, 1, 0]])
    np.testing.assert_allclose(wins, [[np.nan, 2 / 3, 0.5], [1 / 3, np.nan, 1.0], [0.5, 0.0, np.nan]])
    np.testing.assert_array_equal(groups(counts), [0, 0, 0])


# --------------------------------------------------------------------------------------------------------------------
# Recovery from simulated votes

TRUTH = {"base": -0.9, "dpo": 0.5, "kto": 0.8, "sft": -0.4}  # mean 0


def test_recovers_known_strengths_and_intervals_shrink():
    votes = simulate(TRUTH, 3000, seed=1)
    outcomes, _ = pairwise_outcomes(votes)
    names = model_names(outcomes)
    truth = np.array([TRUTH[name] for name in names])
    fitted = bradley_terry(outcomes, names)
    np.testing.assert_allclose(fitted, truth - truth.mean(), atol=0.15)
    low, high = bootstrap_intervals(outcomes, names, rounds=1000, seed=0)
    assert np.all(low <= truth) and np.all(truth <= high)
    assert np.all(low < fitted) and np.all(fitted < high)
    few_low, few_high = bootstrap_intervals(outcomes.iloc[:300], names, rounds=1000, seed=0)
    assert np.all(few_high - few_low > 2.0 * (high - low))  # 10x the votes: about sqrt(10) = 3.2x narrower


def test_leaderboard_on_simulated_votes():
    board = leaderboard(simulate(TRUTH, 600, seed=2), rounds=300)
    assert tuple(board.table.columns) == TABLE_COLUMNS
    assert board.table["model"].tolist() == ["kto", "dpo", "sft", "base"]
    assert board.pairwise_votes == 600 and board.ignored_votes == 0
    assert board.small_sample_warning == ""
    assert board.table["votes"].sum() == 2 * 600
    assert (board.table["wins"] + board.table["losses"] + board.table["ties"] == board.table["votes"]).all()
    base = board.table.set_index("model").loc["base"]
    assert base["lc_win_rate"] == 0.5
    assert (board.table["low"] < board.table["strength"]).all()
    assert (board.table["strength"] < board.table["high"]).all()


# --------------------------------------------------------------------------------------------------------------------
# Length control


def test_length_control_removes_a_pure_length_advantage():
    # "verbose" equals "base" in quality and only writes longer; longer answers win for every model
    quality = {"base": 0.0, "verbose": 0.0, "terse": 0.0, "good": 0.7}
    words = {"base": (20, 120), "verbose": (60, 300), "terse": (10, 60), "good": (20, 200)}
    # 8000 votes: over 20 seeds the controlled verbose-base gap had sd 0.055 (mean 0.02), gamma sd 0.10
    votes = simulate(quality, 8000, seed=3, words=words, length_effect=2.0)
    outcomes, _ = pairwise_outcomes(votes)
    names = model_names(outcomes)
    at = {name: i for i, name in enumerate(names)}
    raw = bradley_terry(outcomes, names)
    assert raw[at["verbose"]] - raw[at["base"]] > 0.5
    controlled = length_controlled(outcomes, names, reference="base")
    s = controlled.strengths
    assert abs(s[at["verbose"]] - s[at["base"]]) < 0.15
    assert abs(s[at["terse"]] - s[at["base"]]) < 0.15
    assert s[at["good"]] - s[at["base"]] == pytest.approx(0.7, abs=0.15)
    assert controlled.length_coef > 0.0
    # back on the simulation's scale: gamma per unit of relative length difference
    assert controlled.length_coef / controlled.length_scale == pytest.approx(2.0, abs=0.3)
    assert controlled.win_rate[at["base"]] == 0.5
    assert controlled.win_rate[at["verbose"]] == pytest.approx(0.5, abs=0.05)
    board = leaderboard(votes, rounds=50)
    assert board.length_coef == pytest.approx(controlled.length_coef)
    row = board.table.set_index("model").loc["verbose"]
    assert row["win_rate"] > 0.6 and row["lc_win_rate"] == pytest.approx(0.5, abs=0.05)


def test_equal_lengths_give_no_length_effect():
    outcomes, _ = pairwise_outcomes(simulate(TRUTH, 400, seed=4))
    names = model_names(outcomes)
    controlled = length_controlled(outcomes, names)
    assert controlled.length_coef == 0.0 and controlled.length_scale == 0.0
    np.testing.assert_allclose(controlled.strengths, bradley_terry(outcomes, names), atol=1e-9)


# --------------------------------------------------------------------------------------------------------------------
# Edge cases and warnings


def test_an_undefeated_model_stays_finite():
    votes = table(*[vote("left_better", "A", "B")] * 6, *[vote("right_better", "C", "A")] * 5,
                  *[vote("left_better", "B", "C")] * 3, *[vote("right_better", "B", "C")] * 3)
    board = leaderboard(votes, reference="B", rounds=200)
    row = board.table.iloc[0]
    assert row["model"] == "A" and row["win_rate"] == 1.0
    values = board.table[["strength", "low", "high", "lc_strength", "lc_win_rate"]].to_numpy(dtype=float)
    assert np.isfinite(values).all()
    assert 2.0 < row["strength"] < 8.0
    assert row["low"] <= row["strength"] <= row["high"]


def test_disconnected_graph_and_few_votes_warn():
    votes = table(*[vote("left_better", "A", "B")] * 4, *[vote("right_better", "A", "B")] * 2,
                  *[vote("left_better", "C", "D")] * 3, *[vote("tie", "C", "D")] * 3)
    board = leaderboard(votes, reference="A", rounds=100)
    assert board.pairwise_votes == 12
    assert "2 groups" in board.small_sample_warning and "A, B | C, D" in board.small_sample_warning
    assert "not between groups" in board.small_sample_warning
    rows = board.table.set_index("model")
    assert rows["group"].to_dict() == {"A": 0, "B": 0, "C": 1, "D": 1}
    assert np.isnan(rows.loc["C", "lc_win_rate"]) and np.isnan(rows.loc["D", "lc_win_rate"])
    assert rows.loc["A", "lc_win_rate"] == 0.5
    # the ridge centres each group on its own
    assert rows.loc["A", "strength"] + rows.loc["B", "strength"] == pytest.approx(0.0, abs=1e-9)

    few = leaderboard(table(vote("left_better", "A", "B"), vote("tie", "A", "B"), vote("left_better", "B", "A")),
                      rounds=50)
    assert "Only 3 pairwise votes" in few.small_sample_warning
    assert "A (3), B (3)" in few.small_sample_warning

    thin = leaderboard(table(*[vote("left_better", "A", "B")] * 12, vote("left_better", "C", "A")), rounds=50)
    assert "Only" not in thin.small_sample_warning
    assert "Fewer than 5 votes for C (1)" in thin.small_sample_warning


def test_thumbs_votes_are_ignored_and_counted():
    pairwise = [vote("left_better", "A", "B")] * 7 + [vote("right_better", "A", "B")] * 5
    with_thumbs = table(*pairwise, vote("thumbs_up", "A"), vote("thumbs_down", "B"), vote("thumbs_up", "B"))
    board = leaderboard(with_thumbs, reference="A", rounds=100)
    plain = leaderboard(table(*pairwise), reference="A", rounds=100)
    assert board.ignored_votes == 3 and plain.ignored_votes == 0
    assert board.pairwise_votes == plain.pairwise_votes == 12
    pd.testing.assert_frame_equal(board.table, plain.table)

    only_thumbs = leaderboard(table(vote("thumbs_up", "A"), vote("thumbs_down", "A")))
    assert only_thumbs.table.empty and only_thumbs.ignored_votes == 2
    assert "No pairwise votes" in only_thumbs.small_sample_warning
    assert "2 other votes" in only_thumbs.small_sample_warning


@pytest.mark.parametrize("votes", [pd.DataFrame(columns=list(COLUMNS)), pd.DataFrame()])
def test_an_empty_vote_table_gives_an_empty_leaderboard(votes):
    board = leaderboard(votes)
    assert board.table.empty and tuple(board.table.columns) == TABLE_COLUMNS
    assert board.names == () and board.win_matrix.shape == (0, 0) and board.counts.shape == (0, 0)
    assert board.pairwise_votes == 0 and board.ignored_votes == 0
    assert board.small_sample_warning.startswith("No pairwise votes yet")
    outcomes, ignored = pairwise_outcomes(votes)
    assert outcomes.empty and tuple(outcomes.columns) == OUTCOME_COLUMNS and ignored == 0


def test_bad_arguments_are_refused():
    outcomes, _ = pairwise_outcomes(table(vote("left_better", "A", "B")))
    with pytest.raises(ValueError, match="prior"):
        bradley_terry(outcomes, ("A", "B"), prior=0.0)
    with pytest.raises(ValueError, match="level"):
        bootstrap_intervals(outcomes, ("A", "B"), level=1.0)
    with pytest.raises(ValueError, match="not in names"):
        win_matrix(outcomes, ("A",))
    with pytest.raises(ValueError, match="variant_b"):
        pairwise_outcomes(pd.DataFrame({"kind": ["tie"], "variant_a": ["A"]}))


# --------------------------------------------------------------------------------------------------------------------
# Determinism


def test_deterministic_for_a_seed():
    votes = simulate(TRUTH, 200, seed=5)
    outcomes, _ = pairwise_outcomes(votes)
    names = model_names(outcomes)
    first = bootstrap_intervals(outcomes, names, rounds=1000, seed=7)
    again = bootstrap_intervals(outcomes, names, rounds=1000, seed=7)
    other = bootstrap_intervals(outcomes, names, rounds=1000, seed=8)
    np.testing.assert_array_equal(first[0], again[0])
    np.testing.assert_array_equal(first[1], again[1])
    assert not np.array_equal(first[0], other[0])
    pd.testing.assert_frame_equal(leaderboard(votes, seed=3).table, leaderboard(votes, seed=3).table)
