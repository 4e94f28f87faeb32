"""The disk cache of precomputed Inspect numbers: the shipped adapters on the bundled held-out pairs.

Written by ``python -m playground.cli.precompute`` and validated on load by the data set hash, the base identity, the
base weights' fingerprint (``engine.fingerprint``; a file without one is checked by the identity alone) and each
adapter file's SHA-256, so a stale file is ignored rather than shown as if it applied.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from playground import config
from playground.analysis.cache import (
    InspectCache,
    adapter_file_hash,
    base_identity,
    cache_key,
    reward_model_key,
    task_key,
)
from playground.analysis.datasets import dataset_hash, prepare_pairs
from playground.analysis.reward_model import RewardModelScores
from playground.analysis.scores import DatasetScores, SideScores
from playground.common.files import atomic_write_json
from playground.config import BASE_VARIANT

if TYPE_CHECKING:
    from playground.engine.engine import Engine

log = logging.getLogger(__name__)

DEFAULT_DISK_CACHE = config.REPO_ROOT / "data" / "inspect_cache_heldout.json"
DISK_CACHE_FORMAT = "playground-inspect-cache"
DISK_CACHE_VERSION = 2  # 2: the reference's entry is named config.BASE_VARIANT; R_phi's rewards are kept


def save_precomputed(engine: Engine, scores: DatasetScores, path: Path = DEFAULT_DISK_CACHE,
                     dataset_file: str | None = None) -> Path:
    """Write ``scores`` with what validates them: data set hash, base identity and each adapter file's SHA-256."""
    entries = [{"variant": BASE_VARIANT, "adapter_sha256": None, "scores": scores.reference.to_json()}]
    for variant, side in scores.policies.items():
        if variant == BASE_VARIANT:
            continue
        entries.append({"variant": variant, "adapter_sha256": adapter_file_hash(engine, variant),
                        "scores": side.to_json()})
    task = {m: {"chosen": d["chosen"].tolist(), "rejected": d["rejected"].tolist(), "metrics": list(d["metrics"])}
            for m, d in scores.task.items()}
    payload = {"format": DISK_CACHE_FORMAT, "version": DISK_CACHE_VERSION, "dataset_hash": scores.dataset_hash,
               "dataset_file": dataset_file, "n_pairs": scores.n_pairs, "base_identity": scores.base_identity,
               "base_fingerprint": engine.base_fingerprint, "max_length": scores.max_length,
               "variants": scores.variants, "entries": entries, "task": task,
               "reward_model": scores.reward_model.to_json() if scores.reward_model is not None else None,
               "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    return atomic_write_json(path, payload, indent=1)


def load_precomputed(engine: Engine, pairs_df: pd.DataFrame | None, cache: InspectCache | None = None,
                     path: Path = DEFAULT_DISK_CACHE) -> DatasetScores | None:
    """The precomputed scores for ``pairs_df``, or None when the file is missing, unreadable or stale.

    Stale means: another data set (hash), another base (identity), other base weights (a recorded fingerprint that
    is not the loaded base's), or no valid reference entry. An adapter entry
    whose file hash differs from the attached adapter's is dropped on its own. Valid entries also go into ``cache``
    so a Score click on the same data reuses them.
    """
    path = Path(path)
    if pairs_df is None or len(pairs_df) == 0 or not path.is_file():
        return None
    try:
        payload = json.loads(path.read_text(encoding="utf-8"))
        if payload.get("format") != DISK_CACHE_FORMAT or payload.get("version") != DISK_CACHE_VERSION:
            return None
        max_length = int(payload["max_length"])
        pairs, notes = prepare_pairs(pairs_df)
        dhash = dataset_hash(pairs, max_length)
        if payload["dataset_hash"] != dhash or payload["base_identity"] != base_identity(engine):
            log.info("Ignoring %s: it was computed for another data set or base model", path)
            return None
        recorded = payload.get("base_fingerprint")
        if recorded and engine.base_fingerprint and recorded != engine.base_fingerprint:
            log.info("Ignoring %s: it was computed on other weights of this base (fingerprint %s, loaded %s)", path,
                     str(recorded)[:12], engine.base_fingerprint[:12])
            return None
        sides: dict[str, SideScores] = {}
        for entry in payload["entries"]:
            variant = entry["variant"]
            if variant != BASE_VARIANT and (variant not in engine.adapters
                                         or entry.get("adapter_sha256") != adapter_file_hash(engine, variant)):
                log.info("Ignoring precomputed scores of %r: the adapter file changed or is not attached", variant)
                continue
            side = SideScores.from_json(entry["scores"])
            if len(side.chosen_sum) != len(pairs) or len(side.kl_sum) != 2 * len(pairs):
                return None
            sides[variant] = side
        if BASE_VARIANT not in sides:
            return None
        task = {m: {"chosen": np.asarray(d["chosen"], dtype=float), "rejected": np.asarray(d["rejected"], dtype=float),
                    "metrics": list(d["metrics"])} for m, d in payload.get("task", {}).items()}
        reward_model = (RewardModelScores.from_json(payload["reward_model"]) if payload.get("reward_model")
                        else None)
        if reward_model is not None and len(reward_model.rewards) != 2 * len(pairs):
            reward_model = None
        variants = [v for v in payload.get("variants", []) if v in sides]
    # AttributeError too: a file that parses but is not the expected object (``null``, a list, "task": []) must be
    # ignored like a torn one, not raise; the page calls this while it is built, so a raise stopped the server.
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        log.warning("Ignoring unreadable Inspect cache %s: %s", path, exc)
        return None
    if cache is not None:
        for variant, side in sides.items():
            cache.put(cache_key(engine, dhash, variant), side)
        if reward_model is not None:
            cache.put(reward_model_key(engine, dhash), reward_model)
        existing = cache.get(task_key(dhash))
        if existing is not None:
            existing.update({m: d for m, d in task.items() if m not in existing})
            task = existing
        else:
            cache.put(task_key(dhash), task)
    return DatasetScores(dataset_hash=dhash, pairs=pairs, reference=sides[BASE_VARIANT],
                         policies={v: sides[v] for v in variants},
                         base_identity=base_identity(engine), max_length=max_length, task=task, notes=notes,
                         from_disk=True, reward_model=reward_model)
