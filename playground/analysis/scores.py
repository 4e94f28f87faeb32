"""The one expensive step of Inspect: log-probs of a data set under each variant and the reference, cached.

For each pair it scores chosen and rejected under every requested variant and under the reference, plus KTO's
mismatched pairs of the unpaired view, with every variant in each model call (the packed, prompt-sharing forward
with per-token adapters where the model allows it), holding ``engine.lock`` per call only, so generation can
interleave.
"""

from __future__ import annotations

import dataclasses
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np
import pandas as pd

from playground.analysis.cache import InspectCache, base_identity, cache_key, reward_model_key, task_key
from playground.analysis.datasets import dataset_hash, kl_index, prepare_pairs, prompt_text, unpaired_view
from playground.analysis.reward_model import RewardModelScores, fit_reward_model, reward_features_on
from playground.config import BASE_VARIANT, SCORING, VALUES
from playground.engine import scoring
from playground.objectives.task_metrics import task_metric_scores

if TYPE_CHECKING:
    from playground.engine.engine import Engine

Progress = Callable[[float, str], None]


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
    policies: dict[str, SideScores]  # variant name -> scores; config.BASE_VARIANT is the reference itself
    base_identity: str
    max_length: int = SCORING.max_length
    task: dict[str, dict[str, Any]] = field(default_factory=dict)  # metric -> {"chosen", "rejected", "metrics"}
    notes: list[str] = field(default_factory=list)
    from_disk: bool = False  # True when the numbers came from the precomputed file
    reward_model: RewardModelScores | None = None  # R_phi of the 2P responses (None: not fitted for this data)

    @property
    def n_pairs(self) -> int:
        return len(self.pairs)

    @property
    def variants(self) -> list[str]:
        return list(self.policies)

    def side(self, variant: str) -> SideScores:
        if variant == BASE_VARIANT:
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
    """Task metric of every chosen and rejected answer against the pair's reference answer (see task_metrics)."""
    references = [r or None for r in pairs["reference"]] if "reference" in pairs else None
    n = len(pairs)
    responses = list(pairs["chosen"]) + list(pairs["rejected"])
    refs = (references or [None] * n) * 2
    result = task_metric_scores(responses, refs, metric=metric)
    scores = result.scores.double().numpy()
    return {"chosen": scores[:n], "rejected": scores[n:], "metrics": list(result.metrics)}


class ModelCalls(Protocol):
    """The two model calls Inspect makes: :func:`score_rows_on` and ``reward_model.reward_features_on`` themselves
    (:class:`DirectCalls`), or wrappers that run them where the accelerator is (``serving`` on ZeroGPU)."""

    def score_rows(self, engine: Engine, pairs: pd.DataFrame, names: list[str], progress: Progress | None, *,
                   max_length: int, batch_size: int) -> dict[str, SideScores]: ...

    def reward_features(self, engine: Engine, pairs: pd.DataFrame, *, max_length: int,
                        batch_size: int) -> np.ndarray: ...


class DirectCalls:
    """:class:`ModelCalls` in this process."""

    def score_rows(self, engine, pairs, names, progress, *, max_length, batch_size):
        return score_rows_on(engine, pairs, names, progress, max_length=max_length, batch_size=batch_size)

    def reward_features(self, engine, pairs, *, max_length, batch_size):
        return reward_features_on(engine, pairs, max_length=max_length, batch_size=batch_size)


def score_dataset(engine: Engine, pairs_df: pd.DataFrame, variants: Sequence[str], progress: Progress | None = None,
                  *, cache: InspectCache | None = None, calls: ModelCalls | None = None,
                  max_length: int = SCORING.max_length, batch_size: int = SCORING.batch_size) -> DatasetScores:
    """Score chosen, rejected and the KTO mismatched pairs under each variant and the reference.

    ``pairs_df``: prompt, chosen, rejected (+ system, reference) or an unpaired frame (see ``prepare_pairs``).
    ``variants``: user-facing names (``base``, ``dpo``, ``kto``, ...); the reference is always scored. Adapters already
    in ``cache`` are not scored again; the rest go to ``calls.score_rows`` in one call. The reward model R_phi is
    fitted once per data set from ``calls.reward_features`` (see ``reward_model``) and cached too.
    ``progress(fraction, message)`` is called after each batch.
    """
    pairs, notes = prepare_pairs(pairs_df)
    dhash = dataset_hash(pairs, max_length)
    variants = list(dict.fromkeys(variants))
    engine.adapter_names_for(variants)  # raises KeyError on an unknown variant
    names = [BASE_VARIANT] + [v for v in variants if v != BASE_VARIANT]
    results: dict[str, SideScores] = {}
    todo: list[str] = []
    for name in names:
        cached = cache.get(cache_key(engine, dhash, name)) if cache is not None else None
        if cached is not None:
            results[name] = cached
        else:
            todo.append(name)
    calls = calls or DirectCalls()
    if todo:
        computed = calls.score_rows(engine, pairs, todo, progress, max_length=max_length, batch_size=batch_size)
        for name, side in computed.items():
            results[name] = side
            if cache is not None:
                cache.put(cache_key(engine, dhash, name), side)
    elif progress:
        progress(1.0, "All numbers came from the cache")

    task: dict[str, dict[str, Any]] | None = cache.get(task_key(dhash)) if cache is not None else None
    if task is None:
        task = {}
        if cache is not None:
            cache.put(task_key(dhash), task)
    reward_model = cache.get(reward_model_key(engine, dhash)) if cache is not None else None
    if reward_model is None:
        if progress:
            progress(1.0, "Reading the base model's features of the answers for the reward model R_phi")
        features = calls.reward_features(engine, pairs, max_length=max_length, batch_size=batch_size)
        reward_model = fit_reward_model(features)
        if cache is not None:
            cache.put(reward_model_key(engine, dhash), reward_model)
    scores = DatasetScores(
        dataset_hash=dhash, pairs=pairs, reference=results[BASE_VARIANT],
        policies={v: results[v] for v in variants}, base_identity=base_identity(engine), max_length=max_length,
        task=task, notes=notes, reward_model=reward_model,
    )
    scores.task_scores(VALUES.task_metric)  # the default metric now, so the first redraw is fast
    truncated = int(scores.reference.truncated.sum())
    if truncated:
        scores.notes.append(f"{truncated} pair(s) longer than {max_length} tokens were truncated for scoring.")
    return scores


def _scored_batches(engine: Engine, texts: list[tuple[Any, str, str]], names: list[str],
                    peft_name: dict[str, str] | None, *, max_length: int, batch_size: int):
    """``(jobs, scores)`` per model call, a job being (text index, variant name), until every text is scored under
    every variant. The packed, prompt-sharing forward (``engine.packed``) with per-sequence adapters where the model
    allows it: all variants of a prompt's texts in one padding-free row of about ``SCORING.packed_tokens`` tokens;
    else padded batches of ``batch_size`` rows (``scoring.score``). ``engine.lock`` is held per call."""
    import torch

    from playground.engine import threads
    from playground.engine.packed import packed_logps_supported, packed_sequence_logps
    from playground.engine.templating import tokenize_pair

    adapters = None if peft_name is None else [peft_name[name] for name in names]
    packed = packed_logps_supported(engine.model) and (adapters is None or scoring.stacks(engine.model))
    if not packed:
        # similar lengths together (less padding), and one text's rows for all adapters side by side
        order = sorted(range(len(texts)), key=lambda t: (len(prompt_text(texts[t][0])) + len(texts[t][1]), t))
        jobs = [(t, name) for t in order for name in names]
        for start in range(0, len(jobs), batch_size):
            batch = jobs[start: start + batch_size]
            with engine.lock:  # per batch, so generation requests can run between batches
                yield batch, scoring.score(
                    engine.model, engine.tokenizer, [texts[t][0] for t, _ in batch],
                    [texts[t][1] for t, _ in batch], systems=[texts[t][2] or None for t, _ in batch],
                    adapter=None if peft_name is None else [peft_name[name] for _, name in batch],
                    max_length=max_length, batch_size=batch_size)
        return
    tokenized = [tokenize_pair(engine.tokenizer, p, r, s or None, max_length) for p, r, s in texts]
    # a prompt's texts side by side (they share its one copy), variant by variant
    order = sorted(range(len(texts)), key=lambda t: (tokenized[t].prompt_ids, t))
    jobs = [(t, v) for v in range(len(names)) for t in order]
    budget = SCORING.packed_tokens
    start = 0
    while start < len(jobs):
        stop, used = start, 0
        while stop < len(jobs) and (stop == start or used + len(tokenized[jobs[stop][0]].input_ids) <= budget):
            used += len(tokenized[jobs[stop][0]].input_ids)
            stop += 1
        chunk = jobs[start:stop]
        sequences = [tokenized[t] for t, _ in chunk]
        with engine.lock, torch.inference_mode(), threads.for_role("scoring"):
            sums, lens = packed_sequence_logps(engine.model, sequences, engine.tokenizer.pad_token_id,
                                               engine.device.device,
                                               adapter_names=None if adapters is None else [adapters[v]
                                                                                            for _, v in chunk])
        yield [(t, names[v]) for t, v in chunk], scoring.Scores(
            [], [], sums.cpu(), sums.cpu() / lens.clamp(min=1), lens, [tokenized[t].truncated for t, _ in chunk])
        start = stop


def score_rows_on(engine: Engine, pairs: pd.DataFrame, names: list[str], progress: Progress | None, *,
                  max_length: int, batch_size: int) -> dict[str, SideScores]:
    """Log-probs of prepared ``pairs`` under each variant of ``names`` (``base`` = the reference) on ``engine``.

    One sequence per (text, variant), all variants in each model call (per-row or per-token adapters, see
    ``_scored_batches``); texts are chosen (P), rejected (P), then the 2P mismatched pairs. ``engine.lock`` is held
    per call only."""
    n = len(pairs)
    prompts, completions, systems, _ = unpaired_view(pairs)
    mismatch = kl_index(n)
    texts: list[tuple[Any, str, str]] = [(prompts[k], completions[k], systems[k]) for k in range(2 * n)]
    texts += [(prompts[k], completions[int(mismatch[k])], systems[k]) for k in range(2 * n)]
    use_adapters = bool(engine.adapters)
    peft_name = dict(zip(names, engine.adapter_names_for(names)))
    sums = {name: np.zeros(len(texts)) for name in names}
    lengths = {name: np.zeros(len(texts), dtype=np.int64) for name in names}
    cut = {name: np.zeros(len(texts), dtype=bool) for name in names}
    total = len(texts) * len(names)
    if progress:
        progress(0.0, f"Scoring {n} pairs under {', '.join(names)} ({total} sequences)")
    started = time.perf_counter()
    done = 0
    for batch, result in _scored_batches(engine, texts, names, peft_name if use_adapters else None,
                                         max_length=max_length, batch_size=batch_size):
        for row, (t, name) in enumerate(batch):
            sums[name][t] = float(result.sum_logps[row])
            lengths[name][t] = int(result.lengths[row])
            cut[name][t] = bool(result.truncated[row])
        if progress:
            done += len(batch)
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
