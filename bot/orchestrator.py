"""Front-end-agnostic orchestration: a request in, checks, a queued job, progress, a delivered result.

A front end (the Discord adapter, or any other) hands `submit` an `ImagineRequest` and a
`Reporter` that knows how to talk to the user. Everything durable happens here, in an order
that survives a crash at any point: the job is recorded before it is queued, images are
stored before they are posted, and a job marked as posting is checked before it is posted again.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, Protocol

from bot import messages
from bot.config import Settings
from bot.db.models import JobStatus
from bot.db.store import Ban, JobRecord, JobStore, NewJob, OverQuota, Settled, StoredImage, utcnow
from bot.finishing import Finisher
from bot.moderation_desk import AuditSink, NullAudit, ReviewDesk, quota_refusal
from bot.requests import UPSCALE_STRENGTH, VARIATION_STRENGTH, ImagineRequest, build_spec, resolve
from engine.errors import InvalidRequest
from engine.jobs import Event, EventKind, GenerationSpec, Job, new_job_id
from engine.queue.base import JobQueue, QueuePosition
from moderation.policy import ALWAYS_BLOCKED, CATEGORY_LABELS, Policy
from moderation.prompt_gate import PromptGate

log = logging.getLogger(__name__)

_IDLE_POLL_SECONDS = 1.0


@dataclass(frozen=True)
class Refusal:
    """Why a request was not queued. `kind` is invalid, blocked, busy, banned or error (a check could not run).
    `reason` is for the user; `detail` (the gate's layer and score, or the error) is for the record only.
    `appealable_job` names the recorded job a member may appeal (a blocked prompt, where appeals reach someone)."""

    kind: str
    reason: str
    detail: str | None = None
    appealable_job: str | None = None


def _ban_text(ban: Ban) -> str:
    return messages.banned(int(ban.until.timestamp()) if ban.until is not None else None, ban.reason)


def _join(*parts: str) -> str:
    return ", ".join(part.strip() for part in parts if part.strip())


def _unoverridable(job: JobRecord) -> str | None:
    """The category `job` was refused or flagged for, if it is one that no decision may lift."""
    categories = [job.options.get("gate_category"), *(i.gate_category for i in job.images if not i.postable)]
    if job.outcome and job.outcome.startswith("blocked: "):  # refused before the category was kept in options
        categories.append(job.outcome.removeprefix("blocked: ").split(" ", 1)[0])
    return next((category for category in categories if category in ALWAYS_BLOCKED), None)


class _Refused(Exception):
    def __init__(self, refusal: Refusal) -> None:
        super().__init__(refusal.reason)
        self.refusal = refusal


class DeliveryError(Exception):
    """The front end could not reach the user. Transient errors are retried; permanent ones end the job."""

    def __init__(self, message: str, *, permanent: bool) -> None:
        super().__init__(message)
        self.permanent = permanent


@dataclass(frozen=True)
class Delivery:
    job: JobRecord
    images: list[tuple[StoredImage, bytes]]  # the images that passed the image gate
    seconds: float | None
    held: int = 0  # images held back for moderators' review
    blocked: int = 0  # images the image gate blocked


class Reporter(Protocol):
    """How one front end talks to the user about one request."""

    async def refused(self, refusal: Refusal) -> None: ...

    async def queued(self, job: JobRecord, position: QueuePosition | None, eta_seconds: float | None) -> None: ...

    async def progress(self, job: JobRecord, step: int, total: int, preview: bytes | None) -> None: ...

    async def still_waiting(self, job: JobRecord) -> None: ...

    async def deliver(self, delivery: Delivery) -> str | None:
        """Post the images; return the message id, if the front end has one. Raise `DeliveryError`."""
        ...

    async def find_delivered(self, job: JobRecord) -> str | None:
        """After a crash mid-post: the id of the message already posted for `job`, or None."""
        ...

    async def withheld(self, job: JobRecord, *, held: int, blocked: int, category: str | None) -> None:
        """No image passed the image gate: `held` wait for moderators, `blocked` are never shown."""
        ...

    async def failed(self, job: JobRecord, reason: str) -> None: ...

    async def cancelled(self, job: JobRecord) -> None: ...

    async def reviewed(self, job: JobRecord, *, approved: bool) -> None:
        """A moderator decided about the job (held images, or an appeal); `approved` results are posted."""
        ...


def spec_of(record: JobRecord, init_image: bytes | None = None) -> GenerationSpec:
    options = record.options
    return GenerationSpec(
        prompt=record.prompt,
        negative_prompt=_join(record.negative_prompt, options.get("safety_negative") or ""),
        seed=record.seed or 0,
        count=options.get("count") or 1,
        steps=options.get("steps"),
        width=options.get("width"),
        height=options.get("height"),
        guidance_scale=options.get("guidance"),
        style=options.get("style"),
        style_strength=options.get("style_strength"),
        init_image=init_image,
        strength=options.get("strength") if init_image is not None else None,
    )


def elapsed_seconds(record: JobRecord) -> float | None:
    """From accepted to images stored, read off the recorded transitions."""
    times = {status: at for status, at, _ in record.transitions}
    if JobStatus.QUEUED in times and JobStatus.COMPLETED in times:
        return (times[JobStatus.COMPLETED] - times[JobStatus.QUEUED]).total_seconds()
    return None


class Orchestrator:
    def __init__(
        self,
        *,
        settings: Settings,
        store: JobStore,
        queue: JobQueue,
        finisher: Finisher,
        gate: PromptGate,
        poll_seconds: float = 0.2,
        delivery_retries: int = 5,
        audit: AuditSink | None = None,
    ) -> None:
        self.settings = settings
        self.store = store
        self.queue = queue
        self.finisher = finisher
        self.gate = gate
        self.poll_seconds = poll_seconds
        self.delivery_retries = delivery_retries
        self.audit: AuditSink = audit or NullAudit()
        self.review_desk: ReviewDesk | None = None
        self._following: dict[str, asyncio.Task[None]] = {}
        # Checking, marking and encoding images is CPU work that holds the interpreter lock in stretches: done for
        # several jobs at once it starves the event loop (late acknowledgements under load), so one job at a time.
        self._finishing = ThreadPoolExecutor(max_workers=1, thread_name_prefix="finish")

    async def submit(self, request: ImagineRequest, reporter: Reporter) -> str | Refusal:
        """Check, record and queue a request. Returns the job id, or the refusal the user was told."""
        job_id = new_job_id()
        refusal: Refusal | None = None
        gate_data: dict[str, Any] = {}
        await self.record_event(
            "request.received",
            user_id=request.user_id,
            guild_id=request.guild_id,
            job_id=job_id,
            data={
                "kind": request.kind,
                "parent": request.parent_id,
                "prompt": request.prompt,
                "frontend": request.frontend,
            },
        )
        ban = await asyncio.to_thread(self.store.active_ban, request.frontend, request.user_id, request.guild_id)
        if ban is not None and not request.moderator:
            refusal = Refusal("banned", _ban_text(ban))
            await self.record_event(
                "limit.refused",
                user_id=request.user_id,
                guild_id=request.guild_id,
                job_id=job_id,
                data={"reason": "banned", "ban": ban.id},
            )
            await reporter.refused(refusal)
            return refusal
        try:
            self._check_place(request)
            defaults = {}
            if request.kind == "imagine":
                defaults = await asyncio.to_thread(self.store.user_settings, request.frontend, request.user_id)
            request = resolve(request, defaults, self.settings.registry)
            if request.parent_id is not None and request.init_image is None and request.kind != "reroll":
                request = replace(request, init_image=await self._source_image(request.parent_id, request.parent_index))
        except InvalidRequest as error:
            refusal = Refusal("invalid", error.message)
        new = self._new_job(job_id, request)
        category: str | None = None
        try:
            if refusal is not None:
                raise _Refused(refusal)
            spec = build_spec(request, self.settings.registry.get(request.model).limits(self.settings.limits))
            new = replace(new, seed=spec.seed, prompt=spec.prompt)
            policy = self.settings.policies.for_channel(request.guild_id, nsfw_channel=request.nsfw_channel)
            decision = self.gate.check(spec.prompt, spec.negative_prompt, policy=policy)
            gate_data = {"decision": "allowed" if decision.allowed else "refused", "layer": decision.layer}
            gate_data["score"] = round(decision.score, 4)
            if decision.layer == "error":
                # The gate failed closed; it was no rule of ours, so there is nothing to appeal.
                gate_data["error"] = decision.detail[:500]
                refusal = Refusal("error", messages.CHECK_FAILED, detail=decision.detail[:500])
            elif not decision.allowed:
                category = decision.category
                why = messages.prompt_blocked(decision.label, appealable=category not in ALWAYS_BLOCKED)
                refusal = Refusal("blocked", why, detail=f"{category} ({decision.layer}, score {decision.score:.2f})")
                new = replace(new, options={**new.options, "gate_category": category})
            elif (safety := self._safety_negative(policy)) is not None:
                new = replace(new, options={**new.options, "safety_negative": safety})
                spec = replace(spec, negative_prompt=_join(spec.negative_prompt, safety))
        except _Refused as refused:
            refusal = refused.refusal
        except InvalidRequest as error:
            refusal = Refusal("invalid", error.message)
        except Exception as error:
            # Fail closed: a checker that breaks refuses the request rather than letting it through.
            log.exception("prompt check failed for job %s", job_id)
            failure = f"{type(error).__name__}: {error}"[:500]
            gate_data = {"decision": "refused", "layer": "error", "error": failure}
            refusal = Refusal("error", messages.CHECK_FAILED, detail=failure)
        if refusal is not None:
            await asyncio.to_thread(self.store.reject, new, f"{refusal.kind}: {refusal.detail or refusal.reason}")
            if refusal.kind in ("blocked", "error"):
                await self.record_event(
                    "gate.prompt",
                    user_id=request.user_id,
                    guild_id=request.guild_id,
                    job_id=job_id,
                    category=category,
                    data={**gate_data, "decision": "refused", "detail": refusal.detail},
                )
            if refusal.kind == "blocked" and category not in ALWAYS_BLOCKED and self._reviewable():
                refusal = replace(refusal, appealable_job=job_id)
            await reporter.refused(refusal)
            return refusal
        await self.record_event(
            "gate.prompt",
            user_id=request.user_id,
            guild_id=request.guild_id,
            job_id=job_id,
            data=gate_data,
        )
        tier = self.settings.quota.tier_for(request.roles)
        new = replace(new, options={**new.options, "weight": tier.weight})
        try:
            await asyncio.to_thread(
                self.store.accept,
                new,
                tier=tier,
                quota=self.settings.quota,
                images=spec.count,
                bypass=request.moderator,
            )
        except OverQuota as over:
            refusal = quota_refusal(over)
            await self.record_event(
                "limit.refused",
                user_id=request.user_id,
                guild_id=request.guild_id,
                job_id=job_id,
                data={"reason": over.admission.reason, "tier": tier.name},
            )
            await reporter.refused(refusal)
            return refusal
        await self.record_event(
            "job.queued",
            user_id=request.user_id,
            guild_id=request.guild_id,
            job_id=job_id,
            data={"model": new.model, "images": spec.count, "tier": tier.name},
        )
        await asyncio.to_thread(
            self.queue.submit, self._job(job_id, new.model, spec, request.frontend, request.user_id, tier.weight)
        )
        self.follow_in_background(job_id, reporter)
        return job_id

    async def record_event(self, event: str, **fields: Any) -> None:
        """Append to the audit log. A failure here is logged, never shown to the member as theirs."""
        try:
            await asyncio.to_thread(self.audit.append, event, **fields)
        except Exception:
            log.exception("could not append %s to the audit log", event)

    def _safety_negative(self, policy: Policy) -> str | None:
        """Where `policy` refuses sexual content, the negative prompt that steers away from it. It goes in the
        job's options, apart from the member's own negative prompt, so that their words stay on record; `spec_of`
        joins the two."""
        safety = self.settings.safety.negative_prompt
        return safety if policy.blocks("sexual") and safety.strip() else None

    def _policy_of(self, record: JobRecord) -> Policy:
        return self.settings.policies.for_channel(
            record.guild_id, nsfw_channel=bool(record.options.get("nsfw_channel"))
        )

    def _reviewable(self) -> bool:
        """Whether flagged work and appeals reach anyone."""
        return self.review_desk is not None and self.review_desk.can_deliver

    @staticmethod
    def _job(job_id: str, model: str, spec: GenerationSpec, frontend: str, user_id: str, weight: int) -> Job:
        return Job(id=job_id, model=model, spec=spec, owner=f"{frontend}:{user_id}", weight=weight)

    def _new_job(self, job_id: str, request: ImagineRequest) -> NewJob:
        registry = self.settings.registry
        return NewJob(
            id=job_id,
            frontend=request.frontend,
            user_id=request.user_id,
            guild_id=request.guild_id,
            channel_id=request.channel_id,
            prompt=request.prompt,
            negative_prompt=request.negative_prompt or "",
            options=request.options(),
            seed=request.seed,
            model=request.model if request.model in registry.names() else registry.default,
            delivery=request.delivery,
            kind=request.kind,
            parent_id=request.parent_id,
            parent_index=request.parent_index,
        )

    def _check_place(self, request: ImagineRequest) -> None:
        """Requests are taken only where the guild's policy allows, and in direct messages only if enabled."""
        if request.guild_id is None:
            if request.channel_id is not None and not self.settings.bot.allow_direct_messages:
                raise InvalidRequest("channel", messages.no_direct_messages())
            return
        policy = self.settings.policies.for_guild(request.guild_id)
        if not policy.allows_channel(request.channel_id):
            raise InvalidRequest("channel", messages.wrong_channel(policy.channels))

    async def _source_image(self, parent_id: str, index: int | None) -> bytes:
        """The stored file of image `index` of job `parent_id`, if it was posted (never a withheld one, nor one of
        a result a moderator declined)."""
        parent = await asyncio.to_thread(self.store.get, parent_id)
        image = next((i for i in parent.images if i.index == (index or 0)), None) if parent else None
        if parent is None or parent.status is JobStatus.DECLINED or image is None or not image.postable:
            raise InvalidRequest("image", messages.image_unavailable())
        try:
            return await asyncio.to_thread(Path(image.path).read_bytes)
        except OSError:
            raise InvalidRequest("image", messages.image_file_removed()) from None

    async def derive(
        self,
        parent: JobRecord,
        kind: str,
        index: int,
        *,
        user_id: str,
        channel_id: str | None,
        nsfw_channel: bool,
        delivery: dict[str, Any],
        reporter: Reporter,
        roles: tuple[str, ...] = (),
        moderator: bool = False,
    ) -> str | Refusal:
        """A re-roll (new seed, same settings), variation (image-to-image from image `index`) or upscale (2x
        of image `index`) of `parent`, asked by `user_id`; checked and queued like any request."""
        options = parent.options
        width, height, strength, count = options.get("width"), options.get("height"), None, options.get("count")
        seed: int | None = None
        if kind in ("variation", "upscale"):
            image = next((i for i in parent.images if i.index == index), None)
            if image is None:
                await reporter.refused(Refusal("invalid", messages.no_such_image(parent.id, index + 1)))
                return Refusal("invalid", "no such image")
            count, width, height = 1, image.width, image.height
            strength = VARIATION_STRENGTH
            if kind == "upscale":
                width, height, strength, seed = image.width * 2, image.height * 2, UPSCALE_STRENGTH, image.seed
        request = ImagineRequest(
            frontend=parent.frontend,
            user_id=user_id,
            guild_id=parent.guild_id,
            channel_id=channel_id,
            prompt=parent.prompt,
            negative_prompt=parent.negative_prompt or None,
            seed=seed,
            count=count,
            steps=options.get("steps"),
            width=width,
            height=height,
            guidance=options.get("guidance"),
            model=parent.model,
            style=options.get("style"),
            style_strength=options.get("style_strength"),
            aspect=None if width is not None else options.get("aspect"),
            private=bool(options.get("private")),
            kind=kind,
            parent_id=parent.id,
            parent_index=index if kind != "reroll" else None,
            strength=strength,
            roles=roles,
            moderator=moderator,
            nsfw_channel=nsfw_channel,
            delivery=delivery,
        )
        return await self.submit(request, reporter)

    async def cancel(self, job: JobRecord, actor_id: str, *, moderator: bool, guild_id: str | None) -> str:
        """Cancel `job` for `actor_id` (its owner, or a moderator). Returns "cancelled", "refused" (not theirs)
        or "ended" (too late). Every attempt is recorded."""
        allowed = moderator or actor_id == job.user_id
        outcome = "refused"
        if allowed:
            outcome = "cancelled" if await asyncio.to_thread(self.queue.cancel, job.id) else "ended"
        await self.member_action(
            actor_id,
            "cancel",
            allowed=allowed,
            job=job,
            guild_id=guild_id,
            detail=outcome if actor_id == job.user_id else f"{outcome} (job of {job.user_id})",
        )
        return outcome

    async def member_action(
        self,
        actor_id: str,
        action: str,
        *,
        allowed: bool,
        job: JobRecord | None = None,
        job_id: str | None = None,
        user_id: str | None = None,
        guild_id: str | None = None,
        detail: str | None = None,
    ) -> None:
        """Record what a member or moderator did, or tried to do and was refused, in the action table and the
        audit log (refusals as `refused.<action>`)."""
        job_id = job.id if job is not None else job_id
        await asyncio.to_thread(
            self.store.record_action, actor_id, action, allowed=allowed, job_id=job_id, guild_id=guild_id, detail=detail
        )
        await self.record_event(
            action if allowed else f"refused.{action}",
            actor_id=actor_id,
            user_id=job.user_id if job is not None else user_id,
            guild_id=guild_id,
            job_id=job_id,
            data={"detail": detail} if detail else None,
        )

    def follow_in_background(self, job_id: str, reporter: Reporter) -> bool:
        """Follow `job_id` in a task of its own, unless this process already does. Returns True if started."""
        if job_id in self._following:
            return False
        task = asyncio.create_task(self._follow_logged(job_id, reporter), name=f"follow-{job_id[:8]}")
        self._following[job_id] = task
        task.add_done_callback(lambda _: self._following.pop(job_id, None))
        return True

    async def _follow_logged(self, job_id: str, reporter: Reporter) -> None:
        """Follow until the job ends. `follow` picks up where it left off, so a failure (a database or
        queue hiccup) is retried rather than leaving the user with a status that never changes."""
        delay = 1.0
        while True:
            try:
                await self.follow(job_id, reporter)
                return
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("following job %s failed; trying again in %.0f s", job_id, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 60.0)

    async def resume(self, reporter_for: Callable[[JobRecord], Reporter | None]) -> int:
        """Pick up every job accepted but not ended (after a restart). Returns how many."""
        count = 0
        for record in await asyncio.to_thread(self.store.unfinished):
            reporter = reporter_for(record)
            if reporter is None:
                log.warning("job %s came from front end %r, which is not running here", record.id, record.frontend)
                continue
            count += self.follow_in_background(record.id, reporter)
        return count

    async def wait_idle(self) -> None:
        while self._following:
            await asyncio.gather(*self._following.values(), return_exceptions=True)

    async def aclose(self) -> None:
        tasks = list(self._following.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def follow(self, job_id: str, reporter: Reporter) -> None:
        """Watch one job to its end and tell the user. Safe to call again after a restart."""
        record = await self._get(job_id)
        if record.status in (JobStatus.COMPLETED, JobStatus.POSTING):
            await self._deliver(record, reporter)
            return
        if record.status not in (JobStatus.QUEUED, JobStatus.RUNNING):
            return
        # Idempotent: after a crash between recording and queueing, this is what queues it.
        source = None
        if record.parent_id is not None and record.kind != "reroll":
            try:
                source = await self._source_image(record.parent_id, record.parent_index)
            except InvalidRequest as error:
                if await asyncio.to_thread(self.store.transition, job_id, JobStatus.FAILED, detail=error.message):
                    await reporter.failed(record, error.message)
                return
        spec = spec_of(record, source)
        weight = int(record.options.get("weight") or 1)
        job = self._job(record.id, record.model, spec, record.frontend, record.user_id, weight)
        await asyncio.to_thread(self.queue.submit, job)
        position = await asyncio.to_thread(self.queue.position, job_id)
        await reporter.queued(record, position, await self._eta(record, position))

        cursor: str | None = None
        interval = self.settings.bot.progress_interval_seconds
        watchdog = self.settings.bot.watchdog_seconds
        last_event = last_progress = last_position_check = time.monotonic()
        warned = False
        # Poll quickly while events flow, more slowly while the job waits: with hundreds of jobs waiting,
        # a fixed fast poll would keep the database and the event loop busy for nothing.
        pause = self.poll_seconds
        while True:
            events = await asyncio.to_thread(self.queue.events, job_id, cursor)
            now = time.monotonic()
            pause = self.poll_seconds if events else min(pause * 1.5, max(self.poll_seconds, _IDLE_POLL_SECONDS))
            for event_cursor, event in events:
                cursor = event_cursor
                last_event, warned = now, False
                if event.terminal:
                    await self._end(record, event, reporter)
                    return
                if event.kind is EventKind.STARTED:
                    if await asyncio.to_thread(self.store.transition, job_id, JobStatus.RUNNING, detail=event.worker):
                        await self.record_event(
                            "job.started", user_id=record.user_id, guild_id=record.guild_id, job_id=job_id,
                            data={"worker": event.worker},
                        )  # fmt: skip
                    await reporter.progress(record, 0, record.options.get("steps") or 0, None)
                elif event.kind is EventKind.PROGRESS and (
                    now - last_progress >= interval or event.step >= event.total_steps
                ):
                    last_progress = now
                    await reporter.progress(record, event.step, event.total_steps, event.preview)
            if not events and now - last_position_check >= max(interval, 2.0):
                last_position_check = now
                new_position = await asyncio.to_thread(self.queue.position, job_id)
                if new_position is not None and new_position != position:
                    position = new_position
                    await reporter.queued(record, position, await self._eta(record, position))
            if not warned and now - last_event >= watchdog:
                warned = True
                await reporter.still_waiting(record)
            await asyncio.sleep(pause)

    async def _eta(self, record: JobRecord, position: QueuePosition | None) -> float | None:
        """Seconds until this job's images are done, from the engines' measured throughput; None if unknown."""
        if position is None:
            return None
        engines = await asyncio.to_thread(self.queue.engines)
        rate = sum(e.images_per_second for e in engines if record.model in e.models_served)
        if rate <= 0:
            return None
        return (position.images_ahead + (record.options.get("count") or 1)) / rate

    async def _get(self, job_id: str) -> JobRecord:
        record = await asyncio.to_thread(self.store.get, job_id)
        if record is None:
            raise LookupError(f"job {job_id} is not in the database")
        return record

    async def _end(self, record: JobRecord, event: Event, reporter: Reporter) -> None:
        job_id = record.id
        if event.kind is EventKind.DONE:
            policy = self._policy_of(record)
            finish = functools.partial(self.finisher.finish, job_id, record.model, event.images, blocks=policy.blocks)
            stored = await asyncio.get_running_loop().run_in_executor(self._finishing, finish)
            await asyncio.to_thread(self.store.add_images, job_id, stored)
            moved = await asyncio.to_thread(
                self.store.transition,
                job_id,
                JobStatus.COMPLETED,
                detail=f"{event.seconds:.2f}s on {event.worker}",
            )
            if moved:
                await asyncio.to_thread(self.store.add_gpu_seconds, record.frontend, record.user_id, event.seconds)
                await self.record_event(
                    "job.finished",
                    user_id=record.user_id,
                    guild_id=record.guild_id,
                    job_id=job_id,
                    data={"seconds": round(event.seconds, 3), "worker": event.worker, "images": len(stored)},
                )
                for image in stored:
                    await self.record_event(
                        "image.decision",
                        user_id=record.user_id,
                        guild_id=record.guild_id,
                        job_id=job_id,
                        category=image.gate_category,
                        data={
                            "index": image.index,
                            "action": image.gate_action,
                            "layer": image.gate_layer,
                            "score": image.gate_score,
                            "sha256": image.sha256,
                        },
                    )
            await self._deliver(await self._get(job_id), reporter)
            return
        status = JobStatus.FAILED if event.kind is EventKind.FAILED else JobStatus.CANCELLED
        if await asyncio.to_thread(self.store.transition, job_id, status, detail=event.reason):
            await self.record_event(
                f"job.{status.value}", user_id=record.user_id, guild_id=record.guild_id, job_id=job_id,
                data={"reason": event.reason},
            )  # fmt: skip
            if status is JobStatus.FAILED:
                await reporter.failed(record, event.reason)
            else:
                await reporter.cancelled(record)
        await asyncio.to_thread(self.queue.forget, job_id)

    async def _deliver(self, record: JobRecord, reporter: Reporter) -> None:
        job_id = record.id
        postable = [image for image in record.images if image.postable]
        held = [image for image in record.images if image.gate_action == "review"]
        blocked = [image for image in record.images if image.gate_action == "block"]
        if held and not self._reviewable():
            # With nobody to review them, held images would wait for ever: they are withheld like blocked ones.
            held, blocked = [], held + blocked
        if not postable:
            status = JobStatus.HELD if held else JobStatus.WITHHELD
            flagged = held or blocked
            category = flagged[0].gate_category if flagged else None
            if await asyncio.to_thread(self.store.transition, job_id, status, detail=f"image gate: {category}"):
                await reporter.withheld(record, held=len(held), blocked=len(blocked), category=category)
                desk = self.review_desk
                if held and desk is not None and not await desk.held(await self._get(job_id)):
                    log.error("job %s is held but did not reach the moderators; the member can appeal it", job_id)
            await asyncio.to_thread(self.queue.forget, job_id)
            return
        if record.status is JobStatus.POSTING:
            found = await reporter.find_delivered(record)
            if found is not None:
                await self._posted(job_id, found)
                return
        else:
            await asyncio.to_thread(self.store.transition, job_id, JobStatus.POSTING)
        images = [(image, await asyncio.to_thread(Path(image.path).read_bytes)) for image in postable]
        delivery = Delivery(record, images, elapsed_seconds(record), held=len(held), blocked=len(blocked))
        for attempt in range(self.delivery_retries + 1):
            try:
                message_id = await reporter.deliver(delivery)
            except DeliveryError as error:
                if error.permanent or attempt == self.delivery_retries:
                    log.error("job %s: could not deliver: %s", job_id, error)
                    reason = f"delivery failed: {error}"
                    if await asyncio.to_thread(self.store.transition, job_id, JobStatus.FAILED, detail=reason):
                        await self.record_event(
                            "job.failed", user_id=record.user_id, guild_id=record.guild_id, job_id=job_id,
                            data={"reason": reason, "stage": "delivery", "attempts": attempt + 1},
                        )  # fmt: skip
                    await asyncio.to_thread(self.queue.forget, job_id)
                    return
                await asyncio.sleep(min(2.0**attempt, 30.0))
            else:
                await self._posted(job_id, message_id)
                return

    async def _posted(self, job_id: str, message_id: str | None) -> None:
        if await asyncio.to_thread(self.store.transition, job_id, JobStatus.POSTED, message_id=message_id):
            record = await self._get(job_id)
            await self.record_event(
                "message.posted",
                user_id=record.user_id,
                guild_id=record.guild_id,
                job_id=job_id,
                data={"message_id": message_id, "images": sum(1 for i in record.images if i.postable)},
            )
        await asyncio.to_thread(self.queue.forget, job_id)

    # -- moderation ------------------------------------------------------------------------------------------

    async def strike(
        self, frontend: str, user_id: str, *, actor_id: str, reason: str, guild_id: str | None, job_id: str | None
    ) -> Ban | None:
        """Give a strike; at `strikes_to_ban` strikes in this server within the window (counted since their last
        ban here) the member is banned here for `ban_hours`, or for good if they were banned here before. Returns
        the ban, if any."""
        rules = self.settings.moderation
        await asyncio.to_thread(
            self.store.add_strike, frontend, user_id, actor_id=actor_id, reason=reason, guild_id=guild_id, job_id=job_id
        )
        await self.record_event(
            "mod.strike", actor_id=actor_id, user_id=user_id, guild_id=guild_id, job_id=job_id, data={"reason": reason}
        )
        earlier = await asyncio.to_thread(self.store.bans, frontend, user_id, guild_id=guild_id)
        # Strikes that already led to a ban do not count towards the next one.
        since = max([utcnow() - timedelta(days=rules.strike_window_days), *(ban.at for ban in earlier)])
        strikes = await asyncio.to_thread(self.store.strikes_since, frontend, user_id, since, guild_id=guild_id)
        if len(strikes) < rules.strikes_to_ban:
            return None
        until = None if earlier else utcnow() + timedelta(hours=rules.ban_hours)
        text = f"{len(strikes)} strikes in {rules.strike_window_days} days"
        return await self.ban(frontend, user_id, actor_id=actor_id, reason=text, guild_id=guild_id, until=until)

    async def ban(
        self,
        frontend: str,
        user_id: str,
        *,
        actor_id: str,
        reason: str,
        guild_id: str | None,
        until: datetime | None,
    ) -> Ban:
        ban = await asyncio.to_thread(
            self.store.ban, frontend, user_id, actor_id=actor_id, reason=reason, guild_id=guild_id, until=until
        )
        await self.record_event(
            "mod.ban",
            actor_id=actor_id,
            user_id=user_id,
            guild_id=guild_id,
            data={"reason": reason, "until": until.isoformat() if until else None},
        )
        return ban

    async def unban(self, frontend: str, user_id: str, *, actor_id: str, guild_id: str | None) -> int:
        lifted = await asyncio.to_thread(self.store.lift_bans, frontend, user_id, guild_id, actor_id=actor_id)
        await self.record_event(
            "mod.unban", actor_id=actor_id, user_id=user_id, guild_id=guild_id, data={"lifted": lifted}
        )
        return lifted

    async def appeal(self, job: JobRecord, user_id: str) -> str:
        """The member appeals their refused or held `job`. Returns "opened", "duplicate", "limit", "closed"
        (appeals are off), "unavailable" (no review desk to send it to), "undelivered" (the desk could not be
        reached just now), "decided" (a moderator already rejected it), "final" (blocked with no override) or
        "not yours". Only an appeal that reached the moderators is kept and counts towards the daily limit."""
        if user_id != job.user_id:
            return "not yours"
        per_day = self.settings.moderation.appeals_per_day
        if per_day <= 0:
            return "closed"
        if job.status is JobStatus.DECLINED:
            return "decided"
        if _unoverridable(job) is not None:
            return "final"
        desk = self.review_desk
        if desk is None or not desk.can_deliver:
            await self.member_action(
                user_id, "appeal", allowed=False, job=job, guild_id=job.guild_id, detail="no review channel"
            )
            return "unavailable"
        opened = await asyncio.to_thread(
            self.store.open_appeal, job.frontend, user_id, job.id, job.guild_id, per_day=per_day
        )
        if isinstance(opened, str):
            return opened
        await self.record_event(
            "appeal.opened", actor_id=user_id, user_id=user_id, guild_id=job.guild_id, job_id=job.id
        )
        if not await desk.appealed(job, opened.id):
            await asyncio.to_thread(self.store.withdraw_appeal, opened.id)
            await self.record_event(
                "appeal.withdrawn", actor_id=user_id, user_id=user_id, guild_id=job.guild_id, job_id=job.id,
                data={"reason": "the review desk could not be reached"},
            )  # fmt: skip
            return "undelivered"
        return "opened"

    async def decide(self, job: JobRecord, decision: str, *, actor_id: str, reporter: Reporter | None) -> str:
        """A moderator's decision on a flagged, appealed or reported job: approve (held images are posted, a
        refused prompt is queued), reject, strike (reject with a strike) or ban (reject and ban for `ban_hours`).
        Decisions are final: a job is decided once (later ones are "already handled"), and what no decision may
        lift cannot be approved. Returns what happened, for the moderator; every decision is recorded, refused
        ones as refused."""
        job = await self._get(job.id)  # as it is now, not as the review post showed it
        approve = decision == "approve"
        why_not = self._cannot_approve(job) if approve else None
        if why_not is not None:
            result = f"cannot be approved: {why_not}"
            await self.member_action(
                actor_id, "mod.approve", allowed=False, job=job, guild_id=job.guild_id, detail=result
            )
            return result
        options: dict[str, str] = {}
        if approve and job.status is JobStatus.REJECTED:
            # Queued after all, it carries the safety negative prompt as an allowed request would.
            safety = self._safety_negative(self._policy_of(job))
            options = {"safety_negative": safety} if safety is not None else {}
        settled = await asyncio.to_thread(
            self.store.settle, job.id, approve=approve, actor_id=actor_id, options=options
        )
        if settled is None:
            await self.member_action(
                actor_id, f"mod.{decision}", allowed=False, job=job, guild_id=job.guild_id, detail="already handled"
            )
            return "already handled"
        await self.record_event(
            f"mod.{decision}",
            actor_id=actor_id,
            user_id=job.user_id,
            guild_id=job.guild_id,
            job_id=job.id,
            data={
                "appeal": settled.appeal.id if settled.appeal else None,
                "status": settled.before.value,
                "now": settled.after.value,
            },
        )
        if settled.appeal is not None:
            await self.record_event(
                "appeal.decided", actor_id=actor_id, user_id=job.user_id, guild_id=job.guild_id, job_id=job.id,
                data={"outcome": settled.appeal.status},
            )  # fmt: skip
        if approve:
            result = await self._approved(job, settled, actor_id, reporter)
        else:
            result = await self._rejected(job, decision, actor_id, reporter)
        await asyncio.to_thread(
            self.store.record_action, actor_id, f"mod.{decision}", allowed=True, job_id=job.id,
            guild_id=job.guild_id, detail=result,
        )  # fmt: skip
        return result

    @staticmethod
    def _cannot_approve(job: JobRecord) -> str | None:
        category = _unoverridable(job)
        if category is not None:
            return f"{CATEGORY_LABELS.get(category, category)} is blocked everywhere, with no override"
        if job.status is JobStatus.WITHHELD and not any(image.gate_action == "review" for image in job.images):
            return "the image check blocked every image, and blocked images are never posted"
        return None

    async def _approved(self, job: JobRecord, settled: Settled, actor_id: str, reporter: Reporter | None) -> str:
        if settled.after is JobStatus.QUEUED:
            await self.record_event(
                "job.queued", actor_id=actor_id, user_id=job.user_id, guild_id=job.guild_id, job_id=job.id,
                data={"after": "appeal approved", "model": job.model},
            )  # fmt: skip
        elif settled.after is not JobStatus.COMPLETED:
            return "approved: the result stays up"  # a reported result
        if reporter is not None:
            await reporter.reviewed(job, approved=True)
            self.follow_in_background(job.id, reporter)
        return "approved"

    async def _rejected(self, job: JobRecord, decision: str, actor_id: str, reporter: Reporter | None) -> str:
        result = "rejected"
        if decision == "strike":
            ban = await self.strike(
                job.frontend, job.user_id, actor_id=actor_id, reason="rejected by a moderator",
                guild_id=job.guild_id, job_id=job.id,
            )  # fmt: skip
            result = "rejected with a strike" + (" (which led to a ban)" if ban else "")
        elif decision == "ban":
            until = utcnow() + timedelta(hours=self.settings.moderation.ban_hours)
            await self.ban(
                job.frontend, job.user_id, actor_id=actor_id, reason="banned by a moderator", guild_id=job.guild_id,
                until=until,
            )  # fmt: skip
            result = "rejected and banned"
        if reporter is not None:
            await reporter.reviewed(job, approved=False)
        return result

    def history(self, user_id: str, guild_id: str | None) -> list[str]:
        """A member's recent record in this server, for its moderators: jobs (with refusals), strikes and bans
        (this server's, and any for everywhere). Blocking."""
        lines = []
        for job in self.store.recent_jobs(user_id, guild_id=guild_id, limit=10):
            outcome = f" ({job.outcome})" if job.outcome else ""
            lines.append(
                f"<t:{int(job.created_at.timestamp())}:d> `{job.id[:8]}` {job.status.value}{outcome}: {job.prompt[:60]}"
            )
        since = utcnow() - timedelta(days=self.settings.moderation.strike_window_days)
        for at, reason, actor in self.store.strikes_since("discord", user_id, since, guild_id=guild_id):
            lines.append(f"<t:{int(at.timestamp())}:d> strike by <@{actor}>: {reason}")
        for ban in self.store.bans("discord", user_id, guild_id=guild_id):
            until = "for good" if ban.until is None else f"until <t:{int(ban.until.timestamp())}:f>"
            lines.append(f"<t:{int(ban.at.timestamp())}:d> ban {until} by <@{ban.actor_id}>: {ban.reason}")
        return lines

    async def purge_user(self, frontend: str, user_id: str, *, actor_id: str) -> tuple[int, int]:
        """A member's data-deletion request: prompts and images deleted, audit entries about them redacted
        (the chain stays verifiable). Returns (files deleted, audit entries redacted)."""
        paths = await asyncio.to_thread(self.store.forget_user, user_id)
        deleted = await asyncio.to_thread(_delete_files, paths)
        redacted = 0
        redact = getattr(self.audit, "redact_user", None)
        if redact is not None:
            redacted = await asyncio.to_thread(redact, user_id, actor_id=actor_id, reason="data deletion request")
        await self.record_event("mod.purge", actor_id=actor_id, data={"files": deleted, "redacted": redacted})
        return deleted, redacted

    async def expire_images(self) -> int:
        """Delete image files older than `image_retention_days` (hashes stay). Returns how many files."""
        days = self.settings.moderation.image_retention_days
        if days <= 0:
            return 0
        paths = await asyncio.to_thread(self.store.expire_images, utcnow() - timedelta(days=days))
        deleted = await asyncio.to_thread(_delete_files, paths)
        if deleted:
            await self.record_event("retention.purged", data={"files": deleted, "days": days})
        return deleted


def _delete_files(paths: list[str]) -> int:
    deleted = 0
    for path in paths:
        try:
            Path(path).unlink()
            deleted += 1
        except FileNotFoundError:
            pass
        except OSError as error:
            log.warning("could not delete %s: %s", path, error)
    return deleted
