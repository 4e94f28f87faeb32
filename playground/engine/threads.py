"""How many intra-op threads torch uses in each thread that runs the model, so that a training and a generation
sharing a small machine do not spin-wait on each other's cores.

torch's OpenMP pool defaults to one thread per core in every thread that calls it. When a training step and a
decode step run at once on a 2-core box, each asks for both cores, and OpenMP threads that finish their share first
spin waiting for the ones the other computation displaced: a KTO step was measured at 72 s against 5 s. The count is
per calling thread (``torch.set_num_threads`` in one thread leaves the others alone), so each role sets its own:

``share`` (the default): the cores are split between the roles running at that moment; training or scoring alone
gets all of them; generation takes at most ``config.THREADS.generation_threads`` (1: a decode step is many small
ops, for which a second thread cost more than it gave here). The decoder sets its count at the start of each batch
and the training loop at each step, so a change takes effect within one step. ``one``: every role always uses one
thread. ``torch``: leave torch's default.
The measurements behind the default are in ``BENCHMARKS.md`` (``bench/bench_threads.py``).
"""

from __future__ import annotations

import functools
import os
import threading
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager

import torch

from playground import config

_active: Counter[str] = Counter()
_lock = threading.Lock()
_current = threading.local()  # the role the calling thread runs
_limit: list[int] = []  # set by ``limit`` (a benchmark's or CLI's --threads): the cores to share


def limit(cores: int) -> None:
    """Share ``cores`` threads instead of the machine's cores (and use them in the calling thread now)."""
    _limit[:] = [max(1, int(cores))]
    torch.set_num_threads(_limit[0])


def budget() -> int:
    """The threads shared between roles: ``limit``'s, else ``config.THREADS.max_threads``, else OMP_NUM_THREADS,
    else the cores this process may use."""
    if _limit:
        return _limit[0]
    env = os.environ.get("OMP_NUM_THREADS", "")
    return config.THREADS.max_threads or (int(env) if env.isdigit() and int(env) > 0 else usable_cores())


def usable_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def share(role: str | None = None) -> int | None:
    """Threads the calling thread (running ``role``, or the role it entered last) should use now, or None to leave
    torch alone. Under ``share``, generation takes at most ``config.THREADS.generation_threads`` and the other roles
    split the rest."""
    policy = config.THREADS.policy
    if policy == "torch":
        return None
    if policy == "one":
        return 1
    role = role or getattr(_current, "role", None)
    cores = budget()
    with _lock:
        running = {name for name, count in _active.items() if count > 0} | ({role} if role else set())
    generation = max(1, min(config.THREADS.generation_threads, cores // len(running))) if (
        "generation" in running) else 0
    if role == "generation":
        return generation
    heavy = len(running - {"generation"}) or 1
    return max(1, (cores - generation) // heavy)


def rebalance() -> None:
    """Set the calling thread's torch threads to its current share (between steps of a long computation)."""
    threads = share(getattr(_current, "role", None))
    if threads is not None and torch.get_num_threads() != threads:
        torch.set_num_threads(threads)


@contextmanager
def for_role(role: str) -> Iterator[None]:
    """Within this block the calling thread runs ``role`` ("generation", "training", "scoring") and counts towards
    the split; its thread count is its share on entry (see :func:`rebalance` for later changes)."""
    previous, previous_role = torch.get_num_threads(), getattr(_current, "role", None)
    with _lock:
        _active[role] += 1
    _current.role = role
    try:
        rebalance()
        yield
    finally:
        _current.role = previous_role
        with _lock:
            _active[role] -= 1
        if config.THREADS.policy != "torch":
            torch.set_num_threads(previous)


def role(name: str):
    """Decorator: the function runs under :func:`for_role` ``name``."""
    def wrap(function):
        @functools.wraps(function)
        def run(*args, **kwargs):
            with for_role(name):
                return function(*args, **kwargs)
        return run
    return wrap


def describe() -> str:
    """One line for the start-up log: the policy and what it means on this machine."""
    policy, cores = config.THREADS.policy, budget()
    if policy == "torch":
        return f"torch threads: torch's default ({torch.get_num_threads()}) in every thread ({cores} cores)"
    if policy == "one":
        return f"torch threads: 1 per model thread ({cores} cores)"
    cap = min(cores, max(1, config.THREADS.generation_threads))
    return (f"torch threads: {cores} cores shared by what runs at once: generation uses {cap}, training and "
            f"scoring get all {cores} alone and the rest when they overlap")
