"""The source material's claims and what the shipped measurements say about them: the results JSON of
``training.experiments`` in, per claim a table of its runs and a verdict in plain words out. Pure (no model call).

A verdict is decided by the numbers and ``config.CLAIMS`` (how large a difference in held-out accuracy counts), and
says which numbers decided it, so the words, the table and the figure always agree.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from playground import config

SHIPPED_RESULTS = config.REPO_ROOT / "data" / "claims_results.json"
FORMAT = "playground-claims"

CLAIM_TEXT = {
    "unpaired": "KTO works with single, unpaired thumbs-up/down feedback.",
    "noise": "KTO is more robust to noisy labels than DPO.",
    "imbalance": "KTO tolerates far fewer desirable than undesirable examples (the KTO paper: up to 90% fewer).",
    "compute": "KTO needs no reference model and is computationally lighter.",
}
CLAIM_ORDER = ("unpaired", "noise", "imbalance", "compute")


@dataclass(frozen=True)
class Verdict:
    claim: str
    text: str  # the claim, in one line
    verdict: str  # "holds" | "does not hold" | "holds only partly" | "no measurable difference" | "not measured"
    because: str  # the numbers that decided it
    table: pd.DataFrame  # the claim's runs (mean over seeds where there are several)
    command: str  # what reproduced the numbers


def load_results(path: Path = SHIPPED_RESULTS) -> dict[str, Any]:
    """The combined results file (one payload of ``experiments.results_payload`` per claim), or {} when absent."""
    path = Path(path)
    if not path.is_file():
        return {}
    payload = json.loads(path.read_text(encoding="utf-8"))
    if payload.get("format") != FORMAT:
        raise ValueError(f"{path} is not a claims results file (format {payload.get('format')!r})")
    return payload.get("claims", {})


def combine(payloads: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """The per-claim payloads as one file's content (what ``data/claims_results.json`` holds)."""
    return {"format": FORMAT, "version": 1, "claims": payloads}


def merge_into(path: Path, claim: str, payload: dict[str, Any]) -> Path:
    """Put one claim's payload (``training.experiments.results_payload``) into the combined file at ``path``,
    replacing that claim's earlier runs and keeping the others; the file is created when absent."""
    from playground.common.files import atomic_write_json

    claims = dict(load_results(path))
    claims[claim] = payload
    return atomic_write_json(Path(path), combine({name: claims[name] for name in sorted(claims)}), indent=1,
                             default=str)


def runs_frame(payload: dict[str, Any]) -> pd.DataFrame:
    """One row per run: label, method, x, seed, held-out accuracy, seconds per step, reference seconds, the
    adapter's answers against the base's (share repetitive, fluency), and the run's memory (its peak, and how far it
    rose above the run's start; NaN in results recorded before runs measured their own)."""
    rows = []
    for run in payload.get("runs", []):
        adapter = (run.get("answers") or {}).get("adapter") or {}
        base = (run.get("answers") or {}).get("base") or {}
        rows.append({"label": run["label"], "method": run["method"], "x": run.get("x"), "seed": run.get("seed"),
                     "rows": run.get("rows"), "heldout accuracy": run.get("heldout_accuracy"),
                     "heldout pairs": run.get("heldout_pairs"),
                     "s / step": run.get("seconds_per_step"), "reference s": run.get("reference_seconds"),
                     "repetitive answers": adapter.get("share_repetitive"),
                     "fluency": adapter.get("mean_fluency"), "base fluency": base.get("mean_fluency"),
                     "peak MB": run.get("peak_memory_mb"), "added MB": run.get("added_memory_mb")})
    return pd.DataFrame(rows)


def _mean_by(frame: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
    """Mean and std over seeds of the numeric columns, per ``keys``."""
    numeric = ["heldout accuracy", "s / step", "reference s", "repetitive answers", "fluency", "rows",
               "heldout pairs", "peak MB", "added MB", "base fluency"]
    grouped = frame.groupby(keys, sort=False, dropna=False)
    mean = grouped[numeric].mean().reset_index()
    mean["accuracy std"] = grouped["heldout accuracy"].std(ddof=0).fillna(0.0).to_numpy()
    mean["seeds"] = grouped["seed"].nunique().to_numpy()
    return mean


def _accuracy(table: pd.DataFrame, label: str, x: float | None = None) -> float:
    rows = table[table["label"] == label]
    if x is not None:
        rows = rows[np.isclose(rows["x"].astype(float), x)]
    return float(rows["heldout accuracy"].mean()) if len(rows) else math.nan


def _scale(table: pd.DataFrame) -> str:
    """How coarse an accuracy is: the held-out pairs it was measured on, and what one pair weighs."""
    pairs = pd.to_numeric(table.get("heldout pairs"), errors="coerce").max() if len(table) else math.nan
    if not pairs or not math.isfinite(pairs):
        return ""
    return f" (each accuracy on {pairs:.0f} held-out pairs: one pair is {1 / pairs:.3f})"


def verdict_unpaired(payload: dict[str, Any], tolerance: float) -> Verdict:
    table = _mean_by(runs_frame(payload), ["label", "method"])
    thumbs, pairs = _accuracy(table, "KTO, thumbs only"), _accuracy(table, "DPO, pairs")
    rows = dict(zip(table["label"], table["rows"]))
    because = (f"held-out accuracy {thumbs:.3f} for KTO on {rows.get('KTO, thumbs only', 0):.0f} thumbs (one answer "
               f"per prompt) against {pairs:.3f} for DPO on {rows.get('DPO, pairs', 0):.0f} pairs of the same "
               "prompts" + _scale(table))
    if thumbs >= pairs - tolerance:
        verdict = "holds"
        because += f": within {tolerance:.2f}, from half the judgments."
    else:
        verdict = "holds only partly"
        because += f": KTO learns from thumbs alone, but {pairs - thumbs:.3f} below DPO on pairs."
    return Verdict("unpaired", CLAIM_TEXT["unpaired"], verdict, because, table, payload.get("command", ""))


def verdict_noise(payload: dict[str, Any], tolerance: float) -> Verdict:
    table = _mean_by(runs_frame(payload), ["label", "method", "x"])
    rates = sorted(float(x) for x in table["x"].dropna().unique())
    low, high = rates[0], rates[-1]
    drops = {label: _accuracy(table, label, low) - _accuracy(table, label, high) for label in table["label"].unique()}
    kto, dpo = drops.get("KTO", math.nan), drops.get("DPO", math.nan)
    seeds = int(table["seeds"].max()) if len(table) else 0
    because = (f"from {low:.0%} to {high:.0%} flipped pairs, held-out accuracy fell by {kto:.3f} for KTO and "
               f"{dpo:.3f} for DPO" + "".join(f", {d:.3f} for {label}" for label, d in drops.items()
                                                if label not in ("KTO", "DPO"))
               + f" (mean over {seeds} seed{'s' if seeds != 1 else ''})" + _scale(table))
    if kto < dpo - tolerance:
        verdict = "holds"
    elif kto > dpo + tolerance:
        verdict = "does not hold"
    else:
        verdict = "no measurable difference"
        because += f": the two differ by less than {tolerance:.2f} at this scale."
    return Verdict("noise", CLAIM_TEXT["noise"], verdict, because + ("." if verdict != "no measurable difference"
                                                                      else ""), table, payload.get("command", ""))


def verdict_imbalance(payload: dict[str, Any], tolerance: float) -> Verdict:
    table = _mean_by(runs_frame(payload), ["label", "method", "x"])
    shares = sorted(float(x) for x in table["x"].dropna().unique())
    few, balanced = shares[0], shares[-1]
    plain = _accuracy(table, "KTO, λ = 1", few), _accuracy(table, "KTO, λ = 1", balanced)
    ruled = _accuracy(table, "KTO, paper's λ rule", few), _accuracy(table, "KTO, paper's λ rule", balanced)
    because = (f"with {few:.0%} desirable answers held-out accuracy was {plain[0]:.3f} (λ = 1) and {ruled[0]:.3f} "
               f"(the paper's λ rule), against {plain[1]:.3f} / {ruled[1]:.3f} with {balanced:.0%}" + _scale(table))
    plain_ok, ruled_ok = plain[0] >= plain[1] - tolerance, ruled[0] >= ruled[1] - tolerance
    if plain_ok:
        verdict = "holds"
    elif ruled_ok:
        verdict = "holds only partly"
        because += ": only when λ_D is raised by the paper's rule"
    else:
        verdict = "does not hold"
    return Verdict("imbalance", CLAIM_TEXT["imbalance"], verdict, because + ".", table, payload.get("command", ""))


def verdict_compute(payload: dict[str, Any], tolerance: float) -> Verdict:
    table = _mean_by(runs_frame(payload), ["label", "method"])
    by = table.set_index("method")
    kto_ref, dpo_ref = float(by.loc["kto", "reference s"]), float(by.loc["dpo", "reference s"])
    free = [m for m in by.index if m in config.REFERENCE_FREE_METHODS]
    because = (f"KTO ran a reference pass of {kto_ref:.1f} s (DPO {dpo_ref:.1f} s: KTO also scores the mismatched "
               f"pairs of its KL estimate), at {by.loc['kto', 's / step']:.2f} s per step against DPO's "
               f"{by.loc['dpo', 's / step']:.2f} s (a batch of 8 answers against 8 pairs)")
    if free:
        because += "; " + ", ".join(f"{m.upper()} {by.loc[m, 'reference s']:.2f} s of reference pass, "
                                    f"{by.loc[m, 's / step']:.2f} s per step" for m in free)
    added = pd.to_numeric(by.get("added MB", pd.Series(dtype=float)), errors="coerce")
    if added.notna().all() and len(added):
        because += ("; memory added during the run: " + ", ".join(f"{m.upper()} {added[m]:.0f} MB" for m in by.index)
                    + f" ({payload['runs'][0].get('memory_kind', 'memory')})")
    verdict = "does not hold" if kto_ref > 1.0 else "holds"
    because += (". With LoRA the reference is the base with the adapter off: no second copy in memory, but a "
                "forward pass per sequence. The methods without a reference are SimPO and ORPO, not KTO.")
    return Verdict("compute", CLAIM_TEXT["compute"], verdict, because, table, payload.get("command", ""))


VERDICTS = {"unpaired": verdict_unpaired, "noise": verdict_noise, "imbalance": verdict_imbalance,
            "compute": verdict_compute}


def verdicts(claims: dict[str, Any], tolerance: float = config.CLAIMS.accuracy_tolerance,
             missing: str = "no shipped runs for this claim.") -> list[Verdict]:
    """One verdict per claim of :data:`CLAIM_ORDER`; "not measured", because ``missing``, where the results hold
    none."""
    out = []
    for claim in CLAIM_ORDER:
        if claim in claims and claims[claim].get("runs"):
            out.append(VERDICTS[claim](claims[claim], tolerance))
        else:
            out.append(Verdict(claim, CLAIM_TEXT[claim], "not measured", missing, pd.DataFrame(), ""))
    return out
