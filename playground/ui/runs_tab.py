"""Runs tab: two or more adapters side by side (shipped, trained here, or uploaded): their training curves overlaid,
their settings with the differences marked, their held-out metrics and answer measures, and their answers to one
prompt. Everything but the answers comes from each adapter's ``meta.json`` (``analysis.runs``). Below them, one
adapter merged into the base as a full checkpoint to download (``Services.merged_checkpoint``)."""

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
from playground.training.merge import estimated_bytes

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
                results_table({}, services.engine.base_fingerprint))
    return (plots.runs_curves_figure(histories(metas), metric or "loss"), settings_html(settings_table(metas)),
            results_table(metas, services.engine.base_fingerprint).round(3))


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


def merged_note(services: Services) -> str:
    """What the merged download is and about how big, before it is built."""
    weights = str(services.engine.device.weight_dtype).replace("torch.", "")
    size = estimated_bytes(services.engine.model) / 2**20
    return (f"**Merged checkpoint**: one adapter folded into the base `{html.escape(services.engine.base_id)}` "
            "(PEFT's merge_and_unload), saved as a full safetensors checkpoint with the tokenizer and generation "
            "config, for serving with engines that do not load LoRA adapters (vLLM, TGI, ...). It is a whole copy of "
            f"the base: about {size:,.0f} MiB ({weights} weights), built in a few seconds.  \n"
            "**Export its run to TRL + accelerate**: the data the adapter was trained on and a `train.py` with its "
            "settings, to run the same fine-tune on GPUs.")


def merged_download(services: Services, name):
    """(the zip for the gr.File, a note with its size) of adapter ``name`` merged into the base."""
    if not name or name not in services.engine.adapters:
        raise gr.Error("Choose an attached adapter to merge into the base.")
    try:
        path = services.merged_checkpoint(name)
    except ServiceInputError as exc:
        raise gr.Error(str(exc)) from exc
    size = path.stat().st_size / 2**20
    note = (f"`{html.escape(path.name)}`: **{html.escape(name)}** merged into `{html.escape(services.engine.base_id)}`"
            f", {size:,.0f} MiB. Unzip it and load the folder with `AutoModelForCausalLM.from_pretrained`.")
    return gr.update(value=str(path), visible=True), note


def trl_download(services: Services, name):
    """(the zip for the gr.File, a note) of the run adapter ``name`` was trained by, as a TRL + accelerate project."""
    if not name or name not in services.engine.adapters:
        raise gr.Error("Choose an attached adapter to export its run.")
    try:
        path = services.export_adapter_trl(name)
    except ServiceInputError as exc:
        raise gr.Error(str(exc)) from exc
    note = (f"`{html.escape(path.name)}`: the run **{html.escape(name)}** was trained by (its data in TRL's "
            "conversational format, `train.py` with the same settings, an accelerate config and a README with the "
            "commands).")
    return gr.update(value=str(path), visible=True), note


def merged_choices(services: Services, current):
    """The adapter dropdown's choices now (another browser may have trained or uploaded one)."""
    names = list(services.engine.adapters)
    return gr.update(choices=names, value=current if current in names else (names[0] if names else None))


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
    with gr.Column(elem_id="pg-runs-merged"):
        merged_info = gr.Markdown(merged_note(services), elem_id="pg-runs-merged-note")
        with gr.Row():
            merged_pick = gr.Dropdown(names, value=names[0] if names else None, label="Adapter",
                                      elem_id="pg-runs-merged-pick", scale=3)
            merged_button = gr.Button("Download merged checkpoint", elem_id="pg-runs-merged-button", scale=1)
            trl_button = gr.Button("Export its run to TRL + accelerate", elem_id="pg-runs-trl-button", scale=1)
        merged_file = gr.File(label="Merged checkpoint (.zip)", interactive=False, visible=False,
                              elem_id="pg-runs-merged-file")
        trl_file = gr.File(label="TRL + accelerate project (.zip)", interactive=False, visible=False,
                           elem_id="pg-runs-trl-file")
    show = partial(compare_runs, services)
    gr.on([picked.change, metric.change], show, [picked, metric], [curves, table, results], api_name=False,
          concurrency_limit=None)
    answer.click(partial(answer_prompt, services), [picked, prompt, max_new], [answers], api_name=False,
                 concurrency_id="model", concurrency_limit=config.APP.generation_concurrency)

    merged_pick.focus(partial(merged_choices, services), [merged_pick], [merged_pick], api_name=False, queue=False)
    merged_button.click(partial(merged_download, services), [merged_pick], [merged_file, merged_info],
                        api_name=False, concurrency_id="merge", concurrency_limit=1)
    trl_button.click(partial(trl_download, services), [merged_pick], [trl_file, merged_info], api_name=False,
                     concurrency_limit=None)

    def refresh(selected):
        current = list(services.engine.adapters)
        return gr.update(choices=current, value=[n for n in (selected or []) if n in current] or current[:4])

    return picked, (refresh, show, [picked, metric], [curves, table, results])
