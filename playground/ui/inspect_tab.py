"""The Inspect tab: score a data set once per adapter, then every slider redraws from the cache with no model call.

Handlers are thin: widgets -> ``score_dataset`` (the Score button only) or ``analyse`` (everything
else) -> ``plots``.
"""

import html
import logging
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Any

import gradio as gr
import pandas as pd

from playground import config, plots
from playground.analysis.curves import kto_value_curves, pair_focus, prospect_curves
from playground.analysis.family import family, family_table
from playground.analysis.scores import DatasetScores
from playground.analysis.views import InspectAnalysis, InspectSettings, analyse, variant_table
from playground.common.numbers import accuracy_text, format_number
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

# The settings widgets, in the order ``settings_from`` takes their values.
SETTING_FIELDS = ("beta", "dpo_loss_type", "label_smoothing", "sft_weight", "kto_loss_type", "desirable_weight",
                  "undesirable_weight",
                  "construction", "likelihood_reduce", "calibrate", "normalise_std", "alpha", "task_metric",
                  "tau_method", "tau_quantile", "tau_ema_eta", "tau_fixed", "loss_aversion", "reward_source")
REWARD_SOURCES = [("R = implied reward β·log π/π_ref", "implied"), ("R = learned reward head R_phi", "head")]

TABLE_COLUMNS = {
    "pair": "pair", "prompt": "prompt", "chosen": "chosen", "rejected": "rejected", "category": "category",
    "ref_logratio": "ref log-ratio", "policy_logratio": "policy log-ratio", "delta": "D",
    "margin": "margin β·D", "dpo_loss": "DPO loss", "grad_weight": "grad weight", "chosen_nll": "chosen NLL/token",
    "reference_chosen_nll": "chosen NLL/token (ref)", "sft_term": "SFT term", "correct": "chosen ranked first",
    "kto_loss_chosen": "KTO loss (chosen)", "kto_loss_rejected": "KTO loss (rejected)",
    "v_chosen": "V chosen", "v_rejected": "V rejected",
}


@dataclass
class InspectTab:
    """What the page builder uses: ``refresh`` re-reads the attached adapters into ``variants``."""

    variants: gr.Dropdown
    refresh: Callable[[], dict]
    score_button: gr.Button


# --------------------------------------------------------------------------------------------------------------------
# Pure helpers (no model call)


def settings_from(*widget_values) -> InspectSettings:
    """Widget values in ``SETTING_FIELDS`` order -> settings (missing or empty values keep their defaults)."""
    data = {name: value for name, value in zip(SETTING_FIELDS, widget_values) if value is not None and value != ""}
    try:
        return InspectSettings.from_mapping(data)
    except (TypeError, ValueError) as exc:
        raise gr.Error(f"A setting is not valid: {exc}") from exc


def summary_markdown(result: InspectAnalysis, scores: DatasetScores) -> str:
    s, f = result.summary, format_number
    source = "precomputed numbers (no model call)" if scores.from_disk else "scored on this server"
    band = "inside" if s.kto_weight_in_band else "outside"
    accuracy = accuracy_text(s.preference_accuracy, s.tied_pairs == s.n_pairs)
    lines = [
        f"**{html.escape(result.variant)}** on {s.n_pairs} pairs ({s.n_samples} unpaired samples), {source}.",
        f"- **DPO** ({s.dpo_loss_type}): preference accuracy **{accuracy}**, mean margin β·D "
        f"**{f(s.mean_margin)}**, mean loss **{f(s.mean_dpo_loss)}** (ln 2 = 0.693 at the reference), mean "
        f"gradient weight {f(s.mean_grad_weight)}.",
        sft_line(s),
        f"- **KTO** ({s.kto_loss_type}): z0 = **{f(s.z0)}** nats, mean loss **{f(s.mean_kto_loss)}**, mean reward "
        f"desirable {f(s.kto_desirable_reward)} / undesirable {f(s.kto_undesirable_reward)}. Weight ratio "
        f"`λ_D·n_D / (λ_U·n_U)` = {f(s.kto_weight_ratio)}, {band} the paper's band [1, 4/3]: "
        f"{html.escape(s.kto_weight_advice)}",
        f"- **V** ({html.escape(s.value_label)}): ranks the chosen answer first on "
        f"**{f(s.value_preference_accuracy)}** of pairs; τ ({s.tau_method}) = **{f(s.tau)}**, "
        f"{f(100 * s.share_gains, 3)}% of samples are gains. Mean value: source document (as written) "
        f"**{f(s.mean_source_objective)}** vs prospect theory (corrected) **{f(s.mean_prospect_value)}** "
        f"(λ = {f(s.loss_aversion)}). Best hybrid α = {f(s.best_alpha)} (accuracy {f(s.best_alpha_accuracy)}).",
    ]
    if result.settings.construction == "reward":
        if s.reward_source == "head":
            lines.append(f"- R_phi, the learned reward head, ranks the chosen answer first on "
                         f"**{f(s.reward_model_accuracy)}** of pairs (each pair scored by a head fitted on the other "
                         "pairs).")
        if s.reward_baseline:
            lines.append(f"- Reward baseline: {html.escape(str(s.reward_baseline))}.")
    for note in dict.fromkeys(result.notes):
        lines.append(f"- _{html.escape(note)}_")
    return "\n".join(lines)


def sft_line(s) -> str:
    """The SFT term in words: how likely the chosen answers stayed, and what the term adds to the DPO loss."""
    f = format_number
    change = s.mean_chosen_nll - s.mean_reference_chosen_nll
    drift = ("less likely than under the reference: the DPO loss was won partly by pushing the chosen answers down"
             if change > 0.05 else "about as likely as under the reference" if abs(change) <= 0.05
             else "more likely than under the reference")
    weight = (f"with weight {f(s.sft_weight)} it adds **{f(s.sft_loss)}** to the mean DPO loss (total "
              f"{f(s.mean_dpo_loss + s.sft_loss)})" if s.sft_weight > 0
              else "the SFT weight is 0, so it adds nothing (move the slider to see what it would add)")
    return (f"- **SFT term** (RPO's NLL on the chosen answer): the chosen answers' mean token NLL is "
            f"**{f(s.mean_chosen_nll)}** nats/token (reference {f(s.mean_reference_chosen_nll)}), {drift}; {weight}.")


def table_frame(result: InspectAnalysis) -> pd.DataFrame:
    frame = result.pairs[list(TABLE_COLUMNS)].rename(columns=TABLE_COLUMNS)
    numeric = frame.select_dtypes("number").columns.drop("pair", errors="ignore")
    frame[numeric] = frame[numeric].round(4)
    return frame


def variants_frame(scores: DatasetScores, settings: InspectSettings) -> pd.DataFrame:
    """The per-variant table as shown: rounded, and the base's accuracy written as a tie."""
    frame = variant_table(scores, settings)
    all_tied = frame.pop("tied pairs") == scores.n_pairs
    frame = frame.round(4)
    frame["preference accuracy"] = [accuracy_text(a, tied, 4) for a, tied in zip(frame["preference accuracy"],
                                                                                  all_tied)]
    return frame


PARTS = ("dpo", "kto", "prospect", "family")  # output groups: 3 DPO, 3 KTO, 4 prospect figures; family table+figure
PART_SIZES = {"dpo": 3, "kto": 3, "prospect": 4, "family": 2}
# Which figure groups a control changes (the summary and both tables are always redrawn).
DPO_FIELDS = ("dpo_loss_type", "label_smoothing", "sft_weight")
KTO_FIELDS = ("kto_loss_type", "desirable_weight", "undesirable_weight")


def render(scores: DatasetScores | None, variant: str | None, selected: int | None,
           settings: InspectSettings, parts: tuple[str, ...] = PARTS) -> list:
    """The outputs of a redraw: summary, per-variant table, per-pair table, then the figures of ``parts`` in
    ``PARTS`` order (all ten by default). Pure: no model call."""
    parts = tuple(p for p in PARTS if p in parts)
    if scores is None:
        note = "Score a data set (or wait for the precomputed numbers) to fill this view."
        empty = [pd.DataFrame() if (part, i) == ("family", 0) else plots.empty_figure(note)
                 for part in parts for i in range(PART_SIZES[part])]  # the family's first output is its table
        return [note, pd.DataFrame(), pd.DataFrame(), *empty]
    if variant not in scores.variants:
        variant = _default_view(scores.variants)
    try:
        result = analyse(scores, variant, settings)
    except (ValueError, KeyError) as exc:
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
            plots.dpo_bars_figure(result.pairs, variant, selected=pair, dpo_loss_type=settings.dpo_loss_type,
                                  sft_weight=float(settings.sft_weight)),
            plots.dpo_waterfall_figure(focus, variant),
        ]
    if "kto" in parts:
        figures += [
            plots.kto_scatter_figure(result.samples, s.z0, samples_selected, settings.kto_loss_type),
            plots.kto_value_curve_figure(result.samples, kto_value_curves(result), samples_selected),
            plots.kto_loss_figure(result.samples, samples_selected),
        ]
    if "prospect" in parts:
        search = result.alpha_search
        figures += [
            plots.value_histogram_figure(result.samples, result.taus, settings.tau_method, result.value_label),
            plots.prospect_bars_figure(result.samples, s.tau, settings.loss_aversion, result.value_label,
                                       samples_selected),
            plots.objective_comparison_figure(result.samples, prospect_curves(result), result.value_label,
                                              samples_selected),
            plots.alpha_search_figure(search.alphas, search.accuracies, search.best_alpha, settings.alpha,
                                      config.VALUES.alpha_highlight),
        ]
    if "family" in parts:
        figures += family_outputs(scores, variant, result, float(settings.beta))
    return [summary_markdown(result, scores), variants_frame(scores, settings), table_frame(result), *figures]


def family_outputs(scores: DatasetScores, variant: str, result: InspectAnalysis, beta: float) -> list:
    """(table, figure) of the method family on the variant's cached log-probs (``analysis.family``)."""
    members = family(scores.side(variant), scores.reference, beta)
    table = family_table(members)
    titles = list(table["objective"])
    figure = plots.family_figure(titles, list(table["chosen ranked first"]), list(table["reference"] == "none"),
                                 result.dpo.margin.detach().double().numpy(),
                                 {title: member.loss for title, member in zip(titles, members)}, variant)
    return [table.round(4), figure]


def _default_view(variants: list[str]) -> str:
    adapters = [v for v in variants if v != config.BASE_VARIANT]
    return adapters[0] if adapters else (variants[0] if variants else config.BASE_VARIANT)


DATA_KINDS = {DATA_HELDOUT: "heldout", DATA_VOTES: "votes", DATA_UPLOAD: "upload"}


def load_dataset(services: Services, choice: str, upload: Any, session_id: str | None,
                 intact_rows: bool = False) -> tuple[pd.DataFrame, str]:
    """The data set the radio names, as a frame and a label (``Services.inspect_dataset``: an upload gets the same
    report and verdict as on Fine-tune)."""
    path = upload if isinstance(upload, str) or upload is None else getattr(upload, "name", None) or upload.get("path")
    try:
        return services.inspect_dataset(DATA_KINDS.get(choice, str(choice)), session_id, path, bool(intact_rows))
    except ServiceInputError as exc:
        raise gr.Error(str(exc)) from None


# --------------------------------------------------------------------------------------------------------------------
# The tab


def _settings_controls() -> dict[str, gr.components.Component]:
    """The settings widgets, keyed by ``InspectSettings`` field: the losses, V's construction, its options, tau."""
    d, r = DEFAULTS, config.SLIDERS
    w: dict[str, gr.components.Component] = {}
    with gr.Row():
        w["beta"] = gr.Slider(r.beta.low, r.beta.high, value=d.beta, step=r.beta.step, label="β (temperature)")
        w["dpo_loss_type"] = gr.Dropdown(list(DPO_LOSS_TYPES), value=d.dpo_loss_type, label="DPO loss")
        w["label_smoothing"] = gr.Slider(r.label_smoothing.low, r.label_smoothing.high, value=d.label_smoothing,
                                         step=r.label_smoothing.step, label="Label smoothing ε (sigmoid, robust)")
        w["sft_weight"] = gr.Slider(r.sft_weight.low, r.sft_weight.high, value=d.sft_weight, step=r.sft_weight.step,
                                    label="SFT weight (NLL of the chosen answer, RPO)")
        w["kto_loss_type"] = gr.Dropdown(list(KTO_LOSS_TYPES), value=d.kto_loss_type, label="KTO loss")
        w["desirable_weight"] = gr.Slider(r.kto_weight.low, r.kto_weight.high, value=d.desirable_weight,
                                          step=r.kto_weight.step, label="λ_D (desirable weight)")
        w["undesirable_weight"] = gr.Slider(r.kto_weight.low, r.kto_weight.high, value=d.undesirable_weight,
                                            step=r.kto_weight.step, label="λ_U (undesirable weight)")
    with gr.Row():
        w["construction"] = gr.Radio(list(VALUE_CONSTRUCTIONS), value=d.construction, label="V construction")
        w["likelihood_reduce"] = gr.Radio(list(LIKELIHOOD_REDUCTIONS), value=d.likelihood_reduce,
                                          label="Likelihood: token log-probs")
        w["calibrate"] = gr.Checkbox(value=d.calibrate, label="Likelihood: calibrate against the reference")
    with gr.Row():
        w["reward_source"] = gr.Radio(REWARD_SOURCES, value=d.reward_source, label="Reward: which R",
                                      elem_id="pg-inspect-reward-source")
        w["normalise_std"] = gr.Checkbox(value=d.normalise_std, label="Reward: divide by std")
        w["alpha"] = gr.Slider(r.alpha.low, r.alpha.high, value=d.alpha, step=r.alpha.step,
                               label="Hybrid α (weight on P_LM)")
        w["task_metric"] = gr.Dropdown(list(TASK_METRICS), value=d.task_metric, label="Task metric")
    with gr.Row():
        w["tau_method"] = gr.Radio(list(TAU_METHODS), value=d.tau_method, label="τ method")
        w["tau_quantile"] = gr.Slider(r.tau_quantile.low, r.tau_quantile.high, value=d.tau_quantile,
                                      step=r.tau_quantile.step, label="τ quantile q",
                                      visible=d.tau_method == "quantile")
        w["tau_ema_eta"] = gr.Slider(r.tau_ema_eta.low, r.tau_ema_eta.high, value=d.tau_ema_eta,
                                     step=r.tau_ema_eta.step, label="τ EMA step η", visible=d.tau_method == "ema")
        w["tau_fixed"] = gr.Number(value=d.tau_fixed, label="τ task bar (fixed, in V units)",
                                   visible=d.tau_method == "fixed")
        w["loss_aversion"] = gr.Slider(r.loss_aversion.low, r.loss_aversion.high, value=d.loss_aversion,
                                       step=r.loss_aversion.step, label="Loss aversion λ")
    assert set(w) == set(SETTING_FIELDS)
    return w


def _views(initial: list) -> tuple[list, dict[str, list]]:
    """The summary, both tables and the ten figures in their sub-tabs: (render outputs in ``render`` order, the
    figures of each part)."""
    summary = gr.Markdown(initial[0])
    variant_table_ = gr.DataFrame(initial[1], label="All scored variants (current settings)", interactive=False,
                                  max_height=220)
    table = gr.DataFrame(initial[2], label="Per pair (click a column header to sort, a row to focus the pair)",
                         interactive=False, max_height=420, wrap=False, pinned_columns=2, show_search="search")
    with gr.Tabs():
        with gr.Tab("DPO"):
            with gr.Row():
                dpo = [gr.Plot(initial[3], show_label=False), gr.Plot(initial[4], show_label=False)]
            dpo.append(gr.Plot(initial[5], show_label=False))
        with gr.Tab("KTO"):
            with gr.Row():
                kto = [gr.Plot(initial[6], show_label=False), gr.Plot(initial[7], show_label=False)]
            kto.append(gr.Plot(initial[8], show_label=False))
        with gr.Tab("Prospect view (source material)"):
            gr.Markdown("The source material's value V(x, y), thresholds τ and objective. Its written objective "
                        "puts λ on gains and uses no labels; prospect theory (and KTO) weighs losses by λ. Both are "
                        "shown.")
            with gr.Row():
                prospect = [gr.Plot(initial[9], show_label=False), gr.Plot(initial[10], show_label=False)]
            prospect += [gr.Plot(initial[11], show_label=False), gr.Plot(initial[12], show_label=False)]
        with gr.Tab("Method family"):
            gr.Markdown("DPO, KTO, SimPO, ORPO, APO-zero, APO-down and BCO computed from the same cached log-probs "
                        "(no model call): what each needs, its mean loss, and how often its own reward ranks the "
                        "chosen answer first. SimPO and ORPO read the variant alone (no reference model), so they "
                        "rank pairs even for the base, where every reference-based reward is 0. DPO, APO and BCO "
                        "use β above; SimPO and ORPO their own defaults.", elem_classes=["pg-note"])
            family = [gr.DataFrame(initial[13], label="The method family on these pairs", interactive=False,
                                   elem_id="pg-in-family-table"),
                      gr.Plot(initial[14], show_label=False, elem_id="pg-in-family-plot")]
    return ([summary, variant_table_, table, *dpo, *kto, *prospect, *family],
            {"dpo": dpo, "kto": kto, "prospect": prospect, "family": family})


def _parts_changed_by(name: str) -> tuple[str, ...]:
    """The figure groups a setting changes (beta changes all of them; the summary and tables always redraw)."""
    if name in DPO_FIELDS:
        return ("dpo",)
    if name in KTO_FIELDS:
        return ("kto",)
    return PARTS if name == "beta" else ("prospect",)  # the family uses beta only


def selected_pair(evt: gr.SelectData) -> int | None:
    """The pair number of the table row a click selected (its first column), or None."""
    row = getattr(evt, "row_value", None)
    try:
        return int(row[0]) if row else int(evt.index[0])
    except (TypeError, ValueError, IndexError):
        return None


def build_inspect_tab(services: Services, session: gr.BrowserState) -> InspectTab:
    """Build the tab inside the caller's ``gr.Tab("Inspect")``. ``session`` is the page's session-id state (for
    "this session's votes")."""
    heldout = services.heldout_pairs
    initial_scores = services.precomputed_scores()
    initial_view = _default_view(initial_scores.variants) if initial_scores else None
    initial = render(initial_scores, initial_view, None, DEFAULTS)
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
            intact_rows = gr.Checkbox(False, label="Use the intact rows of a file that looks cut off",
                                      visible=False, elem_id="pg-in-intact")
        with gr.Column(scale=2):
            names = services.variant_names()
            adapters = gr.Dropdown(names, value=names, multiselect=True, label="Variants to score",
                                   info="The reference (base, adapters off) is always scored.")
            score_button = gr.Button("Score", variant="primary")
        with gr.Column(scale=1):
            view = gr.Dropdown(initial_scores.variants if initial_scores else [], value=initial_view,
                               label="Show variant", interactive=True)
    status = gr.Markdown("Showing precomputed numbers for the bundled held-out pairs." if initial_scores else
                         "Press **Score** to compute log-probs for the chosen data set.")
    with gr.Accordion("Settings (redraw instantly, no model call)", open=True):
        widgets = _settings_controls()
    render_outputs, figure_groups = _views(initial)

    # ---- handlers: each gets one dict, component -> value --------------------------------------------------------
    def settings_of(data) -> InspectSettings:
        return settings_from(*[data[widgets[name]] for name in SETTING_FIELDS])

    def score(data, progress=gr.Progress()):
        settings = settings_of(data)
        frame, what = load_dataset(services, data[dataset], data[upload], data[session], data[intact_rows])
        wanted = [v for v in (data[adapters] or []) if v in services.variant_names()] or [config.BASE_VARIANT]
        try:
            scores = services.score_dataset(frame, wanted, lambda f, m: progress(f, desc=m))
        except (KeyError, ValueError) as exc:
            raise gr.Error(str(exc).strip("'\"")) from exc
        shown = _default_view(scores.variants)
        message = f"Scored {what}: {scores.n_pairs} pairs under {', '.join(scores.variants)} (+ reference)."
        return [scores, None, gr.update(choices=scores.variants, value=shown), message,
                *render(scores, shown, None, settings)]

    def redraw(data, parts=PARTS):
        return render(data[scores_state], data[view], data[selected_state], settings_of(data), parts)

    def select_row(data, evt: gr.SelectData):
        selected = selected_pair(evt)
        return [selected, *render(data[scores_state], data[view], selected, settings_of(data))]

    def tau_visibility(method):
        return (gr.update(visible=method == "quantile"), gr.update(visible=method == "ema"),
                gr.update(visible=method == "fixed"))

    def refresh():
        return gr.update(choices=services.variant_names())

    setting_inputs = set(widgets.values())
    dataset.change(lambda c: (gr.update(visible=c == DATA_UPLOAD),) * 2, [dataset], [upload, intact_rows],
                   api_name=False, queue=False)
    score_button.click(score, {dataset, upload, intact_rows, adapters, session, *setting_inputs},
                       [scores_state, selected_state, view, status, *render_outputs], api_name=False,
                       concurrency_limit=1, concurrency_id="inspect-score")
    redraw_inputs = {scores_state, view, selected_state, *setting_inputs}
    common = dict(api_name=False, show_progress="minimal", trigger_mode="always_last")
    view.input(redraw, redraw_inputs, render_outputs, **common)
    for name, widget in widgets.items():
        parts = _parts_changed_by(name)
        outputs = render_outputs[:3] + [f for part in parts for f in figure_groups[part]]
        handler = partial(redraw, parts=parts)
        if isinstance(widget, gr.Slider):
            widget.release(handler, redraw_inputs, outputs, **common)
        elif isinstance(widget, gr.Number):
            widget.submit(handler, redraw_inputs, outputs, **common)
            widget.blur(handler, redraw_inputs, outputs, **common)
        else:
            widget.input(handler, redraw_inputs, outputs, **common)
    widgets["tau_method"].change(tau_visibility, [widgets["tau_method"]],
                                 [widgets["tau_quantile"], widgets["tau_ema_eta"], widgets["tau_fixed"]],
                                 api_name=False, queue=False)
    table = render_outputs[2]
    table.select(select_row, {scores_state, view, *setting_inputs}, [selected_state, *render_outputs],
                 api_name=False, show_progress="minimal")
    return InspectTab(variants=adapters, refresh=refresh, score_button=score_button)
