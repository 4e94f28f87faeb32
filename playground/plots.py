"""Plotly figure builders: plain lists / arrays / DataFrames / dicts in, ``plotly.graph_objects.Figure`` out.

No torch and no gradio here. One colour-blind-safe palette (Okabe & Ito 2008) with one fixed colour per variant, used
by every figure of every tab; a template readable on a projector (16 px text, titles, labelled axes with units, hover
text with the numbers).
"""

from __future__ import annotations

import math
import threading
import zlib
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

# --------------------------------------------------------------------------------------------------------------------
# Palette and template
# --------------------------------------------------------------------------------------------------------------------

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


def _style(fig: go.Figure, title: str, height: int | None = None, **layout: Any) -> go.Figure:
    fig.update_layout(template=TEMPLATE, title=dict(text=title), **layout)
    if height:
        fig.update_layout(height=height)
    # subplot titles are annotations: keep them readable
    for annotation in fig.layout.annotations or ():
        if annotation.font is None or annotation.font.size is None:
            annotation.font = dict(size=FONT_SIZE)
    return fig


def _finite(values: Sequence[Any]) -> np.ndarray:
    array = np.asarray(list(values), dtype=float) if len(values) else np.zeros(0)
    return array[np.isfinite(array)]


def _num(value: Any) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return math.nan
    return number


def _fmt(value: Any, digits: int = 3) -> str:
    number = _num(value)
    return "n/a" if not math.isfinite(number) else f"{number:.{digits}g}"


def empty_figure(message: str) -> go.Figure:
    """A placeholder with a centred note and no axes, shown before any data exists."""
    fig = go.Figure()
    fig.add_annotation(text=message, x=0.5, y=0.5, xref="paper", yref="paper", showarrow=False,
                       font=dict(size=18, color=GUIDE_COLOR), align="center")
    _style(fig, "", height=320)
    fig.update_xaxes(visible=False)
    fig.update_yaxes(visible=False)
    return fig


# --------------------------------------------------------------------------------------------------------------------
# Compare and Fine-tune tabs
# --------------------------------------------------------------------------------------------------------------------

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
            values = _finite([_num(r.get(key)) for r in grouped[name]])
            mean = float(values.mean()) if values.size else math.nan
            spread = float(values.std()) if values.size > 1 else 0.0
            hover = (f"<b>{name}</b><br>{title}: {_fmt(mean, 4)} {unit}"
                     + (f"<br>± {_fmt(spread, 3)} (std over {values.size})" if values.size > 1 else ""))
            fig.add_trace(go.Bar(
                x=[name], y=[mean if values.size else None], name=name, marker_color=variant_color(name),
                legendgroup=name, showlegend=col == 1, hovertext=[hover], hoverinfo="text",
                text=[_fmt(mean, 3) if values.size else "n/a"], textposition="outside", cliponaxis=False,
                error_y=dict(type="data", array=[spread], visible=values.size > 1),
            ), row=1, col=col)
        fig.update_yaxes(title_text=unit, row=1, col=col)
    _style(fig, "Per-variant answer metrics", height=440, barmode="group", bargap=0.25,
           legend=dict(orientation="h", y=-0.12, x=0.5, xanchor="center"))
    fig.update_xaxes(showticklabels=False)
    return fig


def _column(history: list[dict], key: str) -> list[float]:
    return [_num(row.get(key)) for row in history]


def training_curves_figure(history: list[dict], method: str) -> go.Figure:
    """Live training curves: loss; implied rewards (chosen/desirable, rejected/undesirable) and margin; preference
    accuracy; and for KTO the reference point z0. ``history`` rows: step, loss, rewards_chosen, rewards_rejected,
    margin, accuracy, z0 (NaN for DPO), learning_rate. Works with 0, 1 or many rows (markers when few)."""
    method = (method or "dpo").lower()
    is_kto = method == "kto"
    titles = ["Loss", "Implied rewards and margin", "Preference accuracy"] + (["Reference point z0"] if is_kto else [])
    fig = make_subplots(rows=1, cols=len(titles), subplot_titles=titles, horizontal_spacing=0.07)
    history = list(history or [])
    steps = [_num(row.get("step", i + 1)) for i, row in enumerate(history)]
    mode = "lines+markers" if len(history) <= 40 else "lines"
    lrs = _column(history, "learning_rate")
    lr_text = [f"lr {_fmt(lr, 3)}" for lr in lrs]
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
    _style(fig, title, height=450, legend=dict(orientation="h", y=-0.3, yanchor="top", x=0.5, xanchor="center"),
           margin=dict(b=120))
    return fig


def _pick(data: Mapping[str, Any], *keys: str) -> float:
    for key in keys:
        if key in data and data[key] is not None:
            return _num(data[key])
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
                showlegend=col == 1, legendgroup=label, text=[_fmt(value, digits)], textposition="outside",
                cliponaxis=False, hovertext=[f"<b>{label}</b><br>{unit}: {_fmt(value, 4)}"], hoverinfo="text",
            ), row=1, col=col)
        fig.update_yaxes(title_text=unit, row=1, col=col)
    fig.update_yaxes(range=[0, 1.08], row=1, col=1)
    fig.add_hline(y=0.5, line=dict(color=GUIDE_COLOR, dash="dot"), row=1, col=1,
                  annotation_text="chance", annotation_position="top left")
    _style(fig, "Before vs after fine-tuning (held-out pairs)", height=420, showlegend=False)
    return fig


# --------------------------------------------------------------------------------------------------------------------
# Inspect tab: DPO
# --------------------------------------------------------------------------------------------------------------------

LN2 = math.log(2.0)


def _empty_frame(frame: Any) -> bool:
    return frame is None or len(frame) == 0


def _col(frame: Any, name: str, default: float = math.nan) -> np.ndarray:
    if name in frame:
        return np.asarray(frame[name], dtype=float)
    return np.full(len(frame), default)


def _texts(frame: Any, name: str) -> list[str]:
    return [str(v) for v in frame[name]] if name in frame else [""] * len(frame)


def _selected_set(selected: int | Sequence[int] | None) -> set[int]:
    if selected is None:
        return set()
    if isinstance(selected, (int, np.integer)):
        return {int(selected)}
    return {int(s) for s in selected}


def dpo_scatter_figure(pairs: Any, variant: str = "dpo", selected: int | None = None) -> go.Figure:
    """Reference log-ratio (x) against policy log-ratio (y) per pair, coloured by the DPO loss, with y = x.

    x = log π_ref(y_w|x) − log π_ref(y_l|x), y = log π_θ(y_w|x) − log π_θ(y_l|x); the vertical distance to the line is
    D = r_w − r_l. Above the line the policy prefers the chosen answer more than the reference does (loss below ln 2
    for the sigmoid loss); below it, less.
    """
    if _empty_frame(pairs):
        return empty_figure("Score a data set to see the pairs.")
    x, y = _col(pairs, "ref_logratio"), _col(pairs, "policy_logratio")
    loss, delta = _col(pairs, "dpo_loss"), _col(pairs, "delta")
    index = np.asarray(pairs["pair"]) if "pair" in pairs else np.arange(len(pairs))
    prompts, chosen, rejected = _texts(pairs, "prompt"), _texts(pairs, "chosen"), _texts(pairs, "rejected")
    hover = [f"<b>pair {int(i)}</b>: {p}<br>chosen: {c}<br>rejected: {r}<br>reference log-ratio {_fmt(a, 4)} nats"
             f"<br>policy log-ratio {_fmt(b, 4)} nats<br>D = {_fmt(d, 4)} nats<br>loss {_fmt(lv, 4)}"
             for i, p, c, r, a, b, d, lv in zip(index, prompts, chosen, rejected, x, y, delta, loss)]
    both = _finite(np.r_[x, y])
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
    chosen_idx = [k for k, i in enumerate(index) if int(i) in _selected_set(selected)]
    if chosen_idx:
        fig.add_trace(go.Scatter(x=x[chosen_idx], y=y[chosen_idx], mode="markers", name="selected pair",
                                 marker=dict(size=24, color="rgba(0,0,0,0)", line=dict(color=OKABE_ITO["black"],
                                                                                       width=3)),
                                 hoverinfo="skip"))
    fig.add_annotation(text="policy prefers chosen more than the reference ↑", x=0.02, y=0.98, xref="paper",
                       yref="paper", showarrow=False, xanchor="left", font=dict(size=14, color=GUIDE_COLOR))
    fig.add_annotation(text="↓ less than the reference", x=0.98, y=0.02, xref="paper", yref="paper",
                       showarrow=False, xanchor="right", font=dict(size=14, color=GUIDE_COLOR))
    _style(fig, f"DPO: policy vs reference log-ratio ({variant})", height=520,
           legend=dict(orientation="h", y=-0.18, x=0.5, xanchor="center"))
    fig.update_xaxes(title_text="reference log-ratio log π_ref(y_w|x) − log π_ref(y_l|x) (nats)")
    fig.update_yaxes(title_text="policy log-ratio log π_θ(y_w|x) − log π_θ(y_l|x) (nats)")
    return fig


def _bar_outline(index: np.ndarray, selected: set[int]) -> dict:
    return dict(color=[OKABE_ITO["black"] if int(i) in selected else "rgba(0,0,0,0)" for i in index],
                width=[3 if int(i) in selected else 0 for i in index])


def dpo_bars_figure(pairs: Any, variant: str = "dpo", selected: int | None = None,
                    dpo_variant: str = "sigmoid") -> go.Figure:
    """Per-pair DPO loss (top) and gradient weight σ(−β·D) (bottom), with ln 2 and 0.5 marked (the values at
    π_θ = π_ref for the sigmoid loss). The selected pair is outlined."""
    if _empty_frame(pairs):
        return empty_figure("Score a data set to see per-pair losses.")
    index = np.asarray(pairs["pair"]) if "pair" in pairs else np.arange(len(pairs))
    loss, weight = _col(pairs, "dpo_loss"), _col(pairs, "grad_weight")
    prompts = _texts(pairs, "prompt")
    selected_set = _selected_set(selected)
    color = variant_color(variant)
    fig = make_subplots(rows=2, cols=1, shared_xaxes=True, vertical_spacing=0.12,
                        subplot_titles=[f"Per-pair loss ({dpo_variant})", "Gradient weight σ(−β·D)"])
    for row, values_, name, unit in ((1, loss, "loss", "nats"), (2, weight, "gradient weight", "0..1")):
        fig.add_trace(go.Bar(
            x=index, y=values_, name=name, marker=dict(color=color, line=_bar_outline(index, selected_set)),
            customdata=index, hovertext=[f"<b>pair {int(i)}</b>: {p}<br>{name}: {_fmt(v, 4)} {unit}"
                                         for i, p, v in zip(index, prompts, values_)],
            hoverinfo="text", showlegend=False,
        ), row=row, col=1)
    fig.add_hline(y=LN2, line=dict(color=GUIDE_COLOR, dash="dot"), row=1, col=1,
                  annotation_text="ln 2 (policy = reference)", annotation_position="top right")
    fig.add_hline(y=0.5, line=dict(color=GUIDE_COLOR, dash="dot"), row=2, col=1,
                  annotation_text="0.5 (D = 0)", annotation_position="top right")
    fig.update_yaxes(title_text="loss (nats)", row=1, col=1)
    fig.update_yaxes(title_text="weight", range=[0, 1.05], row=2, col=1)
    fig.update_xaxes(title_text="pair #", row=2, col=1)
    _style(fig, f"DPO per pair ({variant})", height=560, bargap=0.15)
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
    dpo_variant = str(focus.get("dpo_variant", "sigmoid"))
    fig = make_subplots(rows=1, cols=2, column_widths=[0.45, 0.55], horizontal_spacing=0.12,
                        subplot_titles=["Additive: how D is built (nats)",
                                        f"Non-additive: D → loss ({dpo_variant})"])
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
                                 name=f"loss {_LOSS_FORMULAS.get(dpo_variant, '')}",
                                 line=dict(color=variant_color(variant), width=3),
                                 hovertemplate="argument %{x:.3g}<br>loss %{y:.4g}<extra></extra>"), row=1, col=2)
        fig.add_trace(go.Scatter(x=[point], y=[float(focus["loss"])], mode="markers", name="this pair",
                                 marker=dict(size=16, color=OKABE_ITO["black"], symbol="diamond"),
                                 hovertemplate="this pair<br>argument %{x:.4g}<br>loss %{y:.4g}<extra></extra>"),
                      row=1, col=2)
        fig.update_xaxes(title_text=str(focus.get("curve_xlabel", "D (nats)")), row=1, col=2)
    fig.update_yaxes(title_text="loss (nats)", row=1, col=2)
    beta = float(focus.get("beta", math.nan))
    lines = [f"β = {_fmt(beta, 3)}", f"β·D = {_fmt(focus.get('logit'), 4)}",
             f"σ(β·D) = {_fmt(focus.get('sigma'), 4)}  (P(chosen wins), Bradley-Terry)",
             f"loss = {_LOSS_FORMULAS.get(dpo_variant, 'loss')} = {_fmt(focus.get('loss'), 4)}",
             f"gradient weight σ(−β·D) = {_fmt(focus.get('grad_weight'), 4)}"]
    fig.add_annotation(text="<br>".join(lines), x=0.99, y=0.97, xref="x2 domain", yref="y2 domain", showarrow=False,
                       xanchor="right", yanchor="top", align="left", font=dict(size=14),
                       bgcolor="rgba(255,255,255,0.85)", bordercolor="#BBBBBB", borderwidth=1)
    _style(fig, f"Pair {focus.get('index', '?')}: from log-ratios to the loss", height=480,
           legend=dict(orientation="h", y=-0.2, x=0.75, xanchor="center"))
    return fig


# --------------------------------------------------------------------------------------------------------------------
# Inspect tab: KTO
# --------------------------------------------------------------------------------------------------------------------

LABEL_COLORS = {"desirable": GOOD_COLOR, "undesirable": BAD_COLOR}
LABEL_SYMBOLS = {"desirable": "circle", "undesirable": "x"}


def _labels(samples: Any) -> list[str]:
    return [str(v) for v in samples["label"]] if "label" in samples else ["desirable"] * len(samples)


def _sample_hover(samples: Any, extra: Sequence[tuple[str, str, str]]) -> list[str]:
    index = np.asarray(samples["sample"]) if "sample" in samples else np.arange(len(samples))
    labels, prompts, completions = _labels(samples), _texts(samples, "prompt"), _texts(samples, "completion")
    columns = [(title, _col(samples, key), unit) for key, title, unit in extra]
    out = []
    for k in range(len(samples)):
        head = f"<b>sample {int(index[k])}</b> ({labels[k]})<br>{prompts[k]}<br>→ {completions[k]}"
        out.append(head + "".join(f"<br>{t}: {_fmt(v[k], 4)}{(' ' + u) if u else ''}" for t, v, u in columns))
    return out


def kto_scatter_figure(samples: Any, z0: float, selected: Sequence[int] | None = None,
                       kto_variant: str = "kto") -> go.Figure:
    """Each sample's log-ratio r (x) against the reference point z0 (vertical line), one row per label.

    A desirable answer gains value when r > z0, an undesirable one when r < z0 (KTO, Ethayarajh et al. 2024).
    """
    if _empty_frame(samples):
        return empty_figure("Score a data set to see the KTO view.")
    r = _col(samples, "logratio")
    labels = _labels(samples)
    index = np.asarray(samples["sample"]) if "sample" in samples else np.arange(len(samples))
    hover = _sample_hover(samples, [("logratio", "r", "nats"), ("kto_value", "value v", ""),
                                    ("kto_loss", "loss", "")])
    rng = np.random.default_rng(0)  # fixed jitter: the same picture on every redraw
    jitter = rng.uniform(-0.25, 0.25, len(samples))
    selected_set = _selected_set(selected)
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
    ref_name = "z0 (KL estimate)" if kto_variant == "kto" else "0 (APO-zero: no z0)"
    fig.add_vline(x=z0 if kto_variant == "kto" else 0.0, line=dict(color=OKABE_ITO["black"], dash="dash", width=2),
                  annotation_text=f"{ref_name} = {_fmt(z0 if kto_variant == 'kto' else 0.0, 3)}",
                  annotation_position="top")
    _style(fig, "KTO: log-ratio r of each sample against the reference point", height=420,
           legend=dict(orientation="h", y=-0.25, x=0.5, xanchor="center"))
    fig.update_xaxes(title_text="r = log π_θ(y|x) − log π_ref(y|x) (nats)")
    fig.update_yaxes(title_text="label", tickmode="array", tickvals=[0, 1], ticktext=["undesirable", "desirable"],
                     range=[-0.6, 1.6], zeroline=False)
    return fig


def kto_value_curve_figure(samples: Any, curves: Mapping[str, Any] | None,
                           selected: Sequence[int] | None = None) -> go.Figure:
    """KTO's value v(r) per label (λ_D σ(β(r − z0)) and λ_U σ(β(z0 − r))) with each sample placed on its curve."""
    if _empty_frame(samples) or not curves:
        return empty_figure("Score a data set to see the KTO value curve.")
    fig = go.Figure()
    grid = np.asarray(curves["r"], dtype=float)
    weights = {"desirable": curves.get("desirable_weight", 1.0), "undesirable": curves.get("undesirable_weight", 1.0)}
    formulas = {"desirable": "λ_D σ(β(r − z0))", "undesirable": "λ_U σ(β(z0 − r))"}
    for label in ("desirable", "undesirable"):
        if label in curves:
            fig.add_trace(go.Scatter(x=grid, y=np.asarray(curves[label]), mode="lines",
                                     name=f"v for {label}: {formulas[label]}, λ = {_fmt(weights[label], 3)}",
                                     line=dict(color=LABEL_COLORS[label], width=3),
                                     hovertemplate=f"{label}<br>r %{{x:.3g}}<br>v %{{y:.4g}}<extra></extra>"))
    labels = _labels(samples)
    r, v = _col(samples, "logratio"), _col(samples, "kto_value")
    index = np.asarray(samples["sample"]) if "sample" in samples else np.arange(len(samples))
    hover = _sample_hover(samples, [("logratio", "r", "nats"), ("kto_value", "value v", ""),
                                    ("kto_loss", "loss λ − v", "")])
    selected_set = _selected_set(selected)
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
    fig.add_vline(x=z0, line=dict(color=OKABE_ITO["black"], dash="dash"), annotation_text=f"z0 = {_fmt(z0, 3)}",
                  annotation_position="top")
    _style(fig, f"KTO value v(r), β = {_fmt(curves.get('beta'), 3)}", height=440,
           legend=dict(orientation="h", y=-0.28, x=0.5, xanchor="center"))
    fig.update_xaxes(title_text="r = log π_θ(y|x) − log π_ref(y|x) (nats)")
    fig.update_yaxes(title_text="value v (0..λ)")
    return fig


def kto_loss_figure(samples: Any, selected: Sequence[int] | None = None) -> go.Figure:
    """Per-sample KTO loss λ_y − v, bars coloured by label; the selected pair's two samples outlined."""
    if _empty_frame(samples):
        return empty_figure("Score a data set to see per-sample KTO losses.")
    index = np.asarray(samples["sample"]) if "sample" in samples else np.arange(len(samples))
    labels = _labels(samples)
    loss = _col(samples, "kto_loss")
    hover = _sample_hover(samples, [("logratio", "r", "nats"), ("kto_value", "value v", ""),
                                    ("kto_loss", "loss λ − v", "")])
    selected_set = _selected_set(selected)
    fig = go.Figure()
    for label in ("desirable", "undesirable"):
        mask = np.array([lab == label for lab in labels])
        if mask.any():
            fig.add_trace(go.Bar(x=index[mask], y=loss[mask], name=label, customdata=index[mask],
                                 marker=dict(color=LABEL_COLORS[label], line=_bar_outline(index[mask], selected_set)),
                                 hovertext=[h for h, m in zip(hover, mask) if m], hoverinfo="text"))
    _style(fig, "KTO loss per sample (λ_y − v)", height=400, bargap=0.1,
           legend=dict(orientation="h", y=-0.25, x=0.5, xanchor="center"))
    fig.update_xaxes(title_text="sample # (chosen answers first, then rejected)")
    fig.update_yaxes(title_text="loss (0..λ)", rangemode="tozero")
    return fig


# --------------------------------------------------------------------------------------------------------------------
# Inspect tab: the source material's prospect view
# --------------------------------------------------------------------------------------------------------------------

TAU_NAMES = {"quantile": "quantile", "ema": "EMA", "fixed": "task bar (fixed)", "z0": "z0 (KTO)"}


def value_histogram_figure(samples: Any, taus: Mapping[str, float], selected_method: str | None = None,
                           value_label: str = "V") -> go.Figure:
    """Histogram of V(x, y) by label, with one labelled vertical line per tau method (the selected one thicker)."""
    if _empty_frame(samples):
        return empty_figure("Score a data set to see V(x, y).")
    v = _col(samples, "V")
    labels = _labels(samples)
    fig = go.Figure()
    for label in ("desirable", "undesirable"):
        mask = np.array([lab == label for lab in labels])
        if mask.any():
            fig.add_trace(go.Histogram(x=v[mask], name=f"{label} (chosen)" if label == "desirable" else
                                       f"{label} (rejected)", marker_color=LABEL_COLORS[label], opacity=0.65,
                                       nbinsx=30, hovertemplate="V %{x}<br>count %{y}<extra></extra>"))
    finite_v = _finite(v)
    lo, hi = (float(finite_v.min()), float(finite_v.max())) if finite_v.size else (0.0, 1.0)
    span = max(hi - lo, 1e-9)
    for k, (method, tau) in enumerate(taus.items()):
        tau = _num(tau)
        if not math.isfinite(tau):
            continue
        chosen = method == selected_method
        off_scale = tau < lo - 2 * span or tau > hi + 2 * span
        name = f"τ {TAU_NAMES.get(method, method)} = {_fmt(tau, 3)}" + (" (off scale)" if off_scale else "")
        shown = min(max(tau, lo - 2 * span), hi + 2 * span)
        fig.add_trace(go.Scatter(
            x=[shown, shown], y=[0, 1], yaxis="y2", mode="lines", name=name + (" ← selected" if chosen else ""),
            line=dict(color=TAU_COLORS.get(method, GUIDE_COLOR), dash=TAU_DASH.get(method, "solid"),
                      width=5 if chosen else 2),
            hovertemplate=f"{name}<extra></extra>"))
        fig.add_annotation(x=shown, y=1.0 - 0.08 * k, yref="paper", text=TAU_NAMES.get(method, method),
                           showarrow=False, xanchor="left", font=dict(size=13, color=TAU_COLORS.get(method)))
    _style(fig, "V(x, y) and the thresholds τ", height=440, barmode="overlay",
           legend=dict(orientation="h", y=-0.3, x=0.5, xanchor="center"),
           yaxis2=dict(overlaying="y", range=[0, 1], visible=False))
    fig.update_xaxes(title_text=f"V: {value_label}")
    fig.update_yaxes(title_text="samples")
    return fig


def prospect_bars_figure(samples: Any, tau: float, loss_aversion: float, value_label: str = "V",
                         selected: Sequence[int] | None = None) -> go.Figure:
    """Diverging bars per sample, sorted by V: the gain max(0, V − τ) up, the λ-weighted loss λ·max(0, τ − V) down."""
    if _empty_frame(samples):
        return empty_figure("Score a data set to see gains and losses.")
    v = _col(samples, "V")
    order = np.argsort(np.where(np.isfinite(v), v, -np.inf), kind="stable")
    gain, loss = _col(samples, "gain")[order], _col(samples, "weighted_loss")[order]
    index = (np.asarray(samples["sample"]) if "sample" in samples else np.arange(len(samples)))[order]
    hover_all = _sample_hover(samples, [("V", "V", ""), ("gain", "gain", ""), ("weighted_loss", "λ·loss", ""),
                                        ("prospect_value", "prospect value", "")])
    hover = [hover_all[k] for k in order]
    x = np.arange(len(order))
    selected_set = _selected_set(selected)
    fig = go.Figure()
    fig.add_trace(go.Bar(x=x, y=gain, name="gain max(0, V − τ)", customdata=index, hovertext=hover,
                         hoverinfo="text", marker=dict(color=GOOD_COLOR, line=_bar_outline(index, selected_set))))
    fig.add_trace(go.Bar(x=x, y=-loss, name=f"loss −λ·max(0, τ − V), λ = {_fmt(loss_aversion, 3)}",
                         customdata=index, hovertext=hover, hoverinfo="text",
                         marker=dict(color=BAD_COLOR, line=_bar_outline(index, selected_set))))
    _style(fig, f"Gains and λ-weighted losses around τ = {_fmt(tau, 3)}", height=420, barmode="relative",
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
    if _empty_frame(samples) or not curves:
        return empty_figure("Score a data set to compare the objectives.")
    src_mean = float(np.nanmean(_col(samples, "source_objective"))) if len(samples) else math.nan
    cor_mean = float(np.nanmean(_col(samples, "prospect_value"))) if len(samples) else math.nan
    lam = curves.get("loss_aversion", math.nan)
    fig = make_subplots(rows=1, cols=2, shared_yaxes=False, horizontal_spacing=0.1, subplot_titles=[
        f"{SOURCE_LABEL}:<br>λ·ReLU(V−τ) − ReLU(τ−V), mean {_fmt(src_mean, 3)}",
        f"{CORRECTED_LABEL}:<br>ReLU(V−τ) − λ·ReLU(τ−V), mean {_fmt(cor_mean, 3)}"])
    grid = np.asarray(curves["V"], dtype=float)
    labels = _labels(samples)
    v = _col(samples, "V")
    index = np.asarray(samples["sample"]) if "sample" in samples else np.arange(len(samples))
    selected_set = _selected_set(selected)
    for col, key, column, color, name in ((1, "source", "source_objective", SOURCE_COLOR, SOURCE_LABEL),
                                          (2, "corrected", "prospect_value", CORRECT_COLOR, CORRECTED_LABEL)):
        fig.add_trace(go.Scatter(x=grid, y=np.asarray(curves[key]), mode="lines", name=name,
                                 line=dict(color=color, width=3),
                                 hovertemplate=f"{name}<br>V %{{x:.3g}}<br>value %{{y:.4g}}<extra></extra>"),
                      row=1, col=col)
        y = _col(samples, column)
        hover = _sample_hover(samples, [("V", "V", ""), (column, name, "")])
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
                             f"Prospect theory weighs losses by λ = {_fmt(lam, 3)}."),
                       x=0.5, y=-0.32, xref="paper", yref="paper", showarrow=False, font=dict(size=14))
    _style(fig, "Source objective vs corrected prospect value", height=500,
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
    if best_alpha is not None and math.isfinite(_num(best_alpha)):
        best_acc = accuracies[int(np.argmin(np.abs(np.asarray(alphas, dtype=float) - float(best_alpha))))]
        fig.add_trace(go.Scatter(x=[best_alpha], y=[best_acc], mode="markers", name=f"best α = {best_alpha:.2f}",
                                 marker=dict(size=18, color=OKABE_ITO["vermillion"], symbol="star"),
                                 hovertemplate="best α %{x:.2f}<br>accuracy %{y:.3f}<extra></extra>"))
    if current_alpha is not None and math.isfinite(_num(current_alpha)):
        fig.add_vline(x=float(current_alpha), line=dict(color=OKABE_ITO["black"], dash="dot"),
                      annotation_text=f"slider α = {float(current_alpha):.2f}", annotation_position="bottom right")
    _style(fig, "Hybrid V: α grid search (α·P_LM + (1−α)·R_task)", height=420,
           legend=dict(orientation="h", y=-0.25, x=0.5, xanchor="center"))
    fig.update_xaxes(title_text="α (weight on P_LM)", range=[-0.03, 1.03])
    fig.update_yaxes(title_text="share of pairs with V(chosen) > V(rejected)", range=[-0.02, 1.05])
    return fig
