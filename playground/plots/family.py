"""The preference-method family on one data set (Inspect's "Method family" tab): how often each objective's own
reward ranks the chosen answer first, and how each one weighs the pairs (its per-pair loss against the DPO margin)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from playground.common.numbers import format_number
from playground.plots.style import GUIDE_COLOR, OKABE_ITO, empty_figure, style_figure

# one colour per objective (DPO and KTO keep the variants' colours of the two shipped adapters)
FAMILY_COLORS = {"DPO": OKABE_ITO["blue"], "KTO": OKABE_ITO["vermillion"], "SimPO": OKABE_ITO["orange"],
                 "ORPO": OKABE_ITO["sky_blue"], "APO-zero": OKABE_ITO["bluish_green"],
                 "APO-down": OKABE_ITO["reddish_purple"], "BCO": OKABE_ITO["black"]}


def family_figure(titles: Sequence[str], ranked_first: Sequence[float], reference_free: Sequence[bool],
                  dpo_margin: np.ndarray, losses: Mapping[str, np.ndarray], variant: str) -> go.Figure:
    """Left: per objective (``titles``), the share of pairs its own reward ranks the chosen answer first, hatched
    where the objective needs no reference. Right: each objective's per-pair loss (its own units) against the DPO
    implied-reward margin ``dpo_margin`` (P,) of the same pairs; ``losses`` maps a title to its (P,) losses."""
    if not len(titles):
        return empty_figure("Score a data set to compare the method family on it.")
    fig = make_subplots(rows=1, cols=2, column_widths=[0.4, 0.6], horizontal_spacing=0.12,
                        subplot_titles=["Chosen ranked first by the objective's own reward",
                                        "Per-pair loss against the DPO margin"])
    colors = [FAMILY_COLORS.get(t, GUIDE_COLOR) for t in titles]
    fig.add_trace(go.Bar(x=list(titles), y=list(ranked_first), marker_color=colors, showlegend=False,
                         marker_pattern_shape=["/" if free else "" for free in reference_free],
                         text=[format_number(v, 3) for v in ranked_first], textposition="outside", cliponaxis=False,
                         hovertext=[f"<b>{t}</b><br>{format_number(v, 3)} of the pairs"
                                    + ("<br>reference-free" if free else "")
                                    for t, v, free in zip(titles, ranked_first, reference_free)], hoverinfo="text"),
                  row=1, col=1)
    fig.add_hline(y=0.5, line=dict(color=GUIDE_COLOR, dash="dot"), row=1, col=1)
    for title in titles:
        loss = np.asarray(losses.get(title, []), dtype=float)
        if loss.size != len(dpo_margin):
            continue
        fig.add_trace(go.Scatter(x=dpo_margin, y=loss, mode="markers", name=title, legendgroup=title,
                                 marker=dict(size=6, color=FAMILY_COLORS.get(title, GUIDE_COLOR), opacity=0.7),
                                 hovertemplate=f"<b>{title}</b><br>DPO margin %{{x:.3f}}<br>loss %{{y:.3f}}"
                                               "<extra></extra>"), row=1, col=2)
    fig.update_yaxes(title_text="share of pairs", range=[0, 1.15], row=1, col=1)
    fig.update_yaxes(title_text="loss (each objective's own units)", row=1, col=2)
    fig.update_xaxes(title_text="β·(log-ratio chosen − log-ratio rejected)", row=1, col=2)
    style_figure(fig, f"The preference-method family on {variant}'s log-probs (hatched: no reference model)",
                 height=440, legend=dict(orientation="h", y=-0.22, x=0.6, xanchor="center"))
    return fig
