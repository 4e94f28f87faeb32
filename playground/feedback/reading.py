"""Reading a feedback file: bytes in (a path or an upload), a :class:`FeedbackReport` out, never an exception.

Files: CSV (delimiter , ; tab or | detected from the header), TSV, JSON Lines and a JSON array of objects, in UTF-8
(a BOM is removed), UTF-16 with a BOM, or a legacy 8-bit encoding (read as Windows-1252, with a warning).

Limits (``playground.config.FeedbackLimits``): the byte size is checked before anything is read or parsed, the row
count while parsing (parsing stops at the first row over the cap), and cells longer than the cell limit are
truncated with a warning (``validation``). A caller with a tokenizer passes ``count_tokens`` and ``max_tokens`` too.

Damage (``FeedbackReport.damage``): a JSON line that does not parse, a quoted cell that never ends, NUL bytes and
a last row with the wrong number of cells are what a file cut off mid-copy or mid-download looks like, so they block
training with a message saying so, unless the caller passes ``intact_rows=True`` (the user's explicit choice).
Every path that reads a feedback file (the Fine-tune and Inspect uploads, the vote exports, the API, the CLIs) calls
:func:`read_feedback`, so they all give the same words and the same verdict.
"""

from __future__ import annotations

import codecs
import csv
import difflib
import io
import json
import os
import unicodedata
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

import pandas as pd

from playground.common.files import sha256_bytes
from playground.config import FEEDBACK, REPO_ROOT, FeedbackLimits
from playground.feedback.csv_safe import unquote_formula
from playground.feedback.schema import (
    DELIMITERS,
    KNOWN_COLUMNS,
    METADATA_COLUMNS,
    REQUIRED,
    FeedbackReport,
    StopReading,
    normalise_column_name,
)
from playground.feedback.validation import resolve_columns, validate_rows

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


def read_feedback(
    source: bytes | bytearray | str | os.PathLike[str],
    *,
    filename: str | None = None,
    limits: FeedbackLimits = FEEDBACK,
    max_chars: int | None = None,
    max_tokens: int | None = None,
    count_tokens: Callable[[str], int] | None = None,
    intact_rows: bool = False,
) -> FeedbackReport:
    """Read and validate a feedback file; never raises on bad input (problems go into the report).

    ``source`` is a path or the file's bytes (pass ``filename`` with bytes so the extension can help detection).
    ``max_chars`` (default ``limits.max_cell_chars``) truncates longer cells; with ``count_tokens`` (e.g.
    ``lambda s: len(tok(s).input_ids)``) and ``max_tokens``, cells over ``max_tokens`` tokens are truncated too.
    ``intact_rows``: the user chose to train on the intact rows of a file that looks cut off or corrupt (the damage is
    then reported as warnings; see the module docstring).
    """
    if not isinstance(source, (bytes, bytearray, memoryview, str, os.PathLike)):
        raise TypeError(f"read_feedback expects a path or bytes, not {type(source).__name__}")
    report = FeedbackReport(intact_rows=bool(intact_rows))
    try:
        _read(report, source, filename, limits, max_chars or limits.max_cell_chars, max_tokens, count_tokens)
    except StopReading:
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
    report.sha256 = sha256_bytes(raw)
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
    mapping = resolve_columns(report, columns)
    validate_rows(report, mapping, records, max_chars, max_tokens, count_tokens)


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
            raise StopReading
        if not path.is_file():
            report.error(f"{path} is not a file (is it a folder?). Choose a CSV, TSV or JSONL file.", code="not_found")
            raise StopReading
        size = path.stat().st_size
        raw = b""
    if size > limits.max_bytes:
        report.error(
            f"The file is {size / 2**20:.1f} MiB, over the {limits.max_bytes / 2**20:.1f} MiB limit. "
            "Split it into smaller files or keep only the rows you need.",
            code="too_big",
        )
        raise StopReading
    if not isinstance(source, (bytes, bytearray, memoryview)):
        raw = Path(source).read_bytes()
    if not raw.strip() or raw.strip() in (codecs.BOM_UTF8, codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE):
        report.error("The file is empty. Add a header row (e.g. prompt,chosen,rejected) and data rows.", code="empty")
        raise StopReading
    return raw


def _decode(report: FeedbackReport, raw: bytes) -> str:
    if raw.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        try:
            text = raw.decode("utf-16")
        except UnicodeDecodeError:
            report.error(
                "The file starts like UTF-16 text but is not valid UTF-16. Save it as 'CSV UTF-8'.", code="binary"
            )
            raise StopReading from None
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
            raise StopReading
    if b"\x00" in raw:
        raw = _strip_nul_tail(report, raw)
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


def _strip_nul_tail(report: FeedbackReport, raw: bytes) -> bytes:
    """The bytes without a trailing run of NULs (what a cut-off download or copy leaves, reported as damage); a
    binary file (NULs inside, with other control bytes) stops reading. A few NULs inside text are left for the
    parser, which reports each row holding one as damaged."""
    body = raw.rstrip(b"\x00")
    sample = body[:65536].decode("latin-1")
    control = sum(1 for ch in sample if ch not in "\t\n\r" and unicodedata.category(ch) == "Cc")
    if not body.strip() or (b"\x00" in body and control > max(3, len(sample) // 200)):
        report.error(
            "This is not a text file: it contains NUL bytes, so it is probably a binary file renamed to "
            f"{os.path.splitext(report.filename or '')[1] or 'a text name'}. Save it as CSV (UTF-8) or "
            "JSON Lines.",
            code="binary",
        )
        raise StopReading
    if len(body) < len(raw):
        report.damage(
            f"The file ends in {len(raw) - len(body):,} NUL bytes (zeros), which is what a download or copy that "
            "was cut off leaves; they were removed.",
            code="damaged_nul",
        )
    return body


def _check_text(report: FeedbackReport, text: str) -> str:
    sample = text[:65536]
    control = sum(1 for ch in sample if ch not in "\t\n\r" and unicodedata.category(ch) == "Cc")
    if control > max(3, len(sample) // 200):
        report.error(
            "This does not look like a text file (it is full of control characters), so it is probably a "
            "binary file with a text name. Save it as CSV (UTF-8) or JSON Lines.",
            code="binary",
        )
        raise StopReading
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
        matches = sum(normalise_column_name(h) in known for h in header)
        fuzzy = sum(bool(difflib.get_close_matches(normalise_column_name(h), KNOWN_COLUMNS, 1, 0.75)) for h in header)
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
            raise StopReading
        columns = [h.strip() for h in header]
        rows: list[tuple[int, list[str]]] = []
        for index, cells in enumerate(reader):
            if not any(c.strip() for c in cells):
                continue  # a blank line or a row of empty cells: spreadsheets leave these at the end
            if len(rows) >= limits.max_rows:
                report.error(
                    f"The file has more than {limits.max_rows:,} data rows (the limit). Split it into "
                    "smaller files or keep the most useful rows.",
                    code="too_many_rows",
                )
                raise StopReading
            rows.append((index + 2, cells))
    except csv.Error as exc:
        report.error(f"The file could not be parsed as CSV near line {reader.line_num}: {exc}.", code="parse")
        raise StopReading from None
    report.rows_total = len(rows)
    unterminated = _unterminated_quote(text, delim)
    records: list[tuple[int, dict[str, Any]]] = []
    for position, (row, cells) in enumerate(rows):
        last = position == len(rows) - 1
        if last and unterminated:
            report.damage(
                "A quoted cell starts in this row and never ends (an opening \" without its closing \"), so "
                "everything from there to the end of the file was read as one cell: the file looks cut off. The "
                "row is left out.",
                row=row,
                code="damaged_quote",
            )
            continue
        if any("\x00" in c for c in cells):
            report.damage("This row holds NUL bytes (zeros), a sign of a corrupt file. The row is left out.",
                          row=row, code="damaged_nul")
            continue
        if len(cells) != len(columns):
            _report_cell_count(report, row, len(cells), len(columns), delim, last)
            continue
        records.append((row, {columns[i]: unquote_formula(cells[i]) for i in range(len(columns))}))
    return columns, records


def _report_cell_count(report: FeedbackReport, row: int, cells: int, columns: int, delim: str, last: bool) -> None:
    """A row whose cell count is not the header's: dropped, or (the last row, short) a sign the file is cut off."""
    if last and cells < columns:
        report.damage(
            f"The last row has {cells} cells but the header has {columns}: the file looks cut off here (a copy or "
            "download that stopped early). The row is left out.",
            row=row,
            code="damaged_last_row",
        )
        return
    extra = cells > columns
    report.drop(
        f"This row has {cells} cells but the header has {columns}. "
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


def _unterminated_quote(text: str, delim: str) -> bool:
    """True when the file ends inside a quoted cell (strict CSV reading runs out of data in the quote)."""
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delim, strict=True)
    try:
        for _ in reader:
            pass
    except csv.Error as exc:
        return "unexpected end of data" in str(exc)
    return False


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
            raise StopReading
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as exc:
            where = f"{'' if exc.msg.endswith(' at') else ' at'} character {exc.colno}"  # "... starting at" + where
            report.damage(
                f"This line is not valid JSON ({exc.msg}{where}), so the file looks cut off or "
                'corrupt here. Each line must be one JSON object, e.g. {"prompt": "...", "chosen": "...", '
                '"rejected": "..."}. The line is left out.',
                row=lineno,
                code="damaged_json",
            )
            continue
        if not isinstance(obj, dict):
            report.drop(
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
        raise StopReading
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
        raise StopReading from None
    if not isinstance(data, list):
        report.error("The JSON file must hold a list of objects.", code="bad_json")
        raise StopReading
    if len(data) > limits.max_rows:
        report.error(
            f"The file has more than {limits.max_rows:,} records (the limit). Split it into smaller files.",
            code="too_many_rows",
        )
        raise StopReading
    columns: dict[str, None] = {}
    records = []
    for index, obj in enumerate(data, start=1):
        if not isinstance(obj, dict):
            report.drop(
                f"This record is a JSON {type(obj).__name__}, not an object; it is skipped.", row=index, code="bad_json"
            )
            continue
        for key in obj:
            columns.setdefault(str(key), None)
        records.append((index, {str(k): v for k, v in obj.items()}))
    report.rows_total = len(data)
    return list(columns), records


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


def demo_file(kind: Literal["paired", "unpaired"] = "paired", split: Literal["train", "heldout"] = "train") -> Path:
    """Path of a shipped demo data file (data/demo_pairs_train.csv, data/demo_unpaired_heldout.csv, ...)."""
    return REPO_ROOT / "data" / f"demo_{'pairs' if kind == 'paired' else 'unpaired'}_{split}.csv"
