"""Argument checks the objectives share: one message per kind of bad input, naming the value."""

from __future__ import annotations

import math

from torch import Tensor


def check_beta(beta: float) -> None:
    if not (math.isfinite(beta) and beta > 0):
        raise ValueError(f"beta must be a finite number > 0, got {beta!r}")


def check_same_shape(named: dict[str, Tensor]) -> None:
    shapes = {name: tuple(t.shape) for name, t in named.items()}
    first = next(iter(shapes.values()))
    if len(first) != 1 or any(shape != first for shape in shapes.values()):
        listing = ", ".join(f"{name} {shape}" for name, shape in shapes.items())
        raise ValueError(f"expected 1-D tensors of one shape (B,), got {listing}")
