"""The precomputed Inspect numbers record the base weights' fingerprint and are ignored on other weights."""

from __future__ import annotations

import json

import pandas as pd

from playground.analysis.precomputed import load_precomputed, save_precomputed
from playground.analysis.scores import score_dataset

PAIRS = pd.DataFrame({"prompt": ["What is 2+2?", "Say hi."], "chosen": ["4.", "Hi there!"],
                      "rejected": ["5.", "No."]})


def test_numbers_of_other_base_weights_are_ignored(tiny_engine, tmp_path):
    scores = score_dataset(tiny_engine, PAIRS, ["base", "dpo"])
    path = save_precomputed(tiny_engine, scores, tmp_path / "cache.json")
    payload = json.loads(path.read_text())
    assert payload["base_fingerprint"] == tiny_engine.base_fingerprint
    assert load_precomputed(tiny_engine, PAIRS, None, path) is not None

    loaded = tiny_engine.base_fingerprint
    tiny_engine.base_fingerprint = "0" * 64  # same base identity, other weights
    try:
        assert load_precomputed(tiny_engine, PAIRS, None, path) is None
        del payload["base_fingerprint"]  # a file written before fingerprints: checked by the identity alone
        path.write_text(json.dumps(payload))
        assert load_precomputed(tiny_engine, PAIRS, None, path) is not None
    finally:
        tiny_engine.base_fingerprint = loaded
