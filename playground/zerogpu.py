"""ZeroGPU support: ``gpu(duration)`` wraps a function in ``spaces.GPU`` on a ZeroGPU Space and is a no-op elsewhere.

On ZeroGPU a GPU is attached only while a ``@spaces.GPU`` function runs, and ``spaces`` must be imported before
torch initialises CUDA; ``app.py`` calls :func:`prepare` first thing. Nothing changes off Spaces: ``spaces`` is not
even imported.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import TypeVar

F = TypeVar("F", bound=Callable)

# Seconds a GPU is held per call: a side-by-side answer, a data-set scoring, a short fine-tune.
GENERATION_SECONDS = 60
SCORING_SECONDS = 90
TRAINING_SECONDS = 300


def on_zerogpu() -> bool:
    """True on a Hugging Face ZeroGPU Space (the platform sets ``SPACES_ZERO_GPU``)."""
    return bool(os.environ.get("SPACE_ID")) and "SPACES_ZERO_GPU" in os.environ


def prepare() -> None:
    """Import ``spaces`` before torch when on ZeroGPU (it patches CUDA initialisation)."""
    if on_zerogpu():
        import spaces  # noqa: F401


def gpu(duration: int) -> Callable[[F], F]:
    """Decorator: ``spaces.GPU(duration=duration)`` on ZeroGPU, the function unchanged elsewhere."""

    def wrap(function: F) -> F:
        if not on_zerogpu():
            return function
        import spaces

        return spaces.GPU(duration=duration)(function)

    return wrap
