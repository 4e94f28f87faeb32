"""Disk quotas of a shared server: the adapters trained here and the run records stay within ``config.QUOTAS``.

Before a training is queued, :func:`make_room_for_adapter` evicts the oldest user adapters (detached, then deleted)
until one more fits in the count and byte limits; shipped adapters are never touched (they live elsewhere), nor is
a user adapter folder holding the pin file. The caller tells the user which adapters went. When only pinned adapters
are left and still no room, :class:`QuotaFull` says so. The run records are pruned by
``training.jobs.TrainingQueue`` with ``common.files.oldest_first_over``, the same rule.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from playground import config
from playground.common.files import folder_bytes, oldest_first_over
from playground.serving.settings import ServiceInputError

if TYPE_CHECKING:
    from playground.engine.engine import Engine


class QuotaFull(ServiceInputError):
    """The server's disk quota is used up by things that may not be evicted; the message says what to do."""


def _created(folder: Path) -> float:
    meta = folder / "meta.json"
    return (meta if meta.exists() else folder).stat().st_mtime


def make_room_for_adapter(engine: Engine, adapters_root: Path, quotas: config.Quotas = config.QUOTAS, *,
                          room: int = 1, is_busy: Callable[[str], bool] = lambda name: False) -> list[str]:
    """Evict the oldest unpinned user adapters under ``adapters_root`` until ``room`` more adapters fit; return the
    names evicted (oldest first). ``is_busy(name)``: an adapter that must stay (e.g. a job is writing it); an
    adapter attached as shipped stays too, wherever its folder is. Raises :class:`QuotaFull` when the adapters that
    must stay fill the quota alone."""
    root = Path(adapters_root)
    folders = [p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")] if root.is_dir() else []
    shipped = {name for name, info in engine.adapters.items() if info.source == "shipped"}
    keep = [p for p in folders if (p / quotas.pin_file).exists() or is_busy(p.name) or p.name in shipped]
    removable = [p for p in folders if p not in keep]
    kept_bytes = sum(folder_bytes(p) for p in keep)
    if len(keep) + room > quotas.user_adapters or kept_bytes > quotas.user_adapter_bytes:
        raise QuotaFull(
            f"This server keeps at most {quotas.user_adapters} trained adapters ({quotas.user_adapter_bytes >> 20} "
            f"MiB in all) and the pinned ones fill that. Ask the operator to unpin some (delete the "
            f"{quotas.pin_file} file in their folders), or train on your own machine.")
    sizes = {p.name: folder_bytes(p) for p in removable}
    evict = oldest_first_over(((p.name, _created(p), sizes[p.name]) for p in removable),
                              quotas.user_adapters - len(keep), quotas.user_adapter_bytes - kept_bytes, room=room)
    for name in evict:
        engine.detach(name)
        shutil.rmtree(root / name, ignore_errors=True)
    return evict


def eviction_note(evicted: list[str], quotas: config.Quotas = config.QUOTAS) -> str:
    """The sentence that tells the user which adapters made room for theirs."""
    if not evicted:
        return ""
    return (f"To stay within this server's quota of {quotas.user_adapters} trained adapters "
            f"({quotas.user_adapter_bytes >> 20} MiB), the oldest were removed: {', '.join(evicted)}. Download an "
            "adapter (.zip) to keep it.")
