"""Parity with TRL 1.16: this project's scoring + losses give TRL's step-0 loss and logged metrics.

On tiny random Llamas with the real SmolLM2 tokenizer and chat template, a one-step ``DPOTrainer`` / ``KTOTrainer``
run logs the loss and metrics of the untouched models (the optimiser steps after the forward pass). The same numbers
must come out of ``playground.engine.scoring.score`` + ``playground.objectives``. The tokenisation test checks that our
prompt/response boundary is TRL's token for token, so the parity is not a coincidence of sums.

``trl`` (and ``datasets``) are test-only dependencies: imported here and nowhere in ``playground``.
"""

from __future__ import annotations

import copy

import pytest
import torch

pytest.importorskip("trl")
datasets = pytest.importorskip("datasets")

from transformers import TrainerCallback  # noqa: E402
from trl import DPOConfig, DPOTrainer, KTOConfig, KTOTrainer  # noqa: E402

from playground.engine.scoring import score  # noqa: E402
from playground.engine.templating import tokenize_pair  # noqa: E402
from playground.objectives.dpo import dpo_loss  # noqa: E402
from playground.objectives.kto import kto_loss, mismatched_pairs  # noqa: E402

BETA = 0.1
TOLERANCE = 1e-5
# Losses are compared to 1e-5 or one part in a million, whichever is larger: IPO's loss is ~30 here, and float32
# log-prob sums of ~-50 nats agree between two implementations only to a few 1e-6.
LOSS_REL = 1e-6

# Conversational rows: a plain user turn, a custom system message, a multi-turn history.
PROMPTS = [
    [{"role": "user", "content": "What is the capital of France?"}],
    [{"role": "system", "content": "You are terse."}, {"role": "user", "content": "Name a prime number."}],
    [
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello!"},
        {"role": "user", "content": "How are you?"},
    ],
    [{"role": "user", "content": "2+2?"}],
]
CHOSEN = ["Paris.", "7", "Fine, thanks. And you?", "4"]
REJECTED = ["I think it might be Lyon, but I'm not sure.", "Eight is prime.", "Go away.", "Five, obviously."]
LABELS = [True, False, True, False]


def _assistant(text: str) -> list[dict[str, str]]:
    return [{"role": "assistant", "content": text}]


def _dpo_rows() -> list[dict]:
    return [
        {"prompt": p, "chosen": _assistant(c), "rejected": _assistant(r)}
        for p, c, r in zip(PROMPTS, CHOSEN, REJECTED, strict=True)
    ]


def _kto_rows() -> list[dict]:
    # completions alternate chosen / rejected answers so both labels have real text
    completions = [CHOSEN[0], REJECTED[1], CHOSEN[2], REJECTED[3]]
    return [
        {"prompt": p, "completion": _assistant(c), "label": label}
        for p, c, label in zip(PROMPTS, completions, LABELS, strict=True)
    ]


def _peaked(model, factor: float):
    """Scale the (tied) embeddings so next-token distributions are far from uniform and the two models disagree.

    A fresh tiny Llama is nearly uniform over the vocabulary, which would make every log-ratio ~0 and every loss ~ln 2.
    """
    with torch.no_grad():
        model.get_input_embeddings().weight.mul_(factor)
    return model


@pytest.fixture(scope="module")
def policy(tiny_model_factory):
    return _peaked(tiny_model_factory(0), 4.0)


@pytest.fixture(scope="module")
def reference(tiny_model_factory):
    return _peaked(tiny_model_factory(1), 8.0)


class _FirstLog(TrainerCallback):
    def __init__(self):
        self.logs: list[dict] = []

    def on_log(self, args, state, control, logs=None, **kwargs):
        self.logs.append(dict(logs or {}))


def _common_args(tmp_path, batch_size: int) -> dict:
    return dict(
        output_dir=str(tmp_path / "trl"),
        per_device_train_batch_size=batch_size,
        max_steps=1,
        logging_steps=1,
        report_to="none",
        use_cpu=True,
        bf16=False,
        save_strategy="no",
        gradient_checkpointing=False,
        disable_tqdm=True,
        beta=BETA,
        seed=0,
    )


def _trl_step0(trainer_cls, args, policy, reference, tokenizer, rows) -> tuple[dict, object]:
    """Run one TRL step on copies of the models; return the first log (step-0 loss and metrics) and the trainer."""
    callback = _FirstLog()
    trainer = trainer_cls(
        model=copy.deepcopy(policy),
        ref_model=copy.deepcopy(reference),
        args=args,
        train_dataset=datasets.Dataset.from_list(rows),
        processing_class=copy.deepcopy(tokenizer),
        callbacks=[callback],
    )
    trainer.train()
    return callback.logs[0], trainer


def test_tokenisation_boundary_matches_trl(policy, reference, tokenizer, tmp_path):
    """Prompt ids, response ids and KTO's mismatched KL completions equal TRL's, token for token."""
    args = DPOConfig(**_common_args(tmp_path, 4))
    trainer = DPOTrainer(
        model=copy.deepcopy(policy),
        ref_model=copy.deepcopy(reference),
        args=args,
        train_dataset=datasets.Dataset.from_list(_dpo_rows()),
        processing_class=copy.deepcopy(tokenizer),
    )
    processed = trainer.train_dataset
    for i, (prompt, chosen, rejected) in enumerate(zip(PROMPTS, CHOSEN, REJECTED, strict=True)):
        ours_chosen = tokenize_pair(tokenizer, prompt, chosen)
        ours_rejected = tokenize_pair(tokenizer, prompt, rejected)
        assert ours_chosen.prompt_ids == processed[i]["prompt_ids"]
        assert ours_chosen.response_ids == processed[i]["chosen_ids"]
        assert ours_rejected.response_ids == processed[i]["rejected_ids"]
        # the end-of-turn token and the template's newline after it belong to the response, as in TRL
        assert tokenizer.decode(ours_chosen.response_ids).endswith("<|im_end|>\n")

    kto_trainer = KTOTrainer(
        model=copy.deepcopy(policy),
        ref_model=copy.deepcopy(reference),
        args=KTOConfig(**_common_args(tmp_path, 4)),
        train_dataset=datasets.Dataset.from_list(_kto_rows()),
        processing_class=copy.deepcopy(tokenizer),
    )
    kto_processed = kto_trainer.train_dataset
    rows = _kto_rows()
    # TRL pairs prompt i with completion i-1: our mismatched_pairs with shift=-1
    kl_index = mismatched_pairs(len(rows), shift=-1).tolist()
    for i, row in enumerate(rows):
        ours = tokenize_pair(tokenizer, row["prompt"], row["completion"][0]["content"])
        assert ours.prompt_ids == kto_processed[i]["prompt_ids"]
        assert ours.response_ids == kto_processed[i]["completion_ids"]
        kl_pair = tokenize_pair(tokenizer, row["prompt"], rows[kl_index[i]]["completion"][0]["content"])
        assert kl_pair.response_ids == kto_processed[i]["KL_completion_ids"]


def _dpo_terms(policy, reference, tokenizer, variant, label_smoothing):
    chosen_policy = score(policy, tokenizer, PROMPTS, CHOSEN)
    rejected_policy = score(policy, tokenizer, PROMPTS, REJECTED)
    chosen_reference = score(reference, tokenizer, PROMPTS, CHOSEN)
    rejected_reference = score(reference, tokenizer, PROMPTS, REJECTED)
    terms = dpo_loss(
        chosen_policy.sum_logps,
        rejected_policy.sum_logps,
        chosen_reference.sum_logps,
        rejected_reference.sum_logps,
        beta=BETA,
        loss_type=variant,
        label_smoothing=label_smoothing,
        chosen_lengths=chosen_policy.lengths,
        rejected_lengths=rejected_policy.lengths,
    )
    return terms, chosen_policy, rejected_policy


@pytest.mark.parametrize(
    ("variant", "label_smoothing"),
    [("sigmoid", 0.0), ("ipo", 0.0), ("hinge", 0.0), ("robust", 0.1)],
)
def test_dpo_matches_trl(policy, reference, tokenizer, tmp_path, variant, label_smoothing):
    terms, chosen_policy, rejected_policy = _dpo_terms(policy, reference, tokenizer, variant, label_smoothing)
    args = DPOConfig(**_common_args(tmp_path, len(PROMPTS)), loss_type=[variant], label_smoothing=label_smoothing)
    logged, _ = _trl_step0(DPOTrainer, args, policy, reference, tokenizer, _dpo_rows())

    # the comparison is not the trivial ln 2 of identical models
    assert abs(terms.margin).max().item() > 0.05
    assert terms.batch_loss.item() == pytest.approx(logged["loss"], rel=LOSS_REL, abs=TOLERANCE)
    assert terms.chosen_reward.mean().item() == pytest.approx(logged["rewards/chosen"], abs=TOLERANCE)
    assert terms.rejected_reward.mean().item() == pytest.approx(logged["rewards/rejected"], abs=TOLERANCE)
    assert terms.margin.mean().item() == pytest.approx(logged["rewards/margins"], abs=TOLERANCE)
    assert terms.accuracy == logged["rewards/accuracies"]
    assert chosen_policy.sum_logps.mean().item() == pytest.approx(logged["logps/chosen"], abs=1e-4)
    assert rejected_policy.sum_logps.mean().item() == pytest.approx(logged["logps/rejected"], abs=1e-4)


def test_trl_sigmoid_ignores_label_smoothing(policy, reference, tokenizer, tmp_path):
    """Known difference: TRL 1.16's "sigmoid" loss ignores label_smoothing; ours applies conservative DPO (cDPO).

    TRL 1.16 reads label_smoothing only for robust, exo_pair and aot. The spec asks for cDPO under "sigmoid", so with
    e > 0 our loss is -(1-e) log sigma(beta D) - e log sigma(-beta D) while TRL logs plain -log sigma(beta D).
    With e = 0 the two agree (test_dpo_matches_trl). Rewards and margins agree either way.
    """
    smoothed, _, _ = _dpo_terms(policy, reference, tokenizer, "sigmoid", 0.1)
    plain, _, _ = _dpo_terms(policy, reference, tokenizer, "sigmoid", 0.0)
    args = DPOConfig(**_common_args(tmp_path, len(PROMPTS)), loss_type=["sigmoid"], label_smoothing=0.1)
    logged, _ = _trl_step0(DPOTrainer, args, policy, reference, tokenizer, _dpo_rows())
    assert plain.batch_loss.item() == pytest.approx(logged["loss"], rel=LOSS_REL, abs=TOLERANCE)
    assert abs(smoothed.batch_loss.item() - logged["loss"]) > 1e-3
    assert smoothed.margin.mean().item() == pytest.approx(logged["rewards/margins"], abs=TOLERANCE)


@pytest.mark.parametrize("variant", ["kto", "apo_zero_unpaired"])
def test_kto_matches_trl(policy, reference, tokenizer, tmp_path, variant):
    rows = _kto_rows()
    completions = [row["completion"][0]["content"] for row in rows]
    desirable = torch.tensor(LABELS)
    policy_scores = score(policy, tokenizer, PROMPTS, completions)
    reference_scores = score(reference, tokenizer, PROMPTS, completions)
    policy_kl = reference_kl = None
    if variant == "kto":
        # KL batch: prompt i with completion i-1, TRL's rotation
        kl_completions = [completions[j] for j in mismatched_pairs(len(rows), shift=-1).tolist()]
        policy_kl = score(policy, tokenizer, PROMPTS, kl_completions).sum_logps
        reference_kl = score(reference, tokenizer, PROMPTS, kl_completions).sum_logps
    terms = kto_loss(
        policy_scores.sum_logps,
        reference_scores.sum_logps,
        desirable,
        policy_kl,
        reference_kl,
        beta=BETA,
        desirable_weight=1.5,
        undesirable_weight=0.8,
        loss_type=variant,
    )

    args = KTOConfig(
        **_common_args(tmp_path, len(rows)), loss_type=variant, desirable_weight=1.5, undesirable_weight=0.8
    )
    logged, _ = _trl_step0(KTOTrainer, args, policy, reference, tokenizer, rows)

    if variant == "kto":
        assert terms.z0.item() > 0.1  # a real reference point, not the clamp at 0
    assert terms.batch_loss.item() == pytest.approx(logged["loss"], rel=LOSS_REL, abs=TOLERANCE)
    assert terms.z0.item() == pytest.approx(logged["kl"], abs=TOLERANCE)
    assert terms.desirable_reward_mean == pytest.approx(logged["rewards/chosen"], abs=TOLERANCE)
    assert terms.undesirable_reward_mean == pytest.approx(logged["rewards/rejected"], abs=TOLERANCE)
    margin = terms.desirable_reward_mean - terms.undesirable_reward_mean
    assert margin == pytest.approx(logged["rewards/margins"], abs=TOLERANCE)


def test_dpo_with_sft_matches_trl(policy, reference, tokenizer, tmp_path):
    """RPO: TRL's loss_type=["sigmoid", "sft"] with loss_weights=[1, 0.5] is dpo_loss + sft_terms(weight=0.5)."""
    from playground.objectives.sft import sft_terms

    terms, chosen_policy, _ = _dpo_terms(policy, reference, tokenizer, "sigmoid", 0.0)
    sft = sft_terms(chosen_policy.sum_logps, chosen_policy.lengths, weight=0.5)
    args = DPOConfig(**_common_args(tmp_path, len(PROMPTS)), loss_type=["sigmoid", "sft"], loss_weights=[1.0, 0.5])
    logged, _ = _trl_step0(DPOTrainer, args, policy, reference, tokenizer, _dpo_rows())
    assert sft.batch.item() > 0.1  # the term is not negligible here
    assert (terms.batch_loss + sft.batch).item() == pytest.approx(logged["loss"], rel=LOSS_REL, abs=TOLERANCE)
