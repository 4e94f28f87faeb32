"""ORPO (Hong et al. 2024, "ORPO: Monolithic Preference Optimization without Reference Model"): per-pair terms.

With log P(y|x) the average token log-prob (log pi_theta(y|x) / |y|), the odds of a response are P / (1 - P), so
log odds(y|x) = log P - log(1 - P), computed stably as log P - log1mexp(log P). The loss, Eq. (6) of the paper, is
the chosen answer's NLL plus lambda times the odds-ratio term (Eq. (7)):

    loss = L_SFT - lambda * log sigma(log odds(y_w|x) - log odds(y_l|x)).

TRL 1.16 (``trl.experimental.orpo.ORPOTrainer``, ``odds_ratio_loss`` and ``get_batch_loss_metrics``) calls lambda
``beta``; its odds-ratio term is the same, and it logs rewards beta * log P (chosen and rejected), ``log_odds_ratio`` =
mean log sigma(log odds ratio) (named as if it were the ratio itself) and ``log_odds_chosen`` = mean log odds ratio.
Where it differs from the paper is L_SFT: TRL's ``concatenated_forward`` computes the NLL over the prompt *and* the
response tokens of the chosen sequence ("orpo chosen nll loss is computed over the full prompt and response"),
token-weighted over the batch; the paper's L_SFT is the NLL of the response given the prompt. Here the NLL covers the
chosen response by default; pass ``nll_logps`` / ``nll_lengths`` of the whole chosen sequence to reproduce TRL
(``tests/objectives/test_more_objectives_trl.py`` checks both against TRL's own code).

Reference-free: the training loop may skip the reference forward pass (``NEEDS_REFERENCE``). The NLL is part of the
objective, so the separate SFT term (``objectives.sft``) should not be added on top.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from playground.objectives.pairwise import PairwiseTerms, average_logps
from playground.objectives.sft import sft_terms
from playground.objectives.validation import check_same_shape

NEEDS_REFERENCE = False  # odds come from the policy alone
PAIRED = True
LENGTH_NORMALISED = True  # P(y|x) is the average token likelihood

NLL_REDUCTIONS = ("token", "sample")

_MINUS_LN2 = -math.log(2.0)


@dataclass(frozen=True)
class ORPOTerms(PairwiseTerms):
    """Per-pair ORPO quantities, every field shape (B,).

    ``chosen_reward`` = beta * ``chosen_avg_logp`` as TRL logs it. ``loss`` = ``nll_share`` + ``odds_ratio_loss``,
    both with graph; the rest are detached.
    """

    chosen_avg_logp: Tensor  # log P(y_w|x) = log pi_theta(y_w|x) / |y_w|
    rejected_avg_logp: Tensor  # log P(y_l|x)
    log_odds_ratio: Tensor  # log odds(y_w|x) - log odds(y_l|x) (TRL's log_odds_chosen is its mean)
    log_sigmoid_ratio: Tensor  # log sigma(log_odds_ratio) (TRL's log_odds_ratio metric is its mean)
    odds_ratio_loss: Tensor  # -beta * log sigma(log_odds_ratio): lambda L_OR, with graph
    nll: Tensor  # the chosen answer's mean token NLL, -log pi_theta(y_w|x) / |y_w| (over the NLL's tokens)
    nll_share: Tensor  # this pair's part of the batch NLL (mean over pairs = the batch's L_SFT), with graph

    @property
    def batch_nll(self) -> Tensor:
        """The batch's L_SFT: ``nll_share.mean()`` (TRL's nll_loss with ``nll_reduction="token"``)."""
        return self.nll_share.mean()


def log1mexp(x: Tensor) -> Tensor:
    """log(1 - exp(x)) for x <= 0, stable at both ends (Maechler 2012; TRL's ``log1mexp``).

    log(-expm1(x)) near 0, where 1 - exp(x) cancels, and log1p(-exp(x)) below -ln 2. x = 0 gives -inf (P = 1 has
    infinite odds). Shapes: any -> the same.
    """
    return torch.where(x < _MINUS_LN2, torch.log1p(-torch.exp(x)), torch.log(-torch.expm1(x)))


def log_odds(avg_logps: Tensor) -> Tensor:
    """log odds(y|x) = log P - log(1 - P) of a length-normalised log-likelihood log P <= 0. Shapes: (B,) -> (B,)."""
    return avg_logps - log1mexp(avg_logps)


def orpo_loss(
    policy_chosen_logps: Tensor,
    policy_rejected_logps: Tensor,
    chosen_lengths: Tensor,
    rejected_lengths: Tensor,
    *,
    beta: float,
    nll_logps: Tensor | None = None,
    nll_lengths: Tensor | None = None,
    nll_reduction: str = "token",
) -> ORPOTerms:
    """Per-pair ORPO terms, Eqs. (6)-(7) of Hong et al. 2024: loss = L_SFT - beta * log sigma(log odds ratio).

    Shapes: ``policy_chosen_logps``, ``policy_rejected_logps`` (B,) summed response log-probs under the policy (graph
    kept); ``chosen_lengths``, ``rejected_lengths`` (B,) their token counts (>= 1). The NLL is over
    ``nll_logps`` (B,) summed log-probs with ``nll_lengths`` (B,) tokens, by default the chosen responses (the paper);
    TRL uses the whole chosen sequence, prompt included. ``nll_reduction``: ``"token"`` makes the batch NLL the
    token-weighted mean over the pairs (TRL's cross-entropy; per-pair shares as ``objectives.sft``), ``"sample"``
    the mean of each answer's own token-mean NLL. ``beta = 0`` leaves the NLL alone.
    """
    if not (math.isfinite(beta) and beta >= 0):
        raise ValueError(f"beta must be a finite number >= 0, got {beta!r}")
    if nll_reduction not in NLL_REDUCTIONS:
        raise ValueError(f"unknown nll_reduction {nll_reduction!r}; choose one of {', '.join(NLL_REDUCTIONS)}")
    if (nll_logps is None) != (nll_lengths is None):
        raise ValueError("pass nll_logps and nll_lengths together (or neither, for the chosen responses)")
    if nll_logps is None:
        nll_logps, nll_lengths = policy_chosen_logps, chosen_lengths
    check_same_shape({
        "policy_chosen_logps": policy_chosen_logps,
        "policy_rejected_logps": policy_rejected_logps,
        "chosen_lengths": chosen_lengths,
        "rejected_lengths": rejected_lengths,
        "nll_logps": nll_logps,
        "nll_lengths": nll_lengths,
    })

    chosen_avg = average_logps(policy_chosen_logps, chosen_lengths)
    rejected_avg = average_logps(policy_rejected_logps, rejected_lengths)
    ratio = log_odds(chosen_avg) - log_odds(rejected_avg)
    log_sigmoid_ratio = F.logsigmoid(ratio)
    odds_ratio_loss = -beta * log_sigmoid_ratio

    if nll_reduction == "token":
        nll_share = sft_terms(nll_logps, nll_lengths, weight=1.0).share
    else:
        nll_share = -average_logps(nll_logps, nll_lengths)
    nll = -average_logps(nll_logps.detach(), nll_lengths)

    chosen_avg, rejected_avg = chosen_avg.detach(), rejected_avg.detach()
    chosen_reward, rejected_reward = beta * chosen_avg, beta * rejected_avg
    return ORPOTerms(
        chosen_reward=chosen_reward,
        rejected_reward=rejected_reward,
        margin=chosen_reward - rejected_reward,
        loss=nll_share + odds_ratio_loss,
        chosen_preferred=chosen_reward > rejected_reward,
        chosen_avg_logp=chosen_avg,
        rejected_avg_logp=rejected_avg,
        log_odds_ratio=ratio.detach(),
        log_sigmoid_ratio=log_sigmoid_ratio.detach(),
        odds_ratio_loss=odds_ratio_loss,
        nll=nll,
        nll_share=nll_share,
    )
