"""The Inspect tab on a tiny engine: it builds, opens filled from valid precomputed numbers, scores through Gradio's
event processing with a progress bar, and redraws with no model call."""

from __future__ import annotations

import asyncio
import types

import pandas as pd
import pytest

gr = pytest.importorskip("gradio")

from playground import analysis, scoring  # noqa: E402
from playground.ui import inspect_tab  # noqa: E402

HELDOUT = pd.DataFrame({
    "prompt": ["What is 2+2?", "Name a yellow fruit.", "Say hi.", "Capital of France?"],
    "chosen": ["4.", "A banana.", "Hi there!", "Paris."],
    "rejected": ["5.", "A cucumber.", "No.", "Lyon."],
    "reference": ["4", "banana", "", "Paris"],
})


def make_services(engine, votes=None):
    return types.SimpleNamespace(engine=engine, inspect_cache=analysis.InspectCache(), heldout_pairs=HELDOUT,
                                 secret="s" * 32, votes_for=lambda session_id: votes if votes is not None
                                 else pd.DataFrame(columns=["kind", "prompt", "answer_a", "answer_b", "system"]))


def build(services):
    with gr.Blocks() as demo, gr.Tab("Inspect"):
        tab = inspect_tab.build_inspect_tab(services)
    return demo, tab


def _payload(fn, overrides):
    values = []
    for component in fn.inputs:
        if component._id in overrides:
            values.append(overrides[component._id])
        elif isinstance(component, (gr.State, gr.BrowserState)):
            values.append(None)
        else:
            value = component.value
            values.append(value.model_dump() if hasattr(value, "model_dump") else value)
    return values


def test_render_without_scores_gives_placeholders():
    out = inspect_tab.render(None, None, None, inspect_tab.DEFAULTS)
    assert len(out) == 3 + 10
    assert "Score" in out[0]
    assert len(inspect_tab.render(None, None, None, inspect_tab.DEFAULTS, ("kto",))) == 3 + 3


def test_settings_from_widgets_defaults_and_errors():
    assert inspect_tab.settings_from() == analysis.InspectSettings()
    settings = inspect_tab.settings_from(0.3, "ipo")
    assert settings.beta == 0.3 and settings.dpo_variant == "ipo"
    with pytest.raises(gr.Error):
        inspect_tab.settings_from("not a number")


def test_tab_scores_and_redraws_without_model_calls(tiny_engine, tmp_path, monkeypatch):
    monkeypatch.setattr(analysis, "DEFAULT_DISK_CACHE", tmp_path / "none.json")
    services = make_services(tiny_engine)
    demo, tab = build(services)
    assert tab.refresh_fn()["choices"] == ["base", "dpo", "kto"]
    fns = {}
    for fn in demo.fns.values():
        fns.setdefault(fn.name, fn)
    score = fns["score"]
    overrides = {c._id: ["base", "dpo"] for c in score.inputs if isinstance(c, gr.Dropdown) and c.multiselect}

    async def run():
        from gradio.state_holder import SessionState

        state = SessionState(demo)
        out = await demo.process_api(block_fn=score, inputs=_payload(score, overrides), state=state)
        calls = []
        real = scoring.score
        monkeypatch.setattr(scoring, "score", lambda *a, **k: calls.append(1) or real(*a, **k))
        redraw = fns["redraw"]
        again = await demo.process_api(block_fn=redraw, inputs=_payload(redraw, {}), state=state)
        return out, again, calls

    out, again, calls = asyncio.run(run())
    assert "Scored bundled held-out pairs" in out["data"][3]
    assert "**dpo** on 4 pairs" in again["data"][0]
    assert calls == []  # the redraw read the session's cached scores only
    assert len(services.inspect_cache) >= 3  # reference, dpo, task metrics


def test_tab_opens_filled_from_precomputed_numbers(tiny_engine, tmp_path, monkeypatch):
    scores = analysis.score_dataset(tiny_engine, HELDOUT, ["base", "dpo", "kto"])
    path = analysis.save_precomputed(tiny_engine, scores, tmp_path / "cache.json")
    monkeypatch.setattr(analysis, "DEFAULT_DISK_CACHE", path)
    calls = []
    monkeypatch.setattr(scoring, "score", lambda *a, **k: calls.append(1))
    services = make_services(tiny_engine)
    demo, _ = build(services)
    markdown = [b for b in demo.blocks.values() if isinstance(b, gr.Markdown) and "precomputed numbers" in
                str(b.value)]
    assert markdown and calls == []
    plots_filled = [b for b in demo.blocks.values() if isinstance(b, gr.Plot) and b.value and "Score a data set"
                    not in str(b.value)]
    assert len(plots_filled) >= 9  # all but the waterfall, which waits for a selected pair


def test_load_dataset_votes_and_errors(tiny_engine):
    votes = pd.DataFrame([{"kind": "left_better", "prompt": "Hi?", "answer_a": "Hello!", "answer_b": "Go away.",
                           "system": ""},
                          {"kind": "thumbs_down", "prompt": "Hi?", "answer_a": "No.", "answer_b": "", "system": ""}])
    frame, note = inspect_tab.load_dataset(make_services(tiny_engine, votes), inspect_tab.DATA_VOTES, None, "abc")
    pairs, _ = analysis.prepare_pairs(frame)
    assert list(pairs["chosen"]) == ["Hello!"] and "votes" in note
    with pytest.raises(gr.Error):
        inspect_tab.load_dataset(make_services(tiny_engine), inspect_tab.DATA_VOTES, None, "abc")
    with pytest.raises(gr.Error):
        inspect_tab.load_dataset(make_services(tiny_engine), inspect_tab.DATA_UPLOAD, None, "abc")
