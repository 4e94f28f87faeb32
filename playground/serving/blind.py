"""Blind comparisons: the answers shown as "Model A", "Model B", ... in an order fixed per prompt, the names revealed
once the vote is cast (as the Chatbot Arena does), so a stakeholder judges the answers and not the labels.

The order is a shuffle seeded by an HMAC of the prompt under the server's secret: every vote on one prompt sees the
same order on this server, and no visitor can predict it. Votes always record the true variant names. The API keeps
each blind generation as a :class:`Ballot` in a bounded :class:`BallotBox` until it is voted on.
"""

from __future__ import annotations

import hashlib
import hmac
import random
import secrets
import threading
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

MAX_OPEN_BALLOTS = 512  # blind API generations kept for a vote; the oldest are forgotten first


def blind_order(secret: str, prompt: str, variants: Sequence[str]) -> list[str]:
    """``variants`` in the order they are shown for ``prompt``: independent of the order they were ticked in, the
    same for every request with this prompt on this server, unpredictable without the server's ``secret``."""
    key = hmac.new(secret.encode("utf-8"), prompt.encode("utf-8"), hashlib.sha256).digest()
    ordered = sorted(dict.fromkeys(variants))
    random.Random(key).shuffle(ordered)
    return ordered


def blind_labels(count: int) -> list[str]:
    """The names shown instead of the variants: Model A, Model B, ..."""
    return [f"Model {chr(ord('A') + i)}" for i in range(count)]


@dataclass
class Ballot:
    """One blind generation: the prompt, the variants in display order, their answers (and metrics) by name."""

    prompt: str
    system: str
    variants: list[str]
    answers: dict[str, str]
    metrics: dict[str, Any] = field(default_factory=dict)

    @property
    def labels(self) -> list[str]:
        return blind_labels(len(self.variants))

    def name_of(self, label: str) -> str | None:
        """The variant behind a label ("Model B"), or None for an unknown label."""
        return dict(zip(self.labels, self.variants)).get(label)


class BallotBox:
    """Blind API generations waiting for their vote, by a 128-bit id; at most ``capacity``, oldest dropped."""

    def __init__(self, capacity: int = MAX_OPEN_BALLOTS):
        self.capacity = capacity
        self._ballots: OrderedDict[str, Ballot] = OrderedDict()
        self._lock = threading.Lock()

    def open(self, ballot: Ballot) -> str:
        ballot_id = secrets.token_hex(16)
        with self._lock:
            self._ballots[ballot_id] = ballot
            while len(self._ballots) > self.capacity:
                self._ballots.popitem(last=False)
        return ballot_id

    def get(self, ballot_id: str) -> Ballot | None:
        with self._lock:
            return self._ballots.get(str(ballot_id or ""))
