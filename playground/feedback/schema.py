"""What a feedback file must look like and what reading one reports: columns, label spellings, issues, the report.

Formats (the same column names as TRL's datasets, so files move between the two):

* paired:   ``prompt, chosen, rejected``
* unpaired: ``prompt, completion, label``; a label is true/false, 1/0, yes/no, y/n, good/bad, up/down,
  thumbs up/down or the emoji 👍/👎 (any skin tone, with or without a variation selector), case-insensitive.
* optional: ``system`` (a system prompt) and ``reference`` (a reference answer for task metrics).
  ``id``, ``category``, ``style`` and ``rejected_style`` are kept as metadata; other columns are ignored with a warning.
* a prompt is plain text or a JSON list of chat messages ``[{"role": "user", "content": "..."}]``.

Row numbers are the ones a spreadsheet shows: the header is row 1, so data row i (0-based) is row i + 2. JSON Lines
files are numbered by line (the first line is line 1), JSON arrays by record (1-based).
"""

from __future__ import annotations

import json
import re
import unicodedata
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import pandas as pd

PAIRED_COLUMNS = ("prompt", "chosen", "rejected")
UNPAIRED_COLUMNS = ("prompt", "completion", "label")
OPTIONAL_COLUMNS = ("system", "reference")
METADATA_COLUMNS = ("id", "category", "style", "rejected_style")
REQUIRED = {"paired": PAIRED_COLUMNS, "unpaired": UNPAIRED_COLUMNS}
MIN_ROWS = {"paired": 1, "unpaired": 2}
KNOWN_COLUMNS = ("prompt", "chosen", "rejected", "completion", "label", *OPTIONAL_COLUMNS)
ROLES = ("system", "user", "assistant")
FORMULA_PREFIXES = ("=", "+", "-", "@", "\t", "\r")
DELIMITERS = (",", ";", "\t", "|")
ROW_CONVENTION = "Row numbers are as a spreadsheet shows them: the header is row 1, so the first data row is row 2."
LINE_CONVENTION = "Line numbers count every line of the file, starting at 1."
LABEL_HELP = "Use true/false, 1/0, yes/no, good/bad, up/down or 👍/👎."


# Common names for the canonical columns: only used to suggest a rename, never applied silently.
ALIASES = {
    "instruction": "prompt",
    "question": "prompt",
    "query": "prompt",
    "input": "prompt",
    "context": "prompt",
    "response": "completion",
    "output": "completion",
    "answer": "completion",
    "text": "completion",
    "preferred": "chosen",
    "accepted": "chosen",
    "winner": "chosen",
    "good": "chosen",
    "better": "chosen",
    "dispreferred": "rejected",
    "loser": "rejected",
    "bad": "rejected",
    "worse": "rejected",
    "rating": "label",
    "vote": "label",
    "votes": "label",
    "thumbs": "label",
    "feedback": "label",
    "desirable": "label",
    "score": "label",
    "kto_label": "label",
    "system_prompt": "system",
    "ideal": "reference",
    "gold": "reference",
}


_TRUE = {"true", "t", "1", "1.0", "yes", "y", "good", "up", "thumbs up", "thumbsup", "👍", "desirable", "positive"}
_FALSE = {
    "false",
    "f",
    "0",
    "0.0",
    "no",
    "n",
    "bad",
    "down",
    "thumbs down",
    "thumbsdown",
    "👎",
    "undesirable",
    "negative",
}


_EMOJI_NOISE = re.compile("[\ufe0e\ufe0f\U0001f3fb-\U0001f3ff\u200d]")
Severity = Literal["error", "warning"]


@dataclass(frozen=True)
class Issue:
    """One problem found in a file. ``row`` is None for a file- or column-level issue.

    ``unit`` says how ``row`` counts: "row" (spreadsheet row, header = row 1), "line" (JSON Lines) or "record"
    (a JSON array, 1-based). ``code`` is a stable machine-readable kind (e.g. "empty_cell", "bad_label").
    """
    severity: Severity
    row: int | None
    column: str | None
    message: str
    code: str = ""
    unit: str = "row"

    @property
    def is_error(self) -> bool:
        return self.severity == "error"

    def __str__(self) -> str:
        where = []
        if self.row is not None:
            where.append(f"{self.unit.capitalize()} {self.row}")
        if self.column is not None:
            where.append(f"{'column' if where else 'Column'} '{self.column}'")
        return f"{', '.join(where)}: {self.message}" if where else self.message


INTACT_ROWS_HOW = ("tick 'Train on the intact rows' under the file, pass --intact-rows on the command line, or "
                   "intact_rows=True in the API")


@dataclass
class FeedbackReport:
    """Everything :func:`read_feedback` learnt about a file.

    ``data`` holds the usable rows, normalised: the canonical columns of ``format`` (paired: prompt, chosen,
    rejected; unpaired: prompt, completion, label as bool), then ``system`` / ``reference`` / metadata columns when
    the file had them, then ``row`` (where the row came from, in ``row_unit`` numbering). A prompt is a str or a
    list of ``{"role", "content"}`` dicts. ``data`` is empty whenever the file has a file-level error.

    The verdict follows the words: every *error* blocks training (:attr:`trainable` is True only without one). A
    row the checks drop is a *warning* (:meth:`drop`, counted in :attr:`dropped_rows`). Damage that suggests the
    file itself is cut off or corrupt (:meth:`damage`: an unparseable JSON line, an unterminated quote, NUL bytes,
    a short last row) is an error, unless the reader was asked for the intact rows (``intact_rows``), which turns it
    into a warning: the intact rows are then trained on because the user said so.
    """
    format: Literal["paired", "unpaired"] | None = None
    rows_total: int = 0
    rows_usable: int = 0
    issues: list[Issue] = field(default_factory=list)
    encoding: str = "utf-8"
    delimiter: str | None = None
    file_type: str | None = None  # "csv" | "jsonl" | "json"
    filename: str | None = None
    sha256: str | None = None
    row_unit: str = "row"
    data: pd.DataFrame = field(default_factory=pd.DataFrame)
    intact_rows: bool = False  # the user chose to train on the intact rows of a damaged file
    dropped_rows: list[int] = field(default_factory=list)  # rows the checks dropped (warnings), file order

    @property
    def errors(self) -> list[Issue]:
        return [i for i in self.issues if i.severity == "error"]

    @property
    def warnings(self) -> list[Issue]:
        return [i for i in self.issues if i.severity == "warning"]

    @property
    def file_errors(self) -> list[Issue]:
        """Errors that concern the whole file (no row, not damage): any of them makes the file unusable."""
        return [i for i in self.issues if i.severity == "error" and i.row is None and not is_damage(i.code)]

    @property
    def damage_issues(self) -> list[Issue]:
        """The signs that the file is cut off or corrupt (errors, or warnings once the intact rows were chosen)."""
        return [i for i in self.issues if is_damage(i.code)]

    @property
    def damaged(self) -> bool:
        return bool(self.damage_issues)

    @property
    def trainable(self) -> bool:
        """True when no issue is an error (a row the checks dropped is a warning) and enough rows are usable."""
        return not self.errors and self.rows_usable >= MIN_ROWS.get(self.format or "", 1)

    @property
    def intact_rows_available(self) -> bool:
        """True when damage is the only thing that blocks training, so the intact rows could be trained on."""
        errors = self.errors
        return (bool(errors) and all(is_damage(i.code) for i in errors)
                and self.rows_usable >= MIN_ROWS.get(self.format or "", 1))

    def _add(
        self, severity: Severity, message: str, *, row: int | None = None, column: str | None = None, code: str = ""
    ) -> None:
        self.issues.append(Issue(severity, row, column, message, code, self.row_unit))

    def error(self, message: str, **kw: Any) -> None:
        self._add("error", message, **kw)

    def warn(self, message: str, **kw: Any) -> None:
        self._add("warning", message, **kw)

    def drop(self, message: str, *, row: int, **kw: Any) -> None:
        """A row the checks drop: a warning on that row (the rest of the file still trains)."""
        self._add("warning", message, row=row, **kw)
        if row not in self.dropped_rows:
            self.dropped_rows.append(row)

    def damage(self, message: str, *, code: str, row: int | None = None, **kw: Any) -> None:
        """A sign that the file is cut off or corrupt: an error, or a warning when the intact rows were chosen.
        ``code`` must start with ``damaged_``."""
        assert is_damage(code), code
        if self.intact_rows:
            self._add("warning", message + " (You chose to train on the intact rows.)",
                      row=row, code=code, **kw)
        else:
            self._add("error", message, row=row, code=code, **kw)
        if row is not None and row not in self.dropped_rows:
            self.dropped_rows.append(row)

    def verdict(self) -> str:
        """One line that says whether the file can be trained on, and why not; the CLI's exit code, the UI's Start
        button and the API's ``trainable`` all follow :attr:`trainable`, and so do these words."""
        n_err, n_warn = len(self.errors), len(self.warnings)
        counts = f"{count_noun(n_err, 'error')}, {count_noun(n_warn, 'warning')}"
        if self.trainable:
            rows = f"{self.rows_usable} of {count_noun(self.rows_total, 'data row')}"
            if self.damaged:
                return (f"can be trained on the {rows} that are intact, as you chose; the file looks cut off or "
                        f"corrupt ({counts}).")
            return f"can be trained on ({rows} usable; {counts})."
        if self.intact_rows_available:
            first = self.damage_issues[0]
            at = f" at {first.unit} {first.row}" if first.row is not None else ""
            n = self.rows_usable
            return (f"cannot be trained on as it is ({counts}): the file looks cut off or corrupt{at}. Fix the file, "
                    f"or choose to train on the {n} intact {'row' if n == 1 else 'rows'}: {INTACT_ROWS_HOW}.")
        return f"cannot be trained on ({counts}); fix the first error below."

    def summary(self, max_per_kind: int = 5) -> str:
        """A multi-line report for people: what was read, whether it can be trained on, then errors and warnings.

        At most ``max_per_kind`` issues of one kind (``Issue.code``) are listed; the rest are counted.
        """
        lines = []
        if self.filename:
            lines.append(f"File: {self.filename}" + (f"  (sha256 {self.sha256[:12]}…)" if self.sha256 else ""))
        if self.format:
            cols = ", ".join(REQUIRED[self.format])
            how = [{"csv": "CSV", "jsonl": "JSON Lines", "json": "JSON"}.get(self.file_type or "", "?")]
            if self.delimiter:
                how.append("delimiter " + ("tab" if self.delimiter == "\t" else repr(self.delimiter)))
            how.append(f"encoding {self.encoding}")
            lines.append(f"Format: {self.format} ({cols}); " + ", ".join(how))
        else:
            lines.append("Format: not recognised")
        dropped = self.rows_total - self.rows_usable
        where = ""
        if self.dropped_rows:
            shown = ", ".join(str(r) for r in sorted(self.dropped_rows)[:10])
            unit = self.row_unit + ("s" if len(self.dropped_rows) > 1 else "")
            where = f" ({unit} {shown}{', …' if len(self.dropped_rows) > 10 else ''})"
        lines.append(f"Rows: {count_noun(self.rows_total, 'data row')}, {self.rows_usable} usable, {dropped} "
                     f"dropped{where}")
        lines.append("Result: " + self.verdict())
        for title, issues in (("Errors", self.errors), ("Warnings", self.warnings)):
            if not issues:
                continue
            lines.append(f"{title} ({len(issues)}):")
            shown_per: dict[str, int] = {}
            hidden: dict[str, int] = {}
            for issue in issues:
                key = issue.code or issue.message
                if shown_per.get(key, 0) < max_per_kind:
                    shown_per[key] = shown_per.get(key, 0) + 1
                    lines.append(f"  - {issue}")
                else:
                    hidden[key] = hidden.get(key, 0) + 1
            for key, n in hidden.items():
                lines.append(f"  … and {n} more of the same kind ({key})")
        if any(i.row is not None for i in self.issues):
            lines.append(LINE_CONVENTION if self.row_unit == "line" else ROW_CONVENTION)
        return "\n".join(lines)


def is_damage(code: str) -> bool:
    """Whether an issue code is one of the signs that a file is cut off or corrupt (``FeedbackReport.damage``)."""
    return code.startswith("damaged_")


@dataclass(frozen=True)
class ConversionStats:
    """What :func:`unpaired_to_paired` could and could not pair."""
    pairs: int = 0
    prompts: int = 0
    prompts_paired: int = 0
    prompts_only_desirable: int = 0
    prompts_only_undesirable: int = 0
    unused_desirable: int = 0  # desirable completions left without an undesirable partner
    unused_undesirable: int = 0

    def __str__(self) -> str:
        unused = self.unused_desirable + self.unused_undesirable
        return (
            f"Made {self.pairs} pairs from {self.prompts_paired} of {self.prompts} prompts. "
            f"{self.prompts_only_desirable} prompts had only desirable and {self.prompts_only_undesirable} only "
            f"undesirable completions; {unused} completions could not be paired "
            f"({self.unused_desirable} desirable, {self.unused_undesirable} undesirable)."
        )


class StopReading(Exception):
    """Raised internally after a file-level error that ends reading."""


def parse_label(value: Any) -> bool | None:
    """True/False for an accepted label spelling, None otherwise (see the module docstring for the spellings)."""
    if isinstance(value, bool):
        return value
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return {1: True, 0: False}.get(value) if value in (0, 1) else None
    if not isinstance(value, str):
        return None
    text = _EMOJI_NOISE.sub("", unicodedata.normalize("NFC", value)).strip().lower()
    text = re.sub(r"[\s_\-]+", " ", text)
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    return None


def prompt_key(prompt: Any) -> str:
    """A hashable key for a prompt that is text or a list of chat messages (JSON with sorted keys)."""
    return json.dumps(prompt, ensure_ascii=False, sort_keys=True) if not isinstance(prompt, str) else prompt


def cell_text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, (list, dict)):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, (bool, np.bool_)):
        return "true" if value else "false"
    if pd.api.types.is_scalar(value) and pd.isna(value):
        return ""
    return str(value)


def normalise_column_name(name: Any) -> str:
    return re.sub(r"[\s\-]+", "_", str(name).replace("\ufeff", "").strip().lower())


def count_noun(count: int, noun: str) -> str:
    return f"{count:,} {noun}{'' if count == 1 else 's'}"


def same_text(a: str, b: str) -> bool:
    return " ".join(a.split()).casefold() == " ".join(b.split()).casefold()
