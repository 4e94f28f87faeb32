"""Inspect's learned reward model R_phi: cross-fitted rewards that a memorising head cannot flatter, features from
the frozen base under per-row adapter names, and the reward construction of V built on it."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from playground.analysis.cache import InspectCache
from playground.analysis.datasets import prepare_pairs
from playground.analysis.precomputed import load_precomputed, save_precomputed
from playground.analysis.reward_model import RewardModelScores, fit_reward_model, reward_features_on
from playground.analysis.scores import score_dataset
from playground.analysis.views import InspectSettings, analyse, value_label
from playground.engine.scoring import collate
from playground.engine.templating import tokenize_pair
from playground.objectives.reward_head import cross_fit_rewards, extract_features, last_real_token_index

PAIRS = pd.DataFrame({
    "prompt": ["What is 2+2?", "Name a yellow fruit.", "Say hi.", "Capital of France?", "A colour?", "Count."],
    "chosen": ["4.", "A banana.", "Hi there!", "Paris.", "Blue.", "One, two, three."],
    "rejected": ["5.", "A cucumber, obviously.", "No.", "Lyon, I think.", "Seven.", "Three."],
})


def test_cross_fitting_does_not_flatter_a_head_that_memorises():
    # 40 pairs of pure noise in 64 dimensions: a head fitted on all of them ranks every pair right (it memorises),
    # while heads that never saw a pair rank it no better than chance.
    generator = torch.Generator().manual_seed(0)
    chosen, rejected = torch.randn(40, 64, generator=generator), torch.randn(40, 64, generator=generator)
    fit = cross_fit_rewards(chosen, rejected, folds=5, seed=0)
    assert fit.in_sample_accuracy == 1.0
    assert 0.2 <= fit.out_of_fold_accuracy <= 0.8
    assert fit.folds == 5 and fit.chosen.shape == fit.rejected.shape == (40,)


def test_cross_fitting_finds_a_real_signal():
    generator = torch.Generator().manual_seed(1)
    direction = torch.zeros(16)
    direction[3] = 1.0
    chosen = torch.randn(30, 16, generator=generator) + 2 * direction
    rejected = torch.randn(30, 16, generator=generator) - 2 * direction
    fit = cross_fit_rewards(chosen, rejected, folds=5)
    assert fit.out_of_fold_accuracy >= 0.9


def test_one_pair_gets_an_in_sample_fit_and_no_out_of_fold_number():
    fit = cross_fit_rewards(torch.ones(1, 4), -torch.ones(1, 4))
    assert fit.folds == 1 and fit.in_sample_accuracy == 1.0 and np.isnan(fit.out_of_fold_accuracy)


def test_fit_reward_model_orders_rewards_like_the_features_and_round_trips():
    features = np.concatenate([np.eye(6, 8) * 3, -np.eye(6, 8) * 3])  # (2P, H): chosen rows, then rejected
    model = fit_reward_model(features)
    assert model.rewards.shape == (12,) and model.folds == 5
    again = RewardModelScores.from_json(model.to_json())
    np.testing.assert_allclose(again.rewards, model.rewards, atol=1e-6)
    assert again.folds == model.folds and again.out_of_fold_accuracy == pytest.approx(model.out_of_fold_accuracy)


def test_features_come_from_the_frozen_base_under_per_row_names(tiny_engine):
    pairs, _ = prepare_pairs(PAIRS)
    features = reward_features_on(tiny_engine, pairs, batch_size=4)
    assert features.shape == (12, tiny_engine.base_model.config.hidden_size)
    tokenised = [tokenize_pair(tiny_engine.tokenizer, p, r) for p, r in
                 zip(list(pairs["prompt"]) * 2, list(pairs["chosen"]) + list(pairs["rejected"]))]
    batch = collate(tokenised, tiny_engine.tokenizer.pad_token_id)
    with tiny_engine.model.disable_adapter():  # fine in a test: nothing else uses this model meanwhile
        expected = extract_features(tiny_engine.model, batch.input_ids, batch.attention_mask,
                                    last_real_token_index(batch.attention_mask))
    np.testing.assert_allclose(features, expected.numpy(), atol=1e-5)


def test_reward_view_on_r_phi_is_the_same_for_every_variant_and_says_which_r(tiny_engine, tmp_path):
    cache = InspectCache()
    scores = score_dataset(tiny_engine, PAIRS, ["base", "dpo", "kto"], cache=cache)
    assert scores.reward_model is not None and scores.reward_model.rewards.shape == (12,)
    settings = InspectSettings(construction="reward", reward_source="head")
    views = {variant: analyse(scores, variant, settings) for variant in ("base", "dpo", "kto")}
    rewards = scores.reward_model.rewards
    leave_one_out = (rewards.sum() - rewards) / (len(rewards) - 1)
    for result in views.values():
        np.testing.assert_allclose(result.samples["V"], rewards - leave_one_out, atol=1e-9)
        assert result.summary.reward_source == "head"
        assert result.summary.reward_model_accuracy == pytest.approx(scores.reward_model.out_of_fold_accuracy,
                                                                     nan_ok=True)
        assert "R_phi" in result.value_label and "R_phi" in " ".join(result.notes)
    implied = analyse(scores, "dpo", InspectSettings(construction="reward", reward_source="implied"))
    assert "implied reward" in implied.value_label and "R_phi" not in implied.value_label
    assert value_label(InspectSettings(construction="reward", reward_source="head", normalise_std=True)).endswith(
        "(std units)")
    # fitted once per data set: a second scoring takes it from the cache, and the disk cache keeps it
    assert score_dataset(tiny_engine, PAIRS, ["dpo"], cache=cache).reward_model is scores.reward_model
    path = save_precomputed(tiny_engine, scores, tmp_path / "cache.json")
    loaded = load_precomputed(tiny_engine, PAIRS, None, path)
    np.testing.assert_allclose(loaded.reward_model.rewards, rewards, atol=1e-6)


def test_thumbs_only_data_says_that_pairs_are_needed():
    thumbs = pd.DataFrame({"prompt": ["Hi?", "Bye?"], "completion": ["Hello!", "Go."], "label": [True, False]})
    with pytest.raises(ValueError, match="No pairs: none of the 2 prompts has both a desirable and an undesirable"):
        prepare_pairs(thumbs)
