"""One decode batch for many requests: each request's rows keep their own adapter, settings, seed and stop condition.

``transformers``' ``generate`` takes one set of decoding settings per call and PEFT's adapter per row, so requests
from different users (different prompts, lengths, temperatures, seeds) cannot share its batch. This loop is the
same greedy / sampling step as ``generate``'s ``_sample`` (float32 logits of the last position, temperature then
top-p, softmax, ``multinomial``; finished rows are fed the pad token), run over the rows of several requests at once:

- prompts are left-padded to one width, with position ids counted over real tokens only, so each row sees exactly
  what it would alone;
- each sampling request draws from its own ``torch.Generator`` seeded with its seed, over its own rows only, so its
  text depends on its seed and not on who shares the batch (alone, it matches ``generate`` after
  ``torch.manual_seed(seed)``);
- a request leaves the batch at its first stop (all rows ended, its ``max_new_tokens``, or its cancel flag) and its
  rows are dropped from the KV cache, so the others do not pay for them;
- requests that arrive while a batch runs join it at the next step boundary: their prompts are prefilled on their
  own, then their KV caches and masks are left-padded to the batch's length and appended (padded keys are masked,
  so each row attends to exactly the tokens it would alone);
- adapters are applied per row by :class:`playground.engine.multi_lora.StackedLora` (PEFT's ``adapter_names`` path
  when the adapters cannot be stacked).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from playground import config
from playground.engine.multi_lora import StackedLora, per_row_adapters
from playground.engine.packed import cache_kwarg


@dataclass
class DecodeRequest:
    """One prompt answered by one row per adapter name; ``emit`` receives one token per row after every step (the
    pad token for rows that already ended) and ``finish`` the error, if any, once the request leaves the batch."""

    prompt_ids: list[int]
    adapter_names: list[str]  # PEFT names, config.PEFT_BASE_ADAPTER for the base
    settings: config.GenerationConfig
    eos_ids: list[int]
    emit: Callable[[list[int]], None]
    cancel: threading.Event = field(default_factory=threading.Event)
    min_new_tokens: int = 0  # end-of-sequence suppressed before this many tokens (benchmarks: fixed lengths)
    on_finish: Callable[[], None] | None = None  # called once, after the last ``emit``
    finished: threading.Event = field(default_factory=threading.Event)
    error: BaseException | None = None

    @property
    def rows(self) -> int:
        return len(self.adapter_names)

    def finish(self, error: BaseException | None = None) -> None:
        if not self.finished.is_set():
            self.error = error
            self.finished.set()
            if self.on_finish is not None:
                self.on_finish()


@dataclass
class _Active:
    request: DecodeRequest
    start: int  # first row of this request in the current batch
    generator: torch.Generator | None
    ended: list[bool]
    steps: int = 0


def _select(scores: torch.Tensor, active: _Active, step: int) -> torch.Tensor:
    """Next token per row of one request from its (rows, V) float32 logits, exactly as ``generate`` does."""
    settings, request = active.request.settings, active.request
    if step < request.min_new_tokens and request.eos_ids:
        scores = scores.clone()
        scores[:, request.eos_ids] = -float("inf")
    if not settings.do_sample:
        return torch.argmax(scores, dim=-1)
    from transformers.generation.logits_process import TemperatureLogitsWarper, TopPLogitsWarper

    if settings.temperature != 1.0:
        scores = TemperatureLogitsWarper(settings.temperature)(None, scores)
    if settings.top_p < 1.0:
        scores = TopPLogitsWarper(top_p=settings.top_p)(None, scores)
    probs = torch.nn.functional.softmax(scores, dim=-1)
    return torch.multinomial(probs, num_samples=1, generator=active.generator).squeeze(1)


@dataclass
class _Rows:
    """The rows being decoded: their KV cache, attention mask (B, L), last position ids (B, 1), adapter names, the
    requests they belong to (each a contiguous span), and the logits (B, V) that choose their next tokens."""

    cache: Any
    attention: torch.Tensor
    last_positions: torch.Tensor
    names: list[str]
    entries: list[_Active]
    logits: torch.Tensor | None = None

    @property
    def count(self) -> int:
        return len(self.names)


class _Decoder:
    """One model, one adapter selection, the rows in flight (see :func:`decode_together`)."""

    def __init__(self, model, pad_token_id: int, device: torch.device, selection, extra: dict):
        self.model, self.pad, self.device = model, pad_token_id, device
        self.base = model.get_base_model() if hasattr(model, "get_base_model") else model
        self.selection, self.extra = selection, extra
        self.stacked = StackedLora.of(model) if selection is not None else None
        self._names: list[str] | None = None

    def use_rows(self, names: list[str]) -> None:
        """The adapters of the rows of the next forward."""
        if names == self._names:
            return
        self._names = list(names)
        if self.selection is not None:
            self.selection.set(self.stacked.slots_for(names, self.device).unsqueeze(1))
        elif "adapter_names" in self.extra:
            self.extra["adapter_names"] = list(names)

    def forward(self, **kwargs):
        return self.model(use_cache=True, **kwargs, **self.extra)

    def prefill(self, requests: Sequence[DecodeRequest]) -> _Rows:
        """The prompts of ``requests``, left-padded to one width, through the model: rows ready to choose."""
        from transformers import DynamicCache

        names = [name for r in requests for name in r.adapter_names]
        width = max(len(r.prompt_ids) for r in requests)
        prompts = [r.prompt_ids for r in requests for _ in r.adapter_names]
        input_ids = torch.full((len(prompts), width), self.pad, dtype=torch.long)
        attention = torch.zeros((len(prompts), width), dtype=torch.long)
        for i, ids in enumerate(prompts):
            input_ids[i, width - len(ids):] = torch.tensor(ids, dtype=torch.long)
            attention[i, width - len(ids):] = 1
        input_ids, attention = input_ids.to(self.device), attention.to(self.device)
        positions = (attention.cumsum(-1) - 1).clamp(min=0)  # each row's own positions under left padding
        entries, start = [], 0
        for r in requests:
            generator = None
            if r.settings.do_sample:
                generator = torch.Generator(device=self.device).manual_seed(int(r.settings.seed))
            entries.append(_Active(r, start, generator, [False] * r.rows))
            start += r.rows
        cache = DynamicCache()
        self.use_rows(names)
        out = self.forward(input_ids=input_ids, attention_mask=attention, position_ids=positions, logits_to_keep=1,
                           **{cache_kwarg(self.base): cache})
        return _Rows(cache, attention, positions[:, -1:], names, entries, out.logits[:, -1].to(torch.float32))

    def choose(self, rows: _Rows) -> torch.Tensor:
        """Each request's next tokens from ``rows.logits``; requests that stop leave (rows and cache pruned).
        Returns the tokens of the rows that remain."""
        tokens = torch.empty(rows.count, dtype=torch.long, device=self.device)
        keep: list[int] = []
        still: list[_Active] = []
        for entry in rows.entries:
            span = slice(entry.start, entry.start + entry.request.rows)
            chosen = _select(rows.logits[span], entry, entry.steps)
            ended = torch.tensor(entry.ended, device=self.device)
            chosen = torch.where(ended, torch.full_like(chosen, self.pad), chosen)  # as generate feeds ended rows
            tokens[span] = chosen
            values = chosen.tolist()
            request = entry.request
            request.emit(values)
            entry.ended = [e or t in request.eos_ids for e, t in zip(entry.ended, values)]
            entry.steps += 1
            if all(entry.ended) or entry.steps >= request.settings.max_new_tokens or request.cancel.is_set():
                request.finish()
                continue
            keep.extend(range(span.start, span.stop))
            still.append(entry)
        if len(keep) < rows.count:  # requests left: drop their rows from the batch and the cache
            index = torch.tensor(keep, dtype=torch.long, device=self.device)
            for layer in rows.cache.layers:
                layer.batch_select_indices(index)
            tokens, rows.attention = tokens[index], rows.attention[index]
            rows.last_positions = rows.last_positions[index]
            rows.names = [rows.names[i] for i in keep]
            offset = 0
            for entry in still:
                entry.start, offset = offset, offset + entry.request.rows
        rows.entries = still
        return tokens

    @staticmethod
    def merge(rows: _Rows, tokens: torch.Tensor, joined: _Rows, joined_tokens: torch.Tensor
              ) -> tuple[_Rows, torch.Tensor]:
        """``joined`` (prefilled at a step boundary) appended to ``rows``: caches and masks left-padded to one length
        (padded keys are masked, so every row attends to exactly what it did)."""
        if rows.count == 0:
            return joined, joined_tokens
        if joined.count == 0:
            return rows, tokens
        length = max(rows.attention.shape[1], joined.attention.shape[1])

        def left_pad(t: torch.Tensor, dim_from_end: int) -> torch.Tensor:
            missing = length - t.shape[-dim_from_end]
            if missing == 0:
                return t
            pad = [0, 0] * (dim_from_end - 1) + [missing, 0]
            return torch.nn.functional.pad(t, pad)

        for mine, theirs in zip(rows.cache.layers, joined.cache.layers):
            mine.keys = torch.cat([left_pad(mine.keys, 2), left_pad(theirs.keys, 2)])
            mine.values = torch.cat([left_pad(mine.values, 2), left_pad(theirs.values, 2)])
        rows.attention = torch.cat([left_pad(rows.attention, 1), left_pad(joined.attention, 1)])
        rows.last_positions = torch.cat([rows.last_positions, joined.last_positions])
        for entry in joined.entries:
            entry.start += rows.count
        rows.names = rows.names + joined.names
        rows.entries = rows.entries + joined.entries
        return rows, torch.cat([tokens, joined_tokens])

    def step(self, rows: _Rows, tokens: torch.Tensor) -> None:
        """Feed each remaining row its token; ``rows.logits`` become those of the next position."""
        rows.attention = torch.cat([rows.attention, rows.attention.new_ones((rows.count, 1))], dim=1)
        rows.last_positions = rows.last_positions + 1
        self.use_rows(rows.names)
        out = self.forward(input_ids=tokens.unsqueeze(1), attention_mask=rows.attention,
                           position_ids=rows.last_positions, **{cache_kwarg(self.base): rows.cache})
        rows.logits = out.logits[:, -1].to(torch.float32)


def decode_together(model, requests: Sequence[DecodeRequest], pad_token_id: int,
                    device: torch.device | str = "cpu",
                    admit: Callable[[int], list[DecodeRequest]] | None = None, max_rows: int = 0) -> None:
    """Decode every request in one batch until each has stopped; the caller holds the model's lock and
    ``torch.inference_mode``. Each request is finished (``finish``) as it leaves; an error finishes all.

    ``admit(free_rows)``, when given, is asked at every step boundary for requests that arrived meanwhile (at most
    ``free_rows`` rows, ``max_rows`` in all): they are prefilled and join the running batch at the next step.
    """
    device = torch.device(device)
    for request in requests:
        if request.cancel.is_set():  # stopped while it waited for a batch
            request.finish()
    requests = [r for r in requests if not r.cancel.is_set()]
    everyone = list(requests)
    if not requests:
        return
    try:
        with per_row_adapters(model, [n for r in requests for n in r.adapter_names], device) as (selection, extra):
            decoder = _Decoder(model, pad_token_id, device, selection, extra)
            rows = decoder.prefill(requests)
            while True:
                tokens = decoder.choose(rows)
                if rows.count == 0:  # everyone stopped: whoever is waiting starts the next batch
                    break
                newcomers = admit(max(0, max_rows - rows.count)) if admit is not None else []
                for request in newcomers:
                    if request.cancel.is_set():  # stopped while it waited
                        request.finish()
                newcomers = [r for r in newcomers if not r.cancel.is_set()]
                if newcomers:
                    everyone += newcomers
                    joined = decoder.prefill(newcomers)
                    rows, tokens = decoder.merge(rows, tokens, joined, decoder.choose(joined))
                decoder.step(rows, tokens)
    except BaseException as exc:  # every request of the batch hears of it; the scheduler carries on
        for request in everyone:
            request.finish(exc)
        raise
