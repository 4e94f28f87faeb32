"""Live sample answers: the adapter in training answers a few probe prompts at the start and about every quarter.

A run that learns its trait by repeating it shows that in its answers long before its curves do, so the Fine-tune tab
puts these answers on a timeline next to the curves, each with its degeneration meter (repetition, distinct-2,
fluency). They are greedy and short, generated on the training copy between steps, so a probe costs about one step.
"""

from __future__ import annotations

import math
from contextlib import nullcontext
from dataclasses import asdict, dataclass
from typing import Any

from playground import config
from playground.engine.answers import base_fluency
from playground.engine.generation import greedy_answers
from playground.engine.templating import Prompt, prompt_text
from playground.objectives.text_quality import answer_quality


@dataclass(frozen=True)
class ProbeAnswer:
    step: int
    prompt_index: int
    prompt: str
    text: str
    words: int
    repetitive: bool  # a word 3-gram occurs 3+ times
    distinct_2: float
    fluency: float  # the base model's mean token log-prob of the answer
    degenerate: str = ""  # why the answer has degenerated against the start's (the base's) answer; "" when it has not

    def to_json(self) -> dict[str, Any]:
        return {k: (round(v, 4) if isinstance(v, float) and math.isfinite(v) else
                    (None if isinstance(v, float) else v)) for k, v in asdict(self).items()}


def degeneration(repetitive: bool, fluency: float, start: ProbeAnswer | None,
                 settings: config.ProbeSettings = config.TRAIN.probes) -> str:
    """Why an answer has degenerated, judged against the base's answer to the same prompt (the step-0 probe: the
    adapter starts as the base), or "" when it has not. The base is the yardstick, so a base that loops or reads
    badly by itself does not make every later answer a warning."""
    if start is None:
        return ""
    if repetitive and not start.repetitive:
        return "repeats a phrase"
    if reads_far_worse(fluency, start.fluency, settings):
        return "reads far less fluently than the base"
    return ""


def reads_far_worse(fluency: float | None, base: float | None, settings: config.ProbeSettings) -> bool:
    """Below the fluency floor AND a full ``fluency_drop`` below the base's: a trait the base never writes lowers
    fluency a little by itself, so neither condition alone marks an answer as degenerate."""
    return (fluency is not None and base is not None and math.isfinite(fluency)
            and fluency < settings.fluency_floor and fluency < base - settings.fluency_drop)


def probe_steps(total_steps: int, points: int) -> list[int]:
    """Steps after which the probes answer: 0 (before training), then about every 1/points of the run."""
    if points <= 0:
        return [0]
    return sorted({0, *(max(1, round(total_steps * k / points)) for k in range(1, points + 1))})


def answers_degeneration(base: dict[str, Any], tuned: dict[str, Any],
                         settings: config.ProbeSettings = config.TRAIN.probes) -> str:
    """The same judgement for the after-run report (``AnswersReport`` summaries of the base and the adapter): why
    the adapter's answers degenerated against the base's, or "" when they did not."""
    if tuned["share_repetitive"] > base["share_repetitive"]:
        return "more of its answers repeat a phrase than the base's"
    if reads_far_worse(tuned.get("mean_fluency"), base.get("mean_fluency"), settings):
        return "its answers read far less fluently than the base's"
    return ""


def run_probes(model, tokenizer, prompts: list[Prompt], step: int, *, max_new_tokens: int, device,
               autocast=None, start: list[ProbeAnswer] | None = None) -> list[ProbeAnswer]:
    """Greedy answers of the PEFT model in training (its adapter on) to ``prompts``, measured, each judged against
    ``start`` (the step-0 answers to the same prompts; None for step 0 itself)."""
    context = autocast or nullcontext
    with context():
        texts = greedy_answers(model, tokenizer, prompts, max_new_tokens, device=device)
    with model.disable_adapter(), context():
        fluency = base_fluency(model, tokenizer, prompts, texts)
    answers = []
    for i, (prompt, text, value) in enumerate(zip(prompts, texts, fluency)):
        quality = answer_quality(text)
        baseline = start[i] if start and i < len(start) else None
        answers.append(ProbeAnswer(step, i, prompt_text(prompt), text,
                                   quality.words, quality.repetitive, quality.distinct_2, value,
                                   degeneration(quality.repetitive, value, baseline)))
    return answers


def probe_advice(answers: list[dict[str, Any]]) -> str:
    """What the latest probe answers (``ProbeAnswer.to_json`` records) say about the run, in words, with what to
    change when they degenerate."""
    if not answers:
        return ""
    latest = max(a["step"] for a in answers)
    now = [a for a in answers if a["step"] == latest]
    bad = [a for a in now if a.get("degenerate")]
    if latest == 0:
        return "The start row is the base model's own answers (the adapter starts as the base): the yardstick."
    if not bad:
        return (f"✅ Step {latest}: the probe answers read as well as the base's (no new repeated phrase, fluency "
                "close to the base's).")
    what = "repeat a phrase" if any(a["degenerate"] == "repeats a phrase" for a in bad) else \
        "read far less fluently than the base's"
    return (f"⚠️ Step {latest}: {len(bad)} of {len(now)} probe answers {what}. The adapter is over-optimising: use "
            "fewer steps, a lower learning rate, or a larger SFT weight (it keeps the chosen answers likely).")


def default_probe_prompts(heldout: Any, train_frame: Any, count: int = config.TRAIN.probes.prompts) -> list[Prompt]:
    """The first prompts of the held-out rows (else of the training rows), distinct, at most ``count``."""
    for frame in (heldout, train_frame):
        if frame is not None and len(frame):
            distinct: dict[str, Prompt] = {}  # chats are lists (unhashable): keyed by their repr, first one kept
            for prompt in frame["prompt"]:
                distinct.setdefault(prompt if isinstance(prompt, str) else repr(prompt), prompt)
            return list(distinct.values())[:count]
    return []
