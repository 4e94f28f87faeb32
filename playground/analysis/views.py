"""Every Inspect number as a pure function of cached scores and the widget settings: no model call.

For ~1000 pairs :func:`analyse` takes milliseconds: the DPO and KTO terms come from ``objectives.dpo`` and
``objectives.kto``, the V constructions, thresholds and prospect decomposition from the other ``objectives`` modules
(one implementation per quantity). The figures' curves are in ``analysis.curves``.
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
from playground.analysis.scores import DatasetScores, SideScores
from playground.common.numbers import json_safe
from playground.config import LOSS, VALUES
from playground.objectives.dpo import DPOTerms, dpo_loss
from playground.objectives.kto import KTOTerms, kto_loss, kto_weight_advice
from playground.objectives.prospect import ValueReport, value_report
from playground.objectives.sft import SFTTerms, sft_terms
from playground.objectives.thresholds import TAU_METHODS, TauOptions, compute_tau
from playground.objectives.value_functions import AlphaSearch, ValueInputs, search_alpha

REWARD_SOURCE_LABELS = {"implied": "implied reward β·log π/π_ref", "head": "learned reward head R_phi"}


@dataclass(frozen=True)
class InspectSettings:
    """Every Inspect widget; defaults from ``playground.config``."""

    beta: float = LOSS.beta
    dpo_loss_type: str = LOSS.dpo_loss_type
    label_smoothing: float = LOSS.label_smoothing
    sft_weight: float = LOSS.sft_weight  # the SFT (RPO) term on the chosen / desirable answers
    kto_loss_type: str = LOSS.kto_loss_type
    desirable_weight: float = LOSS.desirable_weight
    undesirable_weight: float = LOSS.undesirable_weight
    construction: str = VALUES.construction
    likelihood_reduce: str = VALUES.likelihood_reduce
    calibrate: bool = VALUES.calibrate
    reward_source: str = VALUES.reward_source
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
        return dataclasses.replace(
            VALUES, construction=self.construction, likelihood_reduce=self.likelihood_reduce,
            calibrate=bool(self.calibrate), reward_source=self.reward_source, normalise_std=bool(self.normalise_std),
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


@dataclass(frozen=True)
class InspectSummary:
    """The headline numbers of one variant on one data set under one setting of the widgets."""

    variant: str
    n_pairs: int
    n_samples: int
    preference_accuracy: float  # DPO implied rewards rank the chosen answer first (a tie counts as wrong)
    tied_pairs: int  # pairs whose margin is exactly 0 (all of them for the base itself, where pi = pi_ref)
    mean_margin: float
    mean_dpo_loss: float
    mean_grad_weight: float
    dpo_loss_type: str
    sft_weight: float
    mean_chosen_nll: float  # the chosen answers' mean token NLL under the variant (nats/token)
    mean_reference_chosen_nll: float  # ... under the reference
    sft_loss: float  # sft_weight * token-weighted mean NLL of the chosen answers (TRL's "sft" term)
    mean_kto_loss: float
    z0: float
    kto_loss_type: str
    kto_desirable_reward: float
    kto_undesirable_reward: float
    kto_weight_ratio: float
    kto_weight_in_band: bool
    kto_weight_advice: str
    value_construction: str
    value_label: str  # what V is, in words, with units
    value_preference_accuracy: float  # V ranks the chosen answer first
    tau_method: str
    tau: float
    taus: dict[str, float]  # tau of every method on the current V (NaN where a method does not apply)
    loss_aversion: float
    share_gains: float
    mean_prospect_value: float
    mean_source_objective: float
    best_alpha: float
    best_alpha_accuracy: float
    reward_source: str  # the R of the reward construction: "implied" or "head" (R_phi)
    reward_baseline: str | None
    reward_model_accuracy: float  # R_phi's cross-fitted preference accuracy (NaN when it was not fitted)
    truncated_pairs: int
    from_precomputed: bool


@dataclass
class InspectAnalysis:
    """One slider evaluation for one variant: per-pair and per-sample tables, the summary, and the raw terms."""

    variant: str
    settings: InspectSettings
    pairs: pd.DataFrame  # P rows: the DPO view (+ both samples' KTO and V numbers)
    samples: pd.DataFrame  # 2P rows: the unpaired KTO / prospect view (chosen = desirable, rejected = undesirable)
    summary: InspectSummary
    dpo: DPOTerms
    kto: KTOTerms
    sft: SFTTerms  # on the chosen answers (the P pairs)
    report: ValueReport
    alpha_search: AlphaSearch
    notes: list[str] = field(default_factory=list)

    @property
    def value_label(self) -> str:
        return self.summary.value_label

    @property
    def taus(self) -> dict[str, float]:
        return self.summary.taus


def _t(array: np.ndarray, dtype=torch.float64) -> torch.Tensor:
    return torch.as_tensor(np.asarray(array), dtype=dtype)


def _np(tensor: torch.Tensor) -> np.ndarray:
    return tensor.detach().double().numpy()


def value_label(settings: InspectSettings) -> str:
    """What V is under ``settings``, in words, with its units (every V figure's axis title says it)."""
    if settings.construction == "likelihood":
        what = "mean token log-prob (nats/token)" if settings.likelihood_reduce == "mean" else "log-prob (nats)"
        return ("log-ratio to reference, " if settings.calibrate else "") + what
    if settings.construction == "reward":
        units = " (std units)" if settings.normalise_std else (" (β·nats)" if settings.reward_source == "implied"
                                                                else " (R_phi units)")
        return f"{REWARD_SOURCE_LABELS.get(settings.reward_source, settings.reward_source)} − baseline{units}"
    return f"hybrid α·P_LM + (1−α)·{settings.task_metric} (0..1)"


def _dpo_terms(pol: SideScores, ref: SideScores, settings: InspectSettings) -> DPOTerms:
    return dpo_loss(_t(pol.chosen_sum), _t(pol.rejected_sum), _t(ref.chosen_sum), _t(ref.rejected_sum),
                    beta=float(settings.beta), loss_type=settings.dpo_loss_type,
                    label_smoothing=float(settings.label_smoothing), chosen_lengths=_t(pol.chosen_len),
                    rejected_lengths=_t(pol.rejected_len))


def _kto_terms(pol: SideScores, ref: SideScores, settings: InspectSettings) -> KTOTerms:
    """KTO on the unpaired view (2P samples, chosen = desirable), z0 from the mismatched pairs."""
    n = len(pol.chosen_sum)
    desirable = torch.cat([torch.ones(n, dtype=torch.bool), torch.zeros(n, dtype=torch.bool)])
    return kto_loss(_t(np.concatenate([pol.chosen_sum, pol.rejected_sum])),
                    _t(np.concatenate([ref.chosen_sum, ref.rejected_sum])), desirable, _t(pol.kl_sum),
                    _t(ref.kl_sum), beta=float(settings.beta), desirable_weight=float(settings.desirable_weight),
                    undesirable_weight=float(settings.undesirable_weight), loss_type=settings.kto_loss_type)


def _value_view(scores: DatasetScores, pol: SideScores, ref: SideScores, settings: InspectSettings,
                notes: list[str]) -> tuple[ValueReport, dict[str, float], InspectSettings]:
    """V, its threshold and the prospect decomposition on the 2P samples, tau under every method, and the settings
    actually used (R_phi falls back to the implied reward, with a note, where it could not be fitted)."""
    if settings.construction == "reward" and settings.reward_source == "head" and scores.reward_model is None:
        notes.append("R_phi was not fitted for these numbers (they were precomputed without it): press Score to "
                     "fit it; until then the reward view shows the implied reward.")
        settings = dataclasses.replace(settings, reward_source="implied")
    vconfig = settings.value_config()
    task = scores.task_scores(settings.task_metric)
    prompt_keys = tuple(json.dumps(p, sort_keys=True) if not isinstance(p, str) else p for p in scores.pairs["prompt"])
    inputs = ValueInputs(
        policy_sum_logps=_t(np.concatenate([pol.chosen_sum, pol.rejected_sum])),
        lengths=_t(np.concatenate([pol.chosen_len, pol.rejected_len]), torch.long),
        reference_sum_logps=_t(np.concatenate([ref.chosen_sum, ref.rejected_sum])), prompts=prompt_keys * 2,
        head_rewards=_t(scores.reward_model.rewards) if scores.reward_model is not None else None,
        task_scores=_t(np.concatenate([task["chosen"], task["rejected"]])))
    kl_logratios = _t(pol.kl_sum - ref.kl_sum)
    report = value_report(inputs, vconfig, beta=float(settings.beta), kl_logratios=kl_logratios)
    options = TauOptions.from_config(vconfig, kl_logratios)
    taus = {}
    for method in TAU_METHODS:
        try:
            taus[method] = float(compute_tau(method, report.values.value, options).tau)
        except ValueError:
            taus[method] = math.nan
    if settings.tau_method == "z0" and settings.construction != "likelihood":
        notes.append("tau = z0 is on the scale of the log-ratio r: pair it with V = likelihood, sum, calibrated.")
    if any(m != settings.task_metric for m in task["metrics"]):
        used = sorted(set(task["metrics"]) - {settings.task_metric})
        notes.append(f"No reference answer for some samples: {settings.task_metric} fell back to {', '.join(used)}.")
    if settings.construction == "reward" and settings.reward_source == "head":
        notes.append("R_phi scores the answers' text with the frozen base's features, so this V is the same for every "
                     f"variant (cross-fitted over {scores.reward_model.folds} folds of the pairs).")
    return report, taus, settings


def analyse(scores: DatasetScores, variant: str, settings: InspectSettings | None = None) -> InspectAnalysis:
    """Every Inspect number for ``variant`` under ``settings``, from cached scores only (no model call)."""
    settings = settings or InspectSettings()
    notes: list[str] = list(scores.notes)
    pol, ref = scores.side(variant), scores.reference
    n = scores.n_pairs
    dpo = _dpo_terms(pol, ref, settings)
    kto = _kto_terms(pol, ref, settings)
    sft = sft_terms(_t(pol.chosen_sum), _t(pol.chosen_len), weight=float(settings.sft_weight))
    report, taus, settings = _value_view(scores, pol, ref, settings, notes)
    task = scores.task_scores(settings.task_metric)
    alpha_search = search_alpha(_t(pol.chosen_mean), _t(pol.rejected_mean), _t(task["chosen"]),
                                _t(task["rejected"]), highlight=VALUES.alpha_highlight)
    v = report.values.value.double().numpy()
    summary = _summary(scores, variant, settings, dpo, kto, sft, report, taus, alpha_search, v, pol, ref)
    return InspectAnalysis(variant=variant, settings=settings, pairs=_pairs_table(scores, dpo, kto, sft, v, n),
                           samples=_samples_table(scores, kto, report, task, n), summary=summary, dpo=dpo, kto=kto,
                           sft=sft, report=report, alpha_search=alpha_search, notes=notes)


def _summary(scores: DatasetScores, variant: str, settings: InspectSettings, dpo: DPOTerms, kto: KTOTerms,
             sft: SFTTerms, report: ValueReport, taus: dict[str, float], alpha_search: AlphaSearch, v: np.ndarray,
             pol: SideScores, ref: SideScores) -> InspectSummary:
    n = scores.n_pairs
    advice = kto_weight_advice(n, n, float(settings.desirable_weight), float(settings.undesirable_weight))
    prospect = report.prospect
    model = scores.reward_model
    return InspectSummary(
        variant=variant, n_pairs=n, n_samples=2 * n, preference_accuracy=float(dpo.accuracy),
        tied_pairs=int((dpo.margin == 0).sum()),
        mean_margin=float(dpo.margin.mean()), mean_dpo_loss=float(dpo.loss.mean()),
        mean_grad_weight=float(dpo.grad_weight.mean()), dpo_loss_type=settings.dpo_loss_type,
        sft_weight=float(settings.sft_weight), mean_chosen_nll=_token_mean_nll(pol.chosen_sum, pol.chosen_len),
        mean_reference_chosen_nll=_token_mean_nll(ref.chosen_sum, ref.chosen_len),
        sft_loss=float(sft.batch) if n else math.nan,
        mean_kto_loss=float(kto.loss.mean()), z0=float(kto.z0), kto_loss_type=settings.kto_loss_type,
        kto_desirable_reward=kto.desirable_reward_mean, kto_undesirable_reward=kto.undesirable_reward_mean,
        kto_weight_ratio=float(advice.ratio), kto_weight_in_band=bool(advice.in_band),
        kto_weight_advice=advice.message, value_construction=settings.construction, value_label=value_label(settings),
        value_preference_accuracy=float(np.mean(v[:n] > v[n:])) if n else math.nan, tau_method=settings.tau_method,
        tau=float(report.tau.tau), taus=taus, loss_aversion=float(settings.loss_aversion),
        share_gains=float(prospect.is_gain.double().mean()), mean_prospect_value=float(prospect.value.mean()),
        mean_source_objective=float(prospect.source_objective.mean()), best_alpha=alpha_search.best_alpha,
        best_alpha_accuracy=alpha_search.best_accuracy, reward_source=settings.reward_source,
        reward_baseline=getattr(report.values, "baseline_label", None),
        reward_model_accuracy=model.out_of_fold_accuracy if model is not None else math.nan,
        truncated_pairs=int((pol.truncated | ref.truncated).sum()), from_precomputed=scores.from_disk)


def _token_mean_nll(sums: np.ndarray, lengths: np.ndarray) -> float:
    """-sum log-probs / tokens over a set of answers (TRL's token-weighted NLL); NaN with no tokens."""
    tokens = float(np.sum(lengths))
    return float(-np.sum(sums) / tokens) if tokens > 0 else math.nan


def _pairs_table(scores: DatasetScores, dpo: DPOTerms, kto: KTOTerms, sft: SFTTerms, v: np.ndarray,
                 n: int) -> pd.DataFrame:
    pairs = scores.pairs
    r_w, r_l = _np(dpo.chosen_logratio), _np(dpo.rejected_logratio)
    ref_logratio = scores.reference.chosen_sum - scores.reference.rejected_sum
    kto_losses = _np(kto.loss)
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
        "chosen_nll": _np(sft.nll),  # -log pi_theta(y_w|x) / |y_w| (nats/token)
        "reference_chosen_nll": -scores.reference.chosen_mean,
        "sft_term": sft.weight * _np(sft.nll),  # the pair's SFT part at its own length (w * its mean token NLL)
        "correct": _np(dpo.chosen_preferred).astype(bool),
        "kto_loss_chosen": kto_losses[:n],
        "kto_loss_rejected": kto_losses[n:],
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
        "reward_model": (scores.reward_model.rewards if scores.reward_model is not None
                         else np.full(2 * n, np.nan)),
    })


def summary_json(analysis: InspectAnalysis) -> dict[str, Any]:
    """The summary with NaN/inf as None, ready for JSON (the ``inspect`` API endpoint)."""
    return json_safe({**dataclasses.asdict(analysis.summary), "settings": analysis.settings.to_dict(),
                      "notes": list(analysis.notes)})


def variant_table(scores: DatasetScores, settings: InspectSettings | None = None) -> pd.DataFrame:
    """One row per scored variant: accuracy, margin, losses, z0 (a small comparison above the detail views)."""
    rows = []
    for variant in scores.variants:
        s = analyse(scores, variant, settings).summary
        rows.append({"variant": variant, "preference accuracy": s.preference_accuracy, "tied pairs": s.tied_pairs,
                     "mean margin": s.mean_margin, "mean DPO loss": s.mean_dpo_loss, "mean KTO loss": s.mean_kto_loss,
                     "z0": s.z0, "V accuracy": s.value_preference_accuracy})
    return pd.DataFrame(rows)
