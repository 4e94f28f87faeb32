"""Parity of SimPO, ORPO, APO and BCO with TRL 1.16's own loss code, and the differences from the papers, pinned.

TRL's trainers compute these losses inside methods of a trainer instance. As in TRL's tests, an instance is built with
``object.__new__`` and only the attributes the method reads are set, so no dataset, model download or training run
is needed:

- APO-zero, APO-down, ``bco_pair`` and the ``"sft"`` term: ``DPOTrainer._compute_loss`` on a stand-in model that
  returns chosen per-token log-probs, with the reference log-probs precomputed (``precompute_ref_log_probs``).
- SimPO: ``CPOTrainer.cpo_loss`` (per pair) and ``CPOTrainer.get_batch_loss_metrics`` (the whole step: TRL's average
  log-probs, its behaviour-cloning NLL and its logged metrics) on a tiny random Llama.
- ORPO: ``ORPOTrainer.odds_ratio_loss`` and ``ORPOTrainer.get_batch_loss_metrics`` on the same tiny Llama.

Our side gets the same numbers from the model's logits (summed response log-probs and token counts), as the training
loop hands them over. ``trl`` is a test-only dependency.
"""

from __future__ import annotations

import importlib.util
import math
import os
import types
from collections import defaultdict

import pytest
import torch

os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")  # before trl.experimental is imported
pytest.importorskip("trl")

from transformers import LlamaConfig, LlamaForCausalLM  # noqa: E402
from trl import DPOTrainer  # noqa: E402
from trl.experimental.cpo import CPOConfig, CPOTrainer  # noqa: E402
from trl.experimental.orpo import ORPOTrainer  # noqa: E402

from playground.objectives.apo import apo_loss  # noqa: E402
from playground.objectives.bco import bco_loss  # noqa: E402
from playground.objectives.orpo import orpo_loss  # noqa: E402
from playground.objectives.registry import objective  # noqa: E402
from playground.objectives.sft import sft_terms  # noqa: E402
from playground.objectives.simpo import simpo_loss  # noqa: E402

TOLERANCE = 1e-5
BETA = 0.1


# --------------------------------------------------------------------------------------------------------------------
# DPOTrainer's loss types on given log-probs


class _StandInLM:
    """What ``DPOTrainer._compute_loss`` reads from a model call: per-token log-probs (zero off the completion, as the
    fused LM head gives them) and the entropy / logits / top-1 statistics it logs."""

    training = True

    def __init__(self, per_token_logps: torch.Tensor):
        self.per_token_logps = per_token_logps

    def __call__(self, **kwargs):
        lp = self.per_token_logps
        return types.SimpleNamespace(log_probs=lp, entropy=torch.zeros_like(lp), mean_logits=torch.zeros_like(lp),
                                     is_top1=torch.zeros_like(lp, dtype=torch.bool))


class _OneProcess:
    device = torch.device("cpu")

    @staticmethod
    def gather_for_metrics(x):
        return x

    @staticmethod
    def gather(x):
        return x


def _dpo_trainer(loss_types: list[str], loss_weights: list[float]) -> DPOTrainer:
    trainer = object.__new__(DPOTrainer)
    trainer.accelerator = _OneProcess()
    trainer.beta = BETA
    trainer.loss_types = loss_types
    trainer.loss_weights = loss_weights
    trainer.label_smoothing = 0.0
    trainer.f_divergence_type = "reverse_kl"
    trainer.ld_alpha = None
    trainer.precompute_ref_logps = True
    trainer.use_weighting = False
    trainer.aux_loss_enabled = False
    trainer._total_train_tokens = 0
    trainer._tp_size = 1
    return trainer


def _trl_dpo(trainer: DPOTrainer, chosen: list[torch.Tensor], rejected: list[torch.Tensor],
             ref_chosen: torch.Tensor, ref_rejected: torch.Tensor) -> tuple[float, dict[str, float]]:
    """TRL's loss and logged metrics for pairs given as per-token log-probs (one tensor per response)."""
    rows = chosen + rejected
    width = max(len(r) for r in rows) + 1
    per_token = torch.zeros(len(rows), width - 1)
    completion_mask = torch.zeros(len(rows), width, dtype=torch.long)
    for i, row in enumerate(rows):
        completion_mask[i, 1: 1 + len(row)] = 1  # shifted, the mask covers per_token[:, :len(row)]
        per_token[i, : len(row)] = row
    inputs = {
        "input_ids": torch.zeros(len(rows), width, dtype=torch.long),
        "attention_mask": torch.ones(len(rows), width, dtype=torch.long),
        "completion_mask": completion_mask,
        "ref_chosen_logps": ref_chosen,
        "ref_rejected_logps": ref_rejected,
    }
    trainer._metrics = {"train": defaultdict(list), "eval": defaultdict(list)}
    model = _StandInLM(per_token)
    trainer.model = model
    loss = trainer._compute_loss(model, inputs, return_outputs=False)
    return loss.item(), {key: values[-1] for key, values in trainer._metrics["train"].items()}


@pytest.fixture(scope="module")
def pairs():
    """Four pairs of per-token log-probs of different lengths, and reference sums a few nats away."""
    generator = torch.Generator().manual_seed(0)

    def tokens(length: int) -> torch.Tensor:
        return -torch.rand(length, generator=generator) * 3.5 - 0.05

    chosen = [tokens(k) for k in (3, 7, 1, 5)]
    rejected = [tokens(k) for k in (6, 2, 4, 9)]
    chosen_sums = torch.stack([c.sum() for c in chosen])
    rejected_sums = torch.stack([r.sum() for r in rejected])
    ref_chosen = chosen_sums + (torch.rand(4, generator=generator) * 16 - 8)
    ref_rejected = rejected_sums + (torch.rand(4, generator=generator) * 16 - 8)
    return types.SimpleNamespace(
        chosen=chosen, rejected=rejected, chosen_sums=chosen_sums, rejected_sums=rejected_sums,
        chosen_lengths=torch.tensor([len(c) for c in chosen]), ref_chosen=ref_chosen, ref_rejected=ref_rejected,
    )


@pytest.mark.parametrize("variant", ["zero", "down"])
def test_apo_matches_trl_per_pair_and_per_batch(pairs, variant):
    ours = apo_loss(pairs.chosen_sums, pairs.rejected_sums, pairs.ref_chosen, pairs.ref_rejected, beta=BETA,
                    variant=variant)
    trainer = _dpo_trainer([f"apo_{variant}"], [1.0])
    for i in range(len(pairs.chosen)):  # a batch of one pair: TRL's loss is that pair's loss
        loss, logged = _trl_dpo(trainer, [pairs.chosen[i]], [pairs.rejected[i]], pairs.ref_chosen[i: i + 1],
                                pairs.ref_rejected[i: i + 1])
        assert ours.loss[i].item() == pytest.approx(loss, abs=TOLERANCE)
        assert ours.chosen_reward[i].item() == pytest.approx(logged["rewards/chosen"], abs=TOLERANCE)
        assert ours.rejected_reward[i].item() == pytest.approx(logged["rewards/rejected"], abs=TOLERANCE)
    loss, logged = _trl_dpo(trainer, pairs.chosen, pairs.rejected, pairs.ref_chosen, pairs.ref_rejected)
    assert abs(ours.margin).max().item() > 0.3  # far from the trivial all-zero log-ratios
    assert ours.batch_loss.item() == pytest.approx(loss, abs=TOLERANCE)
    assert ours.margin.mean().item() == pytest.approx(logged["rewards/margins"], abs=TOLERANCE)
    assert ours.accuracy == logged["rewards/accuracies"]
    assert pairs.chosen_sums.mean().item() == pytest.approx(logged["logps/chosen"], abs=TOLERANCE)


def test_trl_bco_pair_is_bco_on_both_answers_with_zero_delta(pairs):
    """Pinned: TRL 1.16's ``bco_pair`` has no reward baseline (delta = 0) and sums the pair's two losses, so per pair
    it equals our BCO loss of y_w (desirable) plus that of y_l (undesirable), and its batch loss is twice our mean
    over the 2B answers."""
    policy = torch.cat([pairs.chosen_sums, pairs.rejected_sums])
    reference = torch.cat([pairs.ref_chosen, pairs.ref_rejected])
    desirable = torch.tensor([True] * 4 + [False] * 4)
    ours = bco_loss(policy, reference, desirable, beta=BETA, delta=0.0)
    per_pair = ours.loss[:4] + ours.loss[4:]
    trainer = _dpo_trainer(["bco_pair"], [1.0])
    for i in range(4):
        loss, _ = _trl_dpo(trainer, [pairs.chosen[i]], [pairs.rejected[i]], pairs.ref_chosen[i: i + 1],
                           pairs.ref_rejected[i: i + 1])
        assert per_pair[i].item() == pytest.approx(loss, abs=TOLERANCE)
    loss, logged = _trl_dpo(trainer, pairs.chosen, pairs.rejected, pairs.ref_chosen, pairs.ref_rejected)
    assert 2 * ours.batch_loss.item() == pytest.approx(loss, abs=TOLERANCE)
    assert ours.desirable_reward_mean == pytest.approx(logged["rewards/chosen"], abs=TOLERANCE)
    assert ours.undesirable_reward_mean == pytest.approx(logged["rewards/rejected"], abs=TOLERANCE)


@pytest.mark.parametrize("variant", ["zero", "down"])
def test_sft_term_on_top_matches_trls_sft_loss_type(pairs, variant):
    """RPO's recipe on any objective: TRL's loss_type=[..., "sft"] with loss_weights=[1, w] is ours + sft_terms(w)."""
    ours = apo_loss(pairs.chosen_sums, pairs.rejected_sums, pairs.ref_chosen, pairs.ref_rejected, beta=BETA,
                    variant=variant)
    sft = sft_terms(pairs.chosen_sums, pairs.chosen_lengths, weight=0.7)
    loss, _ = _trl_dpo(_dpo_trainer([f"apo_{variant}", "sft"], [1.0, 0.7]), pairs.chosen, pairs.rejected,
                       pairs.ref_chosen, pairs.ref_rejected)
    assert sft.batch.item() > 0.5  # the term is not negligible
    assert (ours.batch_loss + sft.batch).item() == pytest.approx(loss, abs=TOLERANCE)
    assert (ours.loss + sft.share).mean().item() == pytest.approx(loss, abs=TOLERANCE)


def test_trl_1_16_ships_no_bco_trainer():
    """Pinned: BCOTrainer (and ``RunningMoments``, its delta) are not in the TRL 1.16 installed here, so BCO's running
    baseline is checked against hand numbers (test_more_objectives.py) and only ``bco_pair`` against TRL. If this
    fails, TRL ships BCO again: add a parity test for ``BCOTrainer.bco_loss``."""
    assert importlib.util.find_spec("trl.experimental.bco") is None
    import trl.trainer.utils

    assert not hasattr(trl.trainer.utils, "RunningMoments")


# --------------------------------------------------------------------------------------------------------------------
# CPO (SimPO) and ORPO on a tiny Llama

PROMPTS = [[5, 6, 7], [8, 9], [10, 11, 12, 13]]
REJECTED = [[30, 31, 32], [33], [34, 35, 36, 37, 38, 39]]
PAD = 0


@pytest.fixture(scope="module")
def tiny_lm():
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=48, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                      num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=64,
                      tie_word_embeddings=False)
    model = LlamaForCausalLM(cfg).eval()
    with torch.no_grad():
        model.lm_head.weight.mul_(60.0)  # peaked next-token distributions, far from uniform
    return model


def _greedy(model, prompt: list[int], steps: int) -> list[int]:
    ids = list(prompt)
    with torch.no_grad():
        for _ in range(steps):
            ids.append(int(model(torch.tensor([ids])).logits[0, -1].argmax()))
    return ids[len(prompt):]


@pytest.fixture(scope="module")
def batch(tiny_lm):
    """TRL's padded batch format, and what our scorer would hand over: summed response log-probs and token counts,
    plus the whole chosen sequences' (prompt and response) log-probs for TRL's ORPO NLL."""
    # the first chosen answer is the model's own greedy text (average log-prob near 0: log1mexp's other branch)
    chosen = [_greedy(tiny_lm, PROMPTS[0], 4), [20, 21], [22, 23, 24, 25, 26]]

    def side(responses):
        rows = [p + r for p, r in zip(PROMPTS, responses)]
        width = max(len(r) for r in rows)
        ids = torch.full((len(rows), width), PAD)
        mask = torch.zeros_like(ids)
        labels = torch.full_like(ids, -100)
        for i, (p, r) in enumerate(zip(PROMPTS, responses)):
            ids[i, : len(p) + len(r)] = torch.tensor(p + r)
            mask[i, : len(p) + len(r)] = 1
            labels[i, len(p): len(p) + len(r)] = torch.tensor(r)
        with torch.no_grad():
            logits = tiny_lm(ids, attention_mask=mask, use_cache=False).logits
        token_logps = torch.log_softmax(logits[:, :-1].float(), dim=-1).gather(-1, ids[:, 1:, None]).squeeze(-1)
        response = labels[:, 1:] != -100
        sequence = mask[:, 1:] == 1  # every real token after the first, prompt included
        return dict(ids=ids, mask=mask, labels=labels,
                    sums=(token_logps * response).sum(-1), lengths=response.sum(-1),
                    sequence_sums=(token_logps * sequence).sum(-1), sequence_lengths=sequence.sum(-1))

    w, r = side(chosen), side(REJECTED)
    trl_batch = {
        "chosen_input_ids": w["ids"], "chosen_attention_mask": w["mask"], "chosen_labels": w["labels"],
        "rejected_input_ids": r["ids"], "rejected_attention_mask": r["mask"], "rejected_labels": r["labels"],
    }
    return types.SimpleNamespace(trl=trl_batch, chosen=w, rejected=r)


def _cpo_trainer(*, beta: float, simpo_gamma: float, label_smoothing: float = 0.0, cpo_alpha: float = 0.0):
    trainer = object.__new__(CPOTrainer)
    trainer.accelerator = _OneProcess()
    trainer.loss_type = "simpo"
    trainer.beta = beta
    trainer.simpo_gamma = simpo_gamma
    trainer.label_smoothing = label_smoothing
    trainer.cpo_alpha = cpo_alpha
    trainer.alpha = 0.0  # AlphaPO off
    trainer.is_encoder_decoder = False
    trainer.pad_token_id = PAD
    trainer.aux_loss_enabled = False
    return trainer


def _simpo(batch, **kwargs):
    w, r = batch.chosen, batch.rejected
    return simpo_loss(w["sums"], r["sums"], w["lengths"], r["lengths"], **kwargs)


@pytest.mark.parametrize("label_smoothing", [0.0, 0.1])
def test_simpo_matches_trl_cpo_loss_per_pair(batch, label_smoothing):
    ours = _simpo(batch, beta=2.0, gamma=0.5, label_smoothing=label_smoothing)
    trainer = _cpo_trainer(beta=2.0, simpo_gamma=0.5, label_smoothing=label_smoothing)
    losses, chosen_rewards, rejected_rewards = trainer.cpo_loss(ours.chosen_avg_logp, ours.rejected_avg_logp)
    assert ours.loss.tolist() == pytest.approx(losses.tolist(), abs=TOLERANCE)
    assert ours.chosen_reward.tolist() == pytest.approx(chosen_rewards.tolist(), abs=TOLERANCE)
    assert ours.rejected_reward.tolist() == pytest.approx(rejected_rewards.tolist(), abs=TOLERANCE)


@pytest.mark.parametrize("cpo_alpha", [0.0, 0.5, 1.0])
def test_simpo_step_matches_trl_cpo_with_its_nll_as_the_sft_term(tiny_lm, batch, cpo_alpha):
    """TRL's whole SimPO step (its own average log-probs from the logits): cpo_alpha = 0 is the paper's SimPO; any
    other cpo_alpha adds exactly ``sft_terms(weight=cpo_alpha)`` on the chosen responses."""
    trainer = _cpo_trainer(beta=2.0, simpo_gamma=0.5, cpo_alpha=cpo_alpha)
    with torch.no_grad():
        loss, logged = trainer.get_batch_loss_metrics(tiny_lm, batch.trl)
    ours = _simpo(batch, beta=2.0, gamma=0.5)
    sft = sft_terms(batch.chosen["sums"], batch.chosen["lengths"], weight=cpo_alpha)
    assert (ours.batch_loss + sft.batch).item() == pytest.approx(loss.item(), abs=TOLERANCE)
    assert ours.chosen_reward.mean().item() == pytest.approx(logged["rewards/chosen"], abs=TOLERANCE)
    assert ours.rejected_reward.mean().item() == pytest.approx(logged["rewards/rejected"], abs=TOLERANCE)
    assert ours.margin.mean().item() == pytest.approx(logged["rewards/margins"], abs=TOLERANCE)
    assert ours.accuracy == logged["rewards/accuracies"]
    assert ours.chosen_avg_logp.mean().item() == pytest.approx(logged["logps/chosen"], abs=TOLERANCE)
    if cpo_alpha:
        unit = sft_terms(batch.chosen["sums"], batch.chosen["lengths"], weight=1.0)
        assert unit.batch.item() == pytest.approx(logged["nll_loss"], abs=TOLERANCE)
        assert abs(loss.item() - ours.batch_loss.item()) > 0.1  # the NLL is a real change from the paper
    assert abs(ours.margin).max().item() > 0.1


def test_trl_cpo_defaults_are_not_the_simpo_papers():
    """Pinned: TRL's CPOConfig starts at beta = 0.1, simpo_gamma = 0.5 (gamma / beta = 5) and cpo_alpha = 1 (an NLL
    term SimPO does not have); the registry's SimPO starts at the SimPO authors' beta = 2, gamma / beta = 0.5."""
    fields = CPOConfig.__dataclass_fields__
    assert (fields["beta"].default, fields["simpo_gamma"].default, fields["cpo_alpha"].default) == (0.1, 0.5, 1.0)
    assert fields["simpo_gamma"].default / fields["beta"].default == pytest.approx(5.0)
    ours = objective("simpo").defaults
    assert ours["gamma"] / ours["beta"] == pytest.approx(0.5)


def _orpo_trainer(beta: float) -> ORPOTrainer:
    trainer = object.__new__(ORPOTrainer)
    trainer.accelerator = _OneProcess()
    trainer.beta = beta
    trainer.is_encoder_decoder = False
    trainer.padding_value = PAD
    trainer.aux_loss_enabled = False
    return trainer


def test_orpo_odds_ratio_matches_trl_per_pair(batch):
    w, r = batch.chosen, batch.rejected
    ours = orpo_loss(w["sums"], r["sums"], w["lengths"], r["lengths"], beta=0.25)
    # both of log1mexp's branches are exercised: one average log-prob above -ln 2, the others below
    assert (ours.chosen_avg_logp > -math.log(2.0)).any() and (ours.rejected_avg_logp < -math.log(2.0)).all()
    losses, chosen_rewards, rejected_rewards, mean_log_sigmoid, mean_log_odds = _orpo_trainer(0.25).odds_ratio_loss(
        ours.chosen_avg_logp, ours.rejected_avg_logp)
    # TRL's "losses" are beta * log sigma(ratio), subtracted later: minus our odds_ratio_loss
    assert (-ours.odds_ratio_loss).tolist() == pytest.approx(losses.tolist(), abs=TOLERANCE)
    assert ours.chosen_reward.tolist() == pytest.approx(chosen_rewards.tolist(), abs=TOLERANCE)
    assert ours.rejected_reward.tolist() == pytest.approx(rejected_rewards.tolist(), abs=TOLERANCE)
    # TRL's metric named log_odds_ratio is mean log sigma(ratio); log_odds_chosen is the mean log odds ratio
    assert ours.log_sigmoid_ratio.mean().item() == pytest.approx(mean_log_sigmoid.item(), abs=TOLERANCE)
    assert ours.log_odds_ratio.mean().item() == pytest.approx(mean_log_odds.item(), abs=TOLERANCE)


def test_orpo_step_matches_trl_with_its_prompt_inclusive_nll(tiny_lm, batch):
    """With the NLL over the whole chosen sequence (prompt included, as TRL computes it) ORPO is TRL's step."""
    with torch.no_grad():
        loss, logged = _orpo_trainer(0.25).get_batch_loss_metrics(tiny_lm, batch.trl)
    w, r = batch.chosen, batch.rejected
    ours = orpo_loss(w["sums"], r["sums"], w["lengths"], r["lengths"], beta=0.25,
                     nll_logps=w["sequence_sums"], nll_lengths=w["sequence_lengths"])
    assert ours.batch_loss.item() == pytest.approx(loss.item(), abs=TOLERANCE)
    assert ours.batch_nll.item() == pytest.approx(logged["nll_loss"], abs=TOLERANCE)
    assert ours.chosen_reward.mean().item() == pytest.approx(logged["rewards/chosen"], abs=TOLERANCE)
    assert ours.rejected_reward.mean().item() == pytest.approx(logged["rewards/rejected"], abs=TOLERANCE)
    assert ours.margin.mean().item() == pytest.approx(logged["rewards/margins"], abs=TOLERANCE)
    assert ours.accuracy == logged["rewards/accuracies"]
    assert ours.log_sigmoid_ratio.mean().item() == pytest.approx(logged["log_odds_ratio"], abs=TOLERANCE)
    assert ours.log_odds_ratio.mean().item() == pytest.approx(logged["log_odds_chosen"], abs=TOLERANCE)


def test_orpo_papers_nll_differs_from_trls_by_the_prompt_tokens(tiny_lm, batch):
    """Pinned: the paper's L_SFT (our default) covers the chosen response; TRL's also covers the prompt tokens. The
    two losses differ by exactly the difference of the two token-weighted NLLs."""
    with torch.no_grad():
        loss, _ = _orpo_trainer(0.25).get_batch_loss_metrics(tiny_lm, batch.trl)
    w, r = batch.chosen, batch.rejected
    paper = orpo_loss(w["sums"], r["sums"], w["lengths"], r["lengths"], beta=0.25)
    response_nll = -w["sums"].sum() / w["lengths"].sum()
    sequence_nll = -w["sequence_sums"].sum() / w["sequence_lengths"].sum()
    assert paper.batch_nll.item() == pytest.approx(response_nll.item(), abs=TOLERANCE)
    assert loss.item() - paper.batch_loss.item() == pytest.approx((sequence_nll - response_nll).item(),
                                                                  abs=TOLERANCE)
    assert abs((sequence_nll - response_nll).item()) > 0.05  # a real difference on this data
