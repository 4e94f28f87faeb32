"""Data sets for Inspect: any paired or unpaired frame normalised to pairs, its hash, and its unpaired view.

The unpaired (KTO) view of a data set of P pairs has 2P samples in the order [chosen_0..chosen_{P-1},
rejected_0..rejected_{P-1}]: chosen = desirable, rejected = undesirable. Sample k's mismatched pair is (x_k, y_j) with
j = ``kto.mismatched_pairs(2P)[k]``, so z0 is exactly what ``kto.kto_loss`` computes on that batch.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from playground import config
from playground.common.files import sha256_bytes
from playground.config import INSPECT, SCORING
from playground.engine import templating
from playground.feedback import read_heldout_pairs, unpaired_to_paired
from playground.feedback.schema import cell_text
from playground.objectives.kto import mismatched_pairs

DEFAULT_DATASET = config.REPO_ROOT / "data" / "demo_pairs_heldout.csv"
OPTIONAL_COLUMNS = ("system", "reference", "category")


def _prompt_value(value: Any) -> str | list[dict[str, str]]:
    """A prompt as ``scoring`` takes it: plain text, or a list of chat messages (also given as a JSON string)."""
    if isinstance(value, list):
        return [dict(m) for m in value]
    text = cell_text(value)
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
    return templating.prompt_text(_prompt_value(prompt))


def snippet(text: Any, limit: int = INSPECT.snippet_chars) -> str:
    flat = " ".join(cell_text(text).split())
    return flat if len(flat) <= limit else flat[: limit - 1].rstrip() + "…"


def prepare_pairs(df: pd.DataFrame, max_pairs: int = INSPECT.max_pairs) -> tuple[pd.DataFrame, list[str]]:
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
        renamed = df.rename(columns={v: k for k, v in columns.items()})
        df, stats = unpaired_to_paired(renamed)
        if stats.pairs == 0:
            raise ValueError(
                f"No pairs: none of the {stats.prompts} prompts has both a desirable and an undesirable answer "
                "(thumbs-only votes, for example). Inspect compares a chosen with a rejected answer, and so does "
                "the reward model R_phi, which is fitted on such pairs: vote left/right better, or rate two answers "
                "of one prompt.")
        notes.append(f"Unpaired data paired for Inspect: {stats}")
        columns = {str(c).strip().lower(): c for c in df.columns}
    missing = [c for c in ("prompt", "chosen", "rejected") if c not in columns]
    if missing:
        raise ValueError(f"the data set lacks column(s) {missing}: Inspect needs prompt, chosen, rejected "
                         "(or prompt, completion, label)")
    out = pd.DataFrame({
        "prompt": [_prompt_value(v) for v in df[columns["prompt"]]],
        "chosen": [cell_text(v) for v in df[columns["chosen"]]],
        "rejected": [cell_text(v) for v in df[columns["rejected"]]],
    })
    for name in OPTIONAL_COLUMNS:
        out[name] = [cell_text(v) for v in df[columns[name]]] if name in columns else [""] * len(out)
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
    return sha256_bytes(payload.encode("utf-8"))


def unpaired_view(pairs: pd.DataFrame) -> tuple[list[Any], list[str], list[str], list[bool]]:
    """(prompts, completions, systems, desirable) of the 2P samples: all chosen (desirable), then all rejected."""
    prompts = list(pairs["prompt"]) * 2
    completions = list(pairs["chosen"]) + list(pairs["rejected"])
    systems = list(pairs["system"]) * 2
    desirable = [True] * len(pairs) + [False] * len(pairs)
    return prompts, completions, systems, desirable


def kl_index(n_pairs: int) -> np.ndarray:
    """For each of the 2P unpaired samples, the index of the completion of its mismatched pair (shift 1)."""
    return mismatched_pairs(2 * n_pairs).numpy()


def load_heldout(path: Path = DEFAULT_DATASET) -> pd.DataFrame:
    """The held-out pairs exactly as the app loads them (``feedback.read_heldout_pairs``: validated, capped at
    ``config.APP.heldout_pairs_limit``), so the hashes match."""
    frame, note = read_heldout_pairs(Path(path), config.APP.heldout_pairs_limit)
    if frame is None:
        raise ValueError(note or f"{path} is not a usable paired file")
    return frame
