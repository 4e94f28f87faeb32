"""Inspect's DPO figures: reference vs policy log-ratios, per-pair bars, one pair's waterfall."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from playground.common.numbers import format_number
from playground.plots.style import (
    BAD_COLOR,
    GOOD_COLOR,
    GUIDE_COLOR,
    OKABE_ITO,
    bar_outline,
    column_values,
    empty_figure,
    finite_values,
    is_empty,
    selected_indices,
    style_figure,
    text_values,
    variant_color,
)

LN2 = math.log(2.0)


def dpo_scatter_figure(pairs: Any, variant: str = "dpo", selected: int | None = None) -> go.Figure:
    """Reference log-ratio (x) against policy log-ratio (y) per pair, coloured by the DPO loss, with y = x.

    x = log π_ref(y_w|x) − log π_ref(y_l|x), y = log π_θ(y_w|x) − log π_θ(y_l|x); the vertical distance to the line is
    D = r_w − r_l. Above the line the policy prefers the chosen answer more than the reference does (loss below ln 2
    for the sigmoid loss); below it, less.
    """
    if is_empty(pairs):
        return empty_figure("Score a data set to see the pairs.")
    x, y = column_values(pairs, "ref_logratio"), column_values(pairs, "policy_logratio")
    loss, delta = column_values(pairs, "dpo_loss"), column_values(pairs, "delta")
    index = np.asarray(pairs["pair"]) if "pair" in pairs else np.arange(len(pairs))
    prompts, chosen = text_values(pairs, "prompt"), text_values(pairs, "chosen")
    rejected = text_values(pairs, "rejected")
    hover = [f"<b>pair {int(i)}</b>: {p}<br>chosen: {c}<br>rejected: {r}<br>reference log-ratio "
             f"{format_number(a, 4)} nats<br>policy log-ratio {format_number(b, 4)} nats<br>D = {format_number(d, 4)} "
             f"nats<br>loss {format_number(lv, 4)}"
             for i, p, c, r, a, b, d, lv in zip(index, prompts, chosen, rejected, x, y, delta, loss)]
    both = finite_values(np.r_[x, y])
    lo, hi = (float(both.min()), float(both.max())) if both.size else (-1.0, 1.0)
    pad = max(0.08 * (hi - lo), 0.5)
    fig = go.Figure()
    fig.add_trace(go.Scatter(x=[lo - pad, hi + pad], y=[lo - pad, hi + pad], mode="lines", name="y = x (D = 0)",
                             line=dict(color=GUIDE_COLOR, dash="dash", width=2), hoverinfo="skip"))
    fig.add_trace(go.Scatter(
        x=x, y=y, mode="markers", name=f"pairs ({variant})", customdata=index, hovertext=hover, hoverinfo="text",
        marker=dict(size=12, color=loss, colorscale="Cividis", showscale=True, line=dict(color="white", width=1),
                    colorbar=dict(title=dict(text="DPO loss"), thickness=16)),
    ))
    chosen_idx = [k for k, i in enumerate(index) if int(i) in selected_indices(selected)]
    if chosen_idx:
        fig.add_trace(go.Scatter(x=x[chosen_idx], y=y[chosen_idx], mode="markers", name="selected pair",
                                 marker=dict(size=24, color="rgba(0,0,0,0)", line=dict(color=OKABE_ITO["black"],
                                                                                       width=3)),
                                 hoverinfo="skip"))
    fig.add_annotation(text="policy prefers chosen more than the reference ↑", x=0.02, y=0.98, xref="paper",
                       yref="paper", showarrow=False, xanchor="left", font=dict(size=14, color=GUIDE_COLOR))
    fig.add_annotation(text="↓ less than the reference", x=0.98, y=0.02, xref="paper", yref="paper",
                       showarrow=False, xanchor="right", font=dict(size=14, color=GUIDE_COLOR))
    style_figure(fig, f"DPO: policy vs reference log-ratio ({variant})", height=520,
           legend=dict(orientation="h", y=-0.18, x=0.5, xanchor="center"))
    fig.update_xaxes(title_text="reference log-ratio log π_ref(y_w|x) − log π_ref(y_l|x) (nats)")
    fig.update_yaxes(title_text="policy log-ratio log π_θ(y_w|x) − log π_θ(y_l|x) (nats)")
    return fig


def dpo_bars_figure(pairs: Any, variant: str = "dpo", selected: int | None = None,
                    dpo_loss_type: str = "sigmoid", sft_weight: float = 0.0) -> go.Figure:
    """Per pair: the DPO loss, with the SFT term stacked on it when its weight is > 0 (top); the gradient weight
    σ(−β·D) (middle); the chosen answer's mean token NLL under the policy and the reference (bottom: did the chosen
    answers stay likely, which the SFT term is there to keep). ln 2 and 0.5 are marked (the values at π_θ = π_ref
    for the sigmoid loss); the selected pair is outlined."""
    if is_empty(pairs):
        return empty_figure("Score a data set to see per-pair losses.")
    index = np.asarray(pairs["pair"]) if "pair" in pairs else np.arange(len(pairs))
    loss, weight = column_values(pairs, "dpo_loss"), column_values(pairs, "grad_weight")
    prompts = text_values(pairs, "prompt")
    selected_set = selected_indices(selected)
    color = variant_color(variant)
    with_nll = "chosen_nll" in pairs
    rows = 3 if with_nll else 2
    titles = [f"Per-pair loss ({dpo_loss_type})" + (f" + SFT term (weight {sft_weight:g})" if sft_weight > 0 else ""),
              "Gradient weight σ(−β·D)"] + (["Chosen answer's NLL per token: policy vs reference"] if with_nll else [])
    fig = make_subplots(rows=rows, cols=1, shared_xaxes=True, vertical_spacing=0.09, subplot_titles=titles)

    def bars(row, values_, name, unit, colour, legend=False):
        fig.add_trace(go.Bar(
            x=index, y=values_, name=name, marker=dict(color=colour, line=bar_outline(index, selected_set)),
            customdata=index, hovertext=[f"<b>pair {int(i)}</b>: {p}<br>{name}: {format_number(v, 4)} {unit}"
                                         for i, p, v in zip(index, prompts, values_)],
            hoverinfo="text", showlegend=legend,
        ), row=row, col=1)

    bars(1, loss, "DPO loss", "nats", color, legend=sft_weight > 0 or with_nll)
    if sft_weight > 0 and "sft_term" in pairs:
        bars(1, column_values(pairs, "sft_term"), "SFT term w·NLL", "nats", OKABE_ITO["sky_blue"], legend=True)
    bars(2, weight, "gradient weight", "0..1", color)
    if with_nll:
        nll, ref_nll = column_values(pairs, "chosen_nll"), column_values(pairs, "reference_chosen_nll")
        bars(3, nll, "chosen NLL/token (policy)", "nats/token", color)
        fig.add_trace(go.Scatter(
            x=index, y=ref_nll, mode="markers", name="chosen NLL/token (reference)",
            marker=dict(symbol="line-ew", size=14, color=OKABE_ITO["black"], line=dict(width=3,
                                                                                      color=OKABE_ITO["black"])),
            hovertext=[f"<b>pair {int(i)}</b>: reference NLL {format_number(v, 4)} nats/token"
                       for i, v in zip(index, ref_nll)], hoverinfo="text"), row=3, col=1)
        fig.update_yaxes(title_text="nats/token", rangemode="tozero", row=3, col=1)
    fig.add_hline(y=LN2, line=dict(color=GUIDE_COLOR, dash="dot"), row=1, col=1,
                  annotation_text="ln 2 (policy = reference)", annotation_position="top right")
    fig.add_hline(y=0.5, line=dict(color=GUIDE_COLOR, dash="dot"), row=2, col=1,
                  annotation_text="0.5 (D = 0)", annotation_position="top right")
    fig.update_yaxes(title_text="loss (nats)", row=1, col=1)
    fig.update_yaxes(title_text="weight", range=[0, 1.05], row=2, col=1)
    fig.update_xaxes(title_text="pair #", row=rows, col=1)
    style_figure(fig, f"DPO per pair ({variant})", height=760 if with_nll else 560, bargap=0.15, barmode="stack",
                 legend=dict(orientation="h", y=-0.1, x=0.5, xanchor="center"))
    return fig


_LOSS_FORMULAS = {
    "sigmoid": "−log σ(β·D)",
    "ipo": "(Δ_norm − 1/(2β))²",
    "hinge": "max(0, 1 − β·D)",
    "robust": "[−(1−ε) log σ(β·D) + ε log σ(−β·D)] / (1−2ε)",
}


def dpo_waterfall_figure(focus: Mapping[str, Any] | None, variant: str = "dpo") -> go.Figure:
    """The selected pair, in two honest parts.

    Left, a waterfall of the *additive* part (nats): the policy log-ratio, minus the reference log-ratio, gives
    D = r_w − r_l. Right, the *non-additive* rest: the loss as a function of its argument (same loss function as the
    optimiser) with the pair placed on it, and β·D, σ(β·D) (the Bradley-Terry probability that the chosen answer
    wins), the loss and the gradient weight written out. Multiplying by β, σ and −log are not sums, so they are not
    drawn as waterfall steps.
    """
    if not focus:
        return empty_figure("Select a pair in the table to decompose its loss.")
    policy, reference, delta = (float(focus["policy_logratio"]), float(focus["ref_logratio"]),
                                float(focus["delta"]))
    dpo_loss_type = str(focus.get("dpo_loss_type", "sigmoid"))
    fig = make_subplots(rows=1, cols=2, column_widths=[0.45, 0.55], horizontal_spacing=0.12,
                        subplot_titles=["Additive: how D is built (nats)",
                                        f"Non-additive: D → loss ({dpo_loss_type})"])
    fig.add_trace(go.Waterfall(
        x=["policy log-ratio", "− reference log-ratio", "D = r_w − r_l"],
        measure=["absolute", "relative", "total"], y=[policy, -reference, delta],
        text=[f"{policy:+.3g}", f"{-reference:+.3g}", f"{delta:+.3g}"], textposition="outside",
        connector=dict(line=dict(color=GUIDE_COLOR, dash="dot")),
        increasing=dict(marker=dict(color=GOOD_COLOR)), decreasing=dict(marker=dict(color=BAD_COLOR)),
        totals=dict(marker=dict(color=variant_color(variant))),
        hovertext=[f"log π_θ(y_w|x) − log π_θ(y_l|x) = {policy:.4g} nats",
                   f"−[log π_ref(y_w|x) − log π_ref(y_l|x)] = {-reference:.4g} nats",
                   f"D = {delta:.4g} nats = r_w ({float(focus.get('chosen_logratio', math.nan)):.4g}) − r_l "
                   f"({float(focus.get('rejected_logratio', math.nan)):.4g})"],
        hoverinfo="text", showlegend=False, cliponaxis=False,
    ), row=1, col=1)
    fig.update_yaxes(title_text="nats", row=1, col=1)
    curve_x, curve_y = focus.get("curve_x"), focus.get("curve_y")
    if curve_x is not None and curve_y is not None and len(curve_x):
        point = float(focus.get("curve_point", delta))
        fig.add_trace(go.Scatter(x=np.asarray(curve_x), y=np.asarray(curve_y), mode="lines",
                                 name=f"loss {_LOSS_FORMULAS.get(dpo_loss_type, '')}",
                                 line=dict(color=variant_color(variant), width=3),
                                 hovertemplate="argument %{x:.3g}<br>loss %{y:.4g}<extra></extra>"), row=1, col=2)
        fig.add_trace(go.Scatter(x=[point], y=[float(focus["loss"])], mode="markers", name="this pair",
                                 marker=dict(size=16, color=OKABE_ITO["black"], symbol="diamond"),
                                 hovertemplate="this pair<br>argument %{x:.4g}<br>loss %{y:.4g}<extra></extra>"),
                      row=1, col=2)
        fig.update_xaxes(title_text=str(focus.get("curve_xlabel", "D (nats)")), row=1, col=2)
    fig.update_yaxes(title_text="loss (nats)", row=1, col=2)
    beta = float(focus.get("beta", math.nan))
    lines = [f"β = {format_number(beta, 3)}", f"β·D = {format_number(focus.get('logit'), 4)}",
             f"σ(β·D) = {format_number(focus.get('sigma'), 4)}  (P(chosen wins), Bradley-Terry)",
             f"loss = {_LOSS_FORMULAS.get(dpo_loss_type, 'loss')} = {format_number(focus.get('loss'), 4)}",
             f"gradient weight σ(−β·D) = {format_number(focus.get('grad_weight'), 4)}"]
    fig.add_annotation(text="<br>".join(lines), x=0.99, y=0.97, xref="x2 domain", yref="y2 domain", showarrow=False,
                       xanchor="right", yanchor="top", align="left", font=dict(size=14),
                       bgcolor="rgba(255,255,255,0.85)", bordercolor="#BBBBBB", borderwidth=1)
    style_figure(fig, f"Pair {focus.get('index', '?')}: from log-ratios to the loss", height=480,
           legend=dict(orientation="h", y=-0.2, x=0.75, xanchor="center"))
    return fig
