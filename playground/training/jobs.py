"""One training at a time per server: a bounded FIFO queue, progress that survives page refreshes and restarts.

Each job trains on a fresh copy of the base model (never the one serving generation), so generation stays
responsive and no adapter state is shared. Progress is appended to ``runs/<job>/progress.jsonl`` every step, so a
crash keeps the partial metrics; the adapter itself is saved atomically by ``saving.save_adapter_atomically``.
The rows a job trains on are kept next to its record (``runs/<job>/rows.jsonl``), so a job a restart interrupted can
be run again (:meth:`TrainingQueue.restart`). Job ids carry 128 random bits; one visitor (owner) may have
``QUOTAS.trainings_per_visitor`` jobs queued or running, and the oldest finished run records are pruned past
``QUOTAS.runs`` / ``QUOTAS.run_bytes``.
Where the training runs is the queue's :class:`TrainingRunner`: in this process by default, or wherever
``playground.serving`` sends it (a forked GPU worker on ZeroGPU, which gets file-based hooks).
"""

from __future__ import annotations

import atexit
import dataclasses
import json
import logging
import re
import secrets
import shutil
import threading
import time
import traceback
import weakref
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import pandas as pd

from playground import config
from playground.common.files import (
    atomic_write_json,
    atomic_write_text,
    folder_bytes,
    oldest_first_over,
    read_jsonl,
    write_jsonl,
)
from playground.common.numbers import json_safe
from playground.engine.adapters import AdapterInfo
from playground.training.data import count_steps, validate_train_config
from playground.training.loop import RunHooks, StepMetrics, TrainResult, train
from playground.training.saving import clean_stale_tmp

if TYPE_CHECKING:
    from playground.engine.engine import Engine

log = logging.getLogger(__name__)

NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,47}$")


class QueueFull(RuntimeError):
    """Too many trainings are waiting, or this visitor already has its share; the message says which and what to
    do."""


class AdapterNameError(ValueError):
    """An adapter name that is unsafe or taken; the message says why."""


def sanitise_adapter_name(raw: str, taken: set[str] | frozenset[str] = frozenset()) -> str:
    """Validate a user-chosen adapter name: letters, digits, '-' and '_', 1-48 chars, not reserved, not taken.

    Spaces become '-'; anything else that is not allowed (slashes, '..', control characters) is refused, not
    silently rewritten, so the user sees the name they get.
    """
    name = (raw or "").strip().replace(" ", "-")
    if not name:
        raise AdapterNameError("Give the adapter a name (letters, digits, '-' or '_').")
    if any(ord(ch) < 32 or ord(ch) == 127 for ch in name):
        raise AdapterNameError("The adapter name contains control characters; use letters, digits, '-' or '_'.")
    if ".." in name or "/" in name or "\\" in name:
        raise AdapterNameError(f"The adapter name {raw!r} contains a path ('..', '/' or '\\'); use a plain name.")
    if not NAME_PATTERN.match(name):
        raise AdapterNameError(f"The adapter name {raw!r} may only use letters, digits, '-' and '_' "
                               "(1-48 characters, starting with a letter or digit).")
    if name.lower() in config.RESERVED_ADAPTER_NAMES:
        raise AdapterNameError(f"{name!r} is reserved; choose another name.")
    if name in taken:
        raise AdapterNameError(f"An adapter named {name!r} already exists; choose another name.")
    return name


@dataclass
class Job:
    id: str
    name: str
    method: str
    total_steps: int
    status: str = "queued"  # queued | running | done | failed | cancelled | interrupted
    kind: str = "training"  # training (an adapter comes out) | experiment (``submit_task``: results come out)
    phase: str = "Waiting for the trainer"
    error: str | None = None
    history: list[dict[str, float]] = field(default_factory=list)
    last_per_sample: dict[str, list] = field(default_factory=dict)
    evaluations: list[dict[str, Any]] = field(default_factory=list)  # held-out evaluations (training.evaluation)
    probes: list[dict[str, Any]] = field(default_factory=list)  # probe answers (training.probes)
    stop: dict[str, Any] | None = None  # the early stop, when there was one: reason and the step kept
    settings: dict[str, Any] = field(default_factory=dict)  # the run's TrainConfig, as JSON
    adapter_dir: str | None = None
    meta: dict[str, Any] = field(default_factory=dict)
    created: float = field(default_factory=time.time)
    owner: str | None = None
    cancel_event: threading.Event = field(default_factory=threading.Event, repr=False)

    @property
    def finished(self) -> bool:
        return self.status in ("done", "failed", "cancelled", "interrupted")

    def snapshot(self) -> dict[str, Any]:
        """A JSON-friendly copy for the UI and the API (no events, no tensors)."""
        data = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "cancel_event"}
        data["history"] = list(self.history)
        data["last_per_sample"] = dict(self.last_per_sample)
        data["evaluations"] = list(self.evaluations)
        data["probes"] = list(self.probes)
        data["meta"] = dict(self.meta)
        return data


@dataclass
class _Pending:
    job: Job
    frame: pd.DataFrame
    heldout: pd.DataFrame | None
    train_config: config.TrainConfig
    extra_meta: dict[str, Any]
    probe_prompts: list[Any] | None = None
    task: Callable[[Job], None] | None = None  # an experiment's work instead of a training (``submit_task``)


class TrainingRunner(Protocol):
    """Runs one training job and returns its result. ``isolated`` is True when it runs in another process, where
    the hooks must be :class:`FileHooks` (picklable paths) rather than closures over the job."""

    isolated: bool

    def __call__(self, frame: pd.DataFrame, train_config: config.TrainConfig, heldout: pd.DataFrame | None,
                 out_dir: str, extra_meta: dict[str, Any], hooks: LiveHooks | FileHooks,
                 probe_prompts: list[Any] | None = None) -> TrainResult: ...


def train_on_fresh_base(engine: Engine, frame: pd.DataFrame, train_config: config.TrainConfig,
                        heldout: pd.DataFrame | None, out_dir: str, extra_meta: dict[str, Any],
                        hooks: LiveHooks | FileHooks, probe_prompts: list[Any] | None = None) -> TrainResult:
    """One job on a fresh copy of the base (never the model serving generation), reporting through ``hooks``."""
    hooks.on_phase("Loading a fresh copy of the base model")
    base = engine.fresh_base()
    return train(base, engine.tokenizer, frame, train_config, device=engine.device, heldout_frame=heldout,
                 callback=hooks.on_step, cancel=hooks.cancel, out_dir=Path(out_dir), extra_meta=extra_meta,
                 hooks=RunHooks(hooks.on_phase, hooks.on_evaluation, hooks.on_probes), probe_prompts=probe_prompts)


@dataclass
class InProcessRunner:
    """The default runner: :func:`train_on_fresh_base` in the queue's worker thread."""

    engine: Engine
    isolated: bool = False

    def __call__(self, frame, train_config, heldout, out_dir, extra_meta, hooks, probe_prompts=None) -> TrainResult:
        return train_on_fresh_base(self.engine, frame, train_config, heldout, out_dir, extra_meta, hooks,
                                   probe_prompts)


class TrainingQueue:
    """Runs submitted trainings one at a time in a worker thread; attaches finished adapters to the engine."""

    def __init__(self, engine: Engine, adapters_root: Path, runs_root: Path,
                 max_waiting: int = config.APP.max_training_queue, on_finished: Callable[[Job], None] | None = None,
                 runner: TrainingRunner | None = None, quotas: config.Quotas = config.QUOTAS):
        self.engine = engine
        self.runner: TrainingRunner = runner or InProcessRunner(engine)
        self.adapters_root = Path(adapters_root)
        self.runs_root = Path(runs_root)
        self.max_waiting = max_waiting
        self.quotas = quotas
        self.on_finished = on_finished
        self.jobs: dict[str, Job] = {}
        self._waiting: deque[_Pending] = deque()
        self._lock = threading.Lock()
        self._wake = threading.Condition(self._lock)
        self._worker: threading.Thread | None = None
        self._closing = False
        # end the worker before the interpreter finalises: torch aborts the process ("terminate called without an
        # active exception") when a thread inside it is killed at exit, and the running job would read as nothing
        atexit.register(_close_queue, weakref.ref(self))
        self.adapters_root.mkdir(parents=True, exist_ok=True)
        self.runs_root.mkdir(parents=True, exist_ok=True)
        clean_stale_tmp(self.adapters_root)
        self._recover()

    # ---------------------------------------------------------------------------------------------------------------
    def _recover(self) -> None:
        """Reload finished jobs; a job that was queued or running when the server died is marked interrupted."""
        for job_file in sorted(self.runs_root.glob("*/job.json")):
            try:
                record = json.loads(job_file.read_text(encoding="utf-8"))
            except (OSError, json.JSONDecodeError):
                continue
            job = Job(**{k: v for k, v in record.items() if k in Job.__dataclass_fields__ and k != "cancel_event"})
            job.history = _read_progress(job_file.parent / "progress.jsonl")
            job.evaluations = _read_progress(job_file.parent / EVALUATIONS_FILE)
            job.probes = _read_progress(job_file.parent / PROBES_FILE)
            if not job.finished:
                job.status = "interrupted"
                saved = (self.adapters_root / job.name / "adapter_model.safetensors").is_file()
                job.phase = ("Interrupted by a server restart; the runs it had finished were not kept"
                             if job.kind == "experiment" else
                             "Interrupted by a server restart after its adapter was saved (it is listed); the end "
                             "of the run did not happen" if saved else
                             "Interrupted by a server restart; partial metrics kept, no adapter was saved")
                self._write_job(job)
            self.jobs[job.id] = job

    def _write_job(self, job: Job) -> None:
        folder = self.runs_root / job.id
        folder.mkdir(parents=True, exist_ok=True)
        record = {k: v for k, v in job.snapshot().items()
                  if k not in ("history", "last_per_sample", "evaluations", "probes")}
        atomic_write_text(folder / "job.json", json.dumps(record, default=str))

    # ---------------------------------------------------------------------------------------------------------------
    def taken_names(self) -> set[str]:
        pending = {job.name for job in self.jobs.values() if not job.finished and job.kind == "training"}
        return set(self.engine.adapters) | pending | {p.name for p in self.adapters_root.iterdir() if p.is_dir()}

    def submit(self, frame: pd.DataFrame, train_config: config.TrainConfig, name: str, *,
               heldout: pd.DataFrame | None = None, extra_meta: dict[str, Any] | None = None,
               owner: str | None = None, probe_prompts: list[Any] | None = None) -> Job:
        """Validate and enqueue a training; raises AdapterNameError, TrainingInputError or QueueFull."""
        with self._lock:
            name = sanitise_adapter_name(name, self.taken_names())
            validate_train_config(train_config, len(frame))
            self._check_room(owner)
            job = Job(secrets.token_hex(16), name, train_config.method,
                      count_steps(len(frame), train_config), owner=owner,
                      settings=json_safe(dataclasses.asdict(train_config)))
            pending = _Pending(job, frame, heldout, train_config, dict(extra_meta or {}), probe_prompts)
            _write_inputs(self.runs_root / job.id, pending)
            self._enqueue(pending)
        return job

    def submit_task(self, name: str, method: str, task: Callable[[Job], None], *, total_steps: int,
                    owner: str | None = None, settings: dict[str, Any] | None = None) -> Job:
        """Queue work that is not one training (an experiment: several trainings and their measurements) behind the
        same one-at-a-time worker and quotas. ``task(job)`` runs in the worker: it reports through ``job.phase``
        and ``job.meta``, stops when ``job.cancel_event`` is set, and raises to fail. Nothing is kept to restart it.
        Raises QueueFull."""
        with self._lock:
            self._check_room(owner)
            job = Job(secrets.token_hex(16), name, method, total_steps, kind="experiment", owner=owner,
                      settings=json_safe(dict(settings or {})))
            self._enqueue(_Pending(job, pd.DataFrame(), None, config.TRAIN, {}, task=task))
        return job

    def _check_room(self, owner: str | None) -> None:
        """Raise QueueFull when the queue is full or ``owner`` already has their share (the lock is held)."""
        if len(self._waiting) >= self.max_waiting:
            raise QueueFull(f"{len(self._waiting)} trainings are already waiting (the limit is "
                            f"{self.max_waiting}); try again when one has finished.")
        mine = [job for job in self.jobs.values() if owner is not None and job.owner == owner and not job.finished]
        if len(mine) >= self.quotas.trainings_per_visitor:
            raise QueueFull(f"You already have {len(mine)} training(s) or experiment(s) queued or running (the limit "
                            f"is {self.quotas.trainings_per_visitor} per visitor on this server); wait for it to "
                            "finish or cancel it, then start the next.")

    def _enqueue(self, pending: _Pending) -> None:
        """Record ``pending``'s job and wake the worker (the lock is held)."""
        self.jobs[pending.job.id] = pending.job
        self._write_job(pending.job)
        self._waiting.append(pending)
        if self._worker is None or not self._worker.is_alive():
            self._worker = threading.Thread(target=self._run_forever, name="trainer", daemon=True)
            self._worker.start()
        self._wake.notify()

    def position(self, job_id: str) -> int:
        """0 while running, 1.. while waiting (1 = next), -1 when finished or unknown."""
        with self._lock:
            job = self.jobs.get(job_id)
            if job is None or job.finished:
                return -1
            if job.status == "running":
                return 0
            for index, pending in enumerate(self._waiting, start=1):
                if pending.job.id == job_id:
                    return index
        return -1

    def get(self, job_id: str) -> Job | None:
        return self.jobs.get(job_id)

    def cancel(self, job_id: str) -> bool:
        """Cancel a waiting job at once or a running one at its next step; True when something was cancelled."""
        with self._lock:
            job = self.jobs.get(job_id)
            if job is None or job.finished:
                return False
            job.cancel_event.set()
            for pending in list(self._waiting):
                if pending.job.id == job_id:
                    self._waiting.remove(pending)
                    job.status, job.phase = "cancelled", "Cancelled before it started"
                    self._write_job(job)
            return True

    def running(self) -> Job | None:
        return next((job for job in self.jobs.values() if job.status == "running"), None)

    def restart(self, job_id: str, owner: str | None) -> Job:
        """Queue an interrupted (or failed) job of ``owner`` again: the same rows, held-out pairs, settings and
        name, as a new job. Raises QueueFull, AdapterNameError, or ValueError when there is nothing to restart."""
        job = self.jobs.get(job_id)
        if job is None or job.owner != owner or job.kind != "training":
            raise ValueError("No training of yours to restart.")
        if job.status not in ("interrupted", "failed"):
            raise ValueError(f"Only an interrupted or failed training can be restarted (this one is {job.status}).")
        try:
            frame, heldout, extra, probes = _read_inputs(self.runs_root / job_id)
        except (OSError, ValueError, KeyError) as exc:
            raise ValueError(f"The rows of {job.name} were not kept ({exc}); start it again from the data.") from None
        return self.submit(frame, train_config_from_json(job.settings), job.name, heldout=heldout, extra_meta=extra,
                           owner=owner, probe_prompts=probes)

    def _prune_runs(self) -> list[str]:
        """Remove the oldest finished run records past ``quotas.runs`` / ``quotas.run_bytes``; their ids."""
        with self._lock:
            finished = [job for job in self.jobs.values() if job.finished]
            sizes = {job.id: folder_bytes(self.runs_root / job.id) for job in finished}
            busy = len(self.jobs) - len(finished)
            total = sum(folder_bytes(self.runs_root / job.id) for job in self.jobs.values() if not job.finished)
            gone = oldest_first_over(((job.id, job.created, sizes[job.id]) for job in finished),
                                     self.quotas.runs - busy, self.quotas.run_bytes - total)
            for job_id in gone:
                self.jobs.pop(job_id, None)
                shutil.rmtree(self.runs_root / job_id, ignore_errors=True)
        return gone

    def close(self, timeout: float = 30.0) -> None:
        """Stop the worker (at the interpreter's exit): the running job stops at its next step and is recorded as
        interrupted, so :meth:`restart` can run it again; waiting jobs stay queued on disk, which the next start
        reads as interrupted. Waits up to ``timeout`` seconds for the worker."""
        with self._lock:
            self._closing = True
            worker = self._worker
            for job in self.jobs.values():
                if job.status == "running":
                    job.cancel_event.set()
            self._wake.notify_all()
        if worker is not None and worker.is_alive() and worker is not threading.current_thread():
            worker.join(timeout)

    # ---------------------------------------------------------------------------------------------------------------
    def _run_forever(self) -> None:
        while True:
            with self._lock:
                while not self._waiting or self._closing:
                    if self._closing or not self._wake.wait(timeout=60):
                        self._worker = None
                        return
                pending = self._waiting.popleft()
                pending.job.status = "running"
                pending.job.phase = "Loading a fresh copy of the base model"
                self._write_job(pending.job)
            if pending.task is not None:
                self._run_task(pending)
            else:
                self._run(pending)

    def _run_task(self, pending: _Pending) -> None:
        """An experiment (``submit_task``): done, cancelled (its cancel event was set) or failed with its error."""
        job = pending.job
        try:
            pending.task(job)
            if job.cancel_event.is_set() and self._closing:
                job.status, job.phase = "interrupted", "Interrupted by the server's exit; its runs were not kept"
            elif job.cancel_event.is_set():
                job.status, job.phase = "cancelled", "Cancelled; the runs finished so far were not kept"
            else:
                job.status = "done"
        except Exception as exc:  # noqa: BLE001 - a failed experiment frees its slot and says why
            log.error("experiment %s failed: %s", job.id, traceback.format_exc())
            job.status, job.error, job.phase = "failed", f"{type(exc).__name__}: {exc}", "Failed"
        finally:
            self._write_job(job)
            self._prune_runs()
            if self.on_finished:
                self.on_finished(job)

    def _run(self, pending: _Pending) -> None:
        job = pending.job
        run_dir = self.runs_root / job.id
        progress_file = run_dir / "progress.jsonl"

        def on_step(metrics: StepMetrics) -> None:
            job.history.append(_append_progress(progress_file, metrics))
            job.last_per_sample = metrics.per_sample

        def on_phase(message: str) -> None:
            job.phase = message

        def on_evaluation(evaluation, decision) -> None:
            job.evaluations.append(_append_evaluation(run_dir / EVALUATIONS_FILE, evaluation, decision))

        def on_probes(answers) -> None:
            job.probes.extend(_append_probes(run_dir / PROBES_FILE, answers))

        # On ZeroGPU the training runs in a forked worker: it gets picklable file hooks, and a thread here mirrors
        # the files into the job (history, phase) and the job's cancel event into a flag file.
        isolated = self.runner.isolated
        hooks = FileHooks(str(run_dir)) if isolated else LiveHooks(on_step, on_phase, job.cancel_event,
                                                                    on_evaluation, on_probes)
        mirror_stop = threading.Event()
        mirror = threading.Thread(target=_mirror, args=(job, hooks, mirror_stop), name=f"mirror-{job.id}",
                                  daemon=True) if isolated else None
        try:
            if mirror is not None:
                mirror.start()
            meta = {"name": job.name, "base_model": self.engine.base_id, **pending.extra_meta}
            result = self.runner(pending.frame, pending.train_config, pending.heldout,
                                 str(self.adapters_root / job.name), meta, hooks, pending.probe_prompts)
            if mirror is not None:
                mirror_stop.set()
                mirror.join()
                _sync_from_files(job, hooks)
            job.meta = {k: v for k, v in result.meta.items() if k != "history"}
            job.stop = result.meta.get("early_stop")
            if result.cancelled and self._closing:
                job.status, job.phase = "interrupted", (f"Interrupted by the server's exit after {len(job.history)} "
                                                        "steps; partial metrics kept, no adapter was saved")
            elif result.cancelled:
                job.status, job.phase = "cancelled", f"Cancelled after {len(job.history)} steps; nothing was saved"
            else:
                job.adapter_dir = str(result.adapter_dir)
                self.engine.attach(AdapterInfo(job.name, Path(result.adapter_dir), result.meta, "user"))
                # Before "done": whoever sees the job finished may export it at once, from the rows kept here.
                keep_rows_with_adapter(run_dir, Path(job.adapter_dir))
                job.status, job.phase = "done", "Done: the adapter is saved and attached"
        except Exception as exc:  # noqa: BLE001 - a failed job frees its slot and says why
            log.error("training %s failed: %s", job.id, traceback.format_exc())
            job.status, job.error = "failed", f"{type(exc).__name__}: {exc}"
            job.phase = "Failed"
        finally:
            mirror_stop.set()
            self._write_job(job)
            self._prune_runs()
            if self.on_finished:
                self.on_finished(job)


# --------------------------------------------------------------------------------------------------------------------
# Training hooks: what the runner calls after each step, on a phase change, and checks for cancel


EVALUATIONS_FILE = "evaluations.jsonl"
PROBES_FILE = "probes.jsonl"


def _append_lines(path: Path, records: list[dict[str, Any]]) -> None:
    with Path(path).open("a", encoding="utf-8") as handle:
        for record in records:
            handle.write(json.dumps(record, allow_nan=True) + "\n")


def _append_progress(path: Path, metrics) -> dict[str, float]:
    scalars = metrics.scalars()
    _append_lines(path, [scalars])
    return scalars


def _append_evaluation(path: Path, evaluation, decision) -> dict[str, Any]:
    record = {**evaluation.to_json(), "stop": decision.stop, "reason": decision.reason,
              "best_step": decision.best_step}
    _append_lines(path, [record])
    return record


def _append_probes(path: Path, answers) -> list[dict[str, Any]]:
    records = [answer.to_json() for answer in answers]
    _append_lines(path, records)
    return records


@dataclass
class LiveHooks:
    """In-process hooks (the training runs in this server's trainer thread): closures over the job."""

    on_step: Callable[[Any], None]
    on_phase: Callable[[str], None]
    cancel: threading.Event
    on_evaluation: Callable[[Any, Any], None] | None = None
    on_probes: Callable[[list], None] | None = None


class FlagFile:
    """A cancel flag that crosses processes: set when the file exists (``threading.Event``'s ``is_set``)."""

    def __init__(self, path: str):
        self.path = str(path)

    def is_set(self) -> bool:
        return Path(self.path).exists()

    def set(self) -> None:
        Path(self.path).touch()


class FileHooks:
    """Picklable hooks for a training in another process (ZeroGPU): every step is appended to
    ``<run_dir>/progress.jsonl``, the last per-sample terms and the phase are written next to it, and cancel is
    the flag file ``<run_dir>/cancel``. Only paths are stored, so pickling copies nothing of the server."""

    def __init__(self, run_dir: str):
        self.run_dir = str(run_dir)
        self.cancel = FlagFile(str(Path(run_dir) / "cancel"))

    @property
    def progress_file(self) -> Path:
        return Path(self.run_dir) / "progress.jsonl"

    @property
    def per_sample_file(self) -> Path:
        return Path(self.run_dir) / "per_sample.json"

    @property
    def phase_file(self) -> Path:
        return Path(self.run_dir) / "phase.txt"

    def on_step(self, metrics) -> None:
        _append_progress(self.progress_file, metrics)
        atomic_write_json(self.per_sample_file, metrics.per_sample, default=float)

    def on_phase(self, message: str) -> None:
        atomic_write_text(self.phase_file, str(message))

    def on_evaluation(self, evaluation, decision) -> None:
        _append_evaluation(Path(self.run_dir) / EVALUATIONS_FILE, evaluation, decision)

    def on_probes(self, answers) -> None:
        _append_probes(Path(self.run_dir) / PROBES_FILE, answers)


def _sync_from_files(job: Job, hooks: FileHooks) -> None:
    """Copy what a training in another process wrote (steps, evaluations, probes, last per-sample terms, phase)
    into ``job``."""
    job.history = _read_progress(hooks.progress_file)
    job.evaluations = _read_progress(Path(hooks.run_dir) / EVALUATIONS_FILE)
    job.probes = _read_progress(Path(hooks.run_dir) / PROBES_FILE)
    try:
        job.last_per_sample = json.loads(hooks.per_sample_file.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        pass
    try:
        job.phase = hooks.phase_file.read_text(encoding="utf-8") or job.phase
    except OSError:
        pass


def _mirror(job: Job, hooks: FileHooks, stop: threading.Event, every: float = 0.5) -> None:
    """While a training runs in another process: files -> job, and the job's cancel event -> the flag file."""
    while not stop.wait(every):
        if job.cancel_event.is_set() and not hooks.cancel.is_set():
            hooks.cancel.set()
        _sync_from_files(job, hooks)


ROWS_FILE = "rows.jsonl"  # what a job trains on, kept until it is done so an interrupted one can run again
INPUTS_FILE = "inputs.json"  # its held-out pairs, probe prompts and meta


def _write_inputs(run_dir: Path, pending: _Pending) -> None:
    """The job's rows and the rest of what :meth:`TrainingQueue.restart` needs, written atomically."""
    write_jsonl(run_dir / ROWS_FILE, pending.frame.to_dict("records"))
    heldout = None if pending.heldout is None else pending.heldout.to_dict("records")
    atomic_write_json(run_dir / INPUTS_FILE, {"heldout": heldout, "extra_meta": pending.extra_meta,
                                              "probe_prompts": pending.probe_prompts}, default=str)


KEPT_ROWS_FILE = "training_rows.jsonl"  # in a finished adapter's folder: the rows it was trained on
KEPT_HELDOUT_FILE = "heldout_pairs.jsonl"  # and the held-out pairs it was measured on, when there were some


def keep_rows_with_adapter(run_dir: Path, adapter_dir: Path) -> None:
    """Move a finished job's rows (and write its held-out pairs) into its adapter's folder, so the adapter can be
    exported to TRL with the data it was trained on (``training.export_trl.recorded_training``) and its zip carries
    them. A job without rows on disk (an old record) is left as it is."""
    rows = Path(run_dir) / ROWS_FILE
    if not rows.is_file() or not Path(adapter_dir).is_dir():
        return
    try:
        inputs = json.loads((Path(run_dir) / INPUTS_FILE).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        inputs = {}
    if inputs.get("heldout"):
        write_jsonl(Path(adapter_dir) / KEPT_HELDOUT_FILE, inputs["heldout"])
    rows.replace(Path(adapter_dir) / KEPT_ROWS_FILE)


def _read_inputs(run_dir: Path) -> tuple[pd.DataFrame, pd.DataFrame | None, dict[str, Any], list[Any] | None]:
    rows = read_jsonl(run_dir / ROWS_FILE)
    inputs = json.loads((run_dir / INPUTS_FILE).read_text(encoding="utf-8"))
    heldout = None if inputs["heldout"] is None else pd.DataFrame(inputs["heldout"])
    return pd.DataFrame(rows), heldout, dict(inputs["extra_meta"]), inputs["probe_prompts"]


def train_config_from_json(settings: dict[str, Any], template: Any = config.TRAIN) -> Any:
    """The TrainConfig (or nested settings dataclass) that ``dataclasses.asdict`` turned into ``settings``: fields
    missing from ``settings`` keep ``template``'s value, lists become tuples where the template has a tuple."""
    values = {}
    for f in dataclasses.fields(template):
        if f.name not in settings:
            continue
        current, value = getattr(template, f.name), settings[f.name]
        if dataclasses.is_dataclass(current) and isinstance(value, dict):
            value = train_config_from_json(value, current)
        elif isinstance(current, tuple) and isinstance(value, list):
            value = tuple(value)
        values[f.name] = value
    return dataclasses.replace(template, **values)


def _read_progress(path: Path) -> list[dict[str, float]]:
    """The JSON lines written so far (steps, evaluations, probes); a torn last line from a crash is skipped."""
    history = []
    if path.is_file():
        for line in path.read_text(encoding="utf-8").splitlines():
            try:
                history.append(json.loads(line))
            except json.JSONDecodeError:
                continue
    return history


def _close_queue(queue_ref) -> None:
    queue = queue_ref()
    if queue is not None:
        queue.close()
