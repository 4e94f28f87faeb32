"""Training data as the loop needs it: tokenised rows, the batch plan, the step count and the settings' checks."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import pandas as pd
import torch

from playground import config
from playground.engine.templating import TokenizedPair, tokenize_pair
from playground.feedback import FeedbackReport, prompt_key, split_heldout
from playground.objectives.kto import mismatched_pairs


class TrainingInputError(ValueError):
    """Hyperparameters or data that cannot be trained on; the message names the value."""


@dataclass
class TrainData:
    """Tokenised training rows. DPO: ``chosen``/``rejected`` aligned pairs. KTO: ``samples`` with ``desirable``."""

    method: str
    chosen: list[TokenizedPair] = field(default_factory=list)
    rejected: list[TokenizedPair] = field(default_factory=list)
    samples: list[TokenizedPair] = field(default_factory=list)
    desirable: list[bool] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.chosen) if config.is_paired(self.method) else len(self.samples)

    def lengths(self) -> list[int]:
        """Tokens per training row (a pair is its chosen plus its rejected sequence), for the batch plan."""
        if config.is_paired(self.method):
            return [len(c.input_ids) + len(r.input_ids) for c, r in zip(self.chosen, self.rejected)]
        return [len(s.input_ids) for s in self.samples]


def row_system(row) -> str | None:
    """A row's system prompt, or None when it has none (missing, empty or not text)."""
    value = row.get("system") if hasattr(row, "get") else None
    return value if isinstance(value, str) and value.strip() else None


def tokenize_frame(tokenizer, frame: pd.DataFrame, method: str, max_length: int) -> TrainData:
    """Tokenise a normalised feedback frame: paired columns for the pairwise methods (DPO, SimPO, ORPO, APO),
    (prompt, completion, label) for the unpaired ones (KTO, BCO)."""
    data = TrainData(method)
    for row in frame.to_dict("records"):
        system = row_system(row)
        if config.is_paired(method):
            data.chosen.append(tokenize_pair(tokenizer, row["prompt"], row["chosen"], system, max_length))
            data.rejected.append(tokenize_pair(tokenizer, row["prompt"], row["rejected"], system, max_length))
        else:
            data.samples.append(tokenize_pair(tokenizer, row["prompt"], row["completion"], system, max_length))
            data.desirable.append(bool(row["label"]))
    return data


def plan_batches(lengths: Sequence[int], batch_size: int, total_steps: int, seed: int,
                 bucket_batches: int = 8) -> list[list[int]]:
    """Row indices for each step: shuffled per epoch, length-bucketed within windows of ``bucket_batches`` batches.

    Bucketing cuts padding. KTO passes ``bucket_batches=1``: desirable and undesirable answers often differ in
    length, and bucketing would then give batches of one label only. Deterministic in ``seed``. Batches never
    mix epochs; the last partial batch of an epoch is kept when it holds at least 2 rows (KTO's z0 estimate
    needs 2), else merged into the previous one.
    """
    generator = torch.Generator().manual_seed(seed)
    batches: list[list[int]] = []
    while len(batches) < total_steps:
        order = torch.randperm(len(lengths), generator=generator).tolist()
        window = batch_size * bucket_batches
        epoch: list[list[int]] = []
        for start in range(0, len(order), window):
            chunk = sorted(order[start: start + window], key=lambda i: lengths[i])
            epoch.extend(chunk[i: i + batch_size] for i in range(0, len(chunk), batch_size))
        merged: list[list[int]] = []
        for batch in epoch:
            if len(batch) < min(2, batch_size) and merged:
                merged[-1].extend(batch)
            else:
                merged.append(batch)
        shuffle = torch.randperm(len(merged), generator=generator).tolist()
        batches.extend(merged[i] for i in shuffle)
    return batches[:total_steps]


def count_steps(rows: int, train_config: config.TrainConfig) -> int:
    """Optimizer steps: ``steps`` when set, else ``ceil(epochs * rows / batch_size)``."""
    if train_config.steps:
        return train_config.steps
    return max(1, math.ceil(train_config.epochs * rows / train_config.batch_size))


def validate_train_config(train_config: config.TrainConfig, rows: int) -> None:
    """Refuse out-of-range hyperparameters with a message naming the value."""
    tc, lora = train_config, train_config.lora
    min_batch = 2 if tc.method == "kto" else 1
    checks = [
        (tc.method in config.METHOD_FORMATS,
         f"method must be one of {', '.join(config.METHOD_FORMATS)} (got {tc.method!r})"),
        (tc.loss.beta > 0 and math.isfinite(tc.loss.beta), f"beta must be > 0 (got {tc.loss.beta})"),
        (0 < tc.learning_rate < 1, f"learning rate must be in (0, 1) (got {tc.learning_rate})"),
        (tc.steps >= 0, f"steps must be >= 0 (got {tc.steps})"),
        (tc.steps > 0 or tc.epochs > 0, "set steps > 0 or epochs > 0: 0 steps trains nothing"),
        (tc.batch_size >= min_batch, f"batch size must be >= {min_batch} (got {tc.batch_size}); "
         "KTO needs 2 samples per batch to estimate its reference point z0"),
        (rows >= 1, "the data has no usable rows"),
        (tc.batch_size <= max(rows, 1), f"batch size {tc.batch_size} is larger than the data ({rows} rows)"),
        (lora.r >= 1 and lora.alpha > 0, f"LoRA rank and alpha must be positive (got r={lora.r})"),
        (0 <= lora.dropout < 1, f"LoRA dropout must be in [0, 1) (got {lora.dropout})"),
        (0 <= tc.warmup_ratio < 1, f"warmup ratio must be in [0, 1) (got {tc.warmup_ratio})"),
        (tc.max_length >= 16, f"max length must be >= 16 tokens (got {tc.max_length})"),
        (tc.max_grad_norm > 0, f"max grad norm must be > 0 (got {tc.max_grad_norm})"),
    ]
    for ok, message in checks:
        if not ok:
            raise TrainingInputError(message)


def mismatched_batch(samples: list[TokenizedPair], rows: list[int]) -> list[TokenizedPair]:
    """KTO's KL batch for one step: prompt i with the completion of row (i + 1) mod B."""
    partner = mismatched_pairs(len(rows)).tolist()
    return [TokenizedPair(samples[rows[i]].prompt_ids, samples[rows[j]].response_ids) for i, j in enumerate(partner)]


def choose_heldout(report: FeedbackReport, label: str, train_config: config.TrainConfig, fraction: float | None,
                   demo: tuple[pd.DataFrame, str] | None = None
                   ) -> tuple[pd.DataFrame, pd.DataFrame | None, str, list[str]]:
    """Which rows a run trains on and which pairs it is measured on: (training rows, held-out pairs or None, what the
    held-out metrics are measured on in words, notes for the user).

    The data's own held-out split (``fraction`` of its prompts, by default ``config.TRAIN.held_out_fraction``) when it
    has at least ``held_out_min_rows`` rows; ``demo`` (the bundled held-out pairs and their file name) only when the
    data is the demo training set; else nothing, said plainly. Raises ValueError on a share that leaves nothing.
    """
    fraction = config.TRAIN.held_out_fraction if fraction is None else float(fraction)
    if demo is not None:
        pairs, source = demo
        return report.data, pairs, (f"the bundled demo held-out set ({len(pairs)} pairs of {source}, prompts the demo "
                                    "training set does not contain)"), [
            f"Training on the demo data: held-out metrics use the {len(pairs)} bundled held-out pairs."]
    if fraction <= 0:
        return report.data, None, "", ["No held-out share: the run is judged by its probe answers only."]
    if report.rows_usable < train_config.held_out_min_rows:
        return report.data, None, "", [
            f"{report.rows_usable} rows are fewer than {train_config.held_out_min_rows}, too few to keep some back: no "
            "held-out split, so no held-out metrics or early stopping; the probe answers show how the run goes."]
    rows, heldout = split_heldout(report.data, report.format, fraction, train_config.seed)
    if heldout is None:
        return rows, None, "", [f"The {fraction:.0%} of prompts held out gave no pair (they have only one label)."]
    prompts = heldout["prompt"].map(prompt_key).nunique()
    return rows, heldout, (f"your held-out split: {len(heldout)} pairs from {prompts} prompts of {label} kept out of "
                           "training"), [
        f"{len(heldout)} held-out pairs from {prompts} prompts ({fraction:.0%} of the prompts) kept out of training."]
