"""ZeroGPU wrapping is a no-op off Spaces and uses spaces.GPU on a ZeroGPU Space.

With a fake ``spaces`` module whose GPU decorator pickles every argument, result and yielded value (what ZeroGPU's
forked worker does), the app's GPU paths (Compare, /generate, Inspect scoring, training with progress and cancel)
are run on the tiny engine: nothing the server holds (locks, threads, callbacks) may cross that boundary.
"""

from __future__ import annotations

import dataclasses
import importlib
import inspect
import pickle
import sys
import time
import types

import pandas as pd
import pytest

from playground import config
from playground.serving import gpu_tasks  # noqa: E402
from playground.serving.gpu_tasks import DURATIONS  # noqa: E402
from playground.serving.services import Services  # noqa: E402
from playground.serving.settings import generation_settings  # noqa: E402
from playground.serving.zerogpu import gpu, on_zerogpu, prepare  # noqa: E402


def test_no_op_off_spaces(monkeypatch):
    monkeypatch.delenv("SPACE_ID", raising=False)
    monkeypatch.delenv("SPACES_ZERO_GPU", raising=False)

    def work(x):
        return x + 1

    assert gpu(60)(work) is work
    prepare()
    assert not on_zerogpu()


def test_wraps_with_spaces_gpu_on_zerogpu(monkeypatch):
    calls = []
    fake = types.ModuleType("spaces")

    def gpu(duration):
        def decorate(function):
            calls.append(duration)
            return lambda *a, **k: ("on-gpu", function(*a, **k))

        return decorate

    fake.GPU = gpu
    monkeypatch.setitem(sys.modules, "spaces", fake)
    monkeypatch.setenv("SPACE_ID", "someone/playground")
    monkeypatch.setenv("SPACES_ZERO_GPU", "true")
    wrapped = gpu(config.ZEROGPU.training)(lambda x: x * 2)
    assert wrapped(3) == ("on-gpu", 6) and calls == [config.ZEROGPU.training]


# --------------------------------------------------------------------------------------------------------------------
# The GPU functions: which are wrapped, with which durations, and that they work across a pickling boundary

GPU_FUNCTIONS = ("stream_answers", "score_answers", "generate_and_score", "score_rows", "reward_features",
                 "train_adapter")
PAIRS = pd.DataFrame({"prompt": [f"Question {i}?" for i in range(6)], "chosen": ["Yes, it is."] * 6,
                      "rejected": ["Go away."] * 6})


def _roundtrip(value):
    """What crossing into a ZeroGPU worker does to a value: pickled and unpickled (closures and locks fail here)."""
    return pickle.loads(pickle.dumps(value))


def fake_spaces(calls: dict, used: list) -> types.ModuleType:
    """A stand-in for the ``spaces`` package whose GPU decorator records the duration and makes every argument,
    result and yielded value cross a pickling boundary, as ZeroGPU's forked worker does."""
    module = types.ModuleType("spaces")

    def GPU(duration=60):  # noqa: N802 - the real name
        def decorate(function):
            calls[function.__name__.lstrip("_")] = duration
            if inspect.isgeneratorfunction(function):
                def stream(*args, **kwargs):
                    used.append(function.__name__)
                    args, kwargs = _roundtrip((args, kwargs))
                    for item in function(*args, **kwargs):
                        yield _roundtrip(item)
                return stream

            def call(*args, **kwargs):
                used.append(function.__name__)
                args, kwargs = _roundtrip((args, kwargs))
                return _roundtrip(function(*args, **kwargs))
            return call
        return decorate

    module.GPU = GPU
    return module


@pytest.fixture()
def on_fake_zerogpu(monkeypatch):
    calls: dict = {}
    used: list = []
    monkeypatch.setitem(sys.modules, "spaces", fake_spaces(calls, used))
    monkeypatch.setenv("SPACE_ID", "someone/playground")
    monkeypatch.setenv("SPACES_ZERO_GPU", "true")
    importlib.reload(gpu_tasks)
    try:
        yield calls, used
    finally:
        monkeypatch.undo()
        importlib.reload(gpu_tasks)
        assert all(getattr(gpu_tasks, n) is getattr(gpu_tasks, f"_{n}") for n in GPU_FUNCTIONS)


def test_off_spaces_nothing_is_wrapped_and_spaces_is_not_imported(monkeypatch):
    monkeypatch.delenv("SPACE_ID", raising=False)
    monkeypatch.delenv("SPACES_ZERO_GPU", raising=False)
    importlib.reload(gpu_tasks)
    for name in GPU_FUNCTIONS:
        assert getattr(gpu_tasks, name) is getattr(gpu_tasks, f"_{name}"), name
    importlib.import_module("app")  # app.py calls prepare() first thing
    assert "spaces" not in sys.modules


def test_each_gpu_function_is_wrapped_with_its_documented_duration(on_fake_zerogpu):
    calls, _used = on_fake_zerogpu
    assert calls == {
        "stream_answers": config.ZEROGPU.generation,
        "score_answers": config.ZEROGPU.generation,
        "generate_and_score": config.ZEROGPU.generation,
        "score_rows": config.ZEROGPU.scoring,
        "reward_features": config.ZEROGPU.scoring,
        "train_adapter": config.ZEROGPU.training,
    } == DURATIONS
    for name in GPU_FUNCTIONS:
        assert getattr(gpu_tasks, name) is not getattr(gpu_tasks, f"_{name}")


def test_app_paths_work_across_the_pickling_boundary(on_fake_zerogpu, tiny_engine, tmp_path):
    from playground.ui import compare_tab

    _calls, used = on_fake_zerogpu
    services = Services.for_engine(tiny_engine, tmp_path / "data", heldout_file=None)

    # Compare: streamed answers, then the metrics (two GPU calls), through the real handler.
    outputs = list(compare_tab.generate_answers(services, "Say hello", "", ["base", "dpo"], "greedy", 0.7, 0.9, 4, 0))
    last = outputs[-1][0]
    assert last["variants"] == ["base", "dpo"] and set(last["answers"]) == {"base", "dpo"}
    # the /generate API's path
    result = services.generate_and_score("Say hello", ["base", "kto"], generation_settings({"max_new_tokens": 3}))
    assert set(result) == {"base", "kto"} and result["base"]["implied_reward"] == pytest.approx(0.0, abs=1e-6)

    # Inspect: a progress callback is a closure; on ZeroGPU it is not sent across (this would fail to pickle).
    seen = []
    scores = services.score_dataset(PAIRS, ["dpo"], lambda f, m: seen.append(f))
    assert scores.n_pairs == 6 and "dpo" in scores.variants

    # Training: file hooks cross the boundary; the job still shows every step (mirrored from the files).
    tiny = dataclasses.replace(config.TRAIN, steps=2, batch_size=2, max_length=64,
                               lora=dataclasses.replace(config.TRAIN.lora, r=4, alpha=8))
    job = services.queue.submit(PAIRS, tiny, "zg-run")
    long = services.queue.submit(PAIRS, dataclasses.replace(tiny, steps=5000), "zg-long")
    deadline = time.monotonic() + 120
    while not (job.finished and len(long.history) >= 1) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert job.status == "done", job.error
    assert [row["step"] for row in job.history] == [1, 2]
    assert "zg-run" in services.variant_names()
    assert services.queue.cancel(long.id)  # the cancel event reaches the worker through the flag file
    while not long.finished and time.monotonic() < deadline:
        time.sleep(0.1)
    assert long.status == "cancelled" and long.adapter_dir is None
    assert set(used) == {f"_{name}" for name in GPU_FUNCTIONS}
