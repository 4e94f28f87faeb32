"""``python -m playground.export --method dpo|kto --data FILE --out DIR``: the fine-tune ``playground.train`` would
run, as a folder that runs it with TRL and accelerate (``training.export_trl``), without training here.

It takes the same flags as ``playground.train`` (the same defaults, the same validation and held-out split); bad
files or flags exit with code 2 and the validation report.

``python -m playground.export --merged ADAPTER --out DIR [--base-model M] [--dtype bfloat16] [--zip] [--force]``
instead writes the adapter (a folder, or the name of a shipped or trained one) merged into the base as a full
safetensors checkpoint with the tokenizer (``training.merge``), for serving with engines that load no adapters. An
adapter that does not attach to the base exits with 2; a base that cannot be loaded with 1.

``python -m playground.export --adapter ADAPTER --out DIR [--zip]`` exports the run an adapter already trained was
made by: the settings its ``meta.json`` records and the rows kept in its folder (or the data file it names, checked by
its SHA-256), as ``export_trl.recorded_training`` finds them. An adapter without either exits with 2.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from playground import config
from playground.cli.train import EXIT_BAD_INPUT, BadInput, build_parser, config_from_args, read_inputs


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if any(arg == "--merged" or arg.startswith("--merged=") for arg in argv):
        return merged_main(argv)
    if any(arg == "--adapter" or arg.startswith("--adapter=") for arg in argv):
        return adapter_main(argv)
    parser = build_parser("Export a DPO or KTO fine-tune as a TRL + accelerate project (data, train.py, settings).",
                          "project folder to write (train.jsonl, train.py, settings.json, ...)")
    parser.add_argument("--zip", action="store_true", help="also write <out>.zip")
    parser.add_argument("--merged", metavar="ADAPTER",
                        help="instead: write ADAPTER merged into the base as a full checkpoint (takes --out, "
                             "--base-model, --dtype, --zip, --force only)")
    parser.add_argument("--adapter", metavar="ADAPTER",
                        help="instead: export the run ADAPTER was trained by (its settings and data, from its "
                             "meta.json and folder; takes --out and --zip only)")
    args = parser.parse_args(argv)
    train_config = config_from_args(args)
    try:
        frame, _report, heldout, source = read_inputs(args, train_config)
    except BadInput as exc:
        print(str(exc), file=sys.stderr)
        return EXIT_BAD_INPUT
    from playground.engine.base_model import ModelSourceError, base_model_id, resolve_base_model
    from playground.training.data import TrainingInputError, validate_train_config
    from playground.training.export_trl import write_trl_project, zip_project

    try:
        validate_train_config(train_config, len(frame))
        base = base_model_id(resolve_base_model(args.base_model))
    except (TrainingInputError, ModelSourceError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    out = Path(args.out)
    written = write_trl_project(out, frame, train_config, base, heldout=heldout,
                                source=f"{Path(args.data).name} ({source or 'no held-out split'})")
    for path in written:
        print(f"wrote {path}")
    if args.zip:
        print(f"wrote {zip_project(out, out.with_suffix('.zip'))}")
    print(f"run it: cd {out} && python train.py   (or: accelerate launch --config_file accelerate_config.yaml "
          "train.py)")
    return 0


def build_merged_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m playground.export --merged",
        description="Merge a LoRA adapter into the base and write a full safetensors checkpoint with the tokenizer.")
    parser.add_argument("--merged", required=True, metavar="ADAPTER",
                        help="adapter folder, or the name of a shipped (checkpoints/) or trained adapter")
    parser.add_argument("--out", required=True, help="checkpoint folder to write (atomically)")
    parser.add_argument("--base-model", help="hub id or local directory (default: the embedded SmolLM2-135M)")
    parser.add_argument("--dtype", choices=("float32", "bfloat16"), help="weights' dtype (default: the base's)")
    parser.add_argument("--zip", action="store_true", help="also write <out>.zip")
    parser.add_argument("--force", action="store_true", help="replace --out if it exists")
    return parser


def adapter_folder(value: str) -> Path | None:
    """An adapter folder named by path, or by name under checkpoints/ or the data dir's adapters/."""
    for candidate in (Path(value), config.REPO_ROOT / "checkpoints" / value, config.data_dir() / "adapters" / value):
        if candidate.is_dir():
            return candidate
    return None


def merged_main(argv: list[str]) -> int:
    args = build_merged_parser().parse_args(argv)
    out = Path(args.out)
    if out.exists() and not args.force:
        print(f"error: {out} exists; pass --force to replace it.", file=sys.stderr)
        return EXIT_BAD_INPUT
    folder = adapter_folder(args.merged)
    if folder is None:
        print(f"error: no adapter folder {args.merged!r} (give a path, or the name of a shipped or trained adapter).",
              file=sys.stderr)
        return EXIT_BAD_INPUT
    import torch

    from playground.engine import fingerprint
    from playground.engine.adapters import AdapterError, _lora_shape_mismatches, validate_adapter_dir
    from playground.engine.base_model import (
        ModelSourceError,
        base_model_id,
        load_base_model,
        resolve_base_model,
        weights_origin,
    )
    from playground.engine.device import DeviceChoice
    from playground.training.merge import write_merged_checkpoint, zip_checkpoint

    try:
        meta = validate_adapter_dir(folder)
    except AdapterError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    try:
        source = resolve_base_model(args.base_model)
        base, tokenizer = load_base_model(source, DeviceChoice(torch.device("cpu"), torch.float32, None))
    except ModelSourceError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    problems = _lora_shape_mismatches(base, folder)
    if problems:
        print(f"error: {folder} was made for another base than {base_model_id(source)}: {'; '.join(problems[:3])}",
              file=sys.stderr)
        return EXIT_BAD_INPUT
    weights = fingerprint.weights_fingerprint(base)
    status = fingerprint.compare(meta.get("base_fingerprint"), weights)
    if status != fingerprint.SAME:
        print(f"note: {folder.name}: {fingerprint.note(status)}")
    dtype = getattr(torch, args.dtype) if args.dtype else None
    written = write_merged_checkpoint(base, tokenizer, folder, out, base_id=base_model_id(source),
                                      base_fingerprint=weights, name=folder.name, dtype=dtype,
                                      weights_origin=weights_origin(source))
    size = sum(p.stat().st_size for p in written.iterdir() if p.is_file())
    print(f"wrote {written} ({size / 2**20:,.0f} MiB): {folder.name} merged into {base_model_id(source)}")
    if args.zip:
        print(f"wrote {zip_checkpoint(written, written.with_suffix('.zip'))}")
    print(f"load it: AutoModelForCausalLM.from_pretrained({str(written)!r})")
    return 0


def adapter_main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m playground.export --adapter",
                                     description="Export the run an adapter was trained by as a TRL + accelerate "
                                                 "project.")
    parser.add_argument("--adapter", required=True, help="adapter folder, or the name of a shipped or trained one")
    parser.add_argument("--out", required=True, help="project folder to write")
    parser.add_argument("--zip", action="store_true", help="also write <out>.zip")
    args = parser.parse_args(argv)
    folder = adapter_folder(args.adapter)
    if folder is None:
        print(f"error: no adapter folder {args.adapter!r} (give a path, or the name of a shipped or trained "
              "adapter).", file=sys.stderr)
        return EXIT_BAD_INPUT
    from playground.engine.adapters import AdapterError, validate_adapter_dir
    from playground.training.export_trl import recorded_training, write_trl_project, zip_project
    from playground.training.jobs import train_config_from_json

    try:
        meta = validate_adapter_dir(folder)
        if not isinstance(meta.get("hyperparameters"), dict):
            raise ValueError(f"{folder.name} records no training settings (a plain PEFT adapter): export with "
                             "--method and --data instead.")
        frame, heldout, source = recorded_training(folder, meta, (config.REPO_ROOT / "data", config.data_dir()),
                                                   config.REPO_ROOT / "data" / "demo_pairs_heldout.csv")
    except (AdapterError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    out = Path(args.out)
    train_config = train_config_from_json(meta["hyperparameters"])
    for path in write_trl_project(out, frame, train_config, str(meta.get("base_model") or config.HUB_BASE_MODEL),
                                  heldout=heldout, source=source):
        print(f"wrote {path}")
    if args.zip:
        print(f"wrote {zip_project(out, out.with_suffix('.zip'))}")
    return 0
