"""The adapter registry's checks: a folder is a safetensors PEFT LoRA adapter with a meta.json, or it is refused.

Pickled weights are never unpickled; a corrupt header, a missing file or an adapter made for another base is
reported with a message naming the folder.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from playground.engine import fingerprint

ADAPTER_REQUIRED_FILES = ("adapter_config.json", "adapter_model.safetensors")
# What an adapter folder without this playground's meta.json is taken to be (its base is still checked by shape)
PLAIN_PEFT_META = {"method": "peft", "note": "a plain PEFT LoRA folder without meta.json (e.g. trained with TRL)"}
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".pkl", ".pickle", ".ckpt")


class AdapterError(ValueError):
    """An adapter folder is unusable (missing files, pickles, wrong base); the message names it."""


@dataclass
class AdapterInfo:
    name: str
    path: Path
    meta: dict[str, Any] = field(default_factory=dict)
    source: str = "shipped"  # "shipped" | "user"
    # its recorded base weights against the loaded base's (``engine.fingerprint``: same, other, unrecorded,
    # unchecked); set by ``Engine.attach``, "" until then
    base_weights: str = ""

    @property
    def method(self) -> str:
        return str(self.meta.get("method", "?"))

    @property
    def base_note(self) -> str:
        """A few words when the adapter's base weights are not known to be the loaded base's, else ""."""
        return fingerprint.note(self.base_weights)

    def describe(self) -> str:
        """How a variant list labels it: ``"DPO adapter, shipped"``, with :attr:`base_note` after it when there is
        one (``"DPO adapter, shipped, trained on other base weights: ..."``)."""
        return ", ".join(part for part in (f"{self.method.upper()} adapter", self.source, self.base_note) if part)


def validate_adapter_dir(path: Path) -> dict[str, Any]:
    """Check an adapter folder is a safetensors PEFT LoRA adapter; return its metadata (``meta.json``, or
    :data:`PLAIN_PEFT_META` for a plain PEFT folder such as TRL writes).

    Pickled weights are refused outright (never unpickled); a folder must hold exactly the safe files.
    """
    path = Path(path)
    for required in ADAPTER_REQUIRED_FILES:
        if not (path / required).is_file():
            raise AdapterError(f"Adapter folder {path} lacks {required}: it is not a PEFT LoRA adapter.")
    pickles = sorted(p.name for p in path.iterdir() if p.suffix.lower() in PICKLE_SUFFIXES)
    if pickles:
        raise AdapterError(f"Adapter folder {path} contains pickled files {pickles}; only safetensors are loaded. "
                           "Remove them or re-save the adapter with safe_serialization=True.")
    _check_safetensors(path / "adapter_model.safetensors")
    try:
        adapter_config = json.loads((path / "adapter_config.json").read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise AdapterError(f"Adapter folder {path}: adapter_config.json is unreadable ({exc}).") from exc
    if str(adapter_config.get("peft_type", "")).upper() != "LORA":
        raise AdapterError(f"Adapter folder {path} is a {adapter_config.get('peft_type')!r} adapter, not LoRA.")
    meta: dict[str, Any] = dict(PLAIN_PEFT_META)  # a standard PEFT folder (TRL's, for one) is welcome too
    if (path / "meta.json").is_file():
        try:
            meta = json.loads((path / "meta.json").read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as exc:
            raise AdapterError(f"Adapter folder {path}: meta.json is unreadable ({exc}).") from exc
        if not isinstance(meta, dict):
            raise AdapterError(f"Adapter folder {path}: meta.json is unreadable (not a JSON object).")
    meta.setdefault("base_model", adapter_config.get("base_model_name_or_path"))
    return meta


def _check_safetensors(weights: Path) -> None:
    """Refuse a weights file that is not a complete safetensors file with at least one tensor (reads the header)."""
    from safetensors import safe_open

    try:
        with safe_open(str(weights), framework="pt") as handle:
            keys = list(handle.keys())  # noqa: SIM118 - safe_open is not a dict
    except Exception as exc:  # noqa: BLE001 - a corrupt file is reported, never crashes the server
        raise AdapterError(f"Adapter folder {weights.parent}: {weights.name} is not a readable safetensors file "
                           f"({type(exc).__name__}: {exc}). Re-save or re-download the adapter.") from None
    if not keys:
        raise AdapterError(f"Adapter folder {weights.parent}: {weights.name} holds no tensors.")


def discover_adapters(*roots: Path) -> tuple[list[AdapterInfo], list[str]]:
    """Adapters found under ``roots`` (each child folder), and one message per folder that was skipped."""
    found: list[AdapterInfo] = []
    skipped: list[str] = []
    for index, root in enumerate(roots):
        root = Path(root)
        if not root.is_dir():
            continue
        for child in sorted(root.iterdir()):
            if not child.is_dir() or child.name.startswith("."):
                continue
            try:
                meta = validate_adapter_dir(child)
            except AdapterError as exc:
                skipped.append(str(exc))
                continue
            found.append(AdapterInfo(child.name, child, meta, "shipped" if index == 0 else "user"))
    return found, skipped


def _lora_shape_mismatches(model, adapter_path: Path) -> list[str]:
    """Names of LoRA tensors whose shapes cannot attach to ``model`` (different base architecture or size)."""
    from safetensors import safe_open

    modules = dict(model.named_modules())
    problems = []
    with safe_open(str(adapter_path / "adapter_model.safetensors"), framework="pt") as handle:
        for key in handle.keys():  # noqa: SIM118 - safe_open is not a dict
            shape = handle.get_slice(key).get_shape()
            # keys look like base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight
            stem = key.removeprefix("base_model.model.")
            module_name, _, kind = stem.rpartition(".lora_")
            target = modules.get(module_name) or modules.get("base_model.model." + module_name)
            base_layer = getattr(target, "base_layer", target)
            if base_layer is None or not hasattr(base_layer, "in_features"):
                problems.append(f"{module_name} (absent)")
                continue
            if kind.startswith("A") and shape[1] != base_layer.in_features:
                problems.append(f"{module_name}: in {shape[1]} != {base_layer.in_features}")
            elif kind.startswith("B") and shape[0] != base_layer.out_features:
                problems.append(f"{module_name}: out {shape[0]} != {base_layer.out_features}")
    return problems
