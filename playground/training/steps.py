"""One step function per method: the policy's log-probs of the step's sequences (the seam, ``training.forward``)
fed to the method's pure per-sample terms (``playground.objectives``).

Each method is a :class:`Method`: how its reference log-probs are computed once before the first step, how one step
computes its terms, how its batches are planned and what a step reports. The loop owns the optimiser and calls these
through ``METHODS[name]``; adding a method is adding an entry, not a branch in the loop.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

from playground import config
from playground.engine.device import DeviceChoice
from playground.engine.packed import packed_logps_supported, packed_logps_with_continuations
from playground.engine.templating import TokenizedPair
from playground.objectives.apo import apo_loss
from playground.objectives.bco import BCOTerms, RewardBaseline, bco_loss, bco_rewards
from playground.objectives.dpo import DPOTerms, dpo_loss
from playground.objectives.kto import KTOTerms, kto_loss
from playground.objectives.orpo import orpo_loss
from playground.objectives.pairwise import PairwiseTerms
from playground.objectives.sft import SFTTerms, sft_terms
from playground.objectives.simpo import simpo_loss
from playground.training.data import TrainData, mismatched_batch
from playground.training.forward import precompute_reference, sequence_logps


@dataclass
class Reference:
    """Reference log-probs, computed once before the first step (the adapter disabled, no gradient)."""

    chosen: torch.Tensor | None = None  # DPO: (N,) summed log-probs of each row's chosen response
    rejected: torch.Tensor | None = None  # DPO: (N,) of each rejected response
    samples: torch.Tensor | None = None  # KTO: (N,) of each labelled sample
    kl_pairs: list[list[TokenizedPair]] = field(default_factory=list)  # KTO: each step's mismatched pairs
    kl: list[torch.Tensor] = field(default_factory=list)  # KTO: each step's (M,) mismatched-pair log-probs
    baseline: RewardBaseline | None = None  # BCO: the running reward baseline delta (updated every step)


@dataclass
class StepInputs:
    """What every step of one run shares."""

    model: Any  # the PEFT model in training
    data: TrainData
    pad_token_id: int
    device: torch.device
    train_config: config.TrainConfig


@dataclass
class StepOutput:
    terms: DPOTerms | KTOTerms | PairwiseTerms | BCOTerms  # per-sample terms; ``terms.batch_loss`` has the graph
    sft: SFTTerms  # the NLL term on the chosen / desirable answers (zero shares when its weight is 0)
    tokens: int  # tokens the step's forward passes processed (for the throughput figure)

    @property
    def batch_loss(self) -> torch.Tensor:
        """What the optimiser minimises: the preference loss plus the weighted SFT term (TRL's loss_weights sum)."""
        return self.terms.batch_loss + self.sft.batch


# --------------------------------------------------------------------------------------------------------------------
# DPO


def dpo_reference(model, data: TrainData, batches: list[list[int]], pad_token_id: int, device: DeviceChoice,
                  batch_size: int) -> Reference:
    """Reference log-probs of every chosen and rejected response, in one pass over the data."""
    both = precompute_reference(model, data.chosen + data.rejected, pad_token_id, device, 2 * batch_size)
    return Reference(chosen=both[: len(data)], rejected=both[len(data):])


@dataclass
class PairLogps:
    """One batch of pairs through one forward call: summed log-probs and token counts, each (B,), on the CPU."""

    chosen: torch.Tensor
    rejected: torch.Tensor
    chosen_lengths: torch.Tensor
    rejected_lengths: torch.Tensor
    tokens: int  # tokens the forward processed


def pair_logps(inputs: StepInputs, rows: list[int]) -> PairLogps:
    """Chosen and rejected answers of ``rows`` through one ``sequence_logps`` call (the seam), with gradient."""
    data = inputs.data
    pairs = [data.chosen[i] for i in rows] + [data.rejected[i] for i in rows]
    sums, lengths = sequence_logps(inputs.model, pairs, inputs.pad_token_id, inputs.device)
    sums, lengths, count = sums.float().cpu(), lengths.cpu(), len(rows)
    return PairLogps(sums[:count], sums[count:], lengths[:count], lengths[count:],
                     sum(len(p.input_ids) for p in pairs))


def dpo_step(inputs: StepInputs, reference: Reference, step: int, rows: list[int]) -> StepOutput:
    """DPO on one batch: chosen and rejected through one forward call (``sequence_logps``), then ``dpo_loss``."""
    loss, logps = inputs.train_config.loss, pair_logps(inputs, rows)
    terms = dpo_loss(logps.chosen, logps.rejected, reference.chosen[rows], reference.rejected[rows], beta=loss.beta,
                     loss_type=loss.dpo_loss_type, label_smoothing=loss.label_smoothing,
                     chosen_lengths=logps.chosen_lengths, rejected_lengths=logps.rejected_lengths)
    sft = sft_terms(logps.chosen, logps.chosen_lengths, weight=loss.sft_weight)
    return StepOutput(terms, sft, logps.tokens)


def dpo_report(output: StepOutput, rows: list[int]) -> tuple[dict[str, float], dict[str, list]]:
    """(scalars for the curves, per-sample lists for the live table) of one step of a pairwise method (DPO, SimPO,
    ORPO, APO: their terms share ``objectives.pairwise.PairwiseTerms``' fields); a method without a gradient weight
    reports NaN for it."""
    terms = output.terms
    scalars = {"rewards_chosen": float(terms.chosen_reward.mean()),
               "rewards_rejected": float(terms.rejected_reward.mean()),
               "margin": float(terms.margin.mean()), "accuracy": terms.accuracy, "z0": math.nan,
               **_sft_scalars(output.sft)}
    grad_weight = getattr(terms, "grad_weight", None)
    per_sample = {
        "row": list(rows),
        "chosen_reward": terms.chosen_reward.tolist(),
        "rejected_reward": terms.rejected_reward.tolist(),
        "margin": terms.margin.tolist(),
        "loss": terms.loss.detach().tolist(),
        "grad_weight": grad_weight.tolist() if grad_weight is not None else [math.nan] * len(rows),
        "chosen_nll": output.sft.nll.tolist(),
    }
    return scalars, per_sample


# --------------------------------------------------------------------------------------------------------------------
# SimPO and ORPO (no reference: nothing is computed before the first step), APO (DPO's reference)


def no_reference(model, data: TrainData, batches: list[list[int]], pad_token_id: int, device: DeviceChoice,
                 batch_size: int) -> Reference:
    """A reference-free method's reference: nothing (the reference forward pass is skipped)."""
    return Reference()


def simpo_step(inputs: StepInputs, reference: Reference, step: int, rows: list[int]) -> StepOutput:
    """SimPO on one batch (``objectives.simpo``): average log-probs of the policy alone, target margin gamma."""
    loss, logps = inputs.train_config.loss, pair_logps(inputs, rows)
    terms = simpo_loss(logps.chosen, logps.rejected, logps.chosen_lengths, logps.rejected_lengths, beta=loss.beta,
                       gamma=loss.simpo_gamma, label_smoothing=loss.label_smoothing)
    sft = sft_terms(logps.chosen, logps.chosen_lengths, weight=loss.sft_weight)
    return StepOutput(terms, sft, logps.tokens)


def orpo_step(inputs: StepInputs, reference: Reference, step: int, rows: list[int]) -> StepOutput:
    """ORPO on one batch (``objectives.orpo``): its own NLL on the chosen answers plus beta times the odds-ratio
    term; the SFT weight is not added on top (ORPO's NLL is that term already)."""
    loss, logps = inputs.train_config.loss, pair_logps(inputs, rows)
    terms = orpo_loss(logps.chosen, logps.rejected, logps.chosen_lengths, logps.rejected_lengths, beta=loss.beta)
    sft = sft_terms(logps.chosen, logps.chosen_lengths, weight=0.0)
    return StepOutput(terms, sft, logps.tokens)


def apo_step(variant: str) -> Callable[[StepInputs, Reference, int, list[int]], StepOutput]:
    """APO-zero or APO-down on one batch (``objectives.apo``), against DPO's reference log-probs."""

    def step_fn(inputs: StepInputs, reference: Reference, step: int, rows: list[int]) -> StepOutput:
        loss, logps = inputs.train_config.loss, pair_logps(inputs, rows)
        terms = apo_loss(logps.chosen, logps.rejected, reference.chosen[rows], reference.rejected[rows],
                         beta=loss.beta, variant=variant)
        sft = sft_terms(logps.chosen, logps.chosen_lengths, weight=loss.sft_weight)
        return StepOutput(terms, sft, logps.tokens)

    step_fn.__name__ = f"apo_{variant}_step"
    return step_fn


def _sft_scalars(sft: SFTTerms) -> dict[str, float]:
    """The SFT term's weighted share of the loss, and the mean token NLL of the answers it covers."""
    covered = sft.covered
    nll = float(sft.nll[covered].mean()) if bool(covered.any()) else math.nan
    return {"sft_loss": float(sft.batch.detach()), "chosen_nll": nll}


# --------------------------------------------------------------------------------------------------------------------
# KTO


def kto_reference(model, data: TrainData, batches: list[list[int]], pad_token_id: int, device: DeviceChoice,
                  batch_size: int) -> Reference:
    """Reference log-probs of every sample and of every planned step's mismatched pairs, in one pass (so a KL pair
    shares its prompt's forward with the samples that have that prompt)."""
    kl_pairs = [mismatched_batch(data.samples, batch) for batch in batches]
    flat = [pair for pairs in kl_pairs for pair in pairs]
    both = precompute_reference(model, data.samples + flat, pad_token_id, device, 2 * batch_size)
    samples, flat_reference = both[: len(data.samples)], both[len(data.samples):]
    return Reference(samples=samples, kl_pairs=kl_pairs,
                     kl=list(torch.split(flat_reference, [len(p) for p in kl_pairs])))


def kto_step(inputs: StepInputs, reference: Reference, step: int, rows: list[int]) -> StepOutput:
    """KTO on one batch: the samples with gradient, their mismatched pairs without (continuing the samples' prompts
    from their cached keys and values on the packed path), then ``kto_loss``."""
    data, loss, model = inputs.data, inputs.train_config.loss, inputs.model
    samples, kl_pairs = [data.samples[i] for i in rows], reference.kl_pairs[step]
    if packed_logps_supported(model):
        sums, lengths, kl_sums = packed_logps_with_continuations(model, samples, kl_pairs, inputs.pad_token_id,
                                                                 inputs.device)
    else:
        with torch.no_grad():
            kl_sums, _ = sequence_logps(model, kl_pairs, inputs.pad_token_id, inputs.device)
        sums, lengths = sequence_logps(model, samples, inputs.pad_token_id, inputs.device)
    sums, desirable = sums.float().cpu(), torch.tensor([data.desirable[i] for i in rows])
    terms = kto_loss(sums, reference.samples[rows], desirable, kl_sums.float().cpu(), reference.kl[step],
                     beta=loss.beta, desirable_weight=loss.desirable_weight,
                     undesirable_weight=loss.undesirable_weight, loss_type=loss.kto_loss_type)
    sft = sft_terms(sums, lengths.cpu(), weight=loss.sft_weight, covered=desirable)
    tokens = sum(len(p.input_ids) for p in samples) + sum(len(p.input_ids) for p in kl_pairs)
    return StepOutput(terms, sft, tokens)


def kto_report(output: StepOutput, rows: list[int]) -> tuple[dict[str, float], dict[str, list]]:
    """(scalars for the curves, per-sample lists for the live table) of one KTO step. Accuracy here is the share of
    samples on their label's side of z0."""
    terms = output.terms
    correct = torch.where(terms.desirable, terms.logratio > terms.z0, terms.logratio < terms.z0)
    chosen, rejected = terms.desirable_reward_mean, terms.undesirable_reward_mean
    scalars = {"rewards_chosen": chosen, "rewards_rejected": rejected, "margin": chosen - rejected,
               "accuracy": float(correct.float().mean()), "z0": float(terms.z0), **_sft_scalars(output.sft)}
    per_sample = {
        "row": list(rows),
        "desirable": terms.desirable.tolist(),
        "logratio": terms.logratio.tolist(),
        "reward": terms.reward.tolist(),
        "value": terms.value.tolist(),
        "loss": terms.loss.detach().tolist(),
        "desirable_nll": output.sft.nll.tolist(),
    }
    return scalars, per_sample


# --------------------------------------------------------------------------------------------------------------------
# BCO (labelled answers, reference log-probs, a running reward baseline)


def bco_reference(model, data: TrainData, batches: list[list[int]], pad_token_id: int, device: DeviceChoice,
                  batch_size: int) -> Reference:
    """Reference log-probs of every labelled sample, and a fresh reward baseline delta for the run."""
    samples = precompute_reference(model, data.samples, pad_token_id, device, 2 * batch_size)
    return Reference(samples=samples, baseline=RewardBaseline())


def bco_step(inputs: StepInputs, reference: Reference, step: int, rows: list[int]) -> StepOutput:
    """BCO on one batch (``objectives.bco``): the rewards update the running baseline delta first (TRL's order),
    then each sample is classified against it."""
    data, loss = inputs.data, inputs.train_config.loss
    samples = [data.samples[i] for i in rows]
    sums, lengths = sequence_logps(inputs.model, samples, inputs.pad_token_id, inputs.device)
    sums, desirable = sums.float().cpu(), torch.tensor([data.desirable[i] for i in rows])
    delta = reference.baseline.update(bco_rewards(sums.detach(), reference.samples[rows], beta=loss.beta))
    terms = bco_loss(sums, reference.samples[rows], desirable, beta=loss.beta, delta=delta)
    sft = sft_terms(sums, lengths.cpu(), weight=loss.sft_weight, covered=desirable)
    return StepOutput(terms, sft, sum(len(p.input_ids) for p in samples))


def bco_report(output: StepOutput, rows: list[int]) -> tuple[dict[str, float], dict[str, list]]:
    """(scalars, per-sample lists) of one BCO step; its baseline delta is reported where KTO reports z0."""
    terms = output.terms
    chosen, rejected = terms.desirable_reward_mean, terms.undesirable_reward_mean
    scalars = {"rewards_chosen": chosen, "rewards_rejected": rejected, "margin": chosen - rejected,
               "accuracy": terms.accuracy, "z0": float(terms.delta), **_sft_scalars(output.sft)}
    per_sample = {
        "row": list(rows),
        "desirable": terms.desirable.tolist(),
        "logratio": terms.logratio.tolist(),
        "reward": terms.reward.tolist(),
        "loss": terms.loss.detach().tolist(),
        "desirable_nll": output.sft.nll.tolist(),
    }
    return scalars, per_sample


# --------------------------------------------------------------------------------------------------------------------
# The table the loop dispatches through


@dataclass(frozen=True)
class Method:
    reference: Callable[..., Reference]
    step: Callable[[StepInputs, Reference, int, list[int]], StepOutput]
    report: Callable[[StepOutput, list[int]], tuple[dict[str, float], dict[str, list]]]
    # batches bucketed by length within windows of this many batches; KTO uses 1, since desirable and undesirable
    # answers often differ in length and bucketing would give batches of one label
    bucket_batches: int


METHODS: dict[str, Method] = {
    "dpo": Method(dpo_reference, dpo_step, dpo_report, bucket_batches=8),
    "kto": Method(kto_reference, kto_step, kto_report, bucket_batches=1),
    "simpo": Method(no_reference, simpo_step, dpo_report, bucket_batches=8),
    "orpo": Method(no_reference, orpo_step, dpo_report, bucket_batches=8),
    "apo_zero": Method(dpo_reference, apo_step("zero"), dpo_report, bucket_batches=8),
    "apo_down": Method(dpo_reference, apo_step("down"), dpo_report, bucket_batches=8),
    "bco": Method(bco_reference, bco_step, bco_report, bucket_batches=1),
}
