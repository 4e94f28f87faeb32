"""Inspect's prospect-view figures: V and its thresholds, gains and losses, the source objective
beside the corrected one, the hybrid's alpha search."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from playground.common.numbers import format_number
from playground.plots.style import (
    BAD_COLOR,
    CORRECT_COLOR,
    GOOD_COLOR,
    GUIDE_COLOR,
    LABEL_COLORS,
    LABEL_SYMBOLS,
    OKABE_ITO,
    SOURCE_COLOR,
    TAU_COLORS,
    TAU_DASH,
    as_number,
    bar_outline,
    column_values,
    empty_figure,
    finite_values,
    is_empty,
    sample_hover,
    sample_labels,
    selected_indices,
    style_figure,
)

TAU_NAMES = {"quantile": "quantile", "ema": "EMA", "fixed": "task bar (fixed)", "z0": "z0 (KTO)"}


def value_histogram_figure(samples: Any, taus: Mapping[str, float], selected_method: str | None = None,
                           value_label: str = "V") -> go.Figure:
    """Histogram of V(x, y) by label, with one labelled vertical line per tau method (the selected one thicker)."""
    if is_empty(samples):
        return empty_figure("Score a data set to see V(x, y).")
    v = column_values(samples, "V")
    labels = sample_labels(samples)
    fig = go.Figure()
    for label in ("desirable", "undesirable"):
        mask = np.array([lab == label for lab in labels])
        if mask.any():
            fig.add_trace(go.Histogram(x=v[mask], name=f"{label} (chosen)" if label == "desirable" else
                                       f"{label} (rejected)", marker_color=LABEL_COLORS[label], opacity=0.65,
                                       nbinsx=30, hovertemplate="V %{x}<br>count %{y}<extra></extra>"))
    finite_v = finite_values(v)
    lo, hi = (float(finite_v.min()), float(finite_v.max())) if finite_v.size else (0.0, 1.0)
    span = max(hi - lo, 1e-9)
    for k, (method, tau) in enumerate(taus.items()):
        tau = as_number(tau)
        if not math.isfinite(tau):
            continue
        chosen = method == selected_method
        off_scale = tau < lo - 2 * span or tau > hi + 2 * span
        name = f"τ {TAU_NAMES.get(method, method)} = {format_number(tau, 3)}" + (" (off scale)" if off_scale else "")
        shown = min(max(tau, lo - 2 * span), hi + 2 * span)
        fig.add_trace(go.Scatter(
            x=[shown, shown], y=[0, 1], yaxis="y2", mode="lines", name=name + (" ← selected" if chosen else ""),
            line=dict(color=TAU_COLORS.get(method, GUIDE_COLOR), dash=TAU_DASH.get(method, "solid"),
                      width=5 if chosen else 2),
            hovertemplate=f"{name}<extra></extra>"))
        fig.add_annotation(x=shown, y=1.0 - 0.08 * k, yref="paper", text=TAU_NAMES.get(method, method),
                           showarrow=False, xanchor="left", font=dict(size=13, color=TAU_COLORS.get(method)))
    style_figure(fig, "V(x, y) and the thresholds τ", height=440, barmode="overlay",
           legend=dict(orientation="h", y=-0.3, x=0.5, xanchor="center"),
           yaxis2=dict(overlaying="y", range=[0, 1], visible=False))
    fig.update_xaxes(title_text=f"V: {value_label}")
    fig.update_yaxes(title_text="samples")
    return fig


def prospect_bars_figure(samples: Any, tau: float, loss_aversion: float, value_label: str = "V",
                         selected: Sequence[int] | None = None) -> go.Figure:
    """Diverging bars per sample, sorted by V: the gain max(0, V − τ) up, the λ-weighted loss λ·max(0, τ − V) down."""
    if is_empty(samples):
        return empty_figure("Score a data set to see gains and losses.")
    v = column_values(samples, "V")
    order = np.argsort(np.where(np.isfinite(v), v, -np.inf), kind="stable")
    gain, loss = column_values(samples, "gain")[order], column_values(samples, "weighted_loss")[order]
    index = (np.asarray(samples["sample"]) if "sample" in samples else np.arange(len(samples)))[order]
    hover_all = sample_hover(samples, [("V", "V", ""), ("gain", "gain", ""), ("weighted_loss", "λ·loss", ""),
                                        ("prospect_value", "prospect value", "")])
    hover = [hover_all[k] for k in order]
    x = np.arange(len(order))
    selected_set = selected_indices(selected)
    fig = go.Figure()
    fig.add_trace(go.Bar(x=x, y=gain, name="gain max(0, V − τ)", customdata=index, hovertext=hover,
                         hoverinfo="text", marker=dict(color=GOOD_COLOR, line=bar_outline(index, selected_set))))
    fig.add_trace(go.Bar(x=x, y=-loss, name=f"loss −λ·max(0, τ − V), λ = {format_number(loss_aversion, 3)}",
                         customdata=index, hovertext=hover, hoverinfo="text",
                         marker=dict(color=BAD_COLOR, line=bar_outline(index, selected_set))))
    style_figure(fig, f"Gains and λ-weighted losses around τ = {format_number(tau, 3)}", height=420, barmode="relative",
           bargap=0.05, legend=dict(orientation="h", y=-0.25, x=0.5, xanchor="center"))
    fig.update_xaxes(title_text="samples, sorted by V (low → high)", showticklabels=False)
    fig.update_yaxes(title_text=f"value ({value_label})")
    return fig


SOURCE_LABEL = "source document (as written)"
CORRECTED_LABEL = "prospect theory (corrected)"


def objective_comparison_figure(samples: Any, curves: Mapping[str, Any] | None, value_label: str = "V",
                                selected: Sequence[int] | None = None) -> go.Figure:
    """The source document's objective λ·ReLU(V − τ) − ReLU(τ − V) beside prospect theory's ReLU(V − τ) −
    λ·ReLU(τ − V), each as a function of V with the samples on it and its mean in the panel title."""
    if is_empty(samples) or not curves:
        return empty_figure("Score a data set to compare the objectives.")
    src_mean = float(np.nanmean(column_values(samples, "source_objective"))) if len(samples) else math.nan
    cor_mean = float(np.nanmean(column_values(samples, "prospect_value"))) if len(samples) else math.nan
    lam = curves.get("loss_aversion", math.nan)
    fig = make_subplots(rows=1, cols=2, shared_yaxes=False, horizontal_spacing=0.1, subplot_titles=[
        f"{SOURCE_LABEL}:<br>λ·ReLU(V−τ) − ReLU(τ−V), mean {format_number(src_mean, 3)}",
        f"{CORRECTED_LABEL}:<br>ReLU(V−τ) − λ·ReLU(τ−V), mean {format_number(cor_mean, 3)}"])
    grid = np.asarray(curves["V"], dtype=float)
    labels = sample_labels(samples)
    v = column_values(samples, "V")
    index = np.asarray(samples["sample"]) if "sample" in samples else np.arange(len(samples))
    selected_set = selected_indices(selected)
    for col, key, column, color, name in ((1, "source", "source_objective", SOURCE_COLOR, SOURCE_LABEL),
                                          (2, "corrected", "prospect_value", CORRECT_COLOR, CORRECTED_LABEL)):
        fig.add_trace(go.Scatter(x=grid, y=np.asarray(curves[key]), mode="lines", name=name,
                                 line=dict(color=color, width=3),
                                 hovertemplate=f"{name}<br>V %{{x:.3g}}<br>value %{{y:.4g}}<extra></extra>"),
                      row=1, col=col)
        y = column_values(samples, column)
        hover = sample_hover(samples, [("V", "V", ""), (column, name, "")])
        for label in ("desirable", "undesirable"):
            mask = np.array([lab == label for lab in labels])
            if mask.any():
                fig.add_trace(go.Scatter(
                    x=v[mask], y=y[mask], mode="markers", name=label, legendgroup=label, showlegend=col == 1,
                    customdata=index[mask], hovertext=[h for h, m in zip(hover, mask) if m], hoverinfo="text",
                    marker=dict(size=[15 if int(i) in selected_set else 9 for i in index[mask]],
                                color=LABEL_COLORS[label], symbol=LABEL_SYMBOLS[label],
                                line=dict(color=OKABE_ITO["black"],
                                          width=[3 if int(i) in selected_set else 0 for i in index[mask]]))),
                    row=1, col=col)
        fig.add_vline(x=float(curves.get("tau", 0.0)), line=dict(color=GUIDE_COLOR, dash="dash"), row=1, col=col)
        fig.update_xaxes(title_text=f"V ({value_label})", row=1, col=col)
    fig.update_yaxes(title_text="per-sample objective", row=1, col=1)
    fig.update_yaxes(title_text="per-sample value", row=1, col=2)
    fig.add_annotation(text=("The source puts λ on gains and uses no labels: minimising its mean pushes every V down. "
                             f"Prospect theory weighs losses by λ = {format_number(lam, 3)}."),
                       x=0.5, y=-0.32, xref="paper", yref="paper", showarrow=False, font=dict(size=14))
    style_figure(fig, "Source objective vs corrected prospect value", height=500,
           legend=dict(orientation="h", y=-0.45, x=0.5, xanchor="center"), margin=dict(b=140, t=110))
    return fig


def alpha_search_figure(alphas: Sequence[float], accuracies: Sequence[float], best_alpha: float | None = None,
                        current_alpha: float | None = None,
                        highlight: tuple[float, float] = (0.3, 0.7)) -> go.Figure:
    """Hybrid V's preference accuracy over the α grid, the source's usual range 0.3..0.7 shaded, best and current α
    marked."""
    alphas, accuracies = list(alphas), list(accuracies)
    if not alphas:
        return empty_figure("Score a data set to search α.")
    fig = go.Figure()
    fig.add_vrect(x0=highlight[0], x1=highlight[1], fillcolor=OKABE_ITO["sky_blue"], opacity=0.18, line_width=0,
                  annotation_text=f"usual range {highlight[0]}–{highlight[1]}", annotation_position="top left")
    fig.add_trace(go.Scatter(x=alphas, y=accuracies, mode="lines+markers", name="preference accuracy of V",
                             line=dict(color=OKABE_ITO["blue"], width=3), marker=dict(size=9),
                             hovertemplate="α = %{x:.2f}<br>accuracy %{y:.3f}<extra></extra>"))
    if best_alpha is not None and math.isfinite(as_number(best_alpha)):
        best_acc = accuracies[int(np.argmin(np.abs(np.asarray(alphas, dtype=float) - float(best_alpha))))]
        fig.add_trace(go.Scatter(x=[best_alpha], y=[best_acc], mode="markers", name=f"best α = {best_alpha:.2f}",
                                 marker=dict(size=18, color=OKABE_ITO["vermillion"], symbol="star"),
                                 hovertemplate="best α %{x:.2f}<br>accuracy %{y:.3f}<extra></extra>"))
    if current_alpha is not None and math.isfinite(as_number(current_alpha)):
        fig.add_vline(x=float(current_alpha), line=dict(color=OKABE_ITO["black"], dash="dot"),
                      annotation_text=f"slider α = {float(current_alpha):.2f}", annotation_position="bottom right")
    style_figure(fig, "Hybrid V: α grid search (α·P_LM + (1−α)·R_task)", height=420,
           legend=dict(orientation="h", y=-0.25, x=0.5, xanchor="center"))
    fig.update_xaxes(title_text="α (weight on P_LM)", range=[-0.03, 1.03])
    fig.update_yaxes(title_text="share of pairs with V(chosen) > V(rejected)", range=[-0.02, 1.05])
    return fig
