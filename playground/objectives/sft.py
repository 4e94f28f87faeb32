"""The SFT regulariser: a negative log-likelihood term on the answers a preference loss wants more of.

RPO (Pang et al. 2024, "Iterative Reasoning Preference Optimization", Eq. (2)) adds to DPO the NLL of the chosen
answer; TRL 1.16 spells it ``loss_type=["sigmoid", "sft"]`` with ``loss_weights=[1, w]``. It keeps the chosen answers
likely in absolute terms, so a preference loss cannot win by pushing the rejected answers down while the chosen ones
drift into text the base would never write. For KTO the term covers the desirable answers.

TRL's form is a token-weighted mean over the batch: w * (-sum of the chosen answers' token log-probs) / (their token
count). Here it is split into per-sample shares whose batch mean is exactly that, so the SFT term sits beside the
other per-sample terms and the curves and Inspect can show it per answer.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from playground.objectives.validation import check_same_shape


@dataclass(frozen=True)
class SFTTerms:
    """Per-sample SFT quantities, every field shape (B,) except the scalar ``batch``.

    ``share`` carries the graph; ``nll`` is detached.
    """

    nll: Tensor  # -log pi_theta(y|x) / |y|: the answer's mean token NLL (0 where ``covered`` is False)
    share: Tensor  # weight * -log pi_theta(y|x) * B / (tokens of all covered answers): its part of the batch term
    covered: Tensor  # bool: the sample's answer is one the term covers (chosen / desirable)
    weight: float

    @property
    def batch(self) -> Tensor:
        """The batch's SFT loss: ``share.mean()`` = weight * token-weighted mean NLL of the covered answers."""
        return self.share.mean()


def sft_terms(policy_logps: Tensor, lengths: Tensor, *, weight: float, covered: Tensor | None = None) -> SFTTerms:
    """SFT terms of a batch (RPO's NLL term; TRL's ``"sft"`` loss type).

    Shapes: ``policy_logps`` (B,) summed answer log-probs under the policy (with graph), ``lengths`` (B,) their token
    counts, ``covered`` (B,) bool, which answers the term applies to (default: all). Returns zeros when no answer is
    covered or ``weight`` is 0.
    """
    if weight < 0:
        raise ValueError(f"the SFT weight must be >= 0, got {weight!r}")
    covered = torch.ones_like(policy_logps, dtype=torch.bool) if covered is None else covered.to(torch.bool)
    check_same_shape({"policy_logps": policy_logps, "lengths": lengths, "covered": covered})
    lengths = lengths.to(policy_logps.dtype)
    tokens = (lengths * covered).sum().clamp(min=1)
    masked = torch.where(covered, -policy_logps, torch.zeros_like(policy_logps))
    share = weight * masked * policy_logps.numel() / tokens
    nll = torch.where(covered, -policy_logps.detach() / lengths.clamp(min=1), torch.zeros_like(policy_logps))
    return SFTTerms(nll=nll, share=share, covered=covered, weight=float(weight))
