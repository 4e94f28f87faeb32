"""The Inspect tab on a tiny engine: it builds, opens filled from valid precomputed numbers, scores through Gradio's
event processing with a progress bar, and redraws with no model call."""

from __future__ import annotations

import asyncio

import pandas as pd
import pytest

gr = pytest.importorskip("gradio")

from playground.analysis.datasets import prepare_pairs  # noqa: E402
from playground.analysis.precomputed import save_precomputed  # noqa: E402
from playground.analysis.scores import score_dataset  # noqa: E402
from playground.analysis.views import InspectSettings  # noqa: E402
from playground.engine import scoring as scoring_module  # noqa: E402
from playground.serving import services as services_module  # noqa: E402
from playground.serving.services import Services  # noqa: E402
from playground.ui import inspect_tab  # noqa: E402

HELDOUT = pd.DataFrame({
    "prompt": ["What is 2+2?", "Name a yellow fruit.", "Say hi.", "Capital of France?"],
    "chosen": ["4.", "A banana.", "Hi there!", "Paris."],
    "rejected": ["5.", "A cucumber.", "No.", "Lyon."],
    "reference": ["4", "banana", "", "Paris"],
})


def make_services(engine, tmp_path, votes=None) -> Services:
    """Real Services on the tiny engine, with this file's held-out pairs and (optionally) a session's votes."""
    services = Services.for_engine(engine, tmp_path / "data", heldout_file=None)
    services.heldout_pairs = HELDOUT
    empty = pd.DataFrame(columns=["kind", "prompt", "answer_a", "answer_b", "system"])
    services.votes_for = lambda session_id: votes if votes is not None else empty
    return services


def build(services):
    with gr.Blocks() as demo, gr.Tab("Inspect"):
        tab = inspect_tab.build_inspect_tab(services, gr.State(None))
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
    assert len(out) == 3 + 12 and isinstance(out[-2], pd.DataFrame)  # the family part: a table, then a figure
    assert "Score" in out[0]
    assert len(inspect_tab.render(None, None, None, inspect_tab.DEFAULTS, ("kto",))) == 3 + 3


def test_settings_from_widgets_defaults_and_errors():
    assert inspect_tab.settings_from() == InspectSettings()
    settings = inspect_tab.settings_from(0.3, "ipo")
    assert settings.beta == 0.3 and settings.dpo_loss_type == "ipo"
    with pytest.raises(gr.Error):
        inspect_tab.settings_from("not a number")


def test_tab_scores_and_redraws_without_model_calls(tiny_engine, tmp_path, monkeypatch):
    monkeypatch.setattr(services_module, "DEFAULT_DISK_CACHE", tmp_path / "none.json")
    services = make_services(tiny_engine, tmp_path)
    demo, tab = build(services)
    assert tab.refresh()["choices"] == ["base", "dpo", "kto"]
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
        real = score
        monkeypatch.setattr(scoring_module, "score", lambda *a, **k: calls.append(1) or real(*a, **k))
        redraw = fns["redraw"]
        again = await demo.process_api(block_fn=redraw, inputs=_payload(redraw, {}), state=state)
        return out, again, calls

    out, again, calls = asyncio.run(run())
    assert "Scored bundled held-out pairs" in out["data"][3]
    assert "**dpo** on 4 pairs" in again["data"][0]
    assert calls == []  # the redraw read the session's cached scores only
    assert len(services.inspect_cache) >= 3  # reference, dpo, task metrics


def test_tab_opens_filled_from_precomputed_numbers(tiny_engine, tmp_path, monkeypatch):
    scores = score_dataset(tiny_engine, HELDOUT, ["base", "dpo", "kto"])
    path = save_precomputed(tiny_engine, scores, tmp_path / "cache.json")
    monkeypatch.setattr(services_module, "DEFAULT_DISK_CACHE", path)
    calls = []
    monkeypatch.setattr(scoring_module, "score", lambda *a, **k: calls.append(1))
    services = make_services(tiny_engine, tmp_path)
    demo, _ = build(services)
    markdown = [b for b in demo.blocks.values() if isinstance(b, gr.Markdown) and "precomputed numbers" in
                str(b.value)]
    assert markdown and calls == []
    plots_filled = [b for b in demo.blocks.values() if isinstance(b, gr.Plot) and b.value and "Score a data set"
                    not in str(b.value)]
    assert len(plots_filled) >= 9  # all but the waterfall, which waits for a selected pair


def test_load_dataset_votes_and_errors(tiny_engine, tmp_path):
    votes = pd.DataFrame([{"kind": "left_better", "prompt": "Hi?", "answer_a": "Hello!", "answer_b": "Go away.",
                           "system": ""},
                          {"kind": "thumbs_down", "prompt": "Hi?", "answer_a": "No.", "answer_b": "", "system": ""}])
    services = make_services(tiny_engine, tmp_path, votes)
    frame, note = inspect_tab.load_dataset(services, inspect_tab.DATA_VOTES, None, "abc")
    pairs, _ = prepare_pairs(frame)
    assert list(pairs["chosen"]) == ["Hello!"] and "votes" in note
    with pytest.raises(gr.Error):
        inspect_tab.load_dataset(make_services(tiny_engine, tmp_path), inspect_tab.DATA_VOTES, None, "abc")
    with pytest.raises(gr.Error):
        inspect_tab.load_dataset(make_services(tiny_engine, tmp_path), inspect_tab.DATA_UPLOAD, None, "abc")
