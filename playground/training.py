"""The short DPO/KTO LoRA loop: per-sample terms every step, cancel within one step, atomic save.

Its own loop rather than HF's Trainer, because the app needs each step's per-sample terms and a cancel that acts at
the next step. The reference is the base with the adapter disabled; its log-probs are computed once, before the
first step, for every sequence the planned batches will use (KTO's mismatched pairs included).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import shutil
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import torch

from playground import config, losses
from playground.models import DeviceChoice
from playground.scoring import (
    Batch,
    TokenizedPair,
    cached_head_casts,
    collate,
    packed_logps_supported,
    packed_logps_with_continuations,
    packed_sequence_logps,
    response_token_logps,
    tokenize_pair,
)


class TrainingInputError(ValueError):
    """Hyperparameters or data that cannot be trained on; the message names the value."""


# --------------------------------------------------------------------------------------------------------------------
# Data


@dataclass
class TrainData:
    """Tokenised training rows. DPO: ``chosen``/``rejected`` aligned pairs. KTO: ``samples`` with ``desirable``."""

    method: str
    chosen: list[TokenizedPair] = field(default_factory=list)
    rejected: list[TokenizedPair] = field(default_factory=list)
    samples: list[TokenizedPair] = field(default_factory=list)
    desirable: list[bool] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.chosen) if self.method == "dpo" else len(self.samples)


def _system(row) -> str | None:
    value = row.get("system") if hasattr(row, "get") else None
    return value if isinstance(value, str) and value.strip() else None


def tokenize_frame(tokenizer, frame: pd.DataFrame, method: str, max_length: int) -> TrainData:
    """Tokenise a normalised feedback frame: paired columns for DPO, (prompt, completion, label) for KTO."""
    data = TrainData(method)
    for row in frame.to_dict("records"):
        system = _system(row)
        if method == "dpo":
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


def count_steps(rows: int, train: config.TrainConfig) -> int:
    """Optimizer steps: ``steps`` when set, else ``ceil(epochs * rows / batch_size)``."""
    if train.steps:
        return train.steps
    return max(1, math.ceil(train.epochs * rows / train.batch_size))


def validate_train_config(train: config.TrainConfig, rows: int) -> None:
    """Refuse out-of-range hyperparameters with a message naming the value."""
    checks = [
        (train.method in ("dpo", "kto"), f"method must be 'dpo' or 'kto' (got {train.method!r})"),
        (train.loss.beta > 0 and math.isfinite(train.loss.beta), f"beta must be > 0 (got {train.loss.beta})"),
        (0 < train.learning_rate < 1, f"learning rate must be in (0, 1) (got {train.learning_rate})"),
        (train.steps >= 0, f"steps must be >= 0 (got {train.steps})"),
        (train.steps > 0 or train.epochs > 0, "set steps > 0 or epochs > 0: 0 steps trains nothing"),
        (train.batch_size >= (2 if train.method == "kto" else 1),
         f"batch size must be >= {2 if train.method == 'kto' else 1} (got {train.batch_size}); "
         "KTO needs 2 samples per batch to estimate its reference point z0"),
        (rows >= 1, "the data has no usable rows"),
        (train.batch_size <= max(rows, 1), f"batch size {train.batch_size} is larger than the data ({rows} rows)"),
        (train.lora.r >= 1 and train.lora.alpha > 0, f"LoRA rank and alpha must be positive (got r={train.lora.r})"),
        (0 <= train.lora.dropout < 1, f"LoRA dropout must be in [0, 1) (got {train.lora.dropout})"),
        (0 <= train.warmup_ratio < 1, f"warmup ratio must be in [0, 1) (got {train.warmup_ratio})"),
        (train.max_length >= 16, f"max length must be >= 16 tokens (got {train.max_length})"),
        (train.max_grad_norm > 0, f"max grad norm must be > 0 (got {train.max_grad_norm})"),
    ]
    for ok, message in checks:
        if not ok:
            raise TrainingInputError(message)


# --------------------------------------------------------------------------------------------------------------------
# Sequence log-probs


def sequence_logps(model, pairs: Sequence[TokenizedPair], pad_token_id: int, device: torch.device,
                   adapter_names: list[str] | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Summed response log-probs (B,) and response lengths (B,) for ``pairs`` in one forward pass.

    Packed where the model allows it (:func:`playground.scoring.packed_sequence_logps`: responses to one prompt share
    its forward, no padding waste, LM head only where a response token is predicted); else one padded row per pair.
    """
    if adapter_names is None and packed_logps_supported(model):
        return packed_sequence_logps(model, pairs, pad_token_id, device)
    batch: Batch = collate(pairs, pad_token_id, "right", device)
    token_logps, mask = response_token_logps(model, batch, adapter_names)
    return token_logps.sum(-1), mask.sum(-1)


def _prompt_major_order(sequences: Sequence[TokenizedPair]) -> list[int]:
    """Indices with same-prompt sequences adjacent (so a batch shares their prompt), groups in length order."""
    groups: dict[tuple[int, ...], list[int]] = {}
    for index, seq in enumerate(sequences):
        groups.setdefault(tuple(seq.prompt_ids), []).append(index)
    ordered = sorted(groups.values(), key=lambda members: (
        len(sequences[members[0]].prompt_ids) + sum(len(sequences[i].response_ids) for i in members), members[0]))
    return [i for members in ordered for i in sorted(members, key=lambda i: len(sequences[i].response_ids))]


def precompute_reference(model, sequences: Sequence[TokenizedPair], pad_token_id: int, device: DeviceChoice,
                         batch_size: int) -> torch.Tensor:
    """Reference (adapter disabled) summed log-probs (N,) for every sequence, once, no grad.

    Batches of ``batch_size`` sequences, same-prompt sequences together (they share the prompt's forward on the
    packed path), otherwise length-sorted.
    """
    order = _prompt_major_order(sequences)
    result = torch.zeros(len(sequences))
    with torch.no_grad(), model.disable_adapter(), device.autocast():
        for start in range(0, len(order), batch_size):
            rows = order[start: start + batch_size]
            sums, _ = sequence_logps(model, [sequences[i] for i in rows], pad_token_id, device.device)
            result[rows] = sums.float().cpu()
    return result


# --------------------------------------------------------------------------------------------------------------------
# Progress


@dataclass
class StepMetrics:
    """What the callback receives after every optimizer step."""

    step: int
    total_steps: int
    loss: float
    rewards_chosen: float  # DPO: mean chosen reward; KTO: mean desirable reward
    rewards_rejected: float  # DPO: mean rejected reward; KTO: mean undesirable reward
    margin: float
    accuracy: float  # DPO: chosen reward above rejected; KTO: r on the label's side of z0
    z0: float  # KTO reference point (NaN for DPO)
    learning_rate: float
    grad_norm: float
    tokens_per_s: float
    elapsed_s: float
    eta_s: float
    per_sample: dict[str, list] = field(default_factory=dict)

    def scalars(self) -> dict[str, float]:
        return {k: v for k, v in dataclasses.asdict(self).items() if k != "per_sample"}


@dataclass
class TrainResult:
    adapter_dir: Path | None
    meta: dict[str, Any]
    history: list[dict[str, float]]
    cancelled: bool


def _nan_to_none(value):
    return None if isinstance(value, float) and not math.isfinite(value) else value


def _mean(values: list[float]) -> float:
    finite = [v for v in values if math.isfinite(v)]
    return sum(finite) / len(finite) if finite else math.nan


# --------------------------------------------------------------------------------------------------------------------
# The loop


def _lr_at(step: int, total: int, warmup: int, peak: float) -> float:
    """Linear warmup to ``peak`` over ``warmup`` steps, then linear decay to 10% of it (step is 0-based)."""
    if warmup and step < warmup:
        return peak * (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return peak * (1.0 - 0.9 * progress)


@contextmanager
def autocast_weights(model, device: DeviceChoice) -> Iterator[None]:
    """While training under autocast: frozen base weights of the LoRA-wrapped linears stored in the autocast dtype,
    and PEFT's float32 round trip of low-precision activations before the LoRA matrices turned off.

    Both are bit-for-bit the same computation: autocast casts those frozen weights to the same dtype on every forward
    anyway (it caches casts of trainable leaves only), and a bf16 -> float32 -> bf16 round trip is exact. They save a
    cast of every base weight per forward and two activation casts per LoRA layer (6% per step measured with one
    thread on the project's 2-core CPU; more where threads compete). The original weights are put back on exit.
    The frozen LM head's cast is done once too (``scoring.cached_head_casts``). A no-op without autocast.
    """
    dtype = device.autocast_dtype
    if dtype is None:
        yield
        return
    from peft.helpers import disable_input_dtype_casting
    from peft.tuners.lora.layer import LoraLayer

    swapped: list[tuple[torch.nn.Linear, torch.nn.Parameter]] = []
    try:
        for module in model.modules():
            if not isinstance(module, LoraLayer):
                continue
            base = module.get_base_layer()
            weight = getattr(base, "weight", None)
            if (isinstance(base, torch.nn.Linear) and weight is not None and not weight.requires_grad
                    and weight.dtype == torch.float32):
                swapped.append((base, weight))
                base.weight = torch.nn.Parameter(weight.detach().to(dtype), requires_grad=False)
        with disable_input_dtype_casting(model), cached_head_casts():
            yield
    finally:
        for base, weight in swapped:
            base.weight = weight


def attach_lora(base_model, lora: config.LoraSettings, seed: int):
    from peft import LoraConfig, get_peft_model

    torch.manual_seed(seed)  # LoRA A's init draws from the global generator: seed it for reproducibility
    peft_config = LoraConfig(r=lora.r, lora_alpha=lora.alpha, lora_dropout=lora.dropout,
                             target_modules=list(lora.target_modules), task_type="CAUSAL_LM", bias="none")
    return get_peft_model(base_model, peft_config)


def train(base_model, tokenizer, train_frame: pd.DataFrame, train: config.TrainConfig, *,
          device: DeviceChoice, heldout_frame: pd.DataFrame | None = None,
          callback: Callable[[StepMetrics], None] | None = None, cancel: threading.Event | None = None,
          out_dir: Path | None = None, extra_meta: dict[str, Any] | None = None,
          on_phase: Callable[[str], None] | None = None) -> TrainResult:
    """Fine-tune a fresh LoRA on ``base_model`` (a plain HF model this call may modify) with DPO or KTO.

    ``train_frame``: normalised feedback rows (prompt, chosen, rejected) for DPO, (prompt, completion, label) for KTO.
    ``heldout_frame``: paired rows for held-out preference accuracy. Saves atomically to ``out_dir`` unless cancelled.
    """
    cancel = cancel or threading.Event()
    phase = on_phase or (lambda _message: None)
    validate_train_config(train, len(train_frame))
    data = tokenize_frame(tokenizer, train_frame, train.method, train.max_length)
    pad = tokenizer.pad_token_id
    dev = device.device
    total_steps = count_steps(len(data), train)
    lengths = ([len(c.input_ids) + len(r.input_ids) for c, r in zip(data.chosen, data.rejected)]
               if train.method == "dpo" else [len(s.input_ids) for s in data.samples])
    batches = plan_batches(lengths, train.batch_size, total_steps, train.seed,
                           bucket_batches=8 if train.method == "dpo" else 1)

    model = attach_lora(base_model.to(dev), train.lora, train.seed)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=train.learning_rate, weight_decay=train.weight_decay)
    warmup = int(round(train.warmup_ratio * total_steps))

    # Low-precision frozen weights while autocast runs; put back before evaluation and saving.
    with autocast_weights(model, device):
        # Reference log-probs, once: DPO needs each chosen/rejected; KTO each sample and each planned mismatched pair.
        phase("Computing reference log-probs (once)")
        if train.method == "dpo":
            reference = precompute_reference(model, data.chosen + data.rejected, pad, device, 2 * train.batch_size)
            ref_chosen, ref_rejected = reference[: len(data)], reference[len(data):]
            kl_pairs: list[list[TokenizedPair]] = []
            ref_kl: list[torch.Tensor] = []
        else:
            kl_pairs = [_mismatched(data.samples, batch) for batch in batches]
            flat = [pair for pairs in kl_pairs for pair in pairs]
            # one call, so a KL pair shares its prompt's forward with the samples that have that prompt
            both = precompute_reference(model, data.samples + flat, pad, device, 2 * train.batch_size)
            ref_samples, flat_ref = both[: len(data.samples)], both[len(data.samples):]
            ref_kl = list(torch.split(flat_ref, [len(p) for p in kl_pairs]))

        history: list[dict[str, float]] = []
        started = time.perf_counter()
        model.train()
        cancelled = False
        phase("Training")
        for step, rows in enumerate(batches):
            if cancel.is_set():
                cancelled = True
                break
            step_start = time.perf_counter()
            lr = _lr_at(step, total_steps, warmup, train.learning_rate)
            for group in optimizer.param_groups:
                group["lr"] = lr
            with device.autocast():
                if train.method == "dpo":
                    pairs = [data.chosen[i] for i in rows] + [data.rejected[i] for i in rows]
                    sums, lens = sequence_logps(model, pairs, pad, dev)
                    sums = sums.float().cpu()
                    count = len(rows)
                    terms = losses.dpo_loss(sums[:count], sums[count:], ref_chosen[rows], ref_rejected[rows],
                                            beta=train.loss.beta, variant=train.loss.dpo_variant,
                                            label_smoothing=train.loss.label_smoothing,
                                            chosen_lengths=lens[:count].cpu(), rejected_lengths=lens[count:].cpu())
                    tokens = sum(len(p.input_ids) for p in pairs)
                else:
                    samples = [data.samples[i] for i in rows]
                    if packed_logps_supported(model):  # the KL pairs continue the samples' prompts: one prompt pass
                        sums, _, kl_sums = packed_logps_with_continuations(model, samples, kl_pairs[step], pad, dev)
                    else:
                        with torch.no_grad():
                            kl_sums, _ = sequence_logps(model, kl_pairs[step], pad, dev)
                        sums, _ = sequence_logps(model, samples, pad, dev)
                    desirable = torch.tensor([data.desirable[i] for i in rows])
                    terms = losses.kto_loss(sums.float().cpu(), ref_samples[rows], desirable, kl_sums.float().cpu(),
                                            ref_kl[step], beta=train.loss.beta,
                                            desirable_weight=train.loss.desirable_weight,
                                            undesirable_weight=train.loss.undesirable_weight,
                                            variant=train.loss.kto_variant)
                    tokens = sum(len(p.input_ids) for p in samples) + sum(len(p.input_ids) for p in kl_pairs[step])
                batch_loss = terms.batch_loss
            optimizer.zero_grad(set_to_none=True)
            batch_loss.backward()
            grad_norm = float(torch.nn.utils.clip_grad_norm_(params, train.max_grad_norm))
            optimizer.step()

            now = time.perf_counter()
            elapsed = now - started
            metrics = _step_metrics(train.method, terms, step, total_steps, batch_loss.item(), lr, grad_norm,
                                    tokens / max(now - step_start, 1e-9), elapsed, rows)
            history.append(metrics.scalars())
            if callback:
                callback(metrics)
    model.eval()
    training_seconds = time.perf_counter() - started

    heldout: dict[str, Any] = {}
    if heldout_frame is not None and len(heldout_frame) and not cancelled:
        phase("Measuring held-out preference accuracy")
        heldout = heldout_metrics(model, tokenizer, heldout_frame, device, train)
    final = {k: _mean([h[k] for h in history[-max(1, len(history) // 5):]]) for k in
             ("loss", "rewards_chosen", "rewards_rejected", "margin", "accuracy", "z0")} if history else {}
    meta = {
        "method": train.method,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "hyperparameters": _jsonable(dataclasses.asdict(train)),
        "steps_done": len(history),
        "total_steps": total_steps,
        "train_rows": len(data),
        "device": device.describe(),
        "training_seconds": round(training_seconds, 2),
        "final_metrics": {k: _nan_to_none(round(v, 6)) for k, v in final.items()},
        "heldout_metrics": heldout,
        "history": [{k: _nan_to_none(round(v, 6) if isinstance(v, float) else v) for k, v in h.items()}
                    for h in history],
        "base_architecture": (base_model.config.architectures or ["?"])[0],
        **(extra_meta or {}),
    }
    saved = None
    if out_dir is not None and not cancelled:
        phase("Saving the adapter")
        saved = save_adapter_atomically(model, Path(out_dir), meta)
    return TrainResult(saved, meta, history, cancelled)


def _mismatched(samples: list[TokenizedPair], rows: list[int]) -> list[TokenizedPair]:
    """KTO's KL batch for one step: prompt i with the completion of row (i + 1) mod B."""
    partner = losses.mismatched_pairs(len(rows)).tolist()
    return [TokenizedPair(samples[rows[i]].prompt_ids, samples[rows[j]].response_ids) for i, j in enumerate(partner)]


def _step_metrics(method, terms, step, total, loss, lr, grad_norm, tokens_per_s, elapsed, rows) -> StepMetrics:
    eta = elapsed / (step + 1) * (total - step - 1)
    if method == "dpo":
        per_sample = {
            "row": list(rows),
            "chosen_reward": terms.chosen_reward.tolist(),
            "rejected_reward": terms.rejected_reward.tolist(),
            "margin": terms.margin.tolist(),
            "loss": terms.loss.detach().tolist(),
            "grad_weight": terms.grad_weight.tolist(),
        }
        return StepMetrics(step + 1, total, loss, float(terms.chosen_reward.mean()),
                           float(terms.rejected_reward.mean()), float(terms.margin.mean()), terms.accuracy,
                           math.nan, lr, grad_norm, tokens_per_s, elapsed, eta, per_sample)
    correct = torch.where(terms.desirable, terms.logratio > terms.z0, terms.logratio < terms.z0)
    chosen, rejected = terms.desirable_reward_mean, terms.undesirable_reward_mean
    per_sample = {
        "row": list(rows),
        "desirable": terms.desirable.tolist(),
        "logratio": terms.logratio.tolist(),
        "reward": terms.reward.tolist(),
        "value": terms.value.tolist(),
        "loss": terms.loss.detach().tolist(),
    }
    return StepMetrics(step + 1, total, loss, chosen, rejected, chosen - rejected, float(correct.float().mean()),
                       float(terms.z0), lr, grad_norm, tokens_per_s, elapsed, eta, per_sample)


def heldout_metrics(model, tokenizer, pairs_frame: pd.DataFrame, device: DeviceChoice,
                    train: config.TrainConfig) -> dict[str, Any]:
    """Preference accuracy and mean implied-reward margin on held-out pairs, policy against the base (exact fp32)."""
    from playground.scoring import score

    prompts = list(pairs_frame["prompt"])
    systems = [_system(row) for row in pairs_frame.to_dict("records")]
    responses = list(pairs_frame["chosen"]) + list(pairs_frame["rejected"])
    both_prompts, both_systems = prompts + prompts, systems + systems
    policy = score(model, tokenizer, both_prompts, responses, systems=both_systems, max_length=train.max_length)
    with model.disable_adapter():
        reference = score(model, tokenizer, both_prompts, responses, systems=both_systems,
                          max_length=train.max_length)
    n = len(prompts)
    logratio = policy.sum_logps - reference.sum_logps
    terms = losses.dpo_loss(policy.sum_logps[:n], policy.sum_logps[n:], reference.sum_logps[:n],
                            reference.sum_logps[n:], beta=train.loss.beta)
    return {
        "pairs": n,
        "preference_accuracy": round(terms.accuracy, 6),
        "mean_margin": round(float(terms.margin.mean()), 6),
        "mean_chosen_reward": round(float(train.loss.beta * logratio[:n].mean()), 6),
        "mean_rejected_reward": round(float(train.loss.beta * logratio[n:].mean()), 6),
        "dpo_loss": round(float(terms.batch_loss), 6),
    }


def _jsonable(value):
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    return value


# --------------------------------------------------------------------------------------------------------------------
# Saving


def model_card(meta: dict[str, Any]) -> str:
    held = meta.get("heldout_metrics") or {}
    hp = meta.get("hyperparameters", {})
    lines = [
        f"# {meta.get('name', 'adapter')}: a {meta['method'].upper()} LoRA adapter",
        "",
        f"Base model: `{meta.get('base_model')}`. Trained with the DPO vs KTO alignment playground on "
        f"{meta.get('train_rows')} rows of `{meta.get('data_file', 'uploaded feedback')}` "
        f"(sha256 `{str(meta.get('data_sha256', ''))[:16]}`).",
        "",
        f"- steps: {meta.get('steps_done')} of {meta.get('total_steps')}, batch size {hp.get('batch_size')}, "
        f"learning rate {hp.get('learning_rate')}, beta {hp.get('loss', {}).get('beta')}",
        f"- LoRA: r={hp.get('lora', {}).get('r')}, alpha={hp.get('lora', {}).get('alpha')}",
        f"- device: {meta.get('device')}, {meta.get('training_seconds')} s",
    ]
    if held:
        lines.append(f"- held-out preference accuracy: {held.get('preference_accuracy')} on {held.get('pairs')} pairs, "
                     f"mean implied-reward margin {held.get('mean_margin')}")
    lines += ["", "Load it with `PeftModel.from_pretrained(base, path)`; the full record is in `meta.json`.", ""]
    return "\n".join(lines)


def save_adapter_atomically(model, out_dir: Path, meta: dict[str, Any], *, overwrite: bool = True) -> Path:
    """Write adapter + meta.json + README.md into a temporary sibling folder, then rename it into place.

    A crash at any point leaves either the old folder or the new one, never half an adapter; leftovers of a crash
    are dot-folders the registry ignores and :func:`clean_stale_tmp` removes.
    """
    out_dir = Path(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{out_dir.name}-", dir=out_dir.parent))
    try:
        model.save_pretrained(str(tmp), safe_serialization=True)
        (tmp / "meta.json").write_text(json.dumps(meta, indent=1, sort_keys=False, allow_nan=False) + "\n",
                                       encoding="utf-8")
        (tmp / "README.md").write_text(model_card(meta), encoding="utf-8")
        for leftover in tmp.iterdir():  # PEFT may nest under the adapter name; keep the folder flat
            if leftover.is_dir():
                raise RuntimeError(f"unexpected nested folder {leftover.name} in saved adapter")
        if out_dir.exists():
            if not overwrite:
                raise FileExistsError(f"{out_dir} exists")
            old = out_dir.with_name(f".old-{out_dir.name}-{os.getpid()}")
            os.replace(out_dir, old)
            os.replace(tmp, out_dir)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out_dir


def clean_stale_tmp(root: Path) -> list[str]:
    """Remove half-written folders a crashed save left under ``root``; return their names."""
    removed = []
    if Path(root).is_dir():
        for child in Path(root).iterdir():
            if child.is_dir() and child.name.startswith((".tmp-", ".old-")):
                shutil.rmtree(child, ignore_errors=True)
                removed.append(child.name)
    return removed


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()
