"""``python -m playground.train --method METHOD --data FILE --out DIR``: a short LoRA fine-tune from a feedback file
(METHOD: dpo, kto, simpo, orpo, apo_zero, apo_down or bco).

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
from playground.common.numbers import TIE_TEXT
from playground.engine import threads
from playground.feedback import FeedbackReport, frame_for_method, read_feedback

EXIT_BAD_INPUT = 2


def build_parser(description: str = "Fine-tune a LoRA adapter (DPO, KTO, SimPO, ORPO, APO, BCO) on a feedback file.",
                 out_help: str = "adapter folder to write (atomically)") -> argparse.ArgumentParser:
    t, lora, loss = config.TRAIN, config.TRAIN.lora, config.TRAIN.loss
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--method", choices=tuple(config.METHOD_FORMATS), required=True,
                        help="dpo, kto (the playground's two), simpo and orpo (no reference model), apo_zero, "
                             "apo_down, bco")
    parser.add_argument("--data", required=True,
                        help="CSV, TSV or JSONL: prompt,chosen,rejected or prompt,completion,label")
    parser.add_argument("--out", required=True, help=out_help)
    parser.add_argument("--intact-rows", action="store_true",
                        help="--data looks cut off or corrupt: train on its intact rows (the report says which)")
    parser.add_argument("--heldout", help="paired file to measure on (default: a held-out split of --data)")
    parser.add_argument("--heldout-fraction", type=float, default=t.held_out_fraction,
                        help="share of --data's prompts kept out of training and measured on when no --heldout is "
                             f"given (files of {t.held_out_min_rows}+ rows; 0 = none)")
    parser.add_argument("--name", help="adapter name recorded in meta.json (default: the folder name)")
    parser.add_argument("--force", action="store_true", help="replace --out if it exists")
    parser.add_argument("--steps", type=int, default=t.steps, help="optimizer steps (0 = use --epochs)")
    parser.add_argument("--epochs", type=float, default=t.epochs)
    parser.add_argument("--batch-size", type=int, default=t.batch_size)
    parser.add_argument("--lr", type=float, default=t.learning_rate)
    parser.add_argument("--warmup-ratio", type=float, default=t.warmup_ratio)
    parser.add_argument("--max-length", type=int, default=t.max_length)
    parser.add_argument("--seed", type=int, default=t.seed)
    parser.add_argument("--beta", type=float, default=None,
                        help="default: the method's own (config.METHOD_BETAS: 0.1; SimPO 2.0)")
    parser.add_argument("--simpo-gamma", type=float, default=loss.simpo_gamma, help="SimPO's target margin")
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
    parser.add_argument("--sft-weight", type=float, default=loss.sft_weight,
                        help="weight of the NLL term on chosen / desirable answers (RPO; 0 = off)")
    parser.add_argument("--no-early-stop", dest="early_stop", action="store_false",
                        default=t.early_stopping.enabled, help="run every planned step (no held-out early stopping)")
    parser.add_argument("--drift-budget", type=float, default=t.early_stopping.drift_budget,
                        help="stop when held-out chosen answers drift further from the base (nats/token; 0 = off)")
    parser.add_argument("--probe-prompt", action="append", default=None, dest="probe_prompts",
                        help="a prompt the adapter answers during the run (repeatable; default: held-out prompts)")
    parser.add_argument("--base-model", help="hub id or local directory (default: the embedded SmolLM2-135M)")
    return parser


def config_from_args(args: argparse.Namespace) -> config.TrainConfig:
    lora = dataclasses.replace(config.TRAIN.lora, r=args.lora_r, alpha=args.lora_alpha, dropout=args.lora_dropout)
    beta = config.METHOD_BETAS[args.method] if args.beta is None else args.beta
    loss = dataclasses.replace(config.TRAIN.loss, beta=beta, simpo_gamma=args.simpo_gamma,
                               dpo_loss_type=args.dpo_loss_type,
                               label_smoothing=args.label_smoothing, kto_loss_type=args.kto_loss_type,
                               desirable_weight=args.desirable_weight, undesirable_weight=args.undesirable_weight,
                               sft_weight=args.sft_weight)
    stopping = dataclasses.replace(config.TRAIN.early_stopping, enabled=args.early_stop,
                                   drift_budget=args.drift_budget)
    return dataclasses.replace(config.TRAIN, method=args.method, steps=args.steps, epochs=args.epochs,
                               batch_size=args.batch_size, learning_rate=args.lr, warmup_ratio=args.warmup_ratio,
                               max_length=args.max_length, seed=args.seed, lora=lora, loss=loss,
                               early_stopping=stopping)


def read_inputs(args: argparse.Namespace, train_config: config.TrainConfig
                ) -> tuple[pd.DataFrame, FeedbackReport, pd.DataFrame | None, str]:
    """(training frame, its report, the held-out pairs, what they are) or :class:`BadInput` with what to print."""
    out = Path(args.out)
    if out.exists() and not args.force:
        raise BadInput(f"error: {out} exists; pass --force to replace it.")
    try:
        report = read_feedback(Path(args.data), intact_rows=args.intact_rows)
    except Exception as exc:  # noqa: BLE001 - the CLI promises no traceback
        raise BadInput(f"error: could not read {args.data}: {exc}") from None
    print(report.summary())
    if not report.trainable:
        raise BadInput("error: the file cannot be trained on (see the errors above).")
    if args.heldout:
        held_report = read_feedback(Path(args.heldout))
        if not held_report.trainable or held_report.format != "paired":
            print(held_report.summary())
            raise BadInput("error: --heldout must be a valid paired file (prompt,chosen,rejected).")
        rows, heldout, source = report.data, held_report.data, f"{len(held_report.data)} pairs of {args.heldout}"
    else:
        from playground.training.data import choose_heldout  # torch: only once the file is known to be good

        try:
            rows, heldout, source, notes = choose_heldout(report, Path(args.data).name, train_config,
                                                          args.heldout_fraction)
        except ValueError as exc:
            raise BadInput(f"error: {exc}") from None
        for note in notes:
            print(f"note: {note}")
    frame, note = frame_for_method(rows, report.format, args.method)
    if note:
        print(f"note: {note}")
    return frame, report, heldout, source


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
    print(threads.describe(), file=sys.stderr)
    train_config = config_from_args(args)
    try:
        frame, report, heldout, heldout_source = read_inputs(args, train_config)
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
             "heldout_source": heldout_source,
             "command": "python -m playground.train " + " ".join(sys.argv[1:] if argv is None else argv)}
    bar, on_step = progress_bar(total)
    result = train(base, tokenizer, frame, train_config, device=device, heldout_frame=heldout, callback=on_step,
                   out_dir=out, extra_meta=extra, on_phase=bar.set_description, probe_prompts=args.probe_prompts)
    bar.close()
    print(run_summary(result.meta))
    return 0


def run_summary(meta: dict) -> str:
    """What a finished run reports: where it was saved, why it stopped, the held-out numbers and the answers."""
    lines = [f"saved {meta.get('name')} after {meta['steps_done']} of {meta['total_steps']} steps in "
             f"{meta['training_seconds']} s"]
    if meta.get("early_stop"):
        lines.append(f"stopped early: {meta['early_stop']['reason']}; kept the adapter of step "
                     f"{meta['early_stop']['best_step']}")
    held = meta.get("heldout_metrics") or {}
    if held:
        lines.append(f"measured on {meta.get('heldout_source') or 'the held-out pairs'}: preference accuracy "
                     f"{held['preference_accuracy']:.3f} (base {TIE_TEXT}), mean margin {held['mean_margin']:.3f}, "
                     f"DPO loss {held['dpo_loss']:.3f} (base 0.693)")
    for name, summary in ((meta.get("answers_eval") or {}).get("summaries") or {}).items():
        lines.append(f"{name:>8}: {summary['mean_words']:.1f} words, repetitive {summary['share_repetitive']:.2f}, "
                     f"distinct-2 {summary['mean_distinct_2']:.2f}, fluency {summary['mean_fluency']:.3f}, "
                     f"ROUGE-L to chosen {summary['mean_rouge_l']:.3f}")
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
