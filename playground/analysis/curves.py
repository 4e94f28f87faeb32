"""The curves behind Inspect's figures: one pair's loss along its argument, KTO's value v(r), the prospect value
and the source objective along V. Each is drawn by the same function that computes the per-sample numbers."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch

from playground.analysis.datasets import prompt_text
from playground.analysis.scores import DatasetScores
from playground.analysis.views import InspectAnalysis
from playground.objectives.dpo import dpo_loss, ipo_loss
from playground.objectives.kto import apo_zero_unpaired_value, kto_value
from playground.objectives.prospect import prospect_value, source_objective


def pair_focus(analysis: InspectAnalysis, scores: DatasetScores, index: int) -> dict[str, Any]:
    """Everything the waterfall and the highlights need for pair ``index``: texts, the additive steps to D, and the
    selected loss's curve over its argument with the pair placed on it."""
    n = scores.n_pairs
    if not 0 <= index < n:
        raise IndexError(f"pair {index} out of range 0..{n - 1}")
    row = analysis.pairs.iloc[index]
    pair = scores.pairs.iloc[index]
    s = analysis.settings
    beta = float(s.beta)
    delta = float(row["delta"])
    pol = scores.side(analysis.variant)
    focus = {
        "index": index,
        "prompt": prompt_text(pair["prompt"]),
        "chosen": pair["chosen"],
        "rejected": pair["rejected"],
        "ref_logratio": float(row["ref_logratio"]),
        "policy_logratio": float(row["policy_logratio"]),
        "chosen_logratio": float(row["chosen_logratio"]),
        "rejected_logratio": float(row["rejected_logratio"]),
        "delta": delta,
        "beta": beta,
        "logit": beta * delta,
        "sigma": 1.0 / (1.0 + math.exp(-beta * delta)) if abs(beta * delta) < 700 else float(beta * delta > 0),
        "loss": float(row["dpo_loss"]),
        "grad_weight": float(row["grad_weight"]),
        "dpo_loss_type": s.dpo_loss_type,
        "label_smoothing": float(s.label_smoothing),
        "samples": [index, index + n],
    }
    # the loss as a function of its argument, computed by the same loss functions
    if s.dpo_loss_type == "ipo":
        lw, ll = max(int(pol.chosen_len[index]), 1), max(int(pol.rejected_len[index]), 1)
        x = float(row["chosen_logratio"]) / lw - float(row["rejected_logratio"]) / ll
        centre = 1.0 / (2.0 * beta)
        half = max(abs(x - centre) * 1.3, centre, 1.0)
        grid = torch.linspace(centre - half, centre + half, 201, dtype=torch.float64)
        curve = ipo_loss(grid, torch.zeros_like(grid), torch.ones_like(grid), torch.ones_like(grid), beta=beta)
        focus.update(curve_x=grid.numpy(), curve_y=curve.numpy(), curve_point=x,
                     curve_xlabel="length-normalised Δ: r_w/|y_w| − r_l/|y_l| (nats/token)")
    else:
        half = max(abs(delta) * 1.3, 6.0 / beta)
        grid = torch.linspace(-half, half, 201, dtype=torch.float64)
        zeros = torch.zeros_like(grid)
        terms = dpo_loss(grid, zeros, zeros, zeros, beta=beta, loss_type=s.dpo_loss_type,
                                label_smoothing=float(s.label_smoothing), chosen_lengths=torch.ones_like(grid),
                                rejected_lengths=torch.ones_like(grid))
        focus.update(curve_x=grid.numpy(), curve_y=terms.loss.double().numpy(), curve_point=delta,
                     curve_xlabel="D = r_w − r_l (nats)")
    return focus


def kto_value_curves(analysis: InspectAnalysis, points: int = 201) -> dict[str, Any]:
    """KTO's value v(r) for each label over a grid of log-ratios r, by the same function the loss uses.

    The grid spans the samples' r and at least 3/beta either side of the reference point, so the sigmoid's bend shows.
    """
    s = analysis.settings
    beta = float(s.beta)
    r = analysis.samples["logratio"].to_numpy(dtype=float)
    z0 = float(analysis.kto.z0) if s.kto_loss_type == "kto" else 0.0
    lo = min(float(r.min()) if r.size else z0, z0 - 3.0 / beta)
    hi = max(float(r.max()) if r.size else z0, z0 + 3.0 / beta)
    pad = 0.05 * (hi - lo)
    grid = torch.linspace(lo - pad, hi + pad, points, dtype=torch.float64)
    curves = {"r": grid.numpy(), "z0": z0, "beta": beta, "kto_loss_type": s.kto_loss_type,
              "desirable_weight": float(s.desirable_weight), "undesirable_weight": float(s.undesirable_weight)}
    for label, flag, weight in (("desirable", True, s.desirable_weight), ("undesirable", False, s.undesirable_weight)):
        desirable = torch.full_like(grid, flag, dtype=torch.bool)
        weights = torch.full_like(grid, float(weight))
        if s.kto_loss_type == "kto":
            v = kto_value(grid, desirable, torch.tensor(z0, dtype=torch.float64), weights, beta=beta)
        else:
            v = apo_zero_unpaired_value(grid, desirable, weights, beta=beta)
        curves[label] = v.numpy()
    return curves


def prospect_curves(analysis: InspectAnalysis, points: int = 201) -> dict[str, Any]:
    """Prospect theory's value and the source document's objective as functions of V around tau (same functions as
    the per-sample numbers), over the samples' range of V."""
    tau = float(analysis.report.tau.tau)
    lam = float(analysis.settings.loss_aversion)
    v = analysis.samples["V"].to_numpy(dtype=float)
    finite = v[np.isfinite(v)]
    lo = min(float(finite.min()) if finite.size else tau, tau)
    hi = max(float(finite.max()) if finite.size else tau, tau)
    pad = max(0.1 * (hi - lo), 1e-3)
    grid = torch.linspace(lo - pad, hi + pad, points, dtype=torch.float64)
    return {"V": grid.numpy(), "tau": tau, "loss_aversion": lam,
            "corrected": prospect_value(grid, tau, lam).numpy(),
            "source": source_objective(grid, tau, lam).numpy()}
