"""The `local` transport: a SQLite file shared by the bot and the engine on one machine.

No service to run, and a job the bot accepted survives a restart of either process: it is
on disk before `submit` returns, and a claim is only a lease that runs out if its engine dies.

Owners take turns (see `fair`): `fair_owners` holds each owner's virtual time per model and `fair_clocks`
each model's clock, both changed in the claim's own write transaction.
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
from typing import Any

from engine.errors import QueueError
from engine.jobs import Event, EventKind, Job
from engine.queue import fair
from engine.queue.base import EngineStatus, QueuePosition

SCHEMA_VERSION = 3
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
    images INTEGER NOT NULL DEFAULT 1,
    owner TEXT NOT NULL DEFAULT '',
    weight INTEGER NOT NULL DEFAULT 1
);
CREATE INDEX IF NOT EXISTS jobs_state ON jobs (state, enqueued_at);
CREATE INDEX IF NOT EXISTS jobs_owner ON jobs (model, owner, enqueued_at);
CREATE TABLE IF NOT EXISTS fair_owners (
    model TEXT NOT NULL,
    owner TEXT NOT NULL,
    vtime REAL NOT NULL,
    PRIMARY KEY (model, owner)
);
CREATE TABLE IF NOT EXISTS fair_clocks (
    model TEXT PRIMARY KEY,
    vtime REAL NOT NULL
);
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
_V2_COLUMNS = (
    "ALTER TABLE jobs ADD COLUMN owner TEXT NOT NULL DEFAULT ''",
    "ALTER TABLE jobs ADD COLUMN weight INTEGER NOT NULL DEFAULT 1",
)

QUEUED, CLAIMED, FINISHED = "queued", "claimed", "finished"
Row = tuple[str, str, int, int, str, int]  # id, body, attempts, cancel_requested, batch_key, images
_CLAIMABLE = "(state = 'queued' OR (state = 'claimed' AND lease_until < ?))"  # the parameter: now


def _candidates(rows: list[Any]) -> list[fair.Candidate[Row]]:
    """Rows of (id, body, attempts, cancel_requested, batch_key, images, owner, weight, enqueued_at, rowid) as
    candidates for the fairness rule."""
    return [
        fair.Candidate[Row](
            owner=str(owner),
            weight=fair.weight_of(weight),
            images=int(images),
            order=(float(enqueued_at), float(rowid)),
            item=(str(job_id), str(body), int(attempts), int(cancel), str(batch_key), int(images)),
        )
        for job_id, body, attempts, cancel, batch_key, images, owner, weight, enqueued_at, rowid in rows
    ]


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
            if exists and version < 3:
                for statement in _V2_COLUMNS:
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
                "INSERT OR IGNORE INTO jobs (id, body, state, enqueued_at, model, batch_key, images, owner, weight)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    job.id,
                    job.to_json(),
                    QUEUED,
                    time.time(),
                    job.model,
                    job.batch_key,
                    job.spec.count,
                    job.owner,
                    fair.weight_of(job.weight),
                ),
            )
            return cursor.rowcount == 1

    def events(self, job_id: str, after: str | None = None) -> list[tuple[str, Event]]:
        rows = self._read(
            "SELECT seq, body FROM events WHERE job_id = ? AND seq > ? ORDER BY seq", job_id, int(after or 0)
        )
        return [(str(seq), Event.from_json(str(body))) for seq, body in rows]

    def position(self, job_id: str) -> QueuePosition | None:
        """See `JobQueue.position`: this owner's waiting jobs before it, plus each other owner's share of
        turns meanwhile (`fair.jobs_ahead`)."""
        with self._lock:
            me = self._db.execute(
                "SELECT model, owner, weight, enqueued_at, rowid FROM jobs WHERE id = ? AND state = 'queued'",
                (job_id,),
            ).fetchone()
            if me is None:
                return None
            model, owner, weight, enqueued_at, rowid = me
            rows = self._db.execute(
                "SELECT owner, weight, images, (enqueued_at < ? OR (enqueued_at = ? AND rowid < ?)) FROM jobs"
                " WHERE model = ? AND state = 'queued' ORDER BY enqueued_at, rowid",
                (enqueued_at, enqueued_at, rowid, model),
            ).fetchall()
        own_jobs = own_images = 0
        others: dict[str, tuple[int, bool, list[int]]] = {}
        for other, other_weight, images, before in rows:
            if other == owner:
                if before:
                    own_jobs += 1
                    own_images += int(images)
            elif other in others:
                others[other][2].append(int(images))
            else:
                others[str(other)] = (fair.weight_of(other_weight), bool(before), [int(images)])
        jobs, images = fair.jobs_ahead(own_jobs, fair.weight_of(weight), others.values())
        return QueuePosition(jobs_ahead=own_jobs + jobs, images_ahead=own_images + images)

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
                # The model: the oldest job's if one waited too long, else the most preferred with work.
                head = db.execute(
                    f"SELECT model FROM jobs WHERE {_CLAIMABLE} AND model IN ({marks})"
                    f" ORDER BY CASE WHEN enqueued_at < ? THEN -1 ELSE CASE model {rank} END END,"
                    " enqueued_at, rowid LIMIT 1",
                    (now, *models, now - self.prefer_loaded_for_seconds, *models),
                ).fetchone()
                if head is None:
                    return []
                model = str(head[0])
                turns = self._turns(db, model)
                # Within it, the owner whose turn it is: each owner's oldest claimable job competes.
                heads = _candidates(
                    db.execute(
                        "SELECT id, body, attempts, cancel_requested, batch_key, images, owner, weight,"
                        " enqueued_at, r FROM (SELECT *, rowid AS r, ROW_NUMBER() OVER"
                        " (PARTITION BY owner ORDER BY enqueued_at, rowid) AS n"
                        f" FROM jobs WHERE {_CLAIMABLE} AND model = ?) WHERE n = 1",
                        (now, model),
                    ).fetchall()
                )
                chosen = turns.pick(heads)
                if chosen is None:
                    return []
                first = self._take(db, chosen.item[:4], worker, now)
                if first is not None:
                    break
            turns.advance_clock(chosen.owner)
            turns.charge(chosen)
            batch = [first]

            def take(candidate: fair.Candidate[Row]) -> bool:
                job = self._take(db, candidate.item[:4], worker, now)
                if job is not None:
                    batch.append(job)
                return job is not None

            compatible = _candidates(
                db.execute(
                    "SELECT id, body, attempts, cancel_requested, batch_key, images, owner, weight,"
                    f" enqueued_at, rowid FROM jobs WHERE {_CLAIMABLE} AND batch_key = ? AND id != ?",
                    (now, chosen.item[4], chosen.item[0]),
                ).fetchall()
            )
            turns.fill(compatible, chosen.images, max_images, take)
            self._save_turns(db, model, turns)
            return batch

    @staticmethod
    def _turns(db: sqlite3.Connection, model: str) -> fair.Turns:
        row = db.execute("SELECT vtime FROM fair_clocks WHERE model = ?", (model,)).fetchone()
        vtimes = db.execute("SELECT owner, vtime FROM fair_owners WHERE model = ?", (model,)).fetchall()
        return fair.Turns(float(row[0]) if row else 0.0, {str(owner): float(vtime) for owner, vtime in vtimes})

    @staticmethod
    def _save_turns(db: sqlite3.Connection, model: str, turns: fair.Turns) -> None:
        db.executemany(
            "INSERT OR REPLACE INTO fair_owners (model, owner, vtime) VALUES (?, ?, ?)",
            [(model, owner, turns.vtimes[owner]) for owner in turns.charged],
        )
        db.execute("INSERT OR REPLACE INTO fair_clocks (model, vtime) VALUES (?, ?)", (model, turns.clock))
        db.execute("DELETE FROM fair_owners WHERE model = ? AND vtime <= ?", (model, turns.clock))

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
