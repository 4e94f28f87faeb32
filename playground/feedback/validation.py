"""Checking what was read: which columns mean what, then each row, cell by cell, then duplicates.

Rules: an *error* on a row drops that row; an error without a row (a file-level error) makes the file unusable.
*Warnings* never drop anything except duplicate rows (the later copy is dropped). A file can be trained on
(``FeedbackReport.trainable``) when it has no file-level error; a file-level error is added when fewer than
``MIN_ROWS`` usable rows remain (paired: 1 pair, unpaired: 2 rows, which KTO's batch reference point needs).
"""

from __future__ import annotations

import difflib
import json
import re
from collections.abc import Callable
from typing import Any

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
    present = set(normed)
    if not present:
        report.error(
            "No column names found: the first row must name the columns, e.g. prompt,chosen,rejected.", code="no_header"
        )
        raise StopReading
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
            raise StopReading
        report.format = "paired" if scores["paired"] >= scores["unpaired"] else "unpaired"

    fmt = report.format
    mapping = {c: normed[c] for c in REQUIRED[fmt] + OPTIONAL_COLUMNS + METADATA_COLUMNS if c in normed}
    other = "unpaired" if fmt == "paired" else "paired"
    for col in REQUIRED[fmt]:
        if col in mapping:
            continue
        cand = guess(col, [u for u in unknown if u not in {normalise_column_name(v) for v in mapping.values()}])
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
    used = {normalise_column_name(v) for v in mapping.values()}
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
    return cell_text(value), None


def validate_rows(
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
        if ok and fmt == "paired" and same_text(out["chosen"], out["rejected"]):
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
                    out[meta] = cell_text(cells.get(mapping[meta])).strip()
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
        p, s = prompt_key(r["prompt"]), r.get("system", "")
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
