"""A learned reward R_phi(x, y): a linear head on the frozen base model's final hidden state.

The source material's reward-model construction of V needs an R_phi "pre-trained with a pairwise ranking loss".
Here it is the cheapest such model: features are extracted once (one forward pass per response), then a linear layer
is fitted on them with the Bradley-Terry loss -log sigma(R_w - R_l) in well under a second on CPU.

Model access is generic: any Hugging Face causal LM that returns ``hidden_states`` works; no transformers import.
"""

from __future__ import annotations

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
    losses: list[float]  # mean ranking loss at each optimisation step (full batch)
    train_accuracy: float  # share of training pairs with R(chosen) > R(rejected) after fitting


def train_reward_head(
    chosen_features: Tensor,
    rejected_features: Tensor,
    *,
    steps: int = 200,
    learning_rate: float = 0.05,
    weight_decay: float = 1e-3,
    seed: int = 0,
) -> RewardHeadFit:
    """Fit a ``RewardHead`` on paired features with the pairwise ranking loss (full-batch AdamW).

    Shapes: ``chosen_features``, ``rejected_features`` (P, H), row i the final hidden state of pair i's chosen and
    rejected response. Weight decay keeps the weights finite on separable data (a few pairs in a wide space always
    are). Deterministic for a given seed.
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
    optimiser = torch.optim.AdamW(head.parameters(), lr=learning_rate, weight_decay=weight_decay)
    losses = []
    for _ in range(steps):
        optimiser.zero_grad()
        loss = pairwise_ranking_loss(head(chosen), head(rejected)).mean()
        loss.backward()
        optimiser.step()
        losses.append(loss.item())
    head.eval()
    with torch.no_grad():
        accuracy = (head(chosen) > head(rejected)).float().mean().item()
    return RewardHeadFit(head=head, losses=losses, train_accuracy=accuracy)


def predict_rewards(head: RewardHead, features: Tensor) -> Tensor:
    """R_phi for each row of ``features`` (N, H) -> (N,), without gradients."""
    with torch.no_grad():
        return head(features)


def last_real_token_index(attention_mask: Tensor) -> Tensor:
    """Index of the last attended position per row, (B, T) -> (B,); right or left padding alike."""
    positions = torch.arange(attention_mask.shape[1], device=attention_mask.device)
    return (attention_mask.bool() * (positions + 1)).argmax(dim=1)


def extract_features(model, input_ids: Tensor, attention_mask: Tensor, last_token_index: Tensor) -> Tensor:
    """The final hidden state at each row's last response token: (B, T), (B, T), (B,) -> (B, H) float32 on CPU.

    Uses ``model(..., output_hidden_states=True).hidden_states[-1]``. In transformers 5.x that entry is the output of
    the final norm (the ``last_hidden_state`` the LM head reads; Llama's ``capture_outputs`` ties it), which
    ``tests/test_values.py`` checks. Pass the frozen base (PEFT: inside ``model.disable_adapter()``) so the features do
    not move while adapters train. ``logits_to_keep=1`` skips the vocabulary projection for all but one position.
    """
    with torch.no_grad():
        outputs = model(
            input_ids=input_ids,
            attention_mask=attention_mask,
            output_hidden_states=True,
            use_cache=False,
            logits_to_keep=1,
        )
    final_hidden = outputs.hidden_states[-1]  # (B, T, H)
    rows = torch.arange(final_hidden.shape[0], device=final_hidden.device)
    return final_hidden[rows, last_token_index.to(final_hidden.device)].float().cpu()
