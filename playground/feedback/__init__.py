"""Files in, frames out: the feedback formats, reading and validating a file, converting, and the vote store.

``schema`` says what a file must look like, ``reading`` turns bytes into a :class:`FeedbackReport` (never raising on
bad input), ``validation`` checks columns and rows, ``conversion`` moves between paired and unpaired data,
``csv_safe`` writes spreadsheet-safe CSV, ``votes`` stores the Compare tab's votes. No transformers, peft or gradio.
The names most callers need are re-exported here.
"""

from playground.feedback.conversion import (
    frame_for_method,
    label_counts,
    paired_to_unpaired,
    split_heldout,
    unpaired_to_paired,
)
from playground.feedback.csv_safe import neutralise_formula, to_safe_csv, votes_to_csv
from playground.feedback.reading import demo_file, read_feedback, read_heldout_pairs
from playground.feedback.schema import (
    ALIASES,
    KNOWN_COLUMNS,
    METADATA_COLUMNS,
    MIN_ROWS,
    OPTIONAL_COLUMNS,
    PAIRED_COLUMNS,
    REQUIRED,
    UNPAIRED_COLUMNS,
    ConversionStats,
    FeedbackReport,
    Issue,
    parse_label,
    prompt_key,
)

__all__ = [
    "ALIASES", "KNOWN_COLUMNS", "METADATA_COLUMNS", "MIN_ROWS", "OPTIONAL_COLUMNS", "PAIRED_COLUMNS", "REQUIRED",
    "UNPAIRED_COLUMNS", "ConversionStats", "FeedbackReport", "Issue", "demo_file", "frame_for_method", "label_counts",
    "neutralise_formula", "paired_to_unpaired", "parse_label", "prompt_key", "read_feedback", "read_heldout_pairs",
    "split_heldout", "to_safe_csv", "unpaired_to_paired", "votes_to_csv",
]
