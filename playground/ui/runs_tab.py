"""Runs tab: two or more adapters side by side (shipped, trained here, or uploaded): their training curves overlaid,
their settings with the differences marked, their held-out metrics and answer measures, and their answers to one
prompt. Everything but the answers comes from each adapter's ``meta.json`` (``analysis.runs``)."""

from __future__ import annotations

import html
from functools import partial
from typing import Any

import gradio as gr
import pandas as pd

from playground import config, plots
from playground.analysis.runs import histories, results_table, settings_table
from playground.common.numbers import format_number
from playground.engine.generation import GenerationInputError
from playground.serving.services import Services
from playground.serving.settings import ServiceInputError, generation_settings

CURVE_METRICS = ("loss", "accuracy", "margin", "sft_loss", "chosen_nll", "rewards_chosen", "rewards_rejected",
                 "grad_norm", "learning_rate", "z0")


def _metas(services: Services, names) -> dict[str, dict[str, Any]]:
    adapters = services.engine.adapters
    return {name: dict(adapters[name].meta or {}) for name in (names or []) if name in adapters}


def settings_html(frame: pd.DataFrame) -> str:
    """The settings table as HTML, the rows where the runs differ marked (and listed first)."""
    if frame.empty:
        return '<div class="pg-note">Choose two or more adapters to compare their runs.</div>'
    names = [c for c in frame.columns if c not in ("setting", "differs")]
    ordered = pd.concat([frame[frame["differs"]], frame[~frame["differs"]]])
    head = "".join(f"<th>{html.escape(n)}</th>" for n in names)
    rows = []
    for record in ordered.to_dict("records"):
        mark = ' style="background:#FFF3CD;font-weight:600"' if record["differs"] else ""
        cells = "".join(f"<td>{html.escape(_shown(record[n]))}</td>" for n in names)
        rows.append(f"<tr{mark}><th>{html.escape(str(record['setting']))}</th>{cells}</tr>")
    differing = int(frame["differs"].sum())
    note = (f"{differing} setting{'s' if differing != 1 else ''} differ (highlighted, listed first)."
            if len(names) > 1 else "One run: nothing to compare yet.")
    return (f'<div class="pg-note">{note}</div><table class="pg-runs" id="pg-runs-settings"><thead><tr><th>setting'
            f"</th>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table>")


def _shown(value: Any) -> str:
    if value is None or (isinstance(value, float) and value != value):
        return "—"
    if isinstance(value, float):
        return format_number(value, 4)
    return str(value)


def compare_runs(services: Services, names, metric):
    """(curves figure, settings HTML, results table) of the chosen adapters."""
    metas = _metas(services, names)
    if not metas:
        return (plots.empty_figure("Choose the adapters to compare."), settings_html(pd.DataFrame()),
                results_table({}))
    return (plots.runs_curves_figure(histories(metas), metric or "loss"), settings_html(settings_table(metas)),
            results_table(metas).round(3))


def answer_prompt(services: Services, names, prompt, max_new_tokens):
    """The chosen adapters' greedy answers to one prompt (and the base's), in one batched pass."""
    prompt = (prompt or "").strip()
    if not prompt:
        raise gr.Error("Type a prompt to see each run's answer.")
    variants = [config.BASE_VARIANT] + [n for n in (names or []) if n in services.engine.adapters]
    try:
        settings = generation_settings({"mode": "greedy", "max_new_tokens": max_new_tokens})
        result = services.generate_and_score(prompt, variants, settings)
    except (ServiceInputError, GenerationInputError, KeyError) as exc:
        raise gr.Error(str(exc).strip("'\"")) from exc
    return pd.DataFrame([{"variant": name, "answer": row["text"], "tokens": row["length"],
                          "implied reward": round(float(row["implied_reward"]), 3)} for name, row in result.items()])


def build_runs_tab(services: Services) -> tuple[gr.CheckboxGroup, Any]:
    """The tab's layout and events; returns the adapter picker and a function that refreshes its choices."""
    names = list(services.engine.adapters)
    gr.Markdown("Choose two or more adapters: their training curves, settings (differences highlighted), held-out "
                "metrics and answers side by side. Shipped, trained here and uploaded adapters all count. DPO's and "
                "KTO's losses are different objectives: compare runs of the two methods by accuracy, margin or the "
                "held-out metrics.")
    with gr.Row(equal_height=False):
        picked = gr.CheckboxGroup(names, value=names[:4], label="Runs (adapters)", elem_id="pg-runs-pick", scale=3)
        metric = gr.Dropdown(list(CURVE_METRICS), value="loss", label="Curve", elem_id="pg-runs-metric", scale=1)
    curves = gr.Plot(label="Training curves", elem_id="pg-runs-curves")
    results = gr.Dataframe(None, label="Held-out metrics and answer measures (from each run's record)",
                           interactive=False, wrap=True, elem_id="pg-runs-results")
    with gr.Accordion("Settings", open=True):
        table = gr.HTML(settings_html(pd.DataFrame()), elem_id="pg-runs-settings-box")
    with gr.Row():
        prompt = gr.Textbox(label="One prompt, answered by each run (greedy)", scale=4, elem_id="pg-runs-prompt")
        max_new = gr.Slider(8, config.GENERATION.max_new_tokens_limit, value=config.GENERATION.max_new_tokens,
                            step=1, label="Max new tokens", scale=1)
        answer = gr.Button("Answer", variant="primary", scale=1, elem_id="pg-runs-answer")
    answers = gr.Dataframe(None, label="Answers", interactive=False, wrap=True, elem_id="pg-runs-answers")
    show = partial(compare_runs, services)
    gr.on([picked.change, metric.change], show, [picked, metric], [curves, table, results], api_name=False,
          concurrency_limit=None)
    answer.click(partial(answer_prompt, services), [picked, prompt, max_new], [answers], api_name=False,
                 concurrency_id="model", concurrency_limit=config.APP.generation_concurrency)

    def refresh(selected):
        current = list(services.engine.adapters)
        return gr.update(choices=current, value=[n for n in (selected or []) if n in current] or current[:4])

    return picked, (refresh, show, [picked, metric], [curves, table, results])
