"""Padding-free, prompt-sharing log-probs: the fast path beside the readable padded scorer (``engine.scoring``).

All sequences of a batch are laid end to end in ONE row, no padding, and responses to the same prompt follow one
copy of it: [prompt, response 1, response 2, ...], each response's position ids restarting where the prompt ends.
The linear layers (most of the work) then see each prompt once and no padding token at all. Attention is computed
per *virtual sequence* instead of over the row: [prompt, response 1] and [prompt, response k] for k > 1 are
gathered out of the row (similar lengths bucketed together, each bucket one causal SDPA call) and the outputs
scattered back, so every token attends to exactly the tokens, at exactly the positions, it would see alone, and
attention costs the sum of squared sequence lengths rather than the square of a padded or packed width. The LM
head runs only at the positions that predict a response token, in chunks (``_HeadLogProbs``). The log-probs are
those of the padded one-sequence-per-row layout up to floating-point summation order.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager, nullcontext
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

import torch

from playground.engine.templating import TokenizedPair

LOGPROB_CHUNK = 128  # positions per LM-head chunk: a (128, vocab) float32 block (25 MB) stays cache-friendly
BUCKET_RATIO = 0.8  # a virtual sequence joins the current attention bucket while its length >= 0.8 x the bucket's
SEGMENT_ATTENTION = "playground_segments"  # name of the attention function registered with transformers


# Decoder families whose attention is plain causal softmax attention with rotary positions applied before it (what
# the segment attention reproduces); others use the padded path.
PACKED_MODEL_TYPES = frozenset({"llama", "mistral", "qwen2", "qwen3", "phi3", "olmo", "olmo2", "smollm3", "gemma"})


@dataclass
class _SegmentPlan:
    # per bucket: (n, L) query token indices and (n, L) key/value token indices of n virtual sequences, padded at
    # the end (a causal query never sees the padding after it). They differ only when keys come from a cache: then
    # the cached prompt positions get stand-in queries whose outputs are dropped.
    buckets: list[tuple[torch.Tensor, torch.Tensor]]
    output_index: torch.Tensor  # (T,) for each query token, its row in the concatenated bucket outputs
_PLAN: ContextVar[_SegmentPlan | None] = ContextVar("playground_segment_plan", default=None)


def _segment_attention(module, query, key, value, attention_mask, scaling=None, dropout=0.0, **kwargs):
    """Attention within virtual sequences (see the section comment); plain SDPA when no plan is set."""
    plan = _PLAN.get()
    if plan is None:
        from transformers.integrations.sdpa_attention import sdpa_attention_forward

        return sdpa_attention_forward(module, query, key, value, attention_mask, scaling=scaling, dropout=dropout,
                                      **kwargs)
    batch, heads, length, dim = query.shape
    kv_heads, value_dim = key.shape[1], value.shape[-1]
    q = query.transpose(1, 2).reshape(batch * length, heads, dim)
    k = key.transpose(1, 2).reshape(-1, kv_heads, dim)
    v = value.transpose(1, 2).reshape(-1, kv_heads, value_dim)
    outputs = []
    for q_index, kv_index in plan.buckets:
        n, size = q_index.shape
        qb = q.index_select(0, q_index.reshape(-1)).view(n, size, heads, dim).transpose(1, 2)
        kb = k.index_select(0, kv_index.reshape(-1)).view(n, size, kv_heads, dim).transpose(1, 2)
        vb = v.index_select(0, kv_index.reshape(-1)).view(n, size, kv_heads, value_dim).transpose(1, 2)
        if kv_heads != heads:  # grouped-query attention
            kb = kb.repeat_interleave(heads // kv_heads, dim=1)
            vb = vb.repeat_interleave(heads // kv_heads, dim=1)
        out = torch.nn.functional.scaled_dot_product_attention(qb, kb, vb, dropout_p=dropout, is_causal=True,
                                                               scale=scaling)
        outputs.append(out.transpose(1, 2).reshape(n * size, heads, value_dim))
    attended = torch.cat(outputs).index_select(0, plan.output_index)
    return attended.view(batch, length, heads, value_dim), None
_registered = False


def _register_segment_attention() -> None:
    global _registered
    if not _registered:
        from transformers import AttentionInterface

        AttentionInterface.register(SEGMENT_ATTENTION, _segment_attention)
        _registered = True


def _causal_lm_parts(model):
    """``(decoder, lm_head, config)`` when ``model`` (plain or PEFT-wrapped) computes logits = lm_head(decoder(x)).

    None when the padding-free path must not be used: a decoder family outside ``PACKED_MODEL_TYPES`` or another
    attention kernel than sdpa/eager, sliding-window or soft-capped attention, logit scaling or soft-capping between
    the decoder and the head, or a trainable head (the chunked head returns no weight gradient).
    """
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    cfg = getattr(base, "config", None)
    if cfg is None or getattr(cfg, "is_encoder_decoder", False) or cfg.model_type not in PACKED_MODEL_TYPES:
        return None
    if getattr(cfg, "_attn_implementation", None) not in ("sdpa", "eager", SEGMENT_ATTENTION):
        return None
    for name in ("final_logit_softcapping", "attn_logit_softcapping", "logit_scale", "logits_scaling",
                 "output_multiplier", "lm_head_multiplier"):
        value = getattr(cfg, name, None)
        if value is not None and value != 1:
            return None
    if getattr(cfg, "sliding_window", None) and getattr(cfg, "use_sliding_window", True):
        return None  # the segment attention has no window
    decoder = getattr(base, getattr(base, "base_model_prefix", "model"), None)
    head = base.get_output_embeddings() if hasattr(base, "get_output_embeddings") else None
    if decoder is None or decoder is base or not isinstance(head, torch.nn.Linear) or head.weight.requires_grad:
        return None
    if head.bias is not None and head.bias.requires_grad:
        return None
    return decoder, head, cfg


def packed_logps_supported(model) -> bool:
    """Whether :func:`packed_sequence_logps` can run on ``model`` (else use :func:`response_token_logps`)."""
    return _causal_lm_parts(model) is not None
_HEAD_CACHE: ContextVar[dict | None] = ContextVar("playground_head_weight_cache", default=None)


@contextmanager
def cached_head_casts() -> Iterator[None]:
    """Within this block, the LM head's weight is cast to the autocast dtype once, not on every call (the weight
    must not change meanwhile: the training loop's head is frozen). The cast copies are dropped on exit."""
    token = _HEAD_CACHE.set({})
    try:
        yield
    finally:
        _HEAD_CACHE.reset(token)


def _cast_head(weight: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    cache = _HEAD_CACHE.get()
    if cache is None or weight.dtype == dtype:
        return weight.to(dtype)
    key = (id(weight), weight._version, dtype)
    if key not in cache:
        cache.clear()
        cache[key] = (weight, weight.detach().to(dtype))  # keeps ``weight`` alive, so its id is not reused
    return cache[key][1]


class _HeadLogProbs(torch.autograd.Function):
    """log softmax(h W^T + b)[target] for N selected hidden states, chunked, never holding (N, vocab) logits.

    Frozen head only. When ``hidden`` needs a gradient, the forward also stores d_i = W[t_i] - softmax_i W (N x H,
    the same one extra matmul autograd would do in the backward), so the backward is grad_i * d_i: no second pass
    over the vocabulary and no (N, vocab) tensor kept alive. Matmuls run in ``dtype`` (the autocast dtype when
    autocast is on), softmax and log-sum-exp in float32, as the plain path does.
    """
    @staticmethod
    def forward(ctx, hidden, weight, bias, targets, dtype):  # noqa: D102 - see the class
        need_grad = ctx.needs_input_grad[0]
        w = _cast_head(weight, dtype)
        out = torch.empty(hidden.shape[0], dtype=torch.float32, device=hidden.device)
        direction = torch.empty(hidden.shape, dtype=torch.float32, device=hidden.device) if need_grad else None
        for start in range(0, hidden.shape[0], LOGPROB_CHUNK):
            stop = min(start + LOGPROB_CHUNK, hidden.shape[0])
            logits = hidden[start:stop].to(dtype) @ w.t()
            if bias is not None:
                logits = logits + bias.to(dtype)
            # one fused pass (float32 inside); about half the time of logsumexp + subtract + gather
            logps = torch.log_softmax(logits, dim=-1, dtype=torch.float32)
            del logits
            tgt = targets[start:stop]
            out[start:stop] = logps.gather(1, tgt.unsqueeze(1)).squeeze(1)
            if need_grad:
                probs = logps.exp_()  # in place: the log-probs are not needed any more
                direction[start:stop] = w[tgt].float() - (probs.to(dtype) @ w).float()
        ctx.save_for_backward(direction)
        ctx.hidden_dtype = hidden.dtype
        return out

    @staticmethod
    def backward(ctx, grad_out):  # noqa: D102 - see the class
        (direction,) = ctx.saved_tensors
        grad_hidden = None
        if ctx.needs_input_grad[0]:
            grad_hidden = (direction * grad_out.unsqueeze(1)).to(ctx.hidden_dtype)
        return grad_hidden, None, None, None, None


def _group_by_prompt(sequences: Sequence[TokenizedPair], max_group_tokens: int,
                     adapters: Sequence[str] | None = None) -> list[tuple[list[int], list[int]]]:
    """``(prompt_ids, [sequence indices])`` groups: sequences with identical prompts (and, when ``adapters`` gives
    one adapter name per sequence, the same adapter: a prompt's hidden states depend on it), each group's total
    tokens (one prompt plus its responses) capped at ``max_group_tokens``; order of first appearance."""
    groups: list[tuple[list[int], list[int]]] = []
    open_group: dict[tuple, int] = {}
    used: list[int] = []
    for index, seq in enumerate(sequences):
        key = (adapters[index] if adapters is not None else None, *seq.prompt_ids)
        slot = open_group.get(key)
        if slot is not None and used[slot] + len(seq.response_ids) <= max_group_tokens:
            groups[slot][1].append(index)
            used[slot] += len(seq.response_ids)
            continue
        open_group[key] = len(groups)
        groups.append((seq.prompt_ids, [index]))
        used.append(len(seq.prompt_ids) + len(seq.response_ids))
    return groups


def _buckets(lengths: Sequence[int]) -> list[list[int]]:
    """Indices of virtual sequences grouped for attention: longest first, a new bucket when a length drops below
    ``BUCKET_RATIO`` x the bucket's longest (so at most ~20% of a bucket's attention is padding)."""
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    buckets: list[list[int]] = []
    for i in order:
        if buckets and lengths[i] >= BUCKET_RATIO * lengths[buckets[-1][0]]:
            buckets[-1].append(i)
        else:
            buckets.append([i])
    return buckets


def _make_plan(virtual_q: list[list[int]], virtual_kv: list[list[int]], source: list[tuple[int, int]],
               device: torch.device) -> _SegmentPlan:
    """Bucket the virtual sequences by length and index every query token's output."""
    lengths = [len(v) for v in virtual_kv]
    slot: dict[int, int] = {}  # virtual sequence -> its first row in the concatenated bucket outputs
    buckets = []
    offset = 0
    for members in _buckets(lengths):
        size = lengths[members[0]]
        q_rows = [virtual_q[v] + [virtual_q[v][0]] * (size - lengths[v]) for v in members]
        kv_rows = [virtual_kv[v] + [virtual_kv[v][0]] * (size - lengths[v]) for v in members]
        for row, v in enumerate(members):
            slot[v] = offset + row * size
        buckets.append((torch.tensor(q_rows, dtype=torch.long, device=device),
                        torch.tensor(kv_rows, dtype=torch.long, device=device)))
        offset += len(members) * size
    return _SegmentPlan(buckets, torch.tensor([slot[v] + j for v, j in source], dtype=torch.long, device=device))


def _run_decoder(decoder, cfg, plan: _SegmentPlan, ids: list[int], positions: list[int], device: torch.device,
                 **kwargs):
    """The decoder on one padding-free row with the segment attention plan in force; the last hidden states."""
    _register_segment_attention()
    previous = cfg._attn_implementation
    token = _PLAN.set(plan)
    try:
        cfg._attn_implementation = SEGMENT_ATTENTION
        outputs = decoder(input_ids=torch.tensor([ids], dtype=torch.long, device=device),
                          position_ids=torch.tensor([positions], dtype=torch.long, device=device), **kwargs)
    finally:
        cfg._attn_implementation = previous
        _PLAN.reset(token)
    return outputs[0] if isinstance(outputs, tuple) else outputs.last_hidden_state


def cache_kwarg(decoder) -> str:
    """Name of the decoder's KV-cache argument: ``cache`` in recent transformers, ``past_key_values`` before."""
    import inspect

    return "cache" if "cache" in inspect.signature(decoder.forward).parameters else "past_key_values"


def _head_dtype(device: torch.device, head) -> torch.dtype:
    return torch.get_autocast_dtype(device.type) if torch.is_autocast_enabled(device.type) else head.weight.dtype


@dataclass
class PackedRow:
    """The one padding-free row the packed forward runs on, and where each quantity is read from it.

    ``ids`` / ``positions``: token ids and position ids of the row; ``virtual``: token indices (into the row) of each
    virtual sequence [prompt, response], in attention order; ``source``: per row token, the (virtual sequence, offset)
    its attention output comes from; ``predictor``: per predicted response token, the row index of the token whose
    hidden state predicts it; ``targets``: those response tokens' ids; ``owner``: which input sequence each belongs
    to; ``prompt_tokens_of``: each distinct prompt's token indices (its one copy in the row).
    """

    ids: list[int]
    positions: list[int]
    virtual: list[list[int]]
    source: list[tuple[int, int]]
    predictor: list[int]
    targets: list[int]
    owner: list[int]
    prompt_tokens_of: dict[tuple[int, ...], list[int]]


def plan_packed_row(sequences: Sequence[TokenizedPair], groups: list[tuple[list[int], list[int]]]) -> PackedRow:
    """Lay ``sequences`` end to end as [prompt, response 1, response 2, ...] per group (``_group_by_prompt``), each
    response's positions restarting where its prompt ends. Pure: no model, no tensors."""
    row = PackedRow([], [], [], [], [], [], [], {})
    for prompt, indices in groups:
        p, column = len(prompt), len(row.ids)
        prompt_tokens = list(range(column, column + p))
        row.prompt_tokens_of.setdefault(tuple(prompt), prompt_tokens)
        row.ids.extend(prompt)
        row.positions.extend(range(p))
        for k, index in enumerate(indices):
            response = sequences[index].response_ids
            n, start = len(response), len(row.ids)
            row.ids.extend(response)
            row.positions.extend(range(p, p + n))
            tokens = list(range(start, start + n))
            if k == 0:  # [prompt, first response]: the prompt's own attention output comes from here
                row.source.extend((len(row.virtual), j) for j in range(p + n))
            else:
                row.source.extend((len(row.virtual), p + j) for j in range(n))
            row.virtual.append(prompt_tokens + tokens)
            row.predictor.append(column + p - 1)  # the prompt's last token predicts the first response token
            row.predictor.extend(tokens[:-1])
            row.targets.extend(response)
            row.owner.extend([index] * n)
    return row


def packed_sequence_logps(model, sequences: Sequence[TokenizedPair], pad_token_id: int,
                          device: torch.device | str = "cpu", *, share_prompts: bool = True,
                          max_group_tokens: int | None = None,
                          adapter_names: Sequence[str] | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Summed response log-probs (B,) float32 and response lengths (B,) of ``sequences``, in one padding-free forward.

    The same numbers as summing :func:`response_token_logps` over a padded batch (up to float summation order), with
    prompts shared between responses to the same prompt (``share_prompts``) and no padding (see the section
    comment). Differentiable in the model's trainable parameters. Call it on a model for which
    :func:`packed_logps_supported` is true. ``adapter_names`` (one PEFT adapter name per sequence, ``__base__`` for
    the base) scores each sequence under its own adapter, every token of the row getting its sequence's adapter
    (``engine.multi_lora``; the model must be a PeftModel whose adapters stack); None calls the model as it is.
    ``pad_token_id`` is unused (nothing is padded); it is accepted so the call matches
    :func:`playground.training.sequence_logps`.
    """
    sums, lengths, _ = packed_logps_with_continuations(model, sequences, (), pad_token_id, device,
                                                       share_prompts=share_prompts,
                                                       max_group_tokens=max_group_tokens,
                                                       adapter_names=adapter_names)
    return sums, lengths


def packed_logps_with_continuations(model, sequences: Sequence[TokenizedPair],
                                    continuations: Sequence[TokenizedPair], pad_token_id: int,
                                    device: torch.device | str = "cpu", *, share_prompts: bool = True,
                                    max_group_tokens: int | None = None, adapter_names: Sequence[str] | None = None
                                    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """:func:`packed_sequence_logps` of ``sequences``, plus the summed log-probs (C,) of ``continuations``, without
    gradient, each of which continues a prompt that one of ``sequences`` has.

    KTO's mismatched pairs (prompt i, response i+1) are such continuations: the policy's forward over the prompt is
    done once, in the gradient pass, and the no-grad pass runs only the continuation tokens, attending to the
    prompt's cached keys and values. Continuations whose prompt none of ``sequences`` has are scored by a separate
    no-grad pass. ``adapter_names``: see :func:`packed_sequence_logps` (not with continuations).
    Returns ``(sums, lengths, continuation_sums)``.
    """
    parts = _causal_lm_parts(model)
    if parts is None:
        raise ValueError("packed_sequence_logps: this model needs the padded path (response_token_logps)")
    if adapter_names is not None and continuations:
        raise ValueError("packed_logps_with_continuations: per-sequence adapters do not combine with continuations")
    decoder, head, cfg = parts
    device = torch.device(device)
    count = len(sequences)
    if count == 0:
        empty = torch.zeros(0, dtype=torch.float32, device=device)
        lengths = torch.zeros(0, dtype=torch.long)
        if not continuations:
            return empty, lengths, empty
        with torch.no_grad():
            return empty, lengths, packed_sequence_logps(model, continuations, pad_token_id, device)[0]
    longest = max(len(s.input_ids) for s in sequences)
    if share_prompts:
        groups = _group_by_prompt(sequences, max(max_group_tokens or 2 * longest, longest), adapter_names)
    else:
        groups = [(s.prompt_ids, [i]) for i, s in enumerate(sequences)]
    row = plan_packed_row(sequences, groups)
    adapters = _per_token_adapters(model, sequences, groups, adapter_names, device)

    reuse = [j for j, c in enumerate(continuations) if tuple(c.prompt_ids) in row.prompt_tokens_of]
    cache = None
    kwargs: dict[str, Any] = {"use_cache": False}
    if reuse:
        from transformers import DynamicCache

        cache = DynamicCache()
        kwargs = {"use_cache": True, cache_kwarg(decoder): cache}
    with adapters:
        hidden = _run_decoder(decoder, cfg, _make_plan(row.virtual, row.virtual, row.source, device), row.ids,
                              row.positions, device, **kwargs)[0]
    dtype = _head_dtype(device, head)
    selected = hidden.index_select(0, torch.tensor(row.predictor, dtype=torch.long, device=device))
    token_logps = _HeadLogProbs.apply(selected, head.weight, head.bias,
                                      torch.tensor(row.targets, dtype=torch.long, device=device), dtype)
    owner_t = torch.tensor(row.owner, dtype=torch.long, device=device)
    sums = torch.zeros(count, dtype=torch.float32, device=device).index_add(0, owner_t, token_logps)
    lengths_t = torch.tensor([len(s.response_ids) for s in sequences], dtype=torch.long)

    continuation_sums = _continuation_sums(model, decoder, head, cfg, continuations, reuse, row.prompt_tokens_of,
                                           cache, hidden, pad_token_id, device, dtype)
    return sums, lengths_t, continuation_sums


def _per_token_adapters(model, sequences: Sequence[TokenizedPair], groups: list[tuple[list[int], list[int]]],
                        adapter_names: Sequence[str] | None, device: torch.device):
    """The context that gives every token of the packed row its sequence's adapter (groups are homogeneous in
    adapter, and the row lays them out group by group: the prompt, then its responses), or a no-op."""
    if adapter_names is None:
        return nullcontext()
    from playground.engine.multi_lora import StackedLora

    stacked = StackedLora.of(model)
    if stacked is None:
        raise ValueError("per-sequence adapters on the packed path need adapters that stack (plain LoRA)")
    slots = stacked.slots_for([adapter_names[indices[0]] for _, indices in groups], device)
    widths = torch.tensor([len(prompt) + sum(len(sequences[i].response_ids) for i in indices)
                           for prompt, indices in groups], device=device)
    return stacked.applied(slots.repeat_interleave(widths).unsqueeze(0))


def _continuation_sums(model, decoder, head, cfg, continuations: Sequence[TokenizedPair], reuse: list[int],
                       prompt_tokens_of: dict[tuple[int, ...], list[int]], cache, hidden: torch.Tensor,
                       pad_token_id: int, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """No-grad summed log-probs (C,) of ``continuations``: those in ``reuse`` from the gradient pass's cached prompt
    keys and values (``_continue``), the rest by a separate packed pass."""
    sums = torch.zeros(len(continuations), dtype=torch.float32, device=device)
    if not continuations:
        return sums
    with torch.no_grad():
        if reuse:
            layers = [(layer.keys.detach(), layer.values.detach()) for layer in cache.layers]
            sums[reuse] = _continue(decoder, head, cfg, [continuations[j] for j in reuse], prompt_tokens_of, layers,
                                    hidden.detach(), device, dtype)
            del layers
        reused = set(reuse)
        rest = [j for j in range(len(continuations)) if j not in reused]
        if rest:
            sums[rest] = packed_sequence_logps(model, [continuations[j] for j in rest], pad_token_id, device)[0]
    return sums


def _continue(decoder, head, cfg, continuations: Sequence[TokenizedPair],
              prompt_tokens_of: dict[tuple[int, ...], list[int]], layers: list[tuple[torch.Tensor, torch.Tensor]],
              hidden: torch.Tensor, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """No-grad summed log-probs of ``continuations`` from cached prompt keys/values (``layers``, per decoder layer)
    and the prompt's last hidden state (``hidden``: the gradient pass's, one row per token)."""
    from transformers import DynamicCache

    cached = layers[0][0].shape[-2]
    ids: list[int] = []
    positions: list[int] = []
    virtual_q: list[list[int]] = []
    virtual_kv: list[list[int]] = []
    source: list[tuple[int, int]] = []
    first: list[int] = []  # the prompt's last token (gradient pass) predicts each continuation's first token
    first_targets: list[int] = []
    later: list[int] = []  # the fed tokens (this pass) predict the rest
    later_targets: list[int] = []
    owner: list[int] = []
    for j, cont in enumerate(continuations):
        prompt_tokens = prompt_tokens_of[tuple(cont.prompt_ids)]
        p, response = len(prompt_tokens), cont.response_ids
        first.append(prompt_tokens[-1])
        first_targets.append(response[0])
        fed = response[:-1]  # the last token predicts nothing
        if not fed:
            continue
        start = len(ids)
        tokens = list(range(start, start + len(fed)))
        ids.extend(fed)
        positions.extend(range(p, p + len(fed)))
        # keys: the cached prompt, then the fed tokens; the prompt positions get stand-in queries, outputs dropped
        virtual_kv.append(prompt_tokens + [cached + t for t in tokens])
        virtual_q.append([tokens[0]] * p + tokens)
        source.extend((len(virtual_q) - 1, p + t) for t in range(len(fed)))
        later.extend(tokens)
        later_targets.extend(response[1:])
        owner.extend([j] * len(fed))
    selected = [hidden.index_select(0, torch.tensor(first, dtype=torch.long, device=device))]
    if ids:
        cache = DynamicCache()
        for index, (keys, values) in enumerate(layers):
            cache.update(keys, values, index)
        fed_hidden = _run_decoder(decoder, cfg, _make_plan(virtual_q, virtual_kv, source, device), ids, positions,
                                  device, use_cache=True, **{cache_kwarg(decoder): cache})[0]
        selected.append(fed_hidden.index_select(0, torch.tensor(later, dtype=torch.long, device=device)))
    token_logps = _HeadLogProbs.apply(torch.cat(selected), head.weight, head.bias,
                                      torch.tensor(first_targets + later_targets, dtype=torch.long, device=device),
                                      dtype)
    owner_t = torch.tensor(list(range(len(continuations))) + owner, dtype=torch.long, device=device)
    return torch.zeros(len(continuations), dtype=torch.float32, device=device).index_add(0, owner_t, token_logps)
