"""Strikes, bans, appeals, held images and data deletion through the orchestrator, with the audit log."""

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path

import pytest
from orchestration import RecordingReporter, Setup, finish_as_engine, orchestration, request, wait_status

from bot.db.models import JobStatus
from bot.db.store import JobRecord, utcnow
from bot.finishing import Finisher
from bot.images import ImageStore
from bot.orchestrator import Refusal
from engine.jobs import Event, EventKind, GeneratedImage
from moderation.audit import AuditLog


@dataclass
class RecordingDesk:
    posts: list[tuple[str, str]] = field(default_factory=list)

    async def held(self, job: JobRecord) -> None:
        self.posts.append(("held", job.id))

    async def appealed(self, job: JobRecord, appeal_id: int) -> None:
        self.posts.append(("appeal", job.id))


@dataclass(frozen=True)
class FlagAll:
    action: str = "review"
    category: str | None = "sexual"
    score: float = 0.9
    layer: str = "test"


class ReviewEverything:
    def check(self, png: bytes) -> FlagAll:
        return FlagAll()


@pytest.fixture
async def setup(tmp_path: Path, database_url: str) -> AsyncIterator[Setup]:
    from bot.db.migrate import connect

    environ = {
        "IMAGINE_MODERATION_STRIKES_TO_BAN": "2",
        "IMAGINE_MODERATION_BAN_HOURS": "24",
        "IMAGINE_MODERATION_APPEALS_PER_DAY": "2",
        "IMAGINE_BOT_MAX_JOBS_PER_USER": "10",
    }
    audit = AuditLog(connect(database_url))
    async for running in orchestration(tmp_path, database_url, environ, audit=audit):
        running.orchestrator.review_desk = RecordingDesk()
        yield running


def desk(setup: Setup) -> RecordingDesk:
    assert isinstance(setup.orchestrator.review_desk, RecordingDesk)
    return setup.orchestrator.review_desk


def audit(setup: Setup) -> AuditLog:
    assert isinstance(setup.orchestrator.audit, AuditLog)
    return setup.orchestrator.audit


async def test_strikes_escalate_to_a_ban_then_to_a_permanent_one(setup: Setup) -> None:
    orchestrator = setup.orchestrator
    assert await orchestrator.strike("test", "u1", actor_id="mod", reason="spam", guild_id=None, job_id=None) is None
    ban = await orchestrator.strike("test", "u1", actor_id="mod", reason="again", guild_id=None, job_id=None)
    assert ban is not None
    assert ban.until is not None
    assert timedelta(hours=23) < ban.until - utcnow() <= timedelta(hours=24)

    # A ban is enforced before anything is checked, recorded or queued.
    reporter = RecordingReporter()
    refusal = await orchestrator.submit(request("a fox"), reporter)
    assert isinstance(refusal, Refusal)
    assert refusal.kind == "banned"
    assert "A moderator of this server can lift it" in refusal.reason
    assert setup.store.all_jobs() == []
    assert setup.queue.claim("engine", models=["tiny"], max_images=1, timeout=0) == []
    # Moderators are not held to bans, and another member is unaffected.
    assert isinstance(await orchestrator.submit(request("a fox", user="u2"), RecordingReporter()), str)

    assert await orchestrator.unban("test", "u1", actor_id="mod", guild_id=None) == 1
    assert isinstance(await orchestrator.submit(request("a fox"), RecordingReporter()), str)

    assert await orchestrator.strike("test", "u1", actor_id="mod", reason="third", guild_id=None, job_id=None) is None
    second = await orchestrator.strike("test", "u1", actor_id="mod", reason="fourth", guild_id=None, job_id=None)
    assert second is not None
    assert second.until is None  # banned before: this time for good
    events = [e.event for e in audit(setup).query(user_id="u1")]
    assert events.count("mod.strike") == 4
    assert events.count("mod.ban") == 2
    assert "mod.unban" in events
    assert audit(setup).verify().ok


async def test_a_refused_prompt_can_be_appealed_and_approved(setup: Setup) -> None:
    orchestrator = setup.orchestrator
    reporter = RecordingReporter()
    refusal = await orchestrator.submit(request("a n.u.d.e portrait"), reporter)
    assert isinstance(refusal, Refusal)
    assert refusal.appealable_job is not None
    job = setup.store.get(refusal.appealable_job)
    assert job is not None

    assert await orchestrator.appeal(job, "someone-else") == "not yours"
    assert await orchestrator.appeal(job, "u1") == "opened"
    assert await orchestrator.appeal(job, "u1") == "duplicate"
    assert desk(setup).posts == [("appeal", job.id)]
    assert setup.store.appeal_for(job.id).status == "open"  # type: ignore[union-attr]

    assert await orchestrator.decide(job, "approve", actor_id="mod", reporter=reporter) == "approved"
    assert "reviewed True" in reporter.said
    await wait_status(setup.store, job.id, JobStatus.QUEUED)
    for _ in range(3000):  # the follower queues it
        if setup.queue.position(job.id) is not None:
            break
        await asyncio.sleep(0.01)
    finish_as_engine(setup.queue, job.id)
    await wait_status(setup.store, job.id, JobStatus.POSTED)
    assert len(reporter.delivered) == 1
    assert setup.store.appeal_for(job.id).status == "approved"  # type: ignore[union-attr]

    # Appeals per day are limited.
    other = await orchestrator.submit(request("n a k e d people"), reporter)
    third = await orchestrator.submit(request("a nude figure"), reporter)
    assert isinstance(other, Refusal)
    assert isinstance(third, Refusal)
    assert other.appealable_job is not None
    assert third.appealable_job is not None
    assert await orchestrator.appeal(setup.store.get(other.appealable_job), "u1") == "opened"  # type: ignore[arg-type]
    assert await orchestrator.appeal(setup.store.get(third.appealable_job), "u1") == "limit"  # type: ignore[arg-type]
    events = [e.event for e in audit(setup).query(job_id=job.id)]
    assert events[:2] == ["request.received", "gate.prompt"]
    assert {"appeal.opened", "mod.approve", "appeal.decided", "job.queued", "job.finished", "message.posted"} <= set(
        events
    )


async def test_held_images_go_to_the_review_desk_and_a_moderator_decides(setup: Setup, tmp_path: Path) -> None:
    orchestrator = setup.orchestrator
    orchestrator.finisher = Finisher(ImageStore(tmp_path / "held"), gate=ReviewEverything(), blur=lambda png: b"blur")
    reporter = RecordingReporter()
    approved_id = await orchestrator.submit(request("a statue"), reporter)
    rejected_id = await orchestrator.submit(request("a fountain"), reporter)
    assert isinstance(approved_id, str)
    assert isinstance(rejected_id, str)
    for job_id in (approved_id, rejected_id):
        setup.queue.claim("engine", models=["tiny"], max_images=1, timeout=1)
        image = GeneratedImage(index=0, seed=3, width=8, height=8, png=b"flagged")
        setup.queue.finish(job_id, "engine", Event(EventKind.DONE, images=(image,), seconds=0.1, worker="engine"))
        await wait_status(setup.store, job_id, JobStatus.HELD)
    for _ in range(3000):  # the desk hears of it just after the status is written
        if len(desk(setup).posts) == 2:
            break
        await asyncio.sleep(0.01)
    assert desk(setup).posts == [("held", approved_id), ("held", rejected_id)]
    assert reporter.delivered == []

    held = setup.store.get(approved_id)
    assert held is not None
    assert await orchestrator.decide(held, "approve", actor_id="mod", reporter=reporter) == "approved"
    await wait_status(setup.store, approved_id, JobStatus.POSTED)
    (delivery,) = reporter.delivered
    assert [data for _, data in delivery.images] == [b"flagged"]
    assert await orchestrator.decide(held, "approve", actor_id="mod", reporter=reporter) == "already handled"

    other = setup.store.get(rejected_id)
    assert other is not None
    assert await orchestrator.decide(other, "strike", actor_id="mod", reporter=reporter) == "rejected with a strike"
    assert "reviewed False" in reporter.said
    assert len(setup.store.strikes_since("test", "u1", utcnow() - timedelta(days=1))) == 1
    assert setup.store.get(rejected_id).status is JobStatus.HELD  # type: ignore[union-attr]
    decisions = [e for e in audit(setup).query(event="image.decision")]
    assert [e.data["action"] for e in decisions] == ["review", "review"]
    assert all(e.category == "sexual" for e in decisions)


async def test_purging_a_member_deletes_their_data_and_keeps_the_chain(setup: Setup) -> None:
    orchestrator = setup.orchestrator
    reporter = RecordingReporter()
    job_id = await orchestrator.submit(request("my secret garden"), reporter)
    assert isinstance(job_id, str)
    finish_as_engine(setup.queue, job_id)
    record = await wait_status(setup.store, job_id, JobStatus.POSTED)
    (image,) = record.images
    assert Path(image.path).exists()  # noqa: ASYNC240 - a test reading a small file
    await orchestrator.submit(request("someone else's", user="u2"), RecordingReporter())

    files, redacted = await orchestrator.purge_user("test", "u1", actor_id="mod")
    assert files == 1
    assert redacted >= 4
    assert not Path(image.path).exists()  # noqa: ASYNC240
    after = setup.store.get(job_id)
    assert after is not None
    assert after.prompt == "[deleted]"
    assert after.images[0].sha256 == image.sha256  # the hash stays for the record
    log = audit(setup)
    assert log.verify().ok
    assert all("secret" not in str(e.data) for e in log.query(user_id="u1"))
    assert any("someone else" in str(e.data) for e in log.query(user_id="u2"))


async def test_expired_images_lose_their_files_but_keep_their_hashes(setup: Setup) -> None:
    reporter = RecordingReporter()
    job_id = await setup.orchestrator.submit(request("a pier"), reporter)
    assert isinstance(job_id, str)
    finish_as_engine(setup.queue, job_id)
    record = await wait_status(setup.store, job_id, JobStatus.POSTED)
    assert setup.store.expire_images(utcnow() - timedelta(days=1)) == []  # too young
    paths = setup.store.expire_images(utcnow() + timedelta(seconds=1))
    assert paths == [record.images[0].path]
    assert setup.store.get(job_id).images[0].sha256 == record.images[0].sha256  # type: ignore[union-attr]


async def test_reject_and_ban_decisions_on_an_appeal(setup: Setup) -> None:
    orchestrator = setup.orchestrator
    reporter = RecordingReporter()
    first = await orchestrator.submit(request("a n.u.d.e portrait"), reporter)
    second = await orchestrator.submit(request("n a k e d people"), reporter)
    assert isinstance(first, Refusal)
    assert isinstance(second, Refusal)
    for refusal in (first, second):
        assert refusal.appealable_job is not None
        job = setup.store.get(refusal.appealable_job)
        assert job is not None
        assert await orchestrator.appeal(job, "u1") == "opened"

    rejected = setup.store.get(first.appealable_job)  # type: ignore[arg-type]
    assert rejected is not None
    assert await orchestrator.decide(rejected, "reject", actor_id="mod", reporter=reporter) == "rejected"
    assert reporter.said[-1] == "reviewed False"
    assert setup.store.appeal_for(rejected.id).status == "rejected"  # type: ignore[union-attr]
    assert setup.store.strikes_since("test", "u1", utcnow() - timedelta(days=1)) == []
    assert setup.store.active_ban("test", "u1", None) is None

    banned = setup.store.get(second.appealable_job)  # type: ignore[arg-type]
    assert banned is not None
    assert await orchestrator.decide(banned, "ban", actor_id="mod", reporter=reporter) == "rejected and banned"
    ban = setup.store.active_ban("test", "u1", None)
    assert ban is not None
    assert ban.until is not None
    assert ban.actor_id == "mod"
    after = await orchestrator.submit(request("a fox"), RecordingReporter())
    assert isinstance(after, Refusal)
    assert after.kind == "banned"
