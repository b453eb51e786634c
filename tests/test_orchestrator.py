"""The orchestrator with a real database and queue, and a recording reporter in place of a front end."""

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from bot.config import load_settings
from bot.db.migrate import connect, upgrade
from bot.db.models import JobStatus
from bot.db.store import JobRecord, JobStore
from bot.finishing import Finisher
from bot.images import ImageStore
from bot.orchestrator import Delivery, DeliveryError, Orchestrator, Refusal
from bot.requests import ImagineRequest
from engine.jobs import Event, EventKind, GeneratedImage
from engine.queue import LocalQueue, QueuePosition
from moderation.prompt_gate import PromptGate


@dataclass
class RecordingReporter:
    said: list[str] = field(default_factory=list)
    delivered: list[Delivery] = field(default_factory=list)
    already_posted: str | None = None
    failures: list[DeliveryError] = field(default_factory=list)

    async def refused(self, refusal: Refusal) -> None:
        self.said.append(f"refused:{refusal.kind}")

    async def queued(self, job: JobRecord, position: QueuePosition | None, eta_seconds: float | None) -> None:
        self.said.append(f"queued:{position.place if position else None}:{eta_seconds}")

    async def progress(self, job: JobRecord, step: int, total: int, preview: bytes | None) -> None:
        self.said.append(f"progress:{step}/{total}")

    async def still_waiting(self, job: JobRecord) -> None:
        self.said.append("waiting")

    async def deliver(self, delivery: Delivery) -> str | None:
        if self.failures:
            raise self.failures.pop(0)
        self.delivered.append(delivery)
        return f"message-{len(self.delivered)}"

    async def find_delivered(self, job: JobRecord) -> str | None:
        return self.already_posted

    async def withheld(self, job: JobRecord, *, held: int, blocked: int, category: str | None) -> None:
        self.said.append(f"withheld:{held}:{blocked}:{category}")

    async def failed(self, job: JobRecord, reason: str) -> None:
        self.said.append(f"failed:{reason}")

    async def cancelled(self, job: JobRecord) -> None:
        self.said.append("cancelled")


@dataclass
class Setup:
    orchestrator: Orchestrator
    store: JobStore
    queue: LocalQueue


@pytest.fixture
async def setup(tmp_path: Path, database_url: str) -> AsyncIterator[Setup]:
    settings = load_settings(
        None,
        {
            "IMAGINE_DATA_DIR": str(tmp_path),
            "IMAGINE_DATABASE_URL": database_url,
            "IMAGINE_MODEL": "tiny",
            "IMAGINE_BOT_WATCHDOG_SECONDS": "0.3",
            "IMAGINE_BOT_PROGRESS_INTERVAL_SECONDS": "0.01",
        },
    )
    database = connect(settings.database_url)
    upgrade(database)
    queue = LocalQueue(settings.queue_path, poll_seconds=0.01)
    store = JobStore(database)
    orchestrator = Orchestrator(
        settings=settings,
        store=store,
        queue=queue,
        finisher=Finisher(ImageStore(settings.images_dir)),
        gate=PromptGate.from_package(),
        poll_seconds=0.01,
        delivery_retries=2,
    )
    yield Setup(orchestrator, store, queue)
    await orchestrator.aclose()
    queue.close()
    database.dispose()


def request(prompt: str = "a fox", user: str = "u1") -> ImagineRequest:
    return ImagineRequest(frontend="test", user_id=user, prompt=prompt, count=1, seed=3)


async def accept(setup: Setup, reporter: RecordingReporter, prompt: str = "a fox") -> str:
    job_id = await setup.orchestrator.submit(request(prompt), reporter)
    assert isinstance(job_id, str), job_id
    return job_id


def finish_as_engine(queue: LocalQueue, job_id: str) -> None:
    (job,) = queue.claim("engine", models=["tiny"], max_images=1, timeout=1)
    assert job.id == job_id
    queue.publish(job_id, "engine", Event(EventKind.STARTED, worker="engine"))
    queue.publish(job_id, "engine", Event(EventKind.PROGRESS, step=1, total_steps=1))
    image = GeneratedImage(index=0, seed=3, width=8, height=8, png=b"png-bytes")
    queue.finish(job_id, "engine", Event(EventKind.DONE, images=(image,), seconds=0.1, worker="engine"))


async def wait_status(store: JobStore, job_id: str, status: JobStatus) -> JobRecord:
    for _ in range(500):
        record = store.get(job_id)
        if record is not None and record.status is status:
            return record
        await asyncio.sleep(0.01)
    raise AssertionError(f"job {job_id} never reached {status}: {store.get(job_id)}")


async def test_a_job_is_delivered_once(setup: Setup) -> None:
    reporter = RecordingReporter()
    job_id = await accept(setup, reporter)
    assert isinstance(job_id, str)
    await asyncio.sleep(0.5)  # no engine yet: the watchdog speaks once
    assert reporter.said.count("waiting") == 1
    finish_as_engine(setup.queue, job_id)
    record = await wait_status(setup.store, job_id, JobStatus.POSTED)
    assert record.message_id == "message-1"
    (delivery,) = reporter.delivered
    assert [data for _, data in delivery.images] == [b"png-bytes"]
    assert "progress:1/1" in reporter.said
    for _ in range(200):  # the queue forgets the job just after it is marked posted
        if not setup.queue.events(job_id):
            break
        await asyncio.sleep(0.01)
    assert setup.queue.events(job_id) == []
    # Following it again (as after a restart) posts nothing more.
    await setup.orchestrator.follow(job_id, reporter)
    assert len(reporter.delivered) == 1


async def test_a_crash_mid_post_is_checked_before_posting_again(setup: Setup) -> None:
    job_id = await accept(setup, RecordingReporter(failures=[DeliveryError("x", permanent=False)] * 9))
    finish_as_engine(setup.queue, job_id)
    await wait_status(setup.store, job_id, JobStatus.POSTING)
    await setup.orchestrator.aclose()  # the process "dies" while posting

    found = RecordingReporter(already_posted="seen-in-channel")
    await setup.orchestrator.follow(job_id, found)
    record = setup.store.get(job_id)
    assert record is not None
    assert record.status is JobStatus.POSTED
    assert record.message_id == "seen-in-channel"
    assert found.delivered == []


async def test_a_crash_mid_post_posts_when_nothing_was_posted(setup: Setup) -> None:
    job_id = await accept(setup, RecordingReporter(failures=[DeliveryError("x", permanent=False)] * 9))
    finish_as_engine(setup.queue, job_id)
    await wait_status(setup.store, job_id, JobStatus.POSTING)
    await setup.orchestrator.aclose()

    fresh = RecordingReporter()
    await setup.orchestrator.follow(job_id, fresh)
    assert len(fresh.delivered) == 1


async def test_transient_delivery_errors_are_retried_and_permanent_ones_end_the_job(setup: Setup) -> None:
    flaky = RecordingReporter(failures=[DeliveryError("503", permanent=False)])
    job_id = await accept(setup, flaky)
    finish_as_engine(setup.queue, job_id)
    await wait_status(setup.store, job_id, JobStatus.POSTED)
    assert len(flaky.delivered) == 1

    broken = RecordingReporter(failures=[DeliveryError("403 missing access", permanent=True)])
    job_id = await accept(setup, broken)
    finish_as_engine(setup.queue, job_id)
    record = await wait_status(setup.store, job_id, JobStatus.FAILED)
    assert record.outcome is not None
    assert "403 missing access" in record.outcome


async def test_engine_failure_and_cancel_reach_the_user(setup: Setup) -> None:
    reporter = RecordingReporter()
    failing = await setup.orchestrator.submit(request("one"), reporter)
    assert isinstance(failing, str)
    assert setup.queue.claim("engine", models=["tiny"], max_images=1, timeout=1)
    setup.queue.finish(failing, "engine", Event(EventKind.FAILED, reason="out of memory"))
    await wait_status(setup.store, failing, JobStatus.FAILED)
    cancelled = await setup.orchestrator.submit(request("two"), reporter)
    assert isinstance(cancelled, str)
    setup.queue.cancel(cancelled)
    await wait_status(setup.store, cancelled, JobStatus.CANCELLED)
    await setup.orchestrator.wait_idle()
    assert "failed:out of memory" in reporter.said
    assert "cancelled" in reporter.said


async def test_refusals_are_recorded_and_never_queued(setup: Setup) -> None:
    reporter = RecordingReporter()
    blocked = await setup.orchestrator.submit(request("a nude figure"), reporter)
    invalid = await setup.orchestrator.submit(
        ImagineRequest(frontend="test", user_id="u1", prompt="a fox", count=9), reporter
    )
    assert isinstance(blocked, Refusal)
    assert blocked.kind == "blocked"
    assert "sexual content" in blocked.reason
    assert "nude" not in blocked.reason  # the term list is never shown
    assert isinstance(invalid, Refusal)
    assert invalid.kind == "invalid"
    assert reporter.said == ["refused:blocked", "refused:invalid"]
    assert setup.queue.claim("engine", models=["tiny"], max_images=1, timeout=0) == []


async def test_resume_picks_up_each_unfinished_job_once(setup: Setup) -> None:
    first = await setup.orchestrator.submit(request("one"), RecordingReporter())
    await setup.orchestrator.aclose()
    assert isinstance(first, str)
    reporter = RecordingReporter()
    assert await setup.orchestrator.resume(lambda record: reporter) == 1
    assert await setup.orchestrator.resume(lambda record: reporter) == 0  # already followed
    finish_as_engine(setup.queue, first)
    await wait_status(setup.store, first, JobStatus.POSTED)
    assert len(reporter.delivered) == 1


@dataclass(frozen=True)
class FakeDecision:
    action: str
    category: str | None = None
    score: float = 0.0
    layer: str = "fake"


class FakeGate:
    """Flags images by their bytes: b"nsfw" → sexual (review), b"gore" → violence (block)."""

    def check(self, png: bytes) -> FakeDecision:
        if b"nsfw" in png:
            return FakeDecision("review", "sexual", 0.9)
        if b"gore" in png:
            return FakeDecision("block", "violence/graphic", 0.8)
        return FakeDecision("allow")


def finish_with(queue: LocalQueue, job_id: str, *pngs: bytes) -> None:
    queue.claim("engine", models=["tiny"], max_images=8, timeout=1)
    images = tuple(GeneratedImage(index=i, seed=3 + i, width=8, height=8, png=png) for i, png in enumerate(pngs))
    queue.finish(job_id, "engine", Event(EventKind.DONE, images=images, seconds=0.1, worker="engine"))


async def test_the_image_gate_holds_blocks_and_lets_through(setup: Setup, tmp_path: Path) -> None:
    setup.orchestrator.finisher = Finisher(ImageStore(tmp_path / "gated"), gate=FakeGate(), blur=lambda png: b"blur")
    reporter = RecordingReporter()

    mixed = await accept(setup, reporter)
    finish_with(setup.queue, mixed, b"fine", b"nsfw")
    record = await wait_status(setup.store, mixed, JobStatus.POSTED)
    (delivery,) = reporter.delivered
    assert [data for _, data in delivery.images] == [b"fine"]
    assert delivery.held == 1
    held_image = record.images[1]
    assert (held_image.gate_action, held_image.gate_category, held_image.gate_score) == ("review", "sexual", 0.9)
    assert held_image.preview_path is not None
    assert Path(held_image.preview_path).read_bytes() == b"blur"  # noqa: ASYNC240

    blocked = await accept(setup, reporter, "a second fox")
    finish_with(setup.queue, blocked, b"gore")
    record = await wait_status(setup.store, blocked, JobStatus.WITHHELD)
    await setup.orchestrator.wait_idle()  # the user is told just after the status is recorded
    assert "withheld:0:1:violence/graphic" in reporter.said
    assert len(reporter.delivered) == 1


async def test_an_engine_flag_blocks_without_asking_the_gate(setup: Setup) -> None:
    reporter = RecordingReporter()
    job_id = await accept(setup, reporter)
    setup.queue.claim("engine", models=["tiny"], max_images=1, timeout=1)
    flagged = GeneratedImage(index=0, seed=3, width=8, height=8, png=b"black", flagged="the model's safety checker")
    setup.queue.finish(job_id, "engine", Event(EventKind.DONE, images=(flagged,), seconds=0.1, worker="engine"))
    record = await wait_status(setup.store, job_id, JobStatus.WITHHELD)
    assert record.images[0].gate_layer == "the model's safety checker"
    assert reporter.delivered == []


async def test_the_safety_negative_prompt_is_added_and_kept_apart(setup: Setup) -> None:
    job_id = await setup.orchestrator.submit(
        ImagineRequest(frontend="test", user_id="u9", prompt="a beach", negative_prompt="blurry"), RecordingReporter()
    )
    assert isinstance(job_id, str)
    (job,) = setup.queue.claim("engine", models=["tiny"], max_images=1, timeout=1)
    assert job.spec.negative_prompt.startswith("blurry, ")
    assert "nsfw" in job.spec.negative_prompt
    record = setup.store.get(job_id)
    assert record is not None
    assert record.negative_prompt == "blurry"
