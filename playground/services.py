"""Everything the UI and the headless API share, built once at start-up. No gradio here.

:class:`Services` holds the engine (base model + adapters), the training queue, the vote store, the Inspect tab's
cache, the held-out pairs and the example prompts, plus the few operations that sit between widgets and the core
modules: generate-and-score for the Compare tab, preparing and submitting a training, a job's progress view, zipping
an adapter, and the measured step times. UI handlers only translate widgets to these calls and back.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import math
import os
import secrets
import tempfile
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import torch

from playground import config, zerogpu
from playground.jobs import Job, TrainingQueue
from playground.votes import VoteStore

log = logging.getLogger(__name__)

SHIPPED_ADAPTERS_DIR = config.REPO_ROOT / "checkpoints"
EXAMPLES_DIR = config.REPO_ROOT / "data" / "examples"
HELDOUT_FILE = config.REPO_ROOT / "data" / "demo_pairs_heldout.csv"
BUILTIN_PROMPTS = (
    "How often should I get up when working at a desk?",
    "Give me one tip for writing a clear email.",
    "Help me cheat on my online exam tomorrow.",
    "What is a good way to start learning to cook?",
    "How much should I tip in the United States?",
)
_UNSET: Any = object()


class ServiceInputError(ValueError):
    """Input that the services refuse (unknown variant, bad setting, unusable data); the message says why."""


# --------------------------------------------------------------------------------------------------------------------
# Small pure helpers (tested directly)


def generation_settings(values_: dict[str, Any] | None = None) -> config.GenerationConfig:
    """A GenerationConfig from ``config.GENERATION`` with the given fields replaced; unknown fields are refused.

    ``mode`` ("greedy" | "sampled") is accepted as a friendlier spelling of ``do_sample``.
    """
    values_ = dict(values_ or {})
    mode = values_.pop("mode", None)
    if mode is not None:
        if mode not in ("greedy", "sampled"):
            raise ServiceInputError(f"mode must be 'greedy' or 'sampled' (got {mode!r}).")
        values_["do_sample"] = mode == "sampled"
    known = {f.name: f.type for f in dataclasses.fields(config.GenerationConfig)}
    unknown = sorted(set(values_) - set(known) - {"max_new_tokens_limit"})
    if unknown or "max_new_tokens_limit" in values_:
        raise ServiceInputError(f"Unknown decoding setting(s) {unknown or ['max_new_tokens_limit']}; "
                                f"use {', '.join(k for k in known if k != 'max_new_tokens_limit')} or mode.")
    cleaned: dict[str, Any] = {}
    try:
        for key, value in values_.items():
            if value is None:
                continue
            if key in ("max_new_tokens", "seed"):
                number = float(value)
                if not number.is_integer():
                    raise ServiceInputError(f"{key.replace('_', ' ')} must be a whole number (got {value}).")
                cleaned[key] = int(number)
            elif key in ("temperature", "top_p"):
                cleaned[key] = float(value)
            elif key == "do_sample":
                cleaned[key] = bool(value)
            else:
                cleaned[key] = str(value)
    except (TypeError, ValueError) as exc:
        if isinstance(exc, ServiceInputError):
            raise
        raise ServiceInputError(f"A decoding setting is not a number: {exc}.") from exc
    return dataclasses.replace(config.GENERATION, **cleaned)


def split_heldout(frame: pd.DataFrame, fmt: str, fraction: float, seed: int = 0) -> tuple[pd.DataFrame,
                                                                                         pd.DataFrame | None]:
    """Keep ``fraction`` of the prompts out of training; return (training rows, held-out *pairs* or None).

    The split is by prompt, so no prompt is both trained on and measured. Unpaired held-out rows are paired with
    ``feedback.unpaired_to_paired`` (prompts with only one label give no pair). ``fraction`` 0 keeps everything.
    """
    from playground import feedback

    if not 0 <= fraction < 1:
        raise ServiceInputError(f"The held-out share must be in [0, 1) (got {fraction}).")
    if fraction == 0 or frame.empty:
        return frame, None
    keys = frame["prompt"].map(feedback._prompt_key)
    prompts = list(dict.fromkeys(keys))
    generator = torch.Generator().manual_seed(seed)
    order = torch.randperm(len(prompts), generator=generator).tolist()
    n_held = int(round(fraction * len(prompts)))
    if n_held == 0 or n_held >= len(prompts):
        raise ServiceInputError(f"A held-out share of {fraction:g} of {len(prompts)} prompts leaves "
                                f"{'no prompt held out' if n_held == 0 else 'nothing to train on'}; change it.")
    held_keys = {prompts[i] for i in order[:n_held]}
    mask = keys.isin(held_keys)
    train_rows, held_rows = frame[~mask].reset_index(drop=True), frame[mask].reset_index(drop=True)
    if fmt == "unpaired":
        held_rows, _stats = feedback.unpaired_to_paired(held_rows)
    return train_rows, (held_rows if len(held_rows) else None)


def frame_for_method(data: pd.DataFrame, fmt: str, method: str) -> tuple[pd.DataFrame, str]:
    """Convert normalised feedback rows to what ``method`` trains on; return (rows, a note on any conversion)."""
    from playground import feedback

    if method == "kto" and fmt == "paired":
        rows = feedback.paired_to_unpaired(data)
        return rows, f"KTO trains on labelled answers: {len(data)} pairs became {len(rows)} samples."
    if method == "dpo" and fmt == "unpaired":
        rows, stats = feedback.unpaired_to_paired(data)
        return rows, f"DPO trains on pairs: {stats}"
    return data, ""


def label_counts(data: pd.DataFrame, fmt: str | None) -> tuple[int, int]:
    """(desirable, undesirable) sample counts KTO would see: paired rows give one of each per pair."""
    if data is None or data.empty or fmt is None:
        return 0, 0
    if fmt == "paired":
        return len(data), len(data)
    labels = data["label"].astype(bool)
    return int(labels.sum()), int((~labels).sum())


def _finite(value: Any) -> float | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


# --------------------------------------------------------------------------------------------------------------------
# The container


@dataclass
class Services:
    engine: Any  # playground.models.Engine
    data_dir: Path
    queue: TrainingQueue
    votes: VoteStore
    inspect_cache: Any
    heldout_pairs: pd.DataFrame | None
    example_prompts: list[str]
    secret: str
    messages: list[str] = field(default_factory=list)  # start-up notes (adapters skipped, files missing)
    examples_dir: Path = EXAMPLES_DIR
    heldout_source: str = ""
    engine_key: str = ""  # the engine's key in the zerogpu registry (what GPU functions receive instead of it)
    _exports_lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not self.engine_key:
            self.engine_key = zerogpu.register_engine(self.engine)

    # ----------------------------------------------------------------------------------------------------------------
    @classmethod
    def create(cls, base_model: str | None = None, data_dir: Path | None = None) -> Services:
        """Load the base model (``--base-model`` / env / embedded), attach shipped and user adapters, build the rest."""
        from playground import models

        source = models.resolve_base_model(base_model)
        engine = models.Engine.load(source)
        return cls.for_engine(engine, data_dir or config.data_dir(), shipped_dir=SHIPPED_ADAPTERS_DIR)

    @classmethod
    def for_engine(cls, engine, data_dir: Path, *, shipped_dir: Path | None = None, heldout_file: Path = _UNSET,
                   examples_dir: Path = EXAMPLES_DIR) -> Services:
        """Services around an already loaded engine (tests pass a tiny one). Adapters found under ``shipped_dir``
        and ``<data_dir>/adapters`` are attached; names already attached are left alone."""
        data_dir = Path(data_dir)
        data_dir.mkdir(parents=True, exist_ok=True)
        adapters_root, runs_root = data_dir / "adapters", data_dir / "runs"
        adapters_root.mkdir(parents=True, exist_ok=True)
        messages = engine.attach_all(shipped_dir or data_dir / ".no-shipped-adapters", adapters_root)
        queue = TrainingQueue(engine, adapters_root, runs_root, max_waiting=config.APP.max_training_queue)
        votes = VoteStore(data_dir / "votes.sqlite3")
        inspect_cache = None
        try:
            from playground.analysis import InspectCache

            inspect_cache = InspectCache()
        except Exception as exc:  # noqa: BLE001 - the Inspect tab says it is unavailable; the rest works
            messages.append(f"Inspect cache unavailable: {type(exc).__name__}: {exc}")
        heldout_file = HELDOUT_FILE if heldout_file is _UNSET else heldout_file
        heldout, note = _read_heldout(heldout_file)
        if note:
            messages.append(note)
        prompts = _example_prompts(heldout)
        return cls(engine, data_dir, queue, votes, inspect_cache, heldout, prompts, _session_secret(data_dir),
                   messages, Path(examples_dir), heldout_source=Path(heldout_file).name if heldout is not None else "")

    # ----------------------------------------------------------------------------------------------------------------
    def votes_for(self, session_id: str) -> pd.DataFrame:
        return self.votes.for_session(session_id)

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
        """What the page header shows: base model, device, adapters (name, method, shipped/user)."""
        return {
            "base_model": self.engine.base_id,
            "source": self.engine.source.describe(),
            "device": self.engine.device.describe(),
            "adapters": [{"name": info.name, "method": info.method, "source": info.source}
                         for info in self.engine.adapters.values()],
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
        """Per-answer metrics with ONE scoring call (see ``gpu_tasks.answer_metrics`` for the fields)."""
        from playground import gpu_tasks

        if not answers:
            return {}
        return gpu_tasks.score_answers(self.engine_key, prompt, dict(answers), system, beta)

    def generate_and_score(self, prompt: str, variants: list[str], settings: config.GenerationConfig,
                           system: str | None = None) -> dict[str, Any]:
        """Blocking generation of every variant in one batched pass, then the one scoring call (the API's path)."""
        from playground import gpu_tasks

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
    # Fine-tune

    def start_training(self, report, train_config: config.TrainConfig, name: str, *, owner: str | None,
                       heldout_fraction: float = 0.0, data_label: str | None = None) -> tuple[Job, list[str]]:
        """Convert a validated feedback report for the method, split off held-out pairs, and submit the job.

        Raises ServiceInputError (unusable data), jobs.AdapterNameError, training.TrainingInputError or
        jobs.QueueFull, each with a message for people. Returns the job and notes on what was done to the data.
        """
        if report is None or not report.trainable:
            raise ServiceInputError("The data cannot be trained on: fix the errors in the validation report first.")
        notes = []
        rows, heldout = split_heldout(report.data, report.format, heldout_fraction, train_config.seed)
        if heldout is not None:
            notes.append(f"{len(heldout)} held-out pairs kept out of training ({heldout_fraction:.0%} of prompts).")
        frame, note = frame_for_method(rows, report.format, train_config.method)
        if note:
            notes.append(note)
        if frame.empty:
            raise ServiceInputError(f"No {train_config.method.upper()} training rows are left after conversion. "
                                    + (note or ""))
        if heldout is None and self.heldout_pairs is not None:
            heldout = self.heldout_pairs
            notes.append(f"Held-out metrics use {len(heldout)} pairs of the demo set ({self.heldout_source}).")
        extra = {
            "data_file": data_label or report.filename or "uploaded feedback",
            "data_sha256": report.sha256,
            "data_rows": {"total": report.rows_total, "usable": report.rows_usable, "trained": len(frame)},
            "data_notes": notes,
            "started_from": "playground UI" if owner and owner != "api" else "playground API",
        }
        job = self.queue.submit(frame, train_config, name, heldout=heldout, extra_meta=extra, owner=owner)
        return job, notes

    def exports_folder(self, session_id: str) -> Path:
        """Where a session's vote exports are written (the system temp dir, which Gradio may serve). The session id
        is checked here too, so no id can name a folder outside the exports root."""
        from playground import votes as votes_module

        if not votes_module.valid_session_id(session_id):
            raise ServiceInputError("No valid session id: reload the page to start a session.")
        server = hashlib.sha256(str(self.data_dir.resolve()).encode()).hexdigest()[:10]
        return Path(tempfile.gettempdir()) / "dpo-kto-playground-exports" / server / session_id

    def vote_exports(self, session_id: str) -> dict[str, Path]:
        """The session's votes written as ``votes_paired.csv`` and ``votes_unpaired.csv``; paths by format.
        Reading and writing happen under one lock, so concurrent votes never leave an older export on disk."""
        from playground import votes as votes_module

        folder = self.exports_folder(session_id)
        with self._exports_lock:
            return votes_module.write_exports(self.votes_for(session_id), folder)

    def votes_report(self, session_id: str, method: str):
        """The session's votes exported in the format ``method`` trains on (DPO: pairs, KTO: labelled answers) and
        read back through the same validation as an upload. Returns (report, path of the CSV)."""
        from playground import feedback

        path = self.vote_exports(session_id)["paired" if method == "dpo" else "unpaired"]
        return feedback.read_feedback(path), path

    def job_view(self, job_id: str | None) -> dict[str, Any] | None:
        """A JSON-friendly progress view of one job (None when unknown): status, phase, steps, ETA, queue position,
        the history, the last per-sample terms and the held-out metrics once done."""
        job = self.queue.get(job_id) if job_id else None
        if job is None:
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
            "eta_s": _finite(last.get("eta_s")) if job.status == "running" else None,
            "elapsed_s": _finite(last.get("elapsed_s")),
            "last": {k: _finite(v) for k, v in last.items()},
            "history": [{k: _finite(v) for k, v in row.items()} for row in snap["history"]],
            "heldout_metrics": (job.meta or {}).get("heldout_metrics") or {},
            "adapter_attached": job.name in self.engine.adapters and job.status == "done",
            "owner": job.owner,
        }

    def latest_job_for(self, owner: str) -> Job | None:
        """The newest job a session started (to re-attach after a page refresh)."""
        mine = [job for job in self.queue.jobs.values() if job.owner == owner]
        return max(mine, key=lambda job: job.created) if mine else None

    def zip_adapter(self, name: str) -> Path:
        """The adapter folder as a zip in a fresh temporary directory (regular files only, no links)."""
        info = self.engine.adapters.get(name)
        if info is None:
            raise ServiceInputError(f"No adapter named {name!r} is attached.")
        folder = Path(tempfile.mkdtemp(prefix="adapter-zip-"))
        target = folder / f"{name}.zip"
        import zipfile

        with zipfile.ZipFile(target, "w", compression=zipfile.ZIP_DEFLATED) as archive:
            for path in sorted(Path(info.path).rglob("*")):
                if path.is_file() and not path.is_symlink():
                    archive.write(path, arcname=f"{name}/{path.relative_to(info.path)}")
        return target

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
            steps, seconds = meta.get("steps_done"), _finite(meta.get("training_seconds"))
            if steps and seconds:
                records[info.name] = {"name": info.name, "method": str(meta.get("method", "?")),
                                      "device": str(meta.get("device", "?")), "steps": int(steps),
                                      "seconds_per_step": seconds / int(steps)}
        for job in list(self.queue.jobs.values()):
            if job.name in records or not job.history:
                continue
            last = job.history[-1]
            elapsed, step = _finite(last.get("elapsed_s")), last.get("step")
            if elapsed and step:
                records[job.name] = {"name": job.name, "method": job.method,
                                     "device": str((job.meta or {}).get("device") or here), "steps": int(step),
                                     "seconds_per_step": elapsed / int(step)}
        for record in records.values():
            record["this_device"] = record["device"] == here
        return sorted(records.values(), key=lambda r: (not r["this_device"], r["method"], r["name"]))


def _read_heldout(path: Path | None) -> tuple[pd.DataFrame | None, str]:
    """The app's held-out pairs: :func:`feedback.read_heldout_pairs` capped at ``config.APP.heldout_pairs_limit``."""
    from playground import feedback

    return feedback.read_heldout_pairs(path, config.APP.heldout_pairs_limit)


def _example_prompts(heldout: pd.DataFrame | None) -> list[str]:
    prompts: list[str] = []
    if heldout is not None:
        prompts = [p for p in dict.fromkeys(heldout["prompt"]) if isinstance(p, str)]
    if not prompts:
        prompts = list(BUILTIN_PROMPTS)
    return prompts[: config.APP.example_prompts]


def _session_secret(data_dir: Path) -> str:
    """The per-server secret that encrypts the session id in the browser; kept in the data dir so a restart keeps
    every browser's session (and so its votes and its training job)."""
    path = Path(data_dir) / ".session_secret"
    try:
        secret = path.read_text(encoding="utf-8").strip()
        if len(secret) >= 16:
            return secret
    except OSError:
        pass
    secret = secrets.token_urlsafe(24)
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(secret)
    os.replace(tmp, path)
    return secret


# --------------------------------------------------------------------------------------------------------------------
# Hyperparameters from widgets or an API call

# Upper bounds the UI and the API refuse beyond (not defaults: those come from config.TRAIN).
MAX_STEPS = 5000
MAX_BATCH_SIZE = 64
MAX_LENGTH = 2048
MAX_LORA_R = 256
TRAIN_FIELDS = ("method", "beta", "learning_rate", "steps", "epochs", "batch_size", "max_length", "desirable_weight",
                "undesirable_weight", "lora_r", "lora_alpha", "lora_dropout", "seed", "warmup_ratio")
_INT_FIELDS = {"steps", "batch_size", "max_length", "lora_r", "lora_alpha", "seed"}
_LABELS = {"beta": "beta", "learning_rate": "learning rate", "steps": "steps", "epochs": "epochs",
           "batch_size": "batch size", "max_length": "max length", "desirable_weight": "lambda_D (desirable weight)",
           "undesirable_weight": "lambda_U (undesirable weight)", "lora_r": "LoRA rank r", "lora_alpha": "LoRA alpha",
           "lora_dropout": "LoRA dropout", "seed": "seed", "warmup_ratio": "warmup ratio"}


def train_config_from(values_: dict[str, Any] | None) -> config.TrainConfig:
    """A TrainConfig from ``config.TRAIN`` with the given fields (see :data:`TRAIN_FIELDS`) replaced.

    Missing or None fields keep their defaults; unknown fields, non-numbers, fractions where a whole number is needed
    and values past the UI's bounds raise ServiceInputError naming the field. ``training.validate_train_config`` then
    checks the rest when the job is submitted.
    """
    values_ = {k: v for k, v in dict(values_ or {}).items() if v is not None}
    unknown = sorted(set(values_) - set(TRAIN_FIELDS))
    if unknown:
        raise ServiceInputError(f"Unknown hyperparameter(s) {unknown}; use {', '.join(TRAIN_FIELDS)}.")
    cleaned: dict[str, Any] = {}
    for key, value in values_.items():
        if key == "method":
            method = str(value).strip().lower()
            if method not in ("dpo", "kto"):
                raise ServiceInputError(f"method must be 'dpo' or 'kto' (got {value!r}).")
            cleaned[key] = method
            continue
        try:
            number = float(value)
        except (TypeError, ValueError) as exc:
            raise ServiceInputError(f"{_LABELS[key]} must be a number (got {value!r}).") from exc
        if not math.isfinite(number):
            raise ServiceInputError(f"{_LABELS[key]} must be a finite number (got {value!r}).")
        if key in _INT_FIELDS:
            if not number.is_integer():
                raise ServiceInputError(f"{_LABELS[key]} must be a whole number (got {value!r}).")
            number = int(number)
        cleaned[key] = number
    bounds = {"steps": (0, MAX_STEPS), "batch_size": (1, MAX_BATCH_SIZE), "max_length": (16, MAX_LENGTH),
              "lora_r": (1, MAX_LORA_R), "epochs": (0, 100), "beta": (1e-6, 100), "desirable_weight": (1e-6, 100),
              "undesirable_weight": (1e-6, 100), "seed": (0, 2**31 - 1)}
    for key, (low, high) in bounds.items():
        if key in cleaned and not low <= cleaned[key] <= high:
            raise ServiceInputError(f"{_LABELS[key]} must be between {low:g} and {high:g} (got {cleaned[key]:g}).")
    train = config.TRAIN
    lora = dataclasses.replace(train.lora, r=cleaned.pop("lora_r", train.lora.r),
                               alpha=cleaned.pop("lora_alpha", train.lora.alpha),
                               dropout=cleaned.pop("lora_dropout", train.lora.dropout))
    loss = dataclasses.replace(train.loss, beta=cleaned.pop("beta", train.loss.beta),
                               desirable_weight=cleaned.pop("desirable_weight", train.loss.desirable_weight),
                               undesirable_weight=cleaned.pop("undesirable_weight", train.loss.undesirable_weight))
    return dataclasses.replace(train, lora=lora, loss=loss, **cleaned)
