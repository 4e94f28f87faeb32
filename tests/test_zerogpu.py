"""ZeroGPU wrapping is a no-op off Spaces and uses spaces.GPU on a ZeroGPU Space."""

from __future__ import annotations

import sys
import types

from playground import zerogpu


def test_no_op_off_spaces(monkeypatch):
    monkeypatch.delenv("SPACE_ID", raising=False)
    monkeypatch.delenv("SPACES_ZERO_GPU", raising=False)

    def work(x):
        return x + 1

    assert zerogpu.gpu(60)(work) is work
    zerogpu.prepare()
    assert not zerogpu.on_zerogpu()


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
    wrapped = zerogpu.gpu(zerogpu.TRAINING_SECONDS)(lambda x: x * 2)
    assert wrapped(3) == ("on-gpu", 6) and calls == [zerogpu.TRAINING_SECONDS]
