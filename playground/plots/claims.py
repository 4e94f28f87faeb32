"""The Claims view's figures, one per claim, from the tables of ``analysis.claims`` (DataFrames in)."""

from __future__ import annotations

from typing import Any

import plotly.graph_objects as go
from plotly.subplots import make_subplots

from playground.common.numbers import format_number
from playground.plots.answers import bar_axis_range
from playground.plots.style import GUIDE_COLOR, OKABE_ITO, empty_figure, style_figure

LINE_COLORS = [OKABE_ITO["blue"], OKABE_ITO["vermillion"], OKABE_ITO["bluish_green"], OKABE_ITO["orange"]]


def _bars(fig: go.Figure, labels: list[str], values: list[float], row: int, col: int, fmt: int = 3) -> None:
    fig.add_trace(go.Bar(x=labels, y=values, marker_color=LINE_COLORS[: len(labels)] or GUIDE_COLOR,
                         text=[format_number(v, fmt) for v in values], textposition="outside", cliponaxis=False,
                         showlegend=False), row=row, col=col)
    fig.update_yaxes(range=bar_axis_range([v for v in values if v == v]), row=row, col=col)


def unpaired_figure(table: Any) -> go.Figure:
    """Held-out accuracy and the answers' fluency of DPO on pairs and KTO on thumbs (and on both answers)."""
    if table is None or not len(table):
        return empty_figure("Not measured yet: python -m playground.experiments unpaired")
    fig = make_subplots(rows=1, cols=2, subplot_titles=["Held-out preference accuracy", "Answers: fluency"])
    labels = [f"{label}<br>({rows:.0f} rows)" for label, rows in zip(table["label"], table["rows"])]
    _bars(fig, labels, list(table["heldout accuracy"]), 1, 1)
    _bars(fig, labels, list(table["fluency"]), 1, 2)
    fig.update_yaxes(title_text="share of pairs", row=1, col=1)
    fig.update_yaxes(title_text="mean token log-prob under the base", row=1, col=2)
    style_figure(fig, "Thumbs-only feedback against pairs", height=380)
    return fig


def _lines(table: Any, title: str, x_title: str, empty: str, percent: bool = True) -> go.Figure:
    """Held-out accuracy (with the spread over seeds) and the answers' fluency against the claim's axis, one line per
    label; the base's fluency is the dotted guide of the second panel."""
    if table is None or not len(table):
        return empty_figure(empty)
    fig = make_subplots(rows=1, cols=2, column_widths=[0.6, 0.4], horizontal_spacing=0.1,
                        subplot_titles=["Held-out preference accuracy (clean pairs)",
                                        "Answers: fluency under the base"])
    dashes = ("solid", "dash", "dot", "dashdot")  # lines that coincide stay visible
    for color, dash, (label, rows) in zip(LINE_COLORS, dashes, table.groupby("label", sort=False)):
        rows = rows.sort_values("x")
        line = dict(color=color, width=3, dash=dash)
        fig.add_trace(go.Scatter(x=rows["x"], y=rows["heldout accuracy"], mode="lines+markers", name=label,
                                 line=line, legendgroup=label,
                                 error_y=dict(type="data", array=rows["accuracy std"], visible=True)), row=1, col=1)
        fig.add_trace(go.Scatter(x=rows["x"], y=rows["fluency"], mode="lines+markers", name=label, line=line,
                                 legendgroup=label, showlegend=False), row=1, col=2)
    base = [v for v in table.get("base fluency", []) if v == v]
    if base:
        fig.add_hline(y=sum(base) / len(base), line=dict(color=GUIDE_COLOR, dash="dot"), row=1, col=2,
                      annotation_text="base", annotation_position="bottom right")
    fig.update_xaxes(title_text=x_title, tickformat=".0%" if percent else None)
    fig.update_yaxes(title_text="share of pairs", range=[0, 1.05], row=1, col=1)
    fig.update_yaxes(title_text="mean token log-prob", row=1, col=2)
    fig.add_hline(y=0.5, line=dict(color=GUIDE_COLOR, dash="dot"), row=1, col=1)
    style_figure(fig, title, height=400)
    return fig


def noise_figure(table: Any) -> go.Figure:
    """Held-out accuracy against the share of flipped training pairs, per method, with the spread over seeds."""
    return _lines(table, "Label noise: DPO, robust DPO and KTO on flipped pairs", "training pairs flipped",
                  "Not measured yet: python -m playground.experiments noise")


def imbalance_figure(table: Any) -> go.Figure:
    """KTO's held-out accuracy against the share of desirable answers, with and without the paper's weight rule."""
    return _lines(table, "Few desirable answers: KTO with and without the λ rule", "desirable share of the answers",
                  "Not measured yet: python -m playground.experiments imbalance")


def compute_figure(table: Any) -> go.Figure:
    """Seconds per optimiser step, seconds of reference pass and memory added during the run, per method, on the
    same data and device (the memory panel only when the results measured it per run)."""
    if table is None or not len(table):
        return empty_figure("Not measured yet: python -m playground.experiments compute")
    added = list(table["added MB"]) if "added MB" in table else []
    with_memory = bool(added) and all(v == v for v in added)
    titles = ["Seconds per optimiser step", "Reference pass (seconds)"] + (["Memory added (MB)"] * with_memory)
    fig = make_subplots(rows=1, cols=len(titles), subplot_titles=titles)
    labels = list(table["label"])
    _bars(fig, labels, list(table["s / step"]), 1, 1, 2)
    _bars(fig, labels, list(table["reference s"]), 1, 2, 2)
    if with_memory:
        _bars(fig, labels, added, 1, 3, 4)
    style_figure(fig, "What the reference costs (same pairs, same device)", height=380)
    return fig


FIGURES = {"unpaired": unpaired_figure, "noise": noise_figure, "imbalance": imbalance_figure,
           "compute": compute_figure}
