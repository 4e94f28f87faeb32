"""A persistent, crash-safe store of the votes people cast on the Compare tab, keyed by a per-browser session id.

One SQLite file (WAL journal, ``synchronous=FULL``) in the per-server data directory: a vote is on disk when
:meth:`VoteStore.add` returns, a crash never leaves half a row, and several threads may write at once (each call
opens its own short-lived connection).

Vote kinds and what they export to (the upload formats of ``feedback.schema``):

============  ===================================  ==============================================================
kind          paired (prompt, chosen, rejected)    unpaired (prompt, completion, label)
============  ===================================  ==============================================================
left_better   chosen = left, rejected = right      left desirable (true), right undesirable (false)
right_better  chosen = right, rejected = left      right desirable, left undesirable
both_bad      (nothing: no preferred answer)       both undesirable
tie           (nothing)                            (nothing)
thumbs_up     (nothing: a single answer)           the answer desirable
thumbs_down   (nothing)                            the answer undesirable
============  ===================================  ==============================================================

Ties are recorded (they are feedback too) but never exported as training rows: a tie says neither answer is better,
and neither DPO nor KTO has a term for "equally good". :func:`export_note` says so in words.
"""

from __future__ import annotations

import json
import re
import sqlite3
import time
from collections.abc import Mapping
from contextlib import closing
from pathlib import Path
from typing import Any

import pandas as pd

from playground import config
from playground.common.files import atomic_write_text
from playground.feedback.csv_safe import votes_to_csv
from playground.feedback.schema import REQUIRED

KINDS = ("left_better", "right_better", "tie", "both_bad", "thumbs_up", "thumbs_down")
PAIR_KINDS = ("left_better", "right_better", "tie", "both_bad")  # need two answers (a = left, b = right)
KIND_LABELS = {
    "left_better": "left better",
    "right_better": "right better",
    "tie": "tie",
    "both_bad": "both bad",
    "thumbs_up": "👍 good",
    "thumbs_down": "👎 bad",
}
COLUMNS = ("id", "created", "kind", "prompt", "system", "variant_a", "answer_a", "variant_b", "answer_b")
SESSION_PATTERN = re.compile(r"^[A-Za-z0-9_-]{24,64}$")  # at least 96 bits as hex; the page makes 128-bit ids

_SCHEMA = """
CREATE TABLE IF NOT EXISTS votes (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    session TEXT NOT NULL,
    created TEXT NOT NULL,
    kind TEXT NOT NULL,
    prompt TEXT NOT NULL,
    system TEXT NOT NULL DEFAULT '',
    variant_a TEXT NOT NULL,
    answer_a TEXT NOT NULL,
    variant_b TEXT NOT NULL DEFAULT '',
    answer_b TEXT NOT NULL DEFAULT '',
    extra TEXT NOT NULL DEFAULT '{}'
);
CREATE INDEX IF NOT EXISTS votes_by_session ON votes (session, id);
"""


class VoteError(ValueError):
    """A vote that cannot be recorded (unknown kind, missing answer, bad session id); the message says which."""


def valid_session_id(session_id: Any) -> bool:
    return isinstance(session_id, str) and bool(SESSION_PATTERN.match(session_id))


class VoteStore:
    """Votes in ``<data_dir>/votes.sqlite3``. Thread-safe; every method opens and closes its own connection."""

    def __init__(self, path: Path, max_chars: int = config.FEEDBACK.max_cell_chars,
                 quotas: config.Quotas = config.QUOTAS):
        self.path = Path(path)
        self.max_chars = max_chars
        self.quotas = quotas
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with closing(self._connect()) as conn, conn:
            conn.executescript(_SCHEMA)

    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self.path, timeout=30, isolation_level="DEFERRED")
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=FULL")
        return conn

    # ----------------------------------------------------------------------------------------------------------------
    def add(self, session_id: str, row: Mapping[str, Any]) -> dict[str, Any]:
        """Record one vote and return it as stored (with ``id`` and ``created``).

        ``row``: ``kind`` (one of :data:`KINDS`), ``prompt``, optional ``system``; ``variant_a``/``answer_a`` (the
        left answer, or the one answer of a thumbs vote) and, for pair kinds, ``variant_b``/``answer_b`` (the right).
        """
        if not valid_session_id(session_id):
            raise VoteError("No valid session id: reload the page to start a session.")
        kind = str(row.get("kind", ""))
        if kind not in KINDS:
            raise VoteError(f"Unknown vote kind {kind!r}; use one of {', '.join(KINDS)}.")
        prompt = self._text(row.get("prompt"))
        if not prompt.strip():
            raise VoteError("The vote has no prompt: generate answers first.")
        answer_a = self._text(row.get("answer_a"))
        variant_a = self._text(row.get("variant_a"))
        answer_b = self._text(row.get("answer_b")) if kind in PAIR_KINDS else ""
        variant_b = self._text(row.get("variant_b")) if kind in PAIR_KINDS else ""
        if not variant_a or (kind in PAIR_KINDS and not variant_b):
            raise VoteError("The vote names no answer: generate answers first.")
        if kind in PAIR_KINDS and variant_a == variant_b:
            raise VoteError("Pick two different columns to compare (left and right are the same).")
        extra = {k: v for k, v in row.items() if k not in COLUMNS and k != "session"}
        record = {
            "created": time.strftime("%Y-%m-%d %H:%M:%S"),
            "kind": kind,
            "prompt": prompt,
            "system": self._text(row.get("system")),
            "variant_a": variant_a,
            "answer_a": answer_a,
            "variant_b": variant_b,
            "answer_b": answer_b,
        }
        with closing(self._connect()) as conn, conn:
            self._check_quota(conn, session_id)
            cursor = conn.execute(
                "INSERT INTO votes (session, created, kind, prompt, system, variant_a, answer_a, variant_b, answer_b,"
                " extra) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (session_id, *record.values(), json.dumps(extra, default=str)))
            record["id"] = cursor.lastrowid
        return {"id": record.pop("id"), **record}

    def _check_quota(self, conn: sqlite3.Connection, session_id: str) -> None:
        """VoteError when the session, or the server, holds as many votes as ``config.QUOTAS`` allows."""
        mine = conn.execute("SELECT COUNT(*) FROM votes WHERE session = ?", (session_id,)).fetchone()[0]
        if mine >= self.quotas.votes_per_session:
            raise VoteError(f"This session has {mine:,} votes, the most one session may cast on this server "
                            f"({self.quotas.votes_per_session:,}). Download them (the CSV buttons under the "
                            "votes), train on them, or undo some.")
        total = conn.execute("SELECT COUNT(*) FROM votes").fetchone()[0]
        if total >= self.quotas.votes_total:
            raise VoteError(f"This server holds {total:,} votes, its limit ({self.quotas.votes_total:,}); no more "
                            "can be recorded. Download your votes to keep them.")

    def _text(self, value: Any) -> str:
        text = "" if value is None else str(value)
        return text[: self.max_chars]

    def for_session(self, session_id: str, *, with_blind: bool = False) -> pd.DataFrame:
        """The session's votes, oldest first, with the columns of :data:`COLUMNS` (empty frame when none);
        ``with_blind`` adds a bool column ``blind``: the vote was cast before the names were shown."""
        columns = list(COLUMNS) + (["extra"] if with_blind else [])
        if not valid_session_id(session_id):
            rows: list = []
        else:
            with closing(self._connect()) as conn:
                rows = conn.execute(f"SELECT {', '.join(columns)} FROM votes WHERE session = ? ORDER BY id",
                                    (session_id,)).fetchall()
        frame = pd.DataFrame(rows, columns=columns)
        if with_blind:
            frame["blind"] = [bool(json.loads(extra or "{}").get("blind")) for extra in frame.pop("extra")]
        return frame

    def for_room(self, code: str) -> pd.DataFrame:
        """The votes cast in a shared room (``serving.rooms``), by every session that joined it, oldest first, with
        the columns of :data:`COLUMNS`, a bool ``blind`` column and the voter's ``session``."""
        columns = ["session", *COLUMNS, "extra"]
        with closing(self._connect()) as conn:
            rows = conn.execute(f"SELECT {', '.join(columns)} FROM votes WHERE json_extract(extra, '$.room') = ? "
                                "ORDER BY id", (str(code),)).fetchall()
        frame = pd.DataFrame(rows, columns=columns)
        frame["blind"] = [bool(json.loads(extra or "{}").get("blind")) for extra in frame.pop("extra")]
        return frame

    def count(self, session_id: str) -> int:
        if not valid_session_id(session_id):
            return 0
        with closing(self._connect()) as conn:
            return conn.execute("SELECT COUNT(*) FROM votes WHERE session = ?", (session_id,)).fetchone()[0]

    def delete_last(self, session_id: str) -> bool:
        """Remove the session's most recent vote (an undo); True when one was removed."""
        if not valid_session_id(session_id):
            return False
        with closing(self._connect()) as conn, conn:
            cursor = conn.execute("DELETE FROM votes WHERE id = (SELECT MAX(id) FROM votes WHERE session = ?)",
                                  (session_id,))
            return cursor.rowcount > 0


# --------------------------------------------------------------------------------------------------------------------
# Export to the feedback formats


def _system(record: Mapping[str, Any]) -> dict[str, str]:
    return {"system": record["system"]} if record.get("system") else {}


def to_paired_rows(votes: pd.DataFrame) -> list[dict[str, Any]]:
    """prompt, chosen, rejected (+ system) from left/right-better votes; other kinds give no pair."""
    rows = []
    for record in votes.to_dict("records"):
        if record["kind"] == "left_better":
            chosen, rejected = record["answer_a"], record["answer_b"]
        elif record["kind"] == "right_better":
            chosen, rejected = record["answer_b"], record["answer_a"]
        else:
            continue
        rows.append({"prompt": record["prompt"], "chosen": chosen, "rejected": rejected, **_system(record)})
    return rows


def to_unpaired_rows(votes: pd.DataFrame) -> list[dict[str, Any]]:
    """prompt, completion, label (+ system): thumbs as given, both-bad as two undesirable rows, left/right-better as
    the winner desirable and the loser undesirable. Ties give nothing."""
    rows = []
    for record in votes.to_dict("records"):
        kind = record["kind"]
        if kind == "thumbs_up":
            labelled = [(record["answer_a"], True)]
        elif kind == "thumbs_down":
            labelled = [(record["answer_a"], False)]
        elif kind == "both_bad":
            labelled = [(record["answer_a"], False), (record["answer_b"], False)]
        elif kind == "left_better":
            labelled = [(record["answer_a"], True), (record["answer_b"], False)]
        elif kind == "right_better":
            labelled = [(record["answer_b"], True), (record["answer_a"], False)]
        else:
            continue
        rows.extend({"prompt": record["prompt"], "completion": completion, "label": label, **_system(record)}
                    for completion, label in labelled)
    return rows


def export_csv(votes: pd.DataFrame, fmt: str) -> str:
    """The votes as a CSV in exactly the upload format ``fmt`` ("paired" or "unpaired"), formula cells neutralised
    by ``csv_safe.votes_to_csv``. With no exportable vote the CSV is the header alone."""
    rows = to_paired_rows(votes) if fmt == "paired" else to_unpaired_rows(votes)
    if not rows:
        return ",".join(REQUIRED[fmt]) + "\n"
    return votes_to_csv(rows, fmt=fmt)


def write_exports(votes: pd.DataFrame, folder: Path, stem: str = "votes") -> dict[str, Path]:
    """Write ``<stem>_paired.csv`` and ``<stem>_unpaired.csv`` into ``folder``; return their paths by format."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    paths = {}
    for fmt in ("paired", "unpaired"):
        # atomic, with a unique temporary name: two requests of one session may export at once
        paths[fmt] = atomic_write_text(folder / f"{stem}_{fmt}.csv", export_csv(votes, fmt))
    return paths


def export_note(votes: pd.DataFrame) -> str:
    """A sentence on what the export holds: pairs, labelled samples, and the ties that are left out."""
    if votes.empty:
        return "No votes yet: generate answers, then vote under them."
    counts = votes["kind"].value_counts().to_dict()
    pairs, samples = len(to_paired_rows(votes)), len(to_unpaired_rows(votes))
    parts = [f"{len(votes)} vote{'s' if len(votes) != 1 else ''}: {pairs} pair{'s' if pairs != 1 else ''} for DPO "
             f"(from left/right-better votes), {samples} labelled answer{'s' if samples != 1 else ''} for KTO "
             "(thumbs, both-bad, and left/right-better split into a desirable winner and an undesirable loser)."]
    ties = counts.get("tie", 0)
    if ties:
        parts.append(f"{ties} tie vote{'s are' if ties != 1 else ' is'} recorded but not exported as training rows: "
                     "a tie prefers neither answer, and neither DPO nor KTO learns from 'equally good'.")
    return " ".join(parts)


def display_frame(votes: pd.DataFrame) -> pd.DataFrame:
    """The session's votes as the Compare tab shows them: newest first, short columns."""
    if votes.empty:
        return pd.DataFrame(columns=["#", "vote", "prompt", "left, or the rated answer", "right"])
    shown = pd.DataFrame({
        "#": range(1, len(votes) + 1),
        "vote": votes["kind"].map(KIND_LABELS).fillna(votes["kind"]),
        "prompt": votes["prompt"],
        "left, or the rated answer": votes["variant_a"],
        "right": votes["variant_b"],
    })
    return shown.iloc[::-1].reset_index(drop=True)
