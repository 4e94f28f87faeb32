"""The method family on cached log-probs: every objective's per-pair loss and ranking, by hand on two pairs."""

from __future__ import annotations

import math

import numpy as np
import pytest

from playground import plots
from playground.analysis.family import FAMILY, family, family_table
from playground.analysis.scores import SideScores


def side(chosen, rejected, chosen_len=(2, 4), rejected_len=(2, 2), kl=(-3.0, -3.0, -3.0, -3.0)):
    return SideScores(np.array(chosen, float), np.array(chosen_len), np.array(rejected, float),
                      np.array(rejected_len), np.array(kl, float), np.array([2, 2, 2, 2]), np.array([False, False]))


def sigmoid(z):
    return 1 / (1 + math.exp(-z))


def test_each_objective_on_two_pairs_by_hand():
    ref = side([-4.0, -8.0], [-6.0, -4.0])
    pol = side([-2.0, -8.0], [-6.0, -2.0])  # pair 0: chosen up by 2 nats; pair 1: rejected up by 2
    members = {m.name: m for m in family(pol, ref, beta=0.5, simpo_beta=2.0, simpo_gamma=1.0, orpo_beta=0.1)}
    assert tuple(members) == FAMILY
    # DPO: margins 0.5 * (2 - 0) = 1 and 0.5 * (0 - 2) = -1
    assert members["dpo"].loss == pytest.approx([-math.log(sigmoid(1)), -math.log(sigmoid(-1))])
    assert list(members["dpo"].chosen_first) == [True, False]
    # SimPO: averages -2/2 = -1 vs -6/2 = -3 -> z = 2 * 2 - 1 = 3; -8/4 = -2 vs -2/2 = -1 -> z = 2 * (-1) - 1 = -3
    assert members["simpo"].loss == pytest.approx([-math.log(sigmoid(3)), -math.log(sigmoid(-3))])
    assert list(members["simpo"].chosen_first) == [True, False]
    # APO-zero: (1 - sigmoid(0.5 r_w)) + sigmoid(0.5 r_l): pair 0 r_w = 2, r_l = 0; pair 1 r_w = 0, r_l = 2
    assert members["apo_zero"].loss == pytest.approx([1 - sigmoid(1) + 0.5, 0.5 + sigmoid(1)])
    # ORPO: each pair's share of the token-weighted chosen NLL (2 and 8 nats over 6 tokens, batch of 2: 2/6*2 and
    # 8/6*2) + 0.1 * -log sigmoid(log odds ratio of the average log-probs: -1 vs -3, then -2 vs -1)
    def odds(avg):
        return avg - math.log(1 - math.exp(avg))

    expected = [2 / 6 * 2 + 0.1 * -math.log(sigmoid(odds(-1.0) - odds(-3.0))),
                8 / 6 * 2 + 0.1 * -math.log(sigmoid(odds(-2.0) - odds(-1.0)))]
    assert members["orpo"].loss == pytest.approx(expected, rel=1e-9)
    assert list(members["orpo"].chosen_first) == [True, False]
    # BCO: rewards 0.5 * logratio of the 4 samples (1, 0 | 0, 1) -> delta = 0.5
    rewards, delta = [1.0, 0.0, 0.0, 1.0], 0.5
    losses = [-math.log(sigmoid(rewards[0] - delta)), -math.log(sigmoid(rewards[1] - delta)),
              -math.log(sigmoid(-(rewards[2] - delta))), -math.log(sigmoid(-(rewards[3] - delta)))]
    assert members["bco"].loss == pytest.approx([(losses[0] + losses[2]) / 2, (losses[1] + losses[3]) / 2])
    assert "δ=0.5" in members["bco"].settings


def test_on_the_base_only_the_reference_free_objectives_rank_pairs():
    base = side([-2.0, -8.0], [-6.0, -2.0])
    table = family_table(family(base, base, beta=0.1))
    by_name = dict(zip(table["objective"], table["chosen ranked first"]))
    assert by_name["DPO"] == 0.0 and by_name["APO-zero"] == 0.0 and by_name["KTO"] == 0.0  # every margin is 0
    assert by_name["SimPO"] == 0.5 and by_name["ORPO"] == 0.5  # the average log-probs rank pair 0 right only
    assert list(table["reference"]) == ["needed", "needed", "none", "none", "needed", "needed", "needed"]
    apo = table.set_index("objective").loc["APO-zero", "mean loss"]
    assert apo == pytest.approx(1.0)  # (1 - 1/2) + 1/2 at r = 0
    fig = plots.family_figure(list(table["objective"]), list(table["chosen ranked first"]),
                              list(table["reference"] == "none"), np.zeros(2), {"DPO": np.ones(2)}, "base")
    assert len(fig.data) == 2 and fig.data[0].marker.pattern.shape[2] == "/"
