"""The short DPO/KTO LoRA loop: per-sample terms every step, cancel within one step, atomic save.

Its own loop rather than HF's Trainer, because the app needs each step's per-sample terms and a cancel that acts at
the next step. The reference is the base with the adapter disabled; its log-probs are computed once, before the
first step, for every sequence the planned batches will use (KTO's mismatched pairs included).
"""

from __future__ import annotations

import dataclasses
import math
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import torch

from playground import config
from playground.common.numbers import json_safe
from playground.engine import threads
from playground.engine.answers import training_answers_report
from playground.engine.device import DeviceChoice
from playground.engine.fingerprint import weights_fingerprint
from playground.engine.metrics import heldout_preference
from playground.engine.packed import cached_head_casts
from playground.engine.templating import Prompt
from playground.feedback import prompt_key
from playground.training.data import TrainData, count_steps, plan_batches, tokenize_frame, validate_train_config
from playground.training.evaluation import HeldoutEval, StopDecision
from playground.training.probes import ProbeAnswer, default_probe_prompts
from playground.training.saving import save_adapter_atomically
from playground.training.steps import METHODS, StepInputs
from playground.training.watch import RunWatch, WatchHooks


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
    sft_loss: float  # the weighted SFT term's part of ``loss`` (0 when its weight is 0)
    chosen_nll: float  # mean token NLL of the chosen (DPO) / desirable (KTO) answers under the policy
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
    """What a run produced: the saved folder (None when cancelled or not saved), the metadata and the per-step
    scalars."""

    adapter_dir: Path | None
    meta: dict[str, Any]
    history: list[dict[str, float]]
    cancelled: bool


def _mean(values: list[float]) -> float:
    finite = [v for v in values if math.isfinite(v)]
    return sum(finite) / len(finite) if finite else math.nan


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
    """``base_model`` wrapped in a fresh, trainable LoRA of shape ``lora`` (deterministic in ``seed``)."""
    from peft import LoraConfig, get_peft_model

    torch.manual_seed(seed)  # LoRA A's init draws from the global generator: seed it for reproducibility
    peft_config = LoraConfig(r=lora.r, lora_alpha=lora.alpha, lora_dropout=lora.dropout,
                             target_modules=list(lora.target_modules), task_type="CAUSAL_LM", bias="none")
    return get_peft_model(base_model, peft_config)


@dataclass
class RunHooks:
    """What a caller hears during a run, besides the per-step metrics: phases, held-out evaluations, probe answers."""

    on_phase: Callable[[str], None] | None = None
    on_evaluation: Callable[[HeldoutEval, StopDecision], None] | None = None
    on_probes: Callable[[list[ProbeAnswer]], None] | None = None


@threads.role("training")
def train(base_model, tokenizer, train_frame: pd.DataFrame, train_config: config.TrainConfig, *,
          device: DeviceChoice, heldout_frame: pd.DataFrame | None = None,
          callback: Callable[[StepMetrics], None] | None = None, cancel: threading.Event | None = None,
          out_dir: Path | None = None, extra_meta: dict[str, Any] | None = None,
          on_phase: Callable[[str], None] | None = None, hooks: RunHooks | None = None,
          probe_prompts: list[Prompt] | None = None) -> TrainResult:
    """Fine-tune a fresh LoRA on ``base_model`` (a plain HF model this call may modify) with DPO or KTO.

    ``train_frame``: normalised feedback rows (prompt, chosen, rejected) for DPO, (prompt, completion, label) for KTO.
    ``heldout_frame``: paired rows, measured during the run (early stopping, keeping the best adapter) and after it
    (held-out metrics, base vs adapter answers). ``probe_prompts`` default to the held-out rows' first prompts.
    Saves atomically to ``out_dir`` unless cancelled; meta.json records ``base_fingerprint`` (``engine.fingerprint``)
    of ``base_model`` as it was before training.
    """
    cancel = cancel or threading.Event()
    hooks = hooks or RunHooks(on_phase=on_phase)
    phase = hooks.on_phase or on_phase or (lambda _message: None)
    validate_train_config(train_config, len(train_frame))
    method = METHODS[train_config.method]
    data = tokenize_frame(tokenizer, train_frame, train_config.method, train_config.max_length)
    total_steps = count_steps(len(data), train_config)
    batches = plan_batches(data.lengths(), train_config.batch_size, total_steps, train_config.seed,
                           bucket_batches=method.bucket_batches)
    base_weights = weights_fingerprint(base_model)  # which base weights the adapter is trained on (meta.json)
    model = attach_lora(base_model.to(device.device), train_config.lora, train_config.seed)
    inputs = StepInputs(model, data, tokenizer.pad_token_id, device.device, train_config)
    if probe_prompts is None:
        probe_prompts = default_probe_prompts(heldout_frame, train_frame, train_config.probes.prompts)

    # Low-precision frozen weights while autocast runs; put back before evaluation and saving.
    run_started = time.perf_counter()
    with autocast_weights(model, device):
        phase("Computing reference log-probs (once)" if train_config.method not in config.REFERENCE_FREE_METHODS
              else f"No reference pass: {train_config.method.upper()} uses the policy alone")
        reference = method.reference(model, data, batches, tokenizer.pad_token_id, device, train_config.batch_size)
        reference_seconds = time.perf_counter() - run_started
        watch = RunWatch(model, tokenizer, train_config, device, total_steps, heldout_frame, list(probe_prompts),
                         WatchHooks(hooks.on_evaluation, hooks.on_probes))
        phase("Measuring the held-out split and the probe answers before training")
        watch.start()
        phase("Training")
        watched_before = sum(watch.seconds.values())
        history, cancelled, training_seconds = _optimise(inputs, reference, batches, device, callback, cancel, watch)
        step_seconds = training_seconds - (sum(watch.seconds.values()) - watched_before)  # watching has its own
        kept = watch.keep_best(len(history)) if not cancelled else None
    model.eval()
    meta_extra = {**(extra_meta or {}), "base_fingerprint": base_weights, **_watch_record(watch, kept)}
    after_started = time.perf_counter()
    if not cancelled:
        measured = watch.final_metrics(kept) if kept is not None or len(history) in watch.eval_at else None
        meta_extra.update(_after_run(model, tokenizer, heldout_frame, train_config, device, phase, measured))
    meta_extra["seconds"] = _seconds(watch, reference_seconds, step_seconds, after_started, run_started)
    meta = run_metadata(train_config, data, history, total_steps, training_seconds,
                        meta_extra.pop("heldout_metrics", {}), device, base_model, meta_extra)
    saved = None
    if out_dir is not None and not cancelled:
        phase("Saving the adapter")
        saved = save_adapter_atomically(model, Path(out_dir), meta)
    return TrainResult(saved, meta, history, cancelled)


def _seconds(watch: RunWatch, reference: float, steps: float, after_started: float,
             run_started: float) -> dict[str, float]:
    """Where a run's time went: the reference pass, the optimiser steps, what watching added (held-out evaluations
    and probe answers, step 0 included), the after-run report, and the whole run (saving not included)."""
    now = time.perf_counter()
    return {"reference": round(reference, 2), "steps": round(max(steps, 0.0), 2),
            "heldout_evaluations": round(watch.seconds["heldout_evaluations"], 2),
            "probes": round(watch.seconds["probes"], 2), "after_run_report": round(now - after_started, 2),
            "total": round(now - run_started, 2)}


def _watch_record(watch: RunWatch, kept: int | None) -> dict[str, Any]:
    """What meta.json keeps of the watch: the evaluations, the stop and its reason, the probe answers."""
    record: dict[str, Any] = {"heldout_evaluations": [e.to_json() for e in watch.evaluations],
                              "probe_answers": [a.to_json() for a in watch.probes]}
    if watch.stop is not None:
        record["early_stop"] = {"reason": watch.stop.reason, "best_step": watch.stop.best_step}
    if kept is not None:
        record["kept_step"] = kept
    return record


def _after_run(model, tokenizer, heldout: pd.DataFrame | None, train_config: config.TrainConfig,
               device: DeviceChoice, phase: Callable[[str], None], measured: dict | None) -> dict[str, Any]:
    """Held-out preference metrics (``measured`` when the last evaluation already took them) and the base vs adapter
    answers to held-out prompts (nothing without a held-out split)."""
    if heldout is None or not len(heldout):
        return {}
    metrics = measured
    if metrics is None:
        phase("Measuring held-out preference accuracy")
        metrics = heldout_preference(model, tokenizer, heldout, beta=train_config.loss.beta,
                                     max_length=train_config.max_length)
    record: dict[str, Any] = {"heldout_metrics": metrics}
    settings = train_config.probes
    if settings.report_prompts > 0:
        phase("Answering held-out prompts with the base and the new adapter")
        rows = heldout.loc[~heldout["prompt"].map(prompt_key).duplicated()].head(settings.report_prompts)
        report = training_answers_report(model, tokenizer, list(rows["prompt"]), list(rows["chosen"]),
                                         device=device.device, max_new_tokens=settings.report_max_new_tokens)
        record["answers_eval"] = report.to_json()
    return record


def _optimise(inputs: StepInputs, reference, batches: list[list[int]], device: DeviceChoice,
              callback: Callable[[StepMetrics], None] | None, cancel: threading.Event,
              watch: RunWatch) -> tuple[list[dict[str, float]], bool, float]:
    """The optimiser steps over ``batches``, with ``watch`` measuring after each: (per-step scalars, whether cancel
    stopped it, seconds spent). An early stop ends it like the last batch would, not like a cancel."""
    train_config, model = inputs.train_config, inputs.model
    method = METHODS[train_config.method]
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=train_config.learning_rate, weight_decay=train_config.weight_decay)
    total = len(batches)
    warmup = int(round(train_config.warmup_ratio * total))
    history: list[dict[str, float]] = []
    started = time.perf_counter()
    model.train()
    for step, rows in enumerate(batches):
        if cancel.is_set():
            return history, True, time.perf_counter() - started
        threads.rebalance()  # a generation may have started or ended: take the current share of the cores
        step_start = time.perf_counter()
        lr = _lr_at(step, total, warmup, train_config.learning_rate)
        for group in optimizer.param_groups:
            group["lr"] = lr
        with device.autocast():
            output = method.step(inputs, reference, step, rows)
            batch_loss = output.batch_loss
        optimizer.zero_grad(set_to_none=True)
        batch_loss.backward()
        grad_norm = float(torch.nn.utils.clip_grad_norm_(params, train_config.max_grad_norm))
        optimizer.step()

        now = time.perf_counter()
        elapsed = now - started
        scalars, per_sample = method.report(output, rows)
        metrics = StepMetrics(step + 1, total, batch_loss.item(), learning_rate=lr, grad_norm=grad_norm,
                              tokens_per_s=output.tokens / max(now - step_start, 1e-9), elapsed_s=elapsed,
                              eta_s=elapsed / (step + 1) * (total - step - 1), per_sample=per_sample, **scalars)
        history.append(metrics.scalars())
        if callback:
            callback(metrics)
        if watch.after_step(step + 1) is not None:
            break
        model.train()
    return history, False, time.perf_counter() - started


def run_metadata(train_config: config.TrainConfig, data: TrainData, history: list[dict[str, float]],
                 total_steps: int, training_seconds: float, heldout: dict[str, Any], device: DeviceChoice,
                 base_model, extra_meta: dict[str, Any] | None) -> dict[str, Any]:
    """The adapter's meta.json: settings, data size, per-step history, final and held-out metrics (JSON-safe)."""
    tail = history[-max(1, len(history) // 5):]
    final = {k: _mean([h[k] for h in tail]) for k in
             ("loss", "rewards_chosen", "rewards_rejected", "margin", "accuracy", "z0", "sft_loss", "chosen_nll")
             } if history else {}
    return json_safe({
        "method": train_config.method,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "hyperparameters": dataclasses.asdict(train_config),
        "steps_done": len(history),
        "total_steps": total_steps,
        "train_rows": len(data),
        "device": device.describe(),
        "training_seconds": round(training_seconds, 2),
        "final_metrics": {k: round(v, 6) for k, v in final.items()},
        "heldout_metrics": heldout,
        "history": [{k: round(v, 6) if isinstance(v, float) else v for k, v in h.items()} for h in history],
        "base_architecture": (base_model.config.architectures or ["?"])[0],
        **(extra_meta or {}),
    })
