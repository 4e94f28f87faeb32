"""The claims experiments' data: seeded label flips (nested across rates), thumbs-only feedback, imbalanced shares."""

from __future__ import annotations

import pandas as pd
import pytest

from playground.feedback.perturb import desirable_share, flip_pairs, thumbs_only

PAIRS = pd.DataFrame({"prompt": [f"p{i}" for i in range(10)], "chosen": [f"good{i}" for i in range(10)],
                      "rejected": [f"bad{i}" for i in range(10)], "system": [""] * 10})


def test_flips_swap_exactly_the_rate_and_nest_across_rates():
    noisy, flipped = flip_pairs(PAIRS, 0.3, seed=7)
    assert flipped.sum() == 3 and len(noisy) == 10
    for i in range(10):
        expect = (f"bad{i}", f"good{i}") if flipped[i] else (f"good{i}", f"bad{i}")
        assert (noisy.loc[i, "chosen"], noisy.loc[i, "rejected"]) == expect
    assert PAIRS.loc[0, "chosen"] == "good0"  # the input is untouched
    low, high = flip_pairs(PAIRS, 0.1, 7)[1], flip_pairs(PAIRS, 0.4, 7)[1]
    assert low.sum() == 1 and high.sum() == 4 and (high[low]).all() and (flipped <= high).all()
    assert flip_pairs(PAIRS, 0.0, 7)[1].sum() == 0 and flip_pairs(PAIRS, 1.0, 7)[1].all()
    assert (flip_pairs(PAIRS, 0.3, 7)[1] == flipped).all()  # the same seed, the same rows
    with pytest.raises(ValueError, match="flip rate"):
        flip_pairs(PAIRS, 1.5, 0)


def test_thumbs_only_keeps_one_labelled_answer_per_pair():
    samples = thumbs_only(PAIRS, seed=3)
    assert len(samples) == 10 and list(samples["prompt"]) == list(PAIRS["prompt"])
    for record in samples.to_dict("records"):
        i = record["prompt"][1:]
        assert record["completion"] == (f"good{i}" if record["label"] else f"bad{i}")
    assert 0 < samples["label"].sum() < 10 and "system" in samples.columns
    assert samples.equals(thumbs_only(PAIRS, seed=3))


def test_desirable_share_keeps_every_undesirable_answer():
    samples = pd.DataFrame({"prompt": [f"p{i}" for i in range(20)], "completion": [f"c{i}" for i in range(20)],
                            "label": [True] * 10 + [False] * 10})
    tenth = desirable_share(samples, 0.1, seed=0)
    assert (~tenth["label"]).sum() == 10 and tenth["label"].sum() == 1  # round(0.1 / 0.9 * 10) = 1
    quarter = desirable_share(samples, 0.25, seed=0)
    assert quarter["label"].sum() == 3  # round(10 / 3) = 3
    assert desirable_share(samples, 0.5, seed=0)["label"].sum() == 10
    assert desirable_share(samples, 0.9, seed=0)["label"].sum() == 10  # at most all of them
    with pytest.raises(ValueError, match="strictly between"):
        desirable_share(samples, 1.0, 0)
