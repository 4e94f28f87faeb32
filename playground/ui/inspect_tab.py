"""The Inspect tab: score a data set once per adapter, then every slider redraws from the cache with no model call.

Handlers are thin: widgets -> ``score_dataset`` (the Score button only) or ``analyse`` (everything
else) -> ``plots``.
"""

import html
import logging
import math
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import gradio as gr
import pandas as pd

from playground import config, plots
from playground.analysis.scores import DatasetScores
from playground.analysis.views import (
    Analysis,
    InspectSettings,
    analyse,
    kto_value_curves,
    pair_focus,
    prospect_curves,
    variant_table,
)
from playground.objectives.dpo import DPO_LOSS_TYPES
from playground.objectives.kto import KTO_LOSS_TYPES
from playground.objectives.task_metrics import TASK_METRICS
from playground.objectives.thresholds import TAU_METHODS
from playground.objectives.value_functions import LIKELIHOOD_REDUCTIONS, VALUE_CONSTRUCTIONS
from playground.serving.services import Services
from playground.serving.settings import ServiceInputError

log = logging.getLogger(__name__)

DATA_HELDOUT = "Bundled held-out pairs"
DATA_VOTES = "This session's votes"
DATA_UPLOAD = "Upload a file"
DATA_CHOICES = [DATA_HELDOUT, DATA_VOTES, DATA_UPLOAD]
DEFAULTS = InspectSettings()

# The settings widgets, in the order their values reach the handlers.
SETTING_FIELDS = ("beta", "dpo_loss_type", "label_smoothing", "kto_loss_type", "desirable_weight", "undesirable_weight",
                  "construction", "likelihood_reduce", "calibrate", "normalise_std", "alpha", "task_metric",
                  "tau_method", "tau_quantile", "tau_ema_eta", "tau_fixed", "loss_aversion")

TABLE_COLUMNS = {
    "pair": "pair", "prompt": "prompt", "chosen": "chosen", "rejected": "rejected", "category": "category",
    "ref_logratio": "ref log-ratio", "policy_logratio": "policy log-ratio", "delta": "D",
    "margin": "margin β·D", "dpo_loss": "DPO loss", "grad_weight": "grad weight", "correct": "chosen ranked first",
    "kto_loss_chosen": "KTO loss (chosen)", "kto_loss_rejected": "KTO loss (rejected)",
    "v_chosen": "V chosen", "v_rejected": "V rejected",
}


@dataclass
class InspectTab:
    """What the page builder may use: ``refresh_fn`` re-reads the attached adapters into ``refresh_outputs``."""

    refresh_outputs: list = field(default_factory=list)
    refresh_fn: Any = None
    score_button: Any = None


# --------------------------------------------------------------------------------------------------------------------
# Pure helpers (no model call)


def settings_from(*widget_values) -> InspectSettings:
    """Widget values in ``SETTING_FIELDS`` order -> settings (missing or empty values keep their defaults)."""
    data = {name: value for name, value in zip(SETTING_FIELDS, widget_values) if value is not None and value != ""}
    try:
        return InspectSettings.from_mapping(data)
    except (TypeError, ValueError) as exc:
        raise gr.Error(f"A setting is not valid: {exc}") from exc


def _fmt(value: Any, digits: int = 3) -> str:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return "n/a"
    return f"{number:.{digits}g}" if math.isfinite(number) else "n/a"


def summary_markdown(result: Analysis, scores: DatasetScores) -> str:
    s = result.summary
    source = "precomputed numbers (no model call)" if scores.from_disk else "scored on this server"
    band = "inside" if s["kto_weight_in_band"] else "outside"
    lines = [
        f"**{html.escape(result.variant)}** on {s['n_pairs']} pairs ({s['n_samples']} unpaired samples), {source}.",
        f"- **DPO** ({s['dpo_loss_type']}): preference accuracy **{_fmt(s['preference_accuracy'])}**, mean margin "
        f"β·D **{_fmt(s['mean_margin'])}**, mean loss **{_fmt(s['mean_dpo_loss'])}** (ln 2 = 0.693 at the "
        f"reference), mean gradient weight {_fmt(s['mean_grad_weight'])}.",
        f"- **KTO** ({s['kto_loss_type']}): z0 = **{_fmt(s['z0'])}** nats, mean loss **{_fmt(s['mean_kto_loss'])}**, "
        f"mean reward desirable {_fmt(s['kto_desirable_reward'])} / undesirable {_fmt(s['kto_undesirable_reward'])}. "
        f"Weight ratio `λ_D·n_D / (λ_U·n_U)` = {_fmt(s['kto_weight_ratio'])}, {band} the paper's band [1, 4/3]: "
        f"{html.escape(s['kto_weight_advice'])}",
        f"- **V** ({html.escape(s['value_label'])}): ranks the chosen answer first on "
        f"**{_fmt(s['value_preference_accuracy'])}** of pairs; τ ({s['tau_method']}) = **{_fmt(s['tau'])}**, "
        f"{_fmt(100 * s['share_gains'], 3)}% of samples are gains. Mean value: source document (as written) "
        f"**{_fmt(s['mean_source_objective'])}** vs prospect theory (corrected) **{_fmt(s['mean_prospect_value'])}** "
        f"(λ = {_fmt(s['loss_aversion'])}). Best hybrid α = {_fmt(s['best_alpha'])} "
        f"(accuracy {_fmt(s['best_alpha_accuracy'])}).",
    ]
    if s.get("reward_baseline") and result.settings.construction == "reward":
        lines.append(f"- Reward baseline: {html.escape(str(s['reward_baseline']))}.")
    for note in dict.fromkeys(result.notes):
        lines.append(f"- _{html.escape(note)}_")
    return "\n".join(lines)


def table_frame(result: Analysis) -> pd.DataFrame:
    frame = result.pairs[list(TABLE_COLUMNS)].rename(columns=TABLE_COLUMNS)
    numeric = frame.select_dtypes("number").columns.drop("pair", errors="ignore")
    frame[numeric] = frame[numeric].round(4)
    return frame


def variants_frame(scores: DatasetScores, settings: InspectSettings) -> pd.DataFrame:
    return variant_table(scores, settings).round(4)


PARTS = ("dpo", "kto", "prospect")  # figure groups: 3 DPO, 3 KTO, 4 prospect figures
PART_SIZES = {"dpo": 3, "kto": 3, "prospect": 4}
# Which figure groups a control changes (the summary and both tables are always redrawn).
DPO_FIELDS = ("dpo_loss_type", "label_smoothing")
KTO_FIELDS = ("kto_loss_type", "desirable_weight", "undesirable_weight")


def render(scores: DatasetScores | None, variant: str | None, selected: int | None,
           settings: InspectSettings, parts: tuple[str, ...] = PARTS) -> list:
    """The outputs of a redraw: summary, per-variant table, per-pair table, then the figures of ``parts`` in
    ``PARTS`` order (all ten by default). Pure: no model call."""
    parts = tuple(p for p in PARTS if p in parts)
    if scores is None:
        note = "Score a data set (or wait for the precomputed numbers) to fill this view."
        return [note, pd.DataFrame(), pd.DataFrame()] + [plots.empty_figure(note)] * sum(PART_SIZES[p] for p in parts)
    if variant not in scores.variants:
        variant = _default_view(scores.variants)
    try:
        result = analyse(scores, variant, settings)
    except ValueError as exc:
        raise gr.Error(str(exc)) from exc
    n = scores.n_pairs
    focus = None
    if selected is not None and 0 <= int(selected) < n:
        focus = pair_focus(result, scores, int(selected))
    pair = focus["index"] if focus else None
    samples_selected = focus["samples"] if focus else None
    s = result.summary
    figures: list = []
    if "dpo" in parts:
        figures += [
            plots.dpo_scatter_figure(result.pairs, variant, selected=pair),
            plots.dpo_bars_figure(result.pairs, variant, selected=pair, dpo_loss_type=settings.dpo_loss_type),
            plots.dpo_waterfall_figure(focus, variant),
        ]
    if "kto" in parts:
        figures += [
            plots.kto_scatter_figure(result.samples, s["z0"], samples_selected, settings.kto_loss_type),
            plots.kto_value_curve_figure(result.samples, kto_value_curves(result), samples_selected),
            plots.kto_loss_figure(result.samples, samples_selected),
        ]
    if "prospect" in parts:
        search = result.alpha_search
        figures += [
            plots.value_histogram_figure(result.samples, result.taus, settings.tau_method, result.value_label),
            plots.prospect_bars_figure(result.samples, s["tau"], settings.loss_aversion, result.value_label,
                                       samples_selected),
            plots.objective_comparison_figure(result.samples, prospect_curves(result), result.value_label,
                                              samples_selected),
            plots.alpha_search_figure(search.alphas, search.accuracies, search.best_alpha, settings.alpha,
                                      config.VALUES.alpha_highlight),
        ]
    return [summary_markdown(result, scores), variants_frame(scores, settings), table_frame(result), *figures]


def _default_view(variants: list[str]) -> str:
    adapters = [v for v in variants if v != "base"]
    return adapters[0] if adapters else (variants[0] if variants else "base")


DATA_KINDS = {DATA_HELDOUT: "heldout", DATA_VOTES: "votes", DATA_UPLOAD: "upload"}


def load_dataset(services: Services, choice: str, upload: Any, session_id: str | None) -> tuple[pd.DataFrame, str]:
    """The data set the radio names, as a frame and a label (``Services.inspect_dataset``)."""
    path = upload if isinstance(upload, str) or upload is None else getattr(upload, "name", None) or upload.get("path")
    try:
        return services.inspect_dataset(DATA_KINDS.get(choice, str(choice)), session_id, path)
    except ServiceInputError as exc:
        raise gr.Error(str(exc)) from None


# --------------------------------------------------------------------------------------------------------------------
# The tab


def build_inspect_tab(services, session: Any = None) -> InspectTab:
    """Build the tab inside the caller's ``gr.Tab("Inspect")``. ``session`` is the page's session-id state (for
    "this session's votes"); without it the tab reads the same browser-stored id itself."""
    engine = services.engine
    heldout = services.heldout_pairs
    initial_scores = services.precomputed_scores()
    initial_view = _default_view(initial_scores.variants) if initial_scores else None
    initial = render(initial_scores, initial_view, None, DEFAULTS)

    if session is None:
        session = gr.BrowserState(None, storage_key=config.APP.session_storage_key, secret=services.secret) \
            if hasattr(services, "secret") else gr.State(None)
    scores_state = gr.State(initial_scores)
    selected_state = gr.State(None)

    gr.Markdown("Score a preference data set under each adapter once; every control below then redraws from the "
                "cached log-probs without calling the model. Select a row of the table to decompose that pair.")
    with gr.Row(equal_height=False):
        with gr.Column(scale=2):
            dataset = gr.Radio(DATA_CHOICES, value=DATA_HELDOUT if heldout is not None else DATA_VOTES,
                               label="Data set")
            upload = gr.File(label="Feedback file (CSV, TSV, JSONL, JSON)", visible=False,
                             file_types=[".csv", ".tsv", ".jsonl", ".json"])
        with gr.Column(scale=2):
            variants = engine.variant_names()
            adapters = gr.Dropdown(variants, value=variants, multiselect=True, label="Variants to score",
                                   info="The reference (base, adapters off) is always scored.")
            score_button = gr.Button("Score", variant="primary")
        with gr.Column(scale=1):
            view = gr.Dropdown(initial_scores.variants if initial_scores else [], value=initial_view,
                               label="Show variant", interactive=True)
    status = gr.Markdown("Showing precomputed numbers for the bundled held-out pairs." if initial_scores else
                         "Press **Score** to compute log-probs for the chosen data set.")

    with gr.Accordion("Settings (redraw instantly, no model call)", open=True):
        with gr.Row():
            beta = gr.Slider(0.01, 1.0, value=DEFAULTS.beta, step=0.01, label="β (temperature)")
            dpo_loss_type = gr.Dropdown(list(DPO_LOSS_TYPES), value=DEFAULTS.dpo_loss_type, label="DPO loss")
            label_smoothing = gr.Slider(0.0, 0.45, value=DEFAULTS.label_smoothing, step=0.01,
                                        label="Label smoothing ε (sigmoid, robust)")
            kto_loss_type = gr.Dropdown(list(KTO_LOSS_TYPES), value=DEFAULTS.kto_loss_type, label="KTO loss")
            lam_d = gr.Slider(0.1, 5.0, value=DEFAULTS.desirable_weight, step=0.05, label="λ_D (desirable weight)")
            lam_u = gr.Slider(0.1, 5.0, value=DEFAULTS.undesirable_weight, step=0.05,
                              label="λ_U (undesirable weight)")
        with gr.Row():
            construction = gr.Radio(list(VALUE_CONSTRUCTIONS), value=DEFAULTS.construction,
                                    label="V construction")
            reduce = gr.Radio(list(LIKELIHOOD_REDUCTIONS), value=DEFAULTS.likelihood_reduce,
                              label="Likelihood: token log-probs")
            calibrate = gr.Checkbox(value=DEFAULTS.calibrate, label="Likelihood: calibrate against the reference")
            normalise = gr.Checkbox(value=DEFAULTS.normalise_std, label="Reward: divide by std")
            alpha = gr.Slider(0.0, 1.0, value=DEFAULTS.alpha, step=0.05, label="Hybrid α (weight on P_LM)")
            task_metric = gr.Dropdown(list(TASK_METRICS), value=DEFAULTS.task_metric, label="Task metric")
        with gr.Row():
            tau_method = gr.Radio(list(TAU_METHODS), value=DEFAULTS.tau_method, label="τ method")
            tau_quantile = gr.Slider(0.0, 1.0, value=DEFAULTS.tau_quantile, step=0.05, label="τ quantile q",
                                     visible=DEFAULTS.tau_method == "quantile")
            tau_eta = gr.Slider(0.01, 1.0, value=DEFAULTS.tau_ema_eta, step=0.01, label="τ EMA step η",
                                visible=DEFAULTS.tau_method == "ema")
            tau_fixed = gr.Number(value=DEFAULTS.tau_fixed, label="τ task bar (fixed, in V units)",
                                  visible=DEFAULTS.tau_method == "fixed")
            loss_aversion = gr.Slider(1.0, 5.0, value=DEFAULTS.loss_aversion, step=0.05, label="Loss aversion λ")
    setting_widgets = [beta, dpo_loss_type, label_smoothing, kto_loss_type, lam_d, lam_u, construction, reduce,
                       calibrate, normalise, alpha, task_metric, tau_method, tau_quantile, tau_eta, tau_fixed,
                       loss_aversion]
    assert len(setting_widgets) == len(SETTING_FIELDS)

    summary = gr.Markdown(initial[0])
    variant_table = gr.DataFrame(initial[1], label="All scored variants (current settings)", interactive=False,
                                 max_height=220)
    table = gr.DataFrame(initial[2], label="Per pair (click a column header to sort, a row to focus the pair)",
                         interactive=False, max_height=420, wrap=False, pinned_columns=2, show_search="search")
    with gr.Tabs():
        with gr.Tab("DPO"):
            with gr.Row():
                f_scatter = gr.Plot(initial[3], show_label=False)
                f_bars = gr.Plot(initial[4], show_label=False)
            f_waterfall = gr.Plot(initial[5], show_label=False)
        with gr.Tab("KTO"):
            with gr.Row():
                f_kto_scatter = gr.Plot(initial[6], show_label=False)
                f_kto_value = gr.Plot(initial[7], show_label=False)
            f_kto_loss = gr.Plot(initial[8], show_label=False)
        with gr.Tab("Prospect view (source material)"):
            gr.Markdown("The source material's value V(x, y), thresholds τ and objective. Its written objective "
                        "puts λ on gains and uses no labels; prospect theory (and KTO) weighs losses by λ. Both are "
                        "shown.")
            with gr.Row():
                f_hist = gr.Plot(initial[9], show_label=False)
                f_prospect = gr.Plot(initial[10], show_label=False)
            f_objective = gr.Plot(initial[11], show_label=False)
            f_alpha = gr.Plot(initial[12], show_label=False)
    render_outputs = [summary, variant_table, table, f_scatter, f_bars, f_waterfall, f_kto_scatter, f_kto_value,
                      f_kto_loss, f_hist, f_prospect, f_objective, f_alpha]

    # ---- handlers (inputs as a set: each handler gets one dict, component -> value) ---------------------------
    def settings_of(data) -> InspectSettings:
        return settings_from(*[data[w] for w in setting_widgets])

    def score(data, progress=gr.Progress()):
        settings = settings_of(data)
        frame, what = load_dataset(services, data[dataset], data[upload], data[session])
        wanted = [v for v in (data[adapters] or []) if v in engine.variant_names()] or ["base"]
        try:
            scores = services.score_dataset(frame, wanted, lambda f, m: progress(f, desc=m))
        except (KeyError, ValueError) as exc:
            raise gr.Error(str(exc)) from exc
        shown = _default_view(scores.variants)
        message = f"Scored {what}: {scores.n_pairs} pairs under {', '.join(scores.variants)} (+ reference)."
        return [scores, None, gr.update(choices=scores.variants, value=shown), message,
                *render(scores, shown, None, settings)]

    def redraw(data, parts=PARTS):
        return render(data[scores_state], data[view], data[selected_state], settings_of(data), parts)

    def select_row(data, evt: gr.SelectData):
        row = getattr(evt, "row_value", None)
        try:
            selected = int(row[0]) if row else int(evt.index[0])
        except (TypeError, ValueError, IndexError):
            selected = None
        return [selected, *render(data[scores_state], data[view], selected, settings_of(data))]

    def tau_visibility(method):
        return (gr.update(visible=method == "quantile"), gr.update(visible=method == "ema"),
                gr.update(visible=method == "fixed"))

    def refresh():
        return gr.update(choices=engine.variant_names())

    dataset.change(lambda c: gr.update(visible=c == DATA_UPLOAD), [dataset], [upload], api_name=False, queue=False)
    score_button.click(score, {dataset, upload, adapters, session, *setting_widgets},
                       [scores_state, selected_state, view, status, *render_outputs], api_name=False,
                       concurrency_limit=1, concurrency_id="inspect-score")
    redraw_inputs = {scores_state, view, selected_state, *setting_widgets}
    common = dict(api_name=False, show_progress="minimal", trigger_mode="always_last")
    tables = [summary, variant_table, table]
    figure_groups = {"dpo": [f_scatter, f_bars, f_waterfall], "kto": [f_kto_scatter, f_kto_value, f_kto_loss],
                     "prospect": [f_hist, f_prospect, f_objective, f_alpha]}
    view.input(redraw, redraw_inputs, render_outputs, **common)
    for name, widget in zip(SETTING_FIELDS, setting_widgets):
        # a control redraws only the figures it changes (beta changes all of them)
        parts = ("dpo",) if name in DPO_FIELDS else ("kto",) if name in KTO_FIELDS else \
            PARTS if name == "beta" else ("prospect",)
        outputs = tables + [f for p in parts for f in figure_groups[p]]
        handler = partial(redraw, parts=parts)
        if isinstance(widget, gr.Slider):
            widget.release(handler, redraw_inputs, outputs, **common)
        elif isinstance(widget, gr.Number):
            widget.submit(handler, redraw_inputs, outputs, **common)
            widget.blur(handler, redraw_inputs, outputs, **common)
        else:
            widget.input(handler, redraw_inputs, outputs, **common)
    tau_method.change(tau_visibility, [tau_method], [tau_quantile, tau_eta, tau_fixed], api_name=False, queue=False)
    table.select(select_row, {scores_state, view, *setting_widgets}, [selected_state, *render_outputs],
                 api_name=False, show_progress="minimal")

    return InspectTab(refresh_outputs=[adapters], refresh_fn=refresh, score_button=score_button)
