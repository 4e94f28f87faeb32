"""Blind voting on Compare and through the API: the answers are shown as Model A, B, ... in an order fixed per prompt,
with no name, colour or metric until the vote, which records the true names and then reveals them."""

from __future__ import annotations

import json

import pytest
from gradio_client import Client
from tiny_server import build, serving

from playground.serving.blind import Ballot, BallotBox, blind_labels, blind_order
from playground.serving.services import Services
from playground.ui import compare_tab

SESSION = "b" * 32


@pytest.fixture()
def services(tiny_engine, tmp_path):
    return Services.for_engine(tiny_engine, tmp_path / "data")


def test_the_order_is_fixed_per_prompt_secret_and_independent_of_the_ticks():
    variants = ["base", "dpo", "kto", "mine"]
    first = blind_order("secret-1", "How do I boil an egg?", variants)
    assert sorted(first) == sorted(variants)
    assert blind_order("secret-1", "How do I boil an egg?", list(reversed(variants))) == first
    orders = {tuple(blind_order("secret-1", f"prompt {i}", variants)) for i in range(40)}
    assert len(orders) > 10  # shuffled per prompt, not one fixed permutation
    others = {tuple(blind_order(f"secret-{k}", "How do I boil an egg?", variants)) for k in range(40)}
    assert len(others) > 10  # another server's secret gives another order
    assert blind_labels(3) == ["Model A", "Model B", "Model C"]


def test_the_ballot_box_is_bounded_and_maps_labels_to_names():
    box = BallotBox(capacity=2)
    ballots = [box.open(Ballot(f"p{i}", "", ["kto", "base"], {"kto": "k", "base": "b"})) for i in range(3)]
    assert box.get(ballots[0]) is None and box.get(ballots[2]).prompt == "p2"
    assert len(ballots[2]) == 32
    assert box.get(ballots[2]).name_of("Model A") == "kto" and box.get(ballots[2]).name_of("Model C") is None


def _generate(services, prompt, variants, blind):
    return list(compare_tab.generate_answers(services, prompt, "", list(variants), "greedy", 0.7, 0.9, 5, 0, blind))


def test_a_blind_generation_hides_names_colours_and_metrics_until_the_vote(services):
    n = compare_tab.SLOTS
    outputs = _generate(services, "Say hello", ["base", "dpo", "kto"], blind=True)
    last, status, plot = outputs[-1][:3]
    left = outputs[0][3]  # the Left/Right lists are sent with the first chunk
    heads = [out[5 + n: 5 + 2 * n] for out in outputs]
    bodies = [out[5 + 2 * n: 5 + 3 * n] for out in outputs]
    metrics = [out[5 + 3 * n:] for out in outputs]
    shown = json.dumps([h for step in heads + bodies + metrics for h in step], default=str)
    assert "Model A" in shown and "Model C" in shown
    for name in ("dpo", "kto", "DPO adapter", "the reference"):
        assert name not in shown  # no name in any head, body or metric sent while blind
    assert "tok" not in shown.replace("tok-special", "")  # plain text: no per-token colouring (base would show)
    assert left["choices"] == ["Model A", "Model B", "Model C"] and "Blind vote" in status
    assert last["blind"] and last["variants"] == blind_order(services.secret, "Say hello", ["base", "dpo", "kto"])
    assert "appear after your vote" in json.dumps(plot.to_plotly_json())

    # the vote records the true names; the reveal shows them, with colours and metrics
    compare_tab.vote_pair(services, "left_better", SESSION, last, "Model B", "Model C")
    stored = services.votes.for_session(SESSION).iloc[-1]
    assert (stored["variant_a"], stored["variant_b"]) == (last["variants"][1], last["variants"][2])
    revealed = compare_tab.reveal(services, last, "Model B", "Model C")
    new_last, note, _plot, new_left, new_right = revealed[:5]
    assert new_last["revealed"] and not new_last["blind"]
    assert new_left["value"] == last["variants"][1] and new_right["value"] == last["variants"][2]
    assert all(name in note for name in ("base", "dpo", "kto")) and "Model A = " in note
    assert all(name in json.dumps(revealed[5: 5 + 3], default=str) for name in last["variants"])
    assert compare_tab.reveal(services, new_last, "x", "y") == (compare_tab.gr.skip(),) * (5 + 3 * n)


def test_a_thumbs_vote_in_blind_mode_records_the_column_s_true_name(services):
    last = _generate(services, "Give me one tip", ["base", "dpo"], blind=True)[-1][0]
    compare_tab.vote_thumb(services, 1, True, SESSION, last)
    stored = services.votes.for_session(SESSION).iloc[-1]
    assert stored["kind"] == "thumbs_up" and stored["variant_a"] == last["variants"][1]


def test_blind_voting_through_the_api(tiny_engine, tmp_path):
    services, demo = build(tmp_path / "data", engine=tiny_engine)
    with serving(demo) as url:
        client = Client(url, verbose=False)
        got = client.predict(prompt="Say hello", variants=["dpo", "base", "kto"], settings={"max_new_tokens": 4},
                             blind=True, api_name="/generate")
        assert sorted(got["answers"]) == ["Model A", "Model B", "Model C"] and "variants" not in got
        assert not any(name in json.dumps(got) for name in ('"dpo"', '"kto"', '"base"'))
        with pytest.raises(Exception, match="this ballot has Model A, Model B, Model C"):
            client.predict(ballot=got["ballot"], kind="left_better", left="Model A", right="Model Z",
                           api_name="/vote")
        voted = client.predict(ballot=got["ballot"], kind="right_better", left="Model A", right="Model C",
                               api_name="/vote")
        order = blind_order(services.secret, "Say hello", ["base", "dpo", "kto"])
        assert voted["revealed"] == dict(zip(["Model A", "Model B", "Model C"], order))
        assert (voted["vote"]["variant_a"], voted["vote"]["variant_b"]) == (order[0], order[2])
        assert set(voted["variants"]) == set(order) and "implied_reward" in voted["variants"]["dpo"]
        assert voted["variants"][order[0]]["text"] == got["answers"]["Model A"]
        with pytest.raises(Exception, match="No open ballot"):
            client.predict(ballot="0" * 32, kind="tie", api_name="/vote")


def test_the_leaderboard_of_a_session_s_votes(services):
    """The panel under the votes: strengths with intervals, the win matrix and the table from this browser's pairwise
    votes only, the small-sample warning, and the blind-only filter."""
    note, strengths, matrix, table = compare_tab.leaderboard_view(services, SESSION, False)
    assert "From **0** pairwise votes" in note and "No pairwise votes yet" in note and table.empty
    base = {"prompt": "Hi", "variant_a": "dpo", "answer_a": "a longer answer here", "variant_b": "base",
            "answer_b": "short"}
    for kind in ("left_better", "left_better", "left_better", "right_better", "tie"):
        services.votes.add(SESSION, {**base, "kind": kind})
    services.votes.add(SESSION, {**base, "kind": "left_better", "blind": True})
    services.votes.add(SESSION, {**base, "kind": "thumbs_up"})
    services.votes.add("z" * 32, {**base, "kind": "right_better"})  # another browser's vote is not counted
    note, strengths, matrix, table = compare_tab.leaderboard_view(services, SESSION, False)
    assert "From **6** pairwise votes of this browser (1 thumbs votes" in note and "⚠️ Only 6 pairwise votes" in note
    assert list(table["model"]) == ["dpo", "base"] and list(table["votes"]) == [6, 6]
    assert list(table["wins"]) == [4, 1] and list(table["ties"]) == [1, 1]
    assert table["win rate"].tolist() == [round(4.5 / 6, 3), round(1.5 / 6, 3)]
    assert table["low"][0] <= table["strength"][0] <= table["high"][0]
    assert "error_x" in json.dumps(strengths.to_plotly_json()) and matrix.data[0].type == "heatmap"
    note, _, _, blind_table = compare_tab.leaderboard_view(services, SESSION, True)
    assert "From **1** blind pairwise votes" in note and list(blind_table["votes"]) == [1, 1]
