"""Streaming side-by-side generation: several variants of one prompt in one batched pass.

Each row of a request is the same templated prompt with its own adapter (``config.PEFT_BASE_ADAPTER`` for the
base); the engine's decoder thread batches the rows of requests that arrive together (``engine.scheduler``,
``engine.decoding``). Tokens are streamed per row as they are produced.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING

import torch

from playground import config
from playground.engine import threads
from playground.engine.decoding import DecodeRequest, decode_together
from playground.engine.templating import Prompt, prompt_ids

if TYPE_CHECKING:
    from playground.engine.engine import Engine


class GenerationInputError(ValueError):
    """A prompt or decoding setting that cannot be used; the message says which and why."""


def validate_settings(settings: config.GenerationConfig, prompt_length: int, context: int) -> config.GenerationConfig:
    """Refuse absurd decoding settings with a clear message; return them unchanged when usable."""
    limit = settings.max_new_tokens_limit
    if not 1 <= settings.max_new_tokens <= limit:
        raise GenerationInputError(f"max new tokens must be between 1 and {limit} (got {settings.max_new_tokens}).")
    if settings.do_sample:
        if not 0.0 < settings.temperature <= 5.0:
            raise GenerationInputError(f"temperature must be in (0, 5] when sampling (got {settings.temperature}).")
        if not 0.0 < settings.top_p <= 1.0:
            raise GenerationInputError(f"top-p must be in (0, 1] (got {settings.top_p}).")
    if not 0 <= settings.seed < 2**63:
        raise GenerationInputError(f"seed must be a non-negative integer (got {settings.seed}).")
    if prompt_length + settings.max_new_tokens > context:
        raise GenerationInputError(
            f"The prompt is {prompt_length} tokens; with {settings.max_new_tokens} new tokens it exceeds the model's "
            f"context of {context}. Shorten the prompt or ask for fewer tokens.")
    return settings


@dataclass
class VariantOutput:
    name: str
    token_ids: list[int] = field(default_factory=list)
    text: str = ""
    finished: bool = False


@dataclass
class GenerationState:
    """What has been generated so far for each variant; ``done`` once every row has stopped."""
    outputs: dict[str, VariantOutput]
    prompt_ids: list[int]
    done: bool = False


def _prepared_prompt(engine: Engine, prompt: Prompt, variants: list[str], settings: config.GenerationConfig,
                     system: str | None) -> tuple[list[str], list[int]]:
    """(PEFT adapter name per row, templated prompt ids) of a request, or GenerationInputError saying what is wrong."""
    if isinstance(prompt, str) and not prompt.strip():
        raise GenerationInputError("The prompt is empty: type a question or pick an example.")
    if not variants:
        raise GenerationInputError("Choose at least one variant to generate.")
    adapter_names = engine.adapter_names_for(variants)
    if not engine.adapters and any(name != config.PEFT_BASE_ADAPTER for name in adapter_names):
        raise GenerationInputError("No adapters are attached; only 'base' can generate.")
    ids = prompt_ids(engine.tokenizer, prompt, system or None)
    validate_settings(settings, len(ids), getattr(engine.base_model.config, "max_position_embeddings", 2048))
    return adapter_names, ids


def _add_step(rows: list[VariantOutput], step: list[int], eos_ids: list[int]) -> None:
    """One decode step's token per row; a row stops at its first end-of-sequence token."""
    for row, token in zip(rows, step):
        if row.finished:
            continue
        if token in eos_ids:
            row.finished = True
            continue
        row.token_ids.append(token)


def stream_generate(engine: Engine, prompt: Prompt, variants: list[str],
                    settings: config.GenerationConfig | None = None, system: str | None = None,
                    cancel: threading.Event | None = None) -> Iterator[GenerationState]:
    """Yield the growing answers of ``variants`` ("base" and adapter names) to ``prompt``, one row per variant.

    The request goes to the engine's decoder thread (``Engine.decoder``), which decodes it in one batch together
    with the requests that arrived with it. The same seed and variants give the same text, whoever shares the
    batch. ``cancel`` (or closing this generator) stops generation at the next token.
    """
    settings = settings or config.GENERATION
    tokenizer = engine.tokenizer
    adapter_names, ids = _prepared_prompt(engine, prompt, variants, settings, system)
    eos_ids = _eos_ids(engine, tokenizer)
    steps: queue.Queue = queue.Queue()
    request = DecodeRequest(ids, adapter_names, settings, eos_ids, emit=steps.put, cancel=cancel or threading.Event(),
                            on_finish=lambda: steps.put(None))
    engine.decoder.submit(request)
    outputs = {name: VariantOutput(name) for name in variants}
    rows = list(outputs.values())
    try:
        while (step := steps.get()) is not None:
            _add_step(rows, step, eos_ids)
            for row in rows:
                row.text = tokenizer.decode(row.token_ids, skip_special_tokens=True)
            yield GenerationState({name: replace(out) for name, out in outputs.items()}, ids)
    finally:
        request.cancel.set()  # a consumer that stops early frees its rows at the next token
        request.finished.wait()
    if request.error is not None:
        raise request.error
    for row in rows:
        row.finished = True
        row.text = tokenizer.decode(row.token_ids, skip_special_tokens=True)
    yield GenerationState(outputs, ids, done=True)


def generate(engine: Engine, prompt: Prompt, variants: list[str], settings: config.GenerationConfig | None = None,
             system: str | None = None) -> dict[str, VariantOutput]:
    """Blocking form of :func:`stream_generate`: the final answer of each variant."""
    state = None
    for state in stream_generate(engine, prompt, variants, settings, system):  # noqa: B007 - keep the last
        pass
    return state.outputs


def _eos_ids(engine: Engine, tokenizer) -> list[int]:
    configured = engine.base_model.generation_config.eos_token_id
    ids = configured if isinstance(configured, list) else [configured] if configured is not None else []
    if tokenizer.eos_token_id is not None and tokenizer.eos_token_id not in ids:
        ids.append(tokenizer.eos_token_id)
    return ids


def greedy_answers(model, tokenizer, prompts: Sequence[Prompt], max_new_tokens: int, *,
                   adapter_names: Sequence[str] | None = None, systems: Sequence[str | None] | None = None,
                   device: torch.device | str = "cpu", batch_size: int = 8) -> list[str]:
    """Greedy answers of ``model`` to ``prompts``, in left-padded batches; one PEFT adapter name per prompt when
    ``adapter_names`` is given (a mixed batch), else the model as it is (a plain model, or a PEFT model's active
    adapter). The caller holds whatever lock the model needs. Answers stop at the end of turn."""
    systems = list(systems) if systems is not None else [None] * len(prompts)
    eos = tokenizer.eos_token_id
    answers: list[str] = []
    was_training = model.training
    model.eval()
    try:
        for start in range(0, len(prompts), batch_size):
            ids = [prompt_ids(tokenizer, p, s) for p, s in zip(prompts[start: start + batch_size],
                                                               systems[start: start + batch_size])]
            width = max(len(row) for row in ids)
            input_ids = torch.full((len(ids), width), tokenizer.pad_token_id, dtype=torch.long)
            attention = torch.zeros_like(input_ids)
            for i, row in enumerate(ids):
                input_ids[i, width - len(row):] = torch.tensor(row)
                attention[i, width - len(row):] = 1
            kwargs = {"adapter_names": list(adapter_names[start: start + batch_size])} if adapter_names else {}
            with torch.inference_mode():
                out = model.generate(input_ids=input_ids.to(device), attention_mask=attention.to(device),
                                     do_sample=False, max_new_tokens=max_new_tokens,
                                     pad_token_id=tokenizer.pad_token_id, eos_token_id=eos, temperature=None,
                                     top_p=None, top_k=None, **kwargs)
            answers += [tokenizer.decode(row[width:], skip_special_tokens=True).strip() for row in out]
    finally:
        model.train(was_training)
    return answers


def batched_greedy_answers(engine: Engine, prompts: Sequence[Prompt], variants: Sequence[str], max_new_tokens: int,
                           prompts_per_batch: int = 8) -> dict[str, list[str]]:
    """Greedy answers of every variant to every prompt: decode batches of prompts x variants, each row with its own
    adapter (``decoding.decode_together``), the engine's lock held per batch."""
    names = engine.adapter_names_for(list(variants))
    settings = config.GenerationConfig(max_new_tokens=max_new_tokens, do_sample=False)
    eos_ids = _eos_ids(engine, engine.tokenizer)
    answers: dict[str, list[str]] = {v: [] for v in variants}
    for start in range(0, len(prompts), prompts_per_batch):
        tokens: list[list[list[int]]] = []
        requests = []
        for prompt in prompts[start: start + prompts_per_batch]:
            rows: list[list[int]] = [[] for _ in names]
            tokens.append(rows)
            requests.append(DecodeRequest(prompt_ids(engine.tokenizer, prompt), names, settings, eos_ids,
                                          emit=lambda step, rows=rows: _collect(rows, step)))
        with engine.lock, torch.inference_mode(), threads.for_role("generation"):
            decode_together(engine.model, requests, engine.tokenizer.pad_token_id, engine.device.device)
        for rows in tokens:
            for variant, ids in zip(variants, rows):
                ids = ids[: next((i for i, t in enumerate(ids) if t in eos_ids), len(ids))]
                answers[variant].append(engine.tokenizer.decode(ids, skip_special_tokens=True).strip())
    return answers


def _collect(rows: list[list[int]], step: list[int]) -> None:
    for row, token in zip(rows, step):
        row.append(token)
