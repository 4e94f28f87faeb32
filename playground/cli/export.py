"""``python -m playground.export --method dpo|kto --data FILE --out DIR``: the fine-tune ``playground.train`` would
run, as a folder that runs it with TRL and accelerate (``training.export_trl``), without training here.

It takes the same flags as ``playground.train`` (the same defaults, the same validation and held-out split); bad
files or flags exit with code 2 and the validation report.
"""

from __future__ import annotations

import sys
from pathlib import Path

from playground.cli.train import EXIT_BAD_INPUT, BadInput, build_parser, config_from_args, read_inputs


def main(argv: list[str] | None = None) -> int:
    parser = build_parser("Export a DPO or KTO fine-tune as a TRL + accelerate project (data, train.py, settings).",
                          "project folder to write (train.jsonl, train.py, settings.json, ...)")
    parser.add_argument("--zip", action="store_true", help="also write <out>.zip")
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
