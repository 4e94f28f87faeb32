"""What every pairwise objective reports, and the length normalisation SimPO and ORPO share.

``PairwiseTerms`` holds the fields ``objectives.dpo.DPOTerms`` has too (``chosen_reward``, ``rejected_reward``,
``margin``, ``loss``, ``chosen_preferred``, ``batch_loss``, ``accuracy``), so code that reads those from DPO's terms
reads them from SimPO's, ORPO's and APO's alike. Each objective's own terms add its method-specific fields.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor

from playground.objectives.dpo import preference_accuracy


@dataclass(frozen=True)
class PairwiseTerms:
    """Per-pair quantities every pairwise objective has, every field shape (B,).

    ``loss`` carries the graph; the rest are detached reporting values.
    """

    chosen_reward: Tensor  # the objective's reward of y_w (what TRL logs as rewards/chosen)
    rejected_reward: Tensor  # the same for y_l (rewards/rejected)
    margin: Tensor  # chosen_reward - rejected_reward (rewards/margins)
    loss: Tensor  # per-pair loss
    chosen_preferred: Tensor  # bool: chosen_reward > rejected_reward (rewards/accuracies)

    @property
    def batch_loss(self) -> Tensor:
        """Scalar batch loss: exactly the mean of ``loss``."""
        return self.loss.mean()

    @property
    def accuracy(self) -> float:
        """Share of pairs whose reward ranks the chosen response first (strict, as in TRL); NaN for no pairs."""
        return preference_accuracy(self.chosen_reward, self.rejected_reward)


def average_logps(summed_logps: Tensor, lengths: Tensor) -> Tensor:
    """Length-normalised log-probability log pi(y|x) / |y|, the average token log-prob of each response.

    Shapes: ``summed_logps`` (B,) summed response log-probs (graph kept), ``lengths`` (B,) response token counts.
    Every length must be at least 1: a response without tokens has no average (TRL would divide 0 by 0).
    """
    if lengths.numel() and bool((lengths < 1).any()):
        raise ValueError(f"every response needs at least one token to be length-normalised, got lengths {lengths}")
    return summed_logps / lengths.to(summed_logps.dtype)
