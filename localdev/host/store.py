"""SQLite (stdlib) store: instances, DTFx-shaped histories, inboxes. One transaction per episode.

Nothing about in-flight work is stored separately: activities still to run are TaskScheduled
events without a completion, timers are TimerCreated without TimerFired, pending episodes are
non-empty inboxes. A killed host re-derives all of it on start-up (``Engine.recover``).
All access happens on the host's event-loop thread.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from localdev.host.history import Event

TERMINAL = frozenset({"Completed", "Failed", "Terminated", "Canceled"})
RUNTIME_STATUSES = (
    "Running",
    "Completed",
    "ContinuedAsNew",
    "Failed",
    "Canceled",
    "Terminated",
    "Pending",
    "Suspended",
)
_SCHEMA_VERSION = 1
_SCHEMA = """
CREATE TABLE IF NOT EXISTS instances (
    instance_id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    version TEXT NOT NULL DEFAULT '',
    execution_id TEXT NOT NULL,
    status TEXT NOT NULL,
    input TEXT,
    output TEXT,
    failure_details TEXT,
    custom_status TEXT,
    created_ticks INTEGER NOT NULL,
    updated_ticks INTEGER NOT NULL,
    parent_instance_id TEXT,
    parent_execution_id TEXT,
    parent_task_id INTEGER,
    parent_name TEXT
);
CREATE TABLE IF NOT EXISTS history (
    instance_id TEXT NOT NULL,
    seq INTEGER NOT NULL,
    event TEXT NOT NULL,
    PRIMARY KEY (instance_id, seq)
);
CREATE TABLE IF NOT EXISTS inbox (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    instance_id TEXT NOT NULL,
    execution_id TEXT,
    event TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS inbox_by_instance ON inbox (instance_id, id);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
"""


@dataclass
class InstanceRow:
    instance_id: str
    name: str
    version: str
    execution_id: str
    status: str
    input: str | None
    output: str | None
    failure_details: str | None
    custom_status: str | None
    created_ticks: int
    updated_ticks: int
    parent_instance_id: str | None = None
    parent_execution_id: str | None = None
    parent_task_id: int | None = None
    parent_name: str | None = None

    @property
    def terminal(self) -> bool:
        return self.status in TERMINAL


_COLUMNS = tuple(f.name for f in fields(InstanceRow))


@dataclass(frozen=True)
class InboxMessage:
    id: int
    instance_id: str
    execution_id: str | None
    event: Event


@dataclass(frozen=True)
class Query:
    """Instance filters of the list and purge routes (``None`` = no filter)."""

    created_from: int | None = None
    created_to: int | None = None
    statuses: frozenset[str] | None = None
    prefix: str | None = None


@dataclass
class EpisodeCommit:
    """Everything one episode changes, applied atomically."""

    instance: InstanceRow
    append: list[Event]
    consumed: list[int]
    replace_history: bool = False
    messages: Sequence[tuple[str, str | None, Event]] = ()
    upserts: Sequence[InstanceRow] = ()


class Store:
    def __init__(self, path: str | Path = ":memory:") -> None:
        self.path = str(path)
        self._db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(_SCHEMA)
        self._db.execute(f"PRAGMA user_version={_SCHEMA_VERSION}")

    def close(self) -> None:
        self._db.close()

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        self._db.execute("BEGIN IMMEDIATE")
        try:
            yield self._db
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")

    # --- instances ---------------------------------------------------------------------------
    def get(self, instance_id: str) -> InstanceRow | None:
        row = self._db.execute(
            f"SELECT {', '.join(_COLUMNS)} FROM instances WHERE instance_id = ?",  # noqa: S608 - fixed columns
            (instance_id,),
        ).fetchone()
        return InstanceRow(*row) if row else None

    def query(self, query: Query) -> list[InstanceRow]:
        clauses: list[str] = []
        params: list[int | str] = []
        if query.created_from is not None:
            clauses.append("created_ticks >= ?")
            params.append(query.created_from)
        if query.created_to is not None:
            clauses.append("created_ticks <= ?")
            params.append(query.created_to)
        if query.prefix:
            clauses.append("substr(instance_id, 1, ?) = ?")
            params.extend([len(query.prefix), query.prefix])
        if query.statuses is not None:
            clauses.append(f"status IN ({', '.join('?' * len(query.statuses))})")
            params.extend(sorted(query.statuses))
        where = f"WHERE {' AND '.join(clauses)}" if clauses else ""
        rows = self._db.execute(
            f"SELECT {', '.join(_COLUMNS)} FROM instances {where} ORDER BY created_ticks, instance_id",  # noqa: S608
            params,
        ).fetchall()
        return [InstanceRow(*row) for row in rows]

    def non_terminal(self) -> list[InstanceRow]:
        return self.query(Query(statuses=frozenset(RUNTIME_STATUSES) - TERMINAL))

    def put(self, row: InstanceRow, db: sqlite3.Connection | None = None) -> None:
        values = [getattr(row, name) for name in _COLUMNS]
        (db or self._db).execute(
            f"INSERT OR REPLACE INTO instances ({', '.join(_COLUMNS)}) "  # noqa: S608 - fixed columns
            f"VALUES ({', '.join('?' * len(_COLUMNS))})",
            values,
        )

    def reset(self, row: InstanceRow, message: Event) -> None:
        """Create or overwrite an instance: fresh history, empty inbox, one start message."""
        with self.transaction() as db:
            self._drop(db, row.instance_id)
            self.put(row, db)
            self._send(db, row.instance_id, row.execution_id, message)

    def delete(self, instance_ids: Iterable[str]) -> int:
        count = 0
        with self.transaction() as db:
            for instance_id in instance_ids:
                count += db.execute("DELETE FROM instances WHERE instance_id = ?", (instance_id,)).rowcount
                self._drop(db, instance_id)
        return count

    @staticmethod
    def _drop(db: sqlite3.Connection, instance_id: str) -> None:
        db.execute("DELETE FROM history WHERE instance_id = ?", (instance_id,))
        db.execute("DELETE FROM inbox WHERE instance_id = ?", (instance_id,))

    def update_status(self, instance_id: str, status: str, ticks: int) -> None:
        self._db.execute(
            "UPDATE instances SET status = ?, updated_ticks = ? WHERE instance_id = ?", (status, ticks, instance_id)
        )

    # --- history and inbox ----------------------------------------------------------------------
    def history(self, instance_id: str) -> list[Event]:
        rows = self._db.execute(
            "SELECT event FROM history WHERE instance_id = ? ORDER BY seq", (instance_id,)
        ).fetchall()
        return [json.loads(event) for (event,) in rows]

    def inbox(self, instance_id: str) -> list[InboxMessage]:
        rows = self._db.execute(
            "SELECT id, execution_id, event FROM inbox WHERE instance_id = ? ORDER BY id", (instance_id,)
        ).fetchall()
        return [InboxMessage(mid, instance_id, execution, json.loads(event)) for mid, execution, event in rows]

    def instances_with_inbox(self) -> list[str]:
        return [row[0] for row in self._db.execute("SELECT DISTINCT instance_id FROM inbox ORDER BY instance_id")]

    def send(self, instance_id: str, execution_id: str | None, event: Event) -> None:
        with self.transaction() as db:
            self._send(db, instance_id, execution_id, event)

    @staticmethod
    def _send(db: sqlite3.Connection, instance_id: str, execution_id: str | None, event: Event) -> None:
        db.execute(
            "INSERT INTO inbox (instance_id, execution_id, event) VALUES (?, ?, ?)",
            (instance_id, execution_id, json.dumps(event)),
        )

    def drop_messages(self, message_ids: Sequence[int]) -> None:
        with self.transaction() as db:
            db.executemany("DELETE FROM inbox WHERE id = ?", [(m,) for m in message_ids])

    def commit_episode(self, commit: EpisodeCommit) -> None:
        instance_id = commit.instance.instance_id
        with self.transaction() as db:
            if commit.replace_history:
                db.execute("DELETE FROM history WHERE instance_id = ?", (instance_id,))
            (start,) = db.execute(
                "SELECT COALESCE(MAX(seq) + 1, 0) FROM history WHERE instance_id = ?", (instance_id,)
            ).fetchone()
            db.executemany(
                "INSERT INTO history (instance_id, seq, event) VALUES (?, ?, ?)",
                [(instance_id, start + i, json.dumps(event)) for i, event in enumerate(commit.append)],
            )
            db.executemany("DELETE FROM inbox WHERE id = ?", [(m,) for m in commit.consumed])
            self.put(commit.instance, db)
            for row in commit.upserts:
                self._drop(db, row.instance_id)
                self.put(row, db)
            for target, execution_id, event in commit.messages:
                self._send(db, target, execution_id, event)

    # --- meta -------------------------------------------------------------------------------------
    def get_meta(self, key: str) -> str | None:
        row = self._db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return None if row is None else str(row[0])

    def set_meta(self, key: str, value: Any) -> None:
        self._db.execute("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", (key, str(value)))
