"""An adapter merged into its base: a full safetensors checkpoint for engines that do not load LoRA adapters.

PEFT's ``merge_and_unload`` folds each LoRA layer's update (scaling * B @ A) into the base layer's weight, on a copy
of the base the caller hands over (the serving model is never touched). The folder is an ordinary Hugging Face
checkpoint: ``config.json`` (nothing of the adapter left in it), ``model.safetensors``, ``generation_config.json``,
the tokenizer with its chat template, and a README saying what it is. It is written into a temporary folder and
renamed into place, like an adapter (``training.saving``), so a crash never leaves half a checkpoint.
"""

from __future__ import annotations

import json
import shutil
import threading
import zipfile
from pathlib import Path
from typing import Any

import torch

from playground.common.files import atomic_write_text, replace_directory, temporary_sibling

# One merge at a time in a process: each holds a full copy of the base (about 0.5 GB for the 135M model in float32)
MERGE_LOCK = threading.Lock()
_LEFTOVER_WORDS = ("adapter", "peft", "lora")
_STORED_SUFFIXES = (".safetensors",)  # weights do not deflate; stored, they zip in a fraction of the time


def merge_adapter(base_model, adapter_dir: Path):
    """``base_model`` (a plain HF model, modified: pass a copy) with the LoRA adapter at ``adapter_dir`` merged into
    its weights: a plain model of the same class, in eval mode, with no PEFT layers left."""
    from peft import PeftModel

    peft_model = PeftModel.from_pretrained(base_model, str(adapter_dir), is_trainable=False, use_safetensors=True)
    merged = peft_model.merge_and_unload()
    for name, _ in merged.named_modules():
        if "lora_" in name:
            raise RuntimeError(f"merging left the LoRA module {name} in the model")
    return merged.eval()


def merged_model_card(name: str, meta: dict[str, Any], base_id: str, base_fingerprint: str | None,
                      dtype: str, parameters: int, weights_origin: str = "") -> str:
    """The README of a merged checkpoint: what it is, what it came from, how to load it."""
    method = str(meta.get("method", "peft")).upper()
    held = meta.get("heldout_metrics") or {}
    lines = [
        "---",
        f"base_model: {base_id}",
        "library_name: transformers",
        "tags:",
        f"- {method.lower()}",
        "- lora-merged",
        "- dpo-kto-playground",
        "---",
        "",
        f"# {name}: a {method} LoRA adapter merged into `{base_id}`",
        "",
        f"A full checkpoint ({parameters / 1e6:.1f}M parameters, {dtype} safetensors): the LoRA adapter `{name}` "
        "of the DPO vs KTO alignment playground, merged into the base weights with PEFT's `merge_and_unload`, so "
        "it serves with any engine that reads Hugging Face checkpoints (vLLM, TGI, llama.cpp's converter, ...) "
        "without loading an adapter. It answers as the base with the adapter attached does.",
        "",
        f"- base model: `{base_id}`" + (f", {weights_origin}" if weights_origin else "")
        + (f" (base weights fingerprint `{base_fingerprint[:16]}`)" if base_fingerprint else ""),
        f"- adapter: {method}, trained on {meta.get('train_rows', '?')} rows of "
        f"`{meta.get('data_file', 'uploaded feedback')}`, {meta.get('steps_done', '?')} steps"
        + (f"; held-out preference accuracy {held.get('preference_accuracy')} on {held.get('pairs')} pairs "
           "(measured with the adapter, on the weights it was trained on)" if held else ""),
        "- the tokenizer (with its chat template) and the generation config are the base's",
        "",
        "```python",
        "from transformers import AutoModelForCausalLM, AutoTokenizer",
        'model = AutoModelForCausalLM.from_pretrained("path/to/this/folder")',
        'tokenizer = AutoTokenizer.from_pretrained("path/to/this/folder")',
        "```",
        "",
    ]
    return "\n".join(lines)


def _clean_config(folder: Path) -> None:
    """Drop anything of an adapter (and the loading path) from the saved config.json."""
    path = folder / "config.json"
    saved = json.loads(path.read_text(encoding="utf-8"))
    kept = {k: v for k, v in saved.items()
            if k != "_name_or_path" and not any(word in k.lower() for word in _LEFTOVER_WORDS)}
    if kept != saved:
        atomic_write_text(path, json.dumps(kept, indent=2, sort_keys=True) + "\n")


def write_merged_checkpoint(base_model, tokenizer, adapter_dir: Path, out_dir: Path, *, base_id: str,
                            base_fingerprint: str | None = None, name: str | None = None,
                            dtype: torch.dtype | None = None, weights_origin: str = "") -> Path:
    """Merge the adapter at ``adapter_dir`` into ``base_model`` (modified: hand over a fresh copy) and write the full
    checkpoint to ``out_dir``: safetensors weights (in ``dtype``, default the base's), config, generation config,
    tokenizer and a model card (naming ``base_id``, where the base's weights came from, ``weights_origin``, and
    their fingerprint). Written into a temporary sibling folder and renamed into place; returns ``out_dir``.
    """
    adapter_dir, out_dir = Path(adapter_dir), Path(out_dir)
    meta_path = adapter_dir / "meta.json"
    meta = json.loads(meta_path.read_text(encoding="utf-8")) if meta_path.is_file() else {}
    merged = merge_adapter(base_model, adapter_dir)
    if dtype is not None:
        merged = merged.to(dtype)
    tmp = temporary_sibling(out_dir)
    try:
        merged.save_pretrained(str(tmp), safe_serialization=True)
        if getattr(merged, "generation_config", None) is not None and not (tmp / "generation_config.json").is_file():
            merged.generation_config.save_pretrained(str(tmp))
        tokenizer.save_pretrained(str(tmp))
        _clean_config(tmp)
        weights_dtype = str(next(merged.parameters()).dtype).replace("torch.", "")
        parameters = sum(p.numel() for p in merged.parameters())
        (tmp / "README.md").write_text(
            merged_model_card(name or adapter_dir.name, meta, base_id, base_fingerprint, weights_dtype, parameters,
                              weights_origin),
            encoding="utf-8")
        replace_directory(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out_dir


def zip_checkpoint(folder: Path, target: Path) -> Path:
    """``folder``'s files in a zip under one top folder named like ``target``'s stem (weights stored, text
    deflated)."""
    folder, target = Path(folder), Path(target)
    with zipfile.ZipFile(target, "w") as archive:
        for path in sorted(folder.iterdir()):
            if path.is_file() and not path.is_symlink():
                compress = zipfile.ZIP_STORED if path.suffix in _STORED_SUFFIXES else zipfile.ZIP_DEFLATED
                archive.write(path, arcname=f"{target.stem}/{path.name}", compress_type=compress)
    return target


def estimated_bytes(model) -> int:
    """Bytes of a merged checkpoint of ``model``'s base (its weights as stored; the tokenizer adds a few MB)."""
    seen: set[int] = set()
    total = 0
    for name, parameter in model.named_parameters():
        if "lora_" in name or id(parameter) in seen:
            continue
        seen.add(id(parameter))
        total += parameter.numel() * parameter.element_size()
    return total
