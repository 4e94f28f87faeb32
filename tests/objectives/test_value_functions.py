"""V constructions, tau methods, the prospect decomposition and the reward head, on small hand-checked inputs."""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from playground.config import VALUES
from playground.objectives.prospect import prospect_decomposition, prospect_value, source_objective, value_report  # noqa: E402
from playground.objectives.reward_head import (  # noqa: E402
    RewardHead,
    extract_features,
    last_real_token_index,
    pairwise_ranking_loss,
    predict_rewards,
    train_reward_head,
)
from playground.objectives.task_metrics import (  # noqa: E402
    bleu_scores,
    keyword_scores,
    length_scores,
    rouge_l_scores,
    task_metric_scores,
)
from playground.objectives.thresholds import TauOptions, compute_tau, tau_ema, tau_quantile  # noqa: E402
from playground.objectives.value_functions import (  # noqa: E402
    ALPHA_GRID,
    BASELINE_LEAVE_ONE_OUT,
    BASELINE_REFERENCE,
    ValueInputs,
    compute_value,
    geometric_mean_probability,
    hybrid_value,
    implied_reward,
    likelihood_value,
    reward_value,
    search_alpha,
)


def t(*values: float) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.float64)


# --------------------------------------------------------------------------------------------------------------------
# likelihood
# --------------------------------------------------------------------------------------------------------------------

SUMS, LENGTHS, REF_SUMS = t(-4.0, -9.0), torch.tensor([2, 3]), t(-6.0, -6.0)


def test_likelihood_mean_and_sum():
    assert likelihood_value(SUMS, LENGTHS).value.tolist() == [-2.0, -3.0]
    assert likelihood_value(SUMS, LENGTHS, reduce="sum").value.tolist() == [-4.0, -9.0]


def test_likelihood_calibrated_against_the_reference():
    mean = likelihood_value(SUMS, LENGTHS, calibrate=True, reference_sum_logps=REF_SUMS)
    # (-4/2) - (-6/2) = 1 ; (-9/3) - (-6/3) = -1
    assert mean.value.tolist() == [1.0, -1.0]
    assert mean.reference_part.tolist() == [-3.0, -2.0]
    # with sums, calibration is the log-ratio r of DPO/KTO
    assert likelihood_value(
        SUMS, LENGTHS, reduce="sum", calibrate=True, reference_sum_logps=REF_SUMS
    ).value.tolist() == [
        2.0,
        -3.0,
    ]
    with pytest.raises(ValueError, match="reference_sum_logps"):
        likelihood_value(SUMS, LENGTHS, calibrate=True)
    with pytest.raises(ValueError, match="reduction"):
        likelihood_value(SUMS, LENGTHS, reduce="max")


# --------------------------------------------------------------------------------------------------------------------
# reward model
# --------------------------------------------------------------------------------------------------------------------

POLICY3, REF3 = t(-4.0, -9.0, -5.0), t(-6.0, -6.0, -5.0)


def test_implied_reward():
    assert implied_reward(POLICY3, REF3, beta=0.1).tolist() == pytest.approx([0.2, -0.3, 0.0])


def test_reward_value_leave_one_out():
    result = reward_value(t(0.2, -0.3, 0.0))
    # b_i = mean of the other two: (-0.3 + 0) / 2, (0.2 + 0) / 2, (0.2 - 0.3) / 2
    assert result.baseline.tolist() == pytest.approx([-0.15, 0.1, -0.05])
    assert result.value.tolist() == pytest.approx([0.35, -0.4, 0.05])
    assert result.baseline_label == BASELINE_LEAVE_ONE_OUT
    assert "approximation" in result.baseline_label
    assert result.baseline_from_reference.tolist() == [False, False, False]
    assert result.scale == 1.0


def test_reward_value_divided_by_std():
    result = reward_value(t(0.2, -0.3, 0.0), normalise_std=True)
    # population std of (0.2, -0.3, 0): sqrt(0.126667 / 3)
    assert result.scale == pytest.approx(0.2054805, abs=1e-7)
    assert result.value.tolist() == pytest.approx([1.7033249, -1.9466571, 0.2433321], abs=1e-6)


def test_reward_value_reference_samples_then_leave_one_out():
    result = reward_value(t(0.2, -0.3, 0.0), prompts=("a", "b", "c"), reference_rewards={"a": [0.1, 0.3], "b": []})
    # a: mean of its K = 2 reference samples; b (empty list) and c: leave-one-out
    assert result.baseline.tolist() == pytest.approx([0.2, 0.1, -0.05])
    assert result.value.tolist() == pytest.approx([0.0, -0.4, 0.05])
    assert result.baseline_from_reference.tolist() == [True, False, False]
    assert result.baseline_label.startswith("mixed")
    full = reward_value(t(0.2, -0.3), prompts=("a", "b"), reference_rewards={"a": [0.0], "b": [1.0]})
    assert full.baseline_label == BASELINE_REFERENCE
    assert full.value.tolist() == pytest.approx([0.2, -1.3])


def test_reward_value_single_sample_has_no_baseline():
    result = reward_value(t(0.7), normalise_std=True)
    assert result.value.tolist() == pytest.approx([0.7])
    assert result.scale == 1.0
    assert result.baseline_label.startswith("none")


# --------------------------------------------------------------------------------------------------------------------
# hybrid and task metrics
# --------------------------------------------------------------------------------------------------------------------


def test_hybrid_value():
    result = hybrid_value(t(math.log(0.5), math.log(0.25)), t(0.2, 0.9), alpha=0.3)
    # 0.3 * 0.5 + 0.7 * 0.2 ; 0.3 * 0.25 + 0.7 * 0.9
    assert result.value.tolist() == pytest.approx([0.29, 0.705])
    assert result.lm_probability.tolist() == pytest.approx([0.5, 0.25])
    with pytest.raises(ValueError, match="alpha"):
        hybrid_value(t(0.0), t(0.0), alpha=1.5)


def test_geometric_mean_probability_is_the_per_token_mean():
    # tokens with probabilities 0.5 and 0.125: geometric mean sqrt(0.0625) = 0.25
    mean_logp = (math.log(0.5) + math.log(0.125)) / 2
    assert geometric_mean_probability(t(mean_logp)).item() == pytest.approx(0.25)


def test_rouge_l():
    # LCS "the cat on the mat" = 5 of 6 tokens each side: P = R = F1 = 5/6
    assert rouge_l_scores(["the cat is on the mat"], ["the cat sat on the mat"]).tolist() == pytest.approx([5 / 6])


def test_bleu():
    scores = bleu_scores(["the cat sat on the mat", "the cat is on the mat"], ["the cat sat on the mat"] * 2)
    # second: n-gram precisions 5/6, 3/5, 1/4 and (exp smoothing of a zero count) 1/(2*3); brevity penalty 1
    expected = (5 / 6 * 3 / 5 * 1 / 4 * 1 / 6) ** 0.25
    assert scores.tolist() == pytest.approx([1.0, expected], abs=1e-6)


def test_length_rule():
    words = ["a b", " ".join(["w"] * 10), " ".join(["w"] * 100)]
    # 2 < 5 words: 2/5 ; inside [5, 80]: 1 ; 100 > 80: 80/100
    assert length_scores(words, min_words=5, max_words=80).tolist() == pytest.approx([0.4, 1.0, 0.8])


def test_keyword_rule():
    responses = ["Your refund is due", "Refund before the DEADLINE", "refunds later"]
    assert keyword_scores(responses, ["refund", "deadline"]).tolist() == [0.5, 1.0, 0.0]
    with pytest.raises(ValueError, match="keyword"):
        keyword_scores(responses, [])


def test_task_metric_falls_back_without_a_reference():
    scores = task_metric_scores(
        ["the cat is on the mat", "a b"], ["the cat sat on the mat", None], metric="rougeL", min_words=5, max_words=80
    )
    assert scores.scores.tolist() == pytest.approx([5 / 6, 0.4])
    assert scores.metrics == ("rougeL", "length")
    by_keyword = task_metric_scores(["refund now", "no"], None, metric="bleu", keywords=("refund",))
    assert by_keyword.scores.tolist() == [1.0, 0.0]
    assert by_keyword.metrics == ("keywords", "keywords")


def test_alpha_search_curve():
    # pair 1 wins iff alpha > 1/9, pair 2 iff alpha < 8/9, pair 3 iff alpha < 3/4 (V_c - V_r linear in alpha)
    log = lambda *p: t(*(math.log(x) for x in p))  # noqa: E731
    result = search_alpha(log(0.9, 0.2, 0.5), log(0.1, 0.3, 0.6), t(0.1, 0.9, 0.5), t(0.2, 0.1, 0.2))
    assert result.alphas.tolist() == pytest.approx([i / 10 for i in range(11)])
    expected = [2 / 3, 2 / 3] + [1.0] * 6 + [2 / 3, 1 / 3, 1 / 3]
    assert result.accuracies.tolist() == pytest.approx(expected)
    assert result.best_alpha == 0.5  # ties over 0.2..0.7 go to the middle
    assert result.best_accuracy == 1.0
    assert result.highlighted.tolist() == [False] * 3 + [True] * 5 + [False] * 3
    assert np.array_equal(ALPHA_GRID, np.round(np.arange(11) / 10, 1))


# --------------------------------------------------------------------------------------------------------------------
# compute_value dispatch
# --------------------------------------------------------------------------------------------------------------------

INPUTS = ValueInputs(
    policy_sum_logps=POLICY3,
    lengths=torch.tensor([2, 3, 5]),
    reference_sum_logps=REF3,
    prompts=("a", "b", "c"),
    head_rewards=t(1.0, 2.0, 6.0),
    task_scores=t(0.5, 0.0, 1.0),
)


def test_compute_value_dispatch():
    likelihood = compute_value(INPUTS, replace(VALUES, construction="likelihood"))
    assert likelihood.construction == "likelihood"
    assert likelihood.value.tolist() == pytest.approx([-2.0, -3.0, -1.0])

    implied = compute_value(INPUTS, replace(VALUES, construction="reward", reward_source="implied"), beta=0.1)
    assert implied.value.tolist() == pytest.approx([0.35, -0.4, 0.05])

    head = compute_value(INPUTS, replace(VALUES, construction="reward", reward_source="head"))
    # leave-one-out baselines 4, 3.5, 1.5
    assert head.value.tolist() == pytest.approx([-3.0, -1.5, 4.5])

    hybrid = compute_value(INPUTS, replace(VALUES, construction="hybrid", alpha=0.5))
    # 0.5 * exp(mean logp) + 0.5 * task, mean logps -2, -3, -1
    expected = [0.5 * math.exp(-2) + 0.25, 0.5 * math.exp(-3), 0.5 * math.exp(-1) + 0.5]
    assert hybrid.value.tolist() == pytest.approx(expected)

    with pytest.raises(ValueError, match="unknown V construction"):
        compute_value(INPUTS, replace(VALUES, construction="magic"))
    with pytest.raises(ValueError, match="head_rewards"):
        compute_value(replace(INPUTS, head_rewards=None), replace(VALUES, construction="reward", reward_source="head"))


# --------------------------------------------------------------------------------------------------------------------
# tau
# --------------------------------------------------------------------------------------------------------------------


def test_tau_quantile():
    # position 0.7 * (5 - 1) = 2.8 between 3 and 4
    assert tau_quantile(t(5.0, 1.0, 4.0, 2.0, 3.0), 0.7) == pytest.approx(3.8)
    assert compute_tau("quantile", t(5.0, 1.0, 4.0, 2.0, 3.0)).tau == pytest.approx(3.8)  # default q = 0.7


def test_tau_ema_trajectory():
    batches = [t(0.0, 2.0), t(3.0, 3.0), t(4.0, 6.0)]  # means 1, 3, 5
    # tau_0 = first mean = 1; 1 + 0.5 (1 - 1) = 1; 1 + 0.5 (3 - 1) = 2; 2 + 0.5 (5 - 2) = 3.5
    assert tau_ema(batches, eta=0.5).tolist() == pytest.approx([1.0, 2.0, 3.5])
    # from tau_0 = 0: 0.5, 1.75, 3.375
    assert tau_ema(batches, eta=0.5, initial=0.0).tolist() == pytest.approx([0.5, 1.75, 3.375])
    result = compute_tau("ema", t(0.0, 2.0, 3.0, 3.0, 4.0, 6.0), TauOptions(ema_eta=0.5, ema_batch_size=2))
    assert result.tau == pytest.approx(3.5)
    assert result.trajectory.tolist() == pytest.approx([1.0, 2.0, 3.5])


def test_tau_fixed_and_z0():
    assert compute_tau("fixed", t(1.0, 2.0), TauOptions(fixed=0.4)).tau == 0.4
    assert compute_tau("z0", t(1.0), TauOptions(kl_logratios=t(0.5, -0.3))).tau == pytest.approx(0.1)
    assert compute_tau("z0", t(1.0), TauOptions(kl_logratios=t(-1.0, -2.0))).tau == 0.0
    with pytest.raises(ValueError, match="kl_logratios"):
        compute_tau("z0", t(1.0))
    with pytest.raises(ValueError, match="unknown tau method"):
        compute_tau("median", t(1.0))


# --------------------------------------------------------------------------------------------------------------------
# prospect decomposition
# --------------------------------------------------------------------------------------------------------------------


def test_prospect_decomposition_by_hand():
    terms = prospect_decomposition(t(-1.0, 0.0, 2.0), tau=0.5, loss_aversion=2.0)
    assert terms.gain.tolist() == [0.0, 0.0, 1.5]
    assert terms.loss.tolist() == [3.0, 1.0, 0.0]
    assert terms.value.tolist() == [-3.0, -1.0, 1.5]
    # the source's lambda * relu(V - tau) - relu(tau - V): lambda on the gain side
    assert terms.source_objective.tolist() == [-1.5, -0.5, 3.0]
    assert terms.is_gain.tolist() == [False, False, True]


@settings(max_examples=40, deadline=None)
@given(st.floats(-50, 50), st.floats(1.0, 5.0), st.floats(0.01, 10.0))
def test_prospect_value_is_continuous_with_slopes_lambda_and_one(tau, loss_aversion, distance):
    h = 1e-3
    below, above = tau - distance, tau + distance
    value = lambda v: prospect_value(t(v), tau, loss_aversion).item()  # noqa: E731
    assert value(tau) == 0.0
    assert abs(value(tau + 1e-9) - value(tau - 1e-9)) < 1e-8 * (1 + loss_aversion)
    assert (value(below + h) - value(below - h)) / (2 * h) == pytest.approx(loss_aversion, rel=1e-4)
    assert (value(above + h) - value(above - h)) / (2 * h) == pytest.approx(1.0, rel=1e-4)
    # the source objective has the slopes the other way round
    source = lambda v: source_objective(t(v), tau, loss_aversion).item()  # noqa: E731
    assert (source(above + h) - source(above - h)) / (2 * h) == pytest.approx(loss_aversion, rel=1e-4)
    assert (source(below + h) - source(below - h)) / (2 * h) == pytest.approx(1.0, rel=1e-4)


def test_value_report_chains_value_tau_and_prospect():
    config = replace(VALUES, construction="likelihood", tau_method="quantile", tau_quantile=0.5, loss_aversion=2.0)
    report = value_report(INPUTS, config)
    # V = (-2, -3, -1), median -2
    assert report.tau.tau == pytest.approx(-2.0)
    assert report.prospect.value.tolist() == pytest.approx([0.0, -2.0, 1.0])


# --------------------------------------------------------------------------------------------------------------------
# reward head
# --------------------------------------------------------------------------------------------------------------------


def test_pairwise_ranking_loss():
    # log(1 + e^-1), log 2
    assert pairwise_ranking_loss(t(1.0, 0.0), t(0.0, 0.0)).tolist() == pytest.approx([0.3132617, math.log(2)])


def test_reward_head_learns_a_separable_preference():
    generator = torch.Generator().manual_seed(0)
    chosen = torch.randn(32, 8, generator=generator)
    rejected = torch.randn(32, 8, generator=generator)
    chosen[:, 3] += 3.0  # the preferred responses are high on one feature direction
    fit = train_reward_head(chosen, rejected, steps=100)
    assert fit.losses[0] == pytest.approx(math.log(2))  # zero init: R = 0 everywhere
    assert fit.losses[-1] < 0.2
    assert fit.train_accuracy == 1.0
    rewards = predict_rewards(fit.head, torch.cat([chosen, rejected]))
    assert rewards.shape == (64,)
    assert not rewards.requires_grad
    # deterministic for a seed
    again = train_reward_head(chosen, rejected, steps=100)
    assert again.losses == fit.losses


def test_reward_head_standardises_features():
    head = RewardHead(2, feature_mean=t(1.0, 2.0).float(), feature_std=t(2.0, 4.0).float())
    with torch.no_grad():
        head.linear.weight.copy_(torch.tensor([[1.0, 1.0]]))
        head.linear.bias.fill_(0.5)
    # (3 - 1)/2 + (10 - 2)/4 + 0.5
    assert predict_rewards(head, torch.tensor([[3.0, 10.0]])).tolist() == pytest.approx([3.5])


def test_last_real_token_index_left_and_right_padding():
    mask = torch.tensor([[1, 1, 1, 0, 0], [0, 0, 1, 1, 1], [1, 1, 1, 1, 1]])
    assert last_real_token_index(mask).tolist() == [2, 4, 4]


def test_extract_features_reads_the_final_normed_hidden_state():
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=64,
        hidden_size=16,
        intermediate_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=1,
        max_position_embeddings=64,
    )
    model = LlamaForCausalLM(config).eval()
    input_ids = torch.tensor([[5, 6, 7, 8, 0], [9, 10, 11, 12, 13]])
    attention_mask = torch.tensor([[1, 1, 1, 1, 0], [1, 1, 1, 1, 1]])
    last = last_real_token_index(attention_mask)
    features = extract_features(model, input_ids, attention_mask, last)
    with torch.no_grad():
        # the decoder's own output is after the final RMSNorm: the state the LM head reads
        normed = model.model(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        outputs = model(input_ids=input_ids, attention_mask=attention_mask, output_hidden_states=True)
    assert torch.allclose(outputs.hidden_states[-1], normed)
    assert not torch.allclose(outputs.hidden_states[-2], normed)
    assert features.shape == (2, 16)
    assert torch.allclose(features, normed[torch.arange(2), last])
    # the LM head applied to the features gives the model's next-token logits there
    assert torch.allclose(model.lm_head(features), outputs.logits[torch.arange(2), last], atol=1e-5)
