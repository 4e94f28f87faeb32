"""Saving an adapter: PEFT's files, meta.json and a model card, written into a temporary folder and renamed."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

from playground.common.files import atomic_write_text, remove_leftovers, replace_directory, temporary_sibling


def model_card(meta: dict[str, Any]) -> str:
    """The adapter's README.md: what it is, what it was trained on, with which settings, and how it scored."""
    held = meta.get("heldout_metrics") or {}
    hp = meta.get("hyperparameters", {})
    weights = (f" (base weights fingerprint `{str(meta['base_fingerprint'])[:16]}`)" if meta.get("base_fingerprint")
               else "")
    lines = [
        f"# {meta.get('name', 'adapter')}: a {meta['method'].upper()} LoRA adapter",
        "",
        f"Base model: `{meta.get('base_model')}`{weights}. Trained with the DPO vs KTO alignment playground on "
        f"{meta.get('train_rows')} rows of `{meta.get('data_file', 'uploaded feedback')}` "
        f"(sha256 `{str(meta.get('data_sha256', ''))[:16]}`).",
        "",
        f"- steps: {meta.get('steps_done')} of {meta.get('total_steps')}, batch size {hp.get('batch_size')}, "
        f"learning rate {hp.get('learning_rate')}, beta {hp.get('loss', {}).get('beta')}",
        f"- LoRA: r={hp.get('lora', {}).get('r')}, alpha={hp.get('lora', {}).get('alpha')}",
        f"- device: {meta.get('device')}, {meta.get('training_seconds')} s",
    ]
    if held:
        lines.append(f"- held-out preference accuracy: {held.get('preference_accuracy')} on {held.get('pairs')} pairs, "
                     f"mean implied-reward margin {held.get('mean_margin')}")
    lines += ["", "Load it with `PeftModel.from_pretrained(base, path)`; the full record is in `meta.json`.", ""]
    return "\n".join(lines)


def save_adapter_atomically(model, out_dir: Path, meta: dict[str, Any], *, overwrite: bool = True) -> Path:
    """Write adapter + meta.json + README.md into a temporary sibling folder, then rename it into place.

    A crash at any point leaves either the old folder or the new one, never half an adapter; leftovers of a crash
    are dot-folders the registry ignores and :func:`clean_stale_tmp` removes. ``adapter_config.json`` names
    ``meta["base_model"]`` (the base's hub id) as ``base_model_name_or_path``, not the local folder PEFT saw the base
    loaded from, so ``AutoPeftModelForCausalLM.from_pretrained(folder)`` works on any machine.
    """
    out_dir = Path(out_dir)
    if out_dir.exists() and not overwrite:
        raise FileExistsError(f"{out_dir} exists")
    tmp = temporary_sibling(out_dir)
    try:
        model.save_pretrained(str(tmp), safe_serialization=True)
        if isinstance(meta.get("base_model"), str) and meta["base_model"]:
            name_base_model(tmp, meta["base_model"])
        (tmp / "meta.json").write_text(json.dumps(meta, indent=1, sort_keys=False, allow_nan=False) + "\n",
                                       encoding="utf-8")
        (tmp / "README.md").write_text(model_card(meta), encoding="utf-8")
        for leftover in tmp.iterdir():  # PEFT may nest under the adapter name; keep the folder flat
            if leftover.is_dir():
                raise RuntimeError(f"unexpected nested folder {leftover.name} in saved adapter")
        replace_directory(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out_dir


def name_base_model(folder: Path, base_model: str) -> None:
    """Set ``base_model_name_or_path`` in ``folder``'s adapter_config.json (written the way PEFT writes it)."""
    path = Path(folder) / "adapter_config.json"
    adapter_config = json.loads(path.read_text(encoding="utf-8"))
    adapter_config["base_model_name_or_path"] = base_model
    atomic_write_text(path, json.dumps(adapter_config, indent=2, sort_keys=True))


def clean_stale_tmp(root: Path) -> list[str]:
    """Remove half-written folders a crashed save left under ``root``; return their names.

    A crash between the two renames of ``replace_directory`` (a save over an existing adapter) leaves the old adapter
    aside as ``.old-<name>-XXXX`` and nothing at ``<name>``; removing every dot-folder then lost the adapter
    altogether. The old one is complete, so it is put back first; the new ``.tmp-`` one cannot be told from a half
    written folder and goes with the rest.
    """
    root = Path(root)
    for aside in sorted(root.glob(".old-*")) if root.is_dir() else ():
        name = aside.name[len(".old-"):].rpartition("-")[0]  # .old-<name>-<mkdtemp suffix>
        if aside.is_dir() and name and not (root / name).exists():
            os.replace(aside, root / name)
    return remove_leftovers(root)
