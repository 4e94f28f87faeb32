"""Watching a run on the held-out split: held-out loss, accuracy and drift every few steps, and when to stop.

A held-out preference accuracy of 1.000 with a loss near 0 means the run pushed until the numbers saturated, and
the answers usually show it (loops, odd text). So the loop measures the user's held-out pairs at step 0 and about
every sixth of the run: the sigmoid DPO loss and accuracy of the policy against the reference, and the drift, the
mean per-token |log pi - log pi_ref| over the held-out chosen answers (how far the model has moved on text it should
still like). :class:`EarlyStopper` turns that sequence into a decision; the loop keeps the best adapter's weights.
"""

from __future__ import annotations

import math
from contextlib import nullcontext
from dataclasses import asdict, dataclass
from typing import Any

import pandas as pd
import torch

from playground import config
from playground.engine.scoring import score
from playground.objectives.dpo import dpo_loss


@dataclass(frozen=True)
class HeldoutEval:
    """One measurement of the held-out pairs during a run."""

    step: int  # optimizer steps done when it was taken (0 = before training)
    loss: float  # mean sigmoid DPO loss at the run's beta (ln 2 at step 0)
    accuracy: float  # share of pairs whose chosen answer gets the higher implied reward (ties count as wrong)
    margin: float  # mean implied-reward margin
    chosen_reward: float  # mean implied reward of the chosen answers
    rejected_reward: float
    drift: float  # mean |log pi - log pi_ref| per token over the held-out chosen answers (nats)
    chosen_nll: float  # mean token NLL of the held-out chosen answers under the policy

    def to_json(self) -> dict[str, Any]:
        return {k: (round(v, 6) if isinstance(v, float) else v) for k, v in asdict(self).items()}


class HeldoutMonitor:
    """Measures a PEFT model in training on held-out pairs; the reference's token log-probs are computed once."""

    def __init__(self, model, tokenizer, pairs: pd.DataFrame, train_config: config.TrainConfig, autocast=None):
        self.model, self.tokenizer, self.config = model, tokenizer, train_config
        self.autocast = autocast or nullcontext
        self.prompts = list(pairs["prompt"]) * 2
        self.responses = list(pairs["chosen"]) + list(pairs["rejected"])
        systems = pairs["system"] if "system" in pairs else [None] * len(pairs)
        self.systems = [s if isinstance(s, str) and s.strip() else None for s in systems] * 2
        self.pairs = len(pairs)
        with model.disable_adapter():
            self.reference = self._score()

    def _score(self):
        with self.autocast():
            return score(self.model, self.tokenizer, self.prompts, self.responses, systems=self.systems,
                         max_length=self.config.max_length)

    def evaluate(self, step: int) -> HeldoutEval:
        policy, reference, n = self._score(), self.reference, self.pairs
        terms = dpo_loss(policy.sum_logps[:n], policy.sum_logps[n:], reference.sum_logps[:n],
                         reference.sum_logps[n:], beta=self.config.loss.beta)
        chosen_tokens = sum(len(t) for t in policy.token_logps[:n])
        drift = sum(float((p - r).abs().sum()) for p, r in zip(policy.token_logps[:n], reference.token_logps[:n]))
        nll = -float(policy.sum_logps[:n].sum())
        return HeldoutEval(step, float(terms.batch_loss), terms.accuracy, float(terms.margin.mean()),
                           float(terms.chosen_reward.mean()), float(terms.rejected_reward.mean()),
                           drift / max(chosen_tokens, 1), nll / max(chosen_tokens, 1))

    def metrics(self, evaluation: HeldoutEval) -> dict[str, Any]:
        """An evaluation in the held-out metrics' form (``engine.metrics.preference_metrics``), for meta.json."""
        return {"pairs": self.pairs, "preference_accuracy": round(evaluation.accuracy, 6),
                "mean_margin": round(evaluation.margin, 6), "mean_chosen_reward": round(evaluation.chosen_reward, 6),
                "mean_rejected_reward": round(evaluation.rejected_reward, 6),
                "dpo_loss": round(evaluation.loss, 6), "drift": round(evaluation.drift, 6),
                "chosen_nll": round(evaluation.chosen_nll, 6), "step": evaluation.step}


def evaluation_steps(total_steps: int, evaluations: int) -> list[int]:
    """The steps after which the held-out split is measured: about ``evaluations`` evenly spaced ones, the last
    step always among them (step 0 is measured before training)."""
    if total_steps <= 0 or evaluations <= 0:
        return []
    every = max(1, math.ceil(total_steps / evaluations))
    return sorted({*range(every, total_steps + 1, every), total_steps})


@dataclass(frozen=True)
class StopDecision:
    stop: bool
    reason: str  # in words, for the curves and the result panel ("" while training goes on)
    best_step: int  # the step whose adapter is kept


class EarlyStopper:
    """Decides, after each held-out evaluation, whether to stop: ``patience`` evaluations in a row without a loss
    better than the best by more than ``min_delta``, or the drift over ``drift_budget`` (0 = no budget). The best
    evaluation is the lowest held-out loss among those within the drift budget, after training started: step 0 is
    the base, so keeping it would save an adapter that changes nothing. Pure: no model."""

    def __init__(self, patience: int, min_delta: float = 0.0, drift_budget: float = 0.0):
        if patience < 1:
            raise ValueError(f"patience must be >= 1, got {patience}")
        self.patience, self.min_delta, self.drift_budget = patience, min_delta, drift_budget
        self.best: HeldoutEval | None = None
        self.waits = 0

    def update(self, evaluation: HeldoutEval) -> StopDecision:
        if evaluation.step == 0:  # the base itself: the baseline the curves start from, never the adapter to keep
            return StopDecision(False, "", 0)
        if self.drift_budget and evaluation.drift > self.drift_budget and evaluation.step > 0:
            best = self.best.step if self.best is not None else evaluation.step
            return StopDecision(True, f"the drift budget was exceeded at step {evaluation.step}: the held-out chosen "
                                      f"answers moved {evaluation.drift:.3g} nats per token from the base, over the "
                                      f"budget of {self.drift_budget:g}", best)
        if self.best is None or evaluation.loss < self.best.loss - self.min_delta:
            self.best, self.waits = evaluation, 0
            return StopDecision(False, "", evaluation.step)
        self.waits += 1
        if self.waits >= self.patience:
            return StopDecision(True, f"the held-out loss has not improved for {self.waits} evaluations (best "
                                      f"{self.best.loss:.4g} at step {self.best.step})", self.best.step)
        return StopDecision(False, "", self.best.step)


def trainable_state(model) -> dict[str, torch.Tensor]:
    """A copy of the trainable (LoRA) weights, to put back with :func:`restore_state`."""
    return {name: p.detach().clone() for name, p in model.named_parameters() if p.requires_grad}


def restore_state(model, state: dict[str, torch.Tensor]) -> None:
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name in state:
                p.copy_(state[name])
