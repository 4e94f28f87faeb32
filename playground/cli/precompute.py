"""``python -m playground.cli.precompute``: score the bundled held-out pairs under the shipped adapters for Inspect."""

from __future__ import annotations

import argparse
import logging
from collections.abc import Sequence
from pathlib import Path

from playground import config
from playground.analysis.datasets import DEFAULT_DATASET, load_heldout
from playground.analysis.precomputed import DEFAULT_DISK_CACHE, save_precomputed
from playground.analysis.scores import score_dataset
from playground.config import VALUES
from playground.objectives.task_metrics import TASK_METRICS


def precompute(data: Path = DEFAULT_DATASET, out: Path = DEFAULT_DISK_CACHE, checkpoints: Path | None = None,
               base_model: str | None = None, variants: Sequence[str] | None = None) -> Path:
    from playground.engine.base_model import resolve_base_model
    from playground.engine.engine import Engine

    engine = Engine.load(resolve_base_model(base_model))
    engine.attach_all(checkpoints or config.REPO_ROOT / "checkpoints")
    wanted = list(variants) if variants else engine.variant_names()
    pairs = load_heldout(data)

    def report(fraction: float, message: str) -> None:
        print(f"[{fraction:5.1%}] {message}", flush=True)

    scores = score_dataset(engine, pairs, wanted, report)
    for metric in TASK_METRICS:
        if metric != "keywords" or VALUES.keywords:
            scores.task_scores(metric)
    try:
        shown = str(Path(data).resolve().relative_to(config.REPO_ROOT))
    except ValueError:
        shown = str(data)
    return save_precomputed(engine, scores, out, dataset_file=shown)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Inspect engine: precompute log-probs for the Inspect tab.")
    parser.add_argument("--precompute", action="store_true", help="score the held-out set under the shipped adapters")
    parser.add_argument("--data", type=Path, default=DEFAULT_DATASET, help="paired CSV (default: bundled held-out)")
    parser.add_argument("--out", type=Path, default=DEFAULT_DISK_CACHE, help="JSON file to write")
    parser.add_argument("--checkpoints", type=Path, default=None, help="adapter root (default: checkpoints/)")
    parser.add_argument("--base-model", default=None, help="hub id or local directory (default: embedded)")
    parser.add_argument("--variants", nargs="*", default=None, help="variants to score (default: all attached)")
    args = parser.parse_args(argv)
    if not args.precompute:
        parser.print_help()
        return 0
    logging.basicConfig(level=logging.INFO)
    path = precompute(args.data, args.out, args.checkpoints, args.base_model, args.variants)
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
