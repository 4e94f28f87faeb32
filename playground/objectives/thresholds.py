"""The source material's thresholds tau for V(x, y): a data quantile, a dynamic EMA, a task bar, or KTO's z0.

Shapes: (N,) means one entry per sample.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from playground.config import VALUES, ValueConfig
from playground.objectives.kto import kto_reference_point


@dataclass(frozen=True)
class TauOptions:
    """Settings of every tau method; each method reads its own."""
    quantile: float = VALUES.tau_quantile
    ema_eta: float = VALUES.tau_ema_eta
    ema_batch_size: int = VALUES.tau_ema_batch_size
    ema_initial: float | None = None  # tau_0; None starts at the first batch's mean
    fixed: float = VALUES.tau_fixed
    kl_logratios: Tensor | None = None  # (M,) log pi_theta - log pi_ref on mismatched pairs, for the z0 method

    @classmethod
    def from_config(cls, config: ValueConfig, kl_logratios: Tensor | None = None) -> TauOptions:
        return cls(
            quantile=config.tau_quantile,
            ema_eta=config.tau_ema_eta,
            ema_batch_size=config.tau_ema_batch_size,
            fixed=config.tau_fixed,
            kl_logratios=kl_logratios,
        )


@dataclass(frozen=True)
class TauResult:
    """A threshold and how it was set."""
    tau: float
    method: str
    trajectory: Tensor | None = None  # (T,) tau after each batch, EMA only


def tau_quantile(values: Tensor, q: float = VALUES.tau_quantile) -> float:
    """Data-quantile threshold: tau = Q_q(V), linear interpolation between order statistics (numpy's default).

    With q = 0.7 the top 30% of samples are gains. The source's choice for small, offline data. Shapes: (N,) -> float.
    """
    if not 0.0 <= q <= 1.0:
        raise ValueError(f"quantile must lie in [0, 1], got {q!r}")
    if values.numel() == 0:
        raise ValueError("the quantile of no values is undefined")
    return torch.quantile(values.double(), q).item()


def tau_ema(batches: Sequence[Tensor], *, eta: float = VALUES.tau_ema_eta, initial: float | None = None) -> Tensor:
    """Dynamic threshold for online data: tau_t = tau_{t-1} + eta * (mean V_t - tau_{t-1}), one step per batch.

    tau_0 = ``initial``, or the first batch's mean when None (so tau_1 equals it). Returns the trajectory
    (tau_1, ..., tau_T), shape (T,); the current threshold is its last entry.
    """
    if not 0.0 < eta <= 1.0:
        raise ValueError(f"eta must lie in (0, 1], got {eta!r}")
    if not batches:
        raise ValueError("the EMA threshold needs at least one batch")
    means = [batch.double().mean().item() for batch in batches]
    tau = means[0] if initial is None else float(initial)
    trajectory = []
    for mean in means:
        tau = tau + eta * (mean - tau)
        trajectory.append(tau)
    return torch.tensor(trajectory, dtype=torch.float64)


def _tau_by_quantile(values: Tensor, options: TauOptions) -> TauResult:
    return TauResult(tau_quantile(values, options.quantile), "quantile")


def _tau_by_ema(values: Tensor, options: TauOptions) -> TauResult:
    if options.ema_batch_size < 1:
        raise ValueError(f"ema_batch_size must be >= 1, got {options.ema_batch_size}")
    # the samples in data order stand in for the stream of training batches
    trajectory = tau_ema(list(values.split(options.ema_batch_size)), eta=options.ema_eta, initial=options.ema_initial)
    return TauResult(trajectory[-1].item(), "ema", trajectory)


def _tau_fixed(values: Tensor, options: TauOptions) -> TauResult:
    # a bar the task defines (e.g. "ROUGE-L >= 0.4"): independent of the data
    return TauResult(float(options.fixed), "fixed")


def _tau_by_z0(values: Tensor, options: TauOptions) -> TauResult:
    # KTO's reference point; on the scale of the log-ratio r, so pair it with V = r (calibrated summed likelihood)
    if options.kl_logratios is None:
        raise ValueError("the z0 threshold needs kl_logratios (log-ratios of mismatched pairs)")
    kl = options.kl_logratios
    return TauResult(kto_reference_point(kl, torch.zeros_like(kl)).item(), "z0")


TAU_METHODS: dict[str, Callable[[Tensor, TauOptions], TauResult]] = {
    "quantile": _tau_by_quantile,
    "ema": _tau_by_ema,
    "fixed": _tau_fixed,
    "z0": _tau_by_z0,
}


def compute_tau(method: str, values: Tensor, options: TauOptions | None = None) -> TauResult:
    """Threshold tau by method name: quantile | ema | fixed | z0 (KTO's reference point). ``values`` (N,)."""
    if method not in TAU_METHODS:
        raise ValueError(f"unknown tau method {method!r}; choose one of {', '.join(TAU_METHODS)}")
    return TAU_METHODS[method](values, options or TauOptions())
