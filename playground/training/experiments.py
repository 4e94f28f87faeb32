"""Experiments that put the source material's claims to the test, on a real model, through the ordinary training
loop (``training.loop.train``) on fresh copies of the base.

An experiment is a list of :class:`RunSpec` (a method, its rows, its settings, a seed); :func:`run_experiment`
trains each on a fresh base and records what a claim is judged by: held-out preference accuracy on clean held-out
pairs, the answers' quality against the base (repetition, distinct-2, fluency under the base), seconds per optimiser
step, the reference pass's seconds and the peak memory of the accelerator (or of the process on a CPU).
:func:`results_payload` wraps them with the data hashes, seeds, settings, versions and the command that made them.

Claims built so far (``CLAIMS``): ``compute`` (the reference model and compute: DPO, KTO, SimPO and ORPO on the same
pairs), ``unpaired`` (KTO on thumbs-only feedback against DPO on the paired rows), ``noise`` (label flips) and
``imbalance`` (KTO with few desirable answers, with and without the paper's weight rule).
"""

from __future__ import annotations

import dataclasses
import json
import platform
import resource
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from playground import config
from playground.common.files import sha256_bytes
from playground.feedback.conversion import frame_for_method, paired_to_unpaired
from playground.feedback.perturb import desirable_share, flip_pairs, thumbs_only
from playground.objectives.kto import kto_weight_advice
from playground.training.loop import train

RESULTS_FORMAT = "playground-claims-results"
RESULTS_VERSION = 1


@dataclass(frozen=True)
class RunSpec:
    """One training of an experiment: ``rows`` in the method's format, ``train_config`` its settings."""

    claim: str
    label: str  # what the point is, e.g. "flip 20%" or "KTO, thumbs only"
    method: str
    rows: pd.DataFrame
    train_config: config.TrainConfig
    x: float | None = None  # the point's position on the claim's axis (a flip rate, a desirable share)


def data_hash(frame: pd.DataFrame) -> str:
    """SHA-256 of a frame's rows as JSON Lines (what a result records of the data it trained on)."""
    text = "".join(json.dumps(r, sort_keys=True, default=str, ensure_ascii=False) + "\n"
                   for r in frame.to_dict("records"))
    return sha256_bytes(text.encode("utf-8"))


def quick_config(method: str, steps: int, seed: int, **loss_changes: Any) -> config.TrainConfig:
    """The settings every run of an experiment shares: the app's defaults with ``steps``, the method's own beta, no
    early stopping, one held-out evaluation (at the end), no probe answers (a claim compares methods at equal steps;
    the evaluations on the way and the probes would only cost time)."""
    loss = dataclasses.replace(config.LOSS, beta=config.METHOD_BETAS[method], **loss_changes)
    return dataclasses.replace(config.TRAIN, method=method, steps=steps, seed=seed, loss=loss,
                               early_stopping=dataclasses.replace(config.TRAIN.early_stopping, enabled=False,
                                                                  evaluations=1),
                               probes=dataclasses.replace(config.TRAIN.probes, enabled=False))


# --------------------------------------------------------------------------------------------------------------------
# The claims' run lists (pure: data and settings in, specs out)


def compute_runs(pairs: pd.DataFrame, steps: int, seed: int = 0,
                 methods: tuple[str, ...] = ("dpo", "kto", "simpo", "orpo")) -> list[RunSpec]:
    """"KTO needs no reference model and is lighter": the same pairs (KTO: as labelled answers) for each method."""
    return [RunSpec("compute", method.upper(), method, frame_for_method(pairs, "paired", method)[0],
                    quick_config(method, steps, seed)) for method in methods]


def unpaired_runs(pairs: pd.DataFrame, steps: int, seed: int = 0) -> list[RunSpec]:
    """"KTO works with single thumbs-up/down feedback": KTO on one labelled answer per prompt against DPO on the
    pairs of the same prompts (twice the judgments) and KTO on both answers of each pair."""
    return [RunSpec("unpaired", "DPO, pairs", "dpo", pairs, quick_config("dpo", steps, seed)),
            RunSpec("unpaired", "KTO, both answers", "kto", paired_to_unpaired(pairs),
                    quick_config("kto", steps, seed)),
            RunSpec("unpaired", "KTO, thumbs only", "kto", thumbs_only(pairs, seed), quick_config("kto", steps, seed))]


def noise_runs(pairs: pd.DataFrame, steps: int, rates: tuple[float, ...] = (0.0, 0.2, 0.4),
               seeds: tuple[int, ...] = (0,)) -> list[RunSpec]:
    """"KTO is more robust to noisy labels": ``rates`` of the pairs flipped; DPO, robust DPO with epsilon at the
    flip rate, and KTO on the labelled answers of the same noisy pairs."""
    runs = []
    for seed in seeds:
        for rate in rates:
            noisy, _ = flip_pairs(pairs, rate, seed)
            runs.append(RunSpec("noise", "DPO", "dpo", noisy, quick_config("dpo", steps, seed), x=rate))
            runs.append(RunSpec("noise", "robust DPO (ε = flip rate)", "dpo", noisy,
                                quick_config("dpo", steps, seed, dpo_loss_type="robust",
                                             label_smoothing=min(rate, 0.49)), x=rate))
            runs.append(RunSpec("noise", "KTO", "kto", paired_to_unpaired(noisy), quick_config("kto", steps, seed),
                                x=rate))
    return runs


def imbalance_runs(pairs: pd.DataFrame, steps: int, shares: tuple[float, ...] = (0.1, 0.25, 0.5),
                   seed: int = 0) -> list[RunSpec]:
    """"KTO tolerates far fewer desirable examples": KTO with the desirable share at ``shares``, with lambda = 1 and
    with the KTO paper's rule (lambda_D raised into the band [1, 4/3], ``kto_weight_advice``)."""
    runs = []
    samples = paired_to_unpaired(pairs)
    for share in shares:
        rows = desirable_share(samples, share, seed)
        n_d, n_u = int(rows["label"].sum()), int((~rows["label"]).sum())
        advice = kto_weight_advice(n_d, n_u, 1.0, 1.0)
        runs.append(RunSpec("imbalance", "KTO, λ = 1", "kto", rows, quick_config("kto", steps, seed), x=share))
        runs.append(RunSpec("imbalance", "KTO, paper's λ rule", "kto", rows,
                            quick_config("kto", steps, seed, desirable_weight=advice.suggested_desirable_weight,
                                         undesirable_weight=advice.suggested_undesirable_weight), x=share))
    return runs


CLAIMS: dict[str, Callable[..., list[RunSpec]]] = {"compute": compute_runs, "unpaired": unpaired_runs,
                                                   "noise": noise_runs, "imbalance": imbalance_runs}
DEMO_TRAIN = config.REPO_ROOT / "data" / "demo_pairs_train.csv"  # what the shipped results trained on
DEMO_HELDOUT = config.REPO_ROOT / "data" / "demo_pairs_heldout.csv"  # and were measured on


def claim_runs(claim: str, pairs: pd.DataFrame, steps: int, seeds: tuple[int, ...],
               rates: tuple[float, ...]) -> list[RunSpec]:
    """The runs of ``claim``: the noise claim over every seed and rate, the others with the first seed."""
    if claim == "noise":
        return noise_runs(pairs, steps, rates=rates, seeds=seeds)
    return CLAIMS[claim](pairs, steps, seed=seeds[0])


def sweep_command(claim: str, sweep: config.ClaimSweep, out: str) -> str:
    """The CLI command that runs ``claim`` at ``sweep``'s size (what a result records as its command)."""
    command = (f"python -m playground.experiments {claim} --steps {sweep.steps} --pairs {sweep.pairs} "
               f"--heldout {sweep.heldout} --seeds {' '.join(str(s) for s in sweep.seeds)}")
    if claim == "noise":
        command += " --rates " + " ".join(f"{r:g}" for r in sweep.rates)
    return f"{command} --out {out}"


# --------------------------------------------------------------------------------------------------------------------
# Running and recording


def _rss_bytes() -> int | None:
    """This process's resident set now (Linux ``/proc/self/statm``), or None where there is no such file."""
    try:
        pages = int(Path("/proc/self/statm").read_text().split()[1])
    except (OSError, IndexError, ValueError):
        return None
    return pages * resource.getpagesize()


class RunMemory:
    """The memory one run used. On CUDA: the accelerator's peak allocation (reset at the start). On a CPU: the
    process's resident set sampled every ``every`` seconds by a thread while the run trains (the kernel's own peak,
    ``ru_maxrss``, is a high-water mark over the whole process and cannot be reset, so it would credit a run with an
    earlier run's peak); ``peak_mb`` is the largest sample, ``added_mb`` how far it rose above the run's start."""

    def __init__(self, device, every: float = 0.02):
        self.device, self.every = device, every
        self.start = self.peak = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def kind(self) -> str:
        if self.device.device.type == "cuda":
            return "accelerator peak allocation"
        return (f"process RSS, peak of samples every {self.every * 1000:.0f} ms during the run"
                if _rss_bytes() is not None else "process peak RSS (high-water mark)")

    def __enter__(self) -> RunMemory:
        import torch

        rss = _rss_bytes()
        if self.device.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device.device)
            self.start = torch.cuda.memory_allocated(self.device.device)
        elif rss is not None:
            self.start = self.peak = rss
            self._thread = threading.Thread(target=self._sample, name="run-memory", daemon=True)
            self._thread.start()
        return self

    def _sample(self) -> None:
        while not self._stop.wait(self.every):
            self.peak = max(self.peak, _rss_bytes() or 0)

    def __exit__(self, *exc) -> None:
        import torch

        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self.peak = max(self.peak, _rss_bytes() or 0)
        elif self.device.device.type == "cuda":
            self.peak = torch.cuda.max_memory_allocated(self.device.device)
        else:
            self.peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024

    @property
    def peak_mb(self) -> float:
        return round(self.peak / 2**20, 1)

    @property
    def added_mb(self) -> float:
        return round(max(self.peak - self.start, 0) / 2**20, 1)


def run_one(spec: RunSpec, base_factory: Callable[[], Any], tokenizer, device, heldout: pd.DataFrame,
            cancel=None, on_step: Callable[[Any], None] | None = None) -> dict[str, Any]:
    """Train ``spec`` on a fresh base and measure it on the clean ``heldout`` pairs; return its record.
    ``on_step(metrics)`` after each optimiser step (``training.loop.StepMetrics``)."""
    started = time.perf_counter()
    with RunMemory(device) as memory:
        result = train(base_factory(), tokenizer, spec.rows, spec.train_config, device=device,
                       heldout_frame=heldout, cancel=cancel, callback=on_step)
    meta = result.meta
    seconds = meta.get("seconds", {})
    steps_done = max(int(meta.get("steps_done") or 0), 1)
    summaries = (meta.get("answers_eval") or {}).get("summaries", {})
    held = meta.get("heldout_metrics") or {}
    return {
        "claim": spec.claim, "label": spec.label, "method": spec.method, "x": spec.x,
        "seed": spec.train_config.seed, "rows": len(spec.rows), "rows_sha256": data_hash(spec.rows),
        "settings": dataclasses.asdict(spec.train_config), "cancelled": bool(result.cancelled),
        "heldout_accuracy": held.get("preference_accuracy"), "heldout_margin": held.get("mean_margin"),
        "heldout_pairs": held.get("pairs"), "drift": held.get("drift"),
        "seconds_per_step": round(float(seconds.get("steps", 0.0)) / steps_done, 3),
        "reference_seconds": seconds.get("reference"), "total_seconds": round(time.perf_counter() - started, 2),
        "peak_memory_mb": memory.peak_mb, "added_memory_mb": memory.added_mb, "memory_kind": memory.kind,
        "answers": {"base": summaries.get("base"), "adapter": summaries.get("adapter")},
    }


def run_experiment(specs: list[RunSpec], base_factory: Callable[[], Any], tokenizer, device, heldout: pd.DataFrame,
                   progress: Callable[[int, int, str], None] | None = None, cancel=None,
                   on_step: Callable[[int, Any], None] | None = None) -> list[dict[str, Any]]:
    """Every spec in turn (one at a time, as the training queue runs jobs); ``progress(done, total, label)`` after
    each, ``on_step(run index, metrics)`` after each optimiser step; a set ``cancel`` event stops the run in
    progress at its next step and runs no more."""
    records = []
    for index, spec in enumerate(specs):
        if cancel is not None and cancel.is_set():
            break
        step_hook = None if on_step is None else (lambda metrics, index=index: on_step(index, metrics))
        records.append(run_one(spec, base_factory, tokenizer, device, heldout, cancel, step_hook))
        if records[-1]["cancelled"]:
            break
        if progress:
            progress(index + 1, len(specs), f"{spec.claim}: {spec.label}")
    return records


def results_payload(records: list[dict[str, Any]], *, command: str, base: str, device: str,
                    data: dict[str, str]) -> dict[str, Any]:
    """The records with what reproduces them: the command, the base, the device, the data files' SHA-256, versions."""
    import peft
    import torch
    import transformers

    return {
        "format": RESULTS_FORMAT, "version": RESULTS_VERSION, "created": time.strftime("%Y-%m-%dT%H:%M:%SZ",
                                                                                       time.gmtime()),
        "command": command, "base_model": base, "device": device, "data": data,
        "versions": {"python": platform.python_version(), "torch": torch.__version__,
                     "transformers": transformers.__version__, "peft": peft.__version__},
        "argv": sys.argv, "runs": records,
    }
