"""The preference-method family on one data set, from cached log-probs only: DPO, KTO, SimPO, ORPO, APO-zero,
APO-down and BCO, each computed by its own pure function in ``playground.objectives`` on the same pairs.

Pure: the summed log-probs and token counts of ``analysis.scores.SideScores`` in, a table and per-pair losses out.
DPO, APO and BCO use Inspect's beta (on the log-ratio to the reference); SimPO and ORPO read the policy alone with
their own beta (``config.METHOD_BETAS``) and SimPO's gamma (``config.LOSS.simpo_gamma``), so the reference-free rows
are the same whatever the reference. BCO's baseline delta is the mean reward of all 2P samples: what its running
mean reaches after one pass over them. The unpaired methods (KTO, BCO) see each pair as two labelled samples.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch

from playground import config
from playground.analysis.scores import SideScores
from playground.objectives.apo import apo_loss
from playground.objectives.bco import bco_loss, bco_rewards
from playground.objectives.dpo import dpo_loss
from playground.objectives.kto import kto_loss
from playground.objectives.orpo import orpo_loss
from playground.objectives.registry import OBJECTIVES
from playground.objectives.simpo import simpo_loss

FAMILY = ("dpo", "kto", "simpo", "orpo", "apo_zero", "apo_down", "bco")


@dataclass(frozen=True)
class FamilyMember:
    """One objective on the P pairs: per-pair loss (P,) (the unpaired ones: the mean of a pair's two samples' losses)
    and whether its own reward ranks the chosen answer first (P,) bool (unpaired: desirable above undesirable)."""

    name: str
    loss: np.ndarray
    chosen_first: np.ndarray
    settings: str  # its hyperparameters, in words


def _t(values: np.ndarray) -> torch.Tensor:
    return torch.as_tensor(np.asarray(values), dtype=torch.float64)


def family(pol: SideScores, ref: SideScores, beta: float, *, simpo_beta: float = config.METHOD_BETAS["simpo"],
           simpo_gamma: float = config.LOSS.simpo_gamma, orpo_beta: float = config.METHOD_BETAS["orpo"]
           ) -> list[FamilyMember]:
    """Every objective of :data:`FAMILY` on the pairs of ``pol`` (the variant) against ``ref`` (the reference)."""
    pc, pr, rc, rr = _t(pol.chosen_sum), _t(pol.rejected_sum), _t(ref.chosen_sum), _t(ref.rejected_sum)
    lc, lr = _t(np.maximum(pol.chosen_len, 1)), _t(np.maximum(pol.rejected_len, 1))
    n = len(pol.chosen_sum)
    members = []

    dpo = dpo_loss(pc, pr, rc, rr, beta=beta)
    members.append(FamilyMember("dpo", dpo.loss.detach().numpy(), dpo.margin.numpy() > 0, f"β={beta:g}"))

    desirable = torch.cat([torch.ones(n, dtype=torch.bool), torch.zeros(n, dtype=torch.bool)])
    samples, references = torch.cat([pc, pr]), torch.cat([rc, rr])
    kto = kto_loss(samples, references, desirable, _t(pol.kl_sum), _t(ref.kl_sum), beta=beta)
    kto_loss_pairs = kto.loss.detach().numpy().reshape(2, n).mean(axis=0)
    reward = kto.reward.detach().numpy().reshape(2, n)
    members.append(FamilyMember("kto", kto_loss_pairs, reward[0] > reward[1], f"β={beta:g}, λ_D=λ_U=1"))

    simpo = simpo_loss(pc, pr, lc, lr, beta=simpo_beta, gamma=simpo_gamma)
    members.append(FamilyMember("simpo", simpo.loss.detach().numpy(), simpo.chosen_preferred.numpy(),
                                f"β={simpo_beta:g}, γ={simpo_gamma:g}, no reference"))

    orpo = orpo_loss(pc, pr, lc, lr, beta=orpo_beta)
    members.append(FamilyMember("orpo", orpo.loss.detach().numpy(), orpo.log_odds_ratio.numpy() > 0,
                                f"β={orpo_beta:g} (NLL + β·odds-ratio term), no reference"))

    for variant in ("zero", "down"):
        apo = apo_loss(pc, pr, rc, rr, beta=beta, variant=variant)
        members.append(FamilyMember(f"apo_{variant}", apo.loss.detach().numpy(), apo.chosen_preferred.numpy(),
                                    f"β={beta:g}"))

    delta = float(bco_rewards(samples, references, beta=beta).mean())
    bco = bco_loss(samples, references, desirable, beta=beta, delta=delta)
    bco_reward = bco.reward.numpy().reshape(2, n)
    members.append(FamilyMember("bco", bco.loss.detach().numpy().reshape(2, n).mean(axis=0),
                                bco_reward[0] > bco_reward[1], f"β={beta:g}, δ={delta:.3g} (mean reward)"))
    return members


def family_table(members: list[FamilyMember]) -> pd.DataFrame:
    """One row per objective: its name, what it needs, its settings, mean loss and the share of pairs its own reward
    ranks the chosen answer first (a tie counts as wrong)."""
    rows = []
    for member in members:
        spec = OBJECTIVES[member.name]
        rows.append({"objective": spec.title, "data": "pairs" if spec.paired else "labelled answers",
                     "reference": "needed" if spec.needs_reference else "none",
                     "settings": member.settings, "mean loss": float(np.mean(member.loss)) if member.loss.size else
                     float("nan"), "chosen ranked first": float(np.mean(member.chosen_first)) if member.loss.size
                     else float("nan")})
    return pd.DataFrame(rows)
