"""Shared rooms: a presenter opens a room, members join with its code and vote blind on the presenter's prompts, the
presenter's leaderboard and downloads count the room's votes, and nobody else's votes are counted or shown."""

from __future__ import annotations

import json
import time

import pandas as pd
import pytest

from playground import config
from playground.feedback import votes
from playground.serving.blind import blind_order
from playground.serving.rooms import ALPHABET, RoomError, RoomStore, normalise_code, shown_code
from playground.serving.services import Services
from playground.ui import compare_tab, room_panel

PRESENTER, MEMBER, OTHER, OUTSIDER = "p" * 32, "m" * 32, "o" * 32, "x" * 32
N = compare_tab.SLOTS


@pytest.fixture()
def services(tiny_engine, tmp_path):
    return Services.for_engine(tiny_engine, tmp_path / "data")


def test_codes_are_short_unambiguous_and_typed_loosely(tmp_path):
    store = RoomStore(tmp_path / "rooms.sqlite3")
    room = store.open(PRESENTER)
    assert len(room.code) == config.ROOMS.code_length and set(room.code) <= set(ALPHABET)
    assert not set("01OIL") & set(ALPHABET)
    assert room.shown_code == f"{room.code[:4]}-{room.code[4:]}" and shown_code("ABCD") == "ABCD"
    assert normalise_code(" abcd-efgh ") == "ABCDEFGH"
    assert store.get(room.shown_code.lower()).code == room.code  # typed in lower case with the dash
    assert store.open(PRESENTER).code == room.code  # a reload and Open again: the same room
    assert store.open(OTHER).code != room.code
    with pytest.raises(RoomError, match="No room has the code ZZZZ-ZZZZ"):
        store.get("zzzz-zzzz")
    with pytest.raises(RoomError, match="Type the room's code"):
        store.get("  ")


def test_only_the_presenter_publishes_and_closes_and_a_closed_room_refuses_members(tmp_path):
    store = RoomStore(tmp_path / "rooms.sqlite3")
    room = store.open(PRESENTER)
    with pytest.raises(RoomError, match="Only the presenter"):
        store.publish(room.code, MEMBER, "p", "", ["a", "b"], {"a": "x", "b": "y"}, {})
    first = store.publish(room.code, PRESENTER, "Hi?", "", ["b", "a"], {"a": "x", "b": "y"}, {"a": {"v": 1.0}})
    second = store.publish(room.code, PRESENTER, "Again?", "sys", ["a", "b"], {"a": "x2", "b": "y2"}, {})
    assert (first.number, second.number) == (1, 2)
    seen = store.get(room.code).round
    assert (seen.number, seen.prompt, seen.system, seen.variants, seen.answers) == (
        2, "Again?", "sys", ["a", "b"], {"a": "x2", "b": "y2"})
    assert RoomStore(tmp_path / "rooms.sqlite3").get(room.code).round == seen  # kept on disk across a restart
    store.close(room.code, PRESENTER)
    with pytest.raises(RoomError, match="has closed"):
        store.get(room.code)
    assert store.get(room.code, presenter=PRESENTER).closed  # the presenter still reads it
    with pytest.raises(RoomError, match="is closed"):
        store.publish(room.code, PRESENTER, "More?", "", ["a"], {"a": "x"}, {})
    assert store.open(PRESENTER).code != room.code  # a closed room is not reopened: a new code


def test_rooms_expire_and_the_oldest_close_when_too_many_are_open(tmp_path):
    store = RoomStore(tmp_path / "rooms.sqlite3", config.RoomSettings(open_rooms=2, lifetime_hours=1.0))
    rooms = [store.open(f"{i}" * 32) for i in range(3)]
    with pytest.raises(RoomError, match="has closed"):
        store.get(rooms[0].code)
    assert store.get(rooms[1].code) and store.get(rooms[2].code)
    old = time.time() - 2 * 3600
    with store._connect() as conn:
        conn.execute("UPDATE rooms SET opened = ? WHERE code = ?", (old, rooms[1].code))
    with pytest.raises(RoomError, match="has closed"):
        store.get(rooms[1].code)
    assert store.of_presenter("1" * 32) is None


def _generate(services, prompt, variants, blind=True):
    return list(compare_tab.generate_answers(services, prompt, "", list(variants), "greedy", 0.7, 0.9, 5, 0, blind))


def _poll(services, session_id, state):
    out = room_panel.poll_room(services, session_id, state)
    new_state, note, _timer, prompt = out[:4]
    answers = out[4: 4 + 5 + 4 * N]
    board = out[4 + 5 + 4 * N:]
    return new_state, note, prompt, answers, board


def test_two_sessions_vote_blind_in_one_room_and_the_presenter_counts_them(services):
    skip = compare_tab.gr.skip()
    state, note, code_box, _timer, panel, blind = room_panel.open_room(services, PRESENTER)
    assert state["role"] == "presenter" and code_box in note and panel["visible"] and blind["value"] is True
    code = state["code"]

    # a member joins with the code as typed; nothing to vote on until the presenter generates
    member, note, _timer, panel, _blind = room_panel.join_room(services, MEMBER, code_box.lower())
    assert member == {"code": code, "role": "member", "round": 0, "votes": 0} and "Waiting" in note
    assert not panel["visible"]
    assert _poll(services, MEMBER, member)[0] == skip

    # the presenter generates blind: the generation becomes the room's first round
    last = _generate(services, "Say hello", ["base", "dpo", "kto"])[-1][0]
    state, last, _ = room_panel.publish_generation(services, PRESENTER, state, last)
    assert state["round"] == 1 and last["room"] == code and last["round"] == 1

    # the member's poll loads it: the presenter's prompt, blind columns, the same answers in the same order
    member, note, prompt, answers, _board = _poll(services, MEMBER, member)
    member_last = answers[0]
    assert prompt == "Say hello" and member["round"] == 1 and "prompt 1" in note
    assert member_last["variants"] == blind_order(services.secret, "Say hello", ["base", "dpo", "kto"])
    assert member_last["answers"] == last["answers"] and member_last["blind"]
    shown = json.dumps([a for a in answers[1:] if a != skip], default=str)
    assert "Model A" in shown and not any(f'"{name}"' in shown or f"{name} " in shown for name in ("dpo", "kto"))
    assert answers[3]["choices"] == ["Model A", "Model B", "Model C"]
    assert _poll(services, MEMBER, member)[0] == skip  # the same round is not sent twice

    # votes: the member's and the presenter's own blind vote count in the room; an outsider's vote does not
    compare_tab.vote_pair(services, "left_better", MEMBER, member_last, "Model A", "Model B")
    compare_tab.vote_thumb(services, 2, False, MEMBER, member_last)
    compare_tab.vote_pair(services, "right_better", PRESENTER, last, "Model B", "Model C")
    outsider_last = _generate(services, "Say hello", ["base", "dpo"], blind=True)[-1][0]
    compare_tab.vote_pair(services, "left_better", OUTSIDER, outsider_last, "Model A", "Model B")
    revealed = compare_tab.reveal(services, member_last, "Model A", "Model B")[0]
    compare_tab.vote_pair(services, "tie", MEMBER, revealed, member_last["variants"][0], member_last["variants"][2])

    room_votes = services.room_votes(code, PRESENTER)
    order = member_last["variants"]
    assert list(room_votes["session"]) == [MEMBER, MEMBER, PRESENTER]  # the revealed (not blind) tie is private
    assert list(room_votes["kind"]) == ["left_better", "thumbs_down", "right_better"]
    assert list(room_votes["variant_a"]) == [order[0], order[2], order[1]] and room_votes["blind"].all()
    assert len(services.votes.for_session(MEMBER)) == 3  # the member keeps all their votes, room or not

    # the presenter's poll draws the room's board and writes its training files; nobody else may read them
    state, note, _prompt, answers, board = _poll(services, PRESENTER, state)
    assert all(a == skip for a in answers) and "3 votes" in note
    board_note, strengths, matrix, table, paired, unpaired = board
    assert "From **2** blind pairwise votes cast in room" in board_note
    assert int(table["votes"].sum()) == 4 and "error_x" in json.dumps(strengths.to_plotly_json())
    pairs = pd.read_csv(paired)
    assert len(pairs) == 2 and set(pairs.columns) >= {"prompt", "chosen", "rejected"}
    assert pairs["chosen"].tolist() == [last["answers"][order[0]], last["answers"][order[2]]]
    assert len(pd.read_csv(unpaired)) == 5  # two per pair vote, one per thumbs vote
    assert _poll(services, PRESENTER, state)[0] == skip  # no new vote: nothing redrawn
    for who in (MEMBER, OUTSIDER):
        with pytest.raises(Exception, match="Only the presenter"):
            services.room_votes(code, who)
    with pytest.raises(Exception, match="You present room"):
        room_panel.join_room(services, PRESENTER, code)

    # the presenter leaves: the room closes for members, its votes stay the presenter's
    _state, note, _timer, _panel = room_panel.leave_room(services, PRESENTER, state)
    assert "is closed" in note
    gone, note, _prompt, _answers, _board = _poll(services, MEMBER, member)
    assert gone is None and "has closed" in note
    assert len(services.room_votes(code, PRESENTER)) == 3


def test_a_labelled_generation_is_published_with_its_metrics_and_its_votes_stay_private(services):
    state = room_panel.open_room(services, PRESENTER)[0]
    last = _generate(services, "Tell me a tip", ["base", "dpo"], blind=False)[-1][0]
    state, new_last, _ = room_panel.publish_generation(services, PRESENTER, state, last)
    assert new_last == compare_tab.gr.skip()  # the presenter's labelled votes are not blind: not the room's
    published = services.room(state["code"]).round
    assert published.variants == blind_order(services.secret, "Tell me a tip", ["base", "dpo"])
    assert set(published.scored) == {"base", "dpo"} and "implied_reward" in published.scored["dpo"]
    member = room_panel.join_room(services, MEMBER, state["code"])[0]
    member_last = _poll(services, MEMBER, member)[3][0]
    revealed = compare_tab.reveal(services, member_last, "Model A", "Model B")
    assert "implied reward" in json.dumps(revealed, default=str)  # the reveal shows the published metrics


def test_joining_from_the_link_and_bad_codes(services):
    class Request:
        query_params = {"room": ""}

    request = Request()
    assert room_panel.join_from_link(services, MEMBER, request) == (compare_tab.gr.skip(),) * 6
    code = room_panel.open_room(services, PRESENTER)[0]["code"]
    request.query_params = {"room": shown_code(code)}
    state, note, timer, panel, blind, accordion = room_panel.join_from_link(services, MEMBER, request)
    assert state["code"] == code and "Joined room" in note and accordion["open"]
    request.query_params = {"room": "WXYZ-WXYZ"}
    state, note, *_ = room_panel.join_from_link(services, MEMBER, request)
    assert state is None and "No room has the code WXYZ-WXYZ" in note
    with pytest.raises(Exception, match="no session"):
        room_panel.join_room(services, "short", code)
    assert votes.valid_session_id(MEMBER)
