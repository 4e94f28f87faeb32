"""The page says when an adapter was trained on other weights of the loaded base (or has no record of its base's
weights): the header, the variant labels of ``Services.describe``, and the Runs tab's table."""

from __future__ import annotations

import json

import pytest

from playground.engine.adapters import AdapterInfo
from playground.serving.services import Services
from playground.ui import runs_tab
from playground.ui.page import header_markdown


@pytest.fixture()
def services(tiny_engine, tmp_path):
    engine = tiny_engine
    for name, fingerprint in (("dpo", "0" * 64), ("kto", engine.base_fingerprint)):  # dpo: other weights
        info = engine.adapters[name]
        meta = {**info.meta, "base_fingerprint": fingerprint, "heldout_metrics": {"preference_accuracy": 0.9},
                "heldout_source": "20 pairs"}
        (info.path / "meta.json").write_text(json.dumps(meta))
        engine.detach(name)
        engine.attach(AdapterInfo(name, info.path, meta, "shipped"))
    return Services.for_engine(engine, tmp_path / "data")


def test_the_header_and_the_variant_labels_carry_the_notice(services):
    info = services.describe()
    assert info["base_fingerprint"] == services.engine.base_fingerprint and info["hub_id"] is None  # a local dir
    labels = {a["name"]: a for a in info["adapters"]}
    assert labels["dpo"]["base_weights"] == "other" and "other base weights" in labels["dpo"]["label"]
    assert labels["kto"]["base_weights"] == "same" and labels["kto"]["label"] == "KTO adapter, shipped"
    assert info["base_weights_notice"] == services.engine.base_weights_notice()
    assert "dpo was trained on other weights of this base" in info["base_weights_notice"]
    assert "kto" not in info["base_weights_notice"]
    header = header_markdown(services)
    assert "⚠ dpo was trained on other weights" in header and "python -m playground.evaluate" in header


def test_the_runs_table_hides_the_other_weights_numbers(services):
    _curves, _settings, results = runs_tab.compare_runs(services, ["dpo", "kto"], "loss")
    table = results.set_index("adapter")
    assert table.loc["dpo", "measured on"].startswith("not shown") and table.loc["kto", "measured on"] == "20 pairs"
    assert table.loc["kto", "held-out preference accuracy"] == 0.9
    assert list(table["base weights"]) == ["other weights of this base", "the loaded ones"]


def test_no_notice_when_every_adapter_is_the_loaded_bases(tiny_engine, tmp_path):
    services = Services.for_engine(tiny_engine, tmp_path / "data")  # conftest's adapters have no fingerprint
    assert "dpo and kto: base weights not recorded" in header_markdown(services)
    for name in ("dpo", "kto"):
        info = tiny_engine.adapters[name]
        tiny_engine.detach(name)
        tiny_engine.attach(AdapterInfo(name, info.path, {**info.meta,
                                                         "base_fingerprint": tiny_engine.base_fingerprint}))
    assert "⚠" not in header_markdown(services) and services.describe()["base_weights_notice"] == ""
