"""The tamper-evident audit log on SQLite and, when configured, PostgreSQL; and `imagine audit`."""

from __future__ import annotations

import csv
import hashlib
import io
import itertools
import json
import subprocess
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta

import pytest
from bot_process import IMAGINE, imagine_env
from sqlalchemy import Engine, text, update

from bot.db.migrate import connect, upgrade
from moderation.audit import (
    GENESIS_HASH,
    AuditEntry,
    AuditError,
    AuditLog,
    audit_log,
    entry_hash,
    export_csv,
    export_jsonl,
)


@pytest.fixture
def engine(database_url: str) -> Iterator[Engine]:
    engine = connect(database_url)
    upgrade(engine)
    yield engine
    engine.dispose()


@pytest.fixture
def log(engine: Engine) -> AuditLog:
    return AuditLog(engine)


def fill(log: AuditLog, count: int = 5) -> list[AuditEntry]:
    """Entries 1..count: requests from members u1/u2 in guild g1, with a prompt in the data."""
    return [
        log.append(
            "request.received",
            actor_id=f"u{i % 2 + 1}",
            user_id=f"u{i % 2 + 1}",
            guild_id="g1",
            job_id=f"job{i}",
            data={"prompt": f"a lighthouse number {i}", "count": 1},
        )
        for i in range(1, count + 1)
    ]


def tamper(engine: Engine, *statements: str, **params: object) -> None:
    with engine.begin() as connection:
        for statement in statements:
            connection.execute(text(statement), params)


def test_entries_chain_from_genesis_and_verify(log: AuditLog) -> None:
    assert log.verify().ok  # an empty log is intact
    entries = fill(log, 5)
    assert [e.id for e in entries] == [1, 2, 3, 4, 5]
    assert entries[0].prev_hash == GENESIS_HASH
    for before, after in itertools.pairwise(entries):
        assert after.prev_hash == before.entry_hash
        assert after.at >= before.at
    assert entries[0].at.tzinfo is not None
    result = log.verify()
    assert (result.ok, result.entries, result.first_bad_id) == (True, 5, None)
    assert result.last_hash == entries[-1].entry_hash
    assert log.verify(batch_size=2).ok  # streamed in small batches


def test_data_is_stored_canonically_and_read_back_as_written(engine: Engine, log: AuditLog) -> None:
    entry = log.append("gate.prompt", user_id="u1", category="sexual", data={"b": [1, 2], "a": "ñ é", "z": None})
    with engine.connect() as connection:
        stored = connection.execute(text("SELECT data, data_hash FROM audit_log WHERE id = 1")).one()
    assert stored.data == '{"a":"ñ é","b":[1,2],"z":null}'
    assert stored.data_hash == hashlib.sha256(stored.data.encode()).hexdigest() == entry.data_hash
    (read,) = log.query()
    assert read == entry
    assert read.data == {"a": "ñ é", "b": [1, 2], "z": None}


def test_bad_entries_are_refused_without_echoing_data(log: AuditLog) -> None:
    with pytest.raises(AuditError, match="event"):
        log.append("")
    with pytest.raises(AuditError, match="user_id must be at most 64"):
        log.append("request.received", user_id="x" * 65)
    with pytest.raises(AuditError, match="plain JSON"):
        log.append("request.received", data={"when": datetime.now(UTC)})
    with pytest.raises(AuditError, match="plain JSON"):
        log.append("request.received", data={"score": float("nan")})
    assert log.verify().entries == 0


def _forge_in_the_middle(engine: Engine, entries: list[AuditEntry]) -> None:
    """A forger who knows the hash recipe: shift entries 3..5 up and insert a well-formed entry 3 after 2."""
    second = entries[1]
    forged_data = '{"reason":"spam"}'
    data_hash = hashlib.sha256(forged_data.encode()).hexdigest()
    digest = entry_hash(
        id=3,
        at=second.at,
        event="mod.ban",
        actor_id="mod",
        user_id="u9",
        guild_id="g1",
        job_id=None,
        category=None,
        data_hash=data_hash,
        prev_hash=second.entry_hash,
    )
    tamper(
        engine,
        "UPDATE audit_log SET id = id + 1000 WHERE id >= 3",
        "UPDATE audit_log SET id = id - 999 WHERE id >= 1000",
        "INSERT INTO audit_log (id, at, event, actor_id, user_id, guild_id, job_id, category, data, data_hash,"
        " prev_hash, entry_hash, redacted)"
        " SELECT 3, at, 'mod.ban', 'mod', 'u9', 'g1', NULL, NULL, :data, :data_hash, :prev, :digest, redacted"
        " FROM audit_log WHERE id = 2",
        data=forged_data,
        data_hash=data_hash,
        prev=second.entry_hash,
        digest=digest,
    )


def _append_behind_the_head(engine: Engine, entries: list[AuditEntry]) -> None:
    """A well-formed entry 6 written straight into the table, leaving the head at 5."""
    last = entries[-1]
    digest = entry_hash(
        id=6,
        at=last.at,
        event="mod.unban",
        actor_id="mod",
        user_id="u1",
        guild_id="g1",
        job_id=None,
        category=None,
        data_hash=last.data_hash,
        prev_hash=last.entry_hash,
    )
    tamper(
        engine,
        "INSERT INTO audit_log (id, at, event, actor_id, user_id, guild_id, job_id, category, data, data_hash,"
        " prev_hash, entry_hash, redacted)"
        " SELECT 6, at, 'mod.unban', 'mod', 'u1', 'g1', NULL, NULL, data, data_hash, entry_hash, :digest, redacted"
        " FROM audit_log WHERE id = 5",
        digest=digest,
    )


Tamper = Callable[[Engine, list[AuditEntry]], None]
TAMPERING: list[tuple[str, Tamper, int, str]] = [
    (
        "edit a data field",
        lambda e, _: tamper(e, "UPDATE audit_log SET data = :d WHERE id = 3", d='{"count":1,"prompt":"nothing"}'),
        3,
        "data was edited",
    ),
    ("edit the event", lambda e, _: tamper(e, "UPDATE audit_log SET event = 'job.queued' WHERE id = 3"), 3, "field"),
    ("edit the user", lambda e, _: tamper(e, "UPDATE audit_log SET user_id = 'u7' WHERE id = 2"), 2, "field"),
    (
        "edit the time",
        lambda e, _: tamper(e, "UPDATE audit_log SET at = (SELECT at FROM audit_log WHERE id = 1)"),
        2,
        "",
    ),
    (
        "edit data and its hash",
        lambda e, _: tamper(
            e, "UPDATE audit_log SET data = '{}', data_hash = :h WHERE id = 4", h=hashlib.sha256(b"{}").hexdigest()
        ),
        4,
        "field",
    ),
    ("insert a forged entry in the middle", _forge_in_the_middle, 4, "prev_hash"),
    ("append behind the head's back", _append_behind_the_head, 6, "added outside"),
    ("delete a middle entry", lambda e, _: tamper(e, "DELETE FROM audit_log WHERE id = 3"), 3, "entry 3 is missing"),
    ("delete two middle entries", lambda e, _: tamper(e, "DELETE FROM audit_log WHERE id IN (2, 3)"), 2, "2 to 3"),
    ("delete the last entry", lambda e, _: tamper(e, "DELETE FROM audit_log WHERE id = 5"), 5, "entry 5 is missing"),
    (
        "redact without a redaction entry",
        lambda e, _: tamper(e, "UPDATE audit_log SET data = '{}', redacted = :r WHERE id = 2", r=True),
        2,
        "no later redaction entry",
    ),
    (
        "mark redacted but keep the data",
        lambda e, _: tamper(e, "UPDATE audit_log SET redacted = :r WHERE id = 2", r=True),
        2,
        "still holds data",
    ),
    ("clear the data only", lambda e, _: tamper(e, "UPDATE audit_log SET data = '{}' WHERE id = 2"), 2, "data_hash"),
    (
        "rewrite the head's hash",
        lambda e, _: tamper(e, "UPDATE audit_head SET last_hash = :h", h="f" * 64),
        5,
        "head",
    ),
    ("remove the head", lambda e, _: tamper(e, "DELETE FROM audit_head"), 1, "audit_head"),
]


def reset(engine: Engine) -> None:
    """Back to an empty log, as the migration leaves it."""
    tamper(engine, "DELETE FROM audit_log", "DELETE FROM audit_head")
    tamper(engine, "INSERT INTO audit_head (id, last_id, last_hash) VALUES (1, 0, :h)", h=GENESIS_HASH)


def test_tampering_is_detected_at_the_first_bad_entry(engine: Engine, log: AuditLog) -> None:
    # One database for every case (migrating a fresh one per case is most of the cost): reset between them.
    for how, act, first_bad_id, says in TAMPERING:
        reset(engine)
        entries = fill(log, 5)
        assert log.verify().ok, how
        act(engine, entries)
        result = log.verify()
        assert not result.ok, how
        assert result.first_bad_id == first_bad_id, f"{how}: {result}"
        assert says in result.reason, f"{how}: {result.reason}"
        assert result.last_hash is None


def _data_of(engine: Engine, user: str) -> list[str]:
    with engine.connect() as connection:
        return list(
            connection.scalars(text("SELECT data FROM audit_log WHERE user_id = :u OR actor_id = :u"), {"u": user})
        )


def test_redact_user_removes_their_data_and_keeps_the_chain(engine: Engine, log: AuditLog) -> None:
    fill(log, 4)  # u2: 1, 3; u1: 2, 4
    log.append("mod.ban", actor_id="u2", user_id="u3", data={"reason": "spam from u3"})  # 5: u2 as actor
    log.append("job.finished", user_id="u3", data={"seconds": 2.5})  # 6

    assert log.redact_user("u2", actor_id="mod1", reason="data deletion request") == 3
    result = log.verify()
    assert result.ok, result.reason
    assert result.entries == 7

    about_u2 = [e for e in log.query() if e.id in (1, 3, 5)]
    assert all(e.redacted and e.data == {} for e in about_u2)
    assert [e.user_id for e in about_u2] == ["u2", "u2", "u3"]  # the ids the chain needs stay
    assert not any("lighthouse" in d or "spam" in d for d in _data_of(engine, "u2")[:-1])
    (redaction,) = log.query(event="redaction")
    assert (redaction.id, redaction.actor_id, redaction.user_id) == (7, "mod1", "u2")
    assert redaction.data == {"count": 3, "ids": [1, 3, 5], "reason": "data deletion request"}
    assert [e.data["prompt"] for e in log.query(user_id="u1")] == ["a lighthouse number 2", "a lighthouse number 4"]

    assert log.redact_user("u2", actor_id="mod1", reason="asked again") == 0  # the redaction record survives
    assert log.query(event="redaction")[0].data["ids"] == [1, 3, 5]
    log.append("job.queued", user_id="u1")
    assert log.verify().ok

    tamper(engine, "UPDATE audit_log SET data = '{}', redacted = :r WHERE id = 2", r=True)  # not authorised
    result = log.verify()
    assert (result.ok, result.first_bad_id) == (False, 2)


def test_concurrent_appends_never_fork_the_chain(database_url: str, engine: Engine, log: AuditLog) -> None:
    threads, each = 8, 25
    engines = [connect(database_url) for _ in range(threads)]  # one pool per thread, as separate processes have

    def work(worker: int) -> list[int]:
        writer = AuditLog(engines[worker])
        return [writer.append("job.queued", user_id=f"w{worker}", data={"n": n}).id for n in range(each)]

    try:
        with ThreadPoolExecutor(threads) as pool:
            ids = [i for batch in pool.map(work, range(threads)) for i in batch]
    finally:
        for one in engines:
            one.dispose()
    assert sorted(ids) == list(range(1, threads * each + 1))
    result = log.verify()
    assert (result.ok, result.entries) == (True, threads * each), result.reason
    entries = log.query()
    assert len({e.prev_hash for e in entries}) == threads * each  # no two entries share a parent
    for worker in range(threads):
        assert [e.data["n"] for e in log.query(user_id=f"w{worker}")] == list(range(each))


def test_query_filters(engine: Engine, log: AuditLog) -> None:
    fill(log, 4)
    log.append("gate.prompt", user_id="u1", guild_id="g2", category="sexual", data={"layer": "rules"})
    log.append("gate.prompt", user_id="u2", guild_id="g2", category="violence_graphic")
    log.append("config.loaded")
    assert [e.id for e in log.query()] == [1, 2, 3, 4, 5, 6, 7]
    assert [e.id for e in log.query(user_id="u1")] == [2, 4, 5]
    assert [e.id for e in log.query(guild_id="g2")] == [5, 6]
    assert [e.id for e in log.query(job_id="job3")] == [3]
    assert [e.id for e in log.query(category="sexual")] == [5]
    assert [e.id for e in log.query(event="gate.prompt")] == [5, 6]
    assert [e.id for e in log.query(event="gate.prompt", user_id="u2")] == [6]
    assert [e.id for e in log.query(limit=2)] == [6, 7]  # the newest two, oldest first
    assert [e.id for e in log.query(user_id="u1", limit=1)] == [5]
    assert log.query(user_id="nobody") == []

    with engine.begin() as connection:  # typed, so that SQLite stores the time as SQLAlchemy reads it
        connection.execute(update(audit_log).where(audit_log.c.id <= 3).values(at=datetime(2020, 1, 1, tzinfo=UTC)))
    cut = datetime(2021, 1, 1, tzinfo=UTC)
    assert [e.id for e in log.query(until=cut)] == [1, 2, 3]
    assert [e.id for e in log.query(since=cut)] == [4, 5, 6, 7]
    assert [e.id for e in log.query(since=datetime(2021, 1, 1))] == [4, 5, 6, 7]  # naive means UTC
    assert [e.id for e in log.query(since=datetime(2020, 1, 1, tzinfo=UTC), until=cut)] == [1, 2, 3]
    later = datetime.now(UTC) + timedelta(hours=1)
    assert log.query(since=later) == []
    with pytest.raises(AuditError, match="limit"):
        log.query(limit=0)


def test_query_by_member_matches_the_subject_or_the_actor(log: AuditLog) -> None:
    log.append("request.received", actor_id="u1", user_id="u1", guild_id="g1")
    log.append("mod.ban", actor_id="mod7", user_id="u1", guild_id="g1")
    log.append("mod.strike", actor_id="mod7", user_id="u2", guild_id="g1")
    log.append("mod.ban", actor_id="mod8", user_id="mod7", guild_id="g2")
    assert [e.id for e in log.query(user_id="mod7")] == [4]  # subject only
    assert [e.id for e in log.query(member_id="mod7")] == [2, 3, 4]
    assert [e.id for e in log.query(member_id="mod7", guild_id="g1")] == [2, 3]
    assert [e.id for e in log.query(member_id="u1")] == [1, 2]
    assert [e.id for e in log.query(member_id="mod7", limit=1)] == [4]
    assert log.query(member_id="nobody") == []


def test_export_jsonl_and_csv(log: AuditLog) -> None:
    fill(log, 2)
    log.append("gate.prompt", user_id="u1", category="hate", data={"note": 'quote " and, comma\nnewline'})
    log.redact_user("u2", actor_id="mod", reason="asked")
    entries = log.query()

    out = io.StringIO()
    assert export_jsonl(entries, out) == 4
    lines = out.getvalue().splitlines()
    assert [json.loads(line) for line in lines] == [e.as_dict() for e in entries]
    assert json.loads(lines[2])["data"]["note"] == 'quote " and, comma\nnewline'
    assert json.loads(lines[0])["redacted"] is True

    out = io.StringIO()
    assert export_csv(entries, out) == 4
    rows = list(csv.DictReader(io.StringIO(out.getvalue())))
    assert [int(r["id"]) for r in rows] == [1, 2, 3, 4]
    assert rows[2]["category"] == "hate"
    assert rows[0]["guild_id"] == "g1"
    assert rows[3]["guild_id"] == ""
    assert json.loads(rows[2]["data"]) == {"note": 'quote " and, comma\nnewline'}
    assert [r["redacted"] for r in rows] == ["true", "false", "false", "false"]
    assert rows[1]["entry_hash"] == entries[1].entry_hash
    assert datetime.fromisoformat(rows[0]["at"]) == entries[0].at


# -- the command line ------------------------------------------------------------------------------------------


def imagine(*args: str, url: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [IMAGINE, "audit", *args],
        env=imagine_env({"IMAGINE_DATABASE_URL": url}),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_cli_verify(database_url: str, engine: Engine, log: AuditLog) -> None:
    fill(log, 3)
    result = imagine("verify", url=database_url)
    assert result.returncode == 0, result.stderr
    assert "audit log intact: 3 entries" in result.stdout

    tamper(engine, "UPDATE audit_log SET event = 'mod.ban' WHERE id = 2")
    result = imagine("verify", url=database_url)
    assert result.returncode == 1
    assert "entry 2" in result.stdout
    assert "field" in result.stdout
    assert "Traceback" not in result.stderr


def test_cli_show_filters_and_formats(database_url: str, log: AuditLog) -> None:
    fill(log, 4)
    log.append("gate.prompt", user_id="u1", guild_id="g2", category="sexual", data={"layer": "rules"})

    table = imagine("show", "--user", "u1", url=database_url)
    assert table.returncode == 0, table.stderr
    header, *rows = table.stdout.splitlines()
    assert header.split()[:3] == ["id", "at", "(UTC)"]
    assert [row.split()[0] for row in rows] == ["2", "4", "5"]
    assert '{"layer": "rules"}' in rows[-1]

    jsonl = imagine("show", "--guild", "g2", "--category", "sexual", "--format", "jsonl", url=database_url)
    assert jsonl.returncode == 0, jsonl.stderr
    (only,) = [json.loads(line) for line in jsonl.stdout.splitlines()]
    assert (only["id"], only["data"]) == (5, {"layer": "rules"})

    since = (datetime.now(UTC) - timedelta(hours=1)).isoformat()
    found = imagine(
        "show", "--event", "request.received", "--since", since, "--limit", "2", "--format", "csv", url=database_url
    )
    assert found.returncode == 0, found.stderr
    assert [r["id"] for r in csv.DictReader(io.StringIO(found.stdout))] == ["3", "4"]


def test_cli_show_user_includes_what_the_member_did(database_url: str, log: AuditLog) -> None:
    log.append("request.received", actor_id="u1", user_id="u1", guild_id="g1")
    log.append("mod.ban", actor_id="mod7", user_id="u1", guild_id="g1", data={"hours": 24})
    log.append("request.received", actor_id="u2", user_id="u2", guild_id="g1")
    result = imagine("show", "--user", "mod7", "--format", "jsonl", url=database_url)
    assert result.returncode == 0, result.stderr
    assert [json.loads(line)["id"] for line in result.stdout.splitlines()] == [2]
    result = imagine("show", "--user", "u1", "--format", "jsonl", url=database_url)
    assert [json.loads(line)["id"] for line in result.stdout.splitlines()] == [1, 2]
    assert "subject or the actor" in imagine("show", "--help", url=database_url).stdout


@pytest.mark.parametrize("output", ["jsonl", "csv", "table"])
def test_cli_show_into_a_pipe_closed_early_exits_quietly(database_url: str, log: AuditLog, output: str) -> None:
    # `imagine audit show | head -1`: far more output than a pipe buffers (64 KiB), and the reader goes after
    # one line, so later writes meet a closed pipe.
    for i in range(40):
        log.append("request.received", user_id="u1", data={"prompt": f"{i} " + "a lighthouse at dusk " * 400})
    process = subprocess.Popen(
        [IMAGINE, "audit", "show", "--format", output],
        env=imagine_env({"IMAGINE_DATABASE_URL": database_url}),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert process.stdout is not None
    assert process.stderr is not None
    first = process.stdout.readline()
    process.stdout.close()
    stderr = process.stderr.read().decode()
    assert process.wait(timeout=60) == 0, stderr
    assert first.strip()
    assert stderr == ""


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["--since", "yesterday"], "--since must be an ISO date"),
        (["--limit", "ten"], "--limit must be a whole number of 1 or more"),
        (["--since", "2026-02-01", "--until", "2026-01-01"], "--since must be earlier than --until"),
    ],
)
def test_cli_show_bad_options_get_one_clear_line(args: list[str], says: str) -> None:
    result = imagine("show", *args, url="sqlite:////nonexistent/never-opened.sqlite3")
    assert result.returncode == 2
    assert says in result.stderr
    assert result.stderr.strip().count("\n") == 0
    assert "Traceback" not in result.stderr
