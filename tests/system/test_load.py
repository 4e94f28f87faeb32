"""A bounded load on one served app: eight clients at once while a training runs, and no memory growth after.

One tiny server (``tests/tiny_server.py --adapters``, a subprocess) on loopback. For ``LOAD_SECONDS`` eight
``gradio_client`` clients loop over a mix of ``/generate`` (greedy, 8 new tokens, base/dpo/kto), ``/validate`` of a
small good CSV and of a bad one, and ``/train_status`` polls, while client 0 runs one tiny training
(``data/examples/paired_example.csv`` as ``csv_text``, 3 steps). Every request must succeed or be refused with a
documented limit message (:data:`LIMIT_MESSAGES`); everything else is collected and printed. Afterwards the training
is ``done``, every ``runs/*/job.json`` and ``progress.jsonl`` line parses, and the server's resident memory (VmRSS of
its process) after 50 sequential ``/generate`` calls is within :data:`RSS_GROWTH` (5%, see there for why) of what it
was after the first 10 (the concurrent load before is the warm-up).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

from gradio_client import Client
from tiny_server import free_port, wait_until_up

ROOT = Path(__file__).resolve().parents[2]
LAUNCHER = ROOT / "tests" / "tiny_server.py"
PAIRED = (ROOT / "data" / "examples" / "paired_example.csv").read_text(encoding="utf-8")
GOOD = "".join(PAIRED.splitlines(True)[:4])  # header + 3 pairs
BAD = "foo,bar\n1,2\n"  # no known column: a report that says why, not an error
TINY = {"steps": 3, "batch_size": 2, "max_length": 64, "lora_r": 4, "lora_alpha": 8, "early_stop": False}
GEN = {"max_new_tokens": 8, "mode": "greedy"}
VARIANTS = ["base", "dpo", "kto"]
CLIENTS = 8
LOAD_SECONDS = 30.0
CALL_TIMEOUT = 90.0  # one request, however loaded the box
FINISHED = ("done", "failed", "cancelled", "interrupted")
# The refusals the API documents for a full server: Gradio's bounded event queue (config.APP.max_queue), the bounded
# training queue and the per-client training quota (jobs.QueueFull).
LIMIT_MESSAGES = ("Queue is full", "trainings are already waiting", "queued or running")
# The other clients poll the training too; where /train_status shows a job only to the client that started it,
# they get this refusal (the job id alone is the key in the current API, so they get the status).
NOT_YOURS = "started by this client"
# Resident memory after 50 sequential generations may exceed the value after the first 10 by at most 5%. After the
# load the server holds ~0.8-1.1 GB (torch, gradio, the tiny model, four adapters, allocator arenas); the noise
# between two readings of a steady server is under 1 MB here, far under 5% (40-55 MB), while a leak of what one
# request builds (its prompt tensors, answers, the scoring batch, an event record) repeats 40 times between the
# readings and crosses that bound once it is ~1 MB a request. The bound is one-sided: memory may go down.
RSS_GROWTH = 0.05


def _rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError(f"no VmRSS for process {pid}")


def _call(client: Client, api_name: str, **kwargs):
    return client.submit(api_name=api_name, **kwargs).result(timeout=CALL_TIMEOUT)


def _message(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {getattr(exc, 'message', None) or exc}"


def test_eight_clients_and_a_training_then_flat_memory(tmp_path):
    data_dir, log = tmp_path / "data", tmp_path / "server.log"
    scratch = tmp_path / "tmp"  # Gradio's uploads and the vote exports stay inside the test's folder
    scratch.mkdir()
    port = free_port()
    with log.open("ab") as sink:  # a file, not a pipe: a chatty server never blocks on a full pipe
        server = subprocess.Popen([sys.executable, str(LAUNCHER), "--data-dir", str(data_dir), "--port", str(port),
                                   "--adapters"], stdout=sink, stderr=subprocess.STDOUT,
                                  env={**os.environ, "TMPDIR": str(scratch)})
    try:
        try:
            wait_until_up(port, timeout=120, process=server)
        except BaseException:
            raise AssertionError("the server did not start:\n" + log.read_text(errors="replace")[-3000:]) from None
        url = f"http://127.0.0.1:{port}/"
        clients = [Client(url, verbose=False) for _ in range(CLIENTS)]
        trainer = clients[0]
        job = _call(trainer, "/train_start", csv_text=PAIRED, filename="paired_example.csv", method="dpo",
                    name="loaded", hyperparameters=TINY)

        done, refused, failures = Counter(), Counter(), []
        lock = threading.Lock()
        deadline = time.monotonic() + LOAD_SECONDS

        def work(index: int, client: Client) -> None:
            step = 0
            while time.monotonic() < deadline:
                kind = ("generate", "validate-good", "generate", "status", "validate-bad")[(index + step) % 5]
                if index == 0 and step % 2:
                    kind = "status"  # the client that started the training polls it every other request
                try:
                    if kind == "generate":
                        out = _call(client, "/generate", prompt=f"Client {index} asks {step}", variants=VARIANTS,
                                    settings=GEN)
                        assert set(out["variants"]) == set(VARIANTS), out
                    elif kind == "validate-good":
                        report = _call(client, "/validate", csv_text=GOOD, filename="good.csv")
                        assert report["trainable"] and report["rows_usable"] == 3, report
                    elif kind == "validate-bad":
                        report = _call(client, "/validate", csv_text=BAD, filename="bad.csv")
                        assert not report["trainable"] and report["errors"], report
                    else:
                        status = _call(client, "/train_status", job_id=job["job_id"])
                        assert status["job_id"] == job["job_id"] and status["status"] in ("queued", "running",
                                                                                           *FINISHED), status
                    with lock:
                        done[kind] += 1
                except Exception as exc:  # noqa: BLE001 - collected, judged below
                    message = _message(exc)
                    with lock:
                        if any(limit in message for limit in LIMIT_MESSAGES):
                            refused[kind] += 1
                        elif kind == "status" and index != 0 and NOT_YOURS in message:
                            refused["status of another client's job"] += 1
                        else:
                            failures.append(f"client {index}, {kind} #{step}: {message}")
                step += 1

        threads = [threading.Thread(target=work, args=(i, c), daemon=True) for i, c in enumerate(clients)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=LOAD_SECONDS + 2 * CALL_TIMEOUT)
        assert not [t for t in threads if t.is_alive()], "a client never came back"
        print(f"load: {dict(done)} succeeded, {dict(refused)} refused with a limit message")
        assert not failures, "requests that failed without a documented limit message:\n" + "\n".join(failures)
        assert {"generate", "validate-good", "validate-bad", "status"} <= set(done), done
        assert done["status"] >= 5, done  # the trainer's own polls went through

        # The training ends done; its records parse.
        end = time.monotonic() + 180
        while (status := _call(trainer, "/train_status", job_id=job["job_id"]))["status"] not in FINISHED:
            assert time.monotonic() < end, f"the training did not finish: {status}"
            time.sleep(0.5)
        assert status["status"] == "done" and status["adapter_attached"], status
        assert status["steps_done"] == TINY["steps"] and len(status["history"]) == TINY["steps"]
        records = {p.parent.name: json.loads(p.read_text(encoding="utf-8")) for p in data_dir.glob("runs/*/job.json")}
        assert {job_id: r["status"] for job_id, r in records.items()} == {job["job_id"]: "done"}
        lines = (data_dir / "runs" / job["job_id"] / "progress.jsonl").read_text(encoding="utf-8").splitlines()
        assert [json.loads(line)["step"] for line in lines] == list(range(1, TINY["steps"] + 1))
        assert "loaded" in _call(trainer, "/variants")

        # Memory: 50 sequential generations (the load above was the warm-up); compare after 10 and after 50.
        readings = {}
        for i in range(1, 51):
            _call(trainer, "/generate", prompt=f"Sequential question {i}", variants=[*VARIANTS, "loaded"],
                  settings=GEN)
            if i % 10 == 0:
                readings[i] = _rss_kib(server.pid)
        print("VmRSS (MiB) after n sequential generations:", {n: round(kib / 1024, 1) for n, kib in readings.items()})
        assert readings[50] <= readings[10] * (1 + RSS_GROWTH), readings
        # A drop in between (seen here: memory the concurrent phase held is given back after some 20 calls) must not
        # hide a leak either: nothing after the lowest reading grows past the same bound.
        low = min(readings, key=readings.get)
        assert all(readings[n] <= readings[low] * (1 + RSS_GROWTH) for n in readings if n > low), readings
    finally:
        if server.poll() is None:
            server.send_signal(signal.SIGKILL)
        server.wait(timeout=30)
