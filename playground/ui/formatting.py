"""How the UI writes numbers that need a rule, so every tab writes them the same way."""

from __future__ import annotations

from playground.common.numbers import format_number

TIE_TEXT = "tie (0.5)"


def accuracy_text(accuracy: float | None, all_tied: bool = False, digits: int = 3) -> str:
    """A preference accuracy for people. When every pair ties (the base itself: pi = pi_ref gives every answer an
    implied reward of exactly 0) it prefers nothing, which is a coin flip: "tie (0.5)", never 0 or a bare 0.5."""
    return TIE_TEXT if all_tied else format_number(accuracy, digits, fixed=True)
