"""The queue contract. Every transport must pass this suite."""

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from engine.jobs import Event, EventKind, GeneratedImage, GenerationSpec, Job
from engine.queue import LocalQueue
from engine.queue.base import JobQueue


def make_job(job_id: str, prompt: str = "a lighthouse at dusk") -> Job:
    return Job(id=job_id, model="tiny", spec=GenerationSpec(prompt=prompt, seed=7, count=2))


@pytest.fixture
def queue_path(tmp_path: Path) -> Path:
    return tmp_path / "queue.sqlite3"


@pytest.fixture
def queue(queue_path: Path) -> Iterator[JobQueue]:
    q = LocalQueue(queue_path, lease_seconds=0.3, max_attempts=2, poll_seconds=0.02)
    yield q
    q.close()


def test_submit_is_idempotent_and_ordered(queue: JobQueue) -> None:
    assert queue.submit(make_job("a"))
    assert queue.submit(make_job("b"))
    assert not queue.submit(make_job("a"))
    assert queue.position("a") == 1
    assert queue.position("b") == 2
    claimed = queue.claim("w1", timeout=0)
    assert claimed is not None
    assert claimed.id == "a"
    assert claimed.spec == make_job("a").spec
    assert queue.position("a") is None
    assert queue.position("b") == 1


def test_claim_waits_then_gives_up(queue: JobQueue) -> None:
    started = time.monotonic()
    assert queue.claim("w1", timeout=0.1) is None
    assert time.monotonic() - started >= 0.1


def test_events_flow_and_one_terminal_event(queue: JobQueue) -> None:
    queue.submit(make_job("a"))
    assert queue.claim("w1", timeout=0) is not None
    assert queue.publish("a", "w1", Event(EventKind.STARTED, worker="w1"))
    assert queue.publish("a", "w1", Event(EventKind.PROGRESS, step=1, total_steps=4))
    image = GeneratedImage(index=0, seed=7, width=8, height=8, png=b"\x89PNG fake bytes")
    assert queue.finish("a", "w1", Event(EventKind.DONE, images=(image,), seconds=1.5))
    assert not queue.finish("a", "w1", Event(EventKind.FAILED, reason="again"))
    events = queue.events("a")
    assert [e.kind for _, e in events] == [EventKind.STARTED, EventKind.PROGRESS, EventKind.DONE]
    assert events[-1][1].images == (image,)
    cursor = events[0][0]
    assert [e.kind for _, e in queue.events("a", after=cursor)] == [EventKind.PROGRESS, EventKind.DONE]
    assert queue.events("a", after=events[-1][0]) == []
    queue.forget("a")
    assert queue.events("a") == []


def test_only_the_holder_may_report(queue: JobQueue) -> None:
    queue.submit(make_job("a"))
    queue.claim("w1", timeout=0)
    assert not queue.publish("a", "intruder", Event(EventKind.PROGRESS, step=1, total_steps=2))
    assert not queue.finish("a", "intruder", Event(EventKind.DONE))
    assert not queue.heartbeat("a", "intruder")
    assert queue.heartbeat("a", "w1")


def test_cancel_queued_and_running(queue: JobQueue) -> None:
    queue.submit(make_job("queued"))
    queue.submit(make_job("running"))
    assert queue.cancel("queued")
    assert [e.kind for _, e in queue.events("queued")] == [EventKind.CANCELLED]
    assert not queue.cancel("queued")
    job = queue.claim("w1", timeout=0)
    assert job is not None
    assert job.id == "running"
    assert not queue.cancel_requested("running")
    assert queue.cancel("running")
    assert queue.cancel_requested("running")


def test_expired_lease_is_taken_over(queue: JobQueue) -> None:
    queue.submit(make_job("a"))
    assert queue.claim("dead-engine", timeout=0) is not None
    assert queue.claim("w2", timeout=0) is None
    time.sleep(0.35)
    taken = queue.claim("w2", timeout=0)
    assert taken is not None
    assert taken.id == "a"
    assert not queue.finish("a", "dead-engine", Event(EventKind.DONE))
    assert queue.finish("a", "w2", Event(EventKind.DONE))


def test_heartbeat_keeps_the_claim(queue: JobQueue) -> None:
    queue.submit(make_job("a"))
    queue.claim("w1", timeout=0)
    for _ in range(4):
        time.sleep(0.1)
        assert queue.heartbeat("a", "w1")
    assert queue.claim("w2", timeout=0) is None


def test_recover_hands_back_a_restarted_engines_jobs(queue: JobQueue) -> None:
    queue.submit(make_job("a"))
    queue.claim("engine-1", timeout=0)
    assert queue.recover("engine-1") == 1
    again = queue.claim("engine-1", timeout=0)
    assert again is not None
    assert again.id == "a"


def test_poison_job_is_dead_lettered(queue: JobQueue) -> None:
    queue.submit(make_job("poison"))
    for _ in range(2):  # max_attempts=2: two claims, each "crashing" the engine
        assert queue.claim("w1", timeout=0) is not None
        queue.recover("w1")
    assert queue.claim("w1", timeout=0) is None
    (_, event), *_ = queue.events("poison")
    assert event.kind is EventKind.FAILED
    assert "2 times" in event.reason


def test_release_does_not_count_as_an_attempt(queue: JobQueue) -> None:
    queue.submit(make_job("a"))
    for _ in range(5):
        assert queue.claim("w1", timeout=0) is not None
        queue.release("a", "w1")
    assert queue.claim("w1", timeout=0) is not None


def test_jobs_survive_reopening(queue_path: Path) -> None:
    first = LocalQueue(queue_path)
    first.submit(make_job("kept"))
    first.close()
    second = LocalQueue(queue_path)
    try:
        job = second.claim("w1", timeout=0)
        assert job is not None
        assert job.id == "kept"
    finally:
        second.close()
