"""Compare tab: one prompt, the chosen variants' answers streamed side by side, their metrics, and votes.

Handlers are module functions taking ``services`` first (bound with functools.partial), so tests call them directly.
The answers are generated in ONE batched pass (``Services.stream_answers``, a GPU function on ZeroGPU); after the
last token, ONE scoring call (``Services.score_answers``) gives each answer's V(x,y), implied reward, mean log-prob,
length and per-token log-ratio against the base.
"""

from __future__ import annotations

import html
import math
from contextlib import closing
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import gradio as gr

from playground import config, plots
from playground.common.numbers import format_number
from playground.engine.generation import GenerationInputError
from playground.feedback import votes
from playground.serving.blind import blind_labels, blind_order
from playground.serving.services import Services
from playground.serving.settings import ServiceInputError, generation_settings
from playground.ui.theme import NEGATIVE_RGB, POSITIVE_RGB

SLOTS = config.APP.compare_slots
PER_ROW = config.APP.compare_columns_per_row
MODES = ("greedy", "sampled")
VOTE_BUTTONS = (("left_better", "◀ Left better"), ("right_better", "Right better ▶"), ("tie", "Tie"),
                ("both_bad", "Both bad"))


# --------------------------------------------------------------------------------------------------------------------
# Formatting (pure)


def variant_header(name: str, adapters: dict) -> str:
    info = adapters.get(name)
    kind = "the reference: base model, no adapter" if name == "base" else (
        info.describe() if info else "adapter")
    color = plots.variant_color(name)
    return (f'<div class="pg-variant-head" style="border-left-color:{color}">{html.escape(name)} '
            f'<span style="font-weight:400;font-size:14px;color:#555">· {html.escape(kind)}</span></div>')


def blind_header(label: str) -> str:
    """A blind column's head: the label only, in a neutral colour (a variant's colour would give it away)."""
    return (f'<div class="pg-variant-head" style="border-left-color:#888">{html.escape(label)} '
            '<span style="font-weight:400;font-size:14px;color:#555">· hidden until you vote</span></div>')


BLIND_NOTE = ("Blind vote: the names, colours and metrics of these answers are hidden until you vote (the order is "
              "shuffled per prompt).")


def streaming_html(text: str, finished: bool) -> str:
    cursor = "" if finished else '<span class="pg-cursor">▍</span>'
    body = html.escape(text) if text else ('<span class="tok-special">(empty answer)</span>' if finished else "")
    return f'<div class="pg-answer">{body}{cursor}</div>'


def _token_color(ratio: float, clip: float) -> str:
    if not math.isfinite(ratio) or ratio == 0:
        return "transparent"
    strength = min(1.0, abs(ratio) / clip) * 0.65
    r, g, b = POSITIVE_RGB if ratio > 0 else NEGATIVE_RGB
    return f"rgba({r},{g},{b},{strength:.3f})"


def token_html(name: str, metrics: dict[str, Any], clip: float = config.APP.token_ratio_clip) -> str:
    """The answer's tokens, each coloured by its log-ratio log pi(y_t) - log pi_ref(y_t) against the base, with the
    numbers in a hover title. Every piece of text is HTML-escaped."""
    spans = []
    is_base = name == "base"
    for piece, special, logp, ratio in zip(metrics["tokens"], metrics["special"], metrics["token_logp"],
                                           metrics["token_logratio"]):
        if is_base:
            title = f"log p = {logp:.3f} (base = reference)"
        else:
            title = f"log p = {logp:.3f}; log p - log p_base = {ratio:+.3f}"
        classes = "tok tok-special" if special else "tok"
        color = "transparent" if is_base else _token_color(ratio, clip)
        spans.append(f'<span class="{classes}" style="background:{color}" '
                     f'title="{html.escape(title, quote=True)}">{html.escape(piece)}</span>')
    if metrics.get("truncated"):
        spans.append('<span class="tok-special"> … (scored up to the length limit)</span>')
    return f'<div class="pg-answer">{"".join(spans)}</div>'


def legend_html(clip: float = config.APP.token_ratio_clip) -> str:
    return (f'<div class="pg-legend">Token colour, log π − log π<sub>base</sub>: less likely −{clip:g}'
            f'<span class="swatch"></span>+{clip:g} more likely than under the base. Hover a token for its '
            'numbers.</div>')


def metrics_markdown(metrics: dict[str, Any], beta: float = config.LOSS.beta) -> str:
    reward = format_number(metrics["implied_reward"], signed=True, fixed=True)
    return (
        "| | |\n|---|---|\n"
        f"| V(x,y) · likelihood | **{format_number(metrics['value'], fixed=True)}** |\n"
        f"| implied reward β·log π/π_ref (β={beta:g}) | **{reward}** |\n"
        f"| mean token log-prob | {format_number(metrics['mean_logp'], fixed=True)} |\n"
        f"| length | {metrics['length']} tokens |"
    )


def metric_rows(scored: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    return [{"variant": name, "value": m["value"], "implied_reward": m["implied_reward"], "mean_logp": m["mean_logp"],
             "length": m["length"]} for name, m in scored.items()]


# --------------------------------------------------------------------------------------------------------------------
# Handlers


def _check_session(session_id: Any) -> str:
    if not votes.valid_session_id(session_id):
        raise gr.Error("The page has no session yet: wait a second after loading, or reload the page.")
    return session_id


def _settings(mode, temperature, top_p, max_new_tokens, seed) -> config.GenerationConfig:
    if max_new_tokens is None or seed is None:
        raise gr.Error("Max new tokens and seed need a value.")
    try:
        return generation_settings({"mode": mode, "temperature": temperature, "top_p": top_p,
                                    "max_new_tokens": max_new_tokens, "seed": seed})
    except ServiceInputError as exc:
        raise gr.Error(str(exc)) from exc


def _outputs(last, status, plot, left, right, columns, heads, bodies, metrics) -> tuple:
    return (last, status, plot, left, right, *columns, *heads, *bodies, *metrics)


def generate_answers(services: Services, prompt, system, variants, mode, temperature, top_p, max_new_tokens, seed,
                     blind=False):
    """Stream the variants' answers; after the last token, score them once and show metrics, colours and the chart.

    Yields tuples in the order of :func:`_outputs`; the first element is the per-session ``last`` state (prompt,
    system, variants, answers) the vote buttons read. ``blind``: the columns are "Model A", "Model B", ... in the
    order ``serving.blind.blind_order`` fixes for this prompt, with no name, colour or metric until a vote is cast
    (:func:`reveal` then shows them); ``last`` keeps the true names and the metrics for that.
    """
    prompt = (prompt or "").strip()
    if not prompt:
        raise gr.Error("Type a prompt or pick an example first.")
    try:
        variants = services.check_variants(variants)
    except ServiceInputError as exc:
        raise gr.Error(str(exc)) from exc
    settings = _settings(mode, temperature, top_p, max_new_tokens, seed)
    system = (system or "").strip() or None
    adapters = services.engine.adapters
    if blind:
        variants = blind_order(services.secret, prompt, variants)
    n = len(variants)
    shown = blind_labels(n) if blind else list(variants)  # what the columns and the Left/Right lists call them
    columns = [gr.update(visible=i < n) for i in range(SLOTS)]
    heads = [gr.update(value=blind_header(shown[i]) if blind else variant_header(variants[i], adapters))
             if i < n else gr.skip() for i in range(SLOTS)]
    empty_metrics = [gr.update(value="") if i < n else gr.skip() for i in range(SLOTS)]
    pair = gr.update(choices=shown, value=shown[0]), gr.update(choices=shown, value=shown[1 if n > 1 else 0])
    status = (BLIND_NOTE + " " if blind else "") + f"Generating {n} answer{'s' if n > 1 else ''} in one batched pass…"
    clear_last = None  # votes wait for these answers: the previous ones are no longer on screen
    state = None
    try:
        # closing(): a Stop (the event cancelled) closes the stream at once, which frees the model at the next token
        with closing(services.stream_answers(prompt, variants, settings, system)) as stream:
            for state in stream:
                if state.done:
                    break
                bodies = [gr.update(value=streaming_html(state.outputs[variants[i]].text,
                                                         state.outputs[variants[i]].finished)) if i < n else gr.skip()
                          for i in range(SLOTS)]
                yield _outputs(clear_last, status, gr.skip(), *pair, columns, heads, bodies, empty_metrics)
                clear_last = gr.skip()
                columns = [gr.skip()] * SLOTS  # sent once
                heads = [gr.skip()] * SLOTS
                empty_metrics = [gr.skip()] * SLOTS
                pair = gr.skip(), gr.skip()
    except (GenerationInputError, KeyError) as exc:
        raise gr.Error(str(exc).strip("'\"")) from exc
    if state is None:
        raise gr.Error("Nothing was generated.")
    answers = {name: state.outputs[name].text for name in variants}
    yield _outputs(gr.skip(), "Scoring the answers (one pass: each under its variant and under the base)…",
                   gr.skip(), *pair, columns, heads,
                   [gr.update(value=streaming_html(answers[variants[i]], True)) if i < n else gr.skip()
                    for i in range(SLOTS)], empty_metrics)
    scored = services.score_answers(prompt, answers, system)
    last = {"prompt": prompt, "system": system or "", "variants": variants, "answers": answers}
    done = (f"Done: {n} answer{'s' if n > 1 else ''} "
            f"({'greedy' if not settings.do_sample else f'sampled, seed {settings.seed}'}). Vote below.")
    if blind:
        last.update(blind=True, labels=shown, scored=scored)
        yield _outputs(last, BLIND_NOTE + " " + done, plots.empty_figure("The metrics appear after your vote."),
                       *pair, [gr.skip()] * SLOTS, [gr.skip()] * SLOTS, [gr.skip()] * SLOTS, [gr.skip()] * SLOTS)
        return
    bodies = [gr.update(value=token_html(variants[i], scored[variants[i]])) if i < n else gr.skip()
              for i in range(SLOTS)]
    metrics = [gr.update(value=metrics_markdown(scored[variants[i]])) if i < n else gr.skip() for i in range(SLOTS)]
    yield _outputs(last, done, plots.compare_metrics_figure(metric_rows(scored)), *pair, [gr.skip()] * SLOTS,
                   [gr.skip()] * SLOTS, bodies, metrics)


def reveal(services: Services, last, left, right):
    """After a vote on a blind generation: the names, colours, metrics and chart, and the Left/Right lists in true
    names (keeping what was picked). Returns ``(last, status, plot, left, right, *heads, *bodies, *metrics)``;
    nothing changes when the generation was not blind or is already revealed."""
    keep = (gr.skip(),) * (5 + 3 * SLOTS)
    if not last or not last.get("blind") or last.get("revealed"):
        return keep
    variants, labels, scored = last["variants"], last["labels"], last["scored"]
    name_of = dict(zip(labels, variants))
    n = len(variants)
    heads = [gr.update(value=variant_header(variants[i], services.engine.adapters)) if i < n else gr.skip()
             for i in range(SLOTS)]
    bodies = [gr.update(value=token_html(variants[i], scored[variants[i]])) if i < n else gr.skip()
              for i in range(SLOTS)]
    metrics = [gr.update(value=metrics_markdown(scored[variants[i]])) if i < n else gr.skip() for i in range(SLOTS)]
    revealed = {**last, "blind": False, "revealed": True}
    who = ", ".join(f"{label} = {name}" for label, name in zip(labels, variants))
    return (revealed, f"Revealed: {html.escape(who)}.", plots.compare_metrics_figure(metric_rows(scored)),
            gr.update(choices=variants, value=name_of.get(left, left)),
            gr.update(choices=variants, value=name_of.get(right, right)), *heads, *bodies, *metrics)


def votes_view(services: Services, session_id):
    """(table, note, paired CSV path, unpaired CSV path) for the session's votes."""
    if not votes.valid_session_id(session_id):
        return votes.display_frame(services.votes_for("")), "No session yet.", None, None
    frame = services.votes_for(session_id)
    paths = services.vote_exports(session_id)
    return votes.display_frame(frame), votes.export_note(frame), str(paths["paired"]), str(paths["unpaired"])


def _record(services: Services, session_id, row) -> tuple:
    session_id = _check_session(session_id)
    try:
        stored = services.votes.add(session_id, row)
    except votes.VoteError as exc:
        raise gr.Error(str(exc)) from exc
    table, note, paired, unpaired = votes_view(services, session_id)
    label = votes.KIND_LABELS[stored["kind"]]
    what = (f"{stored['variant_a']} vs {stored['variant_b']}" if stored["variant_b"] else stored["variant_a"])
    gr.Info(f"Vote recorded: {label} ({what}).", duration=3)
    return table, f"Last vote: **{label}** · {html.escape(what)}. {note}", paired, unpaired


def vote_pair(services: Services, kind, session_id, last, left, right):
    """Record a left/right/tie/both-bad vote on the two chosen columns of the last generation."""
    if not last or not last.get("answers"):
        raise gr.Error("Generate answers first, then vote.")
    answers = last["answers"]
    if last.get("blind"):  # the lists hold "Model A", ...: the vote records the true names
        name_of = dict(zip(last["labels"], last["variants"]))
        left, right = name_of.get(left, left), name_of.get(right, right)
    if left not in answers or right not in answers:
        raise gr.Error("Pick the two columns to compare from the last generation.")
    if left == right:
        raise gr.Error("Left and right are the same column: pick two different variants.")
    return _record(services, session_id, {"kind": kind, "prompt": last["prompt"], "system": last.get("system", ""),
                                          "variant_a": left, "answer_a": answers[left], "variant_b": right,
                                          "answer_b": answers[right], **_blind_extra(last)})


def vote_thumb(services: Services, slot, up, session_id, last):
    """Record a thumbs up/down on the answer in column ``slot`` of the last generation."""
    if not last or not last.get("answers") or slot >= len(last.get("variants", [])):
        raise gr.Error("Generate answers first, then vote.")
    name = last["variants"][slot]
    return _record(services, session_id, {"kind": "thumbs_up" if up else "thumbs_down", "prompt": last["prompt"],
                                          "system": last.get("system", ""), "variant_a": name,
                                          "answer_a": last["answers"][name], **_blind_extra(last)})


def _blind_extra(last) -> dict[str, Any]:
    """Kept with the vote (its ``extra``): whether it was cast blind, so a leaderboard can count blind votes only,
    and the shared room and round it was cast in (``serving.rooms``), so the room's presenter can count it."""
    extra: dict[str, Any] = {"blind": True} if last.get("blind") else {}
    if last.get("room") and last.get("blind"):
        extra.update(room=last["room"], round=last.get("round"))
    return extra


LEADERBOARD_COLUMNS = {"model": "model", "votes": "votes", "wins": "wins", "losses": "losses", "ties": "ties",
                       "win_rate": "win rate", "strength": "strength", "low": "low", "high": "high",
                       "lc_strength": "length-controlled strength", "lc_win_rate": "LC win rate vs base"}


def leaderboard_view(services: Services, session_id, blind_only=False):
    """(note, strengths figure, win matrix figure, table) of the session's pairwise votes."""
    if not votes.valid_session_id(session_id):
        board = services.leaderboard("", bool(blind_only))
    else:
        board = services.leaderboard(session_id, bool(blind_only))
    return leaderboard_outputs(board, bool(blind_only))


def leaderboard_outputs(board, blind_only: bool, whose: str = "of this browser") -> tuple:
    """(note, strengths figure, win matrix figure, table) of a leaderboard (a session's or a room's)."""
    table = board.table.rename(columns=LEADERBOARD_COLUMNS)[list(LEADERBOARD_COLUMNS.values())].round(3)
    return (leaderboard_note(board, blind_only, whose), plots.strengths_figure(board.table, board.level),
            plots.win_matrix_figure(board.names, board.win_matrix, board.counts), table)


def leaderboard_note(board, blind_only: bool, whose: str = "of this browser") -> str:
    """What the leaderboard rests on, the small-sample warning, and what the length control says, in words."""
    which = "blind pairwise votes" if blind_only else "pairwise votes"
    lines = [f"From **{board.pairwise_votes}** {which} {whose}"
             + (f" ({board.ignored_votes} thumbs votes do not compare two answers and are left out)."
                if board.ignored_votes else ".")]
    if board.small_sample_warning:
        lines.append(f"⚠️ {html.escape(board.small_sample_warning)}")
    if board.pairwise_votes and math.isfinite(board.length_coef):
        leaning = ("longer answers won more often" if board.length_coef > 0 else "shorter answers won more often")
        lines.append(f"Length: {leaning} (coefficient {board.length_coef:+.2f} per unit of length difference). "
                     "The length-controlled strengths hold the answer lengths equal, so a model that won only by "
                     "being longer or shorter drops back.")
    lines.append("Strengths are Bradley-Terry on the logit scale (mean 0; a gap of 1 means winning 73% of the "
                 f"time), with {board.level:.0%} bootstrap intervals; ties and both-bad count half.")
    return "\n\n".join(lines)


def undo_vote(services: Services, session_id):
    session_id = _check_session(session_id)
    removed = services.votes.delete_last(session_id)
    table, note, paired, unpaired = votes_view(services, session_id)
    return table, ("Removed your last vote. " if removed else "No vote to remove. ") + note, paired, unpaired


def refresh_variants(services: Services, selected):
    names = services.variant_names()
    kept = [v for v in (selected or []) if v in names] or services.default_variants()
    return gr.update(choices=names, value=kept)


def pick_example(example):
    return gr.update(value=example) if example else gr.skip()


# --------------------------------------------------------------------------------------------------------------------
# Layout


@dataclass
class CompareTab:
    variants: gr.CheckboxGroup
    send_button: gr.Button
    votes_table: gr.Dataframe
    vote_note: gr.Markdown
    download_paired: gr.DownloadButton
    download_unpaired: gr.DownloadButton
    prompt: gr.Textbox
    generate_button: gr.Button
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def votes_outputs(self) -> list:
        return [self.votes_table, self.vote_note, self.download_paired, self.download_unpaired]


@dataclass
class AnswerSlots:
    """The answer columns, one per variant slot (``config.APP.compare_slots``), hidden until used."""

    columns: list[gr.Column]
    heads: list[gr.HTML]
    bodies: list[gr.HTML]
    metrics: list[gr.Markdown]
    thumbs: list[tuple[gr.Button, gr.Button]]


def _request_controls(services: Services) -> dict[str, gr.components.Component]:
    """The prompt, the example prompts, the variants and the decoding settings, Generate and Stop."""
    gen, ranges = config.GENERATION, config.SLIDERS
    c: dict[str, gr.components.Component] = {}
    with gr.Row(equal_height=False):
        with gr.Column(scale=5):
            c["prompt"] = gr.Textbox(label="Prompt", lines=2, max_lines=8,
                                     placeholder="Ask something, or pick an example", elem_id="pg-prompt")
            c["example"] = gr.Dropdown(choices=services.example_prompts, value=None, label="Example prompts "
                                       "(held-out demo set: never trained on)", elem_id="pg-example")
        with gr.Column(scale=4):
            c["variants"] = gr.CheckboxGroup(choices=services.variant_names(), value=services.default_variants(),
                                             label="Variants (side by side, one batched pass)", elem_id="pg-variants")
            with gr.Accordion("Decoding and system prompt", open=False):
                c["mode"] = gr.Radio(list(MODES), value="sampled" if gen.do_sample else "greedy", label="Decoding",
                                     info="greedy: reproducible; sampled: uses temperature, top-p and seed")
                with gr.Row():
                    c["temperature"] = gr.Slider(ranges.temperature.low, ranges.temperature.high,
                                                 value=gen.temperature, step=ranges.temperature.step,
                                                 label="Temperature")
                    c["top_p"] = gr.Slider(ranges.top_p.low, ranges.top_p.high, value=gen.top_p,
                                           step=ranges.top_p.step, label="Top-p")
                with gr.Row():
                    c["max_new"] = gr.Slider(1, gen.max_new_tokens_limit, value=gen.max_new_tokens, step=1,
                                             label="Max new tokens")
                    c["seed"] = gr.Number(value=gen.seed, precision=0, label="Seed")
                c["system"] = gr.Textbox(label="System prompt (optional)", lines=2, value=gen.system_prompt,
                                         placeholder="Empty: the chat template's default")
            c["blind"] = gr.Checkbox(False, label="Blind vote", elem_id="pg-blind",
                                     info="show the answers as Model A, B, ... and reveal the names after the vote")
            with gr.Row():
                c["generate"] = gr.Button("Generate", variant="primary", elem_id="pg-generate", scale=2)
                c["stop"] = gr.Button("Stop", variant="secondary", scale=1)
    return c


def _answer_slots() -> AnswerSlots:
    slots = AnswerSlots([], [], [], [], [])
    for row_start in range(0, SLOTS, PER_ROW):
        with gr.Row(equal_height=False):
            for i in range(row_start, min(SLOTS, row_start + PER_ROW)):
                with gr.Column(visible=False, min_width=260, elem_classes=["pg-slot"]) as column:
                    slots.heads.append(gr.HTML(""))
                    slots.bodies.append(gr.HTML("", elem_id=f"pg-answer-{i}"))
                    slots.metrics.append(gr.Markdown("", elem_classes=["pg-metrics"]))
                    with gr.Row():
                        up = gr.Button("👍 Good", size="sm", min_width=40, elem_classes=["pg-vote"],
                                       elem_id=f"pg-up-{i}")
                        down = gr.Button("👎 Bad", size="sm", min_width=40, elem_classes=["pg-vote"],
                                         elem_id=f"pg-down-{i}")
                    slots.thumbs.append((up, down))
                slots.columns.append(column)
    return slots


def _vote_controls(services: Services) -> dict[str, gr.components.Component]:
    """The pairwise vote buttons, the note, the downloads, undo, send-to-Fine-tune and the session's votes."""
    gr.Markdown("### Vote: which answer is better?\nPick two columns, then vote. 👍 Good / 👎 Bad under an "
                "answer rate it alone. Votes are saved for this browser and become training data on the Fine-tune tab.")
    v: dict[str, gr.components.Component] = {}
    with gr.Row():
        v["left"] = gr.Dropdown(choices=[], label="Left", scale=1, elem_id="pg-left")
        v["right"] = gr.Dropdown(choices=[], label="Right", scale=1, elem_id="pg-right")
        for kind, text in VOTE_BUTTONS:
            v[kind] = gr.Button(text, scale=1, elem_id=f"pg-vote-{kind}")
    v["note"] = gr.Markdown("", elem_classes=["pg-note"], elem_id="pg-vote-note")
    with gr.Row():
        v["download_paired"] = gr.DownloadButton("Download pairs CSV (DPO)", value=None, size="md")
        v["download_unpaired"] = gr.DownloadButton("Download labelled CSV (KTO)", value=None, size="md")
        v["undo"] = gr.Button("Undo last vote", size="md")
        v["send"] = gr.Button("Send votes to Fine-tune ▶", variant="primary", size="md", elem_id="pg-send")
    v["table"] = gr.Dataframe(votes.display_frame(services.votes_for("")), label="Your votes (this browser)",
                              interactive=False, wrap=True, max_height=300, elem_id="pg-votes")
    with gr.Accordion("Leaderboard of your votes", open=False, elem_id="pg-leaderboard"):
        v["blind_only"] = gr.Checkbox(False, label="Blind votes only", elem_id="pg-board-blind")
        v["board_note"] = gr.Markdown("", elem_id="pg-board-note")
        with gr.Row(equal_height=False):
            v["board_strengths"] = gr.Plot(plots.strengths_figure([]), label="Strengths", elem_id="pg-board-plot")
            v["board_matrix"] = gr.Plot(plots.win_matrix_figure([], [], []), label="Win matrix",
                                        elem_id="pg-board-matrix")
        v["board_table"] = gr.Dataframe(None, label="Per model", interactive=False, elem_id="pg-board-table")
    return v


def build_compare_tab(services: Services, session: gr.BrowserState) -> CompareTab:
    c = _request_controls(services)
    with gr.Row(equal_height=True):
        status = gr.Markdown("", elem_classes=["pg-note"], elem_id="pg-status")
        gr.HTML(legend_html(), elem_classes=["pg-legend-box"])
    slots = _answer_slots()
    plot = gr.Plot(plots.compare_metrics_figure([]), label="Metrics by variant", elem_id="pg-compare-plot")
    v = _vote_controls(services)

    last = gr.State(None)
    outputs = [last, status, plot, v["left"], v["right"], *slots.columns, *slots.heads, *slots.bodies, *slots.metrics]
    inputs = [c["prompt"], c["system"], c["variants"], c["mode"], c["temperature"], c["top_p"], c["max_new"],
              c["seed"], c["blind"]]
    generate = partial(generate_answers, services)
    gen_event = c["generate"].click(generate, inputs, outputs, api_name=False, concurrency_id="model",
                                    concurrency_limit=config.APP.generation_concurrency, show_progress="minimal")
    submit_event = c["prompt"].submit(generate, inputs, outputs, api_name=False, concurrency_id="model",
                                      concurrency_limit=config.APP.generation_concurrency, show_progress="minimal")
    c["stop"].click(lambda: "Stopped. Partial answers are not scored and cannot be voted on; generate again.",
                    None, [status], cancels=[gen_event, submit_event], api_name=False, queue=False)
    c["example"].change(pick_example, [c["example"]], [c["prompt"]], api_name=False, queue=False)

    vote_outputs = [v["table"], v["note"], v["download_paired"], v["download_unpaired"]]
    # a vote that was recorded (.success) reveals a blind generation, then redraws the leaderboard
    reveal_outputs = [last, status, plot, v["left"], v["right"], *slots.heads, *slots.bodies, *slots.metrics]
    board_outputs = [v["board_note"], v["board_strengths"], v["board_matrix"], v["board_table"]]
    show, board = partial(reveal, services), partial(leaderboard_view, services)
    for kind, _text in VOTE_BUTTONS:
        (v[kind].click(partial(vote_pair, services, kind), [session, last, v["left"], v["right"]], vote_outputs,
                       api_name=False, concurrency_limit=None)
         .success(show, [last, v["left"], v["right"]], reveal_outputs, api_name=False, concurrency_limit=None)
         .then(board, [session, v["blind_only"]], board_outputs, api_name=False, concurrency_limit=None))
    for i, (up, down) in enumerate(slots.thumbs):
        for button, up_vote in ((up, True), (down, False)):
            (button.click(partial(vote_thumb, services, i, up_vote), [session, last], vote_outputs, api_name=False,
                          concurrency_limit=None)
             .success(show, [last, v["left"], v["right"]], reveal_outputs, api_name=False, concurrency_limit=None)
             .then(board, [session, v["blind_only"]], board_outputs, api_name=False, concurrency_limit=None))
    v["blind_only"].change(board, [session, v["blind_only"]], board_outputs, api_name=False, concurrency_limit=None)
    v["undo"].click(partial(undo_vote, services), [session], vote_outputs, api_name=False,
                    concurrency_limit=None).success(board, [session, v["blind_only"]], board_outputs, api_name=False,
                                                    concurrency_limit=None)

    return CompareTab(c["variants"], v["send"], v["table"], v["note"], v["download_paired"], v["download_unpaired"],
                      c["prompt"], c["generate"], {"status": status, "plot": plot, "bodies": slots.bodies,
                                                   "board_inputs": [session, v["blind_only"]],
                                                   "board_outputs": board_outputs, "last": last,
                                                   "answer_outputs": outputs, "blind": c["blind"],
                                                   "generated": [gen_event, submit_event]})
