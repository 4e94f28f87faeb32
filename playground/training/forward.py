"""The one seam from model to loss: summed response log-probs of a list of sequences, and the reference's, once.

Like the DPO reference repo's ``concatenated_forward``: every sequence a step needs (DPO's chosen and rejected, KTO's
samples) goes through one forward call, packed where the model allows it (``engine.packed``), padded otherwise.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from playground.engine.device import DeviceChoice
from playground.engine.packed import packed_logps_supported, packed_sequence_logps
from playground.engine.scoring import Batch, collate, response_token_logps
from playground.engine.templating import TokenizedPair


def sequence_logps(model, pairs: Sequence[TokenizedPair], pad_token_id: int, device: torch.device,
                   adapter_names: list[str] | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Summed response log-probs (B,) and response lengths (B,) for ``pairs`` in one forward pass.

    Packed where the model allows it (:func:`playground.engine.packed.packed_sequence_logps`: responses to one prompt
    share its forward, no padding waste, LM head only where a response token is predicted); else one padded row per
    pair.
    """
    if adapter_names is None and packed_logps_supported(model):
        return packed_sequence_logps(model, pairs, pad_token_id, device)
    batch: Batch = collate(pairs, pad_token_id, "right", device)
    token_logps, mask = response_token_logps(model, batch, adapter_names)
    return token_logps.sum(-1), mask.sum(-1)


def _prompt_major_order(sequences: Sequence[TokenizedPair]) -> list[int]:
    """Indices with same-prompt sequences adjacent (so a batch shares their prompt), groups in length order."""
    groups: dict[tuple[int, ...], list[int]] = {}
    for index, seq in enumerate(sequences):
        groups.setdefault(tuple(seq.prompt_ids), []).append(index)
    ordered = sorted(groups.values(), key=lambda members: (
        len(sequences[members[0]].prompt_ids) + sum(len(sequences[i].response_ids) for i in members), members[0]))
    return [i for members in ordered for i in sorted(members, key=lambda i: len(sequences[i].response_ids))]


def precompute_reference(model, sequences: Sequence[TokenizedPair], pad_token_id: int, device: DeviceChoice,
                         batch_size: int) -> torch.Tensor:
    """Reference (adapter disabled) summed log-probs (N,) for every sequence, once, no grad.

    Batches of ``batch_size`` sequences, same-prompt sequences together (they share the prompt's forward on the
    packed path), otherwise length-sorted.
    """
    order = _prompt_major_order(sequences)
    result = torch.zeros(len(sequences))
    with torch.no_grad(), model.disable_adapter(), device.autocast():
        for start in range(0, len(order), batch_size):
            rows = order[start: start + batch_size]
            sums, _ = sequence_logps(model, [sequences[i] for i in rows], pad_token_id, device.device)
            result[rows] = sums.float().cpu()
    return result
