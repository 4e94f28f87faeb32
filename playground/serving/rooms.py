"""Shared rooms: a presenter opens a room with a short code, everyone who joins with it votes blind on the same
prompts, and the presenter's leaderboard counts the room's votes as they come in.

A room holds its presenter's session id and its current *round*: the prompt the presenter generated last, the
variants in blind order and their answers (and the metrics shown after a vote), so every member sees the same
answers as "Model A", "Model B", ... without generating anything. The votes themselves stay in the
:class:`~playground.feedback.votes.VoteStore`, each under its voter's own session with the room's code in its extra
fields: a voter keeps their votes, and the presenter reads the room's. Rooms are opt-in: a session that never joins
one is never counted in one.

The store is one SQLite file beside the votes, so a room survives a restart of the server and several threads may
use it at once.
"""

from __future__ import annotations

import json
import secrets
import sqlite3
import time
from collections.abc import Mapping
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from playground import config
from playground.common.numbers import json_safe
from playground.serving.settings import ServiceInputError

ALPHABET = "ABCDEFGHJKMNPQRSTUVWXYZ23456789"  # no 0/O, 1/I/L: a code read aloud or off a slide is typed right

_SCHEMA = """
CREATE TABLE IF NOT EXISTS rooms (
    code TEXT PRIMARY KEY,
    presenter TEXT NOT NULL,
    opened REAL NOT NULL,
    closed INTEGER NOT NULL DEFAULT 0,
    round_number INTEGER NOT NULL DEFAULT 0,
    round TEXT NOT NULL DEFAULT ''
);
CREATE INDEX IF NOT EXISTS rooms_by_presenter ON rooms (presenter, opened);
"""


class RoomError(ServiceInputError):
    """A room that cannot be joined or used (unknown or closed code, not its presenter); the message says which."""


def new_code(length: int = config.ROOMS.code_length) -> str:
    """A random room code of ``length`` letters of :data:`ALPHABET` (stored without the dash)."""
    return "".join(secrets.choice(ALPHABET) for _ in range(length))


def normalise_code(text: Any) -> str:
    """A typed code as stored: upper case, without spaces or dashes ("abcd-efgh" -> "ABCDEFGH")."""
    return "".join(ch for ch in str(text or "").upper() if ch not in " -\t")


def shown_code(code: str) -> str:
    """A stored code as people read it: ABCD-EFGH."""
    half = len(code) // 2
    return f"{code[:half]}-{code[half:]}" if len(code) > 4 else code


@dataclass(frozen=True)
class Round:
    """One prompt of a room: the variants in blind order, their answers and metrics by name."""

    number: int
    prompt: str
    system: str
    variants: list[str]
    answers: dict[str, str]
    scored: dict[str, Any]


@dataclass(frozen=True)
class Room:
    code: str
    presenter: str
    opened: float
    closed: bool
    round: Round | None

    @property
    def shown_code(self) -> str:
        return shown_code(self.code)


class RoomStore:
    """Rooms in ``<data_dir>/rooms.sqlite3``. Thread-safe; every method opens and closes its own connection."""

    def __init__(self, path: Path, settings: config.RoomSettings = config.ROOMS):
        self.path = Path(path)
        self.settings = settings
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with closing(self._connect()) as conn, conn:
            conn.executescript(_SCHEMA)

    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self.path, timeout=30, isolation_level="DEFERRED")
        conn.execute("PRAGMA journal_mode=WAL")
        return conn

    def _expired(self, opened: float) -> bool:
        return time.time() - opened > self.settings.lifetime_hours * 3600

    # ----------------------------------------------------------------------------------------------------------------
    def open(self, presenter: str) -> Room:
        """The presenter's open room, or a new one: a presenter has one room at a time, so reloading the page and
        opening again gives the same code. The oldest rooms close when the server holds too many."""
        current = self.of_presenter(presenter)
        if current is not None and not current.closed:
            return current
        with closing(self._connect()) as conn, conn:
            while True:
                code = new_code(self.settings.code_length)
                if conn.execute("SELECT 1 FROM rooms WHERE code = ?", (code,)).fetchone() is None:
                    break
            conn.execute("INSERT INTO rooms (code, presenter, opened) VALUES (?, ?, ?)", (code, presenter, time.time()))
            conn.execute("UPDATE rooms SET closed = 1 WHERE closed = 0 AND code NOT IN (SELECT code FROM rooms "
                         "WHERE closed = 0 ORDER BY opened DESC LIMIT ?)", (self.settings.open_rooms,))
        return self.get(code, presenter=presenter)

    def get(self, code: Any, presenter: str | None = None) -> Room:
        """The room of ``code``. RoomError when there is none, or, unless ``presenter`` is its presenter (who still
        reads a closed room's votes), when it is closed or expired."""
        code = normalise_code(code)
        if not code:
            raise RoomError("Type the room's code (e.g. ABCD-EFGH) to join it.")
        with closing(self._connect()) as conn:
            row = conn.execute("SELECT code, presenter, opened, closed, round_number, round FROM rooms WHERE code = ?",
                               (code,)).fetchone()
        if row is None:
            raise RoomError(f"No room has the code {shown_code(code)}: check it with the presenter.")
        room = _room(row)
        if presenter is not None and room.presenter == presenter:
            return room
        if room.closed or self._expired(room.opened):
            raise RoomError(f"Room {room.shown_code} has closed: ask the presenter for the new code.")
        return room

    def of_presenter(self, presenter: str) -> Room | None:
        """The presenter's latest room that has not expired (open or closed), or None."""
        with closing(self._connect()) as conn:
            row = conn.execute("SELECT code, presenter, opened, closed, round_number, round FROM rooms "
                               "WHERE presenter = ? ORDER BY opened DESC LIMIT 1", (presenter,)).fetchone()
        if row is None or self._expired(row[2]):
            return None
        return _room(row)

    def publish(self, code: str, presenter: str, prompt: str, system: str, variants: list[str],
                answers: Mapping[str, str], scored: Mapping[str, Any]) -> Round:
        """Make a generation the room's next round (presenter only); returns it with its number."""
        room = self._presented(code, presenter)
        if room.closed:
            raise RoomError(f"Room {room.shown_code} is closed: open a new room to go on.")
        record = {"prompt": prompt, "system": system, "variants": list(variants),
                  "answers": {name: answers[name] for name in variants}, "scored": json_safe(dict(scored))}
        with closing(self._connect()) as conn, conn:
            conn.execute("UPDATE rooms SET round_number = round_number + 1, round = ? WHERE code = ?",
                         (json.dumps(record, allow_nan=False), room.code))
            number = conn.execute("SELECT round_number FROM rooms WHERE code = ?", (room.code,)).fetchone()[0]
        return Round(number, **record)

    def close(self, code: str, presenter: str) -> Room:
        """Close the room (presenter only): nobody joins or gets a new prompt; its votes stay the presenter's."""
        room = self._presented(code, presenter)
        with closing(self._connect()) as conn, conn:
            conn.execute("UPDATE rooms SET closed = 1 WHERE code = ?", (room.code,))
        return self.get(room.code, presenter=presenter)

    def _presented(self, code: str, presenter: str) -> Room:
        room = self.get(code, presenter=presenter)
        if room.presenter != presenter:
            raise RoomError(f"Only the presenter of room {room.shown_code} can do this.")
        return room


def _room(row: tuple) -> Room:
    code, presenter, opened, closed, number, round_json = row
    current = Round(number, **json.loads(round_json)) if number and round_json else None
    return Room(code, presenter, opened, bool(closed), current)
