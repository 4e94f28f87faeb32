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
    measured = engine_preference(engine, pairs, name)  # all 120: a subset's accuracy would differ by chance
    assert measured["pairs"] == len(pairs) == 120
    assert measured["preference_accuracy"] == pytest.approx(recorded, abs=0.01)
    assert measured["dpo_loss"] == pytest.approx(meta["heldout_metrics"]["dpo_loss"], rel=0.02)


def test_shipped_adapters_are_small_safetensors_that_beat_the_base_without_saturating():
    for name in ("dpo", "kto"):
        folder = CHECKPOINTS / name
        assert (folder / "adapter_model.safetensors").stat().st_size <= 20 * 1024 * 1024
        assert not list(folder.glob("*.bin"))
        meta = json.loads((folder / "meta.json").read_text())
        evaluation = meta["evaluation"]  # written by `playground.evaluate --write-meta` on the bundled held-out pairs
        assert evaluation["data"].endswith("demo_pairs_heldout.csv") and evaluation["pairs"] == 120
        base, mine = evaluation["base"], evaluation["adapter"]
        # Better answers than the base on held-out prompts: closer to the reference, no more repetition, the style.
        assert mine["answers"]["mean_rouge_l"] > base["answers"]["mean_rouge_l"]
        assert mine["answers"]["share_repetitive"] <= base["answers"]["share_repetitive"]
        assert mine["style"]["share_target_traits"] > base["style"]["share_target_traits"]
        assert mine["answers"]["mean_words"] < base["answers"]["mean_words"]
        # Inspect stays informative: per-pair losses and gradient weights spread over a visible range, not all ~0.
        loss, weight = mine["dpo_loss_spread"], mine["grad_weight_spread"]
        assert loss["median"] > 0.005 and loss["p90"] - loss["p10"] > 0.1, loss  # saturated: all ~0.0005
        assert weight["p90"] > 0.1 and weight["p90"] - weight["p10"] > 0.05, weight
        assert meta["heldout_eval"]["dpo_loss"] > 0.02
