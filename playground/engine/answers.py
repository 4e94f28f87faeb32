"""How good an adapter's answers are, beside the base's: greedy answers to prompts, measured for length, repetition,
distinct bigrams, fluency (the base model's mean token log-prob of the answer) and ROUGE-L to a reference answer.

One implementation for every place that judges answers: the training loop's before/after table, the live probes,
``playground.evaluate`` and the defaults sweep. The base's fluency of an answer is the base model's view of how
natural the text is; a fine-tune that drifts into loops or odd text loses it even when its preference numbers rise.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

from playground import config
from playground.engine.generation import greedy_answers
from playground.engine.scoring import score
from playground.engine.templating import Prompt, prompt_text
from playground.objectives.task_metrics import rouge_l_scores
from playground.objectives.text_quality import QualitySummary, answer_quality, quality_summary

if TYPE_CHECKING:
    from playground.engine.engine import Engine

TraitTest = Callable[[str], bool]


@dataclass
class AnswerSet:
    """One variant's answers to the prompts, each with its measures."""

    texts: list[str]
    fluency: list[float]  # base model's mean token log-prob of each answer (nats/token; higher reads more natural)
    rouge_l: list[float]  # ROUGE-L F1 against the prompt's reference answer (NaN where there is none)
    trait: list[bool] | None = None  # whether each answer shows the trait under test, when one is given

    @property
    def quality(self) -> QualitySummary:
        return quality_summary(self.texts)

    def summary(self) -> dict[str, float]:
        """The set's headline numbers (JSON-friendly; NaN where a measure does not apply)."""
        quality = self.quality
        return {"answers": quality.answers, "mean_words": quality.mean_words,
                "share_repetitive": quality.share_repetitive, "mean_distinct_2": quality.mean_distinct_2,
                "mean_fluency": _mean(self.fluency), "mean_rouge_l": _mean(self.rouge_l),
                "share_trait": (sum(self.trait) / len(self.trait)) if self.trait else math.nan}


@dataclass
class AnswersReport:
    """Answers of several variants to the same prompts (the base first), ready for a table and for meta.json."""

    prompts: list[str]
    references: list[str | None]
    sets: dict[str, AnswerSet] = field(default_factory=dict)

    def summaries(self) -> dict[str, dict[str, float]]:
        return {name: answers.summary() for name, answers in self.sets.items()}

    def to_json(self) -> dict[str, Any]:
        return {"prompts": self.prompts, "references": self.references, "summaries": self.summaries(),
                "sets": {name: asdict(answers) for name, answers in self.sets.items()}}


def answer_rows(report: dict[str, Any] | None) -> list[dict[str, Any]]:
    """One row per prompt and variant of an ``AnswersReport.to_json()`` record (what meta.json and a job carry): the
    answer and its measures, for the before/after table."""
    sets, prompts = (report or {}).get("sets") or {}, (report or {}).get("prompts") or []
    rows = []
    for i, prompt in enumerate(prompts):
        for name, answers in sets.items():
            quality = answer_quality(answers["texts"][i])
            rows.append({"prompt": prompt, "variant": name, "answer": answers["texts"][i], "words": quality.words,
                         "repetitive": quality.repetitive, "distinct_2": quality.distinct_2,
                         "fluency": answers["fluency"][i], "rouge_l": answers["rouge_l"][i]})
    return rows


def _mean(values: Sequence[float]) -> float:
    finite = [v for v in values if isinstance(v, (int, float)) and math.isfinite(v)]
    return sum(finite) / len(finite) if finite else math.nan


def rouge_to_references(texts: Sequence[str], references: Sequence[str | None]) -> list[float]:
    """ROUGE-L F1 of each text against its reference; NaN where the reference is missing or empty."""
    scored = [i for i, ref in enumerate(references) if ref and str(ref).strip()]
    values = [math.nan] * len(texts)
    if scored:
        for i, value in zip(scored, rouge_l_scores([texts[i] for i in scored], [str(references[i]) for i in scored])):
            values[i] = float(value)
    return values


def base_fluency(model, tokenizer, prompts: Sequence[Prompt], texts: Sequence[str], *,
                 base_adapter: str | None = None, max_length: int = config.SCORING.max_length) -> list[float]:
    """The base model's mean token log-prob of each answer. ``base_adapter`` is PEFT's per-row name of the base
    (an engine with adapters); None calls ``model`` as it is, so the caller passes the base itself (a plain model,
    or a PEFT model inside ``disable_adapter()``). An empty answer scores only its end-of-turn token."""
    adapter = [base_adapter] * len(texts) if base_adapter else None
    scores = score(model, tokenizer, list(prompts), list(texts), adapter=adapter, max_length=max_length)
    return [float(x) for x in scores.mean_logps]


def answer_set(texts: list[str], fluency: list[float], references: Sequence[str | None],
               trait: TraitTest | None = None) -> AnswerSet:
    return AnswerSet(texts, fluency, rouge_to_references(texts, references),
                     [bool(trait(t)) for t in texts] if trait else None)


def engine_answers_report(engine: Engine, prompts: Sequence[Prompt], references: Sequence[str | None],
                          variants: Sequence[str], *, max_new_tokens: int = config.GENERATION.max_new_tokens,
                          trait: TraitTest | None = None) -> AnswersReport:
    """Greedy answers of each of ``variants`` (``base`` and adapter names) to ``prompts``, measured (engine mode:
    one mixed batch per prompt chunk, the base's fluency by per-row adapter names)."""
    from playground.engine.generation import batched_greedy_answers

    answers = batched_greedy_answers(engine, list(prompts), list(variants), max_new_tokens)
    base = engine.adapter_names_for([config.BASE_VARIANT])[0] if engine.adapters else None
    report = AnswersReport([prompt_text(p) for p in prompts], list(references))
    for name in variants:
        with engine.lock:
            fluency = base_fluency(engine.model, engine.tokenizer, prompts, answers[name], base_adapter=base)
        report.sets[name] = answer_set(answers[name], fluency, references, trait)
    return report


def training_answers_report(model, tokenizer, prompts: Sequence[Prompt], references: Sequence[str | None], *,
                            device, max_new_tokens: int, autocast=None, trait: TraitTest | None = None,
                            adapter_label: str = "adapter") -> AnswersReport:
    """The same for a PEFT model in training (one adapter): the base is the model inside ``disable_adapter()``."""
    from contextlib import nullcontext

    context = autocast or nullcontext
    with model.disable_adapter(), context():
        base_texts = greedy_answers(model, tokenizer, prompts, max_new_tokens, device=device)
        base_of_base = base_fluency(model, tokenizer, prompts, base_texts)
    with context():
        tuned_texts = greedy_answers(model, tokenizer, prompts, max_new_tokens, device=device)
    with model.disable_adapter(), context():
        base_of_tuned = base_fluency(model, tokenizer, prompts, tuned_texts)
    report = AnswersReport([prompt_text(p) for p in prompts], list(references))
    report.sets[config.BASE_VARIANT] = answer_set(base_texts, base_of_base, references, trait)
    report.sets[adapter_label] = answer_set(tuned_texts, base_of_tuned, references, trait)
    return report

