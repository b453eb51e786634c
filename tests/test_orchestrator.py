"""The orchestrator with a real database and queue, and a recording reporter in place of a front end."""

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from orchestration import (
    RecordingReporter,
    Setup,
    accept,
    finish_as_engine,
    orchestration,
    request,
    wait_status,
)
from test_moderation_flow import RecordingDesk

from bot.db.models import JobStatus
from bot.finishing import Finisher
from bot.images import ImageStore
from bot.orchestrator import DeliveryError, Refusal
from bot.requests import ImagineRequest
from engine.jobs import Event, EventKind, GeneratedImage
from engine.queue import LocalQueue


@pytest.fixture
async def setup(tmp_path: Path, database_url: str) -> AsyncIterator[Setup]:
    async for running in orchestration(tmp_path, database_url):
        yield running


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
    setup.orchestrator.review_desk = RecordingDesk()
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
