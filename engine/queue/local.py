"""The `local` transport: a SQLite file shared by the bot and the engine on one machine.

No service to run, and a job the bot accepted survives a restart of either process: it is
on disk before `submit` returns, and a claim is only a lease that runs out if its engine dies.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from engine.errors import QueueError
from engine.jobs import Event, EventKind, Job

_SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    id TEXT PRIMARY KEY,
    body TEXT NOT NULL,
    state TEXT NOT NULL,
    worker TEXT,
    lease_until REAL,
    attempts INTEGER NOT NULL DEFAULT 0,
    cancel_requested INTEGER NOT NULL DEFAULT 0,
    enqueued_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS jobs_state ON jobs (state, enqueued_at);
CREATE TABLE IF NOT EXISTS events (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    job_id TEXT NOT NULL,
    body TEXT NOT NULL,
    at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS events_job ON events (job_id, seq);
"""

QUEUED, CLAIMED, FINISHED = "queued", "claimed", "finished"


class LocalQueue:
    def __init__(
        self,
        path: Path,
        *,
        lease_seconds: float = 30.0,
        max_attempts: int = 3,
        poll_seconds: float = 0.1,
    ) -> None:
        self.path = path
        self.lease_seconds = lease_seconds
        self.max_attempts = max_attempts
        self.poll_seconds = poll_seconds
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(path, timeout=30, isolation_level=None, check_same_thread=False)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.executescript(_SCHEMA)
        except (OSError, sqlite3.Error) as error:
            raise QueueError(f"cannot open the local queue at {path}: {error}") from None
        self._lock = threading.Lock()

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    def _read(self, sql: str, *params: object) -> list[tuple[object, ...]]:
        with self._lock:
            return list(self._db.execute(sql, params))

    @staticmethod
    def _end(db: sqlite3.Connection, job_id: str, event: Event) -> None:
        db.execute("INSERT INTO events (job_id, body, at) VALUES (?, ?, ?)", (job_id, event.to_json(), time.time()))
        db.execute("UPDATE jobs SET state = ?, lease_until = NULL WHERE id = ?", (FINISHED, job_id))

    # Producer side.
    def submit(self, job: Job) -> bool:
        with self._write() as db:
            cursor = db.execute(
                "INSERT OR IGNORE INTO jobs (id, body, state, enqueued_at) VALUES (?, ?, ?, ?)",
                (job.id, job.to_json(), QUEUED, time.time()),
            )
            return cursor.rowcount == 1

    def events(self, job_id: str, after: str | None = None) -> list[tuple[str, Event]]:
        rows = self._read(
            "SELECT seq, body FROM events WHERE job_id = ? AND seq > ? ORDER BY seq", job_id, int(after or 0)
        )
        return [(str(seq), Event.from_json(str(body))) for seq, body in rows]

    def position(self, job_id: str) -> int | None:
        rows = self._read(
            "SELECT (SELECT COUNT(*) FROM jobs AS o WHERE o.state = ? AND"
            " (o.enqueued_at < j.enqueued_at OR (o.enqueued_at = j.enqueued_at AND o.rowid < j.rowid)))"
            " FROM jobs AS j WHERE j.id = ? AND j.state = ?",
            QUEUED,
            job_id,
            QUEUED,
        )
        return int(str(rows[0][0])) + 1 if rows else None

    def cancel(self, job_id: str) -> bool:
        with self._write() as db:
            row = db.execute("SELECT state FROM jobs WHERE id = ?", (job_id,)).fetchone()
            if row is None or row[0] == FINISHED:
                return False
            if row[0] == QUEUED:
                self._end(db, job_id, Event(EventKind.CANCELLED, reason="cancelled before it started"))
            else:
                db.execute("UPDATE jobs SET cancel_requested = 1 WHERE id = ?", (job_id,))
            return True

    def forget(self, job_id: str) -> None:
        with self._write() as db:
            db.execute("DELETE FROM events WHERE job_id = ?", (job_id,))
            db.execute("DELETE FROM jobs WHERE id = ?", (job_id,))

    # Consumer side.
    def _claim_once(self, worker: str) -> Job | None:
        now = time.time()
        with self._write() as db:
            while True:
                row = db.execute(
                    "SELECT id, body, attempts, cancel_requested FROM jobs"
                    " WHERE state = ? OR (state = ? AND lease_until < ?)"
                    " ORDER BY enqueued_at, rowid LIMIT 1",
                    (QUEUED, CLAIMED, now),
                ).fetchone()
                if row is None:
                    return None
                job_id, body, attempts, cancel_requested = row
                if cancel_requested:
                    self._end(db, job_id, Event(EventKind.CANCELLED, reason="cancelled"))
                    continue
                if attempts >= self.max_attempts:
                    reason = (
                        f"This job stopped the engine {attempts} times, so it was set aside instead of being "
                        "tried again. Try a different prompt or settings."
                    )
                    self._end(db, job_id, Event(EventKind.FAILED, reason=reason))
                    continue
                db.execute(
                    "UPDATE jobs SET state = ?, worker = ?, lease_until = ?, attempts = attempts + 1 WHERE id = ?",
                    (CLAIMED, worker, now + self.lease_seconds, job_id),
                )
                try:
                    return Job.from_json(body)
                except (ValueError, KeyError, TypeError) as error:
                    self._end(db, job_id, Event(EventKind.FAILED, reason=f"The job could not be read: {error}"))

    def claim(self, worker: str, timeout: float) -> Job | None:
        deadline = time.monotonic() + timeout
        while True:
            job = self._claim_once(worker)
            if job is not None or time.monotonic() >= deadline:
                return job
            time.sleep(min(self.poll_seconds, max(0.0, deadline - time.monotonic())))

    def heartbeat(self, job_id: str, worker: str) -> bool:
        with self._write() as db:
            cursor = db.execute(
                "UPDATE jobs SET lease_until = ? WHERE id = ? AND worker = ? AND state = ?",
                (time.time() + self.lease_seconds, job_id, worker, CLAIMED),
            )
            return cursor.rowcount == 1

    def cancel_requested(self, job_id: str) -> bool:
        rows = self._read("SELECT cancel_requested FROM jobs WHERE id = ?", job_id)
        return bool(rows and rows[0][0])

    def _holds(self, db: sqlite3.Connection, job_id: str, worker: str) -> bool:
        row = db.execute("SELECT state, worker FROM jobs WHERE id = ?", (job_id,)).fetchone()
        return row is not None and row[0] == CLAIMED and row[1] == worker

    def publish(self, job_id: str, worker: str, event: Event) -> bool:
        if event.terminal:
            raise ValueError("terminal events go through finish()")
        with self._write() as db:
            if not self._holds(db, job_id, worker):
                return False
            db.execute(
                "INSERT INTO events (job_id, body, at) VALUES (?, ?, ?)",
                (job_id, event.to_json(), time.time()),
            )
            return True

    def finish(self, job_id: str, worker: str, event: Event) -> bool:
        if not event.terminal:
            raise ValueError("finish() takes a terminal event")
        with self._write() as db:
            if not self._holds(db, job_id, worker):
                return False
            self._end(db, job_id, event)
            return True

    def release(self, job_id: str, worker: str) -> None:
        with self._write() as db:
            db.execute(
                "UPDATE jobs SET state = ?, worker = NULL, lease_until = NULL, attempts = MAX(attempts - 1, 0)"
                " WHERE id = ? AND worker = ? AND state = ?",
                (QUEUED, job_id, worker, CLAIMED),
            )

    def recover(self, worker: str) -> int:
        with self._write() as db:
            cursor = db.execute(
                "UPDATE jobs SET state = ?, worker = NULL, lease_until = NULL WHERE worker = ? AND state = ?",
                (QUEUED, worker, CLAIMED),
            )
            return cursor.rowcount

    def close(self) -> None:
        with self._lock:
            self._db.close()
