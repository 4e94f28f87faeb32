"""The Inspect engine: score a paired data set once per adapter, then recompute every slider view from the cache.

Two halves, kept apart on purpose (DESIGN.md section 2, rule 3):

* ``score_dataset`` is the one expensive step. For each pair it scores chosen and rejected under every requested
  variant and under the reference (``__base__``), plus KTO's mismatched pairs (x_i, y_j) of the unpaired view, in
  mixed-adapter batches (one row per (response, adapter)), holding ``engine.lock`` per batch only, so generation can
  interleave. Results go into an ``InspectCache`` keyed by (data set hash, variant, base identity, adapter identity),
  and optionally into a JSON file of precomputed numbers for the shipped adapters on the bundled held-out set.
* ``analyse`` is a pure function of those numbers and the widget settings (beta, lambdas, loss variant, V
  construction, tau method, ...). It makes no model call, and for ~1000 pairs it takes milliseconds: the DPO and KTO
  terms come from ``playground.losses``, the V constructions, thresholds and prospect decomposition from
  ``playground.values`` (one implementation per quantity).

The unpaired (KTO) view of a paired data set of P pairs has 2P samples in the order [chosen_0..chosen_{P-1},
rejected_0..rejected_{P-1}]: chosen = desirable, rejected = undesirable. Sample k's mismatched pair is (x_k, y_j) with
j = ``losses.mismatched_pairs(2P)[k]``, so z0 is exactly what ``losses.kto_loss`` computes on that batch.

No gradio here. ``python -m playground.analysis --precompute`` writes the disk cache for the shipped adapters.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import logging
import math
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from playground import config, losses, scoring, values
from playground.config import LOSS, SCORING, VALUES

log = logging.getLogger(__name__)

Progress = Callable[[float, str], None]

REFERENCE = config.BASE_VARIANT  # "__base__": the reference pi_ref, base model with adapters off
DEFAULT_DATASET = config.REPO_ROOT / "data" / "demo_pairs_heldout.csv"
DEFAULT_DISK_CACHE = config.REPO_ROOT / "data" / "inspect_cache_heldout.json"
DISK_CACHE_FORMAT = "playground-inspect-cache"
DISK_CACHE_VERSION = 1
MAX_PAIRS = 1000  # pairs scored per data set; larger uploads are cut (Inspect is for looking, not for training)
SNIPPET_CHARS = 90  # characters of prompt / response shown in tables and hover text
OPTIONAL_COLUMNS = ("system", "reference", "category")


# --------------------------------------------------------------------------------------------------------------------
# Data sets
# --------------------------------------------------------------------------------------------------------------------


def _text(value: Any) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    return str(value)


def _prompt_value(value: Any) -> str | list[dict[str, str]]:
    """A prompt as ``scoring`` takes it: plain text, or a list of chat messages (also given as a JSON string)."""
    if isinstance(value, list):
        return [dict(m) for m in value]
    text = _text(value)
    stripped = text.lstrip()
    if stripped.startswith("["):
        try:
            parsed = json.loads(stripped)
        except json.JSONDecodeError:
            return text
        if isinstance(parsed, list) and parsed and all(isinstance(m, dict) and "content" in m for m in parsed):
            return [{"role": str(m.get("role", "user")), "content": str(m["content"])} for m in parsed]
    return text


def prompt_text(prompt: Any) -> str:
    """A one-line rendering of a prompt for tables: the last user message of a chat, else the text."""
    prompt = _prompt_value(prompt)
    if isinstance(prompt, list):
        users = [m["content"] for m in prompt if m.get("role") == "user"] or [m["content"] for m in prompt]
        return users[-1] if users else ""
    return prompt


def snippet(text: Any, limit: int = SNIPPET_CHARS) -> str:
    flat = " ".join(_text(text).split())
    return flat if len(flat) <= limit else flat[: limit - 1].rstrip() + "…"


def prepare_pairs(df: pd.DataFrame, max_pairs: int = MAX_PAIRS) -> tuple[pd.DataFrame, list[str]]:
    """Normalise a data set for scoring: paired columns prompt, chosen, rejected (+ system, reference, category).

    An unpaired frame (prompt, completion, label) is paired first (``feedback.unpaired_to_paired``: the i-th desirable
    with the i-th undesirable completion of a prompt). Rows with an empty chosen or rejected answer are dropped; more
    than ``max_pairs`` pairs are cut. Returns the frame and notes for the user.
    """
    notes: list[str] = []
    if df is None or len(df) == 0:
        raise ValueError("the data set is empty")
    columns = {str(c).strip().lower(): c for c in df.columns}
    if not {"chosen", "rejected"} <= set(columns) and {"completion", "label"} <= set(columns):
        from playground import feedback

        renamed = df.rename(columns={v: k for k, v in columns.items()})
        df, stats = feedback.unpaired_to_paired(renamed)
        notes.append(f"Unpaired data paired for Inspect: {stats}")
        columns = {str(c).strip().lower(): c for c in df.columns}
    missing = [c for c in ("prompt", "chosen", "rejected") if c not in columns]
    if missing:
        raise ValueError(f"the data set lacks column(s) {missing}: Inspect needs prompt, chosen, rejected "
                         "(or prompt, completion, label)")
    out = pd.DataFrame({
        "prompt": [_prompt_value(v) for v in df[columns["prompt"]]],
        "chosen": [_text(v) for v in df[columns["chosen"]]],
        "rejected": [_text(v) for v in df[columns["rejected"]]],
    })
    for name in OPTIONAL_COLUMNS:
        out[name] = [_text(v) for v in df[columns[name]]] if name in columns else [""] * len(out)
    keep = (out["chosen"].str.strip() != "") & (out["rejected"].str.strip() != "")
    if not keep.all():
        notes.append(f"{int((~keep).sum())} row(s) with an empty answer dropped.")
        out = out[keep]
    if len(out) > max_pairs:
        notes.append(f"Only the first {max_pairs} of {len(out)} pairs are inspected.")
        out = out.iloc[:max_pairs]
    if len(out) == 0:
        raise ValueError("no usable pairs in the data set")
    return out.reset_index(drop=True), notes


def dataset_hash(pairs: pd.DataFrame, max_length: int = SCORING.max_length) -> str:
    """SHA-256 of what scoring reads (prompt, answers, system) plus the truncation length."""
    records = [[r["prompt"], r["chosen"], r["rejected"], r.get("system", "")] for r in pairs.to_dict("records")]
    payload = json.dumps({"max_length": max_length, "rows": records}, ensure_ascii=False, sort_keys=True)
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()


def unpaired_view(pairs: pd.DataFrame) -> tuple[list[Any], list[str], list[str], list[bool]]:
    """(prompts, completions, systems, desirable) of the 2P samples: all chosen (desirable), then all rejected."""
    prompts = list(pairs["prompt"]) * 2
    completions = list(pairs["chosen"]) + list(pairs["rejected"])
    systems = list(pairs["system"]) * 2
    desirable = [True] * len(pairs) + [False] * len(pairs)
    return prompts, completions, systems, desirable


def kl_index(n_pairs: int) -> np.ndarray:
    """For each of the 2P unpaired samples, the index of the completion of its mismatched pair (shift 1)."""
    return losses.mismatched_pairs(2 * n_pairs).numpy()


# --------------------------------------------------------------------------------------------------------------------
# Scores and the cache
# --------------------------------------------------------------------------------------------------------------------


@dataclass
class SideScores:
    """Summed log-probs and token counts of one adapter (or the reference) on one data set of P pairs.

    chosen/rejected arrays are (P,); ``kl_*`` are (2P,), for the mismatched pairs of the unpaired view.
    """

    chosen_sum: np.ndarray
    chosen_len: np.ndarray
    rejected_sum: np.ndarray
    rejected_len: np.ndarray
    kl_sum: np.ndarray
    kl_len: np.ndarray
    truncated: np.ndarray  # (P,) bool: chosen or rejected cut by max_length

    @property
    def chosen_mean(self) -> np.ndarray:
        return self.chosen_sum / np.maximum(self.chosen_len, 1)

    @property
    def rejected_mean(self) -> np.ndarray:
        return self.rejected_sum / np.maximum(self.rejected_len, 1)

    def to_json(self) -> dict[str, list]:
        return {f.name: getattr(self, f.name).tolist() for f in dataclasses.fields(self)}

    @classmethod
    def from_json(cls, data: Mapping[str, Sequence]) -> SideScores:
        kinds = {"chosen_len": np.int64, "rejected_len": np.int64, "kl_len": np.int64, "truncated": bool}
        return cls(**{f.name: np.asarray(data[f.name], dtype=kinds.get(f.name, np.float64))
                      for f in dataclasses.fields(cls)})


@dataclass
class DatasetScores:
    """Everything the Inspect views need from the model for one data set; slider views are functions of this."""

    dataset_hash: str
    pairs: pd.DataFrame  # prompt, chosen, rejected, system, reference, category (see prepare_pairs)
    reference: SideScores  # under pi_ref (the base, adapters off)
    policies: dict[str, SideScores]  # variant name -> scores; "base" is the reference itself
    base_identity: str
    max_length: int = SCORING.max_length
    task: dict[str, dict[str, Any]] = field(default_factory=dict)  # metric -> {"chosen", "rejected", "metrics"}
    notes: list[str] = field(default_factory=list)
    from_disk: bool = False  # True when the numbers came from the precomputed file

    @property
    def n_pairs(self) -> int:
        return len(self.pairs)

    @property
    def variants(self) -> list[str]:
        return list(self.policies)

    def side(self, variant: str) -> SideScores:
        if variant in ("base", REFERENCE):
            return self.reference
        if variant not in self.policies:
            raise KeyError(f"variant {variant!r} was not scored on this data set; scored: {self.variants}")
        return self.policies[variant]

    def task_scores(self, metric: str) -> dict[str, Any]:
        """R_task of chosen and rejected answers for ``metric``, computed once per data set (no slider changes it)."""
        with _TASK_LOCK:
            if metric not in self.task:
                self.task[metric] = compute_task_scores(self.pairs, metric)
            return self.task[metric]


_TASK_LOCK = threading.Lock()


def compute_task_scores(pairs: pd.DataFrame, metric: str) -> dict[str, Any]:
    """Task metric of every chosen and rejected answer against the pair's reference answer (see values)."""
    references = [r or None for r in pairs["reference"]] if "reference" in pairs else None
    n = len(pairs)
    responses = list(pairs["chosen"]) + list(pairs["rejected"])
    refs = (references or [None] * n) * 2
    result = values.task_metric_scores(responses, refs, metric=metric)
    scores = result.scores.double().numpy()
    return {"chosen": scores[:n], "rejected": scores[n:], "metrics": list(result.metrics)}


CacheKey = tuple[str, str, str, str]


class InspectCache:
    """A bounded, thread-safe LRU of per-(data set, adapter) scores: ``InspectCache()`` holds 16 entries.

    Keys are (data set hash, variant, base identity, adapter identity); the adapter identity is its path with the
    weight file's mtime and size, so a retrained adapter under an old name is scored afresh. Task metrics of a data
    set are kept under (hash, "__task__", "", "").
    """

    def __init__(self, max_entries: int = 16):
        if max_entries < 1:
            raise ValueError("max_entries must be >= 1")
        self.max_entries = max_entries
        self._entries: OrderedDict[CacheKey, Any] = OrderedDict()
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    def get(self, key: CacheKey) -> Any | None:
        with self._lock:
            if key in self._entries:
                self._entries.move_to_end(key)
                self.hits += 1
                return self._entries[key]
            self.misses += 1
            return None

    def put(self, key: CacheKey, value: Any) -> None:
        with self._lock:
            self._entries[key] = value
            self._entries.move_to_end(key)
            while len(self._entries) > self.max_entries:
                self._entries.popitem(last=False)

    def __contains__(self, key: object) -> bool:
        with self._lock:
            return key in self._entries

    def __len__(self) -> int:
        with self._lock:
            return len(self._entries)

    def keys(self) -> list[CacheKey]:
        with self._lock:
            return list(self._entries)

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()


def base_identity(engine) -> str:
    """What makes the reference's numbers: model source, name and weight dtype (bf16 scores differ from fp32)."""
    source = engine.source
    return f"{source.kind}:{engine.base_id}:{Path(str(source.name)).name}:{engine.device.weight_dtype}"


def _weights_file(engine, variant: str) -> Path | None:
    info = engine.adapters.get(variant)
    if info is None:
        return None
    path = Path(info.path) / "adapter_model.safetensors"
    return path if path.is_file() else None


def adapter_identity(engine, variant: str) -> str:
    """Path + mtime + size of the adapter's weights ("reference" for the base)."""
    if variant in ("base", REFERENCE):
        return "reference"
    path = _weights_file(engine, variant)
    if path is None:
        return f"{variant}:unknown"
    stat = path.stat()
    return f"{path.resolve()}@{stat.st_mtime_ns}:{stat.st_size}"


_HASHES: dict[tuple[str, int, int], str] = {}


def adapter_file_hash(engine, variant: str) -> str | None:
    """SHA-256 of the adapter's weight file (memoised per path/mtime/size); None for the base or a missing file."""
    path = _weights_file(engine, variant)
    if path is None:
        return None
    stat = path.stat()
    key = (str(path.resolve()), stat.st_mtime_ns, stat.st_size)
    if key not in _HASHES:
        digest = hashlib.sha256()
        with open(path, "rb") as handle:
            for chunk in iter(lambda: handle.read(1 << 20), b""):
                digest.update(chunk)
        _HASHES[key] = digest.hexdigest()
    return _HASHES[key]


def cache_key(engine, dhash: str, variant: str) -> CacheKey:
    name = REFERENCE if variant in ("base", REFERENCE) else variant
    return (dhash, name, base_identity(engine), adapter_identity(engine, variant))


def _task_key(dhash: str) -> CacheKey:
    return (dhash, "__task__", "", "")


def score_dataset(engine, pairs_df: pd.DataFrame, variants: Sequence[str], progress: Progress | None = None, *,
                  cache: InspectCache | None = None, max_length: int = SCORING.max_length,
                  batch_size: int = SCORING.batch_size) -> DatasetScores:
    """Score chosen, rejected and the KTO mismatched pairs under each variant and the reference.

    ``pairs_df``: prompt, chosen, rejected (+ system, reference) or an unpaired frame (see ``prepare_pairs``).
    ``variants``: user-facing names ("base", "dpo", "kto", ...); the reference is always scored. Adapters already in
    ``cache`` are not scored again. Rows of several adapters share a forward pass (PEFT's per-row ``adapter_names``);
    ``engine.lock`` is held per batch. ``progress(fraction, message)`` is called after each batch.
    """
    pairs, notes = prepare_pairs(pairs_df)
    dhash = dataset_hash(pairs, max_length)
    variants = list(dict.fromkeys(v for v in variants if v != REFERENCE))
    engine.adapter_names_for([v for v in variants if v != "base"])  # raises KeyError on an unknown variant
    names = [REFERENCE] + [v for v in variants if v != "base"]
    results: dict[str, SideScores] = {}
    todo: list[str] = []
    for name in names:
        cached = cache.get(cache_key(engine, dhash, name)) if cache is not None else None
        if cached is not None:
            results[name] = cached
        else:
            todo.append(name)

    if todo:
        from playground import gpu_tasks, zerogpu

        # Through the GPU function (ZeroGPU: a forked worker, where a progress callback cannot follow).
        computed = gpu_tasks.score_rows(zerogpu.register_engine(engine), pairs, todo,
                                        None if zerogpu.on_zerogpu() else progress, max_length=max_length,
                                        batch_size=batch_size)
        for name, side in computed.items():
            results[name] = side
            if cache is not None:
                cache.put(cache_key(engine, dhash, name), side)
    elif progress:
        progress(1.0, "All numbers came from the cache")

    task: dict[str, dict[str, Any]] | None = cache.get(_task_key(dhash)) if cache is not None else None
    if task is None:
        task = {}
        if cache is not None:
            cache.put(_task_key(dhash), task)
    scores = DatasetScores(
        dataset_hash=dhash, pairs=pairs, reference=results[REFERENCE],
        policies={v: results[REFERENCE] if v == "base" else results[v] for v in variants},
        base_identity=base_identity(engine), max_length=max_length, task=task, notes=notes,
    )
    scores.task_scores(VALUES.task_metric)  # the default metric now, so the first redraw is fast
    truncated = int(scores.reference.truncated.sum())
    if truncated:
        scores.notes.append(f"{truncated} pair(s) longer than {max_length} tokens were truncated for scoring.")
    return scores


def score_rows_on(engine, pairs: pd.DataFrame, names: list[str], progress: Progress | None, *, max_length: int,
                  batch_size: int) -> dict[str, SideScores]:
    """Log-probs of prepared ``pairs`` under ``names`` on ``engine`` (``gpu_tasks.score_rows`` calls this).

    One row per (text, adapter); texts are chosen (P), rejected (P), then the 2P mismatched pairs."""
    n = len(pairs)
    prompts, completions, systems, _ = unpaired_view(pairs)
    mismatch = kl_index(n)
    texts: list[tuple[Any, str, str]] = [(prompts[k], completions[k], systems[k]) for k in range(2 * n)]
    texts += [(prompts[k], completions[int(mismatch[k])], systems[k]) for k in range(2 * n)]
    use_adapters = bool(engine.adapters)
    # similar lengths together (less padding), and one text's rows for all adapters side by side
    order = sorted(range(len(texts)), key=lambda t: (len(prompt_text(texts[t][0])) + len(texts[t][1]), t))
    jobs = [(t, name) for t in order for name in names]
    sums = {name: np.zeros(len(texts)) for name in names}
    lengths = {name: np.zeros(len(texts), dtype=np.int64) for name in names}
    cut = {name: np.zeros(len(texts), dtype=bool) for name in names}
    total = len(jobs)
    if progress:
        progress(0.0, f"Scoring {n} pairs under {', '.join(_display(m) for m in names)} ({total} sequences)")
    started = time.perf_counter()
    for start in range(0, total, batch_size):
        batch = jobs[start: start + batch_size]
        with engine.lock:  # per batch, so generation requests can run between batches
            result = scoring.score(
                engine.model, engine.tokenizer, [texts[t][0] for t, _ in batch], [texts[t][1] for t, _ in batch],
                systems=[texts[t][2] or None for t, _ in batch],
                adapter=[name for _, name in batch] if use_adapters else None,
                max_length=max_length, batch_size=batch_size)
        for row, (t, name) in enumerate(batch):
            sums[name][t] = float(result.sum_logps[row])
            lengths[name][t] = int(result.lengths[row])
            cut[name][t] = bool(result.truncated[row])
        if progress:
            done = min(start + batch_size, total)
            elapsed = time.perf_counter() - started
            eta = elapsed / done * (total - done)
            progress(done / total, f"Scored {done}/{total} sequences (about {eta:.0f} s left)")
    out = {}
    for name in names:
        s, ln, c = sums[name], lengths[name], cut[name]
        out[name] = SideScores(chosen_sum=s[:n].copy(), chosen_len=ln[:n].copy(), rejected_sum=s[n:2 * n].copy(),
                               rejected_len=ln[n:2 * n].copy(), kl_sum=s[2 * n:].copy(), kl_len=ln[2 * n:].copy(),
                               truncated=c[:n] | c[n:2 * n])
    return out


def _display(name: str) -> str:
    return "reference" if name == REFERENCE else name


# --------------------------------------------------------------------------------------------------------------------
# Disk cache of precomputed numbers (shipped adapters, bundled held-out set)
# --------------------------------------------------------------------------------------------------------------------


def save_precomputed(engine, scores: DatasetScores, path: Path = DEFAULT_DISK_CACHE,
                     dataset_file: str | None = None) -> Path:
    """Write ``scores`` with what validates them: data set hash, base identity and each adapter file's SHA-256."""
    entries = [{"variant": REFERENCE, "adapter_sha256": None, "scores": scores.reference.to_json()}]
    for variant, side in scores.policies.items():
        if variant == "base":
            continue
        entries.append({"variant": variant, "adapter_sha256": adapter_file_hash(engine, variant),
                        "scores": side.to_json()})
    task = {m: {"chosen": d["chosen"].tolist(), "rejected": d["rejected"].tolist(), "metrics": list(d["metrics"])}
            for m, d in scores.task.items()}
    payload = {"format": DISK_CACHE_FORMAT, "version": DISK_CACHE_VERSION, "dataset_hash": scores.dataset_hash,
               "dataset_file": dataset_file, "n_pairs": scores.n_pairs, "base_identity": scores.base_identity,
               "max_length": scores.max_length, "variants": scores.variants, "entries": entries, "task": task,
               "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(payload, indent=1), encoding="utf-8")
    tmp.replace(path)
    return path


def load_precomputed(engine, pairs_df: pd.DataFrame | None, cache: InspectCache | None = None,
                     path: Path = DEFAULT_DISK_CACHE) -> DatasetScores | None:
    """The precomputed scores for ``pairs_df``, or None when the file is missing, unreadable or stale.

    Stale means: another data set (hash), another base (identity), or no valid reference entry. An adapter entry
    whose file hash differs from the attached adapter's is dropped on its own. Valid entries also go into ``cache``
    so a Score click on the same data reuses them.
    """
    path = Path(path)
    if pairs_df is None or len(pairs_df) == 0 or not path.is_file():
        return None
    try:
        payload = json.loads(path.read_text(encoding="utf-8"))
        if payload.get("format") != DISK_CACHE_FORMAT or payload.get("version") != DISK_CACHE_VERSION:
            return None
        max_length = int(payload["max_length"])
        pairs, notes = prepare_pairs(pairs_df)
        dhash = dataset_hash(pairs, max_length)
        if payload["dataset_hash"] != dhash or payload["base_identity"] != base_identity(engine):
            log.info("Ignoring %s: it was computed for another data set or base model", path)
            return None
        sides: dict[str, SideScores] = {}
        for entry in payload["entries"]:
            variant = entry["variant"]
            if variant != REFERENCE and (variant not in engine.adapters
                                         or entry.get("adapter_sha256") != adapter_file_hash(engine, variant)):
                log.info("Ignoring precomputed scores of %r: the adapter file changed or is not attached", variant)
                continue
            side = SideScores.from_json(entry["scores"])
            if len(side.chosen_sum) != len(pairs) or len(side.kl_sum) != 2 * len(pairs):
                return None
            sides[variant] = side
        if REFERENCE not in sides:
            return None
        task = {m: {"chosen": np.asarray(d["chosen"], dtype=float), "rejected": np.asarray(d["rejected"], dtype=float),
                    "metrics": list(d["metrics"])} for m, d in payload.get("task", {}).items()}
    except (OSError, ValueError, KeyError, TypeError) as exc:
        log.warning("Ignoring unreadable Inspect cache %s: %s", path, exc)
        return None
    variants = [v for v in payload.get("variants", []) if v == "base" or v in sides]
    if cache is not None:
        for variant, side in sides.items():
            cache.put(cache_key(engine, dhash, variant), side)
        existing = cache.get(_task_key(dhash))
        if existing is not None:
            existing.update({m: d for m, d in task.items() if m not in existing})
            task = existing
        else:
            cache.put(_task_key(dhash), task)
    return DatasetScores(dataset_hash=dhash, pairs=pairs, reference=sides[REFERENCE],
                         policies={v: sides[REFERENCE] if v == "base" else sides[v] for v in variants},
                         base_identity=base_identity(engine), max_length=max_length, task=task, notes=notes,
                         from_disk=True)


# --------------------------------------------------------------------------------------------------------------------
# Pure recomputation from the cache
# --------------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class InspectSettings:
    """Every Inspect widget; defaults from ``playground.config``."""

    beta: float = LOSS.beta
    dpo_variant: str = LOSS.dpo_variant
    label_smoothing: float = LOSS.label_smoothing
    kto_variant: str = LOSS.kto_variant
    desirable_weight: float = LOSS.desirable_weight
    undesirable_weight: float = LOSS.undesirable_weight
    construction: str = VALUES.construction
    likelihood_reduce: str = VALUES.likelihood_reduce
    calibrate: bool = VALUES.calibrate
    normalise_std: bool = VALUES.normalise_std
    alpha: float = VALUES.alpha
    task_metric: str = VALUES.task_metric
    tau_method: str = VALUES.tau_method
    tau_quantile: float = VALUES.tau_quantile
    tau_ema_eta: float = VALUES.tau_ema_eta
    tau_ema_batch_size: int = VALUES.tau_ema_batch_size
    tau_fixed: float = VALUES.tau_fixed
    loss_aversion: float = VALUES.loss_aversion

    def value_config(self) -> config.ValueConfig:
        # the learned reward head needs features from the model; Inspect uses the implied reward
        return dataclasses.replace(
            VALUES, construction=self.construction, likelihood_reduce=self.likelihood_reduce,
            calibrate=bool(self.calibrate), reward_source="implied", normalise_std=bool(self.normalise_std),
            alpha=float(self.alpha), task_metric=self.task_metric, tau_method=self.tau_method,
            tau_quantile=float(self.tau_quantile), tau_ema_eta=float(self.tau_ema_eta),
            tau_ema_batch_size=int(self.tau_ema_batch_size), tau_fixed=float(self.tau_fixed),
            loss_aversion=float(self.loss_aversion))

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any] | None) -> InspectSettings:
        """Settings from a dict (e.g. the API's JSON); unknown keys are ignored, values coerced to the field type."""
        base = cls()
        if not data:
            return base
        changes = {}
        for f in dataclasses.fields(cls):
            if f.name in data and data[f.name] is not None:
                kind = type(getattr(base, f.name))
                value = data[f.name]
                changes[f.name] = (str(value).lower() in ("1", "true", "yes")) if kind is bool and isinstance(
                    value, str) else kind(value)
        return dataclasses.replace(base, **changes)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass
class Analysis:
    """One slider evaluation for one variant: per-pair and per-sample tables, summary, and the raw terms."""

    variant: str
    settings: InspectSettings
    pairs: pd.DataFrame  # P rows: the DPO view (+ both samples' KTO and V numbers)
    samples: pd.DataFrame  # 2P rows: the unpaired KTO / prospect view (chosen = desirable, rejected = undesirable)
    summary: dict[str, Any]
    dpo: losses.DPOTerms
    kto: losses.KTOTerms
    report: values.ValueReport
    taus: dict[str, float]  # tau of every method on the current V (NaN where a method does not apply)
    alpha_search: values.AlphaSearch
    value_label: str  # what V is, in words, with units
    notes: list[str] = field(default_factory=list)


def _t(array: np.ndarray, dtype=torch.float64) -> torch.Tensor:
    return torch.as_tensor(np.asarray(array), dtype=dtype)


def value_label(settings: InspectSettings) -> str:
    if settings.construction == "likelihood":
        what = "mean token log-prob (nats/token)" if settings.likelihood_reduce == "mean" else "log-prob (nats)"
        return ("log-ratio to reference, " if settings.calibrate else "") + what
    if settings.construction == "reward":
        return "implied reward − baseline" + (" (std units)" if settings.normalise_std else " (β·nats)")
    return f"hybrid α·P_LM + (1−α)·{settings.task_metric} (0..1)"


def analyse(scores: DatasetScores, variant: str, settings: InspectSettings | None = None) -> Analysis:
    """Every Inspect number for ``variant`` under ``settings``, from cached scores only (no model call)."""
    settings = settings or InspectSettings()
    notes: list[str] = list(scores.notes)
    pol, ref = scores.side(variant), scores.reference
    n = scores.n_pairs
    beta = float(settings.beta)

    # DPO on the pairs
    dpo = losses.dpo_loss(
        _t(pol.chosen_sum), _t(pol.rejected_sum), _t(ref.chosen_sum), _t(ref.rejected_sum), beta=beta,
        variant=settings.dpo_variant, label_smoothing=float(settings.label_smoothing),
        chosen_lengths=_t(pol.chosen_len), rejected_lengths=_t(pol.rejected_len))

    # KTO on the unpaired view, z0 from the mismatched pairs
    policy_logps = _t(np.concatenate([pol.chosen_sum, pol.rejected_sum]))
    reference_logps = _t(np.concatenate([ref.chosen_sum, ref.rejected_sum]))
    lengths = _t(np.concatenate([pol.chosen_len, pol.rejected_len]), torch.long)
    desirable = torch.cat([torch.ones(n, dtype=torch.bool), torch.zeros(n, dtype=torch.bool)])
    kto = losses.kto_loss(
        policy_logps, reference_logps, desirable, _t(pol.kl_sum), _t(ref.kl_sum), beta=beta,
        desirable_weight=float(settings.desirable_weight), undesirable_weight=float(settings.undesirable_weight),
        variant=settings.kto_variant)
    kl_logratios = _t(pol.kl_sum - ref.kl_sum)

    # V, tau and the prospect decomposition on the same 2P samples
    vconfig = settings.value_config()
    task = scores.task_scores(settings.task_metric)
    prompt_keys = tuple(json.dumps(p, sort_keys=True) if not isinstance(p, str) else p for p in scores.pairs["prompt"])
    inputs = values.ValueInputs(
        policy_sum_logps=policy_logps, lengths=lengths, reference_sum_logps=reference_logps,
        prompts=prompt_keys * 2, task_scores=_t(np.concatenate([task["chosen"], task["rejected"]])))
    report = values.value_report(inputs, vconfig, beta=beta, kl_logratios=kl_logratios)
    v = report.values.value
    options = values.TauOptions.from_config(vconfig, kl_logratios)
    taus = {}
    for method in values.TAU_METHODS:
        try:
            taus[method] = float(values.compute_tau(method, v, options).tau)
        except ValueError:
            taus[method] = math.nan
    if settings.tau_method == "z0" and settings.construction != "likelihood":
        notes.append("tau = z0 is on the scale of the log-ratio r: pair it with V = likelihood, sum, calibrated.")
    alpha_search = values.search_alpha(
        _t(pol.chosen_mean), _t(pol.rejected_mean), _t(task["chosen"]), _t(task["rejected"]),
        highlight=VALUES.alpha_highlight)
    if any(m != settings.task_metric for m in task["metrics"]):
        used = sorted(set(task["metrics"]) - {settings.task_metric})
        notes.append(f"No reference answer for some samples: {settings.task_metric} fell back to {', '.join(used)}.")

    prospect = report.prospect
    v_np = v.double().numpy()
    pairs_df = _pairs_table(scores, dpo, kto, v_np, n)
    samples_df = _samples_table(scores, kto, report, task, n)
    advice = losses.kto_weight_advice(n, n, float(settings.desirable_weight), float(settings.undesirable_weight))
    v_accuracy = float(np.mean(v_np[:n] > v_np[n:])) if n else math.nan
    summary = {
        "variant": variant,
        "n_pairs": n,
        "n_samples": 2 * n,
        "preference_accuracy": float(dpo.accuracy),
        "mean_margin": float(dpo.margin.mean()),
        "mean_dpo_loss": float(dpo.loss.mean()),
        "mean_grad_weight": float(dpo.grad_weight.mean()),
        "dpo_variant": settings.dpo_variant,
        "mean_kto_loss": float(kto.loss.mean()),
        "z0": float(kto.z0),
        "kto_variant": settings.kto_variant,
        "kto_desirable_reward": kto.desirable_reward_mean,
        "kto_undesirable_reward": kto.undesirable_reward_mean,
        "kto_weight_ratio": float(advice.ratio),
        "kto_weight_in_band": bool(advice.in_band),
        "kto_weight_advice": advice.message,
        "value_construction": settings.construction,
        "value_label": value_label(settings),
        "value_preference_accuracy": v_accuracy,
        "tau_method": settings.tau_method,
        "tau": float(report.tau.tau),
        "taus": taus,
        "loss_aversion": float(settings.loss_aversion),
        "share_gains": float(prospect.is_gain.double().mean()),
        "mean_prospect_value": float(prospect.value.mean()),
        "mean_source_objective": float(prospect.source_objective.mean()),
        "best_alpha": alpha_search.best_alpha,
        "best_alpha_accuracy": alpha_search.best_accuracy,
        "reward_baseline": getattr(report.values, "baseline_label", None),
        "truncated_pairs": int((pol.truncated | ref.truncated).sum()),
        "from_precomputed": scores.from_disk,
    }
    return Analysis(variant=variant, settings=settings, pairs=pairs_df, samples=samples_df, summary=summary, dpo=dpo,
                    kto=kto, report=report, taus=taus, alpha_search=alpha_search, value_label=value_label(settings),
                    notes=notes)


def _np(tensor: torch.Tensor) -> np.ndarray:
    return tensor.detach().double().numpy()


def _pairs_table(scores: DatasetScores, dpo: losses.DPOTerms, kto: losses.KTOTerms, v: np.ndarray,
                 n: int) -> pd.DataFrame:
    pairs = scores.pairs
    r_w, r_l = _np(dpo.chosen_logratio), _np(dpo.rejected_logratio)
    ref_logratio = scores.reference.chosen_sum - scores.reference.rejected_sum
    kto_loss = _np(kto.loss)
    return pd.DataFrame({
        "pair": np.arange(n),
        "prompt": [snippet(prompt_text(p)) for p in pairs["prompt"]],
        "chosen": [snippet(t) for t in pairs["chosen"]],
        "rejected": [snippet(t) for t in pairs["rejected"]],
        "category": list(pairs["category"]),
        "ref_logratio": ref_logratio,  # log pi_ref(y_w|x) - log pi_ref(y_l|x)
        "policy_logratio": ref_logratio + (r_w - r_l),  # log pi_theta(y_w|x) - log pi_theta(y_l|x)
        "chosen_logratio": r_w,
        "rejected_logratio": r_l,
        "delta": r_w - r_l,
        "chosen_reward": _np(dpo.chosen_reward),
        "rejected_reward": _np(dpo.rejected_reward),
        "margin": _np(dpo.margin),
        "dpo_loss": _np(dpo.loss),
        "grad_weight": _np(dpo.grad_weight),
        "correct": _np(dpo.chosen_preferred).astype(bool),
        "kto_loss_chosen": kto_loss[:n],
        "kto_loss_rejected": kto_loss[n:],
        "v_chosen": v[:n],
        "v_rejected": v[n:],
    })


def _samples_table(scores: DatasetScores, kto: losses.KTOTerms, report: values.ValueReport, task: dict[str, Any],
                   n: int) -> pd.DataFrame:
    pairs = scores.pairs
    prospect = report.prospect
    lm_probability = getattr(report.values, "lm_probability", None)
    return pd.DataFrame({
        "sample": np.arange(2 * n),
        "pair": np.concatenate([np.arange(n), np.arange(n)]),
        "label": ["desirable"] * n + ["undesirable"] * n,
        "prompt": [snippet(prompt_text(p)) for p in pairs["prompt"]] * 2,
        "completion": [snippet(t) for t in list(pairs["chosen"]) + list(pairs["rejected"])],
        "logratio": _np(kto.logratio),
        "reward": _np(kto.reward),
        "z0": float(kto.z0),
        "kto_value": _np(kto.value),
        "kto_loss": _np(kto.loss),
        "weight": _np(kto.weight),
        "V": _np(report.values.value),
        "gain": _np(prospect.gain),
        "weighted_loss": _np(prospect.loss),
        "prospect_value": _np(prospect.value),
        "source_objective": _np(prospect.source_objective),
        "is_gain": _np(prospect.is_gain).astype(bool),
        "task_score": np.concatenate([task["chosen"], task["rejected"]]),
        "lm_probability": _np(lm_probability) if lm_probability is not None else np.full(2 * n, np.nan),
    })


def pair_focus(analysis: Analysis, scores: DatasetScores, index: int) -> dict[str, Any]:
    """Everything the waterfall and the highlights need for pair ``index``: texts, the additive steps to D, and the
    selected loss's curve over its argument with the pair placed on it."""
    n = scores.n_pairs
    if not 0 <= index < n:
        raise IndexError(f"pair {index} out of range 0..{n - 1}")
    row = analysis.pairs.iloc[index]
    pair = scores.pairs.iloc[index]
    s = analysis.settings
    beta = float(s.beta)
    delta = float(row["delta"])
    pol = scores.side(analysis.variant)
    focus = {
        "index": index,
        "prompt": prompt_text(pair["prompt"]),
        "chosen": pair["chosen"],
        "rejected": pair["rejected"],
        "ref_logratio": float(row["ref_logratio"]),
        "policy_logratio": float(row["policy_logratio"]),
        "chosen_logratio": float(row["chosen_logratio"]),
        "rejected_logratio": float(row["rejected_logratio"]),
        "delta": delta,
        "beta": beta,
        "logit": beta * delta,
        "sigma": 1.0 / (1.0 + math.exp(-beta * delta)) if abs(beta * delta) < 700 else float(beta * delta > 0),
        "loss": float(row["dpo_loss"]),
        "grad_weight": float(row["grad_weight"]),
        "dpo_variant": s.dpo_variant,
        "label_smoothing": float(s.label_smoothing),
        "samples": [index, index + n],
    }
    # the loss as a function of its argument, computed by the same loss functions
    if s.dpo_variant == "ipo":
        lw, ll = max(int(pol.chosen_len[index]), 1), max(int(pol.rejected_len[index]), 1)
        x = float(row["chosen_logratio"]) / lw - float(row["rejected_logratio"]) / ll
        centre = 1.0 / (2.0 * beta)
        half = max(abs(x - centre) * 1.3, centre, 1.0)
        grid = torch.linspace(centre - half, centre + half, 201, dtype=torch.float64)
        curve = losses.ipo_loss(grid, torch.zeros_like(grid), torch.ones_like(grid), torch.ones_like(grid), beta=beta)
        focus.update(curve_x=grid.numpy(), curve_y=curve.numpy(), curve_point=x,
                     curve_xlabel="length-normalised Δ: r_w/|y_w| − r_l/|y_l| (nats/token)")
    else:
        half = max(abs(delta) * 1.3, 6.0 / beta)
        grid = torch.linspace(-half, half, 201, dtype=torch.float64)
        zeros = torch.zeros_like(grid)
        terms = losses.dpo_loss(grid, zeros, zeros, zeros, beta=beta, variant=s.dpo_variant,
                                label_smoothing=float(s.label_smoothing), chosen_lengths=torch.ones_like(grid),
                                rejected_lengths=torch.ones_like(grid))
        focus.update(curve_x=grid.numpy(), curve_y=terms.loss.double().numpy(), curve_point=delta,
                     curve_xlabel="D = r_w − r_l (nats)")
    return focus


def kto_value_curves(analysis: Analysis, points: int = 201) -> dict[str, Any]:
    """KTO's value v(r) for each label over a grid of log-ratios r, by the same function the loss uses.

    The grid spans the samples' r and at least 3/beta either side of the reference point, so the sigmoid's bend shows.
    """
    s = analysis.settings
    beta = float(s.beta)
    r = analysis.samples["logratio"].to_numpy(dtype=float)
    z0 = float(analysis.kto.z0) if s.kto_variant == "kto" else 0.0
    lo = min(float(r.min()) if r.size else z0, z0 - 3.0 / beta)
    hi = max(float(r.max()) if r.size else z0, z0 + 3.0 / beta)
    pad = 0.05 * (hi - lo)
    grid = torch.linspace(lo - pad, hi + pad, points, dtype=torch.float64)
    curves = {"r": grid.numpy(), "z0": z0, "beta": beta, "kto_variant": s.kto_variant,
              "desirable_weight": float(s.desirable_weight), "undesirable_weight": float(s.undesirable_weight)}
    for label, flag, weight in (("desirable", True, s.desirable_weight), ("undesirable", False, s.undesirable_weight)):
        desirable = torch.full_like(grid, flag, dtype=torch.bool)
        weights = torch.full_like(grid, float(weight))
        if s.kto_variant == "kto":
            v = losses.kto_value(grid, desirable, torch.tensor(z0, dtype=torch.float64), weights, beta=beta)
        else:
            v = losses.apo_zero_unpaired_value(grid, desirable, weights, beta=beta)
        curves[label] = v.numpy()
    return curves


def prospect_curves(analysis: Analysis, points: int = 201) -> dict[str, Any]:
    """Prospect theory's value and the source document's objective as functions of V around tau (same functions as
    the per-sample numbers), over the samples' range of V."""
    tau = float(analysis.report.tau.tau)
    lam = float(analysis.settings.loss_aversion)
    v = analysis.samples["V"].to_numpy(dtype=float)
    finite = v[np.isfinite(v)]
    lo = min(float(finite.min()) if finite.size else tau, tau)
    hi = max(float(finite.max()) if finite.size else tau, tau)
    pad = max(0.1 * (hi - lo), 1e-3)
    grid = torch.linspace(lo - pad, hi + pad, points, dtype=torch.float64)
    return {"V": grid.numpy(), "tau": tau, "loss_aversion": lam,
            "corrected": values.prospect_value(grid, tau, lam).numpy(),
            "source": values.source_objective(grid, tau, lam).numpy()}


def summary_json(analysis: Analysis) -> dict[str, Any]:
    """The summary with NaN/inf as None, ready for JSON (the ``inspect`` API endpoint)."""

    def clean(value: Any) -> Any:
        if isinstance(value, dict):
            return {k: clean(v) for k, v in value.items()}
        if isinstance(value, (float, np.floating)):
            return float(value) if math.isfinite(value) else None
        if isinstance(value, np.integer):
            return int(value)
        if isinstance(value, np.bool_):
            return bool(value)
        return value

    return clean({**analysis.summary, "settings": analysis.settings.to_dict(), "notes": list(analysis.notes)})


def variant_table(scores: DatasetScores, settings: InspectSettings | None = None) -> pd.DataFrame:
    """One row per scored variant: accuracy, margin, losses, z0 (a small comparison above the detail views)."""
    rows = []
    for variant in scores.variants:
        s = analyse(scores, variant, settings).summary
        rows.append({"variant": variant, "preference accuracy": s["preference_accuracy"],
                     "mean margin": s["mean_margin"], "mean DPO loss": s["mean_dpo_loss"],
                     "mean KTO loss": s["mean_kto_loss"], "z0": s["z0"],
                     "V accuracy": s["value_preference_accuracy"]})
    return pd.DataFrame(rows)


# --------------------------------------------------------------------------------------------------------------------
# Command line: precompute the disk cache
# --------------------------------------------------------------------------------------------------------------------


def load_heldout(path: Path = DEFAULT_DATASET) -> pd.DataFrame:
    """The held-out pairs exactly as the app loads them (``feedback.read_heldout_pairs``: validated, capped at
    ``config.APP.heldout_pairs_limit``), so the hashes match."""
    from playground import feedback

    frame, note = feedback.read_heldout_pairs(Path(path), config.APP.heldout_pairs_limit)
    if frame is None:
        raise ValueError(note or f"{path} is not a usable paired file")
    return frame


def precompute(data: Path = DEFAULT_DATASET, out: Path = DEFAULT_DISK_CACHE, checkpoints: Path | None = None,
               base_model: str | None = None, variants: Sequence[str] | None = None) -> Path:
    from playground import models

    engine = models.Engine.load(models.resolve_base_model(base_model))
    engine.attach_all(checkpoints or config.REPO_ROOT / "checkpoints")
    wanted = list(variants) if variants else engine.variant_names()
    pairs = load_heldout(data)

    def report(fraction: float, message: str) -> None:
        print(f"[{fraction:5.1%}] {message}", flush=True)

    scores = score_dataset(engine, pairs, wanted, report)
    for metric in values.TASK_METRICS:
        if metric != "keywords" or VALUES.keywords:
            scores.task_scores(metric)
    try:
        shown = str(Path(data).resolve().relative_to(config.REPO_ROOT))
    except ValueError:
        shown = str(data)
    return save_precomputed(engine, scores, out, dataset_file=shown)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Inspect engine: precompute log-probs for the Inspect tab.")
    parser.add_argument("--precompute", action="store_true", help="score the held-out set under the shipped adapters")
    parser.add_argument("--data", type=Path, default=DEFAULT_DATASET, help="paired CSV (default: bundled held-out)")
    parser.add_argument("--out", type=Path, default=DEFAULT_DISK_CACHE, help="JSON file to write")
    parser.add_argument("--checkpoints", type=Path, default=None, help="adapter root (default: checkpoints/)")
    parser.add_argument("--base-model", default=None, help="hub id or local directory (default: embedded)")
    parser.add_argument("--variants", nargs="*", default=None, help="variants to score (default: all attached)")
    args = parser.parse_args(argv)
    if not args.precompute:
        parser.print_help()
        return 0
    logging.basicConfig(level=logging.INFO)
    path = precompute(args.data, args.out, args.checkpoints, args.base_model, args.variants)
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
