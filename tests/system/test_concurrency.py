"""Several gradio_client clients at once against one served app on the tiny engine.

Concurrent generations all complete (and give each client its own answer); one training runs at a time and the next
waits with its place shown; generation is served while a training runs; one session never sees another's votes; the
training queue is bounded; a cancelled or failed job frees its slot. Every wait has a deadline.
"""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from gradio_client import Client, handle_file
from tiny_server import build, serving

from playground import config

EXAMPLES = Path(__file__).resolve().parents[2] / "data" / "examples"
TINY = {"steps": 2, "batch_size": 2, "max_length": 64, "lora_r": 4, "lora_alpha": 8}
LONG = {**TINY, "steps": 5000}  # runs until cancelled
FINISHED = ("done", "failed", "cancelled", "interrupted")
GEN = {"max_new_tokens": 6, "mode": "greedy"}


@pytest.fixture(scope="module")
def served(tokenizer, tmp_path_factory):
    services, demo = build(tmp_path_factory.mktemp("concurrency") / "data", adapters=True, tokenizer=tokenizer)
    with serving(demo) as url:
        try:
            yield services, url
        finally:
            for job in list(services.queue.jobs.values()):
                services.queue.cancel(job.id)


def _client(url: str) -> Client:
    return Client(url, verbose=False)


def _wait(client, job_id, done, timeout=120.0):
    deadline = time.monotonic() + timeout
    status = None
    while time.monotonic() < deadline:
        status = client.predict(job_id=job_id, api_name="/train_status")
        if done(status):
            return status
        time.sleep(0.2)
    raise AssertionError(f"job {job_id} not there after {timeout:.0f} s: {status}")


def _start(client, name, hyperparameters, method="dpo"):
    """Queue a training from a new client of the same server: one visitor (client) may have one training at a time
    (``config.QUOTAS.trainings_per_visitor``), and the job id alone reaches it afterwards."""
    visitor = _client(client.src)
    return visitor.predict(file=handle_file(str(EXAMPLES / "paired_example.csv")), method=method, name=name,
                           hyperparameters=hyperparameters, api_name="/train_start")


def test_concurrent_generations_all_complete_with_their_own_answers(served):
    _services, url = served
    prompts = ["Say hello", "Name a colour", "Say hello", "Name a colour", "Count to three", "Say hello"]

    def ask(prompt):
        return _client(url).predict(prompt=prompt, variants=["base", "dpo", "kto"], settings=GEN,
                                    api_name="/generate")

    with ThreadPoolExecutor(max_workers=len(prompts)) as pool:
        results = list(pool.map(ask, prompts, timeout=180))
    assert all(set(r["variants"]) == {"base", "dpo", "kto"} for r in results)
    assert [r["prompt"] for r in results] == prompts
    alone = {p: ask(p) for p in set(prompts)}  # greedy: the same answers as when asked one at a time
    for result in results:
        for name, row in result["variants"].items():
            assert row["text"] == alone[result["prompt"]]["variants"][name]["text"]


def test_session_votes_never_leak(served):
    _services, url = served
    sessions = {"a" * 32: "prompt of session A", "b" * 32: "prompt of session B"}
    work = [(sid, prompt, i) for sid, prompt in sessions.items() for i in range(3)]

    def vote(item):
        sid, prompt, i = item
        return _client(url).predict(session_id=sid, prompt=f"{prompt} #{i}", variant="dpo", answer=f"answer {i}",
                                    up=i % 2 == 0, api_name="/test_vote")

    with ThreadPoolExecutor(max_workers=len(work)) as pool:
        assert list(pool.map(vote, work, timeout=60)) == ["ok"] * len(work)
    client = _client(url)
    for sid, prompt in sessions.items():
        rows = client.predict(session_id=sid, api_name="/test_votes")
        assert sorted(r["prompt"] for r in rows) == [f"{prompt} #{i}" for i in range(3)]
    assert client.predict(session_id="c" * 32, api_name="/test_votes") == []
    with pytest.raises(Exception, match="no votes yet"):  # the votes data set of Inspect is per session too
        client.predict(dataset="votes", adapter="dpo", session_id="c" * 32, api_name="/inspect")


def test_training_queue_is_fifo_bounded_and_frees_its_slot(served):
    services, url = served
    client = _client(url)
    long = _start(client, "cc-long", LONG)
    _wait(client, long["job_id"], lambda s: s["status"] == "running")

    # A second training waits and shows its place.
    waiting = _start(client, "cc-next", TINY)
    assert waiting["position"] >= 1
    status = client.predict(job_id=waiting["job_id"], api_name="/train_status")
    assert status["status"] == "queued" and status["position"] == 1

    # Generation is served while the training runs (from several clients at once).
    with ThreadPoolExecutor(max_workers=2) as pool:
        answers = list(pool.map(lambda p: _client(url).predict(prompt=p, variants=["base", "dpo"], settings=GEN,
                                                               api_name="/generate"), ["Hi", "Hello"], timeout=120))
    assert all(set(a["variants"]) == {"base", "dpo"} for a in answers)
    assert client.predict(job_id=long["job_id"], api_name="/train_status")["status"] == "running"

    # The queue is bounded: beyond max_training_queue waiting jobs, a clear refusal.
    limit = config.APP.max_training_queue
    extra = [_start(client, f"cc-fill-{i}", TINY) for i in range(limit - 1)]
    assert [e["position"] for e in extra] == list(range(2, limit + 1))
    with pytest.raises(Exception, match=f"{limit} trainings are already waiting \\(the limit is {limit}\\); try "
                                        "again when one has finished"):
        _start(client, "cc-refused", TINY)
    for job in extra:  # cancelled while waiting: at once
        assert client.predict(job_id=job["job_id"], api_name="/train_cancel")["status"] == "cancelled"

    # Cancelling the running job frees the trainer: the waiting one runs to the end.
    assert client.predict(job_id=long["job_id"], api_name="/train_cancel")["cancelled"] is True
    assert _wait(client, long["job_id"], lambda s: s["status"] in FINISHED)["status"] == "cancelled"
    done = _wait(client, waiting["job_id"], lambda s: s["status"] in FINISHED)
    assert done["status"] == "done" and done["adapter_attached"]

    # A failed job frees its slot too: the next one runs.
    engine = services.engine
    factory = engine._base_factory
    calls = threading.Lock()

    def fails_once():
        if calls.acquire(blocking=False):
            raise RuntimeError("out of memory (simulated)")
        return factory()

    engine._base_factory = fails_once
    try:
        failed = _start(client, "cc-fails", TINY)
        after = _start(client, "cc-after", TINY)
        status = _wait(client, failed["job_id"], lambda s: s["status"] in FINISHED)
        assert status["status"] == "failed" and status["error"] == "RuntimeError: out of memory (simulated)"
        assert _wait(client, after["job_id"], lambda s: s["status"] in FINISHED)["status"] == "done"
    finally:
        engine._base_factory = factory
    assert {"cc-next", "cc-after"} <= set(client.predict(api_name="/variants"))
    assert "cc-fails" not in client.predict(api_name="/variants")
