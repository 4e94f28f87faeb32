"""The one atomic write, the directory swap, the leftover clean-up, the hashes, and the number helpers."""

from __future__ import annotations

import hashlib
import json
import math
import os
import stat
import threading

import numpy as np
import pytest
import torch

from playground.common import files
from playground.common.files import (
    atomic_write_bytes,
    atomic_write_json,
    atomic_write_text,
    remove_leftovers,
    replace_directory,
    sha256_bytes,
    sha256_file,
    temporary_sibling,
)
from playground.common.numbers import finite_or_none, format_number, json_safe


def test_atomic_write_replaces_and_leaves_no_temporary_file(tmp_path):
    target = tmp_path / "sub" / "record.json"
    atomic_write_text(target, "old")
    atomic_write_json(target, {"a": 1, "b": [1, 2]}, indent=1)
    assert json.loads(target.read_text()) == {"a": 1, "b": [1, 2]}
    assert target.read_text().endswith("\n")
    assert [p.name for p in target.parent.iterdir()] == ["record.json"]
    assert stat.S_IMODE(target.stat().st_mode) == 0o644
    atomic_write_text(tmp_path / "secret", "s3cret", mode=0o600)
    assert stat.S_IMODE((tmp_path / "secret").stat().st_mode) == 0o600


def test_a_failed_write_keeps_the_old_file_and_cleans_up(tmp_path, monkeypatch):
    target = tmp_path / "record.txt"
    atomic_write_text(target, "old")

    def boom(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(files.os, "replace", boom)
    with pytest.raises(OSError, match="disk full"):
        atomic_write_bytes(target, b"new")
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["record.txt"]


def test_concurrent_writers_never_share_a_temporary_name(tmp_path):
    target = tmp_path / "shared.txt"
    errors: list[BaseException] = []

    def write(i: int) -> None:
        try:
            for _ in range(20):
                atomic_write_text(target, f"writer {i}\n" * 100)
        except BaseException as exc:  # noqa: BLE001 - collected for the assert
            errors.append(exc)

    threads = [threading.Thread(target=write, args=(i,)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    lines = set(target.read_text().splitlines())
    assert len(lines) == 1  # one writer's whole text, never a mix
    assert [p.name for p in tmp_path.iterdir()] == ["shared.txt"]


def test_replace_directory_swaps_whole_folders(tmp_path):
    target = tmp_path / "adapter"
    first = temporary_sibling(target)
    (first / "a.txt").write_text("1")
    replace_directory(first, target)
    second = temporary_sibling(target)
    assert second.name.startswith(".tmp-adapter-")
    (second / "b.txt").write_text("2")
    replace_directory(second, target)
    assert sorted(p.name for p in target.iterdir()) == ["b.txt"]
    assert [p.name for p in tmp_path.iterdir()] == ["adapter"]


def test_remove_leftovers_takes_only_what_a_crash_leaves(tmp_path):
    (tmp_path / ".tmp-x-123").mkdir()
    (tmp_path / ".old-x-456").mkdir()
    (tmp_path / ".job.json.abc.tmp").write_text("half")
    (tmp_path / "keep").mkdir()
    (tmp_path / ".session_secret").write_text("s")
    assert remove_leftovers(tmp_path) == [".job.json.abc.tmp", ".old-x-456", ".tmp-x-123"]
    assert sorted(p.name for p in tmp_path.iterdir()) == [".session_secret", "keep"]
    assert remove_leftovers(tmp_path / "missing") == []


def test_hashes_of_bytes_and_files(tmp_path):
    data = b"prompt,chosen,rejected\nHi,Hello!,Go away.\n"
    path = tmp_path / "f.csv"
    path.write_bytes(data)
    assert sha256_file(path) == sha256_bytes(data) == hashlib.sha256(data).hexdigest()
    big = os.urandom(3 * files.CHUNK_BYTES + 7)  # more than one read chunk
    (tmp_path / "big").write_bytes(big)
    assert sha256_file(tmp_path / "big") == hashlib.sha256(big).hexdigest()


def test_finite_or_none():
    assert finite_or_none(1) == 1.0 and finite_or_none("2.5") == 2.5 and finite_or_none(True) == 1.0
    assert [finite_or_none(v) for v in (math.nan, math.inf, -math.inf, None, "x", [1])] == [None] * 6


def test_json_safe_walks_containers_and_scalars():
    value = {"a": math.nan, "b": [1.0, math.inf, (2, np.float32(0.5))], "c": np.int64(3), "d": np.bool_(True),
             "e": torch.tensor(1.5), "f": "text"}
    safe = json_safe(value)
    assert safe == {"a": None, "b": [1.0, None, [2, 0.5]], "c": 3, "d": True, "e": 1.5, "f": "text"}
    json.dumps(safe, allow_nan=False)


@pytest.mark.parametrize(("value", "kwargs", "text"), [
    (0.123456, {}, "0.123"),
    (1234.5, {}, "1.23e+03"),
    (0.5, {"fixed": True}, "0.500"),
    (0.25, {"signed": True, "fixed": True}, "+0.250"),
    (-0.25, {"signed": True, "fixed": True}, "-0.250"),
    (2.0 / 3.0, {"digits": 2}, "0.67"),
    (math.nan, {}, "n/a"),
    (None, {}, "n/a"),
    ("nope", {}, "n/a"),
])
def test_format_number(value, kwargs, text):
    assert format_number(value, **kwargs) == text


def test_the_base_accuracy_is_written_as_a_tie_everywhere():
    from playground import plots
    from playground.common.numbers import TIE_TEXT, accuracy_text

    assert TIE_TEXT == "tie (0.5)"
    assert accuracy_text(0.0, all_tied=True) == "tie (0.5)"  # strictly, every tie counts as wrong: never shown as 0
    assert accuracy_text(0.5, all_tied=True) == "tie (0.5)"
    assert accuracy_text(0.8125) == "0.812" and accuracy_text(1.0, digits=4) == "1.0000"
    fig = plots.before_after_figure({"accuracy": 0.5, "margin": 0.0, "tied": True, "label": "base"},
                                    {"accuracy": 0.75, "margin": 0.2, "label": "mine"})
    accuracy_bars = [t for t in fig.data if t.xaxis == "x"]
    assert [t.text[0] for t in accuracy_bars] == ["tie (0.5)", "0.75"]
