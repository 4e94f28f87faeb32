"""Which base weights an adapter was trained on: a cheap fingerprint of the base, and what a mismatch means.

Two bases can have the same architecture and the same hub id but other weights: the embedded base is dequantised
from a 4-bit GGUF, while a Hugging Face Space loads the hub's full-precision weights. An adapter's LoRA shapes attach
to both (``engine.adapters`` checks the shapes), so it runs on either, but its answers differ slightly and the numbers
recorded with it (held-out metrics in ``meta.json``, the precomputed Inspect scores) were measured on the weights it
was trained on. ``meta.json`` records :func:`weights_fingerprint` of those weights as ``base_fingerprint``; the engine
computes the loaded base's once and :func:`compare` tells which case an adapter is in.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable

import torch

FINGERPRINT_VERSION = 1
SAMPLE_ELEMENTS = 1 << 20  # a tensor with more elements is hashed at a fixed stride (about this many elements)
_FIRST_LAYER = re.compile(r"(^|\.)(layers|h|blocks|layer|decoder_layers)\.0\.")
_FINAL_NORM = re.compile(r"(^|\.)(norm|ln_f|final_layernorm|final_layer_norm|norm_f)\.(weight|bias)$")
_NUMBERED = re.compile(r"\.\d+\.")

# What an adapter's recorded base weights are, against the loaded base's
SAME = "same"  # the fingerprints agree: the adapter's numbers apply here
OTHER = "other"  # same shapes, other weights (e.g. trained on the dequantised GGUF, loaded on the hub's weights)
UNRECORDED = "unrecorded"  # no fingerprint in meta.json (a plain PEFT or TRL folder, or an older adapter)
UNCHECKED = "unchecked"  # the loaded base's fingerprint is unknown

NOTES = {
    OTHER: "trained on other base weights: its numbers do not apply here",
    UNRECORDED: "base weights not recorded",
    UNCHECKED: "base weights not checked",
}


def _base_weights(model) -> Iterable[tuple[str, torch.Tensor]]:
    """The base's own parameters under their plain names: LoRA weights left out, PEFT's ``base_layer`` unwrapped."""
    if hasattr(model, "get_base_model"):  # a PeftModel
        model = model.get_base_model()
    for name, parameter in model.named_parameters():
        if "lora_" in name or ".modules_to_save." in name:
            continue
        yield name.replace(".base_layer.", ".").replace(".original_module.", "."), parameter


def weights_fingerprint(model) -> str:
    """SHA-256 (hex) of a fixed, small set of ``model``'s base weights and its architecture and size.

    Hashed: the architecture (``config.architectures``, ``model_type``), the number of base parameters, then, by
    name and shape, the input embedding, every weight of the first decoder layer and the final norm. A tensor of more
    than :data:`SAMPLE_ELEMENTS` elements contributes every k-th element (k fixed by its size). Values are hashed as
    float32 bytes after rounding to bfloat16, so the same checkpoint loaded in float32 (CPU) or bfloat16 (CUDA) gives
    the same fingerprint, while the GGUF-derived weights and the hub's weights do not. LoRA weights and PEFT's
    wrapping are ignored: a base with adapters attached gives its plain fingerprint. Pure (reads the weights, changes
    nothing); about 0.1 s on the CPU for a 135M model.
    """
    named = list(_base_weights(model))
    embedding = model.get_input_embeddings().weight
    chosen: list[tuple[str, torch.Tensor]] = [(name, p) for name, p in named if p is embedding][:1]
    chosen += sorted((name, p) for name, p in named if _FIRST_LAYER.search(name))
    chosen += [(name, p) for name, p in named if _FINAL_NORM.search(name) and not _NUMBERED.search(name)][-1:]
    config = getattr(model, "config", None)
    header = {
        "version": FINGERPRINT_VERSION,
        "architectures": list(getattr(config, "architectures", None) or []),
        "model_type": getattr(config, "model_type", None),
        "parameters": sum(p.numel() for _, p in named),
        "tensors": [[name, list(p.shape)] for name, p in chosen],
    }
    digest = hashlib.sha256(json.dumps(header, sort_keys=True).encode())
    with torch.no_grad():
        for _, tensor in chosen:
            flat = tensor.detach().reshape(-1)
            if flat.numel() > SAMPLE_ELEMENTS:
                flat = flat[:: -(-flat.numel() // SAMPLE_ELEMENTS)]
            values = flat.to(torch.bfloat16).to(device="cpu", dtype=torch.float32).contiguous()
            digest.update(values.numpy().tobytes())
    return digest.hexdigest()


def compare(recorded: str | None, loaded: str | None) -> str:
    """:data:`SAME`, :data:`OTHER`, :data:`UNRECORDED` (no ``recorded`` fingerprint) or :data:`UNCHECKED` (no
    ``loaded`` one)."""
    if not recorded:
        return UNRECORDED
    if not loaded:
        return UNCHECKED
    return SAME if recorded == loaded else OTHER


def note(status: str) -> str:
    """A few words for a variant's label ("" when the adapter's base weights are the loaded ones)."""
    return NOTES.get(status, "")


def base_weights_notice(statuses: dict[str, str]) -> str:
    """One paragraph for the page header about the adapters (name -> status) whose base weights are not the loaded
    ones; "" when every adapter's are."""
    other = [name for name, status in statuses.items() if status == OTHER]
    unrecorded = [name for name, status in statuses.items() if status == UNRECORDED]
    parts = []
    if other:
        parts.append(
            f"{_names(other)} {'was' if len(other) == 1 else 'were'} trained on other weights of this base (their "
            "recorded base fingerprint differs from the loaded one; the embedded base is dequantised from a 4-bit "
            "GGUF, the hub's is full precision): they attach and run, their answers differ slightly, and the numbers "
            "recorded with them on those weights (held-out metrics, precomputed Inspect scores) do not apply here; "
            "the Runs tab shows only numbers measured on the loaded weights. Measure them with `python -m "
            "playground.evaluate --write-meta`, or retrain (`make adapters`).")
    if unrecorded:
        parts.append(f"{_names(unrecorded)}: base weights not recorded (no base fingerprint in "
                     f"{'its' if len(unrecorded) == 1 else 'their'} meta.json).")
    return " ".join(parts)


def _names(names: list[str]) -> str:
    return names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]
