"""The shared room on the Compare tab: a presenter opens a room and gets a short code; everyone who joins with it
sees the presenter's prompts as blind answers ("Model A", "Model B", ...) and votes; the presenter's leaderboard
counts the room's votes as they arrive, and its votes download as training files.

Handlers are thin: the rooms and their votes live in :class:`playground.serving.services.Services`
(``serving.rooms``); the per-page state is ``{"code", "role", "round", "votes"}`` in a ``gr.State``. A joined page
polls the room with a ``gr.Timer`` (``config.ROOMS.poll_seconds``): a member's page loads the next round when the
presenter publishes one, the presenter's page redraws the leaderboard when a vote came in.
"""

from __future__ import annotations

import html
from dataclasses import dataclass
from functools import partial
from typing import Any

import gradio as gr

from playground import config, plots
from playground.feedback import votes
from playground.serving.blind import blind_labels
from playground.serving.rooms import RoomError
from playground.serving.services import Services
from playground.ui.compare_tab import (
    SLOTS,
    CompareTab,
    _outputs,
    blind_header,
    leaderboard_outputs,
    streaming_html,
)

ROOM_HOW = ("**Present:** *Open a room* gives a code; share it (or the join link) with the audience, then generate "
            "on this page: each generation becomes the room's next prompt. **Join:** type the presenter's code and "
            "press *Join*; the presenter's prompts appear here as blind answers to vote on. A room's votes are "
            "counted for its presenter only; your votes outside a room stay yours.")


def _session(session_id) -> str:
    if not votes.valid_session_id(session_id):
        raise gr.Error("The page has no session yet: wait a second after loading, or reload the page.")
    return session_id


def join_link(request: gr.Request | None, code: str) -> str:
    """The page's address with ``?room=<code>`` (what a presenter shares), or the bare query when unknown."""
    base = ""
    if request is not None and getattr(request, "headers", None):
        host = request.headers.get("host", "")
        scheme = request.headers.get("x-forwarded-proto", "http")
        base = f"{scheme}://{host}/" if host else ""
    return f"{base}?room={code}"


def presenter_note(room, count: int, link: str) -> str:
    state = "closed: no new members or prompts" if room.closed else "open"
    rounds = room.round.number if room.round else 0
    return (f"You present room **{room.shown_code}** ({state}). Join link: `{html.escape(link)}`.  \n"
            f"{rounds} prompt{'s' if rounds != 1 else ''} published · {count} vote{'s' if count != 1 else ''} "
            "cast in the room so far. Generate on this page to publish the next prompt.")


def member_note(room, waiting: bool) -> str:
    if waiting:
        return (f"Joined room **{room.shown_code}**. Waiting for the presenter's first prompt; it appears here "
                "on its own.")
    return (f"Room **{room.shown_code}**, prompt {room.round.number}: vote on the blind answers below. The names "
            "are revealed after your vote; the next prompt replaces these answers when the presenter sends it.")


# --------------------------------------------------------------------------------------------------------------------
# Handlers


def open_room(services: Services, session_id, request: gr.Request = None):
    """(room_state, note, code box, timer, presenter panel, blind checkbox): the presenter's room, open."""
    session_id = _session(session_id)
    try:
        room = services.open_room(session_id)
    except RoomError as exc:
        raise gr.Error(str(exc)) from exc
    count = len(services.room_votes(room.code, session_id))
    state = {"code": room.code, "role": "presenter", "round": room.round.number if room.round else 0,
             "votes": -1}  # -1: the first poll draws the board
    return (state, presenter_note(room, count, join_link(request, room.shown_code)), room.shown_code,
            gr.Timer(active=True), gr.update(visible=True), gr.update(value=True))


def join_room(services: Services, session_id, code):
    """(room_state, note, timer, presenter panel, blind checkbox): this page is a member of the room of ``code``."""
    session_id = _session(session_id)
    try:
        room = services.room(code)
    except RoomError as exc:
        raise gr.Error(str(exc)) from exc
    if room.presenter == session_id:
        raise gr.Error(f"You present room {room.shown_code}: press Open a room to go back to it.")
    state = {"code": room.code, "role": "member", "round": 0, "votes": 0}
    return (state, member_note(room, waiting=room.round is None), gr.Timer(active=True), gr.update(visible=False),
            gr.update(value=True))


def join_from_link(services: Services, session_id, request: gr.Request = None):
    """On page load: join the room named by ``?room=`` in the address, if any (otherwise nothing changes)."""
    code = (request.query_params.get("room") if request is not None else None) or ""
    if not code or not votes.valid_session_id(session_id):
        return (gr.skip(),) * 6
    try:
        state, note, timer, panel, blind = join_room(services, session_id, code)
    except gr.Error as exc:
        return None, html.escape(str(exc.message)), gr.skip(), gr.skip(), gr.skip(), gr.update(open=True)
    return state, note, timer, panel, blind, gr.update(open=True)


def leave_room(services: Services, session_id, room_state):
    """(room_state, note, timer, presenter panel): a member leaves; a presenter's leaving closes the room."""
    if room_state and room_state.get("role") == "presenter" and votes.valid_session_id(session_id):
        try:
            room = services.rooms.close(room_state["code"], session_id)
            note = (f"Room {room.shown_code} is closed; its votes stay downloadable below until you open a new "
                    "room.")
        except RoomError as exc:
            note = html.escape(str(exc))
        return None, note, gr.Timer(active=False), gr.skip()
    return None, "You left the room. " + ROOM_HOW, gr.Timer(active=False), gr.update(visible=False)


def publish_generation(services: Services, session_id, room_state, last):
    """After the presenter's generation: make it the room's next round. Returns (room_state, last, note)."""
    if not room_state or room_state.get("role") != "presenter" or not last or not last.get("answers"):
        return gr.skip(), gr.skip(), gr.skip()
    session_id = _session(session_id)
    scored = last.get("scored")
    if scored is None:  # a labelled generation keeps no metrics in ``last``: score once more for the room
        scored = services.score_answers(last["prompt"], last["answers"], last.get("system") or None)
    try:
        published = services.publish_round(room_state["code"], session_id, last["prompt"], last.get("system", ""),
                                           last["answers"], scored)
    except RoomError as exc:
        raise gr.Error(str(exc)) from exc
    state = {**room_state, "round": published.number, "votes": -1}  # -1: the next poll redraws the note and board
    # the presenter's own blind votes on it count in the room; a labelled generation's votes stay private
    last = {**last, "room": room_state["code"], "round": published.number} if last.get("blind") else gr.skip()
    gr.Info(f"Prompt {published.number} sent to the room.", duration=3)
    return state, last, gr.skip()


def round_outputs(round_, code: str) -> tuple:
    """A room's round shown blind in the answer columns, in the order of ``compare_tab._outputs``."""
    variants = round_.variants
    n = len(variants)
    labels = blind_labels(n)
    last = {"prompt": round_.prompt, "system": round_.system, "variants": variants, "answers": round_.answers,
            "blind": True, "labels": labels, "scored": round_.scored, "room": code, "round": round_.number}
    columns = [gr.update(visible=i < n) for i in range(SLOTS)]
    heads = [gr.update(value=blind_header(labels[i])) if i < n else gr.skip() for i in range(SLOTS)]
    bodies = [gr.update(value=streaming_html(round_.answers[variants[i]], True)) if i < n else gr.skip()
              for i in range(SLOTS)]
    metrics = [gr.update(value="") if i < n else gr.skip() for i in range(SLOTS)]
    left = gr.update(choices=labels, value=labels[0])
    right = gr.update(choices=labels, value=labels[1 if n > 1 else 0])
    return _outputs(last, f"Room prompt {round_.number}: vote on the blind answers.",
                    plots.empty_figure("The metrics appear after your vote."), left, right, columns, heads, bodies,
                    metrics)


def poll_room(services: Services, session_id, room_state, request: gr.Request = None):
    """What the timer refreshes: (room_state, note, timer, prompt, *answer outputs, *board outputs, paired CSV,
    unpaired CSV). A member gets the presenter's next round; the presenter gets the board when votes came in."""
    answers_skip = (gr.skip(),) * (5 + 4 * SLOTS)
    rest_skip = (gr.skip(),) * 6
    if not room_state or not votes.valid_session_id(session_id):
        return (gr.skip(), gr.skip(), gr.Timer(active=False), gr.skip(), *answers_skip, *rest_skip)
    presenting = room_state.get("role") == "presenter"
    try:
        room = services.room(room_state["code"], session_id if presenting else None)
    except RoomError as exc:
        return (None, html.escape(str(exc)), gr.Timer(active=False), gr.skip(), *answers_skip, *rest_skip)
    if presenting:
        frame = services.room_votes(room.code, session_id)
        if len(frame) == room_state.get("votes"):
            return (gr.skip(), gr.skip(), gr.skip(), gr.skip(), *answers_skip, *rest_skip)
        board = services.room_leaderboard(room.code, session_id)
        paths = services.room_exports(room.code, session_id)
        state = {**room_state, "votes": len(frame)}
        note = presenter_note(room, len(frame), join_link(request, room.shown_code))
        return (state, note, gr.skip(), gr.skip(), *answers_skip,
                *leaderboard_outputs(board, True, f"cast in room {room.shown_code}"), str(paths["paired"]),
                str(paths["unpaired"]))
    if room.round is None or room.round.number == room_state.get("round"):
        return (gr.skip(), gr.skip(), gr.skip(), gr.skip(), *answers_skip, *rest_skip)
    state = {**room_state, "round": room.round.number}
    return (state, member_note(room, waiting=False), gr.skip(), room.round.prompt,
            *round_outputs(room.round, room.code), *rest_skip)


# --------------------------------------------------------------------------------------------------------------------
# Layout


@dataclass
class RoomPanel:
    accordion: gr.Accordion
    code: gr.Textbox
    open_button: gr.Button
    join_button: gr.Button
    leave_button: gr.Button
    note: gr.Markdown
    presenter: gr.Column
    board: list[Any]
    download_paired: gr.DownloadButton
    download_unpaired: gr.DownloadButton
    timer: gr.Timer
    state: gr.State


def build_room_panel() -> RoomPanel:
    """The room's controls (built above the Compare tab's prompt; :func:`wire_room_panel` connects them)."""
    with gr.Accordion("Shared room: vote blind with an audience", open=False, elem_id="pg-room") as accordion:
        with gr.Row(equal_height=True):
            code = gr.Textbox(label="Room code", placeholder="ABCD-EFGH", max_lines=1, scale=2, elem_id="pg-room-code")
            join = gr.Button("Join", scale=1, elem_id="pg-room-join")
            open_button = gr.Button("Open a room (present)", scale=1, elem_id="pg-room-open")
            leave = gr.Button("Leave", scale=1, elem_id="pg-room-leave")
        note = gr.Markdown(ROOM_HOW, elem_id="pg-room-note")
        with gr.Column(visible=False, elem_id="pg-room-presenter") as presenter:
            board_note = gr.Markdown("", elem_id="pg-room-board-note")
            with gr.Row(equal_height=False):
                strengths = gr.Plot(plots.strengths_figure([]), label="Room strengths", elem_id="pg-room-board-plot")
                matrix = gr.Plot(plots.win_matrix_figure([], [], []), label="Room win matrix",
                                 elem_id="pg-room-board-matrix")
            table = gr.Dataframe(None, label="Per model (room)", interactive=False, elem_id="pg-room-board-table")
            with gr.Row():
                paired = gr.DownloadButton("Download room pairs CSV (DPO)", value=None, elem_id="pg-room-paired")
                unpaired = gr.DownloadButton("Download room labelled CSV (KTO)", value=None,
                                             elem_id="pg-room-unpaired")
    timer = gr.Timer(config.ROOMS.poll_seconds, active=False)
    return RoomPanel(accordion, code, open_button, join, leave, note, presenter, [board_note, strengths, matrix, table],
                     paired, unpaired, timer, gr.State(None))


def wire_room_panel(services: Services, session: gr.BrowserState, room: RoomPanel, compare: CompareTab) -> None:
    last, blind = compare.extra["last"], compare.extra["blind"]

    # closures, not partials: Gradio finds the gr.Request parameter by its type hint, which a partial hides
    def open_handler(session_id, request: gr.Request):
        return open_room(services, session_id, request)

    def poll_handler(session_id, room_state, request: gr.Request):
        return poll_room(services, session_id, room_state, request)

    room.open_button.click(open_handler, [session],
                           [room.state, room.note, room.code, room.timer, room.presenter, blind], api_name=False,
                           concurrency_limit=None)
    room.join_button.click(partial(join_room, services), [session, room.code],
                           [room.state, room.note, room.timer, room.presenter, blind], api_name=False,
                           concurrency_limit=None)
    room.code.submit(partial(join_room, services), [session, room.code],
                     [room.state, room.note, room.timer, room.presenter, blind], api_name=False,
                     concurrency_limit=None)
    room.leave_button.click(partial(leave_room, services), [session, room.state],
                            [room.state, room.note, room.timer, room.presenter], api_name=False,
                            concurrency_limit=None)
    for event in compare.extra["generated"]:
        event.then(partial(publish_generation, services), [session, room.state, last],
                   [room.state, last, room.note], api_name=False, concurrency_limit=None)
    room.timer.tick(poll_handler, [session, room.state],
                    [room.state, room.note, room.timer, compare.prompt, *compare.extra["answer_outputs"],
                     *room.board, room.download_paired, room.download_unpaired], api_name=False,
                    concurrency_limit=None, show_progress="hidden")


def wire_join_link(services: Services, session: gr.BrowserState, room: RoomPanel, compare: CompareTab, load_event):
    """After the page's load (the session id known): join the room of ``?room=`` in the address."""
    def join_handler(session_id, request: gr.Request):
        return join_from_link(services, session_id, request)

    load_event.then(join_handler, [session],
                    [room.state, room.note, room.timer, room.presenter, compare.extra["blind"], room.accordion],
                    api_name=False, queue=False)
