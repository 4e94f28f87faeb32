"""Every preference objective by name: what data it trains on, whether it needs the reference, its defaults.

The training loop can read ``OBJECTIVES[name].needs_reference`` to skip the reference forward pass for SimPO and ORPO,
``paired`` to choose pairs or labelled answers, ``length_normalised`` to know the loss needs each response's token
count, and ``builtin_nll`` to know not to add the SFT term (``objectives.sft``) on top. The flags come from each
module's ``NEEDS_REFERENCE`` / ``PAIRED`` / ``LENGTH_NORMALISED``, so there is one place per fact.

This is the objectives' table; ``training.steps.METHODS`` (how a step runs each method) is the loop's and stays
separate. Defaults: DPO and KTO read ``config.LOSS``; the others are the papers' or TRL 1.16's defaults, named below.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from playground import config
from playground.objectives import apo, bco, orpo, simpo
from playground.objectives.dpo import dpo_loss
from playground.objectives.kto import kto_loss


@dataclass(frozen=True)
class ObjectiveSpec:
    """One objective: its loss function and what a training loop must know to call it."""

    name: str
    title: str
    paper: str  # authors, year and the equation the loss implements
    loss: Callable[..., Any]  # the per-sample function (returns the objective's terms dataclass)
    paired: bool  # pairs (prompt, chosen, rejected); False: labelled answers (prompt, completion, label)
    needs_reference: bool  # False: the reference forward pass can be skipped
    length_normalised: bool  # the loss needs each response's token count (average log-probs)
    builtin_nll: bool  # the objective already contains an NLL term: do not add the SFT term on top
    defaults: Mapping[str, Any]  # keyword arguments of ``loss`` (read-only)
    trl: str  # the TRL 1.16 counterpart
    # keyword arguments that select this entry (e.g. a variant)
    fixed: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))

    def kwargs(self, **overrides: Any) -> dict[str, Any]:
        """The keyword arguments for ``loss``: defaults, then ``overrides``, then what selects this entry."""
        unknown = set(overrides) - set(self.defaults)
        if unknown:
            raise ValueError(f"{self.name} has no hyperparameter {', '.join(sorted(unknown))}; "
                             f"it takes {', '.join(self.defaults) or 'none'}")
        return {**self.defaults, **overrides, **self.fixed}

    @property
    def sft_covers(self) -> str | None:
        """Which answers the SFT term (``objectives.sft.sft_terms``) covers when added: per sample the total is
        ``terms.loss + sft.share`` (TRL's ``loss_type=[..., "sft"]``); None where the objective has its own NLL."""
        if self.builtin_nll:
            return None
        return "chosen" if self.paired else "desirable"


def _frozen(**values: Any) -> Mapping[str, Any]:
    return MappingProxyType(dict(values))


_LOSS = config.LOSS

OBJECTIVES: dict[str, ObjectiveSpec] = {
    "dpo": ObjectiveSpec(
        name="dpo", title="DPO", paper="Rafailov et al. 2023, Eq. (7)", loss=dpo_loss,
        paired=True, needs_reference=True, length_normalised=False, builtin_nll=False,
        defaults=_frozen(beta=_LOSS.beta, loss_type=_LOSS.dpo_loss_type, label_smoothing=_LOSS.label_smoothing),
        trl='DPOTrainer, loss_type="sigmoid" (and "ipo", "hinge", "robust")',
    ),
    "kto": ObjectiveSpec(
        name="kto", title="KTO", paper="Ethayarajh et al. 2024, Eq. (8)", loss=kto_loss,
        paired=False, needs_reference=True, length_normalised=False, builtin_nll=False,
        defaults=_frozen(beta=_LOSS.beta, desirable_weight=_LOSS.desirable_weight,
                         undesirable_weight=_LOSS.undesirable_weight, loss_type=_LOSS.kto_loss_type),
        trl='KTOTrainer, loss_type="kto" (and "apo_zero_unpaired")',
    ),
    "simpo": ObjectiveSpec(
        name="simpo", title="SimPO", paper="Meng et al. 2024, Eq. (6)", loss=simpo.simpo_loss,
        paired=simpo.PAIRED, needs_reference=simpo.NEEDS_REFERENCE, length_normalised=simpo.LENGTH_NORMALISED,
        builtin_nll=False,
        # the SimPO authors' trainer defaults beta = 2.0, gamma / beta = 0.5 (TRL's CPOConfig starts at 0.1 / 0.5)
        defaults=_frozen(beta=2.0, gamma=1.0, label_smoothing=0.0),
        trl='experimental CPOTrainer, loss_type="simpo" with cpo_alpha=0 (simpo_gamma = gamma)',
    ),
    "orpo": ObjectiveSpec(
        name="orpo", title="ORPO", paper="Hong et al. 2024, Eqs. (6)-(7)", loss=orpo.orpo_loss,
        paired=orpo.PAIRED, needs_reference=orpo.NEEDS_REFERENCE, length_normalised=orpo.LENGTH_NORMALISED,
        builtin_nll=True,
        defaults=_frozen(beta=0.1, nll_reduction="token"),  # TRL's ORPOConfig beta (the paper's lambda)
        trl="experimental ORPOTrainer (its NLL also covers the prompt tokens)",
    ),
    "apo_zero": ObjectiveSpec(
        name="apo_zero", title="APO-zero", paper="D'Oosterlinck et al. 2024, Eq. (7)", loss=apo.apo_loss,
        paired=apo.PAIRED, needs_reference=apo.NEEDS_REFERENCE, length_normalised=apo.LENGTH_NORMALISED,
        builtin_nll=False, defaults=_frozen(beta=_LOSS.beta), fixed=_frozen(variant="zero"),
        trl='DPOTrainer, loss_type="apo_zero"',
    ),
    "apo_down": ObjectiveSpec(
        name="apo_down", title="APO-down", paper="D'Oosterlinck et al. 2024, Eq. (8)", loss=apo.apo_loss,
        paired=apo.PAIRED, needs_reference=apo.NEEDS_REFERENCE, length_normalised=apo.LENGTH_NORMALISED,
        builtin_nll=False, defaults=_frozen(beta=_LOSS.beta), fixed=_frozen(variant="down"),
        trl='DPOTrainer, loss_type="apo_down"',
    ),
    "bco": ObjectiveSpec(
        name="bco", title="BCO", paper="Jung et al. 2024", loss=bco.bco_loss,
        paired=bco.PAIRED, needs_reference=bco.NEEDS_REFERENCE, length_normalised=bco.LENGTH_NORMALISED,
        builtin_nll=False, defaults=_frozen(beta=0.1, delta=0.0),  # TRL's BCOConfig beta; delta from RewardBaseline
        trl='experimental BCOTrainer (not in TRL 1.16) without UDM; DPOTrainer loss_type="bco_pair" is delta = 0',
    ),
}


def objective(name: str) -> ObjectiveSpec:
    """The spec of ``name``, or a ValueError that lists the known names."""
    try:
        return OBJECTIVES[name]
    except KeyError:
        raise ValueError(f"unknown objective {name!r}; choose one of {', '.join(OBJECTIVES)}") from None


def reference_free() -> tuple[str, ...]:
    """Names of the objectives whose training needs no reference forward pass."""
    return tuple(name for name, spec in OBJECTIVES.items() if not spec.needs_reference)
