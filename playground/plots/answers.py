"""Figures of the Compare and Fine-tune tabs: answer metrics, training curves, before/after."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import plotly.graph_objects as go
from plotly.subplots import make_subplots

from playground.common.numbers import TIE_TEXT, format_number
from playground.plots.style import (
    BAD_COLOR,
    GOOD_COLOR,
    GUIDE_COLOR,
    OKABE_ITO,
    VARIANT_COLORS,
    as_number,
    empty_figure,
    finite_values,
    style_figure,
    variant_color,
)

COMPARE_METRICS = (
    ("value", "V(x, y)", "V (construction units)"),
    ("implied_reward", "Implied reward β·log π/π_ref", "reward (nats × β)"),
    ("mean_logp", "Mean token log-prob", "nats per token"),
    ("length", "Answer length", "tokens"),
)


def bar_axis_range(ends: list[float], headroom: float = 0.2) -> list[float] | None:
    """A value axis for bars from 0 to ``ends`` (bar tops and error-bar ends) with ``headroom`` of the span free
    beyond the outermost bar on each side that has one, so a value printed outside a bar stays inside the panel and
    clear of the panel's title; None (autorange) when there is no bar."""
    if not ends:
        return None
    low, high = min(0.0, *ends), max(0.0, *ends)
    if low == high:  # every bar is 0 (the base's implied reward): a symmetric axis around it
        return [-1.0, 1.0]
    pad = headroom * (high - low)
    return [low - pad if low < 0 else low, high + pad if high > 0 else high]


def compare_metrics_figure(rows: list[dict]) -> go.Figure:
    """Small multiples, one panel per metric (V, implied reward, mean token log-prob, length), one bar per variant.

    ``rows``: dicts with keys variant, value, implied_reward, mean_logp, length (a missing or NaN metric shows no
    bar). Several rows of one variant (several prompts) are averaged; the hover gives the mean, the spread and n.
    """
    if not rows:
        return empty_figure("Generate answers to compare the variants.")
    order: list[str] = []
    grouped: dict[str, list[dict]] = {}
    for row in rows:
        name = str(row.get("variant", "?"))
        if name not in grouped:
            order.append(name)
            grouped[name] = []
        grouped[name].append(row)
    fig = make_subplots(rows=1, cols=len(COMPARE_METRICS), subplot_titles=[t for _, t, _ in COMPARE_METRICS],
                        horizontal_spacing=0.08)
    for col, (key, title, unit) in enumerate(COMPARE_METRICS, start=1):
        ends: list[float] = []
        for name in order:
            values = finite_values([as_number(r.get(key)) for r in grouped[name]])
            mean = float(values.mean()) if values.size else math.nan
            spread = float(values.std()) if values.size > 1 else 0.0
            if values.size:
                ends += [mean - spread, mean + spread]
            hover = (f"<b>{name}</b><br>{title}: {format_number(mean, 4)} {unit}"
                     + (f"<br>± {format_number(spread, 3)} (std over {values.size})" if values.size > 1 else ""))
            fig.add_trace(go.Bar(
                x=[name], y=[mean if values.size else None], name=name, marker_color=variant_color(name),
                legendgroup=name, showlegend=col == 1, hovertext=[hover], hoverinfo="text",
                text=[format_number(mean, 3) if values.size else "n/a"], textposition="outside", cliponaxis=False,
                error_y=dict(type="data", array=[spread], visible=values.size > 1),
            ), row=1, col=col)
        fig.update_yaxes(title_text=unit, row=1, col=col, range=bar_axis_range(ends))
    style_figure(fig, "Per-variant answer metrics", height=440, barmode="group", bargap=0.25,
           legend=dict(orientation="h", y=-0.12, x=0.5, xanchor="center"))
    fig.update_xaxes(showticklabels=False)
    return fig


def _column(history: list[dict], key: str) -> list[float]:
    return [as_number(row.get(key)) for row in history]


def training_curves_figure(history: list[dict], method: str, evaluations: list[dict] | None = None,
                           stop: dict | None = None, drift_budget: float = 0.0) -> go.Figure:
    """Live training curves, 2 x 2: the loss (and its SFT part) with the held-out loss; implied rewards and margin;
    preference accuracy on the batch and on the held-out split; the held-out drift (mean |log π − log π_ref| per
    chosen token) with its budget, and for KTO the reference point z0. An early stop is a vertical line with its
    reason. ``history`` rows: step, loss, rewards_chosen, rewards_rejected, margin, accuracy, z0 (NaN for DPO),
    sft_loss, learning_rate; ``evaluations``: step, loss, accuracy, drift. Works with 0, 1 or many rows."""
    method = (method or "dpo").lower()
    is_kto = method == "kto"
    titles = ["Loss", "Implied rewards and margin", "Preference accuracy",
              "Held-out drift and z0" if is_kto else "Held-out drift from the base"]
    fig = make_subplots(rows=2, cols=2, subplot_titles=titles, horizontal_spacing=0.1, vertical_spacing=0.2)
    history, evaluations = list(history or []), list(evaluations or [])
    steps = [as_number(row.get("step", i + 1)) for i, row in enumerate(history)]
    mode = "lines+markers" if len(history) <= 40 else "lines"
    lr_text = [f"lr {format_number(lr, 3)}" for lr in _column(history, "learning_rate")]
    chosen_name = "desirable reward" if is_kto else "chosen reward"
    rejected_name = "undesirable reward" if is_kto else "rejected reward"
    # the batch loss is the preference loss plus the SFT term: drawn apart, so the preference part sits beside the
    # held-out loss (a preference loss too) on one scale
    history = [{**row, "preference_loss": as_number(row.get("loss")) - _sft_part(row)} for row in history]
    series = [
        ((1, 1), "preference_loss", f"training {method.upper()} loss",
         VARIANT_COLORS.get(method, VARIANT_COLORS["dpo"]), "solid"),
        ((1, 1), "sft_loss", "SFT term w·NLL", OKABE_ITO["sky_blue"], "dot"),
        ((1, 2), "rewards_chosen", chosen_name, GOOD_COLOR, "solid"),
        ((1, 2), "rewards_rejected", rejected_name, BAD_COLOR, "solid"),
        ((1, 2), "margin", "margin", OKABE_ITO["black"], "dash"),
        ((2, 1), "accuracy", "batch accuracy", OKABE_ITO["blue"], "solid"),
    ]
    if is_kto:
        series.append(((2, 2), "z0", "z0 (KL estimate)", OKABE_ITO["reddish_purple"], "solid"))
    for (row, col), key, name, color, dash in series:
        ys = _column(history, key)
        if key == "sft_loss" and not any(math.isfinite(y) and y > 0 for y in ys):
            continue  # no SFT term in this run
        fig.add_trace(go.Scatter(
            x=steps, y=[y if math.isfinite(y) else None for y in ys], mode=mode, name=name,
            line=dict(color=color, dash=dash, width=2.5), marker=dict(size=7), customdata=lr_text,
            hovertemplate=f"step %{{x}}<br>{name}: %{{y:.4g}}<br>%{{customdata}}<extra></extra>",
        ), row=row, col=col)
    _held_out_series(fig, evaluations, drift_budget)
    _stop_marker(fig, stop, evaluations)
    units = {(1, 1): "loss (nats)", (1, 2): "β·log-ratio (nats × β)", (2, 1): "share of pairs",
             (2, 2): "nats per token" if not is_kto else "nats"}
    for (row, col), unit in units.items():
        fig.update_xaxes(title_text="step", row=row, col=col, rangemode="tozero")
        fig.update_yaxes(title_text=unit, row=row, col=col)
    fig.update_yaxes(range=[-0.02, 1.05], row=2, col=1)
    if not history:
        fig.add_annotation(text="No steps yet: curves appear as training runs.", x=0.5, y=0.5, xref="paper",
                           yref="paper", showarrow=False, font=dict(size=18, color=GUIDE_COLOR))
    # The legend sits under the lower axes' "step" titles (top-anchored, with room in the bottom margin).
    style_figure(fig, f"{'KTO' if is_kto else 'DPO'} training", height=640,
                 legend=dict(orientation="h", y=-0.14, yanchor="top", x=0.5, xanchor="center"), margin=dict(b=130))
    return fig


def _sft_part(row: Mapping[str, Any]) -> float:
    value = as_number(row.get("sft_loss"))
    return value if math.isfinite(value) else 0.0


def _held_out_series(fig: go.Figure, evaluations: list[dict], drift_budget: float) -> None:
    """The held-out evaluations: loss beside the training loss, accuracy beside the batch's, drift with its budget."""
    if not evaluations:
        return
    steps = [as_number(e.get("step")) for e in evaluations]
    for (row, col), key, name, color in (((1, 1), "loss", "held-out DPO loss", OKABE_ITO["black"]),
                                         ((2, 1), "accuracy", "held-out accuracy", OKABE_ITO["black"]),
                                         ((2, 2), "drift", "held-out drift", OKABE_ITO["orange"])):
        ys = [as_number(e.get(key)) for e in evaluations]
        fig.add_trace(go.Scatter(x=steps, y=[y if math.isfinite(y) else None for y in ys], mode="lines+markers",
                                 name=name, line=dict(color=color, width=2.5, dash="dashdot"),
                                 marker=dict(size=9, symbol="diamond"),
                                 hovertemplate=f"step %{{x}}<br>{name}: %{{y:.4g}}<extra></extra>"), row=row, col=col)
    if drift_budget and drift_budget > 0:
        fig.add_hline(y=drift_budget, line=dict(color=BAD_COLOR, dash="dot"), row=2, col=2,
                      annotation_text=f"budget {format_number(drift_budget, 3)}", annotation_position="top left")


def _stop_marker(fig: go.Figure, stop: dict | None, evaluations: list[dict]) -> None:
    """A vertical line at the early stop and the kept step, the reason under the title (a kept step without a stop:
    ``stop`` with an empty reason)."""
    if not stop:
        return
    stopped_at = max((as_number(e.get("step")) for e in evaluations if e.get("stop")), default=math.nan)
    kept = as_number(stop.get("best_step"))
    for row, col in ((1, 1), (1, 2), (2, 1), (2, 2)):
        if math.isfinite(stopped_at):
            fig.add_vline(x=stopped_at, line=dict(color=BAD_COLOR, dash="dash"), row=row, col=col)
        if math.isfinite(kept) and kept != stopped_at:
            fig.add_vline(x=kept, line=dict(color=GOOD_COLOR, dash="dot"), row=row, col=col)
    text = (f"Stopped early: {stop.get('reason')}. Kept the adapter of step {format_number(kept, 3)}."
            if stop.get("reason") else f"Kept the adapter of step {format_number(kept, 3)} (lowest held-out loss).")
    fig.add_annotation(text=text, x=0.0, y=1.08, xref="paper", yref="paper", xanchor="left", showarrow=False,
                       font=dict(size=13, color=BAD_COLOR if stop.get("reason") else GOOD_COLOR))


def _pick(data: Mapping[str, Any], *keys: str) -> float:
    for key in keys:
        if key in data and data[key] is not None:
            return as_number(data[key])
    return math.nan


def before_after_figure(before: dict, after: dict) -> go.Figure:
    """Held-out preference accuracy and mean margin, before (base / previous adapter) vs after (the new adapter).

    Each dict: ``accuracy`` (or ``preference_accuracy``), ``margin`` (or ``mean_margin``), optional ``label``,
    ``variant`` (colour; default: ``base`` for before, ``label`` for after) and ``tied`` (every pair ties).
    """
    before, after = dict(before or {}), dict(after or {})
    if not before and not after:
        return empty_figure("Train an adapter to see held-out metrics before and after.")
    fig = make_subplots(rows=1, cols=2, subplot_titles=["Held-out preference accuracy", "Held-out mean margin"],
                        horizontal_spacing=0.15)
    entries = []
    for default_label, default_variant, data in (("before", "base", before), ("after", None, after)):
        label = str(data.get("label") or default_label)
        variant = str(data.get("variant") or default_variant or label)
        entries.append((label, variant, data))
    for col, (keys, unit, digits) in enumerate(((("accuracy", "preference_accuracy"), "share of pairs", 3),
                                                (("margin", "mean_margin"), "β·Δ log-ratio (nats × β)", 3)),
                                               start=1):
        for label, variant, data in entries:
            value = _pick(data, *keys)
            ok = math.isfinite(value)
            # the base ties every pair (pi = pi_ref): its accuracy is a coin flip, written as such
            text = TIE_TEXT if data.get("tied") and col == 1 else format_number(value, digits)
            fig.add_trace(go.Bar(
                x=[label], y=[value if ok else None], name=label, marker_color=variant_color(variant),
                showlegend=col == 1, legendgroup=label, text=[text], textposition="outside",
                cliponaxis=False, hovertext=[f"<b>{label}</b><br>{unit}: {format_number(value, 4)}"], hoverinfo="text",
            ), row=1, col=col)
        fig.update_yaxes(title_text=unit, row=1, col=col)
    fig.update_yaxes(range=[0, 1.08], row=1, col=1)
    fig.add_hline(y=0.5, line=dict(color=GUIDE_COLOR, dash="dot"), row=1, col=1,
                  annotation_text="chance", annotation_position="bottom right")
    style_figure(fig, "Before vs after fine-tuning (held-out pairs)", height=420, showlegend=False)
    return fig


def runs_curves_figure(histories: Mapping[str, list[dict]], metric: str = "loss") -> go.Figure:
    """One line per run of ``metric`` (a key of the per-step history: loss, accuracy, margin, ...) against the
    step, in each run's variant colour, so runs with different settings can be read side by side."""
    drawn = {name: rows for name, rows in histories.items() if any(metric in r for r in rows)}
    if not drawn:
        return empty_figure(f"No run here recorded '{metric}' per step.")
    fig = go.Figure()
    for name, rows in drawn.items():
        steps = [r.get("step") for r in rows]
        fig.add_trace(go.Scatter(x=steps, y=[as_number(r.get(metric)) for r in rows], mode="lines+markers",
                                 name=name, line=dict(color=variant_color(name), width=3), marker=dict(size=5)))
    style_figure(fig, f"{metric} per step", height=420, xaxis_title="optimizer step", yaxis_title=metric,
                 legend=dict(orientation="h", y=1.0, x=1.0, xanchor="right", yanchor="bottom"))
    return fig
