"""Figures of the leaderboard: Bradley-Terry strengths with their bootstrap intervals (raw and length-controlled),
and the pairwise win-rate matrix."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import plotly.graph_objects as go

from playground.common.numbers import format_number
from playground.plots.style import GUIDE_COLOR, empty_figure, style_figure, variant_color


def strengths_figure(table: Any, level: float = 0.95) -> go.Figure:
    """One row per model, strongest on top: its Bradley-Terry strength (logit scale, mean 0) with the bootstrap
    interval as error bars, and the length-controlled strength as a hollow marker beside it.

    ``table``: a DataFrame (or records) with model, strength, low, high, lc_strength and votes.
    """
    rows = table.to_dict("records") if hasattr(table, "to_dict") else list(table or [])
    if not rows:
        return empty_figure("Vote on pairs of answers (Left better, Right better, Tie, Both bad) to rank the "
                            "models.")
    rows = list(reversed(rows))  # plotly draws the first category at the bottom
    names = [str(r["model"]) for r in rows]
    strength = np.array([float(r["strength"]) for r in rows])
    low = np.array([float(r["low"]) for r in rows])
    high = np.array([float(r["high"]) for r in rows])
    fig = go.Figure()
    fig.add_trace(go.Scatter(
        x=strength, y=names, mode="markers", name="strength",
        marker=dict(size=14, color=[variant_color(n) for n in names]),
        error_x=dict(type="data", symmetric=False, array=np.maximum(high - strength, 0),
                     arrayminus=np.maximum(strength - low, 0), thickness=2, width=6, color=GUIDE_COLOR),
        hovertext=[f"<b>{n}</b><br>strength {format_number(s, 3)} (logit)<br>{level:.0%} interval "
                   f"[{format_number(lo, 3)}, {format_number(hi, 3)}]<br>{int(r['votes'])} votes"
                   for n, s, lo, hi, r in zip(names, strength, low, high, rows)], hoverinfo="text"))
    lc = [float(r.get("lc_strength", math.nan)) for r in rows]
    if any(math.isfinite(v) for v in lc):
        fig.add_trace(go.Scatter(
            x=lc, y=names, mode="markers", name="length-controlled",
            marker=dict(size=12, symbol="diamond-open", line=dict(width=2), color=[variant_color(n) for n in names]),
            hovertext=[f"<b>{n}</b><br>length-controlled strength {format_number(v, 3)}" for n, v in zip(names, lc)],
            hoverinfo="text"))
    style_figure(fig, f"Bradley-Terry strength ({level:.0%} bootstrap interval)", height=220 + 50 * len(names),
                 xaxis_title="strength (logit scale: a gap of 1 = wins 73% of the time)",
                 legend=dict(orientation="h", y=1.0, x=1.0, xanchor="right", yanchor="bottom"))
    return fig


def win_matrix_figure(names: Sequence[str], wins: Any, counts: Any) -> go.Figure:
    """The share of comparisons the row model won against the column model (ties half), with the vote counts;
    blank where the two never met."""
    if not len(names):
        return empty_figure("The win matrix appears with the first pairwise vote.")
    wins, counts = np.asarray(wins, dtype=float), np.asarray(counts)
    text = [[("" if not math.isfinite(wins[i, j]) else f"{wins[i, j]:.2f}<br>n={int(counts[i, j])}")
             for j in range(len(names))] for i in range(len(names))]
    fig = go.Figure(go.Heatmap(
        z=np.where(np.isfinite(wins), wins, np.nan), x=list(names), y=list(names), text=text,
        texttemplate="%{text}", zmin=0, zmax=1, colorscale="RdBu", colorbar=dict(title="row wins"),
        hovertemplate="%{y} vs %{x}: %{z:.2f}<extra></extra>"))
    style_figure(fig, "Win rate of the row model against the column model", height=140 + 60 * len(names),
                 xaxis_title="against", yaxis_title="model")
    fig.update_yaxes(autorange="reversed")
    return fig
