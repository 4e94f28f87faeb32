"""Everything a run measures besides its loss: the held-out split at step 0 and every few steps (with early
stopping and the best adapter kept), and the probe answers at the start and every quarter."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

import pandas as pd
import torch

from playground import config
from playground.engine.device import DeviceChoice
from playground.engine.templating import Prompt
from playground.training.evaluation import (
    EarlyStopper,
    HeldoutEval,
    HeldoutMonitor,
    StopDecision,
    evaluation_steps,
    restore_state,
    trainable_state,
)
from playground.training.probes import ProbeAnswer, probe_steps, run_probes


@dataclass
class WatchHooks:
    on_evaluation: Callable[[HeldoutEval, StopDecision], None] | None = None
    on_probes: Callable[[list[ProbeAnswer]], None] | None = None


@dataclass
class RunWatch:
    """Held-out evaluations, early stopping and probes of one run (each part off when it has nothing to work on)."""

    model: torch.nn.Module
    tokenizer: object
    train_config: config.TrainConfig
    device: DeviceChoice
    total_steps: int
    heldout: pd.DataFrame | None
    probe_prompts: list[Prompt]
    hooks: WatchHooks = field(default_factory=WatchHooks)
    evaluations: list[HeldoutEval] = field(default_factory=list)
    probes: list[ProbeAnswer] = field(default_factory=list)
    stop: StopDecision | None = None

    def __post_init__(self) -> None:
        stopping, probes = self.train_config.early_stopping, self.train_config.probes
        # the held-out curves are drawn whenever there is a split; stopping early is the part that can be off
        measured = self.heldout is not None and len(self.heldout) > 0
        self.monitor = HeldoutMonitor(self.model, self.tokenizer, self.heldout, self.train_config,
                                      self.device.autocast) if measured else None
        self.stopper = (EarlyStopper(stopping.patience, stopping.min_delta, stopping.drift_budget)
                        if measured and stopping.enabled else None)
        self.eval_at = set(evaluation_steps(self.total_steps, stopping.evaluations)) if measured else set()
        self.probe_at = set(probe_steps(self.total_steps, probes.points)) if probes.enabled and self.probe_prompts \
            else set()
        self._best_state: dict[str, torch.Tensor] | None = None
        self._best_step = 0
        self.seconds = {"heldout_evaluations": 0.0, "probes": 0.0}  # what watching adds to the run

    def start(self) -> None:
        """Step 0: the held-out split and the probes before any update."""
        self.after_step(0)

    def after_step(self, step: int) -> StopDecision | None:
        """Measure what is due after ``step`` optimizer steps; a decision to stop, or None to go on."""
        if step in self.probe_at:
            started = time.perf_counter()
            start = [a for a in self.probes if a.step == 0] or None
            answers = run_probes(self.model, self.tokenizer, self.probe_prompts, step,
                                 max_new_tokens=self.train_config.probes.max_new_tokens, device=self.device.device,
                                 autocast=self.device.autocast, start=start if step else None)
            self.probes += answers
            self.seconds["probes"] += time.perf_counter() - started
            if self.hooks.on_probes:
                self.hooks.on_probes(answers)
        if self.monitor is None or (step not in self.eval_at and step != 0):
            return None
        started = time.perf_counter()
        evaluation = self.monitor.evaluate(step)
        self.seconds["heldout_evaluations"] += time.perf_counter() - started
        decision = self.stopper.update(evaluation) if self.stopper else StopDecision(False, "", step)
        self.evaluations.append(evaluation)
        if self.stopper and decision.best_step == step and not decision.stop:
            self._best_state, self._best_step = trainable_state(self.model), step
        if self.hooks.on_evaluation:
            self.hooks.on_evaluation(evaluation, decision)
        if decision.stop and step < self.total_steps:
            self.stop = decision
            return decision
        return None  # a stop decision at the last step is no early stop; keep_best still puts the best step back

    def final_metrics(self, kept: int | None) -> dict | None:
        """The held-out metrics of the adapter as it will be saved (the kept step's evaluation, else the last
        step's), when that evaluation was taken; None when it must be measured afresh."""
        if self.monitor is None or not self.evaluations:
            return None
        wanted = kept if kept is not None else self.evaluations[-1].step
        for evaluation in reversed(self.evaluations):
            if evaluation.step == wanted:
                return self.monitor.metrics(evaluation)
        return None

    def keep_best(self, last_step: int) -> int | None:
        """Put the best evaluation's weights back when it is not the last step's; returns that step, or None."""
        if self._best_state is None or self._best_step == last_step:
            return None
        restore_state(self.model, self._best_state)
        return self._best_step
