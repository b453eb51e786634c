"""The queue contract. Every transport passes this same suite: local always, Redis when configured."""

import json
import os
import sqlite3
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from engine.jobs import Event, EventKind, GeneratedImage, GenerationSpec, Job
from engine.queue import EngineStatus, LocalQueue, QueuePosition
from engine.queue.base import JobQueue

QueueFactory = Callable[..., JobQueue]
MODELS = ["tiny"]


def make_job(
    job_id: str,
    *,
    model: str = "tiny",
    count: int = 1,
    steps: int | None = None,
    owner: str = "",
    weight: int = 1,
) -> Job:
    spec = GenerationSpec(prompt=f"prompt {job_id}", seed=7, count=count, steps=steps)
    return Job(id=job_id, model=model, spec=spec, owner=owner, weight=weight)


def owners_of_claims(queue: JobQueue, claims: int) -> list[str]:
    """Claim one job at a time and say whose each was."""
    taken = [claim_one(queue, "w1") for _ in range(claims)]
    return [job.owner for job in taken if job is not None]


def claim_one(queue: JobQueue, worker: str, models: list[str] = MODELS, timeout: float = 0) -> Job | None:
    batch = queue.claim(worker, models=models, max_images=1, timeout=timeout)
    assert len(batch) <= 1
    return batch[0] if batch else None


@pytest.fixture(params=["local", "redis"])
def make_queue(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[QueueFactory]:
    made: list[JobQueue] = []
    defaults = {"lease_seconds": 0.3, "max_attempts": 2, "poll_seconds": 0.02}
    if request.param == "local":

        def factory(**options: object) -> JobQueue:
            queue = LocalQueue(tmp_path / "queue.sqlite3", **{**defaults, **options})  # type: ignore[arg-type]
            made.append(queue)
            return queue

    else:
        url = os.environ.get("IMAGINE_TEST_REDIS_URL", "")
        if not url:
            pytest.skip("IMAGINE_TEST_REDIS_URL is not set, so the Redis variant does not run")
        from engine.queue.redis import RedisQueue

        prefix = f"imagine-test-{uuid.uuid4().hex[:10]}"

        def factory(**options: object) -> JobQueue:
            queue = RedisQueue(url, prefix=prefix, **{**defaults, **options})  # type: ignore[arg-type]
            made.append(queue)
            return queue

    yield factory
    if request.param == "redis":
        import redis

        client = redis.Redis.from_url(url)
        keys = list(client.scan_iter(f"{prefix}*"))
        if keys:
            client.delete(*keys)
        client.close()
    for queue in made:
        queue.close()


@pytest.fixture
def queue(make_queue: QueueFactory) -> JobQueue:
    return make_queue()


def test_submit_is_idempotent_and_ordered(queue: JobQueue) -> None:
    assert queue.submit(make_job("a", count=2))
    assert queue.submit(make_job("b"))
    assert not queue.submit(make_job("a"))
    assert queue.position("a") == QueuePosition(0, 0)
    assert queue.position("b") == QueuePosition(jobs_ahead=1, images_ahead=2)
    assert queue.position("b").place == 2  # type: ignore[union-attr]
    claimed = claim_one(queue, "w1")
    assert claimed is not None
    assert claimed.id == "a"
    assert claimed.spec == make_job("a", count=2).spec
    assert queue.position("a") is None
    assert queue.position("b") == QueuePosition(0, 0)


def test_claim_waits_then_gives_up(queue: JobQueue) -> None:
    started = time.monotonic()
    assert queue.claim("w1", models=MODELS, max_images=4, timeout=0.1) == []
    assert time.monotonic() - started >= 0.1


def test_a_batch_takes_compatible_jobs_up_to_the_image_limit(queue: JobQueue) -> None:
    queue.submit(make_job("a", count=2))
    queue.submit(make_job("other-steps", steps=8))
    queue.submit(make_job("b"))
    queue.submit(make_job("c", count=2))
    queue.submit(make_job("d"))
    batch = queue.claim("w1", models=MODELS, max_images=4, timeout=0)
    assert [job.id for job in batch] == ["a", "b", "d"] or [job.id for job in batch] == ["a", "b"]
    assert sum(job.spec.count for job in batch) <= 4
    # Nothing taken is left waiting, and what was skipped is next in line.
    rest = queue.claim("w2", models=MODELS, max_images=8, timeout=0)
    assert rest
    assert rest[0].id == "other-steps"
    left = queue.claim("w2", models=MODELS, max_images=8, timeout=0)
    taken = {job.id for job in [*batch, *rest, *left]}
    assert taken == {"a", "b", "c", "d", "other-steps"}


def test_a_job_larger_than_the_limit_still_runs_alone(queue: JobQueue) -> None:
    queue.submit(make_job("big", count=4))
    queue.submit(make_job("small"))
    batch = queue.claim("w1", models=MODELS, max_images=2, timeout=0)
    assert [job.id for job in batch] == ["big"]


def test_image_to_image_jobs_keep_their_source_and_batch_apart_from_text_to_image(queue: JobQueue) -> None:
    def variation(job_id: str, source: bytes, strength: float | None = None) -> Job:
        spec = GenerationSpec(prompt="p", seed=7, init_image=source, strength=strength, width=64, height=64)
        return Job(id=job_id, model="tiny", spec=spec)

    first, second = b"\x89PNG source one\x00\xff", b"\x89PNG source two"  # the queue never decodes them
    submitted = [variation("v1", first), make_job("text"), variation("v2", second), variation("v3", first, 0.3)]
    for job in submitted:
        queue.submit(job)
    batches = [queue.claim("w1", models=MODELS, max_images=8, timeout=0) for _ in range(3)]
    assert [[job.id for job in batch] for batch in batches] == [["v1", "v2"], ["text"], ["v3"]]
    assert [job for batch in batches for job in batch] == [submitted[0], submitted[2], submitted[1], submitted[3]]


def test_engines_prefer_their_loaded_model_until_a_job_waits_too_long(make_queue: QueueFactory) -> None:
    queue = make_queue(prefer_loaded_for_seconds=0.3)
    queue.submit(make_job("old-other", model="other"))
    queue.submit(make_job("mine", model="tiny"))
    assert claim_one(queue, "w1", models=["tiny", "other"]).id == "mine"  # type: ignore[union-attr]
    assert claim_one(queue, "w1", models=["tiny"]) is None  # never a model it does not serve
    queue.submit(make_job("mine-2", model="tiny"))
    time.sleep(0.35)
    queue.submit(make_job("mine-3", model="tiny"))
    # Both waiting jobs are now older than the preference window: oldest first, whatever the model.
    assert claim_one(queue, "w1", models=["tiny", "other"]).id == "old-other"  # type: ignore[union-attr]


def test_events_flow_and_one_terminal_event(queue: JobQueue) -> None:
    queue.submit(make_job("a"))
    assert claim_one(queue, "w1") is not None
    assert queue.publish("a", "w1", Event(EventKind.STARTED, worker="w1"))
    assert queue.publish("a", "w1", Event(EventKind.PROGRESS, step=1, total_steps=4, preview=b"tiny"))
    image = GeneratedImage(index=0, seed=7, width=8, height=8, png=b"\x89PNG fake bytes")
    assert queue.finish("a", "w1", Event(EventKind.DONE, images=(image,), seconds=1.5))
    assert not queue.finish("a", "w1", Event(EventKind.FAILED, reason="again"))
    events = queue.events("a")
    assert [e.kind for _, e in events] == [EventKind.STARTED, EventKind.PROGRESS, EventKind.DONE]
    assert events[1][1].preview == b"tiny"
    assert events[-1][1].images == (image,)
    cursor = events[0][0]
    assert [e.kind for _, e in queue.events("a", after=cursor)] == [EventKind.PROGRESS, EventKind.DONE]
    assert queue.events("a", after=events[-1][0]) == []
    queue.forget("a")
    assert queue.events("a") == []


def test_only_the_holder_may_report(queue: JobQueue) -> None:
    queue.submit(make_job("a"))
    claim_one(queue, "w1")
    assert not queue.publish("a", "intruder", Event(EventKind.PROGRESS, step=1, total_steps=2))
    assert not queue.finish("a", "intruder", Event(EventKind.DONE))
    assert not queue.heartbeat("a", "intruder")
    assert queue.heartbeat("a", "w1")


def test_cancel_queued_and_running(queue: JobQueue) -> None:
    queue.submit(make_job("running"))
    queue.submit(make_job("queued"))
    job = claim_one(queue, "w1")
    assert job is not None
    assert job.id == "running"
    assert queue.cancel("queued")
    assert [e.kind for _, e in queue.events("queued")] == [EventKind.CANCELLED]
    assert not queue.cancel("queued")
    assert claim_one(queue, "w2") is None  # the cancelled job is never handed out
    assert not queue.cancel_requested("running")
    assert queue.cancel("running")
    assert queue.cancel_requested("running")


def test_expired_lease_is_taken_over(queue: JobQueue) -> None:
    queue.submit(make_job("a"))
    assert claim_one(queue, "dead-engine") is not None
    assert claim_one(queue, "w2") is None
    time.sleep(0.4)
    taken = claim_one(queue, "w2")
    assert taken is not None
    assert taken.id == "a"
    assert not queue.finish("a", "dead-engine", Event(EventKind.DONE))
    assert queue.finish("a", "w2", Event(EventKind.DONE))


def test_heartbeat_keeps_the_claim(queue: JobQueue) -> None:
    queue.submit(make_job("a"))
    claim_one(queue, "w1")
    for _ in range(5):
        time.sleep(0.1)
        assert queue.heartbeat("a", "w1")
    assert claim_one(queue, "w2") is None


def test_recover_hands_back_a_restarted_engines_jobs(queue: JobQueue) -> None:
    queue.submit(make_job("a"))
    claim_one(queue, "engine-1")
    assert queue.recover("engine-1") == 1
    again = claim_one(queue, "engine-1")
    assert again is not None
    assert again.id == "a"


def test_poison_job_is_dead_lettered(queue: JobQueue) -> None:
    queue.submit(make_job("poison"))
    for _ in range(2):  # max_attempts=2: two claims, each "crashing" the engine
        assert claim_one(queue, "w1") is not None
        queue.recover("w1")
    assert claim_one(queue, "w1") is None
    (_, event), *_ = queue.events("poison")
    assert event.kind is EventKind.FAILED
    assert "2 times" in event.reason
    assert [job_id for job_id, _ in queue.dead_letters()] == ["poison"]


def test_release_does_not_count_as_an_attempt(queue: JobQueue) -> None:
    queue.submit(make_job("a"))
    for _ in range(5):
        assert claim_one(queue, "w1") is not None
        queue.release("a", "w1")
    assert claim_one(queue, "w1") is not None


def test_engines_advertise_and_expire(make_queue: QueueFactory) -> None:
    queue = make_queue(engine_ttl_seconds=0.5)
    now = time.time()
    queue.advertise(
        EngineStatus(worker="gpu-1", state="idle", models_loaded=("tiny",), images_per_second=3.5, beat_at=now)
    )
    (status,) = queue.engines()
    assert status.worker == "gpu-1"
    assert status.models_loaded == ("tiny",)
    assert status.images_per_second == 3.5
    time.sleep(0.7)
    assert queue.engines() == []


def test_local_jobs_survive_reopening(tmp_path: Path) -> None:
    first = LocalQueue(tmp_path / "queue.sqlite3")
    first.submit(make_job("kept"))
    first.close()
    second = LocalQueue(tmp_path / "queue.sqlite3")
    try:
        job = claim_one(second, "w1")
        assert job is not None
        assert job.id == "kept"
    finally:
        second.close()


def test_local_queue_upgrades_a_first_version_file(tmp_path: Path) -> None:
    path = tmp_path / "queue.sqlite3"
    with sqlite3.connect(path) as db:
        db.executescript(
            "CREATE TABLE jobs (id TEXT PRIMARY KEY, body TEXT NOT NULL, state TEXT NOT NULL, worker TEXT,"
            " lease_until REAL, attempts INTEGER NOT NULL DEFAULT 0, cancel_requested INTEGER NOT NULL DEFAULT 0,"
            " enqueued_at REAL NOT NULL);"
            "CREATE TABLE events (seq INTEGER PRIMARY KEY AUTOINCREMENT, job_id TEXT NOT NULL, body TEXT NOT NULL,"
            " at REAL NOT NULL);"
        )
    queue = LocalQueue(path)
    try:
        queue.submit(make_job("new"))
        assert queue.position("new") == QueuePosition(0, 0)
    finally:
        queue.close()


def test_jobs_carry_their_owner_and_weight() -> None:
    job = make_job("a", owner="discord:1234", weight=3)
    assert Job.from_json(job.to_json()) == job
    data = json.loads(job.to_json())
    assert (data["owner"], data["weight"]) == ("discord:1234", 3)
    del data["owner"], data["weight"]
    old = Job.from_json(json.dumps(data))  # queued by an earlier release
    assert (old.owner, old.weight) == ("", 1)


def test_one_owners_backlog_does_not_starve_the_others(queue: JobQueue) -> None:
    for i in range(10):
        queue.submit(make_job(f"a{i}", owner="A"))
    for i in range(2):
        queue.submit(make_job(f"b{i}", owner="B"))
        queue.submit(make_job(f"c{i}", owner="C"))
    order = owners_of_claims(queue, 14)
    assert order[:3] == ["A", "B", "C"]
    assert order[3:6] == ["A", "B", "C"]
    assert order[6:] == ["A"] * 8
    # Each owner's own jobs still run in the order they were queued.
    assert queue.position("a0") is None


def test_position_counts_the_other_owners_turns(queue: JobQueue) -> None:
    for i in range(10):
        queue.submit(make_job(f"a{i}", owner="A"))
    queue.submit(make_job("b0", owner="B", count=2))
    queue.submit(make_job("b1", owner="B"))
    assert queue.position("b0") == QueuePosition(jobs_ahead=1, images_ahead=1)  # A's oldest wins the tie
    assert queue.position("b1") == QueuePosition(jobs_ahead=3, images_ahead=4)  # b0 and two of A's first
    assert queue.position("a0") == QueuePosition(0, 0)
    assert queue.position("a5") == QueuePosition(jobs_ahead=7, images_ahead=8)  # a0-a4 and B's two


def test_a_heavier_tier_gets_turns_in_proportion(queue: JobQueue) -> None:
    for i in range(12):
        queue.submit(make_job(f"gold{i}", owner="gold", weight=2))
        queue.submit(make_job(f"free{i}", owner="free"))
    order = owners_of_claims(queue, 12)
    assert 7 <= order.count("gold") <= 9
    assert order.count("gold") + order.count("free") == 12


def test_a_late_owner_cannot_bank_credit(queue: JobQueue) -> None:
    for i in range(20):
        queue.submit(make_job(f"a{i}", owner="A"))
    assert owners_of_claims(queue, 8) == ["A"] * 8
    for i in range(10):
        queue.submit(make_job(f"late{i}", owner="late"))
    order = owners_of_claims(queue, 10)
    run = longest = 0
    for owner in order:
        run = run + 1 if owner == "late" else 0
        longest = max(longest, run)
    assert longest <= 2  # not eight turns in a row for the eight A had before it came
    assert 4 <= order.count("late") <= 6


def test_a_batch_is_filled_fairly_from_several_owners(queue: JobQueue) -> None:
    for i in range(6):
        queue.submit(make_job(f"a{i}", owner="A"))
    queue.submit(make_job("a-other", owner="A", steps=8))
    queue.submit(make_job("b0", owner="B"))
    queue.submit(make_job("b-other", owner="B", steps=8))
    queue.submit(make_job("b1", owner="B", count=2))
    queue.submit(make_job("c0", owner="C"))
    batch = queue.claim("w1", models=MODELS, max_images=6, timeout=0)
    # Turn by turn: A (oldest), B, C, A, then B's two-image job fills it; not six of A's.
    assert [job.id for job in batch] == ["a0", "b0", "c0", "a1", "b1"]
    assert sum(job.spec.count for job in batch) == 6
    # A had two images, B three: A goes next, and the one left out of the batch is not forgotten.
    assert [job.id for job in queue.claim("w1", models=MODELS, max_images=8, timeout=0)] == [
        "a2",
        "a3",
        "a4",
        "a5",
    ]
    assert [job.id for job in queue.claim("w1", models=MODELS, max_images=8, timeout=0)] == ["b-other", "a-other"]


def test_fair_turns_survive_another_queue_object(make_queue: QueueFactory) -> None:
    first = make_queue()
    for i in range(6):
        first.submit(make_job(f"a{i}", owner="A"))
    assert owners_of_claims(first, 4) == ["A"] * 4
    first.submit(make_job("b0", owner="B"))
    first.submit(make_job("b1", owner="B"))
    first.submit(make_job("c0", owner="C"))
    assert owners_of_claims(first, 1) == ["B"]
    first.close()
    second = make_queue()  # the same file / Redis prefix: a restarted engine, or another one
    # B is one turn ahead of C and level with where A was put: C, then A (older) before B.
    assert owners_of_claims(second, 3) == ["C", "A", "B"]
