"""``python -m playground.experiments CLAIM --out results.json``: one claim of the source material measured on the
base model (``training.experiments``): every run of the claim trained on a fresh base copy, measured on clean
held-out pairs, and written with the command, data hashes, seeds, settings and versions that reproduce it.

CLAIM is ``compute`` (DPO, KTO, SimPO, ORPO on the same pairs: step time, reference pass, memory), ``unpaired``,
``noise`` or ``imbalance``. ``--pairs`` and ``--heldout`` take the first rows of the demo files (the quick version
on a CPU); ``--into data/claims_results.json`` puts the claim into the combined file the app shows (what the
shipped results record as their command), ``--out`` writes it alone; bad arguments exit with 2.
"""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

EXIT_BAD_INPUT = 2


def build_parser() -> argparse.ArgumentParser:
    from playground.training.experiments import CLAIMS, DEMO_HELDOUT, DEMO_TRAIN

    parser = argparse.ArgumentParser(prog="python -m playground.experiments",
                                     description="Measure one of the source material's claims on the base model.")
    parser.add_argument("claim", choices=tuple(CLAIMS))
    where = parser.add_mutually_exclusive_group(required=True)
    where.add_argument("--out", help="results JSON to write (this claim only)")
    where.add_argument("--into", help="a combined results file (data/claims_results.json) to put this claim in, "
                                      "replacing its earlier runs; the other claims stay as they are")
    parser.add_argument("--steps", type=int, default=12, help="optimiser steps per run (default 12)")
    parser.add_argument("--pairs", type=int, default=0, help="train on the first N demo pairs (0 = all 370)")
    parser.add_argument("--heldout", type=int, default=60, help="measure on the first N held-out pairs (of 120)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0], help="seeds (the noise claim uses them all)")
    parser.add_argument("--rates", type=float, nargs="+", default=[0.0, 0.2, 0.4],
                        help="flip rates of the noise claim (default 0 0.2 0.4)")
    parser.add_argument("--data", default=str(DEMO_TRAIN), help="paired training file (default: the demo pairs)")
    parser.add_argument("--heldout-file", default=str(DEMO_HELDOUT), help="paired held-out file")
    parser.add_argument("--base-model", help="hub id or local directory (default: the embedded SmolLM2-135M)")
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    args = build_parser().parse_args(argv)
    if args.steps < 1 or args.pairs < 0 or args.heldout < 1:
        print("error: --steps and --heldout must be >= 1, --pairs >= 0", file=sys.stderr)
        return EXIT_BAD_INPUT
    from playground.common.files import atomic_write_json, sha256_file
    from playground.feedback import read_feedback
    from playground.training import experiments

    reports = {name: read_feedback(Path(path)) for name, path in (("data", args.data),
                                                                    ("heldout", args.heldout_file))}
    for name, report in reports.items():
        if not report.trainable or report.format != "paired":
            print(f"error: {name} file {getattr(args, name if name == 'data' else 'heldout_file')} must be a "
                  f"usable paired file: {report.summary()}", file=sys.stderr)
            return EXIT_BAD_INPUT
    pairs = reports["data"].data
    pairs = pairs.head(args.pairs).reset_index(drop=True) if args.pairs else pairs
    heldout = reports["heldout"].data.head(args.heldout).reset_index(drop=True)
    specs = experiments.claim_runs(args.claim, pairs, args.steps, tuple(args.seeds), tuple(args.rates))

    from playground.engine.base_model import ModelSourceError, base_model_id, load_base_model, resolve_base_model
    from playground.engine.device import pick_device

    try:
        source = resolve_base_model(args.base_model)
        device = pick_device()
        _, tokenizer = load_base_model(source, device)
    except ModelSourceError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1

    def fresh_base():
        return load_base_model(source, device)[0]

    def progress(done: int, total: int, label: str) -> None:
        print(f"[{done}/{total}] {label}", flush=True)

    records = experiments.run_experiment(specs, fresh_base, tokenizer, device, heldout, progress)
    command = "python -m playground.experiments " + " ".join(shlex.quote(a) for a in argv)
    payload = experiments.results_payload(records, command=command, base=base_model_id(source),
                                          device=device.describe(),
                                          data={"train": sha256_file(args.data),
                                                "heldout": sha256_file(args.heldout_file),
                                                "train_rows": str(len(pairs)), "heldout_rows": str(len(heldout))})
    if args.into:
        from playground.analysis.claims import merge_into

        path = merge_into(Path(args.into), args.claim, payload)
    else:
        path = atomic_write_json(Path(args.out), payload, indent=1, default=str)
    for record in records:
        print(f"{record['label']:<28} acc {record['heldout_accuracy']}  {record['seconds_per_step']} s/step  "
              f"reference {record['reference_seconds']} s  peak {record['peak_memory_mb']} MB")
    print(f"wrote {path}")
    return 0
