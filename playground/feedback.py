"""Read, validate and convert feedback files: paired (DPO) and unpaired (KTO) preference data.

Formats (DESIGN.md section 4; the same column names as TRL's datasets):

* paired:   ``prompt, chosen, rejected``
* unpaired: ``prompt, completion, label``; a label is true/false, 1/0, yes/no, y/n, good/bad, up/down,
  thumbs up/down or the emoji 👍/👎 (any skin tone, with or without a variation selector), case-insensitive.
* optional: ``system`` (a system prompt) and ``reference`` (a reference answer for task metrics).
  ``id``, ``category``, ``style`` and ``rejected_style`` are kept as metadata; other columns are ignored with a warning.
* a prompt is plain text or a JSON list of chat messages ``[{"role": "user", "content": "..."}]``.

Files: CSV (delimiter , ; tab or | detected from the header), TSV, JSON Lines and a JSON array of objects, in UTF-8
(a BOM is removed), UTF-16 with a BOM, or a legacy 8-bit encoding (read as Windows-1252, with a warning).

Rules (documented here because the UI and the CLI both repeat them):

* Row numbers are the ones a spreadsheet shows: the header is row 1, so data row i (0-based) is row i + 2.
  JSON Lines files are numbered by line (the first line is line 1).
* An *error* on a row drops that row; an error without a row (a file-level error) makes the file unusable.
  *Warnings* never drop anything except duplicate rows (the later copy is dropped).
* A file can be trained on (``FeedbackReport.trainable``) when it has no file-level error; a file-level error is
  added when fewer than ``MIN_ROWS`` usable rows remain (paired: 1 pair, unpaired: 2 rows, which KTO's batch
  reference point needs).
* Limits (``playground.config.FeedbackLimits``): the byte size is checked before anything is read or parsed, the
  row count while parsing (parsing stops at the first row over the cap), and cells longer than the cell limit are
  truncated with a warning. A caller with a tokenizer passes ``count_tokens`` and ``max_tokens`` too.

Every CSV the app writes goes through :func:`to_safe_csv` (or :func:`votes_to_csv`), which neutralises cells that a
spreadsheet would run as a formula by prefixing a single quote, as OWASP recommends. Reading reverses it: a cell
that starts with a single quote followed by a formula character loses the quote, so exports round-trip.
"""

from __future__ import annotations

import argparse
import codecs
import csv
import difflib
import hashlib
import io
import json
import numbers
import os
import re
import sys
import unicodedata
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd

from playground.config import FEEDBACK, REPO_ROOT, FeedbackLimits

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
_MAGIC = (
    (b"PK\x03\x04", "a ZIP archive (an Excel .xlsx or other Office file?)"),
    (b"\xd0\xcf\x11\xe0", "an old-style Office file (an Excel .xls?)"),
    (b"%PDF", "a PDF document"),
    (b"\x89PNG", "a PNG image"),
    (b"\xff\xd8\xff", "a JPEG image"),
    (b"GIF8", "a GIF image"),
    (b"\x1f\x8b", "a gzip archive"),
    (b"SQLite format 3", "an SQLite database"),
)

Severity = Literal["error", "warning"]


# --------------------------------------------------------------------------------------------------------------------
# Report types


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


@dataclass
class FeedbackReport:
    """Everything :func:`read_feedback` learnt about a file.

    ``data`` holds the usable rows, normalised: the canonical columns of ``format`` (paired: prompt, chosen,
    rejected; unpaired: prompt, completion, label as bool), then ``system`` / ``reference`` / metadata columns when
    the file had them, then ``row`` (where the row came from, in ``row_unit`` numbering). A prompt is a str or a
    list of ``{"role", "content"}`` dicts. ``data`` is empty whenever the file has a file-level error.
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

    @property
    def errors(self) -> list[Issue]:
        return [i for i in self.issues if i.severity == "error"]

    @property
    def warnings(self) -> list[Issue]:
        return [i for i in self.issues if i.severity == "warning"]

    @property
    def file_errors(self) -> list[Issue]:
        """Errors that concern the whole file (no row): any of them makes the file unusable."""
        return [i for i in self.issues if i.severity == "error" and i.row is None]

    @property
    def trainable(self) -> bool:
        return not self.file_errors and self.rows_usable >= MIN_ROWS.get(self.format or "", 1)

    def _add(
        self, severity: Severity, message: str, *, row: int | None = None, column: str | None = None, code: str = ""
    ) -> None:
        self.issues.append(Issue(severity, row, column, message, code, self.row_unit))

    def error(self, message: str, **kw: Any) -> None:
        self._add("error", message, **kw)

    def warn(self, message: str, **kw: Any) -> None:
        self._add("warning", message, **kw)

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
        lines.append(f"Rows: {_n(self.rows_total, 'data row')}, {self.rows_usable} usable, {dropped} dropped")
        n_err, n_warn = len(self.errors), len(self.warnings)
        if self.trainable:
            lines.append(f"Result: can be trained on ({_n(n_err, 'error')}, {_n(n_warn, 'warning')}).")
        else:
            lines.append(
                f"Result: cannot be trained on ({_n(n_err, 'error')}, {_n(n_warn, 'warning')}); "
                "fix the first error below."
            )
        for title, issues in (("Errors", self.errors), ("Warnings", self.warnings)):
            if not issues:
                continue
            lines.append(f"{title} ({len(issues)}):")
            shown: dict[str, int] = {}
            hidden: dict[str, int] = {}
            for issue in issues:
                key = issue.code or issue.message
                if shown.get(key, 0) < max_per_kind:
                    shown[key] = shown.get(key, 0) + 1
                    lines.append(f"  - {issue}")
                else:
                    hidden[key] = hidden.get(key, 0) + 1
            for key, n in hidden.items():
                lines.append(f"  … and {n} more of the same kind ({key})")
        if any(i.row is not None for i in self.issues):
            lines.append(LINE_CONVENTION if self.row_unit == "line" else ROW_CONVENTION)
        return "\n".join(lines)


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


# --------------------------------------------------------------------------------------------------------------------
# Small pure helpers


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


def neutralise_formula(text: Any) -> Any:
    """Prefix a single quote to text a spreadsheet would run as a formula (OWASP CSV injection advice).

    Text starting with ``= + - @``, a tab or a carriage return gets a leading ``'``; anything else (including
    non-strings such as numbers) is returned unchanged.
    """
    if isinstance(text, str) and text.startswith(FORMULA_PREFIXES):
        return "'" + text
    return text


def _cell_to_text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, (list, dict)):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, (bool, np.bool_)):
        return "true" if value else "false"
    if pd.api.types.is_scalar(value) and pd.isna(value):
        return ""
    return str(value)


def _is_number(value: Any) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, (bool, np.bool_)) and not pd.isna(value)


def to_safe_csv(df: pd.DataFrame, *, sep: str = ",") -> str:
    """Render a DataFrame as CSV text that is safe to open in a spreadsheet.

    Every text cell and column name goes through :func:`neutralise_formula`; booleans become ``true``/``false``,
    message lists become JSON, missing values become empty cells. Numbers are written as numbers (a negative number
    is not a formula). Lines end with ``\\n``; write the text as UTF-8.
    """
    buf = io.StringIO()
    writer = csv.writer(buf, delimiter=sep, lineterminator="\n")
    writer.writerow([neutralise_formula(str(c)) for c in df.columns])
    for row in df.itertuples(index=False, name=None):
        out = []
        for value in row:
            if _is_number(value):
                out.append(value)
            else:
                out.append(neutralise_formula(_cell_to_text(value)))
        writer.writerow(out)
    return buf.getvalue()


def votes_to_csv(rows: Iterable[Mapping[str, Any]], *, fmt: Literal["paired", "unpaired"] | None = None) -> str:
    """Render vote rows (dicts) as a safe CSV in exactly the accepted upload format.

    The format comes from ``fmt`` or from the first row's keys (chosen/rejected -> paired, completion/label ->
    unpaired). Columns: the format's three, then ``system`` / ``reference`` if any row has a value for them; other
    keys are left out. Labels are written ``true``/``false``. Raises ValueError on a row missing a required key or
    with an unrecognised label.
    """
    rows = list(rows)
    if fmt is None:
        first = rows[0] if rows else {}
        fmt = "unpaired" if "completion" in first or "label" in first else "paired"
    if fmt not in REQUIRED:
        raise ValueError(f"unknown format {fmt!r}; use 'paired' or 'unpaired'")
    columns = list(REQUIRED[fmt]) + [c for c in OPTIONAL_COLUMNS if any(_cell_to_text(r.get(c)) for r in rows)]
    table = []
    for i, row in enumerate(rows):
        missing = [c for c in REQUIRED[fmt] if c not in row]
        if missing:
            raise ValueError(f"vote row {i} has no {', '.join(missing)} (a {fmt} row needs {', '.join(REQUIRED[fmt])})")
        out = {c: row.get(c) for c in columns}
        if fmt == "unpaired":
            label = parse_label(row["label"])
            if label is None:
                raise ValueError(f"vote row {i} has an unrecognised label {row['label']!r}")
            out["label"] = label
        table.append(out)
    return to_safe_csv(pd.DataFrame(table, columns=columns))


def hash_file(data: bytes | str | os.PathLike[str]) -> str:
    """SHA-256 hex digest of bytes, or of a file's contents when given a path."""
    h = hashlib.sha256()
    if isinstance(data, (bytes, bytearray, memoryview)):
        h.update(data)
    else:
        with open(data, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                h.update(chunk)
    return h.hexdigest()


def demo_file(kind: Literal["paired", "unpaired"] = "paired", split: Literal["train", "heldout"] = "train") -> Path:
    """Path of a shipped demo data file (data/demo_pairs_train.csv, data/demo_unpaired_heldout.csv, ...)."""
    return REPO_ROOT / "data" / f"demo_{'pairs' if kind == 'paired' else 'unpaired'}_{split}.csv"


def read_heldout_pairs(path: str | os.PathLike[str] | None,
                       limit: int | None = None) -> tuple[pd.DataFrame | None, str]:
    """Held-out *pairs* from a paired feedback file, validated like an upload: (rows, "") or (None, why not).

    ``limit`` keeps a fixed random sample of that many pairs (seed 0, file order kept), so every caller that reads
    the same file with the same limit (the app, the Inspect precompute) gets exactly the same rows.
    """
    if path is None or not Path(path).is_file():
        return None, f"No held-out pairs file ({path}); held-out metrics need a hold-out share of the upload."
    report = read_feedback(Path(path))
    if not report.trainable or report.format != "paired":
        return None, f"The held-out file {path} is not a valid paired file; held-out metrics are off."
    data = report.data
    if limit is not None and len(data) > limit:
        data = data.sample(n=limit, random_state=0).sort_index()
    return data.reset_index(drop=True), ""


def _norm_column(name: Any) -> str:
    return re.sub(r"[\s\-]+", "_", str(name).replace("\ufeff", "").strip().lower())


def _n(count: int, noun: str) -> str:
    return f"{count:,} {noun}{'' if count == 1 else 's'}"


def prompt_key(prompt: Any) -> str:
    """A hashable key for a prompt that is text or a list of chat messages (JSON with sorted keys)."""
    return json.dumps(prompt, ensure_ascii=False, sort_keys=True) if not isinstance(prompt, str) else prompt


_prompt_key = prompt_key  # older name, kept for callers that used it


def _same_text(a: str, b: str) -> bool:
    return " ".join(a.split()).casefold() == " ".join(b.split()).casefold()


# --------------------------------------------------------------------------------------------------------------------
# Reading


class _Stop(Exception):
    """Raised internally after a file-level error that ends reading."""


def read_feedback(
    source: bytes | bytearray | str | os.PathLike[str],
    *,
    filename: str | None = None,
    limits: FeedbackLimits = FEEDBACK,
    max_chars: int | None = None,
    max_tokens: int | None = None,
    count_tokens: Callable[[str], int] | None = None,
) -> FeedbackReport:
    """Read and validate a feedback file; never raises on bad input (problems go into the report).

    ``source`` is a path or the file's bytes (pass ``filename`` with bytes so the extension can help detection).
    ``max_chars`` (default ``limits.max_cell_chars``) truncates longer cells; with ``count_tokens`` (e.g.
    ``lambda s: len(tok(s).input_ids)``) and ``max_tokens``, cells over ``max_tokens`` tokens are truncated too.
    """
    if not isinstance(source, (bytes, bytearray, memoryview, str, os.PathLike)):
        raise TypeError(f"read_feedback expects a path or bytes, not {type(source).__name__}")
    report = FeedbackReport()
    try:
        _read(report, source, filename, limits, max_chars or limits.max_cell_chars, max_tokens, count_tokens)
    except _Stop:
        pass
    except Exception as exc:  # a bug or an exotic file must not take the app down
        report.error(f"Unexpected problem while reading the file ({type(exc).__name__}: {exc}).", code="internal")
    if report.file_errors:
        report.data = pd.DataFrame(columns=list(REQUIRED.get(report.format or "", ())) + ["row"])
    # File-level issues first, then by row; the sort is stable, so issues on one row keep their order.
    report.issues.sort(key=lambda i: (i.row is not None, i.row or 0))
    return report


def _read(
    report: FeedbackReport,
    source: Any,
    filename: str | None,
    limits: FeedbackLimits,
    max_chars: int,
    max_tokens: int | None,
    count_tokens: Callable[[str], int] | None,
) -> None:
    raw = _load_bytes(report, source, filename, limits)
    report.sha256 = hash_file(raw)
    text = _decode(report, raw)
    name = (report.filename or "").lower()
    ext = os.path.splitext(name)[1]
    head = text.lstrip()[:1]
    if head == "[" and ext not in (".csv", ".tsv", ".tab", ".txt", ".jsonl", ".ndjson"):
        report.file_type, report.row_unit = "json", "record"
        columns, records = _parse_json_array(report, text, limits)
    elif head == "{":
        report.file_type, report.row_unit = "jsonl", "line"
        columns, records = _parse_jsonl(report, text, limits)
    else:
        report.file_type = "csv"
        if ext in (".jsonl", ".ndjson", ".json"):
            report.warn(
                f"The file is named {ext} but does not start with a JSON object; it was read as CSV.", code="file_type"
            )
        columns, records = _parse_delimited(report, text, ext, limits)
    mapping = _resolve_columns(report, columns)
    _validate_rows(report, mapping, records, max_chars, max_tokens, count_tokens)


def _load_bytes(report: FeedbackReport, source: Any, filename: str | None, limits: FeedbackLimits) -> bytes:
    if isinstance(source, (bytes, bytearray, memoryview)):
        report.filename = filename
        raw = bytes(source)
        size = len(raw)
    else:
        path = Path(source)
        report.filename = filename or path.name
        if not path.exists():
            report.error(f"File not found: {path}. Check the path and try again.", code="not_found")
            raise _Stop
        if not path.is_file():
            report.error(f"{path} is not a file (is it a folder?). Choose a CSV, TSV or JSONL file.", code="not_found")
            raise _Stop
        size = path.stat().st_size
        raw = b""
    if size > limits.max_bytes:
        report.error(
            f"The file is {size / 2**20:.1f} MiB, over the {limits.max_bytes / 2**20:.1f} MiB limit. "
            "Split it into smaller files or keep only the rows you need.",
            code="too_big",
        )
        raise _Stop
    if not isinstance(source, (bytes, bytearray, memoryview)):
        raw = Path(source).read_bytes()
    if not raw.strip() or raw.strip() in (codecs.BOM_UTF8, codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE):
        report.error("The file is empty. Add a header row (e.g. prompt,chosen,rejected) and data rows.", code="empty")
        raise _Stop
    return raw


def _decode(report: FeedbackReport, raw: bytes) -> str:
    if raw.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        try:
            text = raw.decode("utf-16")
        except UnicodeDecodeError:
            report.error(
                "The file starts like UTF-16 text but is not valid UTF-16. Save it as 'CSV UTF-8'.", code="binary"
            )
            raise _Stop from None
        report.encoding = "utf-16"
        report.warn(
            "The file is UTF-16 text (Excel's 'Unicode text'); it was read as UTF-16. Saving it as "
            "'CSV UTF-8' avoids this warning.",
            code="encoding",
        )
        return _check_text(report, text)
    for magic, what in _MAGIC:
        if raw.startswith(magic):
            report.error(
                f"This is not a text file: it looks like {what}. Export or save it as CSV (UTF-8) or "
                "JSON Lines and upload that.",
                code="binary",
            )
            raise _Stop
    if b"\x00" in raw:
        report.error(
            "This is not a text file: it contains NUL bytes, so it is probably a binary file renamed to "
            f"{os.path.splitext(report.filename or '')[1] or 'a text name'}. Save it as CSV (UTF-8) or "
            "JSON Lines.",
            code="binary",
        )
        raise _Stop
    if raw.startswith(codecs.BOM_UTF8):
        raw = raw[len(codecs.BOM_UTF8) :]
        report.encoding = "utf-8-sig"
        report.warn(
            "The file starts with a byte order mark (BOM), which Excel adds to 'CSV UTF-8' files; it was removed.",
            code="bom",
        )
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        try:
            text, report.encoding = raw.decode("cp1252"), "cp1252"
            label = "Windows-1252"
        except UnicodeDecodeError:
            text, report.encoding = raw.decode("latin-1"), "latin-1"
            label = "Latin-1"
        text = _check_text(report, text)
        report.warn(
            f"The file is not valid UTF-8 (the first bad byte is on line {line}); it was read as {label} "
            "instead. Check that accented letters and symbols look right, or save the file as 'CSV UTF-8'.",
            code="encoding",
        )
        return text
    return _check_text(report, text)


def _check_text(report: FeedbackReport, text: str) -> str:
    sample = text[:65536]
    control = sum(1 for ch in sample if ch not in "\t\n\r" and unicodedata.category(ch) == "Cc")
    if control > max(3, len(sample) // 200):
        report.error(
            "This does not look like a text file (it is full of control characters), so it is probably a "
            "binary file with a text name. Save it as CSV (UTF-8) or JSON Lines.",
            code="binary",
        )
        raise _Stop
    return text


def _detect_delimiter(text: str, ext: str) -> str:
    sample = text[:65536]
    if len(text) > len(sample) and "\n" in sample:
        sample = sample[: sample.rfind("\n")]
    order = ("\t", ",", ";", "|") if ext in (".tsv", ".tab") else DELIMITERS
    known = set(KNOWN_COLUMNS) | set(METADATA_COLUMNS)

    def score(delim: str) -> tuple[int, int, int, int]:
        try:
            rows = [r for _, r in zip(range(25), csv.reader(io.StringIO(sample), delimiter=delim))]
        except csv.Error:
            return (-1, 0, 0, 0)
        if not rows:
            return (-1, 0, 0, 0)
        header = rows[0]
        matches = sum(_norm_column(h) in known for h in header)
        fuzzy = sum(bool(difflib.get_close_matches(_norm_column(h), KNOWN_COLUMNS, 1, 0.75)) for h in header)
        consistent = sum(len(r) == len(header) for r in rows[1:] if r)
        return (matches, fuzzy, consistent * (len(header) > 1), len(header))

    return max(order, key=score)  # max keeps the first of equal scores, so the extension's hint wins ties


def _parse_delimited(
    report: FeedbackReport, text: str, ext: str, limits: FeedbackLimits
) -> tuple[list[str], list[tuple[int, dict[str, Any]]]]:
    delim = _detect_delimiter(text, ext)
    report.delimiter = delim
    if csv.field_size_limit() < limits.max_bytes:
        csv.field_size_limit(limits.max_bytes)
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delim)
    try:
        header = next(reader, None)
        if header is None or not any(h.strip() for h in header):
            report.error(
                "The first row is empty; it must name the columns, e.g. prompt,chosen,rejected.", code="no_header"
            )
            raise _Stop
        columns = [h.strip() for h in header]
        records: list[tuple[int, dict[str, Any]]] = []
        count = 0
        for index, cells in enumerate(reader):
            row = index + 2
            if not any(c.strip() for c in cells):
                continue  # a blank line or a row of empty cells: spreadsheets leave these at the end
            count += 1
            if count > limits.max_rows:
                report.error(
                    f"The file has more than {limits.max_rows:,} data rows (the limit). Split it into "
                    "smaller files or keep the most useful rows.",
                    code="too_many_rows",
                )
                raise _Stop
            if len(cells) != len(columns):
                extra = len(cells) > len(columns)
                report.error(
                    f"This row has {len(cells)} cells but the header has {len(columns)}. "
                    + (
                        "A cell that contains the delimiter "
                        + ("tab" if delim == "\t" else f"'{delim}'")
                        + " must be wrapped in double quotes."
                        if extra
                        else "Fill in the missing cells."
                    )
                    + " The row is skipped.",
                    row=row,
                    code="cell_count",
                )
                continue
            records.append((row, {columns[i]: _unquote(cells[i]) for i in range(len(columns))}))
        report.rows_total = count
    except csv.Error as exc:
        report.error(f"The file could not be parsed as CSV near line {reader.line_num}: {exc}.", code="parse")
        raise _Stop from None
    return columns, records


def _unquote(cell: str) -> str:
    """Undo :func:`neutralise_formula` on a cell read back from a CSV this app wrote."""
    if len(cell) > 1 and cell[0] == "'" and cell[1] in "=+-@\t\r":
        return cell[1:]
    return cell


def _parse_jsonl(
    report: FeedbackReport, text: str, limits: FeedbackLimits
) -> tuple[list[str], list[tuple[int, dict[str, Any]]]]:
    columns: dict[str, None] = {}
    records: list[tuple[int, dict[str, Any]]] = []
    count = 0
    for lineno, line in enumerate(text.split("\n"), start=1):
        line = line.strip()
        if not line:
            continue
        count += 1
        if count > limits.max_rows:
            report.error(
                f"The file has more than {limits.max_rows:,} rows (the limit). Split it into smaller "
                "files or keep the most useful rows.",
                code="too_many_rows",
            )
            raise _Stop
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as exc:
            report.error(
                f"This line is not valid JSON ({exc.msg} at character {exc.colno}). Each line must be one "
                'JSON object, e.g. {"prompt": "...", "chosen": "...", "rejected": "..."}. The line is '
                "skipped.",
                row=lineno,
                code="bad_json",
            )
            continue
        if not isinstance(obj, dict):
            report.error(
                f"This line holds a JSON {type(obj).__name__}, not an object; each line must be one JSON "
                'object like {"prompt": "...", ...}. The line is skipped.',
                row=lineno,
                code="bad_json",
            )
            continue
        for key in obj:
            columns.setdefault(str(key), None)
        records.append((lineno, {str(k): v for k, v in obj.items()}))
    report.rows_total = count
    if not columns and not records and not report.errors:
        report.error("The file has no JSON objects.", code="no_rows")
        raise _Stop
    return list(columns), records


def _parse_json_array(
    report: FeedbackReport, text: str, limits: FeedbackLimits
) -> tuple[list[str], list[tuple[int, dict[str, Any]]]]:
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        report.error(
            f"The file is not valid JSON ({exc.msg} on line {exc.lineno}). Use a JSON array of objects or "
            "JSON Lines (one object per line).",
            code="bad_json",
        )
        raise _Stop from None
    if not isinstance(data, list):
        report.error("The JSON file must hold a list of objects.", code="bad_json")
        raise _Stop
    if len(data) > limits.max_rows:
        report.error(
            f"The file has more than {limits.max_rows:,} records (the limit). Split it into smaller files.",
            code="too_many_rows",
        )
        raise _Stop
    columns: dict[str, None] = {}
    records = []
    for index, obj in enumerate(data, start=1):
        if not isinstance(obj, dict):
            report.error(
                f"This record is a JSON {type(obj).__name__}, not an object; it is skipped.", row=index, code="bad_json"
            )
            continue
        for key in obj:
            columns.setdefault(str(key), None)
        records.append((index, {str(k): v for k, v in obj.items()}))
    report.rows_total = len(data)
    return list(columns), records


def _resolve_columns(report: FeedbackReport, columns: list[str]) -> dict[str, str]:
    """Map canonical column name -> the file's column name; decide the format; report column problems."""
    normed: dict[str, str] = {}
    for col in columns:
        key = _norm_column(col)
        if not key:
            continue
        if key in normed:
            report.error(
                f"The column '{col}' appears more than once in the header. Keep one of them.",
                column=col,
                code="duplicate_column",
            )
            continue
        normed[key] = col
    present = set(normed)
    if not present:
        report.error(
            "No column names found: the first row must name the columns, e.g. prompt,chosen,rejected.", code="no_header"
        )
        raise _Stop
    has = {fmt: all(c in present for c in cols) for fmt, cols in REQUIRED.items()}
    unknown = [k for k in normed if k not in KNOWN_COLUMNS and k not in METADATA_COLUMNS]

    def guess(missing: str, candidates: list[str]) -> str | None:
        for cand in candidates:
            if ALIASES.get(cand) == missing:
                return cand
        close = difflib.get_close_matches(missing, candidates, n=1, cutoff=0.6)
        return close[0] if close else None

    if has["paired"] and has["unpaired"]:
        report.error(
            "The file has the columns of both formats (prompt, chosen, rejected and completion, label). "
            "Keep one set: paired for DPO or unpaired for KTO.",
            code="both_formats",
        )
        report.format = "paired"
    elif has["paired"] or has["unpaired"]:
        report.format = "paired" if has["paired"] else "unpaired"
    else:

        def closeness(fmt: str) -> int:
            cols = REQUIRED[fmt]
            return sum(c in present for c in cols) * 2 + sum(
                guess(c, unknown) is not None for c in cols if c not in present
            )

        scores = {fmt: closeness(fmt) for fmt in REQUIRED}
        if max(scores.values()) == 0:
            report.error(
                "No known columns found. The first row must name the columns: prompt, chosen, rejected for paired "
                "(DPO) data or prompt, completion, label for unpaired (KTO) data. Found: "
                + ", ".join(f"'{c}'" for c in columns[:8])
                + ("…" if len(columns) > 8 else "")
                + ".",
                code="missing_column",
            )
            raise _Stop
        report.format = "paired" if scores["paired"] >= scores["unpaired"] else "unpaired"

    fmt = report.format
    mapping = {c: normed[c] for c in REQUIRED[fmt] + OPTIONAL_COLUMNS + METADATA_COLUMNS if c in normed}
    other = "unpaired" if fmt == "paired" else "paired"
    for col in REQUIRED[fmt]:
        if col in mapping:
            continue
        cand = guess(col, [u for u in unknown if u not in {_norm_column(v) for v in mapping.values()}])
        need = f"the {fmt} format needs {', '.join(REQUIRED[fmt])}"
        if cand is not None:
            report.error(
                f"Missing column '{col}' ({need}). The column '{normed[cand]}' looks like it is meant to be "
                f"'{col}': rename it to '{col}'. (The rows were checked as if it were.)",
                code="missing_column",
            )
            mapping[col] = normed[cand]
        else:
            report.error(
                f"Missing column '{col}' ({need}; the {other} format needs "
                f"{', '.join(REQUIRED[other])}). Add the column to the header row.",
                code="missing_column",
            )
    used = {_norm_column(v) for v in mapping.values()}
    for key in normed:
        if key in used or key in METADATA_COLUMNS:
            continue
        original = normed[key]
        if key in KNOWN_COLUMNS:
            report.warn(
                f"This column belongs to the {other} format and is ignored in a {fmt} file.",
                column=original,
                code="unused_column",
            )
            continue
        alias = ALIASES.get(key)
        close = [alias] if alias in OPTIONAL_COLUMNS else difflib.get_close_matches(key, OPTIONAL_COLUMNS, 1, 0.6)
        if close:
            report.warn(
                f"This column is not used. Did you mean '{close[0]}'? Rename it to use it.",
                column=original,
                code="unused_column",
            )
        else:
            report.warn("This column is not used and is ignored.", column=original, code="unused_column")
    return mapping


def _messages(value: Any) -> tuple[list[dict[str, str]] | None, str | None]:
    """Validate a chat-message list. Returns (messages, None) or (None, what is wrong)."""
    if not isinstance(value, list) or not value:
        return None, "the message list is empty"
    out = []
    for i, msg in enumerate(value, start=1):
        if not isinstance(msg, dict):
            return None, f"message {i} is not an object with 'role' and 'content'"
        role, content = msg.get("role"), msg.get("content")
        if role not in ROLES:
            return None, f"message {i} has role {role!r}; use 'system', 'user' or 'assistant'"
        if not isinstance(content, str) or not content.strip():
            return None, f"message {i} ({role}) has no text in 'content'"
        if role == "system" and i != 1:
            return None, f"message {i} is a system message; only the first message may be one"
        out.append({"role": role, "content": content})
    if out[-1]["role"] != "user":
        return None, f"the last message is from the {out[-1]['role']}; it must be the user's turn"
    return out, None


def _response_text(value: Any) -> tuple[str | None, str | None]:
    """A response cell: text, or (JSONL, TRL's conversational format) a list holding one assistant message."""
    if isinstance(value, list):
        if (
            len(value) == 1
            and isinstance(value[0], dict)
            and value[0].get("role") == "assistant"
            and isinstance(value[0].get("content"), str)
        ):
            return value[0]["content"], None
        return None, "must be text (or a list with one assistant message)"
    if isinstance(value, dict):
        return None, "must be text, not a JSON object"
    return _cell_to_text(value), None


def _validate_rows(
    report: FeedbackReport,
    mapping: dict[str, str],
    records: list[tuple[int, dict[str, Any]]],
    max_chars: int,
    max_tokens: int | None,
    count_tokens: Callable[[str], int] | None,
) -> None:
    fmt = report.format
    assert fmt is not None
    if any(c not in mapping for c in REQUIRED[fmt]):  # a missing column without a stand-in: rows can't be checked
        return
    formula_rows: dict[str, list[int]] = {}
    good: list[dict[str, Any]] = []

    def fit(text: str, row: int, col: str) -> str:
        if len(text) > max_chars:
            report.warn(
                f"The text is {len(text):,} characters long, over the limit of {max_chars:,}; it was cut to "
                f"{max_chars:,} characters. Shorten it if the end matters.",
                row=row,
                column=col,
                code="truncated",
            )
            text = text[:max_chars]
        if count_tokens is not None and max_tokens:
            n = count_tokens(text)
            if n > max_tokens:
                lo, hi = 0, len(text)
                while lo < hi:  # the longest prefix that fits
                    mid = (lo + hi + 1) // 2
                    if count_tokens(text[:mid]) <= max_tokens:
                        lo = mid
                    else:
                        hi = mid - 1
                report.warn(
                    f"The text is {n:,} tokens long, more than the model's limit of {max_tokens:,}; it was "
                    "cut to fit. Shorten it if the end matters.",
                    row=row,
                    column=col,
                    code="truncated",
                )
                text = text[:lo].rstrip()
        return text

    for row, cells in records:
        out: dict[str, Any] = {}
        ok = True
        for canon in (*REQUIRED[fmt], *OPTIONAL_COLUMNS):
            if canon not in mapping:
                continue
            col = mapping[canon]
            value = cells.get(col)
            if isinstance(value, str) and value.startswith(FORMULA_PREFIXES):
                formula_rows.setdefault(col, []).append(row)
            if canon == "label":
                if value is None or (isinstance(value, str) and not value.strip()):
                    report.error(f"The label is empty. {LABEL_HELP}", row=row, column=col, code="empty_cell")
                    ok = False
                    continue
                label = parse_label(value)
                if label is None:
                    shown = value if isinstance(value, str) else json.dumps(value)
                    report.error(
                        f"'{shown[:40]}' is not a recognised label. {LABEL_HELP}", row=row, column=col, code="bad_label"
                    )
                    ok = False
                out["label"] = label
                continue
            if canon == "prompt":
                parsed: Any = value
                if isinstance(value, str) and re.match(r"\s*\[\s*\{", value):
                    try:
                        parsed = json.loads(value)
                    except json.JSONDecodeError as exc:
                        report.error(
                            f"The prompt looks like a JSON list of chat messages but is not valid JSON "
                            f"({exc.msg} at character {exc.pos + 1}). Fix the JSON or write the prompt as "
                            "plain text.",
                            row=row,
                            column=col,
                            code="bad_messages",
                        )
                        ok = False
                        continue
                if isinstance(parsed, list):
                    msgs, problem = _messages(parsed)
                    if msgs is None:
                        report.error(
                            f"Invalid chat messages: {problem}. Messages look like "
                            '[{"role": "user", "content": "..."}].',
                            row=row,
                            column=col,
                            code="bad_messages",
                        )
                        ok = False
                        continue
                    for m in msgs:
                        m["content"] = fit(m["content"], row, col)
                    out["prompt"] = msgs
                    continue
            text, problem = _response_text(value)
            if text is None:
                report.error(f"The cell {problem}.", row=row, column=col, code="bad_cell")
                ok = False
                continue
            text = text.strip()
            if not text and canon in REQUIRED[fmt]:
                report.error("The cell is empty. Fill it in or delete the row.", row=row, column=col, code="empty_cell")
                ok = False
                continue
            out[canon] = fit(text, row, col) if text else ""
        if ok and fmt == "paired" and _same_text(out["chosen"], out["rejected"]):
            report.error(
                "The chosen and rejected texts are identical, so the pair teaches nothing. Change one of "
                "them or delete the row.",
                row=row,
                column=mapping["rejected"],
                code="same_text",
            )
            ok = False
        if ok:
            for meta in METADATA_COLUMNS:
                if meta in mapping:
                    out[meta] = _cell_to_text(cells.get(mapping[meta])).strip()
            out["row"] = row
            good.append(out)

    for col, rows in formula_rows.items():
        listed = ", ".join(str(r) for r in rows[:10]) + (", …" if len(rows) > 10 else "")
        unit = report.row_unit + ("s" if len(rows) > 1 else "")
        report.warn(
            f"{len(rows)} {'cells start' if len(rows) > 1 else 'cell starts'} with =, +, -, @, a tab or a carriage "
            f"return ({unit} {listed}). A spreadsheet may run such a cell as a formula. The text is kept as it is "
            "for training, and CSV files this app writes put a ' in front of such cells.",
            column=col,
            code="formula",
        )

    usable = _drop_duplicates(report, good)
    report.rows_usable = len(usable)
    if not report.rows_total and not report.file_errors:
        report.error("The file has a header but no data rows. Add at least one row below the header.", code="no_rows")
    elif report.rows_usable < MIN_ROWS[fmt] and not report.file_errors:
        need = "1 usable pair" if fmt == "paired" else "2 usable rows (KTO's reference point needs a batch)"
        report.error(
            f"Only {report.rows_usable} usable row{'s' if report.rows_usable != 1 else ''} left after "
            f"dropping rows with errors; training needs at least {need}.",
            code="too_few_rows",
        )
    if fmt == "unpaired" and usable and len({r["label"] for r in usable}) == 1:
        kind = "desirable (true)" if usable[0]["label"] else "undesirable (false)"
        report.warn(
            f"Every usable row is labelled {kind}. KTO learns best from both kinds; add some of the other.",
            code="one_label",
        )
    columns = [*REQUIRED[fmt], *(c for c in (*OPTIONAL_COLUMNS, *METADATA_COLUMNS) if c in mapping), "row"]
    report.data = pd.DataFrame(usable, columns=columns)
    if fmt == "unpaired":
        report.data["label"] = report.data["label"].astype(bool)
    report.data["row"] = report.data["row"].astype(int)


def _drop_duplicates(report: FeedbackReport, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Drop exact duplicates (warning) and contradictory rows (error on both)."""
    fmt, unit = report.format, report.row_unit
    first_seen: dict[tuple, int] = {}
    contradict: dict[tuple, dict[Any, int]] = {}
    bad: set[int] = set()
    keep: list[dict[str, Any]] = []
    for r in rows:
        p, s = _prompt_key(r["prompt"]), r.get("system", "")
        key = (p, r["chosen"], r["rejected"], s) if fmt == "paired" else (p, r["completion"], r["label"], s)
        if key in first_seen:
            report.warn(
                f"This {unit} repeats {unit} {first_seen[key]}; the copy is dropped.",
                row=r["row"],
                code="duplicate_row",
            )
            continue
        first_seen[key] = r["row"]
        if fmt == "paired":
            other = (p, r["rejected"], r["chosen"], s)
            if other in first_seen:
                report.error(
                    f"This {unit} swaps chosen and rejected compared with {unit} {first_seen[other]}, so the two "
                    "contradict each other; both are dropped. Keep the right one.",
                    row=r["row"],
                    code="contradiction",
                )
                bad.update({r["row"], first_seen[other]})
        else:
            seen = contradict.setdefault((p, r["completion"], s), {})
            seen.setdefault(r["label"], r["row"])
            if len(seen) == 2:
                earlier = seen[not r["label"]]
                report.error(
                    f"The same prompt and completion is labelled {'true' if not r['label'] else 'false'} "
                    f"in {unit} {earlier} and {'true' if r['label'] else 'false'} here; both are dropped. "
                    "Keep the right label.",
                    row=r["row"],
                    code="contradiction",
                )
                bad.update({r["row"], earlier})
        keep.append(r)
    return [r for r in keep if r["row"] not in bad]


# --------------------------------------------------------------------------------------------------------------------
# Conversions


def _extra_columns(df: pd.DataFrame) -> list[str]:
    return [c for c in OPTIONAL_COLUMNS if c in df.columns]


def paired_to_unpaired(df: pd.DataFrame, *, drop_duplicates: bool = True) -> pd.DataFrame:
    """Each pair becomes two rows: (prompt, chosen, True) then (prompt, rejected, False).

    ``system`` and ``reference`` are carried over. With ``drop_duplicates`` a (prompt, completion, label, system) row
    that already appeared (e.g. one chosen answer shared by several pairs) is kept once.
    """
    extra = _extra_columns(df)
    rows = []
    seen: set[tuple] = set()
    for rec in df.to_dict("records"):
        carried = {c: rec[c] for c in extra}
        for completion, label in ((rec["chosen"], True), (rec["rejected"], False)):
            key = (_prompt_key(rec["prompt"]), completion, label, _cell_to_text(carried.get("system")))
            if drop_duplicates and key in seen:
                continue
            seen.add(key)
            rows.append({"prompt": rec["prompt"], "completion": completion, "label": label, **carried})
    out = pd.DataFrame(rows, columns=["prompt", "completion", "label", *extra])
    out["label"] = out["label"].astype(bool)
    return out


def unpaired_to_paired(df: pd.DataFrame) -> tuple[pd.DataFrame, ConversionStats]:
    """Pair desirable with undesirable completions of the same prompt (and system prompt).

    Within a prompt, the i-th desirable completion is paired with the i-th undesirable one, in file order; what is
    left over is counted in the stats. Prompts keep their first-appearance order; ``reference`` is the prompt's first
    non-empty reference. Raises ValueError on an unrecognised label.
    """
    extra = _extra_columns(df)
    groups: dict[tuple[str, str], dict[str, Any]] = {}
    for rec in df.to_dict("records"):
        label = parse_label(rec["label"])
        if label is None:
            raise ValueError(f"unrecognised label {rec['label']!r}")
        key = (_prompt_key(rec["prompt"]), _cell_to_text(rec.get("system")))
        group = groups.setdefault(key, {"prompt": rec["prompt"], True: [], False: [], "reference": ""})
        for c in extra:
            if c == "system":
                group["system"] = rec["system"]
            elif not group["reference"] and _cell_to_text(rec.get("reference")):
                group["reference"] = rec["reference"]
        group[label].append(rec["completion"])
    rows = []
    stats = dict.fromkeys(
        (
            "pairs",
            "prompts_paired",
            "prompts_only_desirable",
            "prompts_only_undesirable",
            "unused_desirable",
            "unused_undesirable",
        ),
        0,
    )
    for group in groups.values():
        good, bad = group[True], group[False]
        n = min(len(good), len(bad))
        for chosen, rejected in zip(good[:n], bad[:n]):
            rows.append(
                {
                    "prompt": group["prompt"],
                    "chosen": chosen,
                    "rejected": rejected,
                    **{c: group.get(c, "") for c in extra},
                }
            )
        stats["pairs"] += n
        stats["prompts_paired"] += n > 0
        stats["prompts_only_desirable"] += bool(good) and not bad
        stats["prompts_only_undesirable"] += bool(bad) and not good
        stats["unused_desirable"] += len(good) - n
        stats["unused_undesirable"] += len(bad) - n
    out = pd.DataFrame(rows, columns=["prompt", "chosen", "rejected", *extra])
    return out, ConversionStats(prompts=len(groups), **stats)


# --------------------------------------------------------------------------------------------------------------------
# Command line


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
        report = read_feedback(args.file, limits=limits, max_chars=args.max_chars)
        print(report.summary())
        return 0 if report.trainable else 1
    except KeyboardInterrupt:
        print("Interrupted.", file=sys.stderr)
        return 1
    except Exception as exc:
        print(f"Could not check {args.file}: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
