"""Fine-tune tab: feedback in (upload, this browser's votes, or an example), a DPO or KTO run out, watched live.

Handlers are module functions taking ``services`` first, so tests call them directly. The tab keeps no DataFrame in
session state, only the path of the validated file and its counts; Start reads the file again through the same
validation. The running job is polled by a ``gr.Timer``; its id lives in the browser (``gr.BrowserState``), so a page
refresh re-attaches to it.
"""

from __future__ import annotations

import html
import json
import math
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import gradio as gr
import pandas as pd

from playground import config, feedback, plots
from playground.common.numbers import TIE_TEXT, finite_or_none, format_number
from playground.engine.answers import answer_rows
from playground.feedback import frame_for_method, label_counts, votes
from playground.objectives.kto import kto_weight_advice
from playground.serving import hub
from playground.serving.services import Services
from playground.serving.settings import ServiceInputError, train_config_from
from playground.training.data import TrainingInputError, count_steps
from playground.training.jobs import AdapterNameError, QueueFull
from playground.training.probes import answers_degeneration, probe_advice

SOURCE_UPLOAD, SOURCE_VOTES, SOURCE_EXAMPLE = "Upload a file", "My votes (this browser)", "Example file"
SOURCES = (SOURCE_UPLOAD, SOURCE_VOTES, SOURCE_EXAMPLE)
METHODS = {"DPO (pairs)": "dpo", "KTO (labelled answers)": "kto", "SimPO (pairs, no reference)": "simpo",
           "ORPO (pairs, no reference)": "orpo", "APO-zero (pairs)": "apo_zero", "APO-down (pairs)": "apo_down",
           "BCO (labelled answers)": "bco"}
METHOD_INFO = ("DPO and KTO are the two this playground is about; SimPO and ORPO need no reference model (no "
               "reference pass: cheaper steps); APO anchors each answer to the reference; BCO classifies single "
               "labelled answers against a running reward baseline. Learn explains each.")
METHOD_LABEL = {v: k for k, v in METHODS.items()}
BASE_ACCURACY_NOTE = (
    "**How these are measured.** For each held-out pair (prompt, chosen, rejected), the adapter's implied reward "
    "β·log π/π<sub>ref</sub> of each answer is computed against the base (π<sub>ref</sub> = the base with the adapter "
    "off). *Preference accuracy* is the share of pairs whose chosen answer gets the higher reward; the *margin* is "
    "the mean of chosen minus rejected reward. For the base itself π = π<sub>ref</sub>, so every reward is exactly 0 "
    "and every pair is a tie: it prefers nothing, which is drawn as 0.5 (chance, a coin flip) with a margin of 0.")


# --------------------------------------------------------------------------------------------------------------------
# Formatting (pure)


def report_markdown(report, extra_note: str = "") -> str:
    """The validation report: a headline (can / cannot be trained on), then the details in a plain-text block (so
    nothing from the file is rendered as Markdown)."""
    if report is None:
        return "Choose a file, your votes, or an example to see its validation report."
    # the headline is the report's own verdict (the words the CLI prints and the API returns); Start follows it
    verdict = html.escape(report.verdict())
    if report.trainable:
        head = f"**✅ Ready to train:** {report.format} data {verdict}"
    elif report.intact_rows_available:
        head = f"**⛔ Looks cut off or corrupt:** this file {verdict}"
    else:
        head = f"**⛔ Cannot train on this yet:** this file {verdict}"
    details = report.summary().replace("```", "'''")
    note = f"\n\n{extra_note}" if extra_note else ""
    return f"{head}{note}\n\n```text\n{details}\n```"


PREVIEW_CELL_CHARS = 160


def preview_widths(frame: pd.DataFrame) -> list[str]:
    """Column widths that keep every column of the preview on screen: narrow row/label, the texts share the rest."""
    narrow = {"row": 8, "label": 10}
    fixed = sum(narrow.get(c, 0) for c in frame.columns)
    wide = [c for c in frame.columns if c not in narrow] or ["x"]
    share = max(10, (100 - fixed) // len(wide))
    return [f"{narrow.get(c, share)}%" for c in frame.columns]


def preview_frame(report) -> pd.DataFrame:
    if report is None or report.data is None or report.data.empty:
        return pd.DataFrame(columns=["prompt", "chosen", "rejected"])
    shown = report.data.head(config.APP.preview_rows).copy()
    for column in shown.columns:
        shown[column] = shown[column].map(
            lambda v: json.dumps(v, ensure_ascii=False) if isinstance(v, (list, dict)) else
            ("true" if v is True else "false" if v is False else
             (v[:PREVIEW_CELL_CHARS] + "…" if isinstance(v, str) and len(v) > PREVIEW_CELL_CHARS else v)))
    cols = ["row", *[c for c in shown.columns if c != "row"]] if "row" in shown.columns else list(shown.columns)
    return shown[cols]


def plan_markdown(method: str, data: dict | None, steps, epochs, batch_size, lam_d, lam_u) -> str:
    """The planned number of steps and, for KTO, the weight-band hint of kto.kto_weight_advice."""
    if not data or not data.get("trainable"):
        return "Load usable data to see the plan."
    rows = data.get("rows_for", {}).get(method, 0)
    lines = []
    try:
        cfg = train_config_from({"method": method, "steps": steps, "epochs": epochs, "batch_size": batch_size})
        total = count_steps(max(rows, 1), cfg)
        lines.append(f"**Plan:** {rows} {'pairs' if method == 'dpo' else 'labelled answers'} for "
                     f"{method.upper()}, batch {cfg.batch_size} → **{total} optimizer steps**"
                     + (" (steps set)." if cfg.steps else f" ({cfg.epochs:g} epochs)."))
    except ServiceInputError as exc:
        lines.append(f"⚠️ {exc}")
    if data.get("note_for", {}).get(method):
        lines.append(data["note_for"][method])
    if method == "kto":
        n_d, n_u = data.get("kto_counts", [0, 0])
        try:
            advice = kto_weight_advice(int(n_d), int(n_u), float(lam_d), float(lam_u))
            mark = "✅" if advice.in_band else "⚠️"
            lines.append(f"{mark} **KTO weights:** {n_d} desirable, {n_u} undesirable. "
                         f"{html.escape(advice.message)}")
        except (TypeError, ValueError):
            lines.append("⚠️ lambda_D and lambda_U must be positive numbers.")
    return "\n\n".join(lines)


def _fmt_seconds(seconds) -> str:
    if seconds is None or not math.isfinite(seconds):
        return "…"
    seconds = int(round(seconds))
    return f"{seconds // 60}:{seconds % 60:02d} min" if seconds >= 60 else f"{seconds} s"


def progress_html(view: dict | None) -> str:
    if not view:
        return '<div class="pg-progress"><div style="width:0%"></div></div>'
    share = 100.0 * (1.0 if view["status"] == "done" else view["progress"])
    label = f"Step {view['steps_done']} / {view['total_steps']}"
    if view["status"] == "running" and view.get("eta_s") is not None:
        label += f" · ETA {_fmt_seconds(view['eta_s'])}"
    if view["status"] == "queued":
        label = f"Waiting in the queue: position {view['position']} (1 = next)"
    return (f'<div class="pg-progress" role="progressbar" aria-valuenow="{share:.0f}" aria-valuemin="0" '
            f'aria-valuemax="100"><div style="width:{share:.1f}%"></div></div>'
            f'<div class="pg-progress-label">{html.escape(label)} · {html.escape(view["phase"] or "")}</div>')


JOB_STATES = {"queued": "⏳ queued", "running": "🏃 running", "done": "✅ done", "failed": "⛔ failed",
              "cancelled": "✋ cancelled", "interrupted": "⚠️ interrupted"}


def job_status_line(view: dict, head: str, detail: str = "") -> str:
    """One line on a queued job (a training, or the Learn tab's claims re-run): ``head`` (Markdown), its state,
    ``detail``, its place in the queue while it waits, and its error."""
    text = f"{head} · {JOB_STATES.get(view['status'], view['status'])}" + (f" · {detail}" if detail else "")
    if view["status"] == "queued" and view["position"] > 0:
        text += f" · position {view['position']} in the queue"
    if view.get("error"):
        text += f"\n\n`{html.escape(view['error'])}`"
    return text


def status_markdown(view: dict | None) -> str:
    if not view:
        return "No training yet."
    return job_status_line(view, f"**{html.escape(view['name'])}** ({view['method'].upper()})",
                           html.escape(view["phase"] or ""))


def result_markdown(view: dict | None) -> str:
    if not view or view["status"] not in ("done", "failed", "cancelled", "interrupted"):
        return ""
    if view["status"] != "done":
        return {"failed": "### ⛔ The training failed\nNothing was saved. " + html.escape(view.get("error") or ""),
                "cancelled": f"### ✋ Cancelled after {view['steps_done']} steps\nNothing was saved.",
                "interrupted": "### ⚠️ Interrupted by a server restart\nThe partial curves are kept; no adapter "
                               "was saved. **Run this training again** queues it on the same rows with the same "
                               "settings."}[view["status"]]
    held = view.get("heldout_metrics") or {}
    lines = [f"### ✅ {html.escape(view['name'])} is ready",
             "It is attached to the model: tick it on the **Compare** tab (and pick it on **Inspect**)."]
    stop = view.get("stop")
    if stop:
        lines.append(f"⏹ **Stopped early** after {view['steps_done']} of {view['total_steps']} steps: "
                     f"{html.escape(stop.get('reason', ''))}. The adapter of step {stop.get('best_step')} was kept.")
    elif view.get("kept_step"):
        lines.append(f"The held-out loss was lowest at step {view['kept_step']} of {view['steps_done']}, so that "
                     "step's adapter was kept.")
    if held:
        source = html.escape(view.get("heldout_source") or f"{held.get('pairs')} held-out pairs")
        lines.append(f"Measured on {source}: preference accuracy **{held['preference_accuracy']:.3f}** (base: "
                     f"{TIE_TEXT}), mean implied-reward margin **{held['mean_margin']:+.3f}** (base 0), held-out DPO "
                     f"loss {held.get('dpo_loss', float('nan')):.3f} (base ln 2 = 0.693).")
    else:
        lines.append("No held-out split was kept, so there are no held-out metrics; judge the adapter by its answers "
                     "(the probe answers above, and Compare).")
    lines.append(answers_verdict(view.get("answers_eval") or {}))
    lines.append(time_line(view.get("seconds") or {}))
    lines.append(BASE_ACCURACY_NOTE)
    return "\n\n".join(line for line in lines if line)


def time_line(seconds: dict) -> str:
    """Where the run's time went, so the cost of the probes and the held-out checks is in plain sight."""
    if not seconds.get("total"):
        return ""
    f = format_number
    return (f"⏱ {f(seconds['total'], 3)} s in all: reference log-probs {f(seconds.get('reference'), 2)} s, optimizer "
            f"steps {f(seconds.get('steps'), 3)} s, held-out checks {f(seconds.get('heldout_evaluations'), 2)} s, "
            f"probe answers {f(seconds.get('probes'), 2)} s, base vs adapter answers "
            f"{f(seconds.get('after_run_report'), 2)} s.")


def answers_verdict(report: dict) -> str:
    """One sentence on the base vs adapter answers: repetition, fluency and ROUGE-L, and whether that is fine."""
    summaries = report.get("summaries") or {}
    base, tuned = summaries.get(config.BASE_VARIANT), next((v for k, v in summaries.items()
                                                            if k != config.BASE_VARIANT), None)
    if not base or not tuned:
        return ""
    f = format_number
    text = (f"On {tuned['answers']} held-out prompts the adapter's greedy answers have "
            f"{f(tuned['mean_words'], 3)} words on average (base {f(base['mean_words'], 3)}), repeat a phrase in "
            f"{f(100 * tuned['share_repetitive'], 2)}% of answers (base {f(100 * base['share_repetitive'], 2)}%), "
            f"read at fluency {f(tuned['mean_fluency'], 3)} (base {f(base['mean_fluency'], 3)}; the base model's "
            f"mean token log-prob) and reach ROUGE-L {f(tuned['mean_rouge_l'], 2)} to the chosen answers (base "
            f"{f(base['mean_rouge_l'], 2)}).")
    why = answers_degeneration(base, tuned)
    return (f"⚠️ {text} The answers degenerated ({why}): train with fewer steps, a lower learning rate or a larger "
            "SFT weight.") if why else ("✅ " + text)


def before_after(view: dict | None):
    held = (view or {}).get("heldout_metrics") or {}
    if not held:
        return plots.empty_figure("Held-out metrics appear here when a training finishes.")
    return plots.before_after_figure(
        {"accuracy": 0.5, "margin": 0.0, "label": "base (no adapter)", "variant": "base", "tied": True},
        {"accuracy": held.get("preference_accuracy"), "margin": held.get("mean_margin"), "label": view["name"],
         "variant": view["name"]})


ANSWER_COLUMNS = {"prompt": "prompt", "variant": "variant", "answer": "answer", "words": "words",
                  "repetitive": "repeats a phrase", "distinct_2": "distinct-2", "fluency": "fluency (base log-prob)",
                  "rouge_l": "ROUGE-L to chosen"}


def answers_frame(report: dict | None) -> pd.DataFrame:
    """The before/after table: base and adapter answers to the held-out prompts, with their measures."""
    rows = [{**row, "repetitive": "yes" if row["repetitive"] else "no",
             **{k: _rounded(row[k]) for k in ("distinct_2", "fluency", "rouge_l")}} for row in answer_rows(report)]
    return pd.DataFrame(rows, columns=list(ANSWER_COLUMNS)).rename(columns=ANSWER_COLUMNS)


def _rounded(value, digits: int = 3):
    number = finite_or_none(value)
    return None if number is None else round(number, digits)


def probe_timeline_html(probes: list[dict]) -> str:
    """The probe answers as a timeline: one row per probe step, one column per prompt, each answer with its meter."""
    if not probes:
        return ('<div class="pg-note" id="pg-ft-probes-empty">Probe answers appear here as the run goes: the adapter '
                "answers a few held-out prompts at the start and about every quarter of the run.</div>")
    prompts = {p["prompt_index"]: p["prompt"] for p in probes}
    steps = sorted({p["step"] for p in probes})
    by_key = {(p["step"], p["prompt_index"]): p for p in probes}
    head = "".join(f"<th>{html.escape(prompts[i])}</th>" for i in sorted(prompts))
    body = []
    for step in steps:
        cells = []
        for i in sorted(prompts):
            answer = by_key.get((step, i))
            cells.append(_probe_cell(answer) if answer else "<td></td>")
        body.append(f"<tr><th>{'start' if step == 0 else f'step {step}'}</th>{''.join(cells)}</tr>")
    return (f'<table class="pg-probes" id="pg-ft-probes-table"><thead><tr><th></th>{head}</tr></thead>'
            f"<tbody>{''.join(body)}</tbody></table>")


def _probe_cell(answer: dict) -> str:
    flags = []
    if answer.get("repetitive"):
        flags.append('<span class="pg-flag pg-bad">repeats a phrase</span>')
    fluency = finite_or_none(answer.get("fluency"))
    why = answer.get("degenerate") or ""
    flags.append(f'<span class="pg-flag{" pg-bad" if why and why != "repeats a phrase" else ""}">'
                 f"fluency {format_number(fluency, 3)}</span>")
    flags.append(f'<span class="pg-flag">distinct-2 {format_number(answer.get("distinct_2"), 2)}</span>')
    text = answer.get("text") or ""
    shown = html.escape(text if len(text) <= 240 else text[:239] + "…") or "<i>(empty)</i>"
    css = "pg-probe pg-degenerate" if answer.get("degenerate") else "pg-probe"
    return f'<td class="{css}"><div class="pg-probe-text">{shown}</div><div>{"".join(flags)}</div></td>'


# --------------------------------------------------------------------------------------------------------------------
# Handlers: data


def _data_state(report, path: Path, label: str) -> dict[str, Any]:
    state: dict[str, Any] = {"path": str(path), "label": label, "format": report.format,
                             "trainable": bool(report.trainable), "rows_for": {}, "note_for": {},
                             "kto_counts": [0, 0], "intact_rows": bool(report.intact_rows)}
    if report.trainable:
        for method in config.METHOD_FORMATS:
            try:
                rows, note = frame_for_method(report.data, report.format, method)
            except ValueError as exc:
                rows, note = report.data.iloc[0:0], str(exc)
            state["rows_for"][method] = len(rows)
            state["note_for"][method] = note
        state["kto_counts"] = list(label_counts(report.data, report.format))
    return state


def _read(services: Services, source, upload, example, session_id, method, intact_rows=False):
    """(report, path, label, extra note) of the chosen source, or (None, None, None, note) when nothing is chosen."""
    if source == SOURCE_UPLOAD:
        if not upload:
            return None, None, None, "Upload a CSV, TSV or JSON Lines file (prompt,chosen,rejected or " \
                                     "prompt,completion,label)."
        path = Path(upload)
        return feedback.read_feedback(path, intact_rows=bool(intact_rows)), path, path.name, ""
    if source == SOURCE_EXAMPLE:
        files = {p.name: p for p in services.example_files()}
        if example not in files:
            return None, None, None, "Pick an example file."
        path = files[example]
        return (feedback.read_feedback(path, intact_rows=bool(intact_rows)), path, f"data/examples/{path.name}",
                "")
    if not votes.valid_session_id(session_id):
        return None, None, None, "No session yet: reload the page."
    report, path = services.votes_report(session_id, method)
    frame = services.votes_for(session_id)
    fmt = ("pairs (prompt, chosen, rejected)" if config.is_paired(method)
           else "labelled answers (prompt, completion, label)")
    note = (f"Your votes as {fmt} for {method.upper()}. " + votes.export_note(frame))
    return report, path, f"your votes ({len(frame)})", note


def load_data(services: Services, source, upload, example, session_id, method_label, intact_rows=False):
    """Validate the chosen data: (data state, report, preview, Start button, upload/example visibility, the
    'Train on the intact rows' box: shown only for a file that looks cut off or corrupt)."""
    method = METHODS.get(method_label, config.TRAIN.method)
    report, path, label, note = _read(services, source, upload, example, session_id, method, intact_rows)
    state = _data_state(report, path, label) if report is not None else None
    preview = preview_frame(report)
    damaged = report is not None and report.damaged
    return (state, report_markdown(report, note) if report is not None else note,
            gr.update(value=preview, column_widths=preview_widths(preview)),
            gr.update(interactive=bool(state and state["trainable"])),
            gr.update(visible=source == SOURCE_UPLOAD), gr.update(visible=source == SOURCE_EXAMPLE),
            gr.update(visible=damaged, value=bool(intact_rows) and damaged,
                      label=f"Train on the {report.rows_usable} intact rows" if damaged else "Train on the intact "
                      "rows"))


def send_votes(services: Services, session_id, method_label):
    """Compare tab's 'Send to Fine-tune': select the votes as the data source and validate them."""
    loaded = load_data(services, SOURCE_VOTES, None, None, session_id, method_label, False)
    return (gr.update(value=SOURCE_VOTES), *loaded, gr.update(selected="finetune"))


def reload_votes_for_method(services: Services, source, upload, example, session_id, method_label,
                            intact_rows=False):
    """The votes' export depends on the method (pairs for DPO, labelled answers for KTO): reload on a switch."""
    if source != SOURCE_VOTES:
        return (gr.skip(),) * 7
    return load_data(services, source, upload, example, session_id, method_label, intact_rows)


def method_changed(method_label):
    """(lambda_D, lambda_U, gamma, SFT weight) for the method shown: KTO's weights only for KTO, SimPO's margin only
    for SimPO, the SFT weight idle for ORPO (its NLL is built in). Also when a restart fills the form."""
    method = METHODS.get(method_label, config.TRAIN.method)
    kto, orpo = method == "kto", method == "orpo"
    return (gr.update(visible=kto), gr.update(visible=kto), gr.update(visible=method == "simpo"),
            gr.update(interactive=not orpo, info="ORPO's NLL on the chosen answers is part of its loss" if orpo else
                      "NLL on the chosen / desirable answers (RPO); keeps them likely"))


def method_beta(method_label):
    """beta for a method the user just picked: the method's default (``config.METHOD_BETAS``)."""
    return gr.update(value=config.METHOD_BETAS[METHODS.get(method_label, config.TRAIN.method)])


# --------------------------------------------------------------------------------------------------------------------
# Handlers: training


# The settings widgets of the form, by the name ``train_config_from`` knows them (method: the radio's label).
FORM_FIELDS = ("method", "name", "heldout_share", "probe_prompts", "beta", "learning_rate", "steps", "epochs",
               "batch_size", "max_length", "desirable_weight", "undesirable_weight", "lora_r", "lora_alpha",
               "lora_dropout", "sft_weight", "early_stop", "drift_budget", "simpo_gamma")
HYPERPARAMETERS = FORM_FIELDS[4:]
# What the run view shows, by name; handlers return a dict of some of them (the rest stay as they are).
RUN_OUTPUTS = ("job_state", "timer", "status", "progress", "curves", "timeline", "advice", "start", "cancel", "result",
               "before_after", "answers", "zip", "seen", "adapters_changed", "name", "restart")


@dataclass
class TrainingForm:
    """The Fine-tune tab's settings widgets, keyed by field; handlers read them from their component dict."""

    widgets: dict[str, gr.components.Component]

    def __getitem__(self, name: str) -> gr.components.Component:
        return self.widgets[name]

    def inputs(self) -> set:
        return set(self.widgets.values())

    def read(self, data: dict) -> dict[str, Any]:
        """Field -> value from a handler's ``{component: value}`` dict."""
        return {name: data[widget] for name, widget in self.widgets.items()}


def _train_values(form: dict[str, Any]) -> dict[str, Any]:
    """The form's hyperparameters for ``train_config_from``; a missing method or an empty field is refused."""
    values = {"method": METHODS.get(form.get("method")), **{k: form.get(k) for k in HYPERPARAMETERS}}
    if values["method"] is None:
        raise gr.Error(f"Choose a method ({', '.join(METHODS)}).")
    if values["method"] != "simpo":  # the margin box is hidden for every other method: its value does not count
        values.pop("simpo_gamma")
    empty = [k for k, v in values.items() if v is None or (isinstance(v, str) and not v.strip())]
    if empty:
        raise gr.Error(f"These fields are empty: {', '.join(empty)}. Fill them in (defaults are in config.py).")
    return values


def _warn_outside_kto_band(data: dict, train_config) -> None:
    n_d, n_u = data.get("kto_counts", [0, 0])
    advice = kto_weight_advice(int(n_d), int(n_u), train_config.loss.desirable_weight,
                               train_config.loss.undesirable_weight)
    if not advice.in_band:
        gr.Warning(f"KTO weights outside the paper's band (training anyway): {advice.message}")


def start_training(services: Services, session_id: str, data: dict | None, form: dict[str, Any]) -> dict[str, Any]:
    """Submit the job; returns the run view's new values by name (see :data:`RUN_OUTPUTS`). ``data`` is the validated
    data's state, ``form`` the settings (:class:`TrainingForm`'s fields). Every refusal is a gr.Error naming the
    value; the widgets keep what the user typed."""
    if not votes.valid_session_id(session_id):
        raise gr.Error("The page has no session yet: wait a second after loading, or reload the page.")
    if not data or not data.get("trainable"):
        raise gr.Error("Load data that passes validation first (see the report on the left).")
    values = _train_values(form)
    probe_prompts = [line.strip() for line in str(form.get("probe_prompts") or "").splitlines() if line.strip()]
    try:
        train_config = train_config_from(values)
        if train_config.method == "kto":
            _warn_outside_kto_band(data, train_config)
        report = feedback.read_feedback(Path(data["path"]), intact_rows=bool(data.get("intact_rows")))
        job, notes = services.start_training(report, train_config, form.get("name") or "", owner=session_id,
                                             heldout_fraction=float(form.get("heldout_share") or 0.0),
                                             data_label=data["label"], probe_prompts=probe_prompts)
    except (ServiceInputError, AdapterNameError, TrainingInputError, QueueFull, ValueError) as exc:
        raise gr.Error(str(exc)) from exc
    return _submitted(services, session_id, job, notes)


def export_trl_project(services: Services, session_id: str, data: dict | None, form: dict[str, Any]):
    """The fine-tune Start would run, as a TRL + accelerate project to download (data, train.py, settings, README):
    the same rows, held-out split and settings. Returns the download button's update."""
    if not data or not data.get("trainable"):
        raise gr.Error("Load data that passes validation first (see the report on the left).")
    try:
        train_config = train_config_from(_train_values(form))
        report = feedback.read_feedback(Path(data["path"]), intact_rows=bool(data.get("intact_rows")))
        path = services.export_trl(report, train_config, str(form.get("name") or "").strip(),
                                   heldout_fraction=float(form.get("heldout_share") or 0.0), data_label=data["label"])
    except (ServiceInputError, TrainingInputError, ValueError) as exc:
        raise gr.Error(str(exc)) from exc
    gr.Info(f"{path.name}: run it with TRL on any GPU machine (README inside).", duration=4)
    return gr.update(value=str(path), visible=True, label=f"Download {path.name}")


def add_adapter(services: Services, upload, name):
    """Attach an adapter uploaded as a zip (a PEFT LoRA folder: this playground's or TRL's). Returns (note, the
    adapters-changed event that refreshes the variant lists, the upload box cleared)."""
    if not upload:
        raise gr.Error("Choose the adapter's .zip first (a folder with adapter_config.json and "
                       "adapter_model.safetensors).")
    try:
        added, notes = services.add_uploaded_adapter(Path(upload), str(name or "").strip())
    except (ServiceInputError, AdapterNameError) as exc:
        raise gr.Error(str(exc)) from exc
    gr.Info(f"{added} is attached: tick it on Compare.", duration=4)
    extra = f" {html.escape(' '.join(notes))}" if notes else ""
    return (f"✅ **{html.escape(added)}** is attached: it is a variant on Compare and Inspect.{extra}",
            f"{added}:done", None)


def restart_training(services: Services, session_id: str, job_id) -> dict[str, Any]:
    """Run an interrupted (or failed) training of this browser again, with its rows and settings as they were."""
    if not votes.valid_session_id(session_id):
        raise gr.Error("The page has no session yet: wait a second after loading, or reload the page.")
    try:
        job, notes = services.restart_training(str(job_id or ""), session_id)
    except (ServiceInputError, AdapterNameError, TrainingInputError, QueueFull) as exc:
        raise gr.Error(str(exc)) from exc
    return _submitted(services, session_id, job, notes)


def _submitted(services: Services, session_id: str, job, notes: list[str]) -> dict[str, Any]:
    """The run view of a job just queued (by Start or Restart)."""
    view = services.job_view(job.id, session_id)
    gr.Info(f"Training {job.name} submitted: {job.total_steps} steps.", duration=3)
    note = " ".join(notes)
    return {"job_state": job.id, "timer": gr.Timer(active=True),
            "status": status_markdown(view) + (f"\n\n{html.escape(note)}" if note else ""),
            "progress": progress_html(view), "curves": plots.training_curves_figure([], job.method),
            "timeline": probe_timeline_html([]), "advice": "", "start": gr.update(interactive=False),
            "cancel": gr.update(interactive=True), "result": "",
            "before_after": plots.empty_figure("Held-out metrics appear here when the training finishes."),
            "answers": answers_frame(None), "zip": gr.update(value=None, visible=False),
            "restart": gr.update(visible=False), "seen": {"job": job.id, "steps": 0, "probes": 0, "final": False}}


def _curves(view: dict) -> Any:
    kept = {"best_step": view["kept_step"], "reason": ""} if view.get("kept_step") else None
    return plots.training_curves_figure(view["history"], view["method"], view.get("evaluations"),
                                        view.get("stop") or kept, (view.get("drift_budget") or 0.0))


def poll_job(services: Services, job_id, seen, typed_name=None, session_id=None) -> dict[str, Any]:
    """One timer tick: the run view's new values by name (see :data:`RUN_OUTPUTS`). Curves and the probe timeline
    are re-sent only when they changed, the final outputs once. When a run is done and the name box still holds its
    (now taken) name, a fresh name is suggested. A job another browser started reads as no job (the page passes its
    ``session_id``; None, in tests, skips the check)."""
    view = services.job_view(job_id, session_id) if session_id is not None else services.job_view(job_id)
    if view is None:
        return {"status": "No training yet.", "progress": progress_html(None), "seen": seen,
                "timer": gr.Timer(active=False)}
    seen = dict(seen or {})
    if seen.get("job") != view["job_id"]:
        seen = {"job": view["job_id"], "steps": -1, "probes": -1, "evaluations": -1, "final": False}
    out: dict[str, Any] = {"status": status_markdown(view), "progress": progress_html(view)}
    if (view["steps_done"], len(view["evaluations"])) != (seen.get("steps"), seen.get("evaluations")):
        out["curves"] = _curves(view)
        seen["steps"], seen["evaluations"] = view["steps_done"], len(view["evaluations"])
    if len(view["probes"]) != seen.get("probes"):
        out["timeline"], out["advice"] = probe_timeline_html(view["probes"]), probe_advice(view["probes"])
        seen["probes"] = len(view["probes"])
    finished = view["status"] in ("done", "failed", "cancelled", "interrupted")
    if not finished:
        return {**out, "seen": seen, "timer": gr.Timer(active=True), "start": gr.update(interactive=False),
                "cancel": gr.update(interactive=True)}
    if seen.get("final"):
        return {**out, "seen": seen, "timer": gr.Timer(active=False)}
    seen["final"] = True
    out.update(seen=seen, timer=gr.Timer(active=False), start=gr.update(interactive=True),
               cancel=gr.update(interactive=False), result=result_markdown(view), before_after=before_after(view),
               answers=answers_frame(view.get("answers_eval")), zip=gr.update(value=None, visible=False),
               adapters_changed=f"{view['name']}:{view['status']}",
               restart=gr.update(visible=view["status"] in ("interrupted", "failed")))
    if view["status"] == "done" and view["name"] in services.engine.adapters:
        out["zip"] = gr.update(value=str(services.zip_adapter(view["name"])), visible=True,
                               label=f"Download {view['name']}.zip")
    if view["status"] == "done" and (typed_name or "").strip() == view["name"]:
        out["name"] = services.suggest_adapter_name(view["method"])
    return out


def cancel_training(services: Services, session_id, job_id):
    job = services.queue.get(job_id) if job_id else None
    if job is None or job.finished or job.owner != session_id:
        raise gr.Error("No running training of yours to cancel.")
    services.queue.cancel(job_id)
    gr.Info("Cancelling: the training stops before its next step.", duration=4)
    return status_markdown(services.job_view(job_id))


def push_to_hub(services: Services, session_id, job_id, repo_id, token):
    """Push this browser's finished adapter to a hub model repo: (note, token box). The token is used for this one
    call and cleared from the box on success; it is never stored or logged."""
    job = services.queue.get(job_id) if job_id else None
    if (job is None or job.owner != session_id or job.status != "done"
            or job.name not in services.engine.adapters):
        raise gr.Error("Train an adapter first: the push sends the adapter this page trained (status done).")
    try:
        url = hub.push_adapter(services.engine.adapters[job.name].path, repo_id, token)
    except hub.HubError as exc:
        raise gr.Error(str(exc)) from None
    gr.Info(f"Pushed {job.name} to {url}", duration=5)
    return f"✅ Pushed **{html.escape(job.name)}** to [{html.escape(url)}]({html.escape(url, quote=True)}).", ""


def reattach(services: Services, session_id, job_id) -> dict[str, Any]:
    """On page load: find this browser's newest job (the stored id, else by owner) and resume watching it."""
    job = services.queue.get(job_id) if job_id else None
    if job is None or (job.owner and job.owner != session_id):
        job = services.latest_job_for(session_id) if votes.valid_session_id(session_id) else None
    if job is None:
        return {"job_state": None, "timer": gr.Timer(active=False), "status": "No training yet.",
                "progress": progress_html(None), "seen": None}
    out = poll_job(services, job.id, None, None, session_id)
    out.pop("adapters_changed", None)
    out.pop("name", None)
    return {**out, "job_state": job.id}


def as_outputs(values: dict[str, Any], names: tuple[str, ...] = RUN_OUTPUTS) -> list:
    """A handler's values by name, as Gradio's list of outputs (``gr.skip()`` for the ones it leaves alone)."""
    return [values[name] if name in values else gr.skip() for name in names]


# --------------------------------------------------------------------------------------------------------------------
# Layout


@dataclass
class FinetuneTab:
    source: gr.Radio
    method: gr.Radio
    data_outputs: list
    timer: gr.Timer
    reattach_outputs: list
    adapters_changed: gr.State
    start_button: gr.Button
    name: gr.Textbox


def _data_column(services: Services) -> dict[str, gr.components.Component]:
    """Step 1: where the feedback comes from, its validation report and a preview."""
    gr.Markdown("### 1 · Data")
    source = gr.Radio(list(SOURCES), value=SOURCE_UPLOAD, label="Feedback to train on", elem_id="pg-ft-source")
    upload = gr.File(label="Feedback file: CSV, TSV or JSON Lines", file_types=[".csv", ".tsv", ".jsonl", ".json",
                                                                                ".txt"],
                     type="filepath", elem_id="pg-ft-upload", height=120)
    example = gr.Dropdown([p.name for p in services.example_files()], value=None, label="Example file",
                          visible=False, elem_id="pg-ft-example")
    gr.Markdown("Paired (DPO): `prompt,chosen,rejected`. Unpaired (KTO): `prompt,completion,label` with "
                "labels like true/false or 👍/👎. Optional: `system`. The same columns as TRL's datasets.",
                elem_classes=["pg-note"])
    intact_rows = gr.Checkbox(False, label="Train on the intact rows", visible=False, elem_id="pg-ft-intact",
                              info="The file looks cut off or corrupt; tick to train on the rows that are intact.")
    report = gr.Markdown("Choose a file, your votes, or an example to see its validation report.",
                         elem_id="pg-ft-report")
    preview = gr.Dataframe(preview_frame(None), label="Preview (first rows, as they will be trained on)",
                           interactive=False, wrap=True, max_height=320, elem_id="pg-ft-preview")
    return {"source": source, "upload": upload, "example": example, "report": report, "preview": preview,
            "intact_rows": intact_rows}


def _settings_column(services: Services) -> tuple[TrainingForm, dict[str, gr.components.Component]]:
    """Step 2: the method and its settings (the form), the plan, and Start / Cancel."""
    train, lora, loss = config.TRAIN, config.TRAIN.lora, config.TRAIN.loss
    gr.Markdown("### 2 · Method and settings")
    w: dict[str, gr.components.Component] = {}
    w["method"] = gr.Radio(list(METHODS), value=METHOD_LABEL[train.method], label="Method", elem_id="pg-ft-method",
                           info=METHOD_INFO)
    w["name"] = gr.Textbox(value=services.suggest_adapter_name(train.method), label="Adapter name",
                           info="letters, digits, '-' and '_'; becomes a variant on Compare", elem_id="pg-ft-name")
    with gr.Row():
        w["beta"] = gr.Number(value=loss.beta, label="β (beta)", info="strength of the pull to the base")
        w["learning_rate"] = gr.Number(value=train.learning_rate, label="Learning rate")
    with gr.Row():
        w["steps"] = gr.Number(value=train.steps, precision=0, label="Steps", info="0 = use epochs",
                               elem_id="pg-ft-steps")
        w["epochs"] = gr.Number(value=train.epochs, label="Epochs")
    with gr.Row():
        w["batch_size"] = gr.Number(value=train.batch_size, precision=0, label="Batch size", elem_id="pg-ft-batch")
        w["max_length"] = gr.Number(value=train.max_length, precision=0, label="Max length (tokens)",
                                    elem_id="pg-ft-maxlen")
    with gr.Row():
        w["desirable_weight"] = gr.Number(value=loss.desirable_weight, label="λ_D (desirable weight)", visible=False)
        w["undesirable_weight"] = gr.Number(value=loss.undesirable_weight, label="λ_U (undesirable weight)",
                                            visible=False)
        w["simpo_gamma"] = gr.Number(value=loss.simpo_gamma, label="γ (SimPO target margin)", visible=False,
                                     info="the reward margin SimPO asks of each pair", elem_id="pg-ft-gamma")
    plan = gr.Markdown("Load usable data to see the plan.", elem_id="pg-ft-plan")
    with gr.Row():
        w["sft_weight"] = gr.Number(value=loss.sft_weight, label="SFT weight",
                                    info="NLL on the chosen / desirable answers (RPO); keeps them likely")
        w["early_stop"] = gr.Checkbox(value=train.early_stopping.enabled, label="Stop early on the held-out split",
                                      info="keeps the best adapter")
    with gr.Accordion("Held-out split, probes, LoRA", open=False):
        share = config.SLIDERS.heldout_share
        w["heldout_share"] = gr.Slider(share.low, share.high, value=train.held_out_fraction, step=share.step,
                                       label="Hold out this share of your prompts (measured, never trained on)",
                                       info=f"files of {train.held_out_min_rows}+ rows; 0 = keep none",
                                       elem_id="pg-ft-heldout")
        w["drift_budget"] = gr.Number(value=train.early_stopping.drift_budget, label="Drift budget (nats/token)",
                                      info="stop when held-out chosen answers move further from the base; 0 = off")
        w["probe_prompts"] = gr.Textbox(label="Probe prompts (one per line)", lines=2, elem_id="pg-ft-probe-prompts",
                                        placeholder="Empty: the first prompts of the held-out rows",
                                        info="answered greedily at the start and about every quarter of the run")
        with gr.Row():
            w["lora_r"] = gr.Number(value=lora.r, precision=0, label="LoRA rank r")
            w["lora_alpha"] = gr.Number(value=lora.alpha, precision=0, label="LoRA alpha")
            w["lora_dropout"] = gr.Number(value=lora.dropout, label="LoRA dropout")
    gr.Markdown(f"Runs on: **{html.escape(services.engine.device.describe())}**", elem_classes=["pg-note"])
    with gr.Row():
        start = gr.Button("Start training", variant="primary", interactive=False, elem_id="pg-ft-start")
        cancel = gr.Button("Cancel", variant="stop", interactive=False, elem_id="pg-ft-cancel")
        restart = gr.Button("Run this training again", visible=False, elem_id="pg-ft-restart")
    with gr.Row():
        export = gr.Button("Export as a TRL + accelerate project", size="sm", elem_id="pg-ft-export")
        export_zip = gr.DownloadButton("Download the TRL project", value=None, visible=False, size="sm",
                                       elem_id="pg-ft-export-zip")
    assert set(w) == set(FORM_FIELDS)
    return TrainingForm(w), {"plan": plan, "start": start, "cancel": cancel, "restart": restart, "export": export,
                             "export_zip": export_zip}


def _progress_and_result() -> dict[str, gr.components.Component]:
    """Steps 3 and 4: the live progress and curves, then the result, the download and the hub push."""
    gr.Markdown("### 3 · Progress")
    out: dict[str, gr.components.Component] = {}
    out["status"] = gr.Markdown("No training yet.", elem_id="pg-ft-status")
    out["progress"] = gr.HTML(progress_html(None), elem_id="pg-ft-progress")
    with gr.Row(equal_height=False):
        with gr.Column(scale=3):
            out["curves"] = gr.Plot(plots.training_curves_figure([], config.TRAIN.method), label="Training curves",
                                    elem_id="pg-ft-curves")
        with gr.Column(scale=2):
            gr.Markdown("**Probe answers** (greedy, by the adapter in training)")
            out["advice"] = gr.Markdown("", elem_id="pg-ft-probe-advice")
            out["timeline"] = gr.HTML(probe_timeline_html([]), elem_id="pg-ft-probes")
    gr.Markdown("### 4 · Result")
    with gr.Row(equal_height=False):
        with gr.Column(scale=3):
            out["result"] = gr.Markdown("", elem_id="pg-ft-result")
            out["zip"] = gr.DownloadButton("Download adapter (.zip)", value=None, visible=False, elem_id="pg-ft-zip")
            with gr.Accordion("Push the adapter to the Hugging Face Hub", open=False):
                out["hub_repo"] = gr.Textbox(label="Hub repository (owner/name)",
                                             placeholder="your-username/my-dpo-adapter", elem_id="pg-ft-hub-repo")
                out["hub_token"] = gr.Textbox(label="Access token (write)", type="password",
                                              elem_id="pg-ft-hub-token",
                                              info="Used for this upload only; never stored or logged.")
                out["hub_button"] = gr.Button("Push to the Hub", elem_id="pg-ft-hub-push")
                out["hub_note"] = gr.Markdown("", elem_id="pg-ft-hub-note")
            with gr.Accordion("Add an adapter trained elsewhere (a .zip of a PEFT or TRL adapter folder)", open=False):
                out["add_zip"] = gr.File(label="Adapter .zip (adapter_config.json, adapter_model.safetensors)",
                                         file_types=[".zip"], type="filepath", elem_id="pg-ft-add-zip", height=100)
                out["add_name"] = gr.Textbox(label="Adapter name", elem_id="pg-ft-add-name",
                                             info="letters, digits, '-' and '_'; becomes a variant on Compare")
                out["add_button"] = gr.Button("Attach the adapter", elem_id="pg-ft-add")
                out["add_note"] = gr.Markdown("Safetensors only (no pickles); its base must be the loaded one. "
                                              "Larger adapters go into the data directory's adapters/ folder.",
                                              elem_id="pg-ft-add-note")
        with gr.Column(scale=4):
            out["before_after"] = gr.Plot(plots.empty_figure("Held-out metrics appear here when a training finishes."),
                                          label="Before / after", elem_id="pg-ft-before-after")
    out["answers"] = gr.Dataframe(answers_frame(None), label="Base vs new adapter on held-out prompts (greedy)",
                                  interactive=False, wrap=True, max_height=420, elem_id="pg-ft-answers")
    return out


def build_finetune_tab(services: Services, session: gr.BrowserState, job_state: gr.BrowserState) -> FinetuneTab:
    with gr.Row(equal_height=False):
        with gr.Column(scale=5):
            d = _data_column(services)
        with gr.Column(scale=4):
            form, c = _settings_column(services)
    r = _progress_and_result()
    data_state = gr.State(None)
    seen = gr.State(None)
    adapters_changed = gr.State("")
    timer = gr.Timer(config.APP.poll_seconds, active=False)
    method, name = form["method"], form["name"]

    data_outputs = [data_state, d["report"], d["preview"], c["start"], d["upload"], d["example"], d["intact_rows"]]
    data_inputs = [d["source"], d["upload"], d["example"], session, method, d["intact_rows"]]
    load = partial(load_data, services)
    d["source"].input(load, data_inputs, data_outputs, api_name=False)
    d["upload"].change(load, data_inputs, data_outputs, api_name=False)
    d["example"].input(load, data_inputs, data_outputs, api_name=False)
    d["intact_rows"].input(load, data_inputs, data_outputs, api_name=False)
    method.input(partial(reload_votes_for_method, services), data_inputs, data_outputs, api_name=False)
    method.change(method_changed, [method], [form["desirable_weight"], form["undesirable_weight"],
                                             form["simpo_gamma"], form["sft_weight"]], api_name=False, queue=False)
    method.input(method_beta, [method], [form["beta"]], api_name=False, queue=False)
    method.input(lambda label: services.suggest_adapter_name(METHODS.get(label, "dpo")), [method], [name],
                 api_name=False, queue=False)

    plan_inputs = [method, data_state, form["steps"], form["epochs"], form["batch_size"], form["desirable_weight"],
                   form["undesirable_weight"]]

    def plan_fn(method_label, data, steps_, epochs_, batch_, lam_d_, lam_u_):
        return plan_markdown(METHODS.get(method_label, "dpo"), data, steps_, epochs_, batch_, lam_d_, lam_u_)

    gr.on([component.change for component in plan_inputs], plan_fn, plan_inputs, [c["plan"]], api_name=False,
          trigger_mode="always_last", concurrency_limit=None, show_progress="hidden")

    run_view = {**r, **c, "job_state": job_state, "timer": timer, "seen": seen, "adapters_changed": adapters_changed,
                "name": name}
    run_outputs = [run_view[key] for key in RUN_OUTPUTS]
    c["start"].click(lambda data: as_outputs(start_training(services, data[session], data[data_state],
                                                            form.read(data))),
                     {session, data_state, *form.inputs()}, run_outputs, api_name=False, concurrency_limit=None)
    timer.tick(lambda job_id, seen_, typed, sid: as_outputs(poll_job(services, job_id, seen_, typed, sid or "")),
               [job_state, seen, name, session], run_outputs, api_name=False, concurrency_limit=None,
               show_progress="hidden")
    c["cancel"].click(partial(cancel_training, services), [session, job_state], [r["status"]], api_name=False,
                      concurrency_limit=None)
    r["hub_button"].click(partial(push_to_hub, services), [session, job_state, r["hub_repo"], r["hub_token"]],
                          [r["hub_note"], r["hub_token"]], api_name=False, concurrency_limit=1,
                          concurrency_id="hub-push")
    c["restart"].click(lambda sid, job_id: as_outputs(restart_training(services, sid, job_id)), [session, job_state],
                       run_outputs, api_name=False, concurrency_limit=None)
    r["add_button"].click(partial(add_adapter, services), [r["add_zip"], r["add_name"]],
                          [r["add_note"], adapters_changed, r["add_zip"]], api_name=False, concurrency_limit=1,
                          concurrency_id="adapter-upload")
    c["export"].click(lambda data: export_trl_project(services, data[session], data[data_state], form.read(data)),
                      {session, data_state, *form.inputs()}, [c["export_zip"]], api_name=False, concurrency_limit=None)
    return FinetuneTab(d["source"], method, data_outputs, timer, run_outputs, adapters_changed, c["start"], name)
