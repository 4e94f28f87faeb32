"""Atomic writes and content hashes: the one way this project puts a file or a folder on disk.

A write goes to a uniquely named temporary file in the target's folder, is flushed and fsynced, then renamed over the
target with ``os.replace`` (atomic on POSIX and Windows). A crash at any point leaves the old file or the new one,
never a torn one, and two writers of one target never share a temporary name. Temporary names start with a dot, so
folder listings (the adapter registry, the job store) skip them.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any

CHUNK_BYTES = 1 << 20  # read size for hashing large files


def _fsync_directory(folder: Path) -> None:
    """Persist a rename in ``folder`` (POSIX needs the directory synced; elsewhere this is a no-op)."""
    if os.name != "posix":
        return
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes, *, mode: int = 0o644) -> Path:
    """Write ``data`` to ``path`` atomically (see the module docstring); ``mode`` is the new file's permissions."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp_name, mode)
        os.replace(tmp_name, path)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise
    _fsync_directory(path.parent)
    return path


def atomic_write_text(path: str | os.PathLike[str], text: str, *, mode: int = 0o644) -> Path:
    """:func:`atomic_write_bytes` of ``text`` encoded as UTF-8."""
    return atomic_write_bytes(path, text.encode("utf-8"), mode=mode)


def atomic_write_json(path: str | os.PathLike[str], payload: Any, **dumps_options: Any) -> Path:
    """:func:`atomic_write_text` of ``json.dumps(payload, **dumps_options)`` plus a final newline."""
    return atomic_write_text(path, json.dumps(payload, **dumps_options) + "\n")


def write_jsonl(path: str | os.PathLike[str], records: Iterable[Any]) -> Path:
    """Records as JSON Lines (one object per line, UTF-8 as is, non-JSON values as text), written atomically."""
    return atomic_write_text(path, "".join(json.dumps(r, default=str, ensure_ascii=False) + "\n" for r in records))


def read_jsonl(path: str | os.PathLike[str]) -> list[Any]:
    """The records of a JSON Lines file written by :func:`write_jsonl` (blank lines skipped)."""
    return [json.loads(line) for line in Path(path).read_text(encoding="utf-8").splitlines() if line.strip()]


def temporary_sibling(target: str | os.PathLike[str]) -> Path:
    """A new empty folder next to ``target`` (``.tmp-<name>-XXXX``), to fill and then :func:`replace_directory`."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix=f".tmp-{target.name}-", dir=target.parent))


def replace_directory(filled: str | os.PathLike[str], target: str | os.PathLike[str]) -> Path:
    """Move the folder ``filled`` to ``target``, replacing any folder there: the old one is renamed aside
    (``.old-<name>-*``), the new one renamed in, then the old one removed. A crash between the two renames leaves no
    ``target`` but a complete ``.old-`` folder, which ``training.saving.clean_stale_tmp`` puts back."""
    filled, target = Path(filled), Path(target)
    if target.exists():
        aside = Path(tempfile.mkdtemp(prefix=f".old-{target.name}-", dir=target.parent))
        aside.rmdir()
        os.replace(target, aside)
        os.replace(filled, target)
        shutil.rmtree(aside, ignore_errors=True)
    else:
        os.replace(filled, target)
    _fsync_directory(target.parent)
    return target


def remove_leftovers(folder: str | os.PathLike[str]) -> list[str]:
    """Delete what an interrupted :func:`temporary_sibling` / :func:`replace_directory` / atomic write left in
    ``folder`` (dot-names starting ``.tmp-`` or ``.old-``, or ending ``.tmp``); return the names removed."""
    removed = []
    folder = Path(folder)
    if not folder.is_dir():
        return removed
    for child in folder.iterdir():
        name = child.name
        if not (name.startswith((".tmp-", ".old-")) or (name.startswith(".") and name.endswith(".tmp"))):
            continue
        if child.is_dir():
            shutil.rmtree(child, ignore_errors=True)
        else:
            child.unlink(missing_ok=True)
        removed.append(name)
    return sorted(removed)


def folder_bytes(folder: str | os.PathLike[str]) -> int:
    """Total size of the regular files under ``folder`` (links not followed; 0 when it does not exist)."""
    total = 0
    for path in Path(folder).rglob("*") if Path(folder).is_dir() else ():
        try:
            if path.is_file() and not path.is_symlink():
                total += path.stat().st_size
        except OSError:  # removed while we looked
            continue
    return total


def oldest_first_over(items: Iterable[tuple[str, float, int]], max_count: int, max_bytes: int,
                      room: int = 0) -> list[str]:
    """The names to remove, oldest first, so that what stays plus ``room`` more fits ``max_count`` items and
    ``max_bytes`` in all. ``items``: (name, age key: smaller is older, size in bytes) of the removable ones only;
    unremovable ones must already be counted by the caller in the limits it passes."""
    ordered = sorted(items, key=lambda item: (item[1], item[0]))
    count, total = len(ordered), sum(size for _, _, size in ordered)
    out = []
    for name, _, size in ordered:
        if count + room <= max_count and total <= max_bytes:
            break
        out.append(name)
        count, total = count - 1, total - size
    return out


def sha256_bytes(data: bytes | bytearray | memoryview) -> str:
    """SHA-256 hex digest of ``data``."""
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: str | os.PathLike[str]) -> str:
    """SHA-256 hex digest of a file's contents, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(CHUNK_BYTES), b""):
            digest.update(chunk)
    return digest.hexdigest()
