"""``python -m playground.train --method dpo|kto --data FILE --out DIR``: a short LoRA fine-tune from a feedback file.

Bad files or arguments exit with code 2 and the validation report, never a traceback.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import sys
from pathlib import Path

import pandas as pd

from playground import config
from playground.feedback import FeedbackReport, frame_for_method, read_feedback

EXIT_BAD_INPUT = 2


def build_parser() -> argparse.ArgumentParser:
    t, lora, loss = config.TRAIN, config.TRAIN.lora, config.TRAIN.loss
    parser = argparse.ArgumentParser(description="Fine-tune a DPO or KTO LoRA adapter on a feedback file.")
    parser.add_argument("--method", choices=("dpo", "kto"), required=True)
    parser.add_argument("--data", required=True,
                        help="CSV, TSV or JSONL: prompt,chosen,rejected or prompt,completion,label")
    parser.add_argument("--out", required=True, help="adapter folder to write (atomically)")
    parser.add_argument("--heldout", help="paired file for held-out preference accuracy")
    parser.add_argument("--name", help="adapter name recorded in meta.json (default: the folder name)")
    parser.add_argument("--force", action="store_true", help="replace --out if it exists")
    parser.add_argument("--steps", type=int, default=t.steps, help="optimizer steps (0 = use --epochs)")
    parser.add_argument("--epochs", type=float, default=t.epochs)
    parser.add_argument("--batch-size", type=int, default=t.batch_size)
    parser.add_argument("--lr", type=float, default=t.learning_rate)
    parser.add_argument("--warmup-ratio", type=float, default=t.warmup_ratio)
    parser.add_argument("--max-length", type=int, default=t.max_length)
    parser.add_argument("--seed", type=int, default=t.seed)
    parser.add_argument("--beta", type=float, default=loss.beta)
    parser.add_argument("--dpo-variant", dest="dpo_loss_type", default=loss.dpo_loss_type,
                        choices=("sigmoid", "ipo", "hinge", "robust"), help="DPO loss type")
    parser.add_argument("--label-smoothing", type=float, default=loss.label_smoothing)
    parser.add_argument("--kto-variant", dest="kto_loss_type", default=loss.kto_loss_type,
                        choices=("kto", "apo_zero_unpaired"), help="KTO loss type")
    parser.add_argument("--desirable-weight", type=float, default=loss.desirable_weight)
    parser.add_argument("--undesirable-weight", type=float, default=loss.undesirable_weight)
    parser.add_argument("--lora-r", type=int, default=lora.r)
    parser.add_argument("--lora-alpha", type=int, default=lora.alpha)
    parser.add_argument("--lora-dropout", type=float, default=lora.dropout)
    parser.add_argument("--base-model", help="hub id or local directory (default: the embedded SmolLM2-135M)")
    return parser


def config_from_args(args: argparse.Namespace) -> config.TrainConfig:
    lora = dataclasses.replace(config.TRAIN.lora, r=args.lora_r, alpha=args.lora_alpha, dropout=args.lora_dropout)
    loss = dataclasses.replace(config.TRAIN.loss, beta=args.beta, dpo_loss_type=args.dpo_loss_type,
                               label_smoothing=args.label_smoothing, kto_loss_type=args.kto_loss_type,
                               desirable_weight=args.desirable_weight, undesirable_weight=args.undesirable_weight)
    return dataclasses.replace(config.TRAIN, method=args.method, steps=args.steps, epochs=args.epochs,
                               batch_size=args.batch_size, learning_rate=args.lr, warmup_ratio=args.warmup_ratio,
                               max_length=args.max_length, seed=args.seed, lora=lora, loss=loss)


def load_training_frame(path: Path, method: str) -> tuple[pd.DataFrame | None, FeedbackReport, str]:
    """Read and validate ``path`` and convert it to the method's format: (frame or None when unusable, report,
    a note on the conversion)."""
    report = read_feedback(path)
    if not report.trainable:
        return None, report, ""
    frame, note = frame_for_method(report.data, report.format, method)
    return frame, report, note


def read_inputs(args: argparse.Namespace) -> tuple[pd.DataFrame, FeedbackReport, pd.DataFrame | None]:
    """The training frame, its report and the held-out pairs, or :class:`BadInput` with what to print."""
    out = Path(args.out)
    if out.exists() and not args.force:
        raise BadInput(f"error: {out} exists; pass --force to replace it.")
    try:
        frame, report, note = load_training_frame(Path(args.data), args.method)
    except Exception as exc:  # noqa: BLE001 - the CLI promises no traceback
        raise BadInput(f"error: could not read {args.data}: {exc}") from None
    print(report.summary())
    if frame is None:
        raise BadInput("error: the file cannot be trained on (see the errors above).")
    if note:
        print(f"note: {note}")
    heldout = None
    if args.heldout:
        held_report = read_feedback(Path(args.heldout))
        if not held_report.trainable or held_report.format != "paired":
            print(held_report.summary())
            raise BadInput("error: --heldout must be a valid paired file (prompt,chosen,rejected).")
        heldout = held_report.data
    return frame, report, heldout


class BadInput(Exception):
    """A file or flag that cannot be trained on; the message is printed and the CLI exits with 2."""


def progress_bar(total: int):
    """A tqdm bar and the step callback that advances it with the loss, accuracy, margin (and z0 for KTO)."""
    from tqdm import tqdm

    bar = tqdm(total=total, unit="step", dynamic_ncols=True)

    def on_step(metrics) -> None:
        bar.update(1)
        shown = {"loss": metrics.loss, "acc": metrics.accuracy, "margin": metrics.margin}
        if not math.isnan(metrics.z0):
            shown["z0"] = metrics.z0
        bar.set_postfix({k: f"{v:.3f}" for k, v in shown.items()}, refresh=False)

    return bar, on_step


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    train_config = config_from_args(args)
    try:
        frame, report, heldout = read_inputs(args)
    except BadInput as exc:
        print(str(exc), file=sys.stderr)
        return EXIT_BAD_INPUT

    # heavy imports once the input is known to be good
    from playground.engine.base_model import ModelSourceError, base_model_id, load_base_model, resolve_base_model
    from playground.engine.device import pick_device
    from playground.training.data import TrainingInputError, count_steps, validate_train_config
    from playground.training.loop import train

    try:
        validate_train_config(train_config, len(frame))
    except TrainingInputError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    try:
        source = resolve_base_model(args.base_model)
        device = pick_device()
        base, tokenizer = load_base_model(source, device)
    except ModelSourceError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    total = count_steps(len(frame), train_config)
    print(f"base model: {source.describe()}\ndevice: {device.describe()}\n"
          f"training {args.method.upper()} on {len(frame)} rows for {total} steps")
    out = Path(args.out)
    extra = {"name": args.name or out.name, "base_model": base_model_id(source), "data_file": Path(args.data).name,
             "data_sha256": report.sha256,
             "data_rows": {"total": report.rows_total, "usable": report.rows_usable, "trained": len(frame)},
             "command": "python -m playground.train " + " ".join(sys.argv[1:] if argv is None else argv)}
    bar, on_step = progress_bar(total)
    result = train(base, tokenizer, frame, train_config, device=device, heldout_frame=heldout, callback=on_step,
                   out_dir=out, extra_meta=extra, on_phase=bar.set_description)
    bar.close()
    held = result.meta.get("heldout_metrics") or {}
    print(f"saved {result.adapter_dir} in {result.meta['training_seconds']} s")
    if held:
        print(f"held-out preference accuracy {held['preference_accuracy']:.3f} on {held['pairs']} pairs, "
              f"mean margin {held['mean_margin']:.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
