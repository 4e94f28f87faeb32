"""Integration: the shipped DPO and KTO adapters load on the embedded base and still measure what meta.json says."""

from __future__ import annotations

import json

import pytest

from playground import config
from playground.engine.base_model import resolve_base_model  # noqa: E402
from playground.engine.device import pick_device  # noqa: E402
from playground.engine.engine import Engine  # noqa: E402
from playground.engine.metrics import engine_preference  # noqa: E402
from playground.feedback import read_feedback  # noqa: E402

pytestmark = pytest.mark.integration

CHECKPOINTS = config.REPO_ROOT / "checkpoints"
SUBSET = 40  # held-out pairs re-scored per adapter (of 120)


@pytest.fixture(scope="module")
def engine():
    engine = Engine.load(resolve_base_model(None, {}), pick_device("cpu"))
    assert engine.attach_all(CHECKPOINTS) == []
    return engine


@pytest.mark.parametrize(("name", "floor"), [("dpo", 0.80), ("kto", 0.75)])
def test_shipped_adapter_reproduces_its_heldout_accuracy(engine, name, floor):
    meta = json.loads((CHECKPOINTS / name / "meta.json").read_text())
    assert meta["method"] == name and meta["base_model"] == config.HUB_BASE_MODEL
    recorded = meta["heldout_metrics"]["preference_accuracy"]
    assert recorded >= floor
    pairs = read_feedback(config.REPO_ROOT / "data" / "demo_pairs_heldout.csv").data
    measured = engine_preference(engine, pairs.iloc[::3].head(SUBSET), name)
    assert measured["pairs"] == SUBSET
    assert measured["preference_accuracy"] == pytest.approx(recorded, abs=0.05)


def test_shipped_adapters_are_small_safetensors_with_style_evaluation():
    for name in ("dpo", "kto"):
        folder = CHECKPOINTS / name
        assert (folder / "adapter_model.safetensors").stat().st_size <= 20 * 1024 * 1024
        assert not list(folder.glob("*.bin"))
        meta = json.loads((folder / "meta.json").read_text())
        style = meta["style_eval"]
        # The intended direction against the base: shorter answers, more of them direct and concise.
        assert style["adapter"]["mean_words"] < style["base"]["mean_words"]
        assert style["adapter"]["share_target_traits"] > style["base"]["share_target_traits"]
