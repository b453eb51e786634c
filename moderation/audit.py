"""A tamper-evident audit log: every entry carries the hash of the one before it, so an edited, inserted or
deleted row breaks the chain and `AuditLog.verify` names the first bad entry.

Appends are serialised through the one-row `audit_head` table (locked with SELECT ... FOR UPDATE on
PostgreSQL; a write transaction started with BEGIN IMMEDIATE on SQLite), which also records the last id and
hash so that deleting the newest entries is detected too. A member's data-deletion request empties the `data`
of their entries but keeps `data_hash`, and a later `redaction` entry lists the ids it emptied: the chain still
verifies, and an emptied row that no redaction entry lists does not.

Nothing here logs entry data: it may hold prompts and other personal data.
"""

from __future__ import annotations

import csv
import hashlib
import json
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import IO, Any

from sqlalchemy import (
    Boolean,
    Column,
    Connection,
    DateTime,
    Engine,
    Index,
    Integer,
    MetaData,
    Row,
    String,
    Table,
    Text,
    false,
    insert,
    or_,
    select,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite

from moderation import ModerationError

GENESIS_HASH = "0" * 64
MAX_FIELD_LENGTH = 64
_HASH_VERSION = "imagine-audit/1"
_HEAD_ID = 1
_EMPTY_DATA = "{}"

metadata = MetaData()

audit_log = Table(
    "audit_log",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("at", DateTime(timezone=True), nullable=False),
    Column("event", String(MAX_FIELD_LENGTH), nullable=False),
    Column("actor_id", String(MAX_FIELD_LENGTH)),
    Column("user_id", String(MAX_FIELD_LENGTH)),
    Column("guild_id", String(MAX_FIELD_LENGTH)),
    Column("job_id", String(MAX_FIELD_LENGTH)),
    Column("category", String(MAX_FIELD_LENGTH)),
    Column("data", Text, nullable=False),
    Column("data_hash", String(64), nullable=False),
    Column("prev_hash", String(64), nullable=False),
    Column("entry_hash", String(64), nullable=False),
    Column("redacted", Boolean, nullable=False, server_default=false()),
    Index("ix_audit_log_user", "user_id"),
    Index("ix_audit_log_guild", "guild_id"),
    Index("ix_audit_log_job", "job_id"),
    Index("ix_audit_log_at", "at"),
)

audit_head = Table(
    "audit_head",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=False),
    Column("last_id", Integer, nullable=False),
    Column("last_hash", String(64), nullable=False),
)


class AuditError(ModerationError, ValueError):
    """An entry could not be written as asked; the message names the field (never its value)."""


@dataclass(frozen=True)
class AuditEntry:
    id: int
    at: datetime
    event: str
    actor_id: str | None
    user_id: str | None
    guild_id: str | None
    job_id: str | None
    category: str | None
    data: dict[str, Any]
    data_hash: str
    prev_hash: str
    entry_hash: str
    redacted: bool

    def as_dict(self) -> dict[str, Any]:
        """Plain JSON-ready values, `at` as ISO 8601 in UTC."""
        return {
            "id": self.id,
            "at": self.at.astimezone(UTC).isoformat(),
            "event": self.event,
            "actor_id": self.actor_id,
            "user_id": self.user_id,
            "guild_id": self.guild_id,
            "job_id": self.job_id,
            "category": self.category,
            "data": self.data,
            "data_hash": self.data_hash,
            "prev_hash": self.prev_hash,
            "entry_hash": self.entry_hash,
            "redacted": self.redacted,
        }


@dataclass(frozen=True)
class VerifyResult:
    ok: bool
    entries: int
    first_bad_id: int | None
    reason: str
    last_hash: str | None = None  # the chain's newest hash when ok: note it elsewhere to anchor the log


def canonical_json(data: Mapping[str, Any]) -> str:
    """Sorted keys, no spaces, strict JSON: the same mapping always gives the same text."""
    try:
        return json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    except (TypeError, ValueError) as error:
        raise AuditError(
            f"audit data must be plain JSON (strings, numbers, booleans, lists, mappings): {error}"
        ) from None


def _sha256(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _utc(when: datetime) -> datetime:
    """SQLite hands datetimes back without their zone; they were written in UTC. Naive input is taken as UTC."""
    return when.replace(tzinfo=UTC) if when.tzinfo is None else when.astimezone(UTC)


def _iso(when: datetime) -> str:
    return _utc(when).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def entry_hash(
    *,
    id: int,
    at: datetime,
    event: str,
    actor_id: str | None,
    user_id: str | None,
    guild_id: str | None,
    job_id: str | None,
    category: str | None,
    data_hash: str,
    prev_hash: str,
) -> str:
    """sha256 of a JSON array of the entry's fields (unambiguous, unlike joined strings)."""
    fields = [_HASH_VERSION, id, _iso(at), event, actor_id, user_id, guild_id, job_id, category, data_hash, prev_hash]
    return _sha256(json.dumps(fields, separators=(",", ":"), ensure_ascii=False))


def _row_hash(row: Row[Any]) -> str:
    return entry_hash(
        id=row.id,
        at=row.at,
        event=row.event,
        actor_id=row.actor_id,
        user_id=row.user_id,
        guild_id=row.guild_id,
        job_id=row.job_id,
        category=row.category,
        data_hash=row.data_hash,
        prev_hash=row.prev_hash,
    )


def _entry(row: Row[Any]) -> AuditEntry:
    return AuditEntry(
        id=row.id,
        at=_utc(row.at),
        event=row.event,
        actor_id=row.actor_id,
        user_id=row.user_id,
        guild_id=row.guild_id,
        job_id=row.job_id,
        category=row.category,
        data=json.loads(row.data),
        data_hash=row.data_hash,
        prev_hash=row.prev_hash,
        entry_hash=row.entry_hash,
        redacted=bool(row.redacted),
    )


def _check_field(name: str, value: str | None, *, required: bool = False) -> None:
    if value is None and not required:
        return
    if not isinstance(value, str) or not value:
        raise AuditError(f"audit {name} must be a non-empty string")
    if len(value) > MAX_FIELD_LENGTH:
        raise AuditError(f"audit {name} must be at most {MAX_FIELD_LENGTH} characters (got {len(value)})")


class AuditLog:
    """The audit log in the database behind `engine` (tables from migration 0004)."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine
        self._sqlite = engine.dialect.name == "sqlite"

    # -- writing ------------------------------------------------------------------------------------------------

    def append(
        self,
        event: str,
        *,
        actor_id: str | None = None,
        user_id: str | None = None,
        guild_id: str | None = None,
        job_id: str | None = None,
        category: str | None = None,
        data: Mapping[str, Any] | None = None,
    ) -> AuditEntry:
        """Add one entry at the end of the chain. Safe to call from several threads and processes at once."""
        _check_field("event", event, required=True)
        for name, value in (
            ("actor_id", actor_id),
            ("user_id", user_id),
            ("guild_id", guild_id),
            ("job_id", job_id),
            ("category", category),
        ):
            _check_field(name, value)
        text = canonical_json(data or {})
        with self._engine.connect() as connection:
            last_id, last_hash = self._lock_head(connection)
            entry = self._insert(
                connection,
                last_id,
                last_hash,
                event=event,
                actor_id=actor_id,
                user_id=user_id,
                guild_id=guild_id,
                job_id=job_id,
                category=category,
                data_text=text,
            )
            connection.commit()
        return entry

    def redact_user(self, user_id: str, *, actor_id: str, reason: str) -> int:
        """Empty the data of every entry about `user_id` (as subject or actor), keeping the ids and hashes the
        chain needs, and record a `redaction` entry listing the emptied ids. Returns how many were emptied."""
        _check_field("user_id", user_id, required=True)
        _check_field("actor_id", actor_id, required=True)
        about_user = (
            or_(audit_log.c.user_id == user_id, audit_log.c.actor_id == user_id),
            audit_log.c.redacted == false(),
            audit_log.c.event != "redaction",  # the record of a redaction must survive later ones
        )
        with self._engine.connect() as connection:
            last_id, last_hash = self._lock_head(connection)
            ids = list(connection.scalars(select(audit_log.c.id).where(*about_user).order_by(audit_log.c.id)))
            if ids:
                connection.execute(update(audit_log).where(*about_user).values(data=_EMPTY_DATA, redacted=True))
            self._insert(
                connection,
                last_id,
                last_hash,
                event="redaction",
                actor_id=actor_id,
                user_id=user_id,
                guild_id=None,
                job_id=None,
                category=None,
                data_text=canonical_json({"count": len(ids), "ids": ids, "reason": reason}),
            )
            connection.commit()
        return len(ids)

    def _lock_head(self, connection: Connection) -> tuple[int, str]:
        """Start a write transaction that holds the chain's head until commit; returns (last id, last hash)."""
        if self._sqlite:
            # pysqlite would begin a deferred transaction, which may fail instead of waiting when two writers meet.
            connection.exec_driver_sql("BEGIN IMMEDIATE")
        query = select(audit_head.c.last_id, audit_head.c.last_hash).where(audit_head.c.id == _HEAD_ID)
        head = connection.execute(query.with_for_update()).one_or_none()
        if head is None:
            dialect = sqlite if self._sqlite else postgresql
            values = {"id": _HEAD_ID, "last_id": 0, "last_hash": GENESIS_HASH}
            connection.execute(dialect.insert(audit_head).values(values).on_conflict_do_nothing())
            head = connection.execute(query.with_for_update()).one()
        return int(head.last_id), str(head.last_hash)

    def _insert(
        self,
        connection: Connection,
        last_id: int,
        last_hash: str,
        *,
        event: str,
        actor_id: str | None,
        user_id: str | None,
        guild_id: str | None,
        job_id: str | None,
        category: str | None,
        data_text: str,
    ) -> AuditEntry:
        # The id is chosen here, under the head's lock, rather than by the sequence: it is part of the hash, and a
        # rolled-back append must not leave a gap that reads as a deleted entry.
        new_id = last_id + 1
        at = datetime.now(UTC)
        data_hash = _sha256(data_text)
        fields: dict[str, Any] = {
            "id": new_id,
            "at": at,
            "event": event,
            "actor_id": actor_id,
            "user_id": user_id,
            "guild_id": guild_id,
            "job_id": job_id,
            "category": category,
            "data_hash": data_hash,
            "prev_hash": last_hash,
        }
        digest = entry_hash(**fields)
        connection.execute(insert(audit_log).values(**fields, data=data_text, entry_hash=digest, redacted=False))
        connection.execute(
            update(audit_head).where(audit_head.c.id == _HEAD_ID).values(last_id=new_id, last_hash=digest)
        )
        return AuditEntry(
            id=new_id,
            at=at,
            event=event,
            actor_id=actor_id,
            user_id=user_id,
            guild_id=guild_id,
            job_id=job_id,
            category=category,
            data=json.loads(data_text),
            data_hash=data_hash,
            prev_hash=last_hash,
            entry_hash=digest,
            redacted=False,
        )

    # -- reading ------------------------------------------------------------------------------------------------

    def _snapshot(self, connection: Connection) -> Connection:
        """One consistent view for several statements, so that appends made meanwhile are not mistaken for damage."""
        if self._sqlite:
            connection.exec_driver_sql("BEGIN")
            return connection
        return connection.execution_options(isolation_level="REPEATABLE READ")

    def verify(self, *, batch_size: int = 1000) -> VerifyResult:
        """Recompute every hash in id order and check the links, the redactions and the head."""
        with self._engine.connect() as plain:
            connection = self._snapshot(plain)
            found = connection.execute(
                select(audit_head.c.last_id, audit_head.c.last_hash).where(audit_head.c.id == _HEAD_ID)
            ).one_or_none()
            head = None if found is None else (int(found.last_id), str(found.last_hash))
            rows = connection.execution_options(yield_per=batch_size).execute(
                select(audit_log).order_by(audit_log.c.id)
            )
            result = _check_chain(rows, head)
            rows.close()
            connection.rollback()
        return result

    def query(
        self,
        *,
        user_id: str | None = None,
        member_id: str | None = None,
        guild_id: str | None = None,
        job_id: str | None = None,
        category: str | None = None,
        event: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        limit: int | None = None,
    ) -> list[AuditEntry]:
        """Entries matching every filter given, oldest first. `user_id` matches the member an entry is about;
        `member_id` matches entries where that member is the subject or the actor (what a moderator did counts).
        `since` is inclusive, `until` exclusive (naive datetimes are taken as UTC); `limit` keeps the newest that
        many."""
        if limit is not None and limit < 1:
            raise AuditError(f"limit must be at least 1 (got {limit})")
        statement = select(audit_log)
        for column, value in (
            (audit_log.c.user_id, user_id),
            (audit_log.c.guild_id, guild_id),
            (audit_log.c.job_id, job_id),
            (audit_log.c.category, category),
            (audit_log.c.event, event),
        ):
            if value is not None:
                statement = statement.where(column == value)
        if member_id is not None:
            statement = statement.where(or_(audit_log.c.user_id == member_id, audit_log.c.actor_id == member_id))
        if since is not None:
            statement = statement.where(audit_log.c.at >= _utc(since))
        if until is not None:
            statement = statement.where(audit_log.c.at < _utc(until))
        statement = statement.order_by(audit_log.c.id.desc())
        if limit is not None:
            statement = statement.limit(limit)
        with self._engine.connect() as connection:
            entries = [_entry(row) for row in connection.execute(statement)]
        entries.reverse()
        return entries


def _check_chain(rows: Iterable[Row[Any]], head: tuple[int, str] | None) -> VerifyResult:
    expected_id = 1
    prev_hash = GENESIS_HASH
    redacted: list[int] = []
    authorised: set[int] = set()
    broken: tuple[int, str] | None = None
    for row in rows:
        problem = _check_row(row, expected_id, prev_hash)
        if problem is not None:
            broken = problem
            break
        if row.redacted:
            redacted.append(row.id)
        elif row.event == "redaction":
            authorised.update(_listed_ids(row.data, before=row.id))
        prev_hash = row.entry_hash
        expected_id += 1
    entries = expected_id - 1
    unauthorised = [entry_id for entry_id in redacted if entry_id not in authorised]
    if unauthorised and (broken is None or unauthorised[0] < broken[0]):
        broken = (unauthorised[0], "its data was removed but no later redaction entry lists it")
    if broken is None:
        broken = _check_head(head, entries, prev_hash)
    if broken is not None:
        return VerifyResult(ok=False, entries=entries, first_bad_id=broken[0], reason=broken[1])
    return VerifyResult(ok=True, entries=entries, first_bad_id=None, reason="intact", last_hash=prev_hash)


def _check_row(row: Row[Any], expected_id: int, prev_hash: str) -> tuple[int, str] | None:
    if row.id != expected_id:
        if row.id == expected_id + 1:
            return expected_id, f"entry {expected_id} is missing (deleted?): the log goes from {row.id - 2} to {row.id}"
        return expected_id, f"entries {expected_id} to {row.id - 1} are missing (deleted?)"
    if row.prev_hash != prev_hash:
        return row.id, "its prev_hash does not match the entry before it (an entry was inserted, deleted or edited)"
    if row.redacted:
        if row.data != _EMPTY_DATA:
            return row.id, "it is marked redacted but still holds data"
    elif _sha256(row.data) != row.data_hash:
        return row.id, "its data does not match its data_hash (the data was edited)"
    if _row_hash(row) != row.entry_hash:
        return row.id, "its entry_hash does not match its fields (a field was edited)"
    return None


def _listed_ids(data_text: str, *, before: int) -> Iterator[int]:
    try:
        data = json.loads(data_text)
    except ValueError:
        return
    ids = data.get("ids") if isinstance(data, dict) else None
    if isinstance(ids, list):
        yield from (i for i in ids if isinstance(i, int) and not isinstance(i, bool) and i < before)


def _check_head(head: tuple[int, str] | None, entries: int, last_hash: str) -> tuple[int, str] | None:
    if head is None:
        return (1, "the audit_head record is missing") if entries else None
    head_id, head_hash = head
    if head_id > entries:
        return entries + 1, (
            f"entry {entries + 1} is missing (deleted?): the log ends at {entries} but its head records {head_id}"
        )
    if head_id < entries:
        return head_id + 1, f"entry {head_id + 1} was added outside the log (its head ends at {head_id})"
    if head_hash != last_hash:
        return entries, "the newest entry does not match the hash recorded in the head"
    return None


# -- export -----------------------------------------------------------------------------------------------------

EXPORT_FIELDS = (
    "id",
    "at",
    "event",
    "actor_id",
    "user_id",
    "guild_id",
    "job_id",
    "category",
    "data",
    "data_hash",
    "prev_hash",
    "entry_hash",
    "redacted",
)


def export_jsonl(entries: Iterable[AuditEntry], stream: IO[str]) -> int:
    """One JSON object per entry and line; returns how many were written."""
    count = 0
    for entry in entries:
        stream.write(json.dumps(entry.as_dict(), ensure_ascii=False, sort_keys=False) + "\n")
        count += 1
    return count


def export_csv(entries: Iterable[AuditEntry], stream: IO[str]) -> int:
    """A header row, then one row per entry (`data` as canonical JSON); returns how many entries were written."""
    writer = csv.writer(stream, lineterminator="\n")
    writer.writerow(EXPORT_FIELDS)
    count = 0
    for entry in entries:
        values = entry.as_dict()
        values["data"] = canonical_json(entry.data)
        values["redacted"] = "true" if entry.redacted else "false"
        writer.writerow(["" if values[name] is None else values[name] for name in EXPORT_FIELDS])
        count += 1
    return count
