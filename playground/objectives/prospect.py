"""Prospect theory's gain/loss split of V around tau, beside the source document's (wrong) objective.

Shapes: (N,) means one entry per sample.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from playground.config import LOSS, VALUES, ValueConfig
from playground.objectives.thresholds import TauOptions, TauResult, compute_tau
from playground.objectives.value_functions import ValueInputs, ValueResult, compute_value


@dataclass(frozen=True)
class ProspectTerms:
    """Gain/loss split of V around tau, tensors (N,).

    ``value`` is prospect theory's (lambda on losses); ``source_objective`` is the source document's (lambda on gains).
    """
    gain: Tensor  # max(0, V - tau)
    loss: Tensor  # lambda * max(0, tau - V), already weighted by loss aversion
    value: Tensor  # gain - loss: prospect theory (Kahneman & Tversky 1979), losses loom larger
    source_objective: Tensor  # lambda * relu(V - tau) - relu(tau - V): the source document's formula, for contrast
    is_gain: Tensor  # bool: V > tau
    tau: float
    loss_aversion: float


def prospect_value(values: Tensor, tau: float, loss_aversion: float) -> Tensor:
    """Prospect theory's piecewise-linear value: relu(V - tau) - lambda * relu(tau - V). CORRECT form.

    Kahneman & Tversky weigh *losses* by lambda > 1; slope 1 above tau, slope lambda below, continuous at tau. KTO's
    value (Ethayarajh et al. 2024, Eq. (8)) is the trainable, sigmoid-saturated form of the same idea.
    Shapes: (N,) -> (N,).
    """
    return torch.relu(values - tau) - loss_aversion * torch.relu(tau - values)


def source_objective(values: Tensor, tau: float, loss_aversion: float) -> Tensor:
    """The source document's written objective, per sample: lambda * relu(V - tau) - relu(tau - V). WRONG, shown as is.

    It puts lambda on the *gain* side (prospect theory puts it on losses) and uses no desirable/undesirable labels, so
    minimising its mean pushes every V down whatever the feedback. Kept so the app can show it beside
    ``prospect_value``. Shapes: (N,) -> (N,).
    """
    return loss_aversion * torch.relu(values - tau) - torch.relu(tau - values)


def prospect_decomposition(values: Tensor, tau: float, loss_aversion: float = VALUES.loss_aversion) -> ProspectTerms:
    """Split V (N,) around tau into gains and lambda-weighted losses, plus the source's objective for comparison."""
    if not (math.isfinite(loss_aversion) and loss_aversion > 0):
        raise ValueError(f"loss_aversion must be a finite number > 0, got {loss_aversion!r}")
    gain = torch.relu(values - tau)
    loss = loss_aversion * torch.relu(tau - values)
    return ProspectTerms(
        gain=gain,
        loss=loss,
        value=gain - loss,
        source_objective=source_objective(values, tau, loss_aversion),
        is_gain=values > tau,
        tau=float(tau),
        loss_aversion=float(loss_aversion),
    )


@dataclass(frozen=True)
class ValueReport:
    """One slider evaluation: V, its threshold and the decomposition."""
    values: ValueResult
    tau: TauResult
    prospect: ProspectTerms


def value_report(
    inputs: ValueInputs, config: ValueConfig = VALUES, *, beta: float = LOSS.beta, kl_logratios: Tensor | None = None
) -> ValueReport:
    """V by ``config.construction``, tau by ``config.tau_method``, then the prospect decomposition with lambda."""
    values = compute_value(inputs, config, beta=beta)
    tau = compute_tau(config.tau_method, values.value, TauOptions.from_config(config, kl_logratios))
    return ValueReport(values, tau, prospect_decomposition(values.value, tau.tau, config.loss_aversion))
