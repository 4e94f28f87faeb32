"""Each figure builds from small literal inputs, carries the expected traces, titles and colours, and handles empty
input. No model, no torch: plots take plain data."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import pytest

from playground import plots

NAN = float("nan")

PAIRS = pd.DataFrame({
    "pair": [0, 1, 2],
    "prompt": ["a?", "b?", "c?"],
    "chosen": ["yes", "ok", "fine"],
    "rejected": ["no", "bad", "meh"],
    "ref_logratio": [1.0, -2.0, 0.5],
    "policy_logratio": [3.0, -2.5, 0.5],
    "delta": [2.0, -0.5, 0.0],
    "dpo_loss": [0.6, 0.72, math.log(2)],
    "grad_weight": [0.45, 0.51, 0.5],
})
SAMPLES = pd.DataFrame({
    "sample": [0, 1, 2, 3],
    "pair": [0, 1, 0, 1],
    "label": ["desirable", "desirable", "undesirable", "undesirable"],
    "prompt": ["a?", "b?", "a?", "b?"],
    "completion": ["yes", "ok", "no", "bad"],
    "logratio": [0.5, -0.2, -1.0, 0.3],
    "kto_value": [0.51, 0.49, 0.53, 0.48],
    "kto_loss": [0.49, 0.51, 0.47, 0.52],
    "V": [-1.0, -2.0, -3.0, -1.5],
    "gain": [0.5, 0.0, 0.0, 0.0],
    "weighted_loss": [0.0, 1.0, 5.0, 0.0],
    "prospect_value": [0.5, -1.0, -5.0, 0.0],
    "source_objective": [1.0, -0.5, -1.5, 0.0],
})


def all_text(fig: go.Figure) -> str:
    parts = [fig.layout.title.text or ""]
    parts += [a.text or "" for a in fig.layout.annotations]
    parts += [t.name or "" for t in fig.data]
    for axis in [f"{a}axis{k}" for a in "xy" for k in ("", 2, 3, 4)]:
        obj = getattr(fig.layout, axis, None)
        if obj is not None and obj.title is not None:
            parts.append(obj.title.text or "")
    return " | ".join(parts)


def assert_readable(fig: go.Figure) -> None:
    fig.to_json()  # serialisable
    assert fig.layout.template.layout.font.size >= 14
    assert fig.layout.title.text


def test_palette_is_okabe_ito_and_stable():
    assert plots.VARIANT_COLORS == {"base": "#999999", "dpo": "#0072B2", "kto": "#D55E00"}
    assert set(plots.USER_COLORS) <= set(plots.OKABE_ITO.values())
    assert not set(plots.USER_COLORS) & set(plots.VARIANT_COLORS.values())
    first = plots.variant_color("my-adapter-test")
    assert plots.variant_color("my-adapter-test") == first
    assert plots.variant_color("another-adapter-test") != first  # a free colour while colours last
    assert plots.variant_color("DPO") == plots.VARIANT_COLORS["dpo"]


def test_empty_figure():
    fig = plots.empty_figure("Nothing yet")
    assert fig.layout.annotations[0].text == "Nothing yet"
    assert fig.layout.xaxis.visible is False and not fig.data
    fig.to_json()


def test_compare_metrics_figure():
    rows = [dict(variant="base", value=-1.2, implied_reward=0.0, mean_logp=-1.2, length=30),
            dict(variant="dpo", value=-0.9, implied_reward=0.4, mean_logp=-0.9, length=42),
            dict(variant="kto", value=-1.0, implied_reward=NAN, mean_logp=-1.0, length=38),
            dict(variant="kto", value=-1.1, implied_reward=0.2, mean_logp=-1.1, length=40)]
    fig = plots.compare_metrics_figure(rows)
    assert_readable(fig)
    assert len(fig.data) == 3 * len(plots.COMPARE_METRICS)
    colours = {t.name: t.marker.color for t in fig.data}
    assert colours == {"base": "#999999", "dpo": "#0072B2", "kto": "#D55E00"}
    kto_values = [t for t in fig.data if t.name == "kto" and t.xaxis == "x"][0]
    assert kto_values.y[0] == pytest.approx(-1.05)  # two rows averaged
    assert "tokens" in all_text(fig)
    assert plots.compare_metrics_figure([]).layout.annotations[0].text
    # every panel leaves a fifth of its span free beyond its tallest bar: the printed value clears the title
    lengths = fig.layout.yaxis4.range
    assert lengths == pytest.approx([0.0, 42 + 0.2 * 42])
    rewards = fig.layout.yaxis2.range  # base 0, dpo 0.4, kto 0.2 (the NaN row left out)
    assert rewards == pytest.approx([0.0, 0.4 + 0.2 * 0.4])
    values = fig.layout.yaxis.range  # all negative: room below the lowest (kto's -1.05 - 0.05 std), top at 0
    assert values[1] == 0.0 and values[0] == pytest.approx(-1.2 - 0.2 * 1.2)


def test_bar_axis_range_has_headroom_on_the_sides_with_bars():
    from playground.plots.answers import bar_axis_range

    assert bar_axis_range([]) is None
    assert bar_axis_range([0.0, 0.0]) == [-1.0, 1.0]
    assert bar_axis_range([-2.0, 3.0]) == pytest.approx([-3.0, 4.0])
    assert bar_axis_range([5.0], headroom=0.1) == pytest.approx([0.0, 5.5])


@pytest.mark.parametrize("method", ["dpo", "kto"])
@pytest.mark.parametrize("n", [0, 1, 50])
def test_training_curves_figure(method, n):
    history = [dict(step=i + 1, loss=0.69 - 0.01 * i, rewards_chosen=0.01 * i, rewards_rejected=-0.01 * i,
                    margin=0.02 * i, accuracy=min(1.0, 0.5 + 0.01 * i), z0=NAN if method == "dpo" else 0.01 * i,
                    learning_rate=1e-4) for i in range(n)]
    fig = plots.training_curves_figure(history, method)
    assert_readable(fig)
    names = {t.name for t in fig.data}
    assert {f"training {method.upper()} loss", "margin", "batch accuracy"} <= names
    assert "SFT term w·NLL" not in names  # no SFT term in this history
    assert ("z0 (KL estimate)" in names) == (method == "kto")
    assert method.upper() in fig.layout.title.text
    if n == 0:
        assert "No steps yet" in all_text(fig)
    if n == 1:
        assert all("markers" in t.mode for t in fig.data)


def test_training_curves_show_the_heldout_evaluations_the_sft_part_and_the_stop():
    history = [dict(step=i + 1, loss=0.7 - 0.05 * i, sft_loss=0.3, rewards_chosen=0.0, rewards_rejected=0.0,
                    margin=0.0, accuracy=0.5, z0=NAN, learning_rate=1e-4) for i in range(8)]
    evaluations = [dict(step=step, loss=loss, accuracy=accuracy, drift=drift) for step, loss, accuracy, drift in
                   ((0, 0.693, 0.5, 0.0), (2, 0.6, 0.7, 0.1), (4, 0.62, 0.7, 0.3), (6, 0.65, 0.7, 0.6))]
    evaluations[-1]["stop"] = True
    stop = {"reason": "held-out loss did not improve for 2 evaluations", "best_step": 2}
    fig = plots.training_curves_figure(history, "dpo", evaluations, stop, drift_budget=0.5)
    assert_readable(fig)
    by_name = {t.name: t for t in fig.data}
    assert list(by_name["held-out DPO loss"].y) == [0.693, 0.6, 0.62, 0.65]
    assert by_name["training DPO loss"].y[0] == pytest.approx(0.4)  # the batch loss less its SFT term
    assert list(by_name["held-out drift"].x) == [0, 2, 4, 6]
    assert list(by_name["SFT term w·NLL"].y) == [0.3] * 8
    text = all_text(fig)
    assert "Stopped early: held-out loss did not improve for 2 evaluations. Kept the adapter of step 2" in text
    assert "budget 0.5" in text
    lines = {(shape.x0, shape.line.dash) for shape in fig.layout.shapes if shape.x0 == shape.x1}
    assert (6, "dash") in lines and (2, "dot") in lines  # the stop and the kept step


def test_before_after_figure():
    fig = plots.before_after_figure({"accuracy": 0.5, "margin": 0.0, "label": "base"},
                                    {"accuracy": 0.8, "margin": 0.35, "label": "new-adapter", "variant": "dpo"})
    assert_readable(fig)
    bars = [t for t in fig.data if isinstance(t, go.Bar)]
    assert len(bars) == 4
    assert {t.marker.color for t in bars if t.name == "new-adapter"} == {"#0072B2"}
    assert [t.y[0] for t in bars if t.name == "new-adapter"] == [0.8, 0.35]
    assert "accuracy" in all_text(fig).lower()
    assert plots.before_after_figure({}, {}).layout.annotations
    # a missing metric gives an empty bar, not a crash
    plots.before_after_figure({"preference_accuracy": 0.6}, {"mean_margin": 0.1}).to_json()


def test_dpo_scatter_figure():
    fig = plots.dpo_scatter_figure(PAIRS, "dpo", selected=1)
    assert_readable(fig)
    names = [t.name for t in fig.data]
    assert "y = x (D = 0)" in names and "selected pair" in names
    points = fig.data[1]
    assert list(points.marker.color) == list(PAIRS["dpo_loss"])
    assert "nats" in fig.layout.xaxis.title.text and "nats" in fig.layout.yaxis.title.text
    line = fig.data[0]
    assert line.x[0] == line.y[0] and line.x[1] == line.y[1]


def test_dpo_bars_figure():
    fig = plots.dpo_bars_figure(PAIRS, "kto", selected=2)
    assert_readable(fig)
    assert all(t.marker.color == plots.VARIANT_COLORS["kto"] for t in fig.data)
    assert list(fig.data[0].marker.line.width) == [0, 0, 3]
    assert "ln 2" in all_text(fig)


def test_dpo_waterfall_is_additive_then_nonlinear():
    focus = dict(index=0, ref_logratio=1.0, policy_logratio=3.0, delta=2.0, chosen_logratio=1.5,
                 rejected_logratio=-0.5, beta=0.1, logit=0.2, sigma=0.5498, loss=0.598, grad_weight=0.4502,
                 dpo_loss_type="sigmoid", curve_x=np.linspace(-60, 60, 5), curve_y=np.ones(5), curve_point=2.0)
    fig = plots.dpo_waterfall_figure(focus, "dpo")
    assert_readable(fig)
    waterfall = fig.data[0]
    assert isinstance(waterfall, go.Waterfall)
    assert list(waterfall.measure) == ["absolute", "relative", "total"]
    assert waterfall.y[0] + waterfall.y[1] == pytest.approx(focus["delta"])  # the steps add up to D
    text = all_text(fig)
    assert "Additive" in text and "Non-additive" in text and "σ(β·D)" in text
    assert "empty" not in text and plots.dpo_waterfall_figure(None).layout.annotations


def test_kto_figures():
    fig = plots.kto_scatter_figure(SAMPLES, z0=0.1, selected=[0, 2])
    assert_readable(fig)
    by_name = {t.name: t for t in fig.data}
    assert by_name["desirable"].marker.color == plots.GOOD_COLOR
    assert by_name["undesirable"].marker.color == plots.BAD_COLOR
    assert "z0" in all_text(fig)

    curves = {"r": np.linspace(-3, 3, 7), "z0": 0.1, "beta": 0.1, "desirable": np.linspace(0.4, 0.6, 7),
              "undesirable": np.linspace(0.6, 0.4, 7), "desirable_weight": 1.0, "undesirable_weight": 1.0}
    fig = plots.kto_value_curve_figure(SAMPLES, curves, selected=[1])
    assert_readable(fig)
    assert sum(1 for t in fig.data if t.mode == "lines") == 2
    assert sum(1 for t in fig.data if t.mode == "markers") == 2

    fig = plots.kto_loss_figure(SAMPLES, selected=[1, 3])
    assert_readable(fig)
    assert sorted(len(t.y) for t in fig.data) == [2, 2]


def test_prospect_figures():
    taus = {"quantile": -1.2, "ema": -1.8, "fixed": 0.0, "z0": NAN}
    fig = plots.value_histogram_figure(SAMPLES, taus, "ema", "mean token log-prob (nats/token)")
    assert_readable(fig)
    lines = [t for t in fig.data if isinstance(t, go.Scatter)]
    assert len(lines) == 3  # z0 is NaN: no line
    selected = [t for t in lines if "selected" in t.name]
    assert len(selected) == 1 and "EMA" in selected[0].name and selected[0].line.width > lines[0].line.width

    fig = plots.prospect_bars_figure(SAMPLES, tau=-1.2, loss_aversion=2.25)
    assert_readable(fig)
    gain, loss = fig.data
    assert max(gain.y) == 0.5 and min(loss.y) == -5.0  # losses drawn downwards
    assert list(gain.customdata) == [2, 1, 3, 0]  # sorted by V

    curves = {"V": np.linspace(-3, 0, 5), "tau": -1.2, "loss_aversion": 2.25, "corrected": np.zeros(5),
              "source": np.ones(5)}
    fig = plots.objective_comparison_figure(SAMPLES, curves)
    assert_readable(fig)
    text = all_text(fig)
    assert plots.SOURCE_LABEL in text and plots.CORRECTED_LABEL in text
    assert "mean -0.25" in text and "mean -1.38" in text  # means of source_objective and prospect_value


def test_alpha_search_figure():
    alphas = np.round(np.linspace(0, 1, 11), 1)
    acc = np.linspace(0.5, 0.8, 11)
    fig = plots.alpha_search_figure(alphas, acc, best_alpha=1.0, current_alpha=0.5)
    assert_readable(fig)
    shapes = [s for s in fig.layout.shapes if s.type == "rect"]
    assert shapes and (shapes[0].x0, shapes[0].x1) == (0.3, 0.7)
    assert any("best" in (t.name or "") for t in fig.data)


@pytest.mark.parametrize("builder", [
    lambda: plots.dpo_scatter_figure(pd.DataFrame()),
    lambda: plots.dpo_bars_figure(pd.DataFrame()),
    lambda: plots.dpo_waterfall_figure({}),
    lambda: plots.kto_scatter_figure(pd.DataFrame(), 0.0),
    lambda: plots.kto_value_curve_figure(pd.DataFrame(), None),
    lambda: plots.kto_loss_figure(None),
    lambda: plots.value_histogram_figure(pd.DataFrame(), {}),
    lambda: plots.prospect_bars_figure(pd.DataFrame(), 0.0, 2.0),
    lambda: plots.objective_comparison_figure(pd.DataFrame(), None),
    lambda: plots.alpha_search_figure([], []),
])
def test_empty_inputs_give_placeholders(builder):
    fig = builder()
    fig.to_json()
    assert fig.layout.annotations and not fig.data
