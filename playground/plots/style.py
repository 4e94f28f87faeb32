"""One look for every figure: the colour-blind-safe palette (Okabe & Ito 2008) with one fixed colour per variant,
a template readable on a projector (16 px text, titles, labelled axes with units), and the helpers the builders share.
"""

from __future__ import annotations

import math
import threading
import zlib
from collections.abc import Sequence
from typing import Any

import numpy as np
import plotly.graph_objects as go

from playground.common.numbers import format_number

# Okabe-Ito colours (with the grey of the usual 8-colour "cbPalette" for the neutral base).
OKABE_ITO = {
    "grey": "#999999",
    "orange": "#E69F00",
    "sky_blue": "#56B4E9",
    "bluish_green": "#009E73",
    "yellow": "#F0E442",
    "blue": "#0072B2",
    "vermillion": "#D55E00",
    "reddish_purple": "#CC79A7",
    "black": "#000000",
}


# One fixed colour per built-in variant, everywhere in the app.
VARIANT_COLORS: dict[str, str] = {
    "base": OKABE_ITO["grey"],
    "dpo": OKABE_ITO["blue"],
    "kto": OKABE_ITO["vermillion"],
}


# Colours handed to user adapters (none of the built-ins'); yellow last: weakest on a white background.
USER_COLORS: tuple[str, ...] = (
    OKABE_ITO["bluish_green"],
    OKABE_ITO["reddish_purple"],
    OKABE_ITO["orange"],
    OKABE_ITO["sky_blue"],
    OKABE_ITO["black"],
    OKABE_ITO["yellow"],
)


# Semantic colours (not variants): desirable / gain vs undesirable / loss, and neutral guides.
GOOD_COLOR = OKABE_ITO["bluish_green"]
BAD_COLOR = OKABE_ITO["orange"]
GUIDE_COLOR = "#555555"
SOURCE_COLOR = OKABE_ITO["reddish_purple"]  # the source document's (as written) formula
CORRECT_COLOR = OKABE_ITO["blue"]  # the corrected (prospect theory) formula
TAU_COLORS = {"quantile": OKABE_ITO["blue"], "ema": OKABE_ITO["vermillion"], "fixed": OKABE_ITO["black"],
              "z0": OKABE_ITO["reddish_purple"]}


TAU_DASH = {"quantile": "solid", "ema": "dash", "fixed": "dot", "z0": "dashdot"}
LABEL_COLORS = {"desirable": GOOD_COLOR, "undesirable": BAD_COLOR}
LABEL_SYMBOLS = {"desirable": "circle", "undesirable": "x"}
_user_colors: dict[str, str] = {}
_user_colors_lock = threading.Lock()


def variant_color(name: str) -> str:
    """The one colour of variant ``name``: fixed for base/dpo/kto, stable per process for user adapters.

    A user adapter first gets the colour its name hashes to (crc32, the same in every process); if another adapter
    already holds that colour it gets the next free one, so two adapters on screen differ while colours last.
    """
    key = str(name)
    if key in VARIANT_COLORS:
        return VARIANT_COLORS[key]
    if key.lower() in VARIANT_COLORS:
        return VARIANT_COLORS[key.lower()]
    with _user_colors_lock:
        if key in _user_colors:
            return _user_colors[key]
        start = zlib.crc32(key.encode("utf-8")) % len(USER_COLORS)
        taken = set(_user_colors.values())
        color = USER_COLORS[start]
        for step in range(len(USER_COLORS)):
            candidate = USER_COLORS[(start + step) % len(USER_COLORS)]
            if candidate not in taken:
                color = candidate
                break
        _user_colors[key] = color
        return color


FONT_SIZE = 16
TEMPLATE = go.layout.Template(
    layout=go.Layout(
        font=dict(family="Inter, 'Helvetica Neue', Arial, sans-serif", size=FONT_SIZE, color="#222222"),
        title=dict(font=dict(size=20), x=0.02, xanchor="left"),
        paper_bgcolor="white",
        plot_bgcolor="white",
        colorway=[VARIANT_COLORS["base"], VARIANT_COLORS["dpo"], VARIANT_COLORS["kto"], *USER_COLORS],
        xaxis=dict(showgrid=True, gridcolor="#E5E5E5", zeroline=True, zerolinecolor="#BBBBBB", linecolor="#888888",
                   showline=True, ticks="outside", title=dict(font=dict(size=FONT_SIZE)), automargin=True),
        yaxis=dict(showgrid=True, gridcolor="#E5E5E5", zeroline=True, zerolinecolor="#BBBBBB", linecolor="#888888",
                   showline=True, ticks="outside", title=dict(font=dict(size=FONT_SIZE)), automargin=True),
        legend=dict(font=dict(size=14), bgcolor="rgba(255,255,255,0.8)"),
        hoverlabel=dict(font=dict(size=14)),
        margin=dict(l=70, r=30, t=80, b=70),
    )
)


def style_figure(fig: go.Figure, title: str, height: int | None = None, **layout: Any) -> go.Figure:
    fig.update_layout(template=TEMPLATE, title=dict(text=title), **layout)
    if height:
        fig.update_layout(height=height)
    # subplot titles are annotations: keep them readable
    for annotation in fig.layout.annotations or ():
        if annotation.font is None or annotation.font.size is None:
            annotation.font = dict(size=FONT_SIZE)
    return fig


def finite_values(values: Sequence[Any]) -> np.ndarray:
    array = np.asarray(list(values), dtype=float) if len(values) else np.zeros(0)
    return array[np.isfinite(array)]


def as_number(value: Any) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return math.nan
    return number



def empty_figure(message: str) -> go.Figure:
    """A placeholder with a centred note and no axes, shown before any data exists."""
    fig = go.Figure()
    fig.add_annotation(text=message, x=0.5, y=0.5, xref="paper", yref="paper", showarrow=False,
                       font=dict(size=18, color=GUIDE_COLOR), align="center")
    style_figure(fig, "", height=320)
    fig.update_xaxes(visible=False)
    fig.update_yaxes(visible=False)
    return fig


def is_empty(frame: Any) -> bool:
    return frame is None or len(frame) == 0


def column_values(frame: Any, name: str, default: float = math.nan) -> np.ndarray:
    if name in frame:
        return np.asarray(frame[name], dtype=float)
    return np.full(len(frame), default)


def text_values(frame: Any, name: str) -> list[str]:
    return [str(v) for v in frame[name]] if name in frame else [""] * len(frame)


def selected_indices(selected: int | Sequence[int] | None) -> set[int]:
    if selected is None:
        return set()
    if isinstance(selected, (int, np.integer)):
        return {int(selected)}
    return {int(s) for s in selected}


def bar_outline(index: np.ndarray, selected: set[int]) -> dict:
    return dict(color=[OKABE_ITO["black"] if int(i) in selected else "rgba(0,0,0,0)" for i in index],
                width=[3 if int(i) in selected else 0 for i in index])


def sample_labels(samples: Any) -> list[str]:
    return [str(v) for v in samples["label"]] if "label" in samples else ["desirable"] * len(samples)


def sample_hover(samples: Any, extra: Sequence[tuple[str, str, str]]) -> list[str]:
    index = np.asarray(samples["sample"]) if "sample" in samples else np.arange(len(samples))
    labels = sample_labels(samples)
    prompts, completions = text_values(samples, "prompt"), text_values(samples, "completion")
    columns = [(title, column_values(samples, key), unit) for key, title, unit in extra]
    out = []
    for k in range(len(samples)):
        head = f"<b>sample {int(index[k])}</b> ({labels[k]})<br>{prompts[k]}<br>→ {completions[k]}"
        out.append(head + "".join(f"<br>{t}: {format_number(v[k], 4)}{(' ' + u) if u else ''}" for t, v, u in columns))
    return out
