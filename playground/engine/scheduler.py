"""The thread that owns decoding: requests that arrive together share one decode batch.

Compare and ``/generate`` requests are submitted here instead of each calling the model under the engine's lock in
turn. The thread takes the first waiting request, waits ``config.BATCHING.window_s`` for others (those that arrived
while the previous batch ran are already waiting), and decodes them together (``decoding.decode_together``) up to
``config.BATCHING.max_rows`` rows. Requests that arrive while a batch runs join it at the next decode step
(``config.BATCHING.join_running``), up to ``max_rows``; the rest wait for the next batch.
The engine's lock is held per batch, so Inspect's scoring and the after-run reports interleave between batches.
"""

from __future__ import annotations

import atexit
import logging
import os
import queue
import threading
import time
import weakref
from collections import deque

import torch

from playground import config
from playground.engine import threads
from playground.engine.decoding import DecodeRequest, decode_together

log = logging.getLogger(__name__)
_IDLE_CHECK_S = 2.0  # how often an idle decoder thread checks that its engine still exists


class DecodeScheduler:
    """One daemon thread per engine (and per process: a forked worker starts its own) running decode batches."""

    def __init__(self, engine, batching: config.BatchingConfig = config.BATCHING):
        self._engine = weakref.ref(engine)  # the engine owns this; its thread must not keep the engine alive
        self.batching = batching
        self._queue: queue.Queue[DecodeRequest] = queue.Queue()
        self._carry: deque[DecodeRequest] = deque()
        self._thread: threading.Thread | None = None
        self._pid = os.getpid()
        self._start_lock = threading.Lock()
        self.batches = 0  # decode batches run, and the rows of the largest: for tests and benchmarks
        self.largest_batch_rows = 0
        self.joined = 0  # requests that joined a running batch at a step boundary

    def submit(self, request: DecodeRequest) -> None:
        if request.rows > self.batching.max_rows:
            raise ValueError(f"{request.rows} rows in one request; at most {self.batching.max_rows} are decoded "
                             "together.")
        self._ensure_thread()
        self._queue.put(request)

    def _ensure_thread(self) -> None:
        with self._start_lock:
            if self._pid != os.getpid():  # forked: the parent's thread and queue are not ours
                self._queue, self._carry, self._pid = queue.Queue(), deque(), os.getpid()
                self._thread = None
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name="decoder", daemon=True)
                self._thread.start()
                # end the thread before the interpreter finalises: torch aborts the process ("terminate called
                # without an active exception", exit code 134) when a thread that ran it is killed at exit
                atexit.register(_close, weakref.ref(self))

    def close(self, timeout: float = 10.0) -> None:
        """Stop the thread once the running batch (if any) is done; later submits start a new one."""
        thread = self._thread
        if thread is not None and thread.is_alive():
            self._queue.put(None)
            thread.join(timeout)

    def _next_batch(self) -> list[DecodeRequest] | None:
        """The next batch of requests, or None when the engine is gone (the thread then ends)."""
        first = self._carry.popleft() if self._carry else None
        while first is None:
            try:
                first = self._queue.get(timeout=_IDLE_CHECK_S)
            except queue.Empty:
                if self._engine() is None:
                    return None
                continue
            if first is None:  # close()
                return None
        batch, rows = [first], first.rows
        while self._carry and rows + self._carry[0].rows <= self.batching.max_rows:
            request = self._carry.popleft()
            batch.append(request)
            rows += request.rows
        deadline = time.monotonic() + self.batching.window_s
        while rows < self.batching.max_rows:
            try:
                request = self._queue.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                break
            if request is None:  # close(): after this batch
                self._queue.put(None)
                break
            if rows + request.rows > self.batching.max_rows:
                self._carry.append(request)
                break
            batch.append(request)
            rows += request.rows
        return batch

    def _admit(self, free_rows: int) -> list[DecodeRequest]:
        """Requests waiting now that fit in ``free_rows`` (called by the running batch at each step boundary)."""
        admitted: list[DecodeRequest] = []
        while free_rows > 0:
            if self._carry:
                request = self._carry.popleft()
            else:
                try:
                    request = self._queue.get_nowait()
                except queue.Empty:
                    break
                if request is None:  # close(): no more joiners
                    self._queue.put(None)
                    break
            if request.rows > free_rows:
                self._carry.appendleft(request)
                break
            admitted.append(request)
            free_rows -= request.rows
        if admitted:
            self.joined += len(admitted)
        return admitted

    def _run(self) -> None:
        while (batch := self._next_batch()) is not None:
            engine = self._engine()
            if engine is None:
                for request in batch:
                    request.finish(RuntimeError("The model was unloaded before this request ran."))
                return
            rows = sum(r.rows for r in batch)
            try:
                with engine.lock, torch.inference_mode(), threads.for_role("generation"):
                    self.batches += 1
                    self.largest_batch_rows = max(self.largest_batch_rows, rows)
                    decode_together(engine.model, batch, engine.tokenizer.pad_token_id, engine.device.device,
                                    admit=self._admit if self.batching.join_running else None,
                                    max_rows=self.batching.max_rows)
            except BaseException as exc:  # noqa: BLE001 - each request was told; the thread serves the next batch
                log.warning("decode batch of %d request(s) failed: %s", len(batch), exc)
            del engine


def _close(scheduler_ref) -> None:
    scheduler = scheduler_ref()
    if scheduler is not None:
        scheduler.close()
