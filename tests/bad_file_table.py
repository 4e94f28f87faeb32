"""The bad-file catalogue: every mistake a user makes has a small file in ``tests/bad_files`` and the message it must
get. Shared by the reader's tests and the system tests that upload the same files through the UI."""

from pathlib import Path

BAD = Path(__file__).resolve().parent / "bad_files"

BAD_FILES = {
    # file: (severity, code, expected substring, still trainable?). A row the checks drop is a warning (the rest
    # trains); every error blocks training.
    "empty.csv": ("error", "empty", "The file is empty", False),
    "whitespace_only.csv": ("error", "empty", "The file is empty", False),
    "header_only.csv": ("error", "no_rows", "has a header but no data rows", False),
    "missing_column.csv": ("error", "missing_column", "Missing column 'rejected'", False),
    "misspelled_column.csv": ("error", "missing_column", "'rejectd' looks like it is meant to be 'rejected'", False),
    "alias_column.csv": ("error", "missing_column", "'instruction' looks like it is meant to be 'prompt'", False),
    "no_header.csv": ("error", "missing_column", "No known columns found", False),
    "duplicate_column.csv": ("error", "duplicate_column", "appears more than once", False),
    "both_formats.csv": ("error", "both_formats", "columns of both formats", False),
    "unknown_column.csv": ("warning", "unused_column", "not used and is ignored", True),
    "empty_cell.csv": ("warning", "empty_cell", "Row 2, column 'chosen': The cell is empty", True),
    "empty_label.csv": ("warning", "empty_cell", "Row 3, column 'label': The label is empty", True),
    "duplicate_rows.csv": ("warning", "duplicate_row", "Row 3: This row repeats row 2", True),
    "same_text.csv": ("warning", "same_text", "chosen and rejected texts are identical", False),
    "swapped_pair.csv": ("warning", "contradiction", "swaps chosen and rejected compared with row 2", False),
    "bad_label.csv": ("warning", "bad_label", "Row 3, column 'label': 'maybe' is not a recognised label", True),
    "contradicting_labels.csv": ("warning", "contradiction", "labelled true in row 2 and false here", False),
    "too_few_unpaired.csv": ("error", "too_few_rows", "at least 2 usable rows", False),
    "one_label.csv": ("warning", "one_label", "Every usable row is labelled desirable", True),
    "cell_count.csv": ("warning", "cell_count", "must be wrapped in double quotes", True),
    "formula.csv": ("warning", "formula", "may run such a cell as a formula", True),
    "bom.csv": ("warning", "bom", "byte order mark", True),
    "cp1252.csv": ("warning", "encoding", "read as Windows-1252", True),
    "binary_xlsx.csv": ("error", "binary", "looks like a ZIP archive", False),
    "binary_nul.csv": ("error", "binary", "contains NUL bytes", False),
    "binary_control.csv": ("error", "binary", "full of control characters", False),
    "bad_json.jsonl": ("error", "damaged_json", "Line 2: This line is not valid JSON", False),
    "not_object.jsonl": ("warning", "bad_json", "Line 2: This line holds a JSON list, not an object", True),
    "bad_array.json": ("error", "bad_json", "The file is not valid JSON", False),
    "bad_role.jsonl": ("warning", "bad_messages", "message 1 has role 'bot'", False),
    "assistant_last.jsonl": ("warning", "bad_messages", "it must be the user's turn", False),
    "empty_message.jsonl": ("warning", "bad_messages", "has no text in 'content'", False),
    "cut_last_line.jsonl": ("error", "damaged_json", "Line 3: This line is not valid JSON", False),
    "cut_last_row.csv": ("error", "damaged_last_row", "Row 4: The last row has 2 cells but the header has 3", False),
    "unterminated_quote.csv": ("error", "damaged_quote", "Row 3: A quoted cell starts in this row and never ends",
                               False),
    "nul_tail.csv": ("error", "damaged_nul", "The file ends in 2,048 NUL bytes", False),
    "bad_messages.csv": (
        "warning",
        "bad_messages",
        "looks like a JSON list of chat messages but is not valid JSON",
        False,
    ),
}

# The files that look cut off or corrupt: how many intact rows each offers to train on (``intact_rows=True``).
DAMAGED_FILES = {"bad_json.jsonl": 1, "cut_last_line.jsonl": 2, "cut_last_row.csv": 2, "unterminated_quote.csv": 1,
                 "nul_tail.csv": 2}
