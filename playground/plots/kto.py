"""Inspect's KTO figures: log-ratios by label around z0, the value curve v(r), per-sample losses."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import plotly.graph_objects as go

from playground.common.numbers import format_number
from playground.plots.style import (
    LABEL_COLORS,
    LABEL_SYMBOLS,
    OKABE_ITO,
    bar_outline,
    column_values,
    empty_figure,
    is_empty,
    sample_hover,
    sample_labels,
    selected_indices,
    style_figure,
)


def kto_scatter_figure(samples: Any, z0: float, selected: Sequence[int] | None = None,
                       kto_loss_type: str = "kto") -> go.Figure:
    """Each sample's log-ratio r (x) against the reference point z0 (vertical line), one row per label.

    A desirable answer gains value when r > z0, an undesirable one when r < z0 (KTO, Ethayarajh et al. 2024).
    """
    if is_empty(samples):
        return empty_figure("Score a data set to see the KTO view.")
    r = column_values(samples, "logratio")
    labels = sample_labels(samples)
    index = np.asarray(samples["sample"]) if "sample" in samples else np.arange(len(samples))
    hover = sample_hover(samples, [("logratio", "r", "nats"), ("kto_value", "value v", ""),
                                    ("kto_loss", "loss", "")])
    rng = np.random.default_rng(0)  # fixed jitter: the same picture on every redraw
    jitter = rng.uniform(-0.25, 0.25, len(samples))
    selected_set = selected_indices(selected)
    fig = go.Figure()
    for row, label in enumerate(("undesirable", "desirable")):
        mask = np.array([lab == label for lab in labels])
        if not mask.any():
            continue
        fig.add_trace(go.Scatter(
            x=r[mask], y=row + jitter[mask], mode="markers", name=label, customdata=index[mask],
            hovertext=[h for h, m in zip(hover, mask) if m], hoverinfo="text",
            marker=dict(size=11, color=LABEL_COLORS[label], symbol=LABEL_SYMBOLS[label],
                        line=dict(width=[3 if int(i) in selected_set else 0 for i in index[mask]],
                                  color=OKABE_ITO["black"])),
        ))
    if selected_set:
        mask = np.array([int(i) in selected_set for i in index])
        rows = np.array([1.0 if lab == "desirable" else 0.0 for lab in labels])
        fig.add_trace(go.Scatter(x=r[mask], y=(rows + jitter)[mask], mode="markers", name="selected pair",
                                 marker=dict(size=24, color="rgba(0,0,0,0)",
                                             line=dict(color=OKABE_ITO["black"], width=3)), hoverinfo="skip"))
    z0 = float(z0)
    ref_name = "z0 (KL estimate)" if kto_loss_type == "kto" else "0 (APO-zero: no z0)"
    fig.add_vline(x=z0 if kto_loss_type == "kto" else 0.0, line=dict(color=OKABE_ITO["black"], dash="dash", width=2),
                  annotation_text=f"{ref_name} = {format_number(z0 if kto_loss_type == 'kto' else 0.0, 3)}",
                  annotation_position="top")
    style_figure(fig, "KTO: log-ratio r of each sample against the reference point", height=420,
           legend=dict(orientation="h", y=-0.25, x=0.5, xanchor="center"))
    fig.update_xaxes(title_text="r = log π_θ(y|x) − log π_ref(y|x) (nats)")
    fig.update_yaxes(title_text="label", tickmode="array", tickvals=[0, 1], ticktext=["undesirable", "desirable"],
                     range=[-0.6, 1.6], zeroline=False)
    return fig


def kto_value_curve_figure(samples: Any, curves: Mapping[str, Any] | None,
                           selected: Sequence[int] | None = None) -> go.Figure:
    """KTO's value v(r) per label (λ_D σ(β(r − z0)) and λ_U σ(β(z0 − r))) with each sample placed on its curve."""
    if is_empty(samples) or not curves:
        return empty_figure("Score a data set to see the KTO value curve.")
    fig = go.Figure()
    grid = np.asarray(curves["r"], dtype=float)
    weights = {"desirable": curves.get("desirable_weight", 1.0), "undesirable": curves.get("undesirable_weight", 1.0)}
    formulas = {"desirable": "λ_D σ(β(r − z0))", "undesirable": "λ_U σ(β(z0 − r))"}
    for label in ("desirable", "undesirable"):
        if label in curves:
            fig.add_trace(go.Scatter(x=grid, y=np.asarray(curves[label]), mode="lines",
                                     name=f"v for {label}: {formulas[label]}, λ = {format_number(weights[label], 3)}",
                                     line=dict(color=LABEL_COLORS[label], width=3),
                                     hovertemplate=f"{label}<br>r %{{x:.3g}}<br>v %{{y:.4g}}<extra></extra>"))
    labels = sample_labels(samples)
    r, v = column_values(samples, "logratio"), column_values(samples, "kto_value")
    index = np.asarray(samples["sample"]) if "sample" in samples else np.arange(len(samples))
    hover = sample_hover(samples, [("logratio", "r", "nats"), ("kto_value", "value v", ""),
                                    ("kto_loss", "loss λ − v", "")])
    selected_set = selected_indices(selected)
    for label in ("desirable", "undesirable"):
        mask = np.array([lab == label for lab in labels])
        if mask.any():
            fig.add_trace(go.Scatter(
                x=r[mask], y=v[mask], mode="markers", name=f"{label} samples", customdata=index[mask],
                hovertext=[h for h, m in zip(hover, mask) if m], hoverinfo="text",
                marker=dict(size=[16 if int(i) in selected_set else 10 for i in index[mask]],
                            color=LABEL_COLORS[label], symbol=LABEL_SYMBOLS[label],
                            line=dict(color=OKABE_ITO["black"],
                                      width=[3 if int(i) in selected_set else 0 for i in index[mask]]))))
    z0 = float(curves.get("z0", 0.0))
    fig.add_vline(x=z0, line=dict(color=OKABE_ITO["black"], dash="dash"),
                  annotation_text=f"z0 = {format_number(z0, 3)}", annotation_position="top")
    style_figure(fig, f"KTO value v(r), β = {format_number(curves.get('beta'), 3)}", height=440,
           legend=dict(orientation="h", y=-0.28, x=0.5, xanchor="center"))
    fig.update_xaxes(title_text="r = log π_θ(y|x) − log π_ref(y|x) (nats)")
    fig.update_yaxes(title_text="value v (0..λ)")
    return fig


def kto_loss_figure(samples: Any, selected: Sequence[int] | None = None) -> go.Figure:
    """Per-sample KTO loss λ_y − v, bars coloured by label; the selected pair's two samples outlined."""
    if is_empty(samples):
        return empty_figure("Score a data set to see per-sample KTO losses.")
    index = np.asarray(samples["sample"]) if "sample" in samples else np.arange(len(samples))
    labels = sample_labels(samples)
    loss = column_values(samples, "kto_loss")
    hover = sample_hover(samples, [("logratio", "r", "nats"), ("kto_value", "value v", ""),
                                    ("kto_loss", "loss λ − v", "")])
    selected_set = selected_indices(selected)
    fig = go.Figure()
    for label in ("desirable", "undesirable"):
        mask = np.array([lab == label for lab in labels])
        if mask.any():
            fig.add_trace(go.Bar(x=index[mask], y=loss[mask], name=label, customdata=index[mask],
                                 marker=dict(color=LABEL_COLORS[label], line=bar_outline(index[mask], selected_set)),
                                 hovertext=[h for h, m in zip(hover, mask) if m], hoverinfo="text"))
    style_figure(fig, "KTO loss per sample (λ_y − v)", height=400, bargap=0.1,
           legend=dict(orientation="h", y=-0.25, x=0.5, xanchor="center"))
    fig.update_xaxes(title_text="sample # (chosen answers first, then rejected)")
    fig.update_yaxes(title_text="loss (0..λ)", rangemode="tozero")
    return fig
