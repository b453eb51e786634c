"""The job record on SQLite and, when configured, PostgreSQL."""

from collections.abc import Iterator
from dataclasses import replace
from datetime import timedelta

import pytest
from sqlalchemy import Engine, inspect

from bot.db.migrate import connect, current_revision, upgrade
from bot.db.models import JobStatus
from bot.db.store import JobStore, NewJob, OverQuota, StoredImage, utcnow
from moderation.quota import QuotaPolicy, Tier

TWO_AT_A_TIME = Tier(max_concurrent=2)
NO_QUOTA = QuotaPolicy(default=TWO_AT_A_TIME)


@pytest.fixture
def engine(database_url: str) -> Iterator[Engine]:
    engine = connect(database_url)
    upgrade(engine)
    yield engine
    engine.dispose()


def new_job(job_id: str, user: str = "u1") -> NewJob:
    return NewJob(
        id=job_id,
        frontend="discord",
        user_id=user,
        guild_id="g1",
        channel_id="c1",
        prompt="a lighthouse",
        negative_prompt="fog",
        options={"count": 2, "steps": 4, "width": None, "height": None, "seed": None},
        seed=42,
        model="tiny",
        delivery={"token": "interaction-token"},
    )


def test_migrations_apply_once_and_again(engine: Engine) -> None:
    upgrade(engine)
    assert current_revision(engine) == "0005"
    assert {"jobs", "job_transitions", "images"} <= set(inspect(engine).get_table_names())


def test_lifecycle_is_recorded_with_timestamps(engine: Engine) -> None:
    store = JobStore(engine)
    store.accept(new_job("j1"), tier=TWO_AT_A_TIME, quota=NO_QUOTA, images=1)
    for status in (JobStatus.RUNNING, JobStatus.COMPLETED, JobStatus.POSTING):
        assert store.transition("j1", status)
    store.add_images("j1", [StoredImage(0, 42, 64, 64, "/x/0.png", "ab" * 32, 100)])
    store.add_images("j1", [StoredImage(0, 42, 64, 64, "/x/0.png", "ab" * 32, 100)])
    assert store.transition("j1", JobStatus.POSTED, message_id="999")
    assert not store.transition("j1", JobStatus.FAILED, detail="too late")
    record = store.get("j1")
    assert record is not None
    assert record.status is JobStatus.POSTED
    assert record.message_id == "999"
    assert record.seed == 42
    assert record.negative_prompt == "fog"
    assert record.options["count"] == 2
    assert [t[0] for t in record.transitions] == [
        JobStatus.QUEUED,
        JobStatus.RUNNING,
        JobStatus.COMPLETED,
        JobStatus.POSTING,
        JobStatus.POSTED,
    ]
    times = [t[1] for t in record.transitions]
    assert times == sorted(times)
    assert [(i.index, i.sha256) for i in record.images] == [(0, "ab" * 32)]


def test_concurrency_cap_and_unfinished(engine: Engine) -> None:
    store = JobStore(engine)
    store.accept(new_job("a"), tier=TWO_AT_A_TIME, quota=NO_QUOTA, images=1)
    store.accept(new_job("b"), tier=TWO_AT_A_TIME, quota=NO_QUOTA, images=1)
    with pytest.raises(OverQuota):
        store.accept(new_job("c"), tier=TWO_AT_A_TIME, quota=NO_QUOTA, images=1)
    store.accept(new_job("other-user", user="u2"), tier=TWO_AT_A_TIME, quota=NO_QUOTA, images=1)
    rejected = store.get("c")
    assert rejected is not None
    assert rejected.status is JobStatus.REJECTED
    assert [r.id for r in store.unfinished()] == ["a", "b", "other-user"]
    store.transition("a", JobStatus.FAILED, detail="engine fault")
    assert store.active_count("u1") == 1
    failed = store.get("a")
    assert failed is not None
    assert failed.outcome == "engine fault"


def test_rejections_are_recorded(engine: Engine) -> None:
    store = JobStore(engine)
    store.reject(new_job("r"), "blocked: sexual")
    record = store.get("r")
    assert record is not None
    assert record.status is JobStatus.REJECTED
    assert record.outcome == "blocked: sexual"
    assert store.unfinished() == []


def test_strikes_bans_and_jobs_are_read_per_server(engine: Engine) -> None:
    store = JobStore(engine)
    store.reject(new_job("a"), "blocked: hate")
    store.reject(replace(new_job("b"), guild_id="g2"), "blocked: hate")
    for guild in ("g1", "g2", "g2"):
        store.add_strike("discord", "u1", actor_id="m", reason=f"in {guild}", guild_id=guild, job_id=None)
    store.ban("discord", "u1", actor_id="m", reason="in g2", guild_id="g2", until=None)
    store.ban("discord", "u1", actor_id="m", reason="everywhere", guild_id=None, until=None)
    since = utcnow() - timedelta(days=1)
    assert [reason for _, reason, _ in store.strikes_since("discord", "u1", since, guild_id="g1")] == ["in g1"]
    assert len(store.strikes_since("discord", "u1", since, guild_id="g2")) == 2
    assert [ban.reason for ban in store.bans("discord", "u1", guild_id="g1")] == ["everywhere"]
    assert [ban.reason for ban in store.bans("discord", "u1", guild_id="g2")] == ["in g2", "everywhere"]
    assert [job.id for job in store.recent_jobs("u1", guild_id="g1")] == ["a"]
    assert [job.id for job in store.recent_jobs("u1", guild_id="g2")] == ["b"]


def test_a_refused_prompt_is_decided_once_and_only_on_an_appeal(engine: Engine) -> None:
    store = JobStore(engine)
    store.reject(new_job("r"), "blocked: hate (blocklist, score 1.00)")
    assert store.settle("r", approve=True, actor_id="m") is None  # nobody appealed it
    store.open_appeal("discord", "u1", "r", "g1", per_day=5)
    settled = store.settle("r", approve=True, actor_id="m", options={"safety_negative": "nsfw"})
    assert settled is not None
    assert (settled.before, settled.after) == (JobStatus.REJECTED, JobStatus.QUEUED)
    assert settled.appeal is not None
    assert (settled.appeal.status, settled.appeal.decided_by) == ("approved", "m")
    record = store.get("r")
    assert record is not None
    assert record.outcome is None
    assert record.options["safety_negative"] == "nsfw"
    assert record.options["count"] == 2  # its own options stay
    assert record.transitions[-1][0] is JobStatus.QUEUED
    assert store.settle("r", approve=False, actor_id="m2") is None
    assert store.get("r").status is JobStatus.QUEUED  # type: ignore[union-attr]


def test_an_appeal_that_reached_nobody_can_be_withdrawn(engine: Engine) -> None:
    store = JobStore(engine)
    store.reject(new_job("w"), "blocked: hate")
    opened = store.open_appeal("discord", "u1", "w", "g1", per_day=1)
    assert not isinstance(opened, str)
    store.withdraw_appeal(opened.id)
    assert store.appeal_for("w") is None
    assert not isinstance(store.open_appeal("discord", "u1", "w", "g1", per_day=1), str)  # it was not counted
