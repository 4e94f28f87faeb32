"""Converting feedback between the paired (DPO) and unpaired (KTO) formats, and splitting off held-out prompts."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from playground import config
from playground.feedback.schema import OPTIONAL_COLUMNS, ConversionStats, cell_text, parse_label, prompt_key


def _extra_columns(df: pd.DataFrame) -> list[str]:
    return [c for c in OPTIONAL_COLUMNS if c in df.columns]


def paired_to_unpaired(df: pd.DataFrame, *, drop_duplicates: bool = True) -> pd.DataFrame:
    """Each pair becomes two rows: (prompt, chosen, True) then (prompt, rejected, False).

    ``system`` and ``reference`` are carried over. With ``drop_duplicates`` a (prompt, completion, label, system) row
    that already appeared (e.g. one chosen answer shared by several pairs) is kept once.
    """
    extra = _extra_columns(df)
    rows = []
    seen: set[tuple] = set()
    for rec in df.to_dict("records"):
        carried = {c: rec[c] for c in extra}
        for completion, label in ((rec["chosen"], True), (rec["rejected"], False)):
            key = (prompt_key(rec["prompt"]), completion, label, cell_text(carried.get("system")))
            if drop_duplicates and key in seen:
                continue
            seen.add(key)
            rows.append({"prompt": rec["prompt"], "completion": completion, "label": label, **carried})
    out = pd.DataFrame(rows, columns=["prompt", "completion", "label", *extra])
    out["label"] = out["label"].astype(bool)
    return out


def unpaired_to_paired(df: pd.DataFrame) -> tuple[pd.DataFrame, ConversionStats]:
    """Pair desirable with undesirable completions of the same prompt (and system prompt).

    Within a prompt, the i-th desirable completion is paired with the i-th undesirable one, in file order; what is
    left over is counted in the stats. Prompts keep their first-appearance order; ``reference`` is the prompt's first
    non-empty reference. Raises ValueError on an unrecognised label.
    """
    extra = _extra_columns(df)
    groups: dict[tuple[str, str], dict[str, Any]] = {}
    for rec in df.to_dict("records"):
        label = parse_label(rec["label"])
        if label is None:
            raise ValueError(f"unrecognised label {rec['label']!r}")
        key = (prompt_key(rec["prompt"]), cell_text(rec.get("system")))
        group = groups.setdefault(key, {"prompt": rec["prompt"], True: [], False: [], "reference": ""})
        for c in extra:
            if c == "system":
                group["system"] = rec["system"]
            elif not group["reference"] and cell_text(rec.get("reference")):
                group["reference"] = rec["reference"]
        group[label].append(rec["completion"])
    rows = []
    stats = dict.fromkeys(
        (
            "pairs",
            "prompts_paired",
            "prompts_only_desirable",
            "prompts_only_undesirable",
            "unused_desirable",
            "unused_undesirable",
        ),
        0,
    )
    for group in groups.values():
        good, bad = group[True], group[False]
        n = min(len(good), len(bad))
        for chosen, rejected in zip(good[:n], bad[:n]):
            rows.append(
                {
                    "prompt": group["prompt"],
                    "chosen": chosen,
                    "rejected": rejected,
                    **{c: group.get(c, "") for c in extra},
                }
            )
        stats["pairs"] += n
        stats["prompts_paired"] += n > 0
        stats["prompts_only_desirable"] += bool(good) and not bad
        stats["prompts_only_undesirable"] += bool(bad) and not good
        stats["unused_desirable"] += len(good) - n
        stats["unused_undesirable"] += len(bad) - n
    out = pd.DataFrame(rows, columns=["prompt", "chosen", "rejected", *extra])
    return out, ConversionStats(prompts=len(groups), **stats)


def split_heldout(frame: pd.DataFrame, fmt: str, fraction: float, seed: int = 0) -> tuple[pd.DataFrame,
                                                                                         pd.DataFrame | None]:
    """Keep ``fraction`` of the prompts out of training; return (training rows, held-out *pairs* or None).

    The split is by prompt, so no prompt is both trained on and measured. Unpaired held-out rows are paired with
    ``unpaired_to_paired`` (prompts with only one label give no pair). ``fraction`` 0 keeps everything.
    """
    if not 0 <= fraction < 1:
        raise ValueError(f"The held-out share must be in [0, 1) (got {fraction}).")
    if fraction == 0 or frame.empty:
        return frame, None
    keys = frame["prompt"].map(prompt_key)
    prompts = list(dict.fromkeys(keys))
    order = np.random.default_rng(seed).permutation(len(prompts)).tolist()
    n_held = int(round(fraction * len(prompts)))
    if n_held == 0 or n_held >= len(prompts):
        raise ValueError(f"A held-out share of {fraction:g} of {len(prompts)} prompts leaves "
                                f"{'no prompt held out' if n_held == 0 else 'nothing to train on'}; change it.")
    held_keys = {prompts[i] for i in order[:n_held]}
    mask = keys.isin(held_keys)
    train_rows, held_rows = frame[~mask].reset_index(drop=True), frame[mask].reset_index(drop=True)
    if fmt == "unpaired":
        held_rows, _stats = unpaired_to_paired(held_rows)
    return train_rows, (held_rows if len(held_rows) else None)


def frame_for_method(data: pd.DataFrame, fmt: str, method: str) -> tuple[pd.DataFrame, str]:
    """Convert normalised feedback rows to what ``method`` trains on; return (rows, a note on any conversion)."""
    name = method.upper().replace("_", "-")
    if not config.is_paired(method) and fmt == "paired":
        rows = paired_to_unpaired(data)
        return rows, f"{name} trains on labelled answers: {len(data)} pairs became {len(rows)} samples."
    if config.is_paired(method) and fmt == "unpaired":
        rows, stats = unpaired_to_paired(data)
        return rows, f"{name} trains on pairs: {stats}"
    return data, ""


def label_counts(data: pd.DataFrame, fmt: str | None) -> tuple[int, int]:
    """(desirable, undesirable) sample counts KTO would see: paired rows give one of each per pair."""
    if data is None or data.empty or fmt is None:
        return 0, 0
    if fmt == "paired":
        return len(data), len(data)
    labels = data["label"].astype(bool)
    return int(labels.sum()), int((~labels).sum())
