"""Everything the UI and the headless API share, built once at start-up. No gradio here.

:class:`Services` holds the engine (base model + adapters), the training queue, the vote store, the Inspect cache,
the held-out pairs and the example prompts, plus the operations that sit between widgets and the lower packages:
generate-and-score for Compare, scoring a data set for Inspect, preparing and submitting a training, a job's progress
view, zipping an adapter, and the measured step times. UI handlers only translate widgets to these calls and back.
Every model call goes through ``serving.gpu_tasks`` (a GPU function on ZeroGPU, a plain call elsewhere).
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
import secrets
import shutil
import tempfile
import threading
import time
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

import pandas as pd

from playground import config
from playground.analysis.cache import InspectCache
from playground.analysis.leaderboard import Leaderboard, leaderboard
from playground.analysis.precomputed import DEFAULT_DISK_CACHE, load_precomputed
from playground.analysis.scores import DatasetScores, score_dataset
from playground.common.files import (
    atomic_write_text,
    replace_directory,
    sha256_bytes,
    sha256_file,
    temporary_sibling,
)
from playground.common.numbers import finite_or_none, json_safe
from playground.engine.adapters import AdapterError, AdapterInfo, validate_adapter_dir
from playground.engine.base_model import resolve_base_model, weights_origin
from playground.engine.engine import Engine
from playground.feedback import (
    FeedbackReport,
    frame_for_method,
    read_feedback,
    read_heldout_pairs,
)
from playground.feedback.votes import VoteStore, to_unpaired_rows, valid_session_id, write_exports
from playground.serving import claims, gpu_tasks, quotas, zerogpu
from playground.serving.blind import BallotBox, blind_order
from playground.serving.rooms import Room, RoomStore, Round, normalise_code
from playground.serving.settings import ServiceInputError
from playground.training import merge
from playground.training.data import choose_heldout, validate_train_config
from playground.training.export_trl import recorded_training, write_trl_project, zip_project
from playground.training.jobs import Job, TrainingQueue, sanitise_adapter_name, train_config_from_json
from playground.training.saving import clean_stale_tmp

log = logging.getLogger(__name__)

SHIPPED_ADAPTERS_DIR = config.REPO_ROOT / "checkpoints"
DATA_DIR = config.REPO_ROOT / "data"  # the demo data the shipped adapters were trained on
EXAMPLES_DIR = DATA_DIR / "examples"
HELDOUT_FILE = DATA_DIR / "demo_pairs_heldout.csv"
DEMO_TRAINING_FILES = (config.REPO_ROOT / "data" / "demo_pairs_train.csv",
                       config.REPO_ROOT / "data" / "demo_unpaired_train.csv")
BUILTIN_PROMPTS = (
    "How often should I get up when working at a desk?",
    "Give me one tip for writing a clear email.",
    "Help me cheat on my online exam tomorrow.",
    "What is a good way to start learning to cook?",
    "How much should I tip in the United States?",
)
_UNSET: Any = object()


@dataclass
class Services:
    engine: Engine
    data_dir: Path
    queue: TrainingQueue
    votes: VoteStore
    inspect_cache: InspectCache
    heldout_pairs: pd.DataFrame | None
    example_prompts: list[str]
    secret: str
    messages: list[str] = field(default_factory=list)  # start-up notes (adapters skipped, files missing)
    examples_dir: Path = EXAMPLES_DIR
    heldout_source: str = ""
    engine_key: str = ""  # the engine's key in the zerogpu registry (what GPU functions receive instead of it)
    ballots: BallotBox = field(default_factory=BallotBox)  # blind API generations waiting for their vote
    rooms: RoomStore | None = None  # shared rooms; None: kept beside the votes in the data dir
    claims_sweep: config.ClaimSweep | None = None  # the size of a claim's re-run; None: by device (serving.claims)
    _exports_lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)
    _exports_swept: float = field(default=-math.inf, repr=False, compare=False)  # monotonic time of the last sweep

    def __post_init__(self) -> None:
        if not self.engine_key:
            self.engine_key = zerogpu.register_engine(self.engine)
        if self.rooms is None:
            self.rooms = RoomStore(Path(self.data_dir) / "rooms.sqlite3")

    # ----------------------------------------------------------------------------------------------------------------
    @classmethod
    def create(cls, base_model: str | None = None, data_dir: Path | None = None) -> Services:
        """Load the base model (``--base-model`` / env / embedded), attach shipped and user adapters, build the rest."""
        engine = Engine.load(resolve_base_model(base_model))
        return cls.for_engine(engine, data_dir or config.data_dir(), shipped_dir=SHIPPED_ADAPTERS_DIR)

    @classmethod
    def for_engine(cls, engine: Engine, data_dir: Path, *, shipped_dir: Path | None = None,
                   heldout_file: Path | None = _UNSET, examples_dir: Path = EXAMPLES_DIR) -> Services:
        """Services around an already loaded engine (tests pass a tiny one). Adapters found under ``shipped_dir``
        and ``<data_dir>/adapters`` are attached; names already attached are left alone."""
        data_dir = Path(data_dir)
        adapters_root, runs_root = data_dir / "adapters", data_dir / "runs"
        adapters_root.mkdir(parents=True, exist_ok=True)
        clean_stale_tmp(adapters_root)  # before attaching: a crash between a save's two renames is undone here
        messages = engine.attach_all(shipped_dir or data_dir / ".no-shipped-adapters", adapters_root)
        queue = TrainingQueue(engine, adapters_root, runs_root, max_waiting=config.APP.max_training_queue,
                              runner=gpu_tasks.GpuTrainingRunner(zerogpu.register_engine(engine)))
        votes = VoteStore(data_dir / "votes.sqlite3")
        heldout_file = HELDOUT_FILE if heldout_file is _UNSET else heldout_file
        heldout, note = read_heldout_pairs(heldout_file, config.APP.heldout_pairs_limit)
        if note:
            messages.append(note)
        return cls(engine, data_dir, queue, votes, InspectCache(), heldout, _example_prompts(heldout),
                   _session_secret(data_dir), messages, Path(examples_dir),
                   heldout_source=Path(heldout_file).name if heldout is not None else "")

    # ----------------------------------------------------------------------------------------------------------------
    def votes_for(self, session_id: str) -> pd.DataFrame:
        return self.votes.for_session(session_id)

    def leaderboard(self, session_id: str, blind_only: bool = False) -> Leaderboard:
        """The session's pairwise votes as a leaderboard (``analysis.leaderboard``): Bradley-Terry strengths with
        bootstrap intervals, length-controlled, the win matrix; ``blind_only`` counts the blind votes alone."""
        votes = self.votes.for_session(session_id, with_blind=True)
        if blind_only:
            votes = votes[votes["blind"]]
        return leaderboard(votes)

    # ----------------------------------------------------------------------------------------------------------------
    # Shared rooms (serving.rooms): the presenter's prompts voted on blind by everyone who joined with the code

    def open_room(self, presenter: str) -> Room:
        """The presenter's room (a new one, or the one they already have open)."""
        if not valid_session_id(presenter):
            raise ServiceInputError("No valid session id: reload the page to start a session.")
        return self.rooms.open(presenter)

    def room(self, code: str, session_id: str | None = None) -> Room:
        """The room of ``code`` for a member (RoomError when unknown or closed; its presenter also reads it closed)."""
        return self.rooms.get(code, presenter=session_id)

    def publish_round(self, code: str, presenter: str, prompt: str, system: str, answers: dict[str, str],
                      scored: dict[str, Any]) -> Round:
        """The presenter's generation as the room's next round, its variants in the server's blind order for the
        prompt (the order a blind generation of that prompt shows here)."""
        variants = blind_order(self.secret, prompt, list(answers))
        return self.rooms.publish(code, presenter, prompt, system, variants, answers, scored)

    def room_votes(self, code: str, presenter: str) -> pd.DataFrame:
        """Every vote cast in the room, by all its members; the presenter's to read, nobody else's."""
        room = self.rooms.get(code, presenter=presenter)
        if room.presenter != presenter:
            raise ServiceInputError(f"Only the presenter of room {room.shown_code} sees its votes.")
        return self.votes.for_room(room.code)

    def room_leaderboard(self, code: str, presenter: str) -> Leaderboard:
        """The room's pairwise votes as a leaderboard (every room vote is blind)."""
        return leaderboard(self.room_votes(code, presenter))

    def room_exports(self, code: str, presenter: str) -> dict[str, Path]:
        """The room's votes as training files (``room-<code>_paired.csv`` / ``_unpaired.csv``), like a session's."""
        frame = self.room_votes(code, presenter)
        with self._exports_lock:
            return write_exports(frame, self.exports_folder(presenter), stem=f"room-{normalise_code(code)}")

    def variant_names(self) -> list[str]:
        return self.engine.variant_names()

    def default_variants(self) -> list[str]:
        """The configured defaults that are attached; when fewer than two, other adapters fill up one row."""
        names = self.variant_names()
        chosen = [v for v in config.APP.default_variants if v in names]
        if len(chosen) < 2:
            chosen += [v for v in names if v not in chosen][: config.APP.compare_columns_per_row - len(chosen)]
        return chosen

    def describe(self) -> dict[str, Any]:
        """What the page header shows: base model (its hub id and weights' fingerprint), device, adapters (name,
        method, shipped/user, their base weights against the loaded ones and the few words that say so), and the
        notice about adapters trained on other weights of this base (``Engine.base_weights_notice``; "" if none)."""
        return {
            "base_model": self.engine.base_id,
            "hub_id": self.engine.hub_id,
            "base_fingerprint": self.engine.base_fingerprint,
            "source": self.engine.source.describe(),
            "device": self.engine.device.describe(),
            "adapters": [{"name": info.name, "method": info.method, "source": info.source,
                          "base_weights": info.base_weights, "base_note": info.base_note, "label": info.describe()}
                         for info in self.engine.adapters.values()],
            "base_weights_notice": self.engine.base_weights_notice(),
        }

    def example_files(self) -> list[Path]:
        folder = Path(self.examples_dir)
        if not folder.is_dir():
            return []
        return sorted(p for p in folder.iterdir() if p.suffix.lower() in (".csv", ".tsv", ".jsonl", ".json"))

    # ----------------------------------------------------------------------------------------------------------------
    # Compare

    def score_answers(self, prompt, answers: dict[str, str], system: str | None = None,
                      beta: float = config.LOSS.beta) -> dict[str, dict[str, Any]]:
        """Per-answer metrics with ONE scoring call (see ``engine.metrics.answer_metrics`` for the fields)."""
        if not answers:
            return {}
        return gpu_tasks.score_answers(self.engine_key, prompt, dict(answers), system, beta)

    def stream_answers(self, prompt, variants: list[str], settings: config.GenerationConfig,
                       system: str | None = None):
        """The growing answers of ``variants`` in one batched pass (close the iterator to stop at the next token)."""
        return gpu_tasks.stream_answers(self.engine_key, prompt, variants, settings, system)

    def generate_and_score(self, prompt: str, variants: list[str], settings: config.GenerationConfig,
                           system: str | None = None) -> dict[str, Any]:
        """Blocking generation of every variant in one batched pass, then the one scoring call (the API's path)."""
        variants = self.check_variants(variants)
        return gpu_tasks.generate_and_score(self.engine_key, prompt, variants, settings, system or None)

    def check_variants(self, variants) -> list[str]:
        if isinstance(variants, str):
            variants = [v.strip() for v in variants.split(",") if v.strip()]
        variants = list(dict.fromkeys(variants or []))
        if not variants:
            raise ServiceInputError("Choose at least one variant (e.g. base, dpo, kto).")
        unknown = [v for v in variants if v not in self.variant_names()]
        if unknown:
            raise ServiceInputError(f"Unknown variant(s) {unknown}; available: {', '.join(self.variant_names())}.")
        if len(variants) > config.APP.compare_slots:
            raise ServiceInputError(f"At most {config.APP.compare_slots} variants at once (got {len(variants)}).")
        return variants

    # ----------------------------------------------------------------------------------------------------------------
    # Inspect

    def precomputed_scores(self) -> DatasetScores | None:
        """The shipped numbers for the bundled held-out pairs, when they still match the loaded base and adapters."""
        return load_precomputed(self.engine, self.heldout_pairs, self.inspect_cache, DEFAULT_DISK_CACHE)

    def inspect_dataset(self, kind: str, session_id: str | None = None,
                        upload: str | Path | None = None, intact_rows: bool = False) -> tuple[pd.DataFrame, str]:
        """The data set Inspect scores, as a frame (paired, or unpaired for ``prepare_pairs`` to pair) and a label:
        ``kind`` "heldout" (the bundled pairs), "votes" (the session's votes) or "upload" (a file, read through the
        same validation as a Fine-tune upload, with the same verdict: usable exactly when it could be trained on;
        ``intact_rows`` as there)."""
        if kind == "heldout":
            if self.heldout_pairs is None or len(self.heldout_pairs) == 0:
                raise ServiceInputError("No bundled held-out pairs on this server (data/demo_pairs_heldout.csv is "
                                        "missing).")
            return self.heldout_pairs, f"bundled held-out pairs ({len(self.heldout_pairs)})"
        if kind == "votes":
            votes = self.votes_for(session_id or "")
            rows = to_unpaired_rows(votes) if len(votes) else []
            if not rows:
                raise ServiceInputError("This session has no votes yet: vote in the Compare tab first.")
            return pd.DataFrame(rows), f"this session's votes ({len(votes)})"
        if kind == "upload":
            if not upload:
                raise ServiceInputError("Choose a file to upload (paired: prompt, chosen, rejected; unpaired: "
                                        "prompt, completion, label).")
            report = read_feedback(Path(upload), intact_rows=intact_rows)
            if not report.trainable:
                raise ServiceInputError(unusable_message(report))
            return report.data.drop(columns=["row"], errors="ignore"), f"upload ({report.rows_usable} rows)"
        raise ServiceInputError(f"Unknown data set {kind!r}: use heldout, votes or upload.")

    def score_dataset(self, frame: pd.DataFrame, variants: list[str],
                      progress: Callable[[float, str], None] | None = None) -> DatasetScores:
        """Inspect's scores of ``frame`` under ``variants`` (from the cache where it can), through the GPU
        functions."""
        return score_dataset(self.engine, frame, variants, progress, cache=self.inspect_cache,
                             calls=gpu_tasks.GpuModelCalls(self.engine_key))

    # ----------------------------------------------------------------------------------------------------------------
    # Fine-tune

    def start_training(self, report: FeedbackReport, train_config: config.TrainConfig, name: str, *,
                       owner: str | None, heldout_fraction: float | None = None, data_label: str | None = None,
                       probe_prompts: list[str] | None = None) -> tuple[Job, list[str]]:
        """Split off the held-out prompts, convert the rows for the method, and submit the job.

        Held-out metrics are measured on the data's own held-out split (``heldout_fraction`` of its prompts, by
        default ``config.TRAIN.held_out_fraction``, for data of at least ``held_out_min_rows`` rows); the bundled demo
        held-out pairs only when the data is the demo training set. Raises ServiceInputError (unusable data),
        jobs.AdapterNameError, data.TrainingInputError or jobs.QueueFull, each with a message for people. Returns the
        job and notes on what was done to the data.
        """
        label, frame, heldout, measured_on, notes = self._training_rows(report, train_config, heldout_fraction,
                                                                        data_label)
        extra = {
            "data_file": label,
            "data_sha256": report.sha256,
            "data_rows": {"total": report.rows_total, "usable": report.rows_usable, "trained": len(frame)},
            "data_notes": notes,
            "heldout_source": measured_on,
            "started_from": "playground UI" if owner and owner != "api" else "playground API",
        }
        prompts = [p for p in (probe_prompts or []) if isinstance(p, str) and p.strip()] or None
        job = self.queue.submit(frame, train_config, name, heldout=heldout, extra_meta=extra, owner=owner,
                                probe_prompts=prompts)
        return job, notes + self._room_for_job(job)

    def _training_rows(self, report: FeedbackReport | None, train_config: config.TrainConfig,
                       heldout_fraction: float | None, data_label: str | None):
        """(label, training frame, held-out pairs, what they are, notes) of a report, as a training gets them;
        ServiceInputError when the data cannot be trained on or no row of the method is left."""
        if report is None or not report.trainable:
            raise ServiceInputError("The data cannot be trained on: " + (unusable_message(report) if report else
                                                                         "load a file first."))
        label = data_label or report.filename or "uploaded feedback"
        rows, heldout, measured_on, notes = self._heldout_split(report, label, train_config, heldout_fraction)
        frame, note = frame_for_method(rows, report.format, train_config.method)
        if note:
            notes.append(note)
        if frame.empty:
            raise ServiceInputError(f"No {train_config.method.upper()} training rows are left after conversion. "
                                    + (note or ""))
        return label, frame, heldout, measured_on, notes

    def _room_for_job(self, job: Job) -> list[str]:
        """:meth:`_make_room` for a job just queued; a job whose adapter could not be kept is cancelled at once."""
        try:
            return self._make_room()
        except quotas.QuotaFull:
            self.queue.cancel(job.id)
            raise

    def _make_room(self, extra: int = 0) -> list[str]:
        """Evict the oldest user adapters so that the adapters of the jobs queued or running (which have no folder
        yet), plus ``extra`` more, fit ``config.QUOTAS``; the note that says which went. Raises QuotaFull."""
        pending = {job.name for job in self.queue.jobs.values() if not job.finished and job.kind == "training"}
        room = extra + sum(not (self.queue.adapters_root / name).exists() for name in pending)
        evicted = quotas.make_room_for_adapter(self.engine, self.queue.adapters_root, self.queue.quotas,
                                               room=room, is_busy=pending.__contains__)
        if evicted:
            log.info("evicted user adapters for the quota: %s", evicted)
        note = quotas.eviction_note(evicted, self.queue.quotas)
        return [note] if note else []

    def export_trl(self, report: FeedbackReport, train_config: config.TrainConfig, name: str, *,
                   heldout_fraction: float | None = None, data_label: str | None = None) -> Path:
        """The fine-tune Start would queue, as a zipped TRL + accelerate project (``training.export_trl``): the same
        rows and held-out split, the same settings. Raises ServiceInputError or data.TrainingInputError like
        :meth:`start_training`. One zip per name under the server's zip folder, replaced atomically."""
        label, frame, heldout, measured_on, _notes = self._training_rows(report, train_config, heldout_fraction,
                                                                         data_label)
        validate_train_config(train_config, len(frame))
        return self._trl_zip(f"{name or train_config.method}-trl", frame, train_config, heldout,
                             f"{label} ({measured_on or 'no held-out split'})")

    def export_adapter_trl(self, name: str) -> Path:
        """An adapter already trained (here, shipped, or by the CLI) as a zipped TRL + accelerate project: the rows
        and held-out pairs it was trained and measured on (``export_trl.recorded_training``) and the settings its
        ``meta.json`` records. ServiceInputError when the adapter records no settings or its data is not here."""
        info = self.engine.adapters.get(name)
        if info is None:
            raise ServiceInputError(f"No adapter named {name!r} is attached.")
        settings = info.meta.get("hyperparameters")
        if not isinstance(settings, dict):
            raise ServiceInputError(f"{name} records no training settings (an uploaded or plain PEFT adapter): export "
                                    "from the Fine-tune tab with its data and settings instead.")
        train_config = train_config_from_json(settings)
        try:
            frame, heldout, source = recorded_training(info.path, info.meta, (DATA_DIR, self.data_dir), HELDOUT_FILE)
        except ValueError as exc:
            raise ServiceInputError(str(exc)) from None
        return self._trl_zip(f"{name}-trl", frame, train_config, heldout, source)

    def _trl_zip(self, stem: str, frame: pd.DataFrame, train_config: config.TrainConfig,
                 heldout: pd.DataFrame | None, source: str) -> Path:
        """Write the TRL project into a scratch folder and zip it to ``<zips>/<stem>.zip`` (replaced atomically)."""
        folder = self._zips_folder()
        with tempfile.TemporaryDirectory(dir=folder, prefix=".export-") as scratch:
            write_trl_project(Path(scratch) / stem, frame, train_config, self.engine.base_id, heldout=heldout,
                              source=source)
            built = zip_project(Path(scratch) / stem, Path(scratch) / f"{stem}.zip")
            target = folder / f"{stem}.zip"
            os.replace(built, target)
        return target

    def _zips_folder(self) -> Path:
        folder = Path(tempfile.gettempdir()) / "dpo-kto-playground-zips" / self._server_key()
        folder.mkdir(parents=True, exist_ok=True)
        return folder

    def restart_training(self, job_id: str, owner: str) -> tuple[Job, list[str]]:
        """Queue an interrupted or failed job of ``owner`` again, as it was (``TrainingQueue.restart``)."""
        job = self.queue.get(job_id)
        if job is None or job.owner != owner:
            raise ServiceInputError("No training of yours to restart.")
        try:
            restarted = self.queue.restart(job_id, owner)
        except ValueError as exc:
            raise ServiceInputError(str(exc)) from None
        return restarted, self._room_for_job(restarted)

    def _heldout_split(self, report: FeedbackReport, label: str, train_config: config.TrainConfig,
                       fraction: float | None) -> tuple[pd.DataFrame, pd.DataFrame | None, str, list[str]]:
        """(training rows, held-out pairs or None, what the held-out metrics are measured on, notes)."""
        demo = None
        if self._is_demo_training_data(report) and self.heldout_pairs is not None:
            demo = (self.heldout_pairs, self.heldout_source)
        try:
            return choose_heldout(report, label, train_config, fraction, demo)
        except ValueError as exc:
            raise ServiceInputError(str(exc)) from None

    def _is_demo_training_data(self, report: FeedbackReport) -> bool:
        return bool(report.sha256) and report.sha256 in _demo_training_hashes()

    def exports_folder(self, session_id: str) -> Path:
        """Where a session's vote exports are written (the system temp dir, which Gradio may serve). The session id
        is checked here too, so no id can name a folder outside the exports root."""
        if not valid_session_id(session_id):
            raise ServiceInputError("No valid session id: reload the page to start a session.")
        return Path(tempfile.gettempdir()) / "dpo-kto-playground-exports" / self._server_key() / session_id

    def vote_exports(self, session_id: str) -> dict[str, Path]:
        """The session's votes written as ``votes_paired.csv`` and ``votes_unpaired.csv``; paths by format.
        Reading and writing happen under one lock, so concurrent votes never leave an older export on disk."""
        folder = self.exports_folder(session_id)
        age = config.QUOTAS.upload_cache_seconds
        with self._exports_lock:
            if time.monotonic() - self._exports_swept > age / 10:  # every vote exports: sweep now and then only
                _remove_older_siblings(folder, age)  # other sessions' abandoned exports
                self._exports_swept = time.monotonic()
            return write_exports(self.votes_for(session_id), folder)

    def votes_report(self, session_id: str, method: str) -> tuple[FeedbackReport, Path]:
        """The session's votes exported in the format ``method`` trains on (DPO: pairs, KTO: labelled answers) and
        read back through the same validation as an upload. Returns (report, path of the CSV)."""
        path = self.vote_exports(session_id)[config.METHOD_FORMATS[method]]
        return read_feedback(path), path

    def job_view(self, job_id: str | None, owner: str | None = None) -> dict[str, Any] | None:
        """A JSON-friendly progress view of one job (None when unknown, or when ``owner`` is given and did not start
        it): status, phase, steps, ETA, queue position, the history, the last per-sample terms and the held-out
        metrics once done."""
        job = self.queue.get(job_id) if job_id else None
        if job is None or (owner is not None and job.owner != owner):
            return None
        snap = job.snapshot()
        last = snap["history"][-1] if snap["history"] else {}
        steps_done = int(last.get("step", 0)) if last else 0
        total = max(1, int(job.total_steps))
        return {
            "job_id": job.id,
            "name": job.name,
            "method": job.method,
            "status": job.status,
            "phase": job.phase,
            "error": job.error,
            "position": self.queue.position(job.id),
            "steps_done": steps_done,
            "total_steps": total,
            "progress": min(1.0, steps_done / total),
            "eta_s": finite_or_none(last.get("eta_s")) if job.status == "running" else None,
            "elapsed_s": finite_or_none(last.get("elapsed_s")),
            "last": {k: finite_or_none(v) for k, v in last.items()},
            "history": [{k: finite_or_none(v) for k, v in row.items()} for row in snap["history"]],
            "heldout_metrics": (job.meta or {}).get("heldout_metrics") or {},
            "heldout_source": (job.meta or {}).get("heldout_source") or "",
            "evaluations": [{k: finite_or_none(v) if isinstance(v, float) else v for k, v in e.items()}
                            for e in snap["evaluations"]],
            "probes": list(snap["probes"]),
            "stop": snap.get("stop"),
            "kept_step": (job.meta or {}).get("kept_step"),  # the best held-out step, put back at the end (or None)
            "drift_budget": ((snap.get("settings") or {}).get("early_stopping") or {}).get("drift_budget") or 0.0,
            "answers_eval": json_safe((job.meta or {}).get("answers_eval") or {}),
            "seconds": (job.meta or {}).get("seconds") or {},  # where the run's time went (once done)
            "adapter_attached": job.name in self.engine.adapters and job.status == "done",
            "owner": job.owner,
        }

    def latest_job_for(self, owner: str, kind: str = "training") -> Job | None:
        """The newest job of ``kind`` a session started (to re-attach after a page refresh)."""
        mine = [job for job in self.queue.jobs.values() if job.owner == owner and job.kind == kind]
        return max(mine, key=lambda job: job.created) if mine else None

    # ----------------------------------------------------------------------------------------------------------------
    # Claims: one claim of the source material measured again on this server (serving.claims)

    @property
    def claims_rerun_file(self) -> Path:
        return Path(self.data_dir) / claims.RERUN_FILE

    def start_claim_rerun(self, claim: str, owner: str) -> Job:
        """Queue a re-run of ``claim`` for ``owner``; raises ServiceInputError (an unknown claim, or ZeroGPU) or
        QueueFull."""
        if zerogpu.on_zerogpu():
            raise ServiceInputError("A claim's re-run trains several models in a row, longer than one ZeroGPU call "
                                    "may last: run the command under the claim on a machine of your own.")
        try:
            task = claims.claim_rerun(self.engine, claim, self.claims_rerun_file, self.claims_sweep)
        except ValueError as exc:
            raise ServiceInputError(str(exc)) from None
        return self.queue.submit_task(f"claims-{claim}", "experiment", task, total_steps=task.total_steps,
                                      owner=owner, settings={"claim": claim, "size": task.size,
                                                             **dataclasses.asdict(task.sweep)})

    def claim_rerun_view(self, job_id: str | None, owner: str | None) -> dict[str, Any] | None:
        """Progress of ``owner``'s re-run ``job_id`` (``serving.claims.rerun_view``); None for any other job."""
        job = self.queue.get(job_id) if job_id else None
        if job is None or job.kind != "experiment" or (owner is not None and job.owner != owner):
            return None
        return claims.rerun_view(job, self.queue.position(job.id))

    def zip_adapter(self, name: str) -> Path:
        """The adapter folder as ``<name>.zip`` (regular files only, no links, not the pin file), in one folder per
        server under the system temp dir: one zip per adapter name, replaced atomically, so downloads never pile
        up on disk."""
        info = self.engine.adapters.get(name)
        if info is None:
            raise ServiceInputError(f"No adapter named {name!r} is attached.")
        folder = self._zips_folder()
        fd, tmp_name = tempfile.mkstemp(dir=folder, prefix=f".{name}.", suffix=".tmp")
        os.close(fd)
        try:
            with zipfile.ZipFile(tmp_name, "w", compression=zipfile.ZIP_DEFLATED) as archive:
                for path in sorted(Path(info.path).rglob("*")):
                    if path.is_file() and not path.is_symlink() and path.name != config.QUOTAS.pin_file:
                        archive.write(path, arcname=f"{name}/{path.relative_to(info.path)}")
            target = folder / f"{name}.zip"
            os.replace(tmp_name, target)
            return target
        except BaseException:
            Path(tmp_name).unlink(missing_ok=True)
            raise

    def _server_key(self) -> str:
        """A short name for this server's data directory, to keep its temp files apart from another server's."""
        return sha256_bytes(str(self.data_dir.resolve()).encode())[:10]

    def add_uploaded_adapter(self, upload: str | Path, name: str) -> tuple[str, list[str]]:
        """Attach an adapter uploaded as a zip of a PEFT LoRA folder (this playground's, or TRL's without meta.json):
        safetensors weights only, checked against the loaded base by shape, kept within ``config.QUOTAS``. Returns
        (the adapter's name, notes). Raises ServiceInputError (or jobs.AdapterNameError) saying what is wrong."""
        name = sanitise_adapter_name(name, self.queue.taken_names())
        root = self.queue.adapters_root
        scratch = temporary_sibling(root / name)
        try:
            _extract_adapter_zip(Path(upload), scratch)
            meta = {**validate_adapter_dir(scratch), "name": name, "uploaded": True}
            self.engine.check_base_match(AdapterInfo(name, scratch, meta, "user"))
            notes = self._make_room(extra=1)  # only once it is known to attach: a refused zip evicts nothing
            final = replace_directory(scratch, root / name)
            try:
                self.engine.attach(AdapterInfo(name, final, meta, "user"))
            except AdapterError:
                shutil.rmtree(final, ignore_errors=True)
                raise
        except AdapterError as exc:
            raise ServiceInputError(f"The adapter was not added: {exc}") from None
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
        return name, notes

    def suggest_adapter_name(self, method: str) -> str:
        taken = self.queue.taken_names()
        for index in range(1, 1000):
            candidate = f"my-{method}-{index}"
            if candidate not in taken:
                return candidate
        return f"my-{method}-{secrets.token_hex(3)}"

    # ----------------------------------------------------------------------------------------------------------------
    # Learn

    def step_times(self) -> list[dict[str, Any]]:
        """Measured seconds per optimizer step, per method and device, from adapters' meta and this server's jobs.

        One record per training: ``method``, ``device``, ``seconds_per_step``, ``steps``, ``name``, ``this_device``.
        """
        here = self.engine.device.describe()
        records: dict[str, dict[str, Any]] = {}
        for info in self.engine.adapters.values():
            meta = info.meta or {}
            # the optimiser steps alone where the run recorded them (held-out evaluations and probes excluded)
            steps = meta.get("steps_done")
            seconds = finite_or_none((meta.get("seconds") or {}).get("steps") or meta.get("training_seconds"))
            if steps and seconds:
                records[info.name] = {"name": info.name, "method": str(meta.get("method", "?")),
                                      "device": str(meta.get("device", "?")), "steps": int(steps),
                                      "seconds_per_step": seconds / int(steps)}
        for job in list(self.queue.jobs.values()):
            if job.name in records or not job.history:
                continue
            last = job.history[-1]
            elapsed, step = finite_or_none(last.get("elapsed_s")), last.get("step")
            if elapsed and step:
                records[job.name] = {"name": job.name, "method": job.method,
                                     "device": str((job.meta or {}).get("device") or here), "steps": int(step),
                                     "seconds_per_step": elapsed / int(step)}
        for record in records.values():
            record["this_device"] = record["device"] == here
        return sorted(records.values(), key=lambda r: (not r["this_device"], r["method"], r["name"]))

    # ----------------------------------------------------------------------------------------------------------------
    # Runs: an adapter merged into the base, for serving with other engines

    def merged_checkpoint(self, name: str) -> Path:
        """The adapter ``name`` merged into a fresh copy of the base (``training.merge``: a full safetensors
        checkpoint with the tokenizer, generation config and a model card) as ``<name>-merged.zip`` in the server's
        zip folder: one per adapter name, replaced atomically; one merge at a time (each holds a copy of the base).
        """
        info = self.engine.adapters.get(name)
        if info is None:
            raise ServiceInputError(f"No adapter named {name!r} is attached.")
        folder = self._zips_folder()
        stem = f"{name}-merged"
        with merge.MERGE_LOCK, tempfile.TemporaryDirectory(dir=folder, prefix=".merge-") as scratch:
            checkpoint = merge.write_merged_checkpoint(
                self.engine.fresh_base(), self.engine.tokenizer, Path(info.path), Path(scratch) / stem,
                base_id=self.engine.base_id, base_fingerprint=self.engine.base_fingerprint, name=name,
                weights_origin=weights_origin(self.engine.source))
            built = merge.zip_checkpoint(checkpoint, Path(scratch) / f"{stem}.zip")
            target = folder / f"{stem}.zip"
            os.replace(built, target)
        return target


ADAPTER_ZIP_FILES = frozenset({"adapter_config.json", "adapter_model.safetensors", "meta.json", "README.md"})
ADAPTER_ZIP_MAX_BYTES = 1 << 30  # uncompressed: a LoRA of a 7B model at r=64 is about 0.3 GB


def _extract_adapter_zip(upload: Path, folder: Path) -> None:
    """The adapter files of a zip (at its top or in one folder) into ``folder``; anything else is refused by name:
    pickles, paths that leave the folder, other files, more than ``ADAPTER_ZIP_MAX_BYTES`` uncompressed."""
    try:
        archive = zipfile.ZipFile(upload)
    except (zipfile.BadZipFile, OSError) as exc:
        raise AdapterError(f"{upload.name} is not a readable zip file ({exc}).") from None
    with archive:
        members = [m for m in archive.infolist() if not m.is_dir()]
        names = {Path(m.filename).name for m in members}
        unsafe = [m.filename for m in members if m.filename.startswith("/") or ".." in Path(m.filename).parts]
        extra = sorted(names - ADAPTER_ZIP_FILES)
        if unsafe:
            raise AdapterError(f"the zip holds paths outside its folder ({unsafe[:3]}).")
        if extra:
            raise AdapterError(f"the zip holds {extra[:5]}; an adapter zip holds only {sorted(ADAPTER_ZIP_FILES)} "
                               "(safetensors weights: re-save with safe_serialization=True, leave out "
                               "training_args.bin and the tokenizer).")
        if len({str(Path(m.filename).parent) for m in members}) > 1 or len(names) != len(members):
            raise AdapterError("the zip holds more than one folder; zip one adapter folder.")
        if sum(m.file_size for m in members) > ADAPTER_ZIP_MAX_BYTES:
            raise AdapterError(f"the zip unpacks to more than {ADAPTER_ZIP_MAX_BYTES >> 20} MiB.")
        for member in members:
            with archive.open(member) as source, open(folder / Path(member.filename).name, "wb") as target:
                shutil.copyfileobj(source, target)


def _remove_older_siblings(folder: Path, seconds: float) -> None:
    """Delete the folders next to ``folder`` untouched for ``seconds`` (each session's exports are rewritten on
    every export, so only abandoned ones age)."""
    if not folder.parent.is_dir():
        return
    cutoff = time.time() - seconds
    for sibling in folder.parent.iterdir():
        try:
            if sibling != folder and sibling.is_dir() and sibling.stat().st_mtime < cutoff:
                shutil.rmtree(sibling, ignore_errors=True)
        except OSError:
            continue


def unusable_message(report: FeedbackReport) -> str:
    """Why a file cannot be used: its whole report, the same words the Fine-tune tab, the CLI and the API show."""
    return "The file cannot be used.\n" + report.summary()


@lru_cache(maxsize=1)
def _demo_training_hashes() -> frozenset[str]:
    """SHA-256 of the demo training files (``data/demo_*_train.csv``), to recognise a run on the demo data."""
    return frozenset(sha256_file(p) for p in DEMO_TRAINING_FILES if p.is_file())


def _example_prompts(heldout: pd.DataFrame | None) -> list[str]:
    prompts: list[str] = []
    if heldout is not None:
        prompts = [p for p in dict.fromkeys(heldout["prompt"]) if isinstance(p, str)]
    if not prompts:
        prompts = list(BUILTIN_PROMPTS)
    return prompts[: config.APP.example_prompts]


def _session_secret(data_dir: Path) -> str:
    """The per-server secret that encrypts the session id in the browser; kept in the data dir so a restart keeps
    every browser's session (and so its votes and its training job). Readable by its owner only."""
    path = Path(data_dir) / ".session_secret"
    try:
        secret = path.read_text(encoding="utf-8").strip()
        if len(secret) >= 16:
            return secret
    except OSError:
        pass
    secret = secrets.token_urlsafe(24)
    atomic_write_text(path, secret, mode=0o600)
    return secret
