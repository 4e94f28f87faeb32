"""Checking what was read: which columns mean what, then each row, cell by cell, then duplicates.

Rules: a row with a bad cell, a duplicate and the two rows of a contradiction are *dropped*, each with a warning
on its row (``FeedbackReport.drop``); the rest trains. Every *error* blocks training: a column problem, too few
usable rows (fewer than ``MIN_ROWS``: paired 1 pair, unpaired 2 rows, which KTO's batch reference point needs), or
damage found while reading (``reading``). A file can be trained on (``FeedbackReport.trainable``) when it has no error.
"""

from __future__ import annotations

import difflib
import functools
import json
import re
from collections.abc import Callable
from typing import Any, Literal

import pandas as pd

from playground.feedback.schema import (
    ALIASES,
    FORMULA_PREFIXES,
    KNOWN_COLUMNS,
    LABEL_HELP,
    METADATA_COLUMNS,
    MIN_ROWS,
    OPTIONAL_COLUMNS,
    REQUIRED,
    ROLES,
    FeedbackReport,
    StopReading,
    cell_text,
    normalise_column_name,
    parse_label,
    prompt_key,
    same_text,
)


def resolve_columns(report: FeedbackReport, columns: list[str]) -> dict[str, str]:
    """Map canonical column name -> the file's column name; decide the format; report column problems."""
    normed = _normalise_header(report, columns)
    unknown = [k for k in normed if k not in KNOWN_COLUMNS and k not in METADATA_COLUMNS]
    report.format = _decide_format(report, columns, set(normed), unknown)
    mapping = _map_required_columns(report, report.format, normed, unknown)
    _warn_unused_columns(report, report.format, normed, mapping)
    return mapping


def _normalise_header(report: FeedbackReport, columns: list[str]) -> dict[str, str]:
    """Normalised column name -> the file's column name, reporting duplicates; stops reading if there is none."""
    normed: dict[str, str] = {}
    for col in columns:
        key = normalise_column_name(col)
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
    if not normed:
        report.error(
            "No column names found: the first row must name the columns, e.g. prompt,chosen,rejected.", code="no_header"
        )
        raise StopReading
    return normed


def _guess_column(missing: str, candidates: list[str]) -> str | None:
    """The candidate column most likely meant as the canonical column ``missing``: an alias first, then spelling."""
    for cand in candidates:
        if ALIASES.get(cand) == missing:
            return cand
    close = difflib.get_close_matches(missing, candidates, n=1, cutoff=0.6)
    return close[0] if close else None


def _other_format(fmt: str) -> Literal["paired", "unpaired"]:
    """The format that ``fmt`` is not."""
    return "unpaired" if fmt == "paired" else "paired"


def _decide_format(
    report: FeedbackReport, columns: list[str], present: set[str], unknown: list[str]
) -> Literal["paired", "unpaired"]:
    """The format whose required columns the header has; an error if it has both, the closest if it has neither."""
    has = {fmt: all(c in present for c in cols) for fmt, cols in REQUIRED.items()}
    if has["paired"] and has["unpaired"]:
        report.error(
            "The file has the columns of both formats (prompt, chosen, rejected and completion, label). "
            "Keep one set: paired for DPO or unpaired for KTO.",
            code="both_formats",
        )
        return "paired"
    if has["paired"] or has["unpaired"]:
        return "paired" if has["paired"] else "unpaired"
    return _closest_format(report, columns, present, unknown)


def _closest_format(
    report: FeedbackReport, columns: list[str], present: set[str], unknown: list[str]
) -> Literal["paired", "unpaired"]:
    """The format the header comes closest to (ties go to paired); stops reading if it has no known column."""

    def closeness(fmt: str) -> int:
        cols = REQUIRED[fmt]
        return sum(c in present for c in cols) * 2 + sum(
            _guess_column(c, unknown) is not None for c in cols if c not in present
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
        raise StopReading
    return "paired" if scores["paired"] >= scores["unpaired"] else "unpaired"


def _map_required_columns(
    report: FeedbackReport, fmt: str, normed: dict[str, str], unknown: list[str]
) -> dict[str, str]:
    """Map the columns ``fmt`` uses; a missing required column is an error, with a stand-in when one looks meant."""
    mapping = {c: normed[c] for c in REQUIRED[fmt] + OPTIONAL_COLUMNS + METADATA_COLUMNS if c in normed}
    for col in REQUIRED[fmt]:
        if col in mapping:
            continue
        # A column already standing in for another required column can't stand in twice.
        taken = {normalise_column_name(v) for v in mapping.values()}
        cand = _guess_column(col, [u for u in unknown if u not in taken])
        _report_missing_column(report, fmt, col, None if cand is None else normed[cand])
        if cand is not None:
            mapping[col] = normed[cand]
    return mapping


def _report_missing_column(report: FeedbackReport, fmt: str, col: str, stand_in: str | None) -> None:
    """The error for a missing required column, naming the file's column that looks meant to be it, if any."""
    need = f"the {fmt} format needs {', '.join(REQUIRED[fmt])}"
    if stand_in is not None:
        report.error(
            f"Missing column '{col}' ({need}). The column '{stand_in}' looks like it is meant to be "
            f"'{col}': rename it to '{col}'. (The rows were checked as if it were.)",
            code="missing_column",
        )
    else:
        other = _other_format(fmt)
        report.error(
            f"Missing column '{col}' ({need}; the {other} format needs "
            f"{', '.join(REQUIRED[other])}). Add the column to the header row.",
            code="missing_column",
        )


def _warn_unused_columns(report: FeedbackReport, fmt: str, normed: dict[str, str], mapping: dict[str, str]) -> None:
    """A warning for each column that is neither mapped nor metadata, with a rename hint where one fits."""
    used = {normalise_column_name(v) for v in mapping.values()}
    for key in normed:
        if key in used or key in METADATA_COLUMNS:
            continue
        original = normed[key]
        if key in KNOWN_COLUMNS:
            report.warn(
                f"This column belongs to the {_other_format(fmt)} format and is ignored in a {fmt} file.",
                column=original,
                code="unused_column",
            )
            continue
        meant = _meant_optional_column(key)
        if meant is not None:
            report.warn(
                f"This column is not used. Did you mean '{meant}'? Rename it to use it.",
                column=original,
                code="unused_column",
            )
        else:
            report.warn("This column is not used and is ignored.", column=original, code="unused_column")


def _meant_optional_column(key: str) -> str | None:
    """The optional column an unused column is probably meant to be (by alias, then by spelling), if any."""
    alias = ALIASES.get(key)
    close = [alias] if alias in OPTIONAL_COLUMNS else difflib.get_close_matches(key, OPTIONAL_COLUMNS, 1, 0.6)
    return close[0] if close else None


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
    return cell_text(value), None


def validate_rows(
    report: FeedbackReport,
    mapping: dict[str, str],
    records: list[tuple[int, dict[str, Any]]],
    max_chars: int,
    max_tokens: int | None,
    count_tokens: Callable[[str], int] | None,
) -> None:
    """Check every row cell by cell, drop duplicates, then set ``report.rows_usable`` and ``report.data``."""
    fmt = report.format
    assert fmt is not None
    if any(c not in mapping for c in REQUIRED[fmt]):  # a missing column without a stand-in: rows can't be checked
        return
    fit = _text_fitter(report, max_chars, max_tokens, count_tokens)
    checked = (_check_row(report, fmt, mapping, row, cells, fit) for row, cells in records)
    good = [out for out in checked if out is not None]
    _warn_formulas(report, _formula_cells(fmt, mapping, records))
    usable = _drop_duplicates(report, good)
    report.rows_usable = len(usable)
    _check_enough_rows(report, fmt)
    _warn_one_label(report, fmt, usable)
    report.data = _usable_data(fmt, mapping, usable)


# fit(row, column, text) -> the text cut to the limits, with a warning for each cut.
_Fit = Callable[[int, str, str], str]


def _text_fitter(
    report: FeedbackReport, max_chars: int, max_tokens: int | None, count_tokens: Callable[[str], int] | None
) -> _Fit:
    """A function that cuts a cell's text to the character limit, then to the token limit when there is one."""

    def fit(row: int, col: str, text: str) -> str:
        text = _cut_to_chars(report, text, row, col, max_chars)
        if count_tokens is not None and max_tokens:
            text = _cut_to_tokens(report, text, row, col, max_tokens, count_tokens)
        return text

    return fit


def _cut_to_chars(report: FeedbackReport, text: str, row: int, col: str, max_chars: int) -> str:
    """The text cut to ``max_chars`` characters, warning when it was longer."""
    if len(text) <= max_chars:
        return text
    report.warn(
        f"The text is {len(text):,} characters long, over the limit of {max_chars:,}; it was cut to "
        f"{max_chars:,} characters. Shorten it if the end matters.",
        row=row,
        column=col,
        code="truncated",
    )
    return text[:max_chars]


def _cut_to_tokens(
    report: FeedbackReport, text: str, row: int, col: str, max_tokens: int, count_tokens: Callable[[str], int]
) -> str:
    """The text cut to the longest prefix of at most ``max_tokens`` tokens, warning when it was longer."""
    n = count_tokens(text)
    if n <= max_tokens:
        return text
    # Binary search: token counts grow with the prefix, and tokenising every prefix would be quadratic.
    lo, hi = 0, len(text)
    while lo < hi:
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
    return text[:lo].rstrip()


class _BadCell(Exception):
    """A cell error that drops its row; the row's check reports it with the cell's row and column."""

    def __init__(self, message: str, code: str) -> None:
        super().__init__(message)
        self.message, self.code = message, code


def _check_row(
    report: FeedbackReport, fmt: str, mapping: dict[str, str], row: int, cells: dict[str, Any], fit: _Fit
) -> dict[str, Any] | None:
    """One row's normalised values (canonical columns, metadata and ``row``), or None when an error drops it."""
    out: dict[str, Any] = {}
    ok = True
    for canon in (*REQUIRED[fmt], *OPTIONAL_COLUMNS):
        if canon not in mapping:
            continue
        col = mapping[canon]
        fit_cell = functools.partial(fit, row, col)
        try:
            out[canon] = _cell_value(canon, canon in REQUIRED[fmt], cells.get(col), fit_cell)
        except _BadCell as bad:
            # The row goes, but its other cells are still checked so that one pass reports all its problems.
            report.drop(bad.message, row=row, column=col, code=bad.code)
            ok = False
    if ok and fmt == "paired" and same_text(out["chosen"], out["rejected"]):
        report.drop(
            "The chosen and rejected texts are identical, so the pair teaches nothing; the row is dropped. Change "
            "one of them or delete the row.",
            row=row,
            column=mapping["rejected"],
            code="same_text",
        )
        ok = False
    if not ok:
        return None
    for meta in METADATA_COLUMNS:
        if meta in mapping:
            out[meta] = cell_text(cells.get(mapping[meta])).strip()
    out["row"] = row
    return out


def _cell_value(canon: str, required: bool, value: Any, fit: Callable[[str], str]) -> Any:
    """The normalised value of one cell of the canonical column ``canon``; raises _BadCell when the row must go."""
    if canon == "label":
        return _label_value(value)
    if canon == "prompt":
        msgs = _chat_messages(value)
        if msgs is not None:
            for m in msgs:
                m["content"] = fit(m["content"])
            return msgs
    text = _text_value(value, required)
    return fit(text) if text else ""


def _label_value(value: Any) -> bool:
    """A label cell as a bool; raises _BadCell when it is empty or not an accepted spelling."""
    if value is None or (isinstance(value, str) and not value.strip()):
        raise _BadCell(f"The label is empty. {LABEL_HELP}", "empty_cell")
    label = parse_label(value)
    if label is None:
        shown = value if isinstance(value, str) else json.dumps(value)
        raise _BadCell(f"'{shown[:40]}' is not a recognised label. {LABEL_HELP}", "bad_label")
    return label


_CHAT_JSON = re.compile(r"\s*\[\s*\{")  # text that starts like a JSON list of objects


def _chat_messages(value: Any) -> list[dict[str, str]] | None:
    """A prompt cell's chat messages, or None when it is plain text; raises _BadCell when they are invalid."""
    parsed: Any = value
    if isinstance(value, str) and _CHAT_JSON.match(value):
        try:
            parsed = json.loads(value)
        except json.JSONDecodeError as exc:
            raise _BadCell(
                f"The prompt looks like a JSON list of chat messages but is not valid JSON "
                f"({exc.msg} at character {exc.pos + 1}). Fix the JSON or write the prompt as "
                "plain text.",
                "bad_messages",
            ) from None
    if not isinstance(parsed, list):
        return None
    msgs, problem = _messages(parsed)
    if msgs is None:
        raise _BadCell(
            f'Invalid chat messages: {problem}. Messages look like [{{"role": "user", "content": "..."}}].',
            "bad_messages",
        )
    return msgs


def _text_value(value: Any, required: bool) -> str:
    """A text cell, stripped; raises _BadCell when it is not text, or empty in a required column."""
    text, problem = _response_text(value)
    if text is None:
        raise _BadCell(f"The cell {problem}.", "bad_cell")
    text = text.strip()
    if not text and required:
        raise _BadCell("The cell is empty. Fill it in or delete the row.", "empty_cell")
    return text


def _formula_cells(
    fmt: str, mapping: dict[str, str], records: list[tuple[int, dict[str, Any]]]
) -> dict[str, list[int]]:
    """File column -> the rows whose cell in it starts like a spreadsheet formula (checked columns only)."""
    rows: dict[str, list[int]] = {}
    for row, cells in records:
        for canon in (*REQUIRED[fmt], *OPTIONAL_COLUMNS):
            if canon not in mapping:
                continue
            value = cells.get(mapping[canon])
            if isinstance(value, str) and value.startswith(FORMULA_PREFIXES):
                rows.setdefault(mapping[canon], []).append(row)
    return rows


def _warn_formulas(report: FeedbackReport, formula_rows: dict[str, list[int]]) -> None:
    """One warning per column with cells that a spreadsheet could run as formulas, listing the first rows."""
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


def _check_enough_rows(report: FeedbackReport, fmt: str) -> None:
    """A file-level error when there are no data rows or too few usable ones, unless one was already reported."""
    if report.file_errors:
        return
    if not report.rows_total:
        report.error("The file has a header but no data rows. Add at least one row below the header.", code="no_rows")
    elif report.rows_usable < MIN_ROWS[fmt]:
        need = "1 usable pair" if fmt == "paired" else "2 usable rows (KTO's reference point needs a batch)"
        report.error(
            f"Only {report.rows_usable} usable row{'s' if report.rows_usable != 1 else ''} left after "
            f"dropping the rows the warnings list; training needs at least {need}.",
            code="too_few_rows",
        )


def _warn_one_label(report: FeedbackReport, fmt: str, usable: list[dict[str, Any]]) -> None:
    """A warning when every usable unpaired row has the same label."""
    if fmt == "unpaired" and usable and len({r["label"] for r in usable}) == 1:
        kind = "desirable (true)" if usable[0]["label"] else "undesirable (false)"
        report.warn(
            f"Every usable row is labelled {kind}. KTO learns best from both kinds; add some of the other.",
            code="one_label",
        )


def _usable_data(fmt: str, mapping: dict[str, str], usable: list[dict[str, Any]]) -> pd.DataFrame:
    """The usable rows as ``FeedbackReport.data``: canonical, optional and metadata columns, then ``row``."""
    columns = [*REQUIRED[fmt], *(c for c in (*OPTIONAL_COLUMNS, *METADATA_COLUMNS) if c in mapping), "row"]
    data = pd.DataFrame(usable, columns=columns)
    if fmt == "unpaired":
        data["label"] = data["label"].astype(bool)
    data["row"] = data["row"].astype(int)
    return data


def _drop_duplicates(report: FeedbackReport, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Drop exact duplicates (warning) and contradictory rows (error on both)."""
    fmt, unit = report.format, report.row_unit
    first_seen: dict[tuple, int] = {}
    contradict: dict[tuple, dict[Any, int]] = {}
    bad: set[int] = set()
    keep: list[dict[str, Any]] = []
    for r in rows:
        p, s = prompt_key(r["prompt"]), r.get("system", "")
        key = (p, r["chosen"], r["rejected"], s) if fmt == "paired" else (p, r["completion"], r["label"], s)
        if key in first_seen:
            report.drop(
                f"This {unit} repeats {unit} {first_seen[key]}; the copy is dropped.",
                row=r["row"],
                code="duplicate_row",
            )
            continue
        first_seen[key] = r["row"]
        if fmt == "paired":
            other = (p, r["rejected"], r["chosen"], s)
            if other in first_seen:
                report.drop(
                    f"This {unit} swaps chosen and rejected compared with {unit} {first_seen[other]}, so the two "
                    "contradict each other; both are dropped. Keep the right one.",
                    row=r["row"],
                    code="contradiction",
                )
                bad.update({r["row"], first_seen[other]})
                if first_seen[other] not in report.dropped_rows:
                    report.dropped_rows.append(first_seen[other])
        else:
            seen = contradict.setdefault((p, r["completion"], s), {})
            seen.setdefault(r["label"], r["row"])
            if len(seen) == 2:
                earlier = seen[not r["label"]]
                report.drop(
                    f"The same prompt and completion is labelled {'true' if not r['label'] else 'false'} "
                    f"in {unit} {earlier} and {'true' if r['label'] else 'false'} here; both are dropped. "
                    "Keep the right label.",
                    row=r["row"],
                    code="contradiction",
                )
                bad.update({r["row"], earlier})
                if earlier not in report.dropped_rows:
                    report.dropped_rows.append(earlier)
        keep.append(r)
    return [r for r in keep if r["row"] not in bad]
