"""The learned reward model R_phi of the source material's construction 2 of V, for Inspect.

R_phi is a linear head on the frozen base model's final hidden state at each response's last token
(``objectives.reward_head``), fitted with the pairwise ranking loss on the data set's own chosen/rejected pairs. The
features come from one no-grad pass of the base over the 2P responses when a data set is first scored; the fit takes
well under a second and is cached with the scores. Every pair's reward comes from a head fitted on the other folds
(cross-fitting), so V under R_phi is not flattered by rewards the head memorised. R_phi scores texts, not adapters:
it is the same for every variant.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import torch

from playground import config
from playground.engine.scoring import collate
from playground.engine.templating import tokenize_pair
from playground.objectives.reward_head import cross_fit_rewards, extract_features, last_real_token_index

if TYPE_CHECKING:
    from playground.engine.engine import Engine

FOLDS = 5  # cross-fitting folds (fewer when there are fewer pairs)


@dataclass
class RewardModelScores:
    """R_phi of one data set's 2P responses (chosen_0..P-1, then rejected_0..P-1) and how well it ranks the pairs."""

    rewards: np.ndarray  # (2P,) cross-fitted R_phi
    folds: int
    in_sample_accuracy: float  # a head fitted on all pairs, scored on them (optimistic)
    out_of_fold_accuracy: float  # the cross-fitted rewards' preference accuracy (NaN with a single pair)

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["rewards"] = [round(float(r), 6) for r in self.rewards]
        for key in ("in_sample_accuracy", "out_of_fold_accuracy"):
            data[key] = None if not math.isfinite(data[key]) else data[key]
        return data

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> RewardModelScores:
        def number(value):
            return math.nan if value is None else float(value)

        return cls(np.asarray(data["rewards"], dtype=np.float64), int(data["folds"]),
                   number(data["in_sample_accuracy"]), number(data["out_of_fold_accuracy"]))


def reward_features_on(engine: Engine, pairs: pd.DataFrame, *, max_length: int = config.SCORING.max_length,
                       batch_size: int = config.SCORING.batch_size) -> np.ndarray:
    """The base model's final hidden state at the last token of each of the 2P responses: (2P, H) float32.

    Rows are the chosen answers, then the rejected ones; the base is selected per row (PEFT's ``adapter_names``),
    never by switching the model-wide adapter, and ``engine.lock`` is held per batch."""
    prompts = list(pairs["prompt"]) * 2
    responses = list(pairs["chosen"]) + list(pairs["rejected"])
    systems = [s or None for s in pairs["system"]] * 2 if "system" in pairs else [None] * len(prompts)
    tokenised = [tokenize_pair(engine.tokenizer, p, r, s, max_length) for p, r, s in zip(prompts, responses, systems)]
    device = engine.device.device
    base_name = engine.adapter_names_for([config.BASE_VARIANT])[0]
    features: list[torch.Tensor] = []
    for start in range(0, len(tokenised), batch_size):
        batch = collate(tokenised[start: start + batch_size], engine.tokenizer.pad_token_id, "right", device)
        rows = batch.input_ids.shape[0]
        extra = {"adapter_names": [base_name] * rows} if engine.adapters else {}
        with engine.lock:
            features.append(extract_features(engine.model, batch.input_ids, batch.attention_mask,
                                             last_real_token_index(batch.attention_mask), **extra))
    return torch.cat(features).numpy()


def fit_reward_model(features: np.ndarray | Sequence, seed: int = 0) -> RewardModelScores:
    """Cross-fitted R_phi from the (2P, H) features of :func:`reward_features_on` (pure; well under a second)."""
    array = torch.as_tensor(np.asarray(features), dtype=torch.float32)
    pairs = array.shape[0] // 2
    fit = cross_fit_rewards(array[:pairs], array[pairs:], folds=FOLDS, seed=seed)
    rewards = torch.cat([fit.chosen, fit.rejected]).double().numpy()
    return RewardModelScores(rewards, fit.folds, fit.in_sample_accuracy, fit.out_of_fold_accuracy)
