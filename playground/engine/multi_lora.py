"""Many LoRA adapters in one batch: each row (or token) gets its own adapter, with two matmuls per LoRA layer.

PEFT's mixed-batch path (``adapter_names=``) loops, in every LoRA layer, over the adapters present in the batch:
select the rows, two small matmuls, scale, write back. On a small model that is thousands of tiny ops per decode
step and costs more than the model itself. Here (the S-LoRA / Punica idea, in its simplest dense form) the adapters
of each layer are concatenated once, columns of adapter k owned by slot k:

    A_cat = [A_1^T | A_2^T | ... | A_N^T]             (in, C),  C = r_1 + ... + r_N
    B_cat = [s_1 B_1^T ; s_2 B_2^T ; ... ; s_N B_N^T]  (C, out), s_k = lora_alpha_k / r_k (PEFT's ``scaling``)

and for inputs x (..., in) whose row (or token) selects slot k:

    delta = ((x @ A_cat) * M) @ B_cat,   M[..., c] = 1 where column c belongs to slot k, else 0

which is s_k B_k A_k x for the selected adapter and exactly 0 for the base (slot 0 owns no column). The base layer
runs as usual with PEFT's adapters disabled, and ``delta`` is added by a forward hook installed for the duration of
a call, so the saved adapter format and PEFT's own modules are untouched. Every row pays for all C columns; with a
few rank-16 adapters that is a small fraction of the base layer's work, and a decode step reads each weight once.

Only plain LoRA on ``nn.Linear`` layers in eval mode is stacked (no DoRA or other variants, no LoRA bias, nothing
merged); :meth:`StackedLora.of` returns None otherwise and callers use PEFT's path.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field

import torch

from playground import config

_ATTRIBUTE = "_playground_stacked_lora"  # where the stacks of a PeftModel are cached on the model itself


@dataclass
class _LayerStack:
    a_cat: torch.Tensor  # (in, C)
    b_cat: torch.Tensor  # (C, out), scaling folded in
    layout: tuple[tuple[int, int], ...]  # (slot, rank) per adapter present in this layer, column order


@dataclass
class Selection:
    """Which slot each row (``(B, 1)``) or token (``(1, T)``) of the current call uses; ``set`` changes it between
    calls of one decode (rows leave the batch). Masks are built once per layout and selection."""

    slots: torch.Tensor
    _masks: dict = field(default_factory=dict)
    any_adapter: bool = True  # False when every row is the base: the layers add nothing

    def __post_init__(self):
        self.set(self.slots)

    def set(self, slots: torch.Tensor) -> None:
        self.slots = slots
        self._masks = {}
        self.any_adapter = bool((slots != 0).any())

    def mask(self, layout: tuple[tuple[int, int], ...], dtype: torch.dtype) -> torch.Tensor:
        key = (layout, dtype)
        mask = self._masks.get(key)
        if mask is None:
            owner = torch.tensor([slot for slot, rank in layout for _ in range(rank)], device=self.slots.device)
            mask = (self.slots.unsqueeze(-1) == owner).to(dtype)  # (B, 1, C) or (1, T, C)
            self._masks[key] = mask
        return mask


def _lora_linear_class():
    from peft.tuners.lora.layer import Linear

    return Linear


def _signature(model) -> tuple:
    """Identifies the attached adapters' weights: any attach, detach or in-place change gives a new signature."""
    from peft.tuners.lora.layer import LoraLayer

    parts = []
    for module in model.modules():
        if isinstance(module, LoraLayer):
            for name, lora_a in module.lora_A.items():
                lora_b = module.lora_B[name]
                parts.append((id(module), name, id(lora_a.weight), lora_a.weight._version, id(lora_b.weight),
                              lora_b.weight._version, float(module.scaling[name])))
    return tuple(parts)


class StackedLora:
    """The concatenated adapters of one PeftModel (see the module docstring) and the hooks that apply them."""

    def __init__(self, model, slot_of: dict[str, int], layers: dict, signature: tuple):
        self.slot_of = slot_of  # adapter name -> slot (1..N); the base is slot 0
        self._layers = layers  # LoRA Linear module -> _LayerStack
        self._signature = signature
        self._model = model

    @classmethod
    def of(cls, model) -> StackedLora | None:
        """The stacks of ``model`` (a PeftModel with LoRA adapters), rebuilt when its adapters changed; None when the
        model has no adapters or one of them cannot be stacked (then use PEFT's ``adapter_names`` path)."""
        if not hasattr(model, "peft_config") or not getattr(model, "peft_config", None):
            return None
        signature = _signature(model)
        cached = getattr(model, _ATTRIBUTE, None)
        if cached is not None and cached._signature == signature:
            return cached
        stacked = cls._build(model, signature)
        object.__setattr__(model, _ATTRIBUTE, stacked)  # not a submodule: plain attribute
        return stacked

    @classmethod
    def _build(cls, model, signature: tuple) -> StackedLora | None:
        from peft.tuners.lora.layer import LoraLayer

        names = list(model.peft_config)
        slot_of = {name: index + 1 for index, name in enumerate(names)}
        linear = _lora_linear_class()
        layers = {}
        for module in model.modules():
            if not isinstance(module, LoraLayer) or not module.lora_A:
                continue
            if not isinstance(module, linear) or module.merged or module.lora_variant:
                return None
            present = [name for name in names if name in module.lora_A]
            if any(module.lora_bias.get(name) for name in present):
                return None
            a_parts = [module.lora_A[name].weight.detach().t() for name in present]  # (in, r_k)
            b_parts = [module.lora_B[name].weight.detach().t() * module.scaling[name] for name in present]
            layers[module] = _LayerStack(torch.cat(a_parts, dim=1).contiguous(), torch.cat(b_parts, dim=0).contiguous(),
                                         tuple((slot_of[name], module.lora_A[name].out_features) for name in present))
        return cls(model, slot_of, layers, signature) if layers else None

    def slots_for(self, adapter_names: Sequence[str], device: torch.device | str = "cpu") -> torch.Tensor:
        """(len,) long: the slot of each PEFT adapter name (``config.PEFT_BASE_ADAPTER`` -> 0)."""
        unknown = [n for n in adapter_names if n != config.PEFT_BASE_ADAPTER and n not in self.slot_of]
        if unknown:
            raise KeyError(f"No attached adapter named {unknown}")
        return torch.tensor([0 if n == config.PEFT_BASE_ADAPTER else self.slot_of[n] for n in adapter_names],
                            dtype=torch.long, device=device)

    @contextmanager
    def applied(self, slots: torch.Tensor) -> Iterator[Selection]:
        """Within this block, calls of the model use slot ``slots[b, t]`` for row b / token t: ``slots`` is (B, 1)
        for per-row adapters (broadcast over positions) or (1, T) for per-token ones (one packed row). PEFT's own
        adapters are disabled meanwhile. Not re-entrant, and no other call may use the model meanwhile (callers hold
        the engine's lock)."""
        selection = Selection(slots)
        handles = []

        def hook(module, args, output):
            if not selection.any_adapter:
                return output
            stack = self._layers[module]
            x = args[0]
            if x.dtype != stack.a_cat.dtype and not torch.is_autocast_enabled(x.device.type):
                x = x.to(stack.a_cat.dtype)
            mixed = (x @ stack.a_cat) * selection.mask(stack.layout, stack.a_cat.dtype)
            if output.dtype == mixed.dtype == stack.b_cat.dtype:  # one fused op: output + mixed @ B_cat
                flat = torch.addmm(output.reshape(-1, output.shape[-1]), mixed.reshape(-1, mixed.shape[-1]),
                                   stack.b_cat)
                return flat.view(output.shape)
            return output + (mixed.to(stack.b_cat.dtype) @ stack.b_cat).to(output.dtype)

        with self._model.disable_adapter():
            try:
                for module in self._layers:
                    handles.append(module.register_forward_hook(hook))
                yield selection
            finally:
                for handle in handles:
                    handle.remove()


@contextmanager
def per_row_adapters(model, adapter_names: Sequence[str] | None,
                     device: torch.device | str = "cpu") -> Iterator[tuple[Selection | None, dict]]:
    """Within this block, calling ``model`` with the yielded kwargs gives row b the adapter ``adapter_names[b]``
    (``config.PEFT_BASE_ADAPTER`` for the base). Yields ``(selection, kwargs)``: the stacked LoRA's ``Selection``
    (to change rows between calls) and no kwargs, or None and PEFT's ``adapter_names`` where the adapters do not
    stack. ``adapter_names`` None, or a model without adapters: the model as it is."""
    if adapter_names is None or not getattr(model, "peft_config", None):
        yield None, {}
        return
    stacked = StackedLora.of(model)
    if stacked is None:
        yield None, {"adapter_names": list(adapter_names)}
        return
    with stacked.applied(stacked.slots_for(adapter_names, device).unsqueeze(1)) as selection:
        yield selection, {}
