"""The `local` transport: a SQLite file shared by the bot and the engine on one machine.

No service to run, and a job the bot accepted survives a restart of either process: it is
on disk before `submit` returns, and a claim is only a lease that runs out if its engine dies.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict
from pathlib import Path

from engine.errors import QueueError
from engine.jobs import Event, EventKind, Job
from engine.queue.base import EngineStatus, QueuePosition

SCHEMA_VERSION = 2
_SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    id TEXT PRIMARY KEY,
    body TEXT NOT NULL,
    state TEXT NOT NULL,
    worker TEXT,
    lease_until REAL,
    attempts INTEGER NOT NULL DEFAULT 0,
    cancel_requested INTEGER NOT NULL DEFAULT 0,
    enqueued_at REAL NOT NULL,
    model TEXT NOT NULL DEFAULT '',
    batch_key TEXT NOT NULL DEFAULT '',
    images INTEGER NOT NULL DEFAULT 1
);
CREATE INDEX IF NOT EXISTS jobs_state ON jobs (state, enqueued_at);
CREATE TABLE IF NOT EXISTS events (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    job_id TEXT NOT NULL,
    body TEXT NOT NULL,
    at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS events_job ON events (job_id, seq);
CREATE TABLE IF NOT EXISTS dead_letters (
    job_id TEXT PRIMARY KEY,
    reason TEXT NOT NULL,
    body TEXT NOT NULL,
    at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS engines (
    worker TEXT PRIMARY KEY,
    body TEXT NOT NULL,
    beat_at REAL NOT NULL
);
"""
_V1_COLUMNS = (
    "ALTER TABLE jobs ADD COLUMN model TEXT NOT NULL DEFAULT ''",
    "ALTER TABLE jobs ADD COLUMN batch_key TEXT NOT NULL DEFAULT ''",
    "ALTER TABLE jobs ADD COLUMN images INTEGER NOT NULL DEFAULT 1",
)

QUEUED, CLAIMED, FINISHED = "queued", "claimed", "finished"
_CLAIMABLE = "(state = 'queued' OR (state = 'claimed' AND lease_until < ?))"  # the parameter: now


class LocalQueue:
    def __init__(
        self,
        path: Path,
        *,
        lease_seconds: float = 30.0,
        max_attempts: int = 3,
        poll_seconds: float = 0.02,
        prefer_loaded_for_seconds: float = 30.0,
        engine_ttl_seconds: float = 15.0,
    ) -> None:
        self.path = path
        self.lease_seconds = lease_seconds
        self.max_attempts = max_attempts
        self.poll_seconds = poll_seconds
        self.prefer_loaded_for_seconds = prefer_loaded_for_seconds
        self.engine_ttl_seconds = engine_ttl_seconds
        self._lock = threading.Lock()
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(path, timeout=30, isolation_level=None, check_same_thread=False)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._migrate()
        except (OSError, sqlite3.Error) as error:
            raise QueueError(f"cannot open the local queue at {path}: {error}") from None

    def _migrate(self) -> None:
        with self._write() as db:
            version = db.execute("PRAGMA user_version").fetchone()[0]
            exists = db.execute("SELECT 1 FROM sqlite_master WHERE name = 'jobs'").fetchone()
            if exists and version < 2:
                for statement in _V1_COLUMNS:
                    db.execute(statement)
            for statement in _SCHEMA.split(";"):
                if statement.strip():
                    db.execute(statement)
            db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")

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
    def _add_event(db: sqlite3.Connection, job_id: str, event: Event) -> None:
        db.execute("INSERT INTO events (job_id, body, at) VALUES (?, ?, ?)", (job_id, event.to_json(), time.time()))

    def _end(self, db: sqlite3.Connection, job_id: str, event: Event) -> None:
        self._add_event(db, job_id, event)
        db.execute("UPDATE jobs SET state = ?, lease_until = NULL WHERE id = ?", (FINISHED, job_id))

    # Producer side.
    def submit(self, job: Job) -> bool:
        with self._write() as db:
            cursor = db.execute(
                "INSERT OR IGNORE INTO jobs (id, body, state, enqueued_at, model, batch_key, images)"
                " VALUES (?, ?, ?, ?, ?, ?, ?)",
                (job.id, job.to_json(), QUEUED, time.time(), job.model, job.batch_key, job.spec.count),
            )
            return cursor.rowcount == 1

    def events(self, job_id: str, after: str | None = None) -> list[tuple[str, Event]]:
        rows = self._read(
            "SELECT seq, body FROM events WHERE job_id = ? AND seq > ? ORDER BY seq", job_id, int(after or 0)
        )
        return [(str(seq), Event.from_json(str(body))) for seq, body in rows]

    def position(self, job_id: str) -> QueuePosition | None:
        rows = self._read(
            "SELECT COUNT(o.id), COALESCE(SUM(o.images), 0) FROM jobs AS j LEFT JOIN jobs AS o"
            " ON o.model = j.model AND o.state = 'queued'"
            " AND (o.enqueued_at < j.enqueued_at OR (o.enqueued_at = j.enqueued_at AND o.rowid < j.rowid))"
            " WHERE j.id = ? AND j.state = 'queued' GROUP BY j.id",
            job_id,
        )
        if not rows:
            return None
        jobs, images = rows[0]
        return QueuePosition(jobs_ahead=int(str(jobs)), images_ahead=int(str(images)))

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
    def _take(self, db: sqlite3.Connection, row: tuple[str, str, int, int], worker: str, now: float) -> Job | None:
        """Claim one candidate row, or end it (cancelled, dead-lettered, unreadable) and return None."""
        job_id, body, attempts, cancel_requested = row
        if cancel_requested:
            self._end(db, job_id, Event(EventKind.CANCELLED, reason="cancelled"))
            return None
        if attempts >= self.max_attempts:
            reason = (
                f"This job stopped the engine {attempts} times, so it was set aside instead of being "
                "tried again. Try a different prompt or settings."
            )
            db.execute(
                "INSERT OR REPLACE INTO dead_letters (job_id, reason, body, at) VALUES (?, ?, ?, ?)",
                (job_id, reason, body, now),
            )
            self._end(db, job_id, Event(EventKind.FAILED, reason=reason))
            return None
        try:
            job = Job.from_json(body)
        except (ValueError, KeyError, TypeError) as error:
            self._end(db, job_id, Event(EventKind.FAILED, reason=f"The job could not be read: {error}"))
            return None
        db.execute(
            "UPDATE jobs SET state = ?, worker = ?, lease_until = ?, attempts = attempts + 1 WHERE id = ?",
            (CLAIMED, worker, now + self.lease_seconds, job_id),
        )
        return job

    def _claim_once(self, worker: str, models: Sequence[str], max_images: int) -> list[Job]:
        if not models:
            return []
        now = time.time()
        marks = ",".join("?" * len(models))
        rank = " ".join(f"WHEN ? THEN {i}" for i in range(len(models)))
        with self._write() as db:
            while True:
                head = db.execute(
                    f"SELECT id, body, attempts, cancel_requested, batch_key, images FROM jobs"
                    f" WHERE {_CLAIMABLE} AND model IN ({marks})"
                    f" ORDER BY CASE WHEN enqueued_at < ? THEN -1 ELSE CASE model {rank} END END,"
                    " enqueued_at, rowid LIMIT 1",
                    (now, *models, now - self.prefer_loaded_for_seconds, *models),
                ).fetchone()
                if head is None:
                    return []
                first = self._take(db, head[:4], worker, now)
                if first is not None:
                    break
            batch, images = [first], int(head[5])
            for row in db.execute(
                f"SELECT id, body, attempts, cancel_requested, images FROM jobs"
                f" WHERE {_CLAIMABLE} AND batch_key = ? AND id != ?"
                " ORDER BY enqueued_at, rowid",
                (now, head[4], head[0]),
            ).fetchall():
                if images + int(row[4]) > max_images:
                    break
                job = self._take(db, row[:4], worker, now)
                if job is not None:
                    batch.append(job)
                    images += int(row[4])
            return batch

    def claim(self, worker: str, *, models: Sequence[str], max_images: int, timeout: float) -> list[Job]:
        deadline = time.monotonic() + timeout
        while True:
            batch = self._claim_once(worker, models, max_images)
            if batch or time.monotonic() >= deadline:
                return batch
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

    @staticmethod
    def _holds(db: sqlite3.Connection, job_id: str, worker: str) -> bool:
        row = db.execute("SELECT state, worker FROM jobs WHERE id = ?", (job_id,)).fetchone()
        return row is not None and row[0] == CLAIMED and row[1] == worker

    def publish(self, job_id: str, worker: str, event: Event) -> bool:
        if event.terminal:
            raise ValueError("terminal events go through finish()")
        with self._write() as db:
            if not self._holds(db, job_id, worker):
                return False
            self._add_event(db, job_id, event)
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

    def dead_letters(self, limit: int = 100) -> list[tuple[str, str]]:
        rows = self._read("SELECT job_id, reason FROM dead_letters ORDER BY at DESC LIMIT ?", limit)
        return [(str(job_id), str(reason)) for job_id, reason in rows]

    def advertise(self, status: EngineStatus) -> None:
        body = json.dumps(asdict(status))
        with self._write() as db:
            db.execute(
                "INSERT OR REPLACE INTO engines (worker, body, beat_at) VALUES (?, ?, ?)",
                (status.worker, body, status.beat_at or time.time()),
            )

    def engines(self) -> list[EngineStatus]:
        rows = self._read(
            "SELECT body FROM engines WHERE beat_at >= ? ORDER BY worker", time.time() - self.engine_ttl_seconds
        )
        statuses = []
        for (body,) in rows:
            data = json.loads(str(body))
            data["models_loaded"] = tuple(data.get("models_loaded", ()))
            data["models_served"] = tuple(data.get("models_served", ()))
            statuses.append(EngineStatus(**data))
        return statuses

    def close(self) -> None:
        with self._lock:
            self._db.close()
