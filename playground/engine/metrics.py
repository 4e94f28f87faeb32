"""Measurements of answers that need the model: per-answer metrics for Compare, preference accuracy on pairs."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pandas as pd
import torch

from playground import config
from playground.engine.scoring import score
from playground.objectives.dpo import dpo_loss
from playground.objectives.value_functions import implied_reward, likelihood_value

if TYPE_CHECKING:
    from playground.engine.engine import Engine


def answer_metrics(engine: Engine, prompt, answers: dict[str, str], system: str | None = None,
                   beta: float = config.LOSS.beta) -> dict[str, dict[str, Any]]:
    """Per-answer metrics with ONE scoring call: each answer under its own variant and under the base.

    Returns, per variant: ``value`` (V(x,y), the likelihood construction of ``config.VALUES``), ``implied_reward``
    (beta * log pi/pi_ref summed over the answer), ``mean_logp`` (mean token log-prob under the variant),
    ``sum_logp``, ``length`` (response tokens, end-of-turn included), and per token ``tokens`` (text pieces),
    ``token_logp`` and ``token_logratio`` (log pi - log pi_ref of that token).
    """
    names = list(answers)
    if not names:
        return {}
    adapter_names = engine.adapter_names_for(names)
    rows = adapter_names + [config.PEFT_BASE_ADAPTER] * len(names)
    texts = [answers[name] for name in names] * 2
    systems = [system or None] * len(rows)
    with engine.lock:
        scores = score(engine.model, engine.tokenizer, [prompt] * len(rows), texts, systems=systems,
                       adapter=rows if engine.adapters else None)
    n = len(names)
    policy_sum, base_sum, lengths = scores.sum_logps[:n], scores.sum_logps[n:], scores.lengths[:n]
    value = likelihood_value(policy_sum, lengths, reduce=config.VALUES.likelihood_reduce,
                             calibrate=config.VALUES.calibrate, reference_sum_logps=base_sum).value
    implied = implied_reward(policy_sum, base_sum, beta=beta)
    tokenizer = engine.tokenizer
    special = set(getattr(tokenizer, "all_special_ids", []) or [])
    result = {}
    for i, name in enumerate(names):
        ids = scores.token_ids[i]
        own, ref = scores.token_logps[i], scores.token_logps[n + i]
        pieces = [("⏎" if tid in special else tokenizer.decode([tid])) for tid in ids]
        result[name] = {
            "value": float(value[i]),
            "implied_reward": float(implied[i]),
            "mean_logp": float(scores.mean_logps[i]),
            "sum_logp": float(policy_sum[i]),
            "length": int(lengths[i]),
            "tokens": pieces,
            "special": [tid in special for tid in ids],
            "token_logp": [float(x) for x in own],
            "token_logratio": [float(a - b) for a, b in zip(own, ref)],
            "truncated": bool(scores.truncated[i]),
        }
    return result


def preference_metrics(policy_sums: torch.Tensor, reference_sums: torch.Tensor, *, beta: float) -> dict[str, Any]:
    """Held-out preference numbers of P pairs from summed log-probs (2P,) ordered chosen_0..P-1, rejected_0..P-1,
    under the policy and the reference: accuracy (strict; a tie counts as wrong), mean margin, mean implied rewards
    and the mean sigmoid DPO loss at ``beta``."""
    n = len(policy_sums) // 2
    terms = dpo_loss(policy_sums[:n], policy_sums[n:], reference_sums[:n], reference_sums[n:], beta=beta)
    return {
        "pairs": n,
        "preference_accuracy": round(terms.accuracy, 6),
        "mean_margin": round(float(terms.margin.mean()), 6),
        "mean_chosen_reward": round(float(terms.chosen_reward.mean()), 6),
        "mean_rejected_reward": round(float(terms.rejected_reward.mean()), 6),
        "dpo_loss": round(float(terms.batch_loss), 6),
    }


def _pair_rows(pairs_frame: pd.DataFrame) -> tuple[list, list[str], list[str | None]]:
    """(prompts, responses, systems) of 2P rows: every pair's chosen answer, then every rejected one."""
    prompts = list(pairs_frame["prompt"])
    systems = [s if isinstance(s, str) and s.strip() else None for s in
               (pairs_frame["system"] if "system" in pairs_frame else [None] * len(prompts))]
    responses = list(pairs_frame["chosen"]) + list(pairs_frame["rejected"])
    return prompts * 2, responses, systems * 2


def heldout_preference(model, tokenizer, pairs_frame: pd.DataFrame, *, beta: float, max_length: int) -> dict[str, Any]:
    """:func:`preference_metrics` of a PEFT model in training on held-out pairs: its active adapter is the policy,
    the same model inside ``disable_adapter()`` the reference (exact fp32 scoring, no autocast)."""
    prompts, responses, systems = _pair_rows(pairs_frame)
    policy = score(model, tokenizer, prompts, responses, systems=systems, max_length=max_length)
    with model.disable_adapter():
        reference = score(model, tokenizer, prompts, responses, systems=systems, max_length=max_length)
    return preference_metrics(policy.sum_logps, reference.sum_logps, beta=beta)


def engine_pair_logps(engine: Engine, pairs_frame: pd.DataFrame, variant: str, *,
                      max_length: int = config.TRAIN.max_length) -> tuple[torch.Tensor, torch.Tensor]:
    """Summed log-probs (2P,) of the pairs' chosen then rejected answers under ``variant`` and under the reference,
    policy and reference rows in one mixed batch."""
    prompts, responses, systems = _pair_rows(pairs_frame)
    rows = len(responses)
    adapter, base = engine.adapter_names_for([variant, config.BASE_VARIANT])
    with engine.lock:
        both = score(engine.model, engine.tokenizer, prompts * 2, responses * 2, systems=systems * 2,
                     adapter=[adapter] * rows + [base] * rows if engine.adapters else None, max_length=max_length)
    return both.sum_logps[:rows], both.sum_logps[rows:]


def engine_preference(engine: Engine, pairs_frame: pd.DataFrame, variant: str, *, beta: float = config.LOSS.beta,
                      max_length: int = config.TRAIN.max_length) -> dict[str, Any]:
    """:func:`preference_metrics` of an attached ``variant`` on pairs (see :func:`engine_pair_logps`)."""
    policy, reference = engine_pair_logps(engine, pairs_frame, variant, max_length=max_length)
    return preference_metrics(policy, reference, beta=beta)
