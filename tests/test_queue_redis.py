"""What only the Redis transport has: streams, delivery counts, several engines on one server.

The shared contract runs in test_queue.py; these look at the Redis side of it. All but the unreachable-server
test need a real Redis: set IMAGINE_TEST_REDIS_URL (e.g. redis://127.0.0.1:6379/0). Every test works under
its own key prefix and deletes it afterwards.
"""

from __future__ import annotations

import os
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import redis

from engine.errors import QueueError
from engine.jobs import Event, EventKind, GenerationSpec, Job
from engine.queue.base import EngineStatus, QueuePosition
from engine.queue.redis import GROUP, RELEASED, RedisQueue

REDIS_URL = os.environ.get("IMAGINE_TEST_REDIS_URL", "")

Factory = Callable[..., RedisQueue]


def make_job(job_id: str, *, model: str = "tiny", count: int = 1, steps: int | None = None) -> Job:
    return Job(id=job_id, model=model, spec=GenerationSpec(prompt=f"prompt {job_id}", seed=7, count=count, steps=steps))


def ids(jobs: list[Job]) -> list[str]:
    return [job.id for job in jobs]


def kinds(queue: RedisQueue, job_id: str) -> list[EventKind]:
    return [event.kind for _, event in queue.events(job_id)]


@pytest.fixture
def prefix() -> str:
    return f"imagine-test-{uuid.uuid4().hex[:10]}"


@pytest.fixture
def raw(prefix: str) -> Iterator[redis.Redis]:
    """A plain client on the same server, to look behind the queue's back; it deletes the test's keys after."""
    if not REDIS_URL:
        pytest.skip("IMAGINE_TEST_REDIS_URL is not set (e.g. redis://127.0.0.1:6379/0), so there is no Redis to test")
    client = redis.Redis.from_url(REDIS_URL, decode_responses=True)
    yield client
    keys = list(client.scan_iter(f"{prefix}:*"))
    if keys:
        client.delete(*keys)
    client.close()


@pytest.fixture
def make_queue(prefix: str, raw: redis.Redis) -> Iterator[Factory]:
    """Each call is one more "engine" (or bot) with its own connections, sharing the test's prefix."""
    made: list[RedisQueue] = []

    def factory(**options: Any) -> RedisQueue:
        defaults: dict[str, Any] = {"prefix": prefix, "lease_seconds": 0.3, "max_attempts": 2, "poll_seconds": 0.02}
        queue = RedisQueue(REDIS_URL, **{**defaults, **options})
        made.append(queue)
        return queue

    yield factory
    for queue in made:
        queue.close()


def pending(raw: redis.Redis, prefix: str, model: str = "tiny") -> list[tuple[str, str, int]]:
    """(entry id, consumer, delivery count) for each pending entry of a model's stream."""
    found: Any = raw.xpending_range(f"{prefix}:jobs:{model}", GROUP, min="-", max="+", count=100)
    return [(str(p["message_id"]), str(p["consumer"]), int(p["times_delivered"])) for p in found]


def test_a_dead_engines_job_is_taken_over_after_the_lease(make_queue: Factory, raw: redis.Redis, prefix: str) -> None:
    dead, alive = make_queue(), make_queue()
    dead.submit(make_job("a"))
    assert ids(dead.claim("dead", models=["tiny"], max_images=1, timeout=0)) == ["a"]
    assert alive.claim("alive", models=["tiny"], max_images=1, timeout=0) == []
    time.sleep(0.35)
    assert ids(alive.claim("alive", models=["tiny"], max_images=1, timeout=0)) == ["a"]
    [(_, consumer, delivered)] = pending(raw, prefix)
    assert (consumer, delivered) == ("alive", 2)  # the takeover counts as a second attempt
    assert not dead.heartbeat("a", "dead")
    assert not dead.publish("a", "dead", Event(EventKind.PROGRESS, step=1, total_steps=2))


def test_heartbeats_keep_the_job_without_counting_deliveries(
    make_queue: Factory, raw: redis.Redis, prefix: str
) -> None:
    engine, other = make_queue(), make_queue()
    engine.submit(make_job("a"))
    engine.claim("engine", models=["tiny"], max_images=1, timeout=0)
    for _ in range(4):
        time.sleep(0.15)
        assert engine.heartbeat("a", "engine")
        assert other.claim("other", models=["tiny"], max_images=1, timeout=0) == []
    assert [(consumer, delivered) for _, consumer, delivered in pending(raw, prefix)] == [("engine", 1)]


def test_a_job_that_keeps_killing_engines_is_dead_lettered(make_queue: Factory, raw: redis.Redis, prefix: str) -> None:
    queue = make_queue(lease_seconds=0.15, max_attempts=2)
    queue.submit(make_job("poison"))
    queue.submit(make_job("fine", steps=9))  # another batch key: not part of the poison's batches
    assert ids(queue.claim("e1", models=["tiny"], max_images=1, timeout=0)) == ["poison"]
    time.sleep(0.2)  # e1 died
    assert ids(queue.claim("e2", models=["tiny"], max_images=1, timeout=0)) == ["poison"]
    time.sleep(0.2)  # e2 died too
    assert ids(queue.claim("e3", models=["tiny"], max_images=1, timeout=0)) == ["fine"]
    [(_, event)] = queue.events("poison")
    assert event.kind is EventKind.FAILED
    assert "2 times" in event.reason
    [(job_id, reason)] = queue.dead_letters()
    assert job_id == "poison"
    assert reason == event.reason
    assert [consumer for _, consumer, _ in pending(raw, prefix)] == ["e3"]  # nothing left of the poison
    assert raw.xlen(f"{prefix}:jobs:tiny") == 1


def test_release_hands_back_without_counting_and_recover_counts(
    make_queue: Factory, raw: redis.Redis, prefix: str
) -> None:
    queue = make_queue(lease_seconds=30, max_attempts=1)
    queue.submit(make_job("a"))
    for _ in range(3):
        assert ids(queue.claim("w1", models=["tiny"], max_images=1, timeout=0)) == ["a"]
        queue.release("a", "w1")
        [(_, consumer, delivered)] = pending(raw, prefix)
        assert (consumer, delivered) == (RELEASED, 0)
        assert queue.position("a") == QueuePosition(0, 0)
    assert ids(queue.claim("w1", models=["tiny"], max_images=1, timeout=0)) == ["a"]
    assert queue.recover("w1") == 1  # the engine restarted mid-job: that was the one allowed attempt
    assert queue.claim("w1", models=["tiny"], max_images=1, timeout=0) == []
    assert kinds(queue, "a") == [EventKind.FAILED]


def test_two_engines_never_both_finish_a_job(make_queue: Factory) -> None:
    slow, fast = make_queue(), make_queue()
    slow.submit(make_job("a"))
    slow.claim("slow", models=["tiny"], max_images=1, timeout=0)
    time.sleep(0.35)
    fast.claim("fast", models=["tiny"], max_images=1, timeout=0)
    assert fast.finish("a", "fast", Event(EventKind.DONE, worker="fast"))
    assert not slow.finish("a", "slow", Event(EventKind.DONE, worker="slow"))
    assert not fast.finish("a", "fast", Event(EventKind.FAILED, reason="again"))
    [(_, event)] = slow.events("a")
    assert event.worker == "fast"


def test_engines_racing_for_jobs_each_take_and_finish_a_job_once(make_queue: Factory) -> None:
    engines = [make_queue(lease_seconds=30), make_queue(lease_seconds=30)]
    for i in range(60):
        engines[0].submit(make_job(f"job-{i}", steps=i % 3))
    claimed: list[tuple[str, str]] = []
    lock = threading.Lock()

    def work(queue: RedisQueue, worker: str) -> None:
        while batch := queue.claim(worker, models=["tiny"], max_images=3, timeout=0):
            for job in batch:
                assert queue.finish(job.id, worker, Event(EventKind.DONE, worker=worker))
                with lock:
                    claimed.append((job.id, worker))

    threads = [
        threading.Thread(target=work, args=(engines[n % 2], f"engine-{n}")) for n in range(6)
    ]  # three threads per connection pool
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(job_id for job_id, _ in claimed) == sorted(f"job-{i}" for i in range(60))
    for job_id, worker in claimed:
        for queue in engines:
            assert not queue.finish(job_id, worker, Event(EventKind.DONE))
        assert kinds(engines[1], job_id) == [EventKind.DONE]


def test_a_reconnecting_bot_replays_events_from_its_cursor(make_queue: Factory) -> None:
    bot, engine = make_queue(), make_queue()
    bot.submit(make_job("a"))
    engine.claim("engine", models=["tiny"], max_images=1, timeout=0)
    for step in (1, 2, 3):
        engine.publish("a", "engine", Event(EventKind.PROGRESS, step=step, total_steps=4))
    seen = bot.events("a")
    cursor = seen[1][0]  # the bot handled steps 1 and 2, then lost its connection
    bot.close()
    engine.finish("a", "engine", Event(EventKind.DONE))
    reconnected = make_queue()
    rest = reconnected.events("a", after=cursor)
    assert [(event.kind, event.step) for _, event in rest] == [(EventKind.PROGRESS, 3), (EventKind.DONE, 0)]
    assert reconnected.events("a", after=rest[-1][0]) == []


def test_batches_hand_back_incompatible_jobs_to_run_next(make_queue: Factory, raw: redis.Redis, prefix: str) -> None:
    first, second = make_queue(max_attempts=1), make_queue(max_attempts=1)
    first.submit(make_job("a", count=2))
    first.submit(make_job("other", steps=8))
    first.submit(make_job("b"))
    first.submit(make_job("too-big", count=2))
    first.submit(make_job("c"))
    first.submit(make_job("later", steps=8))
    assert ids(first.claim("first", models=["tiny"], max_images=4, timeout=0)) == ["a", "b", "c"]
    # Read in passing, handed back untried: waiting in their old places, before anything newer.
    handed_back = {(consumer, delivered) for _, consumer, delivered in pending(raw, prefix)} - {("first", 1)}
    assert handed_back == {(RELEASED, 0)}
    assert second.position("other") == QueuePosition(0, 0)
    assert second.position("too-big") == QueuePosition(jobs_ahead=1, images_ahead=1)
    assert second.position("later") == QueuePosition(jobs_ahead=2, images_ahead=3)
    # max_attempts=1: had the hand-back counted as an attempt, these would be dead-lettered now.
    assert ids(second.claim("second", models=["tiny"], max_images=4, timeout=0)) == ["other", "later"]
    assert ids(second.claim("second", models=["tiny"], max_images=4, timeout=0)) == ["too-big"]
    assert first.dead_letters() == []


def test_a_handed_back_job_wakes_a_waiting_engine(make_queue: Factory) -> None:
    holder, waiter = make_queue(lease_seconds=30), make_queue(lease_seconds=30)
    holder.submit(make_job("a"))
    holder.claim("holder", models=["tiny"], max_images=1, timeout=0)
    got: list[tuple[list[str], float]] = []
    started = time.monotonic()

    def wait() -> None:
        jobs = waiter.claim("waiter", models=["tiny"], max_images=1, timeout=3)
        got.append((ids(jobs), time.monotonic() - started))

    thread = threading.Thread(target=wait)
    thread.start()
    time.sleep(0.1)
    holder.release("a", "holder")
    time.sleep(0.1)
    holder.submit(make_job("b"))
    thread.join()
    [(taken, seconds)] = got
    assert taken == ["a"]
    assert seconds < 0.5  # woken by the hand-back, not by its once-a-second look at expired leases
    started = time.monotonic()
    later = threading.Timer(0.1, lambda: holder.submit(make_job("c", steps=3)))
    later.start()
    assert ids(waiter.claim("waiter", models=["tiny"], max_images=1, timeout=3)) == ["b"]
    assert ids(waiter.claim("waiter", models=["tiny"], max_images=1, timeout=3)) == ["c"]
    assert time.monotonic() - started < 0.5  # woken by the new entry
    later.join()


def test_the_loaded_model_is_preferred_until_another_waits_too_long(make_queue: Factory) -> None:
    queue = make_queue(prefer_loaded_for_seconds=0.2, lease_seconds=30)
    models = ["stabilityai/sd-turbo", "/srv/models/my model:v2"]  # hub ids and paths make fine stream names
    queue.submit(make_job("other-1", model=models[1]))
    queue.submit(make_job("loaded-1", model=models[0]))
    queue.submit(make_job("loaded-2", model=models[0]))
    assert ids(queue.claim("w", models=models, max_images=1, timeout=0)) == ["loaded-1"]
    time.sleep(0.25)
    assert ids(queue.claim("w", models=models, max_images=1, timeout=0)) == ["other-1"]
    assert ids(queue.claim("w", models=models, max_images=1, timeout=0)) == ["loaded-2"]
    assert queue.claim("w", models=models[1:], max_images=1, timeout=0) == []


def test_cancel_forget_and_unreadable_jobs_never_reach_an_engine(
    make_queue: Factory, raw: redis.Redis, prefix: str
) -> None:
    queue = make_queue(lease_seconds=0.2)
    for job_id in ("running", "forgotten", "garbled", "handed-back", "ok"):
        queue.submit(make_job(job_id, steps=1 if job_id == "handed-back" else None))
    assert ids(queue.claim("w1", models=["tiny"], max_images=1, timeout=0)) == ["running"]
    queue.forget("forgotten")
    raw.hset(f"{prefix}:job:garbled", "body", "{not json")
    assert ids(queue.claim("w1", models=["tiny"], max_images=2, timeout=0)) == ["ok"]  # after garbled, passed over
    assert kinds(queue, "garbled") == [EventKind.FAILED]
    assert "could not be read" in queue.events("garbled")[0][1].reason
    assert queue.cancel("handed-back")
    assert queue.cancel("running")  # running: only flagged; the engine that holds it will stop
    assert queue.cancel_requested("running")
    time.sleep(0.25)  # ...but it died: whoever takes the job over ends it as cancelled instead of running it
    queue.heartbeat("ok", "w1")
    assert queue.claim("w2", models=["tiny"], max_images=4, timeout=0) == []
    assert kinds(queue, "running") == [EventKind.CANCELLED]
    assert kinds(queue, "handed-back") == [EventKind.CANCELLED]
    assert [consumer for _, consumer, _ in pending(raw, prefix)] == ["w1"]  # only "ok" is left
    assert raw.xlen(f"{prefix}:jobs:tiny") == 1


def test_engines_advertise_and_expire(make_queue: Factory, raw: redis.Redis, prefix: str) -> None:
    queue = make_queue(engine_ttl_seconds=0.2)
    queue.advertise(EngineStatus(worker="gpu-1", state="idle", models_loaded=("tiny",), extra={"gpu": "H100"}))
    queue.advertise(EngineStatus(worker="gpu-2", state="working", images_per_second=2.5))
    assert [(s.worker, s.models_loaded, s.extra) for s in queue.engines()] == [
        ("gpu-1", ("tiny",), {"gpu": "H100"}),
        ("gpu-2", (), {}),
    ]
    time.sleep(0.1)
    queue.advertise(EngineStatus(worker="gpu-2", state="working", images_per_second=2.5))
    time.sleep(0.15)
    assert [s.worker for s in queue.engines()] == ["gpu-2"]
    assert raw.smembers(f"{prefix}:engines") == {"gpu-2"}


def test_an_unreachable_redis_is_a_queue_error_that_keeps_the_password_secret() -> None:
    with pytest.raises(QueueError) as caught:
        RedisQueue("redis://imagine:hunter2-secret@127.0.0.1:1/0")
    message = str(caught.value)
    assert "127.0.0.1:1" in message
    assert "hunter2" not in message
    assert caught.value.__cause__ is None
    assert caught.value.__suppress_context__
    with pytest.raises(QueueError) as caught:
        RedisQueue("redis://127.0.0.1:notaport/0?password=hunter2-secret")
    assert "hunter2" not in str(caught.value)
