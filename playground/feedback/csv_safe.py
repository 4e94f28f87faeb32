"""CSV text that is safe to open in a spreadsheet, and the way back.

Every CSV the app writes goes through :func:`to_safe_csv` (or :func:`votes_to_csv`), which neutralises cells that a
spreadsheet would run as a formula by prefixing a single quote, as OWASP recommends. Reading reverses it
(:func:`unquote_formula`): a cell that starts with a single quote followed by a formula character loses the quote, so
exports round-trip.
"""

from __future__ import annotations

import csv
import io
import numbers
from collections.abc import Iterable, Mapping
from typing import Any, Literal

import numpy as np
import pandas as pd

from playground.feedback.schema import FORMULA_PREFIXES, OPTIONAL_COLUMNS, REQUIRED, cell_text, parse_label


def neutralise_formula(text: Any) -> Any:
    """Prefix a single quote to text a spreadsheet would run as a formula (OWASP CSV injection advice).

    Text starting with ``= + - @``, a tab or a carriage return gets a leading ``'``; anything else (including
    non-strings such as numbers) is returned unchanged.
    """
    if isinstance(text, str) and text.startswith(FORMULA_PREFIXES):
        return "'" + text
    return text


def unquote_formula(cell: str) -> str:
    """Undo :func:`neutralise_formula` on a cell read back from a CSV this app wrote."""
    if len(cell) > 1 and cell[0] == "'" and cell[1] in "=+-@\t\r":
        return cell[1:]
    return cell


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
                out.append(neutralise_formula(cell_text(value)))
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
    columns = list(REQUIRED[fmt]) + [c for c in OPTIONAL_COLUMNS if any(cell_text(r.get(c)) for r in rows)]
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
