"""The data of the claims experiments: label noise, thumbs-only feedback and an imbalanced share of desirable answers,
made from a clean paired set by seeded, pure functions (a frame in, a new frame out; the input is never changed).

Every function draws from ``numpy.random.default_rng(seed)`` only, so one seed gives the same rows on every machine,
and the noisy variants of one seed are nested: the rows flipped at 10% are among those flipped at 20%.
"""

from __future__ import annotations

import numpy as np
import pandas as pd


def flip_pairs(pairs: pd.DataFrame, rate: float, seed: int) -> tuple[pd.DataFrame, np.ndarray]:
    """``pairs`` with ``round(rate * len(pairs))`` of them swapped (chosen <-> rejected): a labeller's mistakes.

    Returns (the noisy pairs, a bool array of length ``len(pairs)``: True where the pair was flipped). Which rows
    flip is one seeded permutation cut at the rate, so a higher rate flips a superset of a lower one.
    """
    if not 0.0 <= rate <= 1.0:
        raise ValueError(f"flip rate must lie in [0, 1] (got {rate})")
    order = np.random.default_rng(seed).permutation(len(pairs))
    flipped = np.zeros(len(pairs), dtype=bool)
    flipped[order[: int(round(rate * len(pairs)))]] = True
    noisy = pairs.copy()
    chosen = noisy["chosen"].to_numpy(copy=True)
    rejected = noisy["rejected"].to_numpy(copy=True)
    noisy["chosen"] = np.where(flipped, rejected, chosen)
    noisy["rejected"] = np.where(flipped, chosen, rejected)
    return noisy.reset_index(drop=True), flipped


def thumbs_only(pairs: pd.DataFrame, seed: int) -> pd.DataFrame:
    """One labelled answer per pair, as a thumbs-up/down interface collects it: each prompt shows one answer, and the
    user rates it. A seeded coin per pair keeps either the chosen answer (label True) or the rejected one (False).

    Returns unpaired rows (prompt, completion, label, and ``system`` when present), one per pair, in pair order.
    """
    keep_chosen = np.random.default_rng(seed).random(len(pairs)) < 0.5
    extra = [c for c in ("system",) if c in pairs.columns]
    rows = []
    for keep, record in zip(keep_chosen, pairs.to_dict("records")):
        rows.append({"prompt": record["prompt"], "completion": record["chosen" if keep else "rejected"],
                     "label": bool(keep), **{c: record[c] for c in extra}})
    out = pd.DataFrame(rows, columns=["prompt", "completion", "label", *extra])
    out["label"] = out["label"].astype(bool)
    return out


def desirable_share(samples: pd.DataFrame, share: float, seed: int) -> pd.DataFrame:
    """Labelled answers with only ``share`` of them desirable: every undesirable answer is kept and a seeded subset
    of the desirable ones, ``n_D = round(share / (1 - share) * n_U)`` (at most all of them).

    The KTO paper (Ethayarajh et al. 2024, section 4.3) reports that KTO tolerates up to 90% fewer desirable examples
    when lambda_D is raised to keep lambda_D n_D / (lambda_U n_U) in [1, 4/3] (``objectives.kto.kto_weight_advice``).
    """
    if not 0.0 < share < 1.0:
        raise ValueError(f"the desirable share must lie strictly between 0 and 1 (got {share})")
    labels = samples["label"].astype(bool).to_numpy()
    desirable, undesirable = np.flatnonzero(labels), np.flatnonzero(~labels)
    wanted = min(len(desirable), int(round(share / (1.0 - share) * len(undesirable))))
    kept = np.random.default_rng(seed).permutation(desirable)[:wanted]
    rows = np.sort(np.concatenate([kept, undesirable]))
    return samples.iloc[rows].reset_index(drop=True)
