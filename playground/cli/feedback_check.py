"""``python -m playground.feedback FILE``: print a feedback file's report; exit 0 if it can be trained on, else 1."""

from __future__ import annotations

import argparse
import sys

from playground.config import FEEDBACK, FeedbackLimits
from playground.feedback.reading import read_feedback


def main(argv: list[str] | None = None) -> int:
    """``python -m playground.feedback FILE``: print the report; exit 0 if the file can be trained on, else 1."""
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.reconfigure(errors="replace")  # type: ignore[union-attr]
        except Exception:
            pass
    parser = argparse.ArgumentParser(
        prog="python -m playground.feedback", description="Check a feedback file (CSV, TSV or JSONL) before training."
    )
    parser.add_argument("file", help="the file to check")
    parser.add_argument("--max-chars", type=int, default=None, help="truncate cells longer than this")
    parser.add_argument("--max-rows", type=int, default=None, help=f"row limit (default {FEEDBACK.max_rows})")
    parser.add_argument("--max-bytes", type=int, default=None, help=f"size limit (default {FEEDBACK.max_bytes})")
    parser.add_argument("--intact-rows", action="store_true",
                        help="a file that looks cut off or corrupt: accept its intact rows (exit 0 when they train)")
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help exits 0; a usage error is reported by argparse and exits 1 here
        return 0 if exc.code in (0, None) else 1
    try:
        limits = FeedbackLimits(
            max_bytes=args.max_bytes or FEEDBACK.max_bytes,
            max_rows=args.max_rows or FEEDBACK.max_rows,
            max_cell_chars=FEEDBACK.max_cell_chars,
        )
        report = read_feedback(args.file, limits=limits, max_chars=args.max_chars, intact_rows=args.intact_rows)
        print(report.summary())
        return 0 if report.trainable else 1
    except KeyboardInterrupt:
        print("Interrupted.", file=sys.stderr)
        return 1
    except Exception as exc:
        print(f"Could not check {args.file}: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
