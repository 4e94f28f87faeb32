"""The in-memory cache of Inspect scores and what identifies an entry: data set, variant, base and adapter file."""

from __future__ import annotations

import threading
from collections import OrderedDict
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

from playground.common.files import sha256_file
from playground.config import BASE_VARIANT

if TYPE_CHECKING:
    from playground.engine.engine import Engine

# the variant slots of a data set's task-metrics and reward-model entries (no adapter name can start with "_")
TASK_ENTRY = "__task__"
REWARD_MODEL_ENTRY = "__reward_model__"
CacheKey = tuple[str, str, str, str]


class InspectCache:
    """A bounded, thread-safe LRU of per-(data set, adapter) scores: ``InspectCache()`` holds 16 entries.

    Keys are (data set hash, variant, base identity, adapter identity); the adapter identity is its path with the
    weight file's mtime and size, so a retrained adapter under an old name is scored afresh. Task metrics of a data
    set are kept under ``task_key(hash)``.
    """

    def __init__(self, max_entries: int = 16):
        if max_entries < 1:
            raise ValueError("max_entries must be >= 1")
        self.max_entries = max_entries
        self._entries: OrderedDict[CacheKey, Any] = OrderedDict()
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    def get(self, key: CacheKey) -> Any | None:
        with self._lock:
            if key in self._entries:
                self._entries.move_to_end(key)
                self.hits += 1
                return self._entries[key]
            self.misses += 1
            return None

    def put(self, key: CacheKey, value: Any) -> None:
        with self._lock:
            self._entries[key] = value
            self._entries.move_to_end(key)
            while len(self._entries) > self.max_entries:
                self._entries.popitem(last=False)

    def __contains__(self, key: object) -> bool:
        with self._lock:
            return key in self._entries

    def __len__(self) -> int:
        with self._lock:
            return len(self._entries)

    def keys(self) -> list[CacheKey]:
        with self._lock:
            return list(self._entries)

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()


def base_identity(engine: Engine) -> str:
    """What makes the reference's numbers: model source, name and weight dtype (bf16 scores differ from fp32)."""
    source = engine.source
    return f"{source.kind}:{engine.base_id}:{Path(str(source.name)).name}:{engine.device.weight_dtype}"


def _weights_file(engine: Engine, variant: str) -> Path | None:
    info = engine.adapters.get(variant)
    if info is None:
        return None
    path = Path(info.path) / "adapter_model.safetensors"
    return path if path.is_file() else None


def adapter_identity(engine: Engine, variant: str) -> str:
    """Path + mtime + size of the adapter's weights (``config.BASE_VARIANT`` for the reference)."""
    if variant == BASE_VARIANT:
        return BASE_VARIANT
    path = _weights_file(engine, variant)
    if path is None:
        return f"{variant}:unknown"
    stat = path.stat()
    return f"{path.resolve()}@{stat.st_mtime_ns}:{stat.st_size}"


@lru_cache(maxsize=64)
def _hash_of(path: str, mtime_ns: int, size: int) -> str:
    """Memoised per file identity: an adapter's weights are hashed once until they change."""
    return sha256_file(path)


def adapter_file_hash(engine: Engine, variant: str) -> str | None:
    """SHA-256 of the adapter's weight file; None for the base or a missing file."""
    path = _weights_file(engine, variant)
    if path is None:
        return None
    stat = path.stat()
    return _hash_of(str(path.resolve()), stat.st_mtime_ns, stat.st_size)


def cache_key(engine: Engine, dhash: str, variant: str) -> CacheKey:
    return (dhash, variant, base_identity(engine), adapter_identity(engine, variant))


def task_key(dhash: str) -> CacheKey:
    """Where a data set's task metrics (no variant involved) are kept."""
    return (dhash, TASK_ENTRY, "", "")


def reward_model_key(engine: Engine, dhash: str) -> CacheKey:
    """Where a data set's fitted R_phi is kept: it depends on the base's features, not on any adapter."""
    return (dhash, REWARD_MODEL_ENTRY, base_identity(engine), "")
