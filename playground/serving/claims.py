"""The Claims view's re-runs: one claim of ``training.experiments`` measured again on this server's base model,
through the training queue (one job at a time, the visitor's quota, progress, cancel), its results kept beside the
server's data in the shipped file's format (``claims_rerun.json``), so the view draws a re-run exactly as it draws
the shipped results.

A re-run's size is ``config.CLAIMS.quick`` on a CPU (the shipped settings with fewer noise points) and
``config.CLAIMS.full`` on a GPU. A cancelled or failed re-run writes nothing: a claim judged on part of its runs
would get a verdict its runs do not support.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from playground import config
from playground.analysis.claims import merge_into
from playground.common.files import sha256_file
from playground.training import experiments

RERUN_FILE = "claims_rerun.json"  # in the server's data dir


def sweep_for(device) -> tuple[str, config.ClaimSweep]:
    """("quick" | "full", its size) for the device a re-run trains on."""
    return ("full", config.CLAIMS.full) if device.device.type == "cuda" else ("quick", config.CLAIMS.quick)


def demo_data(sweep: config.ClaimSweep) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The demo training pairs and clean held-out pairs the shipped results used, cut to ``sweep``'s size."""
    from playground.feedback import read_feedback

    pairs = read_feedback(experiments.DEMO_TRAIN).data
    pairs = pairs.head(sweep.pairs).reset_index(drop=True) if sweep.pairs else pairs
    heldout = read_feedback(experiments.DEMO_HELDOUT).data.head(sweep.heldout).reset_index(drop=True)
    return pairs, heldout


@dataclass
class ClaimRerun:
    """The queue's task for one claim (``TrainingQueue.submit_task``): trains every run of the claim on a fresh
    base, reports the run and step in ``job.phase`` / ``job.meta``, and on success puts the claim into ``out``."""

    claim: str
    size: str  # "quick" | "full"
    sweep: config.ClaimSweep
    specs: list[experiments.RunSpec]
    heldout: pd.DataFrame
    base_factory: Callable[[], Any]
    tokenizer: Any
    device: Any
    base: str
    out: Path

    @property
    def total_steps(self) -> int:
        return len(self.specs) * self.sweep.steps

    def __call__(self, job) -> None:
        started = time.monotonic()
        job.meta = {"kind": "claims", "claim": self.claim, "size": self.size, "runs_total": len(self.specs),
                    "runs_done": 0, "steps_done": 0, "started": time.time()}

        def at_run(index: int, step: int) -> None:
            spec = self.specs[index]
            point = "" if spec.x is None else f" at {spec.x:.0%}"
            job.meta.update(runs_done=index, steps_done=index * self.sweep.steps + step,
                            elapsed_s=time.monotonic() - started)
            job.phase = (f"Run {index + 1} of {len(self.specs)}: {spec.label}{point}, seed "
                         f"{spec.train_config.seed} · step {step} / {self.sweep.steps}")

        def after_run(done: int, total: int, label: str) -> None:
            if done < total:
                at_run(done, 0)

        at_run(0, 0)
        records = experiments.run_experiment(self.specs, self.base_factory, self.tokenizer, self.device, self.heldout,
                                             progress=after_run, cancel=job.cancel_event,
                                             on_step=lambda index, metrics: at_run(index, metrics.step))
        if job.cancel_event.is_set():
            return
        job.meta.update(runs_done=len(records), steps_done=self.total_steps, elapsed_s=time.monotonic() - started)
        payload = experiments.results_payload(
            records, command=experiments.sweep_command(self.claim, self.sweep, RERUN_FILE), base=self.base,
            device=self.device.describe(),
            data={"train": sha256_file(experiments.DEMO_TRAIN), "heldout": sha256_file(experiments.DEMO_HELDOUT),
                  "train_rows": str(self.sweep.pairs or "all"), "heldout_rows": str(len(self.heldout))})
        payload["rerun"] = {"size": self.size, "job": job.id, "seconds": round(time.monotonic() - started, 1)}
        merge_into(self.out, self.claim, payload)
        job.phase = (f"Done: {len(records)} runs in {time.monotonic() - started:.0f} s; the view shows this server's "
                     "re-run")


def claim_rerun(engine, claim: str, out: Path, sweep: config.ClaimSweep | None = None) -> ClaimRerun:
    """The re-run of ``claim`` on ``engine``'s base, at the size its device allows (``sweep_for``) unless ``sweep``
    says otherwise (then its size reads "custom")."""
    if claim not in experiments.CLAIMS:
        raise ValueError(f"Unknown claim {claim!r}; one of {', '.join(experiments.CLAIMS)}.")
    size, sweep = sweep_for(engine.device) if sweep is None else ("custom", sweep)
    pairs, heldout = demo_data(sweep)
    specs = experiments.claim_runs(claim, pairs, sweep.steps, sweep.seeds, sweep.rates)
    return ClaimRerun(claim, size, sweep, specs, heldout, engine.fresh_base, engine.tokenizer, engine.device,
                      engine.base_id, Path(out))


def rerun_view(job, position: int) -> dict[str, Any]:
    """A re-run job as the progress widgets read it (the keys of ``Services.job_view`` they use). The claim and
    size come from the settings it was queued with, so a job still waiting names them too."""
    meta = job.meta or {}
    total = max(1, int(job.total_steps))
    done = int(meta.get("steps_done") or 0)
    elapsed = meta.get("elapsed_s")
    eta = elapsed * (total - done) / done if (elapsed and done and job.status == "running") else None
    return {"job_id": job.id, "name": job.name, "method": job.method, "status": job.status, "phase": job.phase,
            "error": job.error, "position": position, "steps_done": done, "total_steps": total,
            "progress": min(1.0, done / total), "eta_s": eta, "claim": (job.settings or {}).get("claim"),
            "size": (job.settings or {}).get("size"), "runs_done": meta.get("runs_done"),
            "runs_total": meta.get("runs_total")}
