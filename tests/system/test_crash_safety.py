"""A SIGKILL at the worst moment never leaves a torn store: after a restart on the same data directory every store
reads consistent, and the half-written thing is absent or complete.

Each moment is made deterministic rather than hoped for:

- inside an adapter save: ``tests/tiny_server.py`` (``TINY_SERVER_PAUSE_IN_SAVE``) stops the trainer thread while
  the temporary folder is half written, when it is complete but not yet renamed, or just after the rename (before the
  job is marked done). The server (a subprocess) is killed there; a new one must list no half adapter, have cleaned
  the dot-folders, and report the job ``interrupted``; a complete adapter renamed into place is attached and answers.
- during vote writes: six clients cast votes as fast as they can and the server is killed with requests in flight;
  every vote a client saw acknowledged is back after the restart (at most the one in flight per client extra), the
  SQLite file passes ``PRAGMA integrity_check`` and new votes are recorded.
- during an Inspect cache write: the app writes its disk cache of scores only from ``python -m
  playground.cli.precompute`` (``precomputed.save_precomputed``; nothing at run time), so the writer runs in a
  subprocess of this file that is killed inside the write (tmp file written and flushed but not renamed; or renamed).
  ``load_precomputed`` then gives the old numbers, the new ones or None (no old file), and never raises, also on
  truncated or mistyped files.
- between the two renames of a save over an existing adapter (``replace_directory``: old folder aside, new one not
  yet in place; ``playground.train --force`` saves over one, the server never does): the start-up clean-up puts the old
  adapter back instead of deleting both dot-folders.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import pandas as pd
import pytest
from gradio_client import Client
from tiny_server import NO_PROBES, PAUSE_IN_SAVE, PAUSE_MARKER, SAVE_STAGES, free_port, wait_until_up

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "data" / "examples"
LAUNCHER = ROOT / "tests" / "tiny_server.py"
TINY = {"steps": 2, "batch_size": 2, "max_length": 64, "lora_r": 4, "lora_alpha": 8}
FINISHED = ("done", "failed", "cancelled", "interrupted")
SMALL = "".join((EXAMPLES / "paired_example.csv").read_text(encoding="utf-8").splitlines(True)[:7])  # 6 pairs
ADAPTER_FILES = ("adapter_config.json", "adapter_model.safetensors", "meta.json", "README.md")
PAIRS = pd.DataFrame({"prompt": ["Say hi.", "Name a colour.", "Count to three."],
                      "chosen": ["Hi there!", "Blue.", "One, two, three."],
                      "rejected": ["Go away.", "I will not.", "Seven."]})
VARIANTS = ["base", "dpo", "kto"]


# ---------------------------------------------------------------------------------------------------------------------
# A server in a subprocess (as in test_restart.py), with extra environment


def _start(tmp_path: Path, log: Path, env: dict[str, str] | None = None) -> tuple[subprocess.Popen, str]:
    port = free_port()
    scratch = tmp_path / "tmp"  # Gradio's uploads and the vote exports stay inside the test's folder
    scratch.mkdir(exist_ok=True)
    environ = {**os.environ, "TMPDIR": str(scratch), **(env or {})}
    with log.open("ab") as sink:  # a file, not a pipe: a chatty server never blocks on a full pipe
        process = subprocess.Popen([sys.executable, str(LAUNCHER), "--data-dir", str(tmp_path / "data"),
                                    "--port", str(port)], stdout=sink, stderr=subprocess.STDOUT, env=environ)
    try:
        wait_until_up(port, timeout=120, process=process)
    except BaseException:
        _stop(process)
        raise AssertionError("the server did not start:\n" + log.read_text(errors="replace")[-3000:]) from None
    return process, f"http://127.0.0.1:{port}/"


def _stop(process: subprocess.Popen) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGKILL)
    process.wait(timeout=30)


def _client(url: str, like: Client | None = None) -> Client:
    """A client; with ``like``, one that the server takes for ``like`` (its session hash), so that the client of the
    restarted server is the same caller even where the API shows a job only to the client that started it."""
    client = Client(url, verbose=False)
    if like is not None:
        client.session_hash = like.session_hash
    return client


def _status(client: Client, job_id: str) -> dict:
    return client.predict(job_id=job_id, api_name="/train_status")


def _wait_for(check, timeout: float, what: str, log: Path | None = None):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.2)
    tail = log.read_text(errors="replace")[-3000:] if log is not None and log.is_file() else ""
    raise AssertionError(f"{what} did not happen in {timeout:.0f} s\n{tail}")


def _job_records(data_dir: Path) -> dict[str, dict]:
    """Every runs/*/job.json, parsed (a torn one fails the test here)."""
    return {path.parent.name: json.loads(path.read_text(encoding="utf-8"))
            for path in sorted((data_dir / "runs").glob("*/job.json"))}


# ---------------------------------------------------------------------------------------------------------------------
# 1. Inside an adapter save


@pytest.mark.parametrize("stage", SAVE_STAGES)
def test_kill_inside_an_adapter_save_leaves_no_half_adapter(tmp_path, stage):
    data_dir, adapters = tmp_path / "data", tmp_path / "data" / "adapters"
    marker, log = tmp_path / "paused-in-save", tmp_path / "first.log"
    first, url = _start(tmp_path, log, {PAUSE_IN_SAVE: stage, PAUSE_MARKER: str(marker), NO_PROBES: "1"})
    try:
        client = first_client = _client(url)
        job = client.predict(csv_text=SMALL, method="dpo", name="cut", hyperparameters=TINY, api_name="/train_start")
        _wait_for(marker.is_file, 150, f"the save to reach {stage!r}", log)
        where = Path(marker.read_text(encoding="utf-8"))
        assert _status(client, job["job_id"])["status"] == "running"  # stuck inside the save, not finished
        # What is on disk at the moment of the kill:
        if stage == "writing":
            assert where.parent == adapters and where.name.startswith(".tmp-cut-"), where
            assert (where / "adapter_model.safetensors").is_file() and (where / "meta.json").is_file()
            assert "# cut:" not in (where / "README.md").read_text(encoding="utf-8")  # PEFT's card, not yet ours
            assert not (adapters / "cut").exists()
        elif stage == "before_rename":
            assert where.parent == adapters and where.name.startswith(".tmp-cut-"), where
            assert all((where / name).is_file() for name in ADAPTER_FILES) and not (adapters / "cut").exists()
        else:
            assert where == adapters / "cut" and all((where / name).is_file() for name in ADAPTER_FILES)
        _stop(first)
        assert first.returncode == -signal.SIGKILL
    finally:
        _stop(first)

    second, url = _start(tmp_path, tmp_path / "second.log", {NO_PROBES: "1"})
    try:
        client = _client(url, like=first_client)
        listed = client.predict(api_name="/variants")
        names = sorted(p.name for p in adapters.iterdir())
        assert not [name for name in names if name.startswith(".")], names  # crash leftovers cleaned
        for name in names:
            assert all((adapters / name / f).is_file() for f in ADAPTER_FILES), f"torn adapter {name}: {names}"
        cut = _status(client, job["job_id"])
        assert cut["status"] == "interrupted" and cut["adapter_attached"] is False, cut
        assert _job_records(data_dir)[job["job_id"]]["status"] == "interrupted"
        if stage == "after_rename":
            # The rename is the commit point: the complete adapter is in place, attached, and answers. The job was
            # cut before it could say done, so it reads interrupted (its phase still says no adapter was saved).
            assert names == ["cut"] and "cut" in listed
            answer = client.predict(prompt="Hi", variants=["cut"], settings={"max_new_tokens": 2},
                                    api_name="/generate")
            assert set(answer["variants"]) == {"cut"}
        else:
            assert names == [] and "cut" not in listed, (names, listed)
            assert "Interrupted" in cut["phase"]
            # Nothing of the cut save blocks its name: the same training now runs to the end and attaches.
            again = client.predict(csv_text=SMALL, method="dpo", name="cut", hyperparameters=TINY,
                                   api_name="/train_start")
            done = _wait_for(lambda: (s := _status(client, again["job_id"]))["status"] in FINISHED and s, 150,
                             "the second training")
            assert done["status"] == "done" and done["adapter_attached"], done
            assert "cut" in client.predict(api_name="/variants")
    finally:
        _stop(second)


# ---------------------------------------------------------------------------------------------------------------------
# 2. During vote writes


def test_kill_during_vote_writes_keeps_every_acknowledged_vote(tmp_path):
    data_dir = tmp_path / "data"
    log = tmp_path / "first.log"
    first, url = _start(tmp_path, log)
    voters, wanted = 6, 60
    acked: dict[str, list[tuple[str, bool]]] = {f"voter{i:02d}-" + "s" * 24: [] for i in range(voters)}
    stop, lock, unexpected, cut = threading.Event(), threading.Lock(), [], []

    def vote(session: str) -> None:
        client = _client(url)
        n = 0
        while not stop.is_set():
            prompt, up = f"{session[:7]} vote {n}", n % 3 != 0
            try:
                result = client.predict(session_id=session, prompt=prompt, variant="dpo", answer=f"answer {n}",
                                        up=up, api_name="/test_vote")
            except Exception as exc:  # noqa: BLE001 - after the kill every call fails; before it none may
                (cut if stop.is_set() else unexpected).append(f"{session[:7]} #{n}: {type(exc).__name__}: {exc}")
                return
            if result != "ok":
                unexpected.append(f"{session[:7]} #{n}: {result!r}")
                return
            with lock:
                acked[session].append((prompt, up))
            n += 1

    threads = [threading.Thread(target=vote, args=(session,), daemon=True) for session in acked]
    try:
        for thread in threads:
            thread.start()
        _wait_for(lambda: unexpected or sum(map(len, acked.values())) >= wanted, 90, f"{wanted} acknowledged votes",
                  log)
        assert not unexpected, unexpected
        stop.set()  # the calls in flight now fail with the kill; the threads stop there
        _stop(first)
        assert first.returncode == -signal.SIGKILL
        for thread in threads:
            thread.join(timeout=60)
        assert not [t for t in threads if t.is_alive()], "a client hung on the dead server"
    finally:
        stop.set()
        _stop(first)
    assert not unexpected, unexpected
    assert cut, "no vote was in flight at the kill"
    with lock:
        seen = {session: list(rows) for session, rows in acked.items()}

    second, url = _start(tmp_path, tmp_path / "second.log")
    try:
        client = _client(url)
        for session, rows in seen.items():
            stored = client.predict(session_id=session, api_name="/test_votes")[::-1]  # the table is newest first
            prompts = [row["prompt"] for row in stored]
            assert len(prompts) == len(set(prompts)), f"duplicated votes: {prompts}"
            # every acknowledged vote, in order, with its label; at most the one in flight at the kill besides
            assert prompts[:len(rows)] == [prompt for prompt, _ in rows], (session, prompts, rows)
            assert [row["vote"] for row in stored[:len(rows)]] == ["👍 good" if up else "👎 bad" for _, up in rows]
            assert prompts[len(rows):] in ([], [f"{session[:7]} vote {len(rows)}"]), (session, prompts, rows)
        later = "later" + "s" * 24
        assert client.predict(session_id=later, prompt="after the restart", variant="kto", answer="fine", up=True,
                              api_name="/test_vote") == "ok"
        assert [r["prompt"] for r in client.predict(session_id=later, api_name="/test_votes")] == ["after the restart"]
        with sqlite3.connect(data_dir / "votes.sqlite3") as conn:
            assert conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)
            total = conn.execute("SELECT COUNT(*) FROM votes").fetchone()[0]
        assert sum(map(len, seen.values())) + 1 <= total <= sum(map(len, seen.values())) + voters + 1
    finally:
        _stop(second)


# ---------------------------------------------------------------------------------------------------------------------
# 3. During an Inspect cache write (the precompute CLI's writer, in a subprocess)

CACHE_STAGES = ("first_write", "before_rename", "after_rename")


def _writer_main(adapters_dir: str, cache_path: str, stage: str, marker: str) -> None:
    """Score PAIRS on the tiny engine, save the cache (the "old" numbers, except at ``first_write``), then save it
    again with every reference log-prob shifted by -1 (the "new" numbers) and stop inside that write for good:
    after the temporary file is written and flushed (its fsync), or just after it was renamed into place."""
    import dataclasses

    from tiny_server import tiny_engine

    from playground.analysis.precomputed import save_precomputed
    from playground.analysis.scores import score_dataset

    engine = tiny_engine(adapters_dir=Path(adapters_dir))
    old = score_dataset(engine, PAIRS, VARIANTS)
    reference = dataclasses.replace(old.reference, chosen_sum=old.reference.chosen_sum - 1.0)
    new = dataclasses.replace(old, reference=reference)
    if stage != "first_write":
        save_precomputed(engine, old, Path(cache_path))
    expected = Path(cache_path).with_name("expected.json")
    expected.write_text(json.dumps({"old": old.reference.chosen_sum.tolist(),
                                    "new": new.reference.chosen_sum.tolist()}), encoding="utf-8")

    real_fsync = os.fsync
    if stage == "after_rename":
        def replace(src, dst, *args, **kwargs):
            _REAL_REPLACE(src, dst, *args, **kwargs)
            _pause(marker, str(dst))

        os.replace = replace
    else:
        def fsync(fd):  # the first fsync of atomic_write_bytes: the temporary file, right before the rename
            real_fsync(fd)
            _pause(marker, os.readlink(f"/proc/self/fd/{fd}"))

        os.fsync = fsync
    save_precomputed(engine, new, Path(cache_path))
    raise SystemExit("the pause did not happen")


_REAL_REPLACE = os.replace


def _pause(marker: str, where: str) -> None:
    """In a writer subprocess: say where it stopped (atomically, with the real os.replace), then never return."""
    Path(marker + ".part").write_text(where, encoding="utf-8")
    _REAL_REPLACE(marker + ".part", marker)
    while True:
        time.sleep(3600)


def _overwriter_main(root: str, marker: str) -> None:
    """Write a random adapter ``kept`` (method dpo), then save another one (kto) over it with
    ``save_adapter_atomically`` and stop for good between the two renames of ``replace_directory``: the old folder
    moved aside, the new one not yet in place."""
    import copy

    from conftest import TINY_LORA_TARGETS, make_tiny_model, save_random_adapter
    from peft import LoraConfig, get_peft_model

    from playground.engine.base_model import ensure_embedded_checkpoint, load_tokenizer
    from playground.training.saving import save_adapter_atomically

    base = make_tiny_model(len(load_tokenizer(str(ensure_embedded_checkpoint()))), 0)
    target = Path(root) / "kept"
    save_random_adapter(base, target, seed=1, method="dpo")
    new = get_peft_model(copy.deepcopy(base), LoraConfig(r=4, lora_alpha=8, target_modules=TINY_LORA_TARGETS,
                                                         init_lora_weights=False))

    def replace(src, dst, *args, **kwargs):
        _REAL_REPLACE(src, dst, *args, **kwargs)
        if Path(src) == target:  # the old adapter was just moved aside
            _pause(marker, str(dst))

    os.replace = replace
    save_adapter_atomically(new, target, {"method": "kto", "base_model": "tiny-random-llama",
                                          "base_architecture": "LlamaForCausalLM"})
    raise SystemExit("the pause did not happen")


def _run_writer(tmp_path: Path, *args: str) -> tuple[str, Path]:
    """Run this file's writer ``args`` in a subprocess, wait until it pauses, SIGKILL it; (where it paused, log)."""
    marker, log = tmp_path / "paused", tmp_path / "writer.log"
    with log.open("ab") as sink:
        writer = subprocess.Popen([sys.executable, __file__, *args, str(marker)], stdout=sink,
                                  stderr=subprocess.STDOUT, cwd=ROOT,
                                  env={**os.environ, "TMPDIR": str(tmp_path),
                                       "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "tests")])})
    try:
        _wait_for(lambda: marker.is_file() or writer.poll() is not None, 120, "the writer to pause", log)
        assert marker.is_file(), log.read_text(errors="replace")[-3000:]
        where = marker.read_text(encoding="utf-8")
        _stop(writer)
        assert writer.returncode == -signal.SIGKILL
    finally:
        _stop(writer)
    return where, log


@pytest.mark.parametrize("stage", CACHE_STAGES)
def test_kill_inside_an_inspect_cache_write_leaves_old_new_or_nothing(tmp_path, tokenizer, stage):
    from tiny_server import tiny_engine

    from playground.analysis.precomputed import load_precomputed

    adapters_dir = tmp_path / "shipped"
    engine = tiny_engine(tokenizer, adapters_dir)  # writes the adapters the writer then finds (same file hashes)
    cache = tmp_path / "cache" / "inspect_cache.json"
    cache.parent.mkdir()
    where = Path(_run_writer(tmp_path, "cache", str(adapters_dir), str(cache), stage)[0])

    expected = json.loads((cache.parent / "expected.json").read_text(encoding="utf-8"))
    leftovers = [p.name for p in cache.parent.iterdir() if p.name.startswith(".")]
    if stage == "after_rename":
        assert where == cache and leftovers == []
    else:  # killed with the whole new file written under a temporary name, not yet renamed
        assert where.parent == cache.parent and where.name.startswith(f".{cache.name}.") and where.name.endswith(".tmp")
        assert leftovers == [where.name]
        assert json.loads(where.read_text(encoding="utf-8"))["format"] == "playground-inspect-cache"
    loaded = load_precomputed(engine, PAIRS, None, cache)
    if stage == "first_write":
        assert loaded is None and not cache.exists()
    else:
        assert loaded is not None and loaded.variants == VARIANTS
        want = expected["new" if stage == "after_rename" else "old"]
        assert loaded.reference.chosen_sum.tolist() == pytest.approx(want, rel=1e-9, abs=1e-9)

    # The reader never raises on what a crash (or a careless hand) can leave: every truncation, and wrong types.
    text = (where if stage != "after_rename" else cache).read_text(encoding="utf-8")
    torn = cache.parent / "torn.json"
    for cut in range(0, len(text), max(1, len(text) // 97)):
        torn.write_text(text[:cut], encoding="utf-8")
        assert load_precomputed(engine, PAIRS, None, torn) is None, cut
    payload = json.loads(text)
    for bad in ([], None, 1, "x", {}):
        torn.write_text(json.dumps(bad), encoding="utf-8")
        assert load_precomputed(engine, PAIRS, None, torn) is None, bad
        for key in payload:
            torn.write_text(json.dumps({**payload, key: bad}), encoding="utf-8")
            load_precomputed(engine, PAIRS, None, torn)  # None or scores; never an exception


def test_kill_between_the_renames_of_an_adapter_overwrite_keeps_the_old_one(tmp_path):
    """Saving over an existing adapter moves the old folder aside, then the new one into place; killed in between,
    neither is at the name. The start-up clean-up (``clean_stale_tmp``) must put the old one back, not delete both."""
    from playground.engine.adapters import discover_adapters
    from playground.training.saving import clean_stale_tmp

    root = tmp_path / "adapters"
    root.mkdir()
    where = Path(_run_writer(tmp_path, "adapter", str(root))[0])
    names = sorted(p.name for p in root.iterdir())
    assert where.parent == root and where.name.startswith(".old-kept-") and "kept" not in names, names
    assert len(names) == 2 and names[1].startswith(".tmp-kept-"), names
    clean_stale_tmp(root)  # what a restarted server runs on its adapters folder
    assert sorted(p.name for p in root.iterdir()) == ["kept"]
    assert all((root / "kept" / name).is_file() for name in ("adapter_config.json", "adapter_model.safetensors"))
    assert json.loads((root / "kept" / "meta.json").read_text(encoding="utf-8"))["method"] == "dpo"  # the old one
    found, skipped = discover_adapters(root)
    assert [info.name for info in found] == ["kept"] and skipped == []


if __name__ == "__main__":
    {"cache": _writer_main, "adapter": _overwriter_main}[sys.argv[1]](*sys.argv[2:])
