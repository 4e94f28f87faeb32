"""Settings from widgets or an API call, checked and turned into the frozen configs of ``playground.config``.

The UI and the API share these, so the same bad value gets the same message on every path.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

from playground import config


class ServiceInputError(ValueError):
    """Input that the services refuse (unknown variant, bad setting, unusable data); the message says why."""


def generation_settings(values: dict[str, Any] | None = None) -> config.GenerationConfig:
    """A GenerationConfig from ``config.GENERATION`` with the given fields replaced; unknown fields are refused.

    ``mode`` ("greedy" | "sampled") is accepted as a friendlier spelling of ``do_sample``.
    """
    values = dict(values or {})
    mode = values.pop("mode", None)
    if mode is not None:
        if mode not in ("greedy", "sampled"):
            raise ServiceInputError(f"mode must be 'greedy' or 'sampled' (got {mode!r}).")
        values["do_sample"] = mode == "sampled"
    known = {f.name: f.type for f in dataclasses.fields(config.GenerationConfig)}
    unknown = sorted(set(values) - set(known) - {"max_new_tokens_limit"})
    if unknown or "max_new_tokens_limit" in values:
        raise ServiceInputError(f"Unknown decoding setting(s) {unknown or ['max_new_tokens_limit']}; "
                                f"use {', '.join(k for k in known if k != 'max_new_tokens_limit')} or mode.")
    cleaned: dict[str, Any] = {}
    try:
        for key, value in values.items():
            if value is None:
                continue
            if key in ("max_new_tokens", "seed"):
                number = float(value)
                if not number.is_integer():
                    raise ServiceInputError(f"{key.replace('_', ' ')} must be a whole number (got {value}).")
                cleaned[key] = int(number)
            elif key in ("temperature", "top_p"):
                cleaned[key] = float(value)
            elif key == "do_sample":
                cleaned[key] = bool(value)
            else:
                cleaned[key] = str(value)
    except (TypeError, ValueError) as exc:
        if isinstance(exc, ServiceInputError):
            raise
        raise ServiceInputError(f"A decoding setting is not a number: {exc}.") from exc
    return dataclasses.replace(config.GENERATION, **cleaned)


TRAIN_FIELDS = ("method", "beta", "learning_rate", "steps", "epochs", "batch_size", "max_length", "desirable_weight",
                "undesirable_weight", "lora_r", "lora_alpha", "lora_dropout", "seed", "warmup_ratio", "sft_weight",
                "early_stop", "drift_budget", "simpo_gamma")
_INT_FIELDS = {"steps", "batch_size", "max_length", "lora_r", "lora_alpha", "seed"}
_LABELS = {"beta": "beta", "learning_rate": "learning rate", "steps": "steps", "epochs": "epochs",
           "batch_size": "batch size", "max_length": "max length", "desirable_weight": "lambda_D (desirable weight)",
           "undesirable_weight": "lambda_U (undesirable weight)", "lora_r": "LoRA rank r", "lora_alpha": "LoRA alpha",
           "lora_dropout": "LoRA dropout", "seed": "seed", "warmup_ratio": "warmup ratio",
           "sft_weight": "SFT weight", "early_stop": "early stopping", "drift_budget": "drift budget",
           "simpo_gamma": "SimPO gamma (target margin)"}


def train_bounds(limits: config.TrainLimits = config.TRAIN_LIMITS) -> dict[str, tuple[float, float]]:
    """The inclusive range of each bounded hyperparameter (from ``config.TRAIN_LIMITS``)."""
    return {"steps": (0, limits.max_steps), "batch_size": (1, limits.max_batch_size),
            "max_length": (16, limits.max_length), "lora_r": (1, limits.max_lora_r), "epochs": (0, limits.max_epochs),
            "beta": limits.beta, "desirable_weight": limits.kto_weight, "undesirable_weight": limits.kto_weight,
            "seed": (0, limits.max_seed), "sft_weight": (0, limits.max_sft_weight),
            "drift_budget": (0, limits.max_drift_budget), "simpo_gamma": (0, limits.max_simpo_gamma)}


def _parse_field(key: str, value: Any) -> Any:
    """One hyperparameter from a widget or JSON: the method's name, or a finite number (whole where it must be)."""
    if key == "method":
        method = str(value).strip().lower().replace("-", "_")
        if method not in config.METHOD_FORMATS:
            raise ServiceInputError(f"method must be one of {', '.join(config.METHOD_FORMATS)} (got {value!r}).")
        return method
    if key == "early_stop":
        if isinstance(value, bool):
            return value
        text = str(value).strip().lower()
        if text not in ("true", "false", "1", "0", "yes", "no", "on", "off"):
            raise ServiceInputError(f"early stopping must be true or false (got {value!r}).")
        return text in ("true", "1", "yes", "on")
    try:
        number = float(value)
    except (TypeError, ValueError) as exc:
        raise ServiceInputError(f"{_LABELS[key]} must be a number (got {value!r}).") from exc
    if not math.isfinite(number):
        raise ServiceInputError(f"{_LABELS[key]} must be a finite number (got {value!r}).")
    if key in _INT_FIELDS:
        if not number.is_integer():
            raise ServiceInputError(f"{_LABELS[key]} must be a whole number (got {value!r}).")
        return int(number)
    return number


def train_config_from(values: dict[str, Any] | None) -> config.TrainConfig:
    """A TrainConfig from ``config.TRAIN`` with the given fields (see :data:`TRAIN_FIELDS`) replaced.

    Missing or None fields keep their defaults; unknown fields, non-numbers, fractions where a whole number is needed
    and values past :func:`train_bounds` raise ServiceInputError naming the field. ``validate_train_config`` then
    checks the rest when the job is submitted.
    """
    values = {k: v for k, v in dict(values or {}).items() if v is not None}
    unknown = sorted(set(values) - set(TRAIN_FIELDS))
    if unknown:
        raise ServiceInputError(f"Unknown hyperparameter(s) {unknown}; use {', '.join(TRAIN_FIELDS)}.")
    cleaned = {key: _parse_field(key, value) for key, value in values.items()}
    for key, (low, high) in train_bounds().items():
        if key in cleaned and not low <= cleaned[key] <= high:
            raise ServiceInputError(f"{_LABELS[key]} must be between {low:g} and {high:g} (got {cleaned[key]:g}).")
    defaults = config.TRAIN
    lora = dataclasses.replace(defaults.lora, r=cleaned.pop("lora_r", defaults.lora.r),
                               alpha=cleaned.pop("lora_alpha", defaults.lora.alpha),
                               dropout=cleaned.pop("lora_dropout", defaults.lora.dropout))
    # beta not given: the method's own default (SimPO's beta scales average log-probs: 2, not DPO's 0.1)
    default_beta = config.METHOD_BETAS[cleaned.get("method", defaults.method)]
    loss = dataclasses.replace(defaults.loss, beta=cleaned.pop("beta", default_beta),
                               simpo_gamma=cleaned.pop("simpo_gamma", defaults.loss.simpo_gamma),
                               desirable_weight=cleaned.pop("desirable_weight", defaults.loss.desirable_weight),
                               undesirable_weight=cleaned.pop("undesirable_weight", defaults.loss.undesirable_weight),
                               sft_weight=cleaned.pop("sft_weight", defaults.loss.sft_weight))
    stopping = dataclasses.replace(defaults.early_stopping,
                                   enabled=cleaned.pop("early_stop", defaults.early_stopping.enabled),
                                   drift_budget=cleaned.pop("drift_budget", defaults.early_stopping.drift_budget))
    return dataclasses.replace(defaults, lora=lora, loss=loss, early_stopping=stopping, **cleaned)
