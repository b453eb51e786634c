"""The job record on SQLite and, when configured, PostgreSQL."""

from collections.abc import Iterator

import pytest
from sqlalchemy import Engine, inspect

from bot.db.migrate import connect, current_revision, upgrade
from bot.db.models import JobStatus
from bot.db.store import JobStore, NewJob, OverQuota, StoredImage
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
