"""ZeroGPU support: ``gpu(duration)`` wraps a function in ``spaces.GPU`` on a ZeroGPU Space and is a no-op elsewhere.

On ZeroGPU a GPU is attached only while a ``@spaces.GPU`` function runs, and ``spaces`` must be imported before
torch initialises CUDA; ``app.py`` calls :func:`prepare` first thing. Nothing changes off Spaces: ``spaces`` is not
even imported.

A ``@spaces.GPU`` function runs in a forked worker process: its arguments and results are pickled across, so it must
take plain values, not the server's objects (locks, threads, the Services container). The engine is therefore
reached through a small registry: :func:`register_engine` at start-up gives a string key, the GPU functions of
``playground.serving.gpu_tasks`` take that key, and the forked worker (a copy of the server's memory) finds the same
engine under it with :func:`engine_for`.
"""

from __future__ import annotations

import os
import threading
import uuid
import weakref
from collections.abc import Callable
from typing import Any, TypeVar

F = TypeVar("F", bound=Callable)

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


# --------------------------------------------------------------------------------------------------------------------
# The engine registry (plain string keys cross the process boundary; engines never do)

_ENGINES: weakref.WeakValueDictionary[str, Any] = weakref.WeakValueDictionary()
_REGISTRY_LOCK = threading.Lock()
_KEY_ATTRIBUTE = "_zerogpu_key"


def register_engine(engine: Any) -> str:
    """The registry key of ``engine`` (registered on first call; the same key for the same engine afterwards)."""
    with _REGISTRY_LOCK:
        key = getattr(engine, _KEY_ATTRIBUTE, None)
        if key is None or _ENGINES.get(key) is not engine:
            key = f"engine-{uuid.uuid4().hex[:12]}"
            setattr(engine, _KEY_ATTRIBUTE, key)
            _ENGINES[key] = engine
        return key


def engine_for(key: str) -> Any:
    """The engine registered under ``key``; a clear error when there is none (the server was not started)."""
    engine = _ENGINES.get(key)
    if engine is None:
        raise RuntimeError(f"No model engine is registered under {key!r}: start the app through app.py, which "
                           "loads the model before serving.")
    return engine
