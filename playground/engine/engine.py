"""The base model in memory with its LoRA adapters attached by name, and the lock that serialises model calls.

Requests select adapters per row, never by switching the model-wide active adapter: the stacked LoRA of
``engine.multi_lora`` (PEFT's mixed-batch ``adapter_names=`` where adapters cannot be stacked), ``__base__`` being
the base. Both install forward hooks for the duration of a call, so two calls on one model must not overlap:
``Engine.lock`` serialises them. Generation goes through the engine's decoder thread (``Engine.decoder``,
``engine.scheduler``), which runs requests that arrive together as one batch.
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path

import torch

from playground import config
from playground.engine import fingerprint
from playground.engine.adapters import (
    AdapterError,
    AdapterInfo,
    _lora_shape_mismatches,
    discover_adapters,
    validate_adapter_dir,
)
from playground.engine.base_model import (
    BaseModelSource,
    base_model_id,
    hub_base_id,
    load_base_model,
    resolve_base_model,
)
from playground.engine.device import DeviceChoice, pick_device
from playground.engine.scheduler import DecodeScheduler

log = logging.getLogger(__name__)


class Engine:
    """The base model in memory with its adapters attached by name, plus the lock that serialises model calls."""

    def __init__(self, model, tokenizer, device: DeviceChoice, source: BaseModelSource, base_factory=None,
                 base_fingerprint: str | None = None):
        self.base_model = model
        self.tokenizer = tokenizer
        self.device = device
        self.source = source
        # which weights are loaded (``engine.fingerprint``), computed before any adapter is attached
        self.base_fingerprint = base_fingerprint or fingerprint.weights_fingerprint(model)
        self.model = model  # becomes a PeftModel once the first adapter is attached
        self.adapters: dict[str, AdapterInfo] = {}
        self.lock = threading.RLock()
        # Makes an independent copy of the base for training, so training never touches the serving model.
        self._base_factory = base_factory
        # Decodes generation requests, many at once; its thread starts with the first request.
        self.decoder = DecodeScheduler(self)

    def fresh_base(self):
        """A new, plain copy of the base model (no adapters) on the CPU, for a training job to modify."""
        if self._base_factory is not None:
            return self._base_factory()
        model, _ = load_base_model(self.source, DeviceChoice(torch.device("cpu"), self.device.weight_dtype, None))
        return model

    @classmethod
    def load(cls, source: BaseModelSource | None = None, device: DeviceChoice | None = None) -> Engine:
        source = source or resolve_base_model()
        device = device or pick_device()
        # loaded on the CPU and fingerprinted there, then moved: on ZeroGPU no GPU is attached at start-up
        model, tokenizer = load_base_model(source, DeviceChoice(torch.device("cpu"), device.weight_dtype,
                                                                device.autocast_dtype))
        weights = fingerprint.weights_fingerprint(model)
        model.to(device.device)
        return cls(model, tokenizer, device, source, base_fingerprint=weights)

    @property
    def base_id(self) -> str:
        """What adapters name as their base (meta.json ``base_model``, adapter_config.json
        ``base_model_name_or_path``): the hub id of the loaded base, or its local directory when it has none."""
        return base_model_id(self.source)

    @property
    def hub_id(self) -> str | None:
        """The hub id of the loaded base (``base_model.hub_base_id``): ``config.HUB_BASE_MODEL`` for the embedded
        base, the id for a hub base; None for a local directory that is not a hub cache snapshot."""
        return hub_base_id(self.source)

    def base_weights_notice(self) -> str:
        """The page header's paragraph about attached adapters trained on other weights of this base, or with no
        record of theirs ("" when every adapter's base weights are the loaded ones)."""
        return fingerprint.base_weights_notice({name: info.base_weights for name, info in self.adapters.items()})

    def variant_names(self) -> list[str]:
        """``base`` followed by every attached adapter, in attachment order."""
        return ["base", *self.adapters]

    def adapter_names_for(self, variants: list[str]) -> list[str]:
        """Map user-facing variant names to PEFT's per-row adapter names (``base`` -> ``__base__``)."""
        unknown = [v for v in variants if v != "base" and v not in self.adapters]
        if unknown:
            raise KeyError(f"Unknown variant(s) {unknown}; available: {self.variant_names()}")
        return [config.PEFT_BASE_ADAPTER if v == "base" else v for v in variants]

    def attach(self, info: AdapterInfo) -> None:
        """Load the adapter at ``info.path`` under ``info.name``; refuse one made for another base."""
        from peft import PeftModel

        validate_adapter_dir(info.path)
        if info.name in self.adapters:
            raise AdapterError(f"An adapter named {info.name!r} is already attached.")
        self.check_base_match(info)
        info.base_weights = fingerprint.compare(info.meta.get("base_fingerprint"), self.base_fingerprint)
        if info.base_weights == fingerprint.OTHER:
            log.warning("Adapter %r was trained on other weights of this base (fingerprint %s, loaded %s): it "
                        "attaches, but its recorded numbers do not apply", info.name,
                        str(info.meta.get("base_fingerprint"))[:12], self.base_fingerprint[:12])
        with self.lock:
            try:
                if isinstance(self.model, PeftModel):
                    self.model.load_adapter(str(info.path), adapter_name=info.name, is_trainable=False,
                                            use_safetensors=True)
                else:
                    self.model = PeftModel.from_pretrained(self.base_model, str(info.path), adapter_name=info.name,
                                                           is_trainable=False, use_safetensors=True)
            except Exception as exc:  # noqa: BLE001 - a corrupt file must not take the server down
                raise AdapterError(f"Adapter {info.name!r} at {info.path} could not be loaded: {exc}") from exc
            self.model.eval()
        self.adapters[info.name] = info

    def check_base_match(self, info: AdapterInfo) -> None:
        """AdapterError when the adapter at ``info.path`` was made for another base (LoRA shapes or architecture)
        or its weights cannot be read; nothing is loaded."""
        try:
            self._refuse_other_base(info)
        except AdapterError:
            raise
        except Exception as exc:  # noqa: BLE001 - unreadable weights: refused with a message, never a crash
            raise AdapterError(f"Adapter {info.name!r} at {info.path} could not be read: {exc}") from exc

    def _refuse_other_base(self, info: AdapterInfo) -> None:
        expected_arch = (self.base_model.config.architectures or ["?"])[0]
        meta_arch = info.meta.get("base_architecture")
        problems = _lora_shape_mismatches(self.model, info.path)
        if problems or (meta_arch and meta_arch != expected_arch):
            raise AdapterError(
                f"Adapter {info.name!r} was made for base {info.meta.get('base_model')!r} "
                f"({meta_arch or 'unknown architecture'}), but the loaded base is {self.base_id!r} ({expected_arch}): "
                f"{'; '.join(problems[:3]) or 'architecture differs'}.")

    def detach(self, name: str) -> None:
        with self.lock:
            if name in self.adapters:
                self.model.delete_adapter(name)
                del self.adapters[name]

    def attach_all(self, *roots: Path) -> list[str]:
        """Attach every valid adapter under ``roots``; return messages for those skipped or refused."""
        found, skipped = discover_adapters(*roots)
        for info in found:
            if info.name in self.adapters:
                continue
            try:
                self.attach(info)
            except AdapterError as exc:
                skipped.append(str(exc))
        for message in skipped:
            log.warning(message)
        return skipped
