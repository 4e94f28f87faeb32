"""The thread policy splits the cores between the roles running at once, per calling thread."""

from __future__ import annotations

import dataclasses
import threading

import torch

from playground import config
from playground.engine import threads


def _policy(monkeypatch, policy: str, cores: int = 4):
    monkeypatch.setattr(config, "THREADS", dataclasses.replace(config.THREADS, policy=policy, max_threads=cores))


def test_share_splits_the_cores_between_roles_that_overlap(monkeypatch):
    _policy(monkeypatch, "share", cores=4)
    assert threads.share("training") == 4  # nothing else runs: training alone gets every core
    assert threads.share("generation") == 1  # a decode batch never takes more than generation_threads
    entered, leave, seen = threading.Event(), threading.Event(), {}

    def training():
        with threads.for_role("training"):
            seen["training_alone"] = torch.get_num_threads()
            entered.set()
            leave.wait(10)
            threads.rebalance()  # the next step, while generation still runs
            seen["training_during_generation"] = torch.get_num_threads()

    worker = threading.Thread(target=training)
    worker.start()
    entered.wait(10)
    before = torch.get_num_threads()
    with threads.for_role("generation"):
        seen["generation_during_training"] = torch.get_num_threads()
        leave.set()
        worker.join(10)
    assert seen == {"training_alone": 4, "generation_during_training": 1, "training_during_generation": 3}
    assert torch.get_num_threads() == before  # the calling thread's count is put back
    assert threads.share("training") == 4


def test_two_calls_of_one_role_count_once_and_two_heavy_roles_split(monkeypatch):
    _policy(monkeypatch, "share", cores=2)
    with threads.for_role("scoring"), threads.for_role("scoring"):
        assert threads.share() == 2  # one role (entered twice): all cores
        assert threads.share("training") == 1  # training and scoring at once: one core each
    _policy(monkeypatch, "share", cores=8)
    monkeypatch.setattr(config, "THREADS", dataclasses.replace(config.THREADS, generation_threads=2))
    with threads.for_role("generation"):
        assert threads.share() == 2
        assert threads.share("training") == 6


def test_one_and_torch_policies(monkeypatch):
    _policy(monkeypatch, "one")
    assert threads.share() == 1
    _policy(monkeypatch, "torch")
    before = torch.get_num_threads()
    with threads.for_role("training"):
        assert threads.share() is None and torch.get_num_threads() == before
    assert "torch's default" in threads.describe()
    _policy(monkeypatch, "share", cores=2)
    assert "2 cores shared" in threads.describe()
