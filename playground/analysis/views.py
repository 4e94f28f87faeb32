"""Every Inspect view as a pure function of cached scores and the widget settings: no model call.

For ~1000 pairs ``analyse`` takes milliseconds: the DPO and KTO terms come from ``objectives.dpo`` / ``objectives.kto``,
the V constructions, thresholds and prospect decomposition from the other ``objectives`` modules (one implementation
per quantity).
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import torch

from playground import config
from playground.analysis.datasets import prompt_text, snippet
from playground.analysis.scores import DatasetScores
from playground.config import LOSS, VALUES
from playground.objectives.dpo import DPOTerms, dpo_loss, ipo_loss
from playground.objectives.kto import KTOTerms, apo_zero_unpaired_value, kto_loss, kto_value, kto_weight_advice
from playground.objectives.prospect import ValueReport, prospect_value, source_objective, value_report
from playground.objectives.thresholds import TAU_METHODS, TauOptions, compute_tau
from playground.objectives.value_functions import AlphaSearch, ValueInputs, search_alpha


@dataclass(frozen=True)
class InspectSettings:
    """Every Inspect widget; defaults from ``playground.config``."""
    beta: float = LOSS.beta
    dpo_loss_type: str = LOSS.dpo_loss_type
    label_smoothing: float = LOSS.label_smoothing
    kto_loss_type: str = LOSS.kto_loss_type
    desirable_weight: float = LOSS.desirable_weight
    undesirable_weight: float = LOSS.undesirable_weight
    construction: str = VALUES.construction
    likelihood_reduce: str = VALUES.likelihood_reduce
    calibrate: bool = VALUES.calibrate
    normalise_std: bool = VALUES.normalise_std
    alpha: float = VALUES.alpha
    task_metric: str = VALUES.task_metric
    tau_method: str = VALUES.tau_method
    tau_quantile: float = VALUES.tau_quantile
    tau_ema_eta: float = VALUES.tau_ema_eta
    tau_ema_batch_size: int = VALUES.tau_ema_batch_size
    tau_fixed: float = VALUES.tau_fixed
    loss_aversion: float = VALUES.loss_aversion

    def value_config(self) -> config.ValueConfig:
        # the learned reward head needs features from the model; Inspect uses the implied reward
        return dataclasses.replace(
            VALUES, construction=self.construction, likelihood_reduce=self.likelihood_reduce,
            calibrate=bool(self.calibrate), reward_source="implied", normalise_std=bool(self.normalise_std),
            alpha=float(self.alpha), task_metric=self.task_metric, tau_method=self.tau_method,
            tau_quantile=float(self.tau_quantile), tau_ema_eta=float(self.tau_ema_eta),
            tau_ema_batch_size=int(self.tau_ema_batch_size), tau_fixed=float(self.tau_fixed),
            loss_aversion=float(self.loss_aversion))

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any] | None) -> InspectSettings:
        """Settings from a dict (e.g. the API's JSON); unknown keys are ignored, values coerced to the field type."""
        base = cls()
        if not data:
            return base
        changes = {}
        for f in dataclasses.fields(cls):
            if f.name in data and data[f.name] is not None:
                kind = type(getattr(base, f.name))
                value = data[f.name]
                changes[f.name] = (str(value).lower() in ("1", "true", "yes")) if kind is bool and isinstance(
                    value, str) else kind(value)
        return dataclasses.replace(base, **changes)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass
class Analysis:
    """One slider evaluation for one variant: per-pair and per-sample tables, summary, and the raw terms."""
    variant: str
    settings: InspectSettings
    pairs: pd.DataFrame  # P rows: the DPO view (+ both samples' KTO and V numbers)
    samples: pd.DataFrame  # 2P rows: the unpaired KTO / prospect view (chosen = desirable, rejected = undesirable)
    summary: dict[str, Any]
    dpo: DPOTerms
    kto: KTOTerms
    report: ValueReport
    taus: dict[str, float]  # tau of every method on the current V (NaN where a method does not apply)
    alpha_search: AlphaSearch
    value_label: str  # what V is, in words, with units
    notes: list[str] = field(default_factory=list)


def _t(array: np.ndarray, dtype=torch.float64) -> torch.Tensor:
    return torch.as_tensor(np.asarray(array), dtype=dtype)


def value_label(settings: InspectSettings) -> str:
    if settings.construction == "likelihood":
        what = "mean token log-prob (nats/token)" if settings.likelihood_reduce == "mean" else "log-prob (nats)"
        return ("log-ratio to reference, " if settings.calibrate else "") + what
    if settings.construction == "reward":
        return "implied reward − baseline" + (" (std units)" if settings.normalise_std else " (β·nats)")
    return f"hybrid α·P_LM + (1−α)·{settings.task_metric} (0..1)"


def analyse(scores: DatasetScores, variant: str, settings: InspectSettings | None = None) -> Analysis:
    """Every Inspect number for ``variant`` under ``settings``, from cached scores only (no model call)."""
    settings = settings or InspectSettings()
    notes: list[str] = list(scores.notes)
    pol, ref = scores.side(variant), scores.reference
    n = scores.n_pairs
    beta = float(settings.beta)

    # DPO on the pairs
    dpo = dpo_loss(
        _t(pol.chosen_sum), _t(pol.rejected_sum), _t(ref.chosen_sum), _t(ref.rejected_sum), beta=beta,
        loss_type=settings.dpo_loss_type, label_smoothing=float(settings.label_smoothing),
        chosen_lengths=_t(pol.chosen_len), rejected_lengths=_t(pol.rejected_len))

    # KTO on the unpaired view, z0 from the mismatched pairs
    policy_logps = _t(np.concatenate([pol.chosen_sum, pol.rejected_sum]))
    reference_logps = _t(np.concatenate([ref.chosen_sum, ref.rejected_sum]))
    lengths = _t(np.concatenate([pol.chosen_len, pol.rejected_len]), torch.long)
    desirable = torch.cat([torch.ones(n, dtype=torch.bool), torch.zeros(n, dtype=torch.bool)])
    kto = kto_loss(
        policy_logps, reference_logps, desirable, _t(pol.kl_sum), _t(ref.kl_sum), beta=beta,
        desirable_weight=float(settings.desirable_weight), undesirable_weight=float(settings.undesirable_weight),
        loss_type=settings.kto_loss_type)
    kl_logratios = _t(pol.kl_sum - ref.kl_sum)

    # V, tau and the prospect decomposition on the same 2P samples
    vconfig = settings.value_config()
    task = scores.task_scores(settings.task_metric)
    prompt_keys = tuple(json.dumps(p, sort_keys=True) if not isinstance(p, str) else p for p in scores.pairs["prompt"])
    inputs = ValueInputs(
        policy_sum_logps=policy_logps, lengths=lengths, reference_sum_logps=reference_logps,
        prompts=prompt_keys * 2, task_scores=_t(np.concatenate([task["chosen"], task["rejected"]])))
    report = value_report(inputs, vconfig, beta=beta, kl_logratios=kl_logratios)
    v = report.values.value
    options = TauOptions.from_config(vconfig, kl_logratios)
    taus = {}
    for method in TAU_METHODS:
        try:
            taus[method] = float(compute_tau(method, v, options).tau)
        except ValueError:
            taus[method] = math.nan
    if settings.tau_method == "z0" and settings.construction != "likelihood":
        notes.append("tau = z0 is on the scale of the log-ratio r: pair it with V = likelihood, sum, calibrated.")
    alpha_search = search_alpha(
        _t(pol.chosen_mean), _t(pol.rejected_mean), _t(task["chosen"]), _t(task["rejected"]),
        highlight=VALUES.alpha_highlight)
    if any(m != settings.task_metric for m in task["metrics"]):
        used = sorted(set(task["metrics"]) - {settings.task_metric})
        notes.append(f"No reference answer for some samples: {settings.task_metric} fell back to {', '.join(used)}.")

    prospect = report.prospect
    v_np = v.double().numpy()
    pairs_df = _pairs_table(scores, dpo, kto, v_np, n)
    samples_df = _samples_table(scores, kto, report, task, n)
    advice = kto_weight_advice(n, n, float(settings.desirable_weight), float(settings.undesirable_weight))
    v_accuracy = float(np.mean(v_np[:n] > v_np[n:])) if n else math.nan
    summary = {
        "variant": variant,
        "n_pairs": n,
        "n_samples": 2 * n,
        "preference_accuracy": float(dpo.accuracy),
        "mean_margin": float(dpo.margin.mean()),
        "mean_dpo_loss": float(dpo.loss.mean()),
        "mean_grad_weight": float(dpo.grad_weight.mean()),
        "dpo_loss_type": settings.dpo_loss_type,
        "mean_kto_loss": float(kto.loss.mean()),
        "z0": float(kto.z0),
        "kto_loss_type": settings.kto_loss_type,
        "kto_desirable_reward": kto.desirable_reward_mean,
        "kto_undesirable_reward": kto.undesirable_reward_mean,
        "kto_weight_ratio": float(advice.ratio),
        "kto_weight_in_band": bool(advice.in_band),
        "kto_weight_advice": advice.message,
        "value_construction": settings.construction,
        "value_label": value_label(settings),
        "value_preference_accuracy": v_accuracy,
        "tau_method": settings.tau_method,
        "tau": float(report.tau.tau),
        "taus": taus,
        "loss_aversion": float(settings.loss_aversion),
        "share_gains": float(prospect.is_gain.double().mean()),
        "mean_prospect_value": float(prospect.value.mean()),
        "mean_source_objective": float(prospect.source_objective.mean()),
        "best_alpha": alpha_search.best_alpha,
        "best_alpha_accuracy": alpha_search.best_accuracy,
        "reward_baseline": getattr(report.values, "baseline_label", None),
        "truncated_pairs": int((pol.truncated | ref.truncated).sum()),
        "from_precomputed": scores.from_disk,
    }
    return Analysis(variant=variant, settings=settings, pairs=pairs_df, samples=samples_df, summary=summary, dpo=dpo,
                    kto=kto, report=report, taus=taus, alpha_search=alpha_search, value_label=value_label(settings),
                    notes=notes)


def _np(tensor: torch.Tensor) -> np.ndarray:
    return tensor.detach().double().numpy()


def _pairs_table(scores: DatasetScores, dpo: DPOTerms, kto: KTOTerms, v: np.ndarray,
                 n: int) -> pd.DataFrame:
    pairs = scores.pairs
    r_w, r_l = _np(dpo.chosen_logratio), _np(dpo.rejected_logratio)
    ref_logratio = scores.reference.chosen_sum - scores.reference.rejected_sum
    kto_loss = _np(kto.loss)
    return pd.DataFrame({
        "pair": np.arange(n),
        "prompt": [snippet(prompt_text(p)) for p in pairs["prompt"]],
        "chosen": [snippet(t) for t in pairs["chosen"]],
        "rejected": [snippet(t) for t in pairs["rejected"]],
        "category": list(pairs["category"]),
        "ref_logratio": ref_logratio,  # log pi_ref(y_w|x) - log pi_ref(y_l|x)
        "policy_logratio": ref_logratio + (r_w - r_l),  # log pi_theta(y_w|x) - log pi_theta(y_l|x)
        "chosen_logratio": r_w,
        "rejected_logratio": r_l,
        "delta": r_w - r_l,
        "chosen_reward": _np(dpo.chosen_reward),
        "rejected_reward": _np(dpo.rejected_reward),
        "margin": _np(dpo.margin),
        "dpo_loss": _np(dpo.loss),
        "grad_weight": _np(dpo.grad_weight),
        "correct": _np(dpo.chosen_preferred).astype(bool),
        "kto_loss_chosen": kto_loss[:n],
        "kto_loss_rejected": kto_loss[n:],
        "v_chosen": v[:n],
        "v_rejected": v[n:],
    })


def _samples_table(scores: DatasetScores, kto: KTOTerms, report: ValueReport, task: dict[str, Any],
                   n: int) -> pd.DataFrame:
    pairs = scores.pairs
    prospect = report.prospect
    lm_probability = getattr(report.values, "lm_probability", None)
    return pd.DataFrame({
        "sample": np.arange(2 * n),
        "pair": np.concatenate([np.arange(n), np.arange(n)]),
        "label": ["desirable"] * n + ["undesirable"] * n,
        "prompt": [snippet(prompt_text(p)) for p in pairs["prompt"]] * 2,
        "completion": [snippet(t) for t in list(pairs["chosen"]) + list(pairs["rejected"])],
        "logratio": _np(kto.logratio),
        "reward": _np(kto.reward),
        "z0": float(kto.z0),
        "kto_value": _np(kto.value),
        "kto_loss": _np(kto.loss),
        "weight": _np(kto.weight),
        "V": _np(report.values.value),
        "gain": _np(prospect.gain),
        "weighted_loss": _np(prospect.loss),
        "prospect_value": _np(prospect.value),
        "source_objective": _np(prospect.source_objective),
        "is_gain": _np(prospect.is_gain).astype(bool),
        "task_score": np.concatenate([task["chosen"], task["rejected"]]),
        "lm_probability": _np(lm_probability) if lm_probability is not None else np.full(2 * n, np.nan),
    })


def pair_focus(analysis: Analysis, scores: DatasetScores, index: int) -> dict[str, Any]:
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


def kto_value_curves(analysis: Analysis, points: int = 201) -> dict[str, Any]:
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


def prospect_curves(analysis: Analysis, points: int = 201) -> dict[str, Any]:
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


def summary_json(analysis: Analysis) -> dict[str, Any]:
    """The summary with NaN/inf as None, ready for JSON (the ``inspect`` API endpoint)."""

    def clean(value: Any) -> Any:
        if isinstance(value, dict):
            return {k: clean(v) for k, v in value.items()}
        if isinstance(value, (float, np.floating)):
            return float(value) if math.isfinite(value) else None
        if isinstance(value, np.integer):
            return int(value)
        if isinstance(value, np.bool_):
            return bool(value)
        return value

    return clean({**analysis.summary, "settings": analysis.settings.to_dict(), "notes": list(analysis.notes)})


def variant_table(scores: DatasetScores, settings: InspectSettings | None = None) -> pd.DataFrame:
    """One row per scored variant: accuracy, margin, losses, z0 (a small comparison above the detail views)."""
    rows = []
    for variant in scores.variants:
        s = analyse(scores, variant, settings).summary
        rows.append({"variant": variant, "preference accuracy": s["preference_accuracy"],
                     "mean margin": s["mean_margin"], "mean DPO loss": s["mean_dpo_loss"],
                     "mean KTO loss": s["mean_kto_loss"], "z0": s["z0"],
                     "V accuracy": s["value_preference_accuracy"]})
    return pd.DataFrame(rows)
