"""Numbers for people and for JSON: one way to show a number, one way to turn NaN and infinities into null."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

MISSING = "n/a"  # how a missing or non-finite number is shown


def finite_or_none(value: Any) -> float | None:
    """``float(value)`` when it is a finite number, else None (strings that are not numbers, NaN, inf, None)."""
    if isinstance(value, bool):
        return float(value)
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def json_safe(value: Any) -> Any:
    """``value`` with every non-finite float replaced by None and numpy scalars made plain, through dicts, lists and
    tuples, so ``json.dumps(..., allow_nan=False)`` accepts it."""
    if isinstance(value, Mapping):
        return {key: json_safe(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(item) for item in value]
    if hasattr(value, "item") and callable(value.item) and getattr(value, "ndim", None) == 0:
        value = value.item()  # numpy / torch scalars
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    return value


def format_number(value: Any, digits: int = 3, *, signed: bool = False, fixed: bool = False) -> str:
    """``value`` with ``digits`` significant digits (``fixed``: decimals), "n/a" when missing or not finite."""
    number = finite_or_none(value)
    if number is None:
        return MISSING
    sign = "+" if signed else ""
    return f"{number:{sign}.{digits}f}" if fixed else f"{number:{sign}.{digits}g}"


TIE_TEXT = "tie (0.5)"


def accuracy_text(accuracy: float | None, all_tied: bool = False, digits: int = 3) -> str:
    """A preference accuracy for people. When every pair ties (the base itself: pi = pi_ref gives every answer an
    implied reward of exactly 0) it prefers nothing, which is a coin flip: "tie (0.5)", never 0 or a bare 0.5. Every
    tab, plot and command line writes it through here."""
    return TIE_TEXT if all_tied else format_number(accuracy, digits, fixed=True)
