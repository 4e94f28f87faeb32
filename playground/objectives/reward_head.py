"""A learned reward R_phi(x, y): a linear head on the frozen base model's final hidden state.

The source material's reward-model construction of V needs an R_phi "pre-trained with a pairwise ranking loss".
Here it is the cheapest such model: features are extracted once (one forward pass per response), then a linear layer
is fitted on them with the Bradley-Terry loss -log sigma(R_w - R_l) plus an L2 term in well under a second on CPU.

Model access is generic: any Hugging Face causal LM that returns ``hidden_states`` works; no transformers import.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class RewardHead(nn.Module):
    """R_phi(h) = w . (h - mu) / sigma + b on (N, H) features; mu, sigma are the training features' statistics.

    Standardising first makes one learning rate work for any model's hidden-state scale.
    """

    def __init__(self, hidden_size: int, feature_mean: Tensor | None = None, feature_std: Tensor | None = None):
        super().__init__()
        self.linear = nn.Linear(hidden_size, 1)
        # zero init: every response starts at R = 0, so the first ranking loss is ln 2
        nn.init.zeros_(self.linear.weight)
        nn.init.zeros_(self.linear.bias)
        self.register_buffer("feature_mean", torch.zeros(hidden_size) if feature_mean is None else feature_mean.clone())
        self.register_buffer("feature_std", torch.ones(hidden_size) if feature_std is None else feature_std.clone())

    def forward(self, features: Tensor) -> Tensor:
        """(N, H) features -> (N,) rewards."""
        standardised = (features.to(self.feature_mean.dtype) - self.feature_mean) / self.feature_std
        return self.linear(standardised).squeeze(-1)


def pairwise_ranking_loss(chosen_rewards: Tensor, rejected_rewards: Tensor) -> Tensor:
    """Bradley-Terry ranking loss per pair (Ouyang et al. 2022, Eq. (1)): -log sigma(R(x, y_w) - R(x, y_l)).

    Shapes: (P,), (P,) -> (P,).
    """
    return -F.logsigmoid(chosen_rewards - rejected_rewards)


@dataclass
class RewardHeadFit:
    head: RewardHead
    losses: list[float]  # mean ranking loss at each evaluation of the objective (full batch)
    train_accuracy: float  # share of training pairs with R(chosen) > R(rejected) after fitting


def train_reward_head(
    chosen_features: Tensor,
    rejected_features: Tensor,
    *,
    steps: int = 100,
    l2: float = 0.1,
    seed: int = 0,
) -> RewardHeadFit:
    """Fit a ``RewardHead`` on paired features: the pairwise ranking loss plus (l2 / 2) ||w||^2, full batch, L-BFGS.

    Shapes: ``chosen_features``, ``rejected_features`` (P, H), row i the final hidden state of pair i's chosen and
    rejected response. The problem is convex (a logistic regression on standardised feature differences; the bias
    cancels in R_w - R_l), so L-BFGS solves it in a few dozen iterations. The L2 term keeps the weights finite on
    separable data (a few pairs in a wide space always are) and, unlike Adam's per-coordinate steps, does not give
    every noise feature as much weight as the one that carries the preference. ``steps`` caps the iterations.
    Deterministic for a given seed.
    """
    if chosen_features.shape != rejected_features.shape or chosen_features.dim() != 2:
        raise ValueError(
            f"expected two (P, H) tensors of one shape, got {tuple(chosen_features.shape)} and "
            f"{tuple(rejected_features.shape)}"
        )
    if chosen_features.shape[0] == 0:
        raise ValueError("need at least one pair to fit a reward head")
    torch.manual_seed(seed)
    chosen = chosen_features.detach().float()
    rejected = rejected_features.detach().float()
    both = torch.cat([chosen, rejected])
    std = both.std(dim=0, correction=0).clamp(min=1e-6)  # constant features get unit scale instead of a 0 division
    head = RewardHead(chosen.shape[1], both.mean(dim=0), std)
    # R_w - R_l = w . (f_w - f_l) / sigma: the differences are computed once and only w is optimised
    differences = (chosen - rejected) / std
    weight = torch.zeros(chosen.shape[1], requires_grad=True)
    optimiser = torch.optim.LBFGS([weight], lr=1.0, max_iter=steps, tolerance_change=1e-7,
                                  line_search_fn="strong_wolfe")
    losses: list[float] = []

    def closure() -> Tensor:
        optimiser.zero_grad()
        ranking = F.softplus(-(differences @ weight)).mean()  # = pairwise_ranking_loss(R_w, R_l).mean()
        losses.append(ranking.item())
        (ranking + 0.5 * l2 * weight.pow(2).sum()).backward()
        return ranking

    optimiser.step(closure)
    with torch.no_grad():
        head.linear.weight.copy_(weight.detach().unsqueeze(0))
    head.eval()
    with torch.no_grad():
        accuracy = (head(chosen) > head(rejected)).float().mean().item()
    return RewardHeadFit(head=head, losses=losses, train_accuracy=accuracy)


@dataclass
class CrossFitRewards:
    """R_phi of every response from heads that never saw its pair (k-fold cross-fitting), and how well they rank."""

    chosen: Tensor  # (P,) R_phi(x, y_w), each from the head fitted on the other folds
    rejected: Tensor  # (P,) R_phi(x, y_l)
    folds: int  # k; 1 means a single in-sample fit (fewer than 2 pairs)
    in_sample_accuracy: float  # share of pairs ranked right by a head fitted on all pairs
    out_of_fold_accuracy: float  # the same for the cross-fitted rewards (NaN when folds == 1)


def cross_fit_rewards(chosen_features: Tensor, rejected_features: Tensor, *, folds: int = 5, seed: int = 0,
                      **fit_options) -> CrossFitRewards:
    """R_phi for every pair from ``folds`` heads, each fitted (``train_reward_head``) on the other folds' pairs.

    A head scores the pairs it was fitted on too well (a few pairs in a wide feature space are always separable), so
    a V built on in-sample rewards would flatter the reward model; cross-fitting gives each pair a reward from a head
    that never saw it. Folds are contiguous blocks of a seeded permutation. Shapes: (P, H), (P, H) -> fields (P,).
    """
    pairs = chosen_features.shape[0]
    everything = train_reward_head(chosen_features, rejected_features, seed=seed, **fit_options)
    if pairs < 2:
        head = everything.head
        return CrossFitRewards(predict_rewards(head, chosen_features), predict_rewards(head, rejected_features), 1,
                               everything.train_accuracy, math.nan)
    k = max(2, min(folds, pairs))
    order = torch.randperm(pairs, generator=torch.Generator().manual_seed(seed))
    chosen, rejected = torch.zeros(pairs), torch.zeros(pairs)
    for held in order.chunk(k):
        keep = torch.ones(pairs, dtype=torch.bool)
        keep[held] = False
        head = train_reward_head(chosen_features[keep], rejected_features[keep], seed=seed, **fit_options).head
        chosen[held] = predict_rewards(head, chosen_features[held])
        rejected[held] = predict_rewards(head, rejected_features[held])
    return CrossFitRewards(chosen, rejected, k, everything.train_accuracy, (chosen > rejected).float().mean().item())


def predict_rewards(head: RewardHead, features: Tensor) -> Tensor:
    """R_phi for each row of ``features`` (N, H) -> (N,), without gradients."""
    with torch.no_grad():
        return head(features)


def last_real_token_index(attention_mask: Tensor) -> Tensor:
    """Index of the last attended position per row, (B, T) -> (B,); right or left padding alike."""
    positions = torch.arange(attention_mask.shape[1], device=attention_mask.device)
    return (attention_mask.bool() * (positions + 1)).argmax(dim=1)


def extract_features(model, input_ids: Tensor, attention_mask: Tensor, last_token_index: Tensor,
                     **model_kwargs) -> Tensor:
    """The final hidden state at each row's last response token: (B, T), (B, T), (B,) -> (B, H) float32 on CPU.

    Uses ``model(..., output_hidden_states=True).hidden_states[-1]``. In transformers 5.x that entry is the output of
    the final norm (the ``last_hidden_state`` the LM head reads; Llama's ``capture_outputs`` ties it), which
    ``tests/objectives/test_values.py`` checks. Pass the frozen base (PEFT: per-row ``adapter_names`` of the base in
    ``model_kwargs``, or inside ``model.disable_adapter()``) so the features do not move while adapters train.
    ``logits_to_keep=1`` skips the vocabulary projection for all but one position.
    """
    with torch.no_grad():
        outputs = model(
            input_ids=input_ids,
            attention_mask=attention_mask,
            output_hidden_states=True,
            use_cache=False,
            logits_to_keep=1,
            **model_kwargs,
        )
    final_hidden = outputs.hidden_states[-1]  # (B, T, H)
    rows = torch.arange(final_hidden.shape[0], device=final_hidden.device)
    return final_hidden[rows, last_token_index.to(final_hidden.device)].float().cpu()
