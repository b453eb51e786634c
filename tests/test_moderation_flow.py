"""Strikes, bans, appeals, held images and data deletion through the orchestrator, with the audit log."""

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path

import pytest
from orchestration import RecordingReporter, Setup, finish_as_engine, orchestration, request, wait_status

from bot.db.models import JobStatus
from bot.db.store import JobRecord, NewJob, utcnow
from bot.finishing import Finisher
from bot.images import ImageStore
from bot.orchestrator import Refusal
from bot.requests import ImagineRequest
from engine.jobs import Event, EventKind, GeneratedImage
from moderation.audit import AuditLog


@dataclass
class RecordingDesk:
    posts: list[tuple[str, str]] = field(default_factory=list)
    can_deliver: bool = True  # False: as with no review channel configured
    reachable: bool = True  # False: as when Discord refuses the post

    async def held(self, job: JobRecord) -> bool:
        self.posts.append(("held", job.id))
        return self.reachable

    async def appealed(self, job: JobRecord, appeal_id: int) -> bool:
        self.posts.append(("appeal", job.id))
        return self.reachable


@dataclass(frozen=True)
class FlagAll:
    action: str = "review"
    category: str | None = "sexual"
    score: float = 0.9
    layer: str = "test"


class ReviewEverything:
    def __init__(self, category: str = "sexual") -> None:
        self.category = category

    def check(self, png: bytes) -> FlagAll:
        return FlagAll(category=self.category)


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
    assert len(setup.store.strikes_since("test", "u1", utcnow() - timedelta(days=1), guild_id=None)) == 1
    assert setup.store.get(rejected_id).status is JobStatus.DECLINED  # type: ignore[union-attr]
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
    assert setup.store.strikes_since("test", "u1", utcnow() - timedelta(days=1), guild_id=None) == []
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


async def held_job(
    setup: Setup,
    tmp_path: Path,
    prompt: str,
    category: str = "sexual",
    *,
    reporter: RecordingReporter | None = None,
    status: JobStatus = JobStatus.HELD,
) -> JobRecord:
    """A job whose only image the image gate held for review; once it has reached `status`."""
    gate = ReviewEverything(category)
    setup.orchestrator.finisher = Finisher(ImageStore(tmp_path / "held"), gate=gate, blur=lambda png: b"blur")
    job_id = await setup.orchestrator.submit(request(prompt), reporter or RecordingReporter())
    assert isinstance(job_id, str)
    setup.queue.claim("engine", models=["tiny"], max_images=1, timeout=1)
    image = GeneratedImage(index=0, seed=3, width=8, height=8, png=b"flagged")
    setup.queue.finish(job_id, "engine", Event(EventKind.DONE, images=(image,), seconds=0.1, worker="engine"))
    return await wait_status(setup.store, job_id, status)


async def queued(setup: Setup, job_id: str) -> None:
    for _ in range(3000):  # the follower queues it
        if setup.queue.position(job_id) is not None:
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"job {job_id} was never queued")


async def test_sexual_content_involving_minors_is_never_appealed_or_approved(setup: Setup, tmp_path: Path) -> None:
    orchestrator = setup.orchestrator
    reporter = RecordingReporter()
    refusal = await orchestrator.submit(request("a nude child"), reporter)
    assert isinstance(refusal, Refusal)
    assert refusal.kind == "blocked"
    assert refusal.appealable_job is None  # so no Appeal button
    assert "cannot be appealed" in refusal.reason
    (job,) = setup.store.all_jobs()
    assert job.options["gate_category"] == "sexual/minors"
    assert await orchestrator.appeal(job, "u1") == "final"
    assert setup.store.appeal_for(job.id) is None
    assert desk(setup).posts == []

    # Should it reach a moderator all the same (an appeal from before this rule), approving it is refused.
    setup.store.open_appeal("test", "u1", job.id, None, per_day=5)
    result = await orchestrator.decide(job, "approve", actor_id="mod", reporter=reporter)
    assert result == "cannot be approved: sexual content involving minors is blocked everywhere, with no override"
    assert setup.store.get(job.id).status is JobStatus.REJECTED  # type: ignore[union-attr]
    assert setup.store.appeal_for(job.id).status == "open"  # type: ignore[union-attr]  # left to be rejected
    assert setup.queue.claim("engine", models=["tiny"], max_images=1, timeout=0) == []
    assert reporter.said == ["refused:blocked"]
    (refused,) = audit(setup).query(event="refused.mod.approve")
    assert (refused.actor_id, refused.job_id, refused.data["detail"]) == ("mod", job.id, result)
    assert "mod.approve" not in [e.event for e in audit(setup).query(job_id=job.id)]
    assert [(a.action, a.allowed) for a in setup.store.actions(job.id)] == [("mod.approve", False)]
    assert await orchestrator.decide(job, "reject", actor_id="mod", reporter=reporter) == "rejected"

    # A refusal recorded before the category was kept with the job: read from its outcome.
    older = NewJob("0" * 32, "test", "u1", None, None, "x", "", {}, 1, "tiny", {})
    setup.store.reject(older, "blocked: sexual/minors (rules, score 1.00)")
    setup.store.open_appeal("test", "u1", older.id, None, per_day=5)
    record = setup.store.get(older.id)
    assert record is not None
    assert (await orchestrator.decide(record, "approve", actor_id="mod", reporter=None)).startswith("cannot be")

    # Held images in that category cannot be released either.
    held = await held_job(setup, tmp_path, "a statue", category="sexual/minors")
    assert (await orchestrator.decide(held, "approve", actor_id="mod", reporter=reporter)).startswith("cannot be")
    assert await orchestrator.appeal(held, "u1") == "final"
    assert setup.store.get(held.id).status is JobStatus.HELD  # type: ignore[union-attr]


async def test_an_approved_appeal_carries_the_safety_negative_prompt(setup: Setup) -> None:
    orchestrator = setup.orchestrator
    safety = orchestrator.settings.safety.negative_prompt
    allowed = ImagineRequest(frontend="test", user_id="u2", prompt="a beach", negative_prompt="blurry")
    assert isinstance(await orchestrator.submit(allowed, RecordingReporter()), str)
    (normal,) = setup.queue.claim("engine", models=["tiny"], max_images=1, timeout=1)

    reporter = RecordingReporter()
    refused = ImagineRequest(frontend="test", user_id="u1", prompt="a n.u.d.e portrait", negative_prompt="blurry")
    refusal = await orchestrator.submit(refused, reporter)
    assert isinstance(refusal, Refusal)
    assert refusal.appealable_job is not None
    job = setup.store.get(refusal.appealable_job)
    assert job is not None
    assert "safety_negative" not in job.options
    assert await orchestrator.appeal(job, "u1") == "opened"
    assert await orchestrator.decide(job, "approve", actor_id="mod", reporter=reporter) == "approved"
    await queued(setup, job.id)
    (appealed,) = setup.queue.claim("engine", models=["tiny"], max_images=1, timeout=1)
    assert appealed.id == job.id
    assert appealed.spec.negative_prompt == normal.spec.negative_prompt == f"blurry, {safety}"
    record = setup.store.get(job.id)
    assert record is not None
    assert record.negative_prompt == "blurry"  # the member's own words stay apart
    assert record.options["safety_negative"] == safety


async def test_decisions_on_a_held_job_are_final(setup: Setup, tmp_path: Path) -> None:
    orchestrator = setup.orchestrator
    reporter = RecordingReporter()
    held = await held_job(setup, tmp_path, "a statue")
    assert await orchestrator.decide(held, "strike", actor_id="mod", reporter=reporter) == "rejected with a strike"
    declined = setup.store.get(held.id)
    assert declined is not None
    assert declined.status is JobStatus.DECLINED
    assert declined.outcome == "rejected by mod"

    # Later decisions (a stale review post, another moderator) change nothing, and are recorded as refused.
    for decision in ("approve", "strike", "ban", "reject"):
        assert await orchestrator.decide(held, decision, actor_id="mod2", reporter=reporter) == "already handled"
    await orchestrator.wait_idle()
    assert reporter.delivered == []
    assert reporter.said == ["reviewed False"]
    assert len(setup.store.strikes_since("test", "u1", utcnow() - timedelta(days=1), guild_id=None)) == 1
    assert setup.store.active_ban("test", "u1", None) is None
    refused = [e for e in audit(setup).query(job_id=held.id) if e.event.startswith("refused.")]
    assert [e.event for e in refused] == [f"refused.mod.{d}" for d in ("approve", "strike", "ban", "reject")]
    assert {e.data["detail"] for e in refused} == {"already handled"}
    actions = [(a.action, a.actor_id, a.allowed) for a in setup.store.actions(held.id)]
    assert actions[0] == ("mod.strike", "mod", True)
    assert all(not allowed for _, _, allowed in actions[1:])
    # Nor can the member appeal the decision.
    assert await orchestrator.appeal(declined, "u1") == "decided"
    assert setup.store.appeal_for(held.id) is None


async def test_moderators_deciding_at_once_decide_once(setup: Setup, tmp_path: Path) -> None:
    held = await held_job(setup, tmp_path, "a statue")
    decisions = ("strike", "strike", "approve", "strike")
    results = await asyncio.gather(
        *(
            setup.orchestrator.decide(held, decision, actor_id=f"mod{n}", reporter=None)
            for n, decision in enumerate(decisions)
        )
    )
    assert results.count("already handled") == 3
    (winner,) = [result for result in results if result != "already handled"]
    strikes = setup.store.strikes_since("test", "u1", utcnow() - timedelta(days=1), guild_id=None)
    assert len(strikes) == (1 if winner == "rejected with a strike" else 0)


async def test_a_reported_result_is_decided_once(setup: Setup) -> None:
    orchestrator = setup.orchestrator
    reporter = RecordingReporter()
    first = await orchestrator.submit(request("a pier"), reporter)
    assert isinstance(first, str)
    finish_as_engine(setup.queue, first)
    posted = await wait_status(setup.store, first, JobStatus.POSTED)
    assert await orchestrator.decide(posted, "strike", actor_id="mod", reporter=reporter) == "rejected with a strike"
    assert setup.store.get(first).status is JobStatus.DECLINED  # type: ignore[union-attr]  # to be taken down
    assert await orchestrator.decide(posted, "strike", actor_id="mod2", reporter=reporter) == "already handled"
    assert len(setup.store.strikes_since("test", "u1", utcnow() - timedelta(days=1), guild_id=None)) == 1
    # Its images are no longer a source for variations.
    variation = await orchestrator.derive(
        posted, "variation", 0, user_id="u2", channel_id=None, nsfw_channel=False, delivery={}, reporter=reporter
    )
    assert isinstance(variation, Refusal)
    assert "no longer available" in variation.reason

    second = await orchestrator.submit(request("a harbour"), reporter)
    assert isinstance(second, str)
    finish_as_engine(setup.queue, second)
    kept = await wait_status(setup.store, second, JobStatus.POSTED)
    approved = await orchestrator.decide(kept, "approve", actor_id="mod", reporter=reporter)
    assert approved == "approved: the result stays up"
    assert await orchestrator.decide(kept, "reject", actor_id="mod2", reporter=reporter) == "already handled"
    assert setup.store.get(second).status is JobStatus.POSTED  # type: ignore[union-attr]


async def test_without_a_review_desk_nothing_waits_for_it(setup: Setup, tmp_path: Path) -> None:
    orchestrator = setup.orchestrator
    desk(setup).can_deliver = False
    reporter = RecordingReporter()
    refusal = await orchestrator.submit(request("a n.u.d.e portrait"), reporter)
    assert isinstance(refusal, Refusal)
    assert refusal.kind == "blocked"
    assert refusal.appealable_job is None  # no Appeal button that leads nowhere
    (job,) = setup.store.all_jobs()
    for _ in range(3):  # more than appeals_per_day: none is counted
        assert await orchestrator.appeal(job, "u1") == "unavailable"
    assert setup.store.appeal_for(job.id) is None
    assert [e.data["detail"] for e in audit(setup).query(event="refused.appeal")] == ["no review channel"] * 3

    # Held images with nobody to review them are withheld, and the member is told so.
    member = RecordingReporter()
    record = await held_job(setup, tmp_path, "a statue", reporter=member, status=JobStatus.WITHHELD)
    await orchestrator.wait_idle()  # the member is told just after the status is written
    assert member.said[-1] == "withheld:0:1:sexual"
    assert desk(setup).posts == []

    # When a review channel is set up later, both appeals still fit today's limit, and a moderator can
    # release the held images.
    desk(setup).can_deliver = True
    assert await orchestrator.appeal(job, "u1") == "opened"
    assert await orchestrator.appeal(record, "u1") == "opened"
    assert await orchestrator.decide(record, "approve", actor_id="mod", reporter=reporter) == "approved"
    await wait_status(setup.store, record.id, JobStatus.POSTED)
    assert [data for _, data in reporter.delivered[0].images] == [b"flagged"]


async def test_an_appeal_that_does_not_reach_the_moderators_is_not_kept(setup: Setup) -> None:
    orchestrator = setup.orchestrator
    refusal = await orchestrator.submit(request("a n.u.d.e portrait"), RecordingReporter())
    assert isinstance(refusal, Refusal)
    assert refusal.appealable_job is not None
    job = setup.store.get(refusal.appealable_job)
    assert job is not None
    desk(setup).reachable = False
    assert await orchestrator.appeal(job, "u1") == "undelivered"
    assert setup.store.appeal_for(job.id) is None
    assert [e.event for e in audit(setup).query(job_id=job.id)][-2:] == ["appeal.opened", "appeal.withdrawn"]
    desk(setup).reachable = True
    assert await orchestrator.appeal(job, "u1") == "opened"
    assert setup.store.appeal_for(job.id).status == "open"  # type: ignore[union-attr]


async def test_moderators_see_and_count_only_their_own_server(setup: Setup) -> None:
    orchestrator = setup.orchestrator
    for guild in ("A", "B"):
        asked = ImagineRequest(frontend="discord", user_id="u1", guild_id=guild, prompt=f"a fox from {guild}", seed=3)
        assert isinstance(await orchestrator.submit(asked, RecordingReporter()), str)

    async def strike(guild: str, reason: str) -> object:
        return await orchestrator.strike("discord", "u1", actor_id="mod", reason=reason, guild_id=guild, job_id=None)

    # Two strikes make a ban here (strikes_to_ban = 2), but only two in the same server.
    assert await strike("A", "spam in A") is None
    assert await strike("B", "spam in B") is None
    ban = await strike("B", "more spam in B")
    assert ban is not None
    assert setup.store.active_ban("discord", "u1", "B") is not None
    assert setup.store.active_ban("discord", "u1", "A") is None

    in_a = "\n".join(orchestrator.history("u1", "A"))
    in_b = "\n".join(orchestrator.history("u1", "B"))
    assert "a fox from A" in in_a
    assert "spam in A" in in_a
    assert "from B" not in in_a
    assert "in B" not in in_a
    assert "ban" not in in_a
    assert "a fox from B" in in_b
    assert "more spam in B" in in_b
    assert "ban until" in in_b
    assert "from A" not in in_b
    assert "in A" not in in_b


def test_start_up_warns_when_held_images_would_have_no_review_channel(tmp_path: Path) -> None:
    from bot.config import load_settings
    from bot.service import review_channel_warning

    base = {"IMAGINE_DATA_DIR": str(tmp_path)}
    warning = review_channel_warning(load_settings(None, base))  # the defaults: review, and no channel
    assert warning is not None
    assert "review_channel_id" in warning
    assert "withheld" in warning
    with_channel = load_settings(None, {**base, "IMAGINE_DISCORD_REVIEW_CHANNEL_ID": "123"})
    assert review_channel_warning(with_channel) is None
    assert review_channel_warning(load_settings(None, {**base, "IMAGINE_SAFETY_IMAGE_ACTION": "block"})) is None
