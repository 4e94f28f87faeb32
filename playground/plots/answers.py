"""Figures of the Compare and Fine-tune tabs: answer metrics, training curves, before/after."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import plotly.graph_objects as go
from plotly.subplots import make_subplots

from playground.common.numbers import format_number
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
        for name in order:
            values = finite_values([as_number(r.get(key)) for r in grouped[name]])
            mean = float(values.mean()) if values.size else math.nan
            spread = float(values.std()) if values.size > 1 else 0.0
            hover = (f"<b>{name}</b><br>{title}: {format_number(mean, 4)} {unit}"
                     + (f"<br>± {format_number(spread, 3)} (std over {values.size})" if values.size > 1 else ""))
            fig.add_trace(go.Bar(
                x=[name], y=[mean if values.size else None], name=name, marker_color=variant_color(name),
                legendgroup=name, showlegend=col == 1, hovertext=[hover], hoverinfo="text",
                text=[format_number(mean, 3) if values.size else "n/a"], textposition="outside", cliponaxis=False,
                error_y=dict(type="data", array=[spread], visible=values.size > 1),
            ), row=1, col=col)
        fig.update_yaxes(title_text=unit, row=1, col=col)
    style_figure(fig, "Per-variant answer metrics", height=440, barmode="group", bargap=0.25,
           legend=dict(orientation="h", y=-0.12, x=0.5, xanchor="center"))
    fig.update_xaxes(showticklabels=False)
    return fig


def _column(history: list[dict], key: str) -> list[float]:
    return [as_number(row.get(key)) for row in history]


def training_curves_figure(history: list[dict], method: str) -> go.Figure:
    """Live training curves: loss; implied rewards (chosen/desirable, rejected/undesirable) and margin; preference
    accuracy; and for KTO the reference point z0. ``history`` rows: step, loss, rewards_chosen, rewards_rejected,
    margin, accuracy, z0 (NaN for DPO), learning_rate. Works with 0, 1 or many rows (markers when few)."""
    method = (method or "dpo").lower()
    is_kto = method == "kto"
    titles = ["Loss", "Implied rewards and margin", "Preference accuracy"] + (["Reference point z0"] if is_kto else [])
    fig = make_subplots(rows=1, cols=len(titles), subplot_titles=titles, horizontal_spacing=0.07)
    history = list(history or [])
    steps = [as_number(row.get("step", i + 1)) for i, row in enumerate(history)]
    mode = "lines+markers" if len(history) <= 40 else "lines"
    lrs = _column(history, "learning_rate")
    lr_text = [f"lr {format_number(lr, 3)}" for lr in lrs]
    chosen_name = "desirable reward" if is_kto else "chosen reward"
    rejected_name = "undesirable reward" if is_kto else "rejected reward"
    series = [
        (1, "loss", "loss", VARIANT_COLORS.get(method, VARIANT_COLORS["dpo"]), "solid"),
        (2, "rewards_chosen", chosen_name, GOOD_COLOR, "solid"),
        (2, "rewards_rejected", rejected_name, BAD_COLOR, "solid"),
        (2, "margin", "margin", OKABE_ITO["black"], "dash"),
        (3, "accuracy", "accuracy", OKABE_ITO["blue"], "solid"),
    ]
    if is_kto:
        series.append((4, "z0", "z0 (KL estimate)", OKABE_ITO["reddish_purple"], "solid"))
    for col, key, name, color, dash in series:
        ys = _column(history, key)
        fig.add_trace(go.Scatter(
            x=steps, y=[y if math.isfinite(y) else None for y in ys], mode=mode, name=name,
            line=dict(color=color, dash=dash, width=2.5), marker=dict(size=7), customdata=lr_text,
            hovertemplate=f"step %{{x}}<br>{name}: %{{y:.4g}}<br>%{{customdata}}<extra></extra>",
            showlegend=col == 2,
        ), row=1, col=col)
    units = ["loss (nats)", "β·log-ratio (nats × β)", "share of pairs" if not is_kto else "share (see note)",
             "nats"]
    for col in range(1, len(titles) + 1):
        fig.update_xaxes(title_text="step", row=1, col=col, rangemode="tozero")
        fig.update_yaxes(title_text=units[col - 1], row=1, col=col)
    fig.update_yaxes(range=[-0.02, 1.02], row=1, col=3)
    title = f"{'KTO' if is_kto else 'DPO'} training"
    if not history:
        fig.add_annotation(text="No steps yet: curves appear as training runs.", x=0.5, y=0.5, xref="paper",
                           yref="paper", showarrow=False, font=dict(size=18, color=GUIDE_COLOR))
    # The legend sits under the axes' "step" titles (top-anchored, with room in the bottom margin), never on them.
    style_figure(fig, title, height=450, legend=dict(orientation="h", y=-0.3, yanchor="top", x=0.5, xanchor="center"),
           margin=dict(b=120))
    return fig


def _pick(data: Mapping[str, Any], *keys: str) -> float:
    for key in keys:
        if key in data and data[key] is not None:
            return as_number(data[key])
    return math.nan


def before_after_figure(before: dict, after: dict) -> go.Figure:
    """Held-out preference accuracy and mean margin, before (base / previous adapter) vs after (the new adapter).

    Each dict: ``accuracy`` (or ``preference_accuracy``), ``margin`` (or ``mean_margin``), optional ``label`` and
    ``variant`` (colour; default: ``base`` for before, ``label`` for after).
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
            fig.add_trace(go.Bar(
                x=[label], y=[value if ok else None], name=label, marker_color=variant_color(variant),
                showlegend=col == 1, legendgroup=label, text=[format_number(value, digits)], textposition="outside",
                cliponaxis=False, hovertext=[f"<b>{label}</b><br>{unit}: {format_number(value, 4)}"], hoverinfo="text",
            ), row=1, col=col)
        fig.update_yaxes(title_text=unit, row=1, col=col)
    fig.update_yaxes(range=[0, 1.08], row=1, col=1)
    fig.add_hline(y=0.5, line=dict(color=GUIDE_COLOR, dash="dot"), row=1, col=1,
                  annotation_text="chance", annotation_position="top left")
    style_figure(fig, "Before vs after fine-tuning (held-out pairs)", height=420, showlegend=False)
    return fig
