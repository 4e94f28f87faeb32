"""Exact per-token log-probs of responses under an adapter or the reference, one padded row per sequence.

The readable scorer: the batch is padded, each row may name its own adapter (``per_row_adapters``), and logits are
computed only at the positions that predict a response token (``logits_to_keep``), never as a full-vocabulary
log-softmax over the whole sequence. The packed fast path beside it (``engine.packed``) gives the same numbers.
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import nullcontext
from dataclasses import dataclass
from typing import Any

import torch

from playground import config
from playground.engine.multi_lora import StackedLora, per_row_adapters
from playground.engine.templating import Prompt, TokenizedPair, tokenize_pair


@dataclass
class Batch:
    input_ids: torch.Tensor  # (B, T) long
    attention_mask: torch.Tensor  # (B, T) long, 1 on real tokens
    response_mask: torch.Tensor  # (B, T) bool, True on response tokens


def collate(pairs: Sequence[TokenizedPair], pad_token_id: int, padding_side: str = "right",
            device: torch.device | str = "cpu") -> Batch:
    """Pad a list of tokenised pairs into one batch (right padding unless asked otherwise)."""
    width = max(len(pair.input_ids) for pair in pairs)
    input_ids = torch.full((len(pairs), width), pad_token_id, dtype=torch.long)
    attention_mask = torch.zeros((len(pairs), width), dtype=torch.long)
    response_mask = torch.zeros((len(pairs), width), dtype=torch.bool)
    for row, pair in enumerate(pairs):
        ids = pair.input_ids
        start = 0 if padding_side == "right" else width - len(ids)
        input_ids[row, start: start + len(ids)] = torch.tensor(ids, dtype=torch.long)
        attention_mask[row, start: start + len(ids)] = 1
        response_mask[row, start + len(pair.prompt_ids): start + len(ids)] = True
    return Batch(input_ids.to(device), attention_mask.to(device), response_mask.to(device))


def response_token_logps(model, batch: Batch, adapter_names: list[str] | None = None) -> tuple[torch.Tensor,
                                                                                               torch.Tensor]:
    """Log-probs of the response tokens, computed only at the positions that predict them.

    Args: ``batch`` with input_ids/attention_mask/response_mask of shape (B, T); ``adapter_names`` one PEFT adapter
    name per row (``__base__`` for the reference), or None to call ``model`` as it is.
    Returns ``(token_logps, mask)``, both (B, K) where K is the number of sequence positions at which any row has a
    response token to predict: token_logps[b, k] = log pi(y_t | x, y_<t) in float32, zero where ``mask`` is False.
    Differentiable: the training loop calls this too.
    """
    target_mask = batch.response_mask[:, 1:]  # token t+1 is predicted at position t
    keep = target_mask.any(dim=0).nonzero().squeeze(-1)  # (K,) positions whose logits are needed
    position_ids = (batch.attention_mask.cumsum(-1) - 1).clamp(min=0)  # exact positions under left padding too
    kwargs: dict[str, Any] = {}
    if adapter_names is not None:
        kwargs["adapter_names"] = adapter_names
    logits = model(input_ids=batch.input_ids, attention_mask=batch.attention_mask, position_ids=position_ids,
                   logits_to_keep=keep, use_cache=False, **kwargs).logits.float()  # (B, K, V)
    targets = batch.input_ids[:, keep + 1]  # (B, K)
    mask = target_mask[:, keep]
    token_logps = logits.gather(-1, targets.unsqueeze(-1)).squeeze(-1) - torch.logsumexp(logits, dim=-1)
    return token_logps.masked_fill(~mask, 0.0), mask


def stacks(model) -> bool:
    """Whether ``model``'s adapters can be applied per row or per token by the stacked LoRA (``engine.multi_lora``)."""
    return StackedLora.of(model) is not None


@dataclass
class Scores:
    token_logps: list[torch.Tensor]  # per sample, (L_i,) log-probs of its response tokens
    token_ids: list[list[int]]  # per sample, the response token ids scored
    sum_logps: torch.Tensor  # (B,) summed response log-prob
    mean_logps: torch.Tensor  # (B,) mean per response token
    lengths: torch.Tensor  # (B,) number of response tokens
    truncated: list[bool]  # per sample, whether max_length cut it


def score(model, tokenizer, prompts: Sequence[Prompt], responses: Sequence[str], *,
          systems: Sequence[str | None] | None = None, adapter: str | Sequence[str] | None = None,
          max_length: int = config.SCORING.max_length, batch_size: int = config.SCORING.batch_size,
          padding_side: str = "right", autocast=None) -> Scores:
    """Score each (prompt, response) under ``adapter`` without gradients.

    ``adapter``: None calls ``model`` as it is (a plain HF model, or a PEFT model's active adapter); a name (or one
    name per row) selects PEFT adapters per row, ``__base__`` being the reference. Rows are sorted by length into
    batches to avoid padding waste and returned in the input order. ``autocast`` is an optional context-manager
    factory (e.g. ``DeviceChoice.autocast``); exact scores use none.
    """
    if len(prompts) != len(responses):
        raise ValueError(f"{len(prompts)} prompts but {len(responses)} responses")
    count = len(prompts)
    systems = list(systems) if systems is not None else [None] * count
    names = [adapter] * count if adapter is None or isinstance(adapter, str) else list(adapter)
    if len(names) != count:
        raise ValueError(f"{len(names)} adapter names for {count} rows")
    pairs = [tokenize_pair(tokenizer, p, r, s, max_length) for p, r, s in zip(prompts, responses, systems)]
    order = sorted(range(count), key=lambda i: len(pairs[i].input_ids))
    device = next(model.parameters()).device
    token_logps: list[torch.Tensor] = [torch.empty(0)] * count
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            for start in range(0, count, batch_size):
                rows = order[start: start + batch_size]
                batch = collate([pairs[i] for i in rows], tokenizer.pad_token_id, padding_side, device)
                row_names = None if names[rows[0]] is None else [names[i] for i in rows]
                with autocast() if autocast else nullcontext(), per_row_adapters(model, row_names, device) as (_, kw):
                    logps, mask = response_token_logps(model, batch, **kw)
                for local, index in enumerate(rows):
                    token_logps[index] = logps[local][mask[local]].cpu()
    finally:
        model.train(was_training)
    sums = torch.stack([t.sum() for t in token_logps]) if count else torch.empty(0)
    lengths = torch.tensor([len(t) for t in token_logps], dtype=torch.long)
    return Scores(token_logps, [p.response_ids for p in pairs], sums, sums / lengths.clamp(min=1), lengths,
                  [p.truncated for p in pairs])
