"""Runs side by side: the settings, held-out metrics and answer measures of several adapters, from their
``meta.json`` (what the training loop records), as tables a page draws. Pure pandas; no model calls."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pandas as pd

from playground.common.numbers import finite_or_none
from playground.engine import fingerprint

# The run facts shown above the hyperparameters, by meta.json key
RUN_FACTS = (("method", "method"), ("data_file", "data"), ("train_rows", "training rows"),
             ("steps_done", "steps done"), ("total_steps", "steps planned"), ("device", "device"),
             ("training_seconds", "training seconds"), ("base_model", "base model"))
HELDOUT_COLUMNS = (("preference_accuracy", "held-out preference accuracy"), ("mean_margin", "mean margin"),
                   ("dpo_loss", "held-out DPO loss"), ("drift", "drift (nats/token)"), ("pairs", "pairs"))
ANSWER_COLUMNS = (("mean_words", "mean words"), ("share_repetitive", "share repetitive"),
                  ("mean_fluency", "fluency"), ("mean_rouge_l", "ROUGE-L to chosen"))
BASE_WEIGHTS_SHOWN = {fingerprint.SAME: "the loaded ones", fingerprint.OTHER: "other weights of this base",
                      fingerprint.UNRECORDED: "not recorded", fingerprint.UNCHECKED: "not checked"}


def flatten(settings: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested settings as one level: ``{"loss": {"beta": 0.1}}`` -> ``{"loss.beta": 0.1}``; lists as text."""
    out: dict[str, Any] = {}
    for key, value in settings.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            out.update(flatten(value, name + "."))
        else:
            out[name] = ", ".join(map(str, value)) if isinstance(value, (list, tuple)) else value
    return out


def settings_table(metas: Mapping[str, Mapping[str, Any]]) -> pd.DataFrame:
    """One row per setting (the run facts, then every hyperparameter), one column per adapter, and ``differs``:
    True where the adapters' values are not all the same (a missing value counts as different)."""
    rows: dict[str, dict[str, Any]] = {}
    for name, meta in metas.items():
        facts = {label: meta.get(key) for key, label in RUN_FACTS}
        for setting, value in {**facts, **flatten(meta.get("hyperparameters") or {})}.items():
            rows.setdefault(setting, {})[name] = value
    frame = pd.DataFrame.from_dict(rows, orient="index", columns=list(metas))
    frame.index.name = "setting"
    frame["differs"] = [len({repr(v) for v in row}) > 1 for row in frame[list(metas)].itertuples(index=False)]
    return frame.reset_index()


def results_table(metas: Mapping[str, Mapping[str, Any]], loaded_fingerprint: str | None = None) -> pd.DataFrame:
    """One row per adapter: its held-out metrics (what they were measured on) and its answers' measures (the
    base vs adapter report of the run).

    With ``loaded_fingerprint`` (the loaded base's, ``engine.fingerprint``) each record's ``base_fingerprint`` is
    checked (column "base weights"): the numbers of a run trained on other weights of this base were measured on
    those, so they are left out and "measured on" says so, unless ``python -m playground.evaluate --write-meta``
    measured the adapter again on the loaded weights (its ``evaluation`` records their fingerprint): then those
    numbers are shown."""
    records = []
    for name, meta in metas.items():
        held, tuned, measured_on = _measured(meta)
        status = fingerprint.compare(meta.get("base_fingerprint"), loaded_fingerprint) if loaded_fingerprint else ""
        if status == fingerprint.OTHER:
            evaluation = meta.get("evaluation") or {}
            if evaluation.get("base_fingerprint") == loaded_fingerprint and meta.get("heldout_eval"):
                held, tuned = meta["heldout_eval"], (evaluation.get("adapter") or {}).get("answers") or {}
                measured_on = (f"{evaluation.get('pairs')} pairs of {evaluation.get('data')}, measured again on the "
                               "loaded base weights")
            else:
                held, tuned = {}, {}
                measured_on = ("not shown: measured on other weights of this base (the ones it was trained on)"
                               + (f", {measured_on}" if measured_on else ""))
        record: dict[str, Any] = {"adapter": name}
        record.update({label: finite_or_none(held.get(key)) for key, label in HELDOUT_COLUMNS})
        record.update({label: finite_or_none(tuned.get(key)) for key, label in ANSWER_COLUMNS})
        record["measured on"] = measured_on
        record["base weights"] = BASE_WEIGHTS_SHOWN.get(status, "")
        records.append(record)
    columns = ["adapter", *(label for _, label in HELDOUT_COLUMNS), *(label for _, label in ANSWER_COLUMNS),
               "measured on", "base weights"]
    return pd.DataFrame(records, columns=columns)


def _measured(meta: Mapping[str, Any]) -> tuple[Mapping[str, Any], Mapping[str, Any], str]:
    """A run's own held-out metrics, its adapter's answer measures and what they were measured on."""
    summaries = ((meta.get("answers_eval") or {}).get("summaries") or {})
    tuned = next((v for k, v in summaries.items() if k != "base"), {}) or {}
    return meta.get("heldout_metrics") or {}, tuned, str(meta.get("heldout_source") or "")


def histories(metas: Mapping[str, Mapping[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    """Each adapter's per-step history (possibly empty)."""
    return {name: list(meta.get("history") or []) for name, meta in metas.items()}
