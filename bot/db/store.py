"""The job record: what was asked, every status it went through, and the images it produced."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import ColumnElement, Engine, func, select, update
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session, sessionmaker

from bot.db.models import (
    ACTIVE_STATUSES,
    FINAL_STATUSES,
    AppealRow,
    BanRow,
    GuildQuotaRow,
    ImageRow,
    JobRow,
    JobStatus,
    MemberActionRow,
    MemberQuotaRow,
    StrikeRow,
    TransitionRow,
    UserSettingsRow,
)
from moderation.quota import Admission, QuotaPolicy, Tier, admit, tokens_now
from moderation.quota import Usage as QuotaUsage

# The member actions a moderator's decision is recorded as (by the orchestrator, once the decision is taken).
MODERATOR_DECISIONS = ("mod.approve", "mod.reject", "mod.strike", "mod.ban")


def utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class NewJob:
    id: str
    frontend: str
    user_id: str
    guild_id: str | None
    channel_id: str | None
    prompt: str
    negative_prompt: str
    options: dict[str, Any]
    seed: int | None
    model: str
    delivery: dict[str, Any]
    kind: str = "imagine"
    parent_id: str | None = None
    parent_index: int | None = None


@dataclass(frozen=True)
class StoredImage:
    index: int
    seed: int
    width: int
    height: int
    path: str
    sha256: str
    size_bytes: int
    gate_action: str = "allow"  # allow, block or review
    gate_category: str | None = None
    gate_layer: str | None = None
    gate_score: float | None = None
    preview_path: str | None = None

    @property
    def postable(self) -> bool:
        return self.gate_action == "allow"


@dataclass(frozen=True)
class JobRecord:
    id: str
    frontend: str
    user_id: str
    guild_id: str | None
    channel_id: str | None
    prompt: str
    negative_prompt: str
    options: dict[str, Any]
    seed: int | None
    model: str
    status: JobStatus
    outcome: str | None
    delivery: dict[str, Any]
    message_id: str | None
    created_at: datetime
    images: tuple[StoredImage, ...]
    transitions: tuple[tuple[JobStatus, datetime, str | None], ...]
    kind: str = "imagine"
    parent_id: str | None = None
    parent_index: int | None = None


@dataclass(frozen=True)
class MemberAction:
    at: datetime
    actor_id: str
    guild_id: str | None
    action: str
    job_id: str | None
    allowed: bool
    detail: str | None


@dataclass(frozen=True)
class Usage:
    jobs: int
    images: int
    active: int


def _record(row: JobRow) -> JobRecord:
    return JobRecord(
        id=row.id,
        frontend=row.frontend,
        user_id=row.user_id,
        guild_id=row.guild_id,
        channel_id=row.channel_id,
        prompt=row.prompt,
        negative_prompt=row.negative_prompt,
        options=dict(row.options),
        seed=row.seed,
        model=row.model,
        status=JobStatus(row.status),
        outcome=row.outcome,
        delivery=dict(row.delivery),
        message_id=row.message_id,
        created_at=row.created_at,
        images=tuple(
            StoredImage(
                i.index,
                i.seed,
                i.width,
                i.height,
                i.path,
                i.sha256,
                i.size_bytes,
                i.gate_action,
                i.gate_category,
                i.gate_layer,
                i.gate_score,
                i.preview_path,
            )
            for i in row.images
        ),
        transitions=tuple((JobStatus(t.status), t.at, t.detail) for t in row.transitions),
        kind=row.kind,
        parent_id=row.parent_id,
        parent_index=row.parent_index,
    )


class OverQuota(Exception):
    """The request does not fit the member's quota; `admission` says which limit and when to try again."""

    def __init__(self, admission: Admission, tier: Tier, usage: QuotaUsage) -> None:
        super().__init__(f"over quota: {admission.reason}")
        self.admission = admission
        self.tier = tier
        self.usage = usage


@dataclass(frozen=True)
class QuotaState:
    tier: Tier
    tokens: float
    active_jobs: int
    gpu_seconds_today: float
    retry_after_seconds: float | None  # until one more image is in the bucket


@dataclass(frozen=True)
class Ban:
    id: int
    user_id: str
    guild_id: str | None
    actor_id: str
    reason: str
    at: datetime
    until: datetime | None  # None: permanent


@dataclass(frozen=True)
class Appeal:
    id: int
    user_id: str
    guild_id: str | None
    job_id: str
    status: str
    at: datetime
    decided_by: str | None


class _NothingToDecide(Exception):
    """The job is not (or no longer) one a moderator can decide about."""


@dataclass(frozen=True)
class Settled:
    """What a moderator's decision changed: the job's status before and after, and the appeal it closed."""

    before: JobStatus
    after: JobStatus
    appeal: Appeal | None


def _here(column: Any, guild_id: str | None) -> ColumnElement[bool]:
    """Rows of this server only (of direct messages when `guild_id` is None)."""
    return column.is_(None) if guild_id is None else column == guild_id  # type: ignore[no-any-return]


def _ban(row: BanRow) -> Ban:
    return Ban(row.id, row.user_id, row.guild_id, row.actor_id, row.reason, _aware(row.at) or row.at, _aware(row.until))


def _appeal(row: AppealRow) -> Appeal:
    return Appeal(row.id, row.user_id, row.guild_id, row.job_id, row.status, _aware(row.at), row.decided_by)  # type: ignore[arg-type]


def _aware(when: datetime | None) -> datetime | None:
    """SQLite hands datetimes back without their zone; they were written in UTC."""
    if when is None or when.tzinfo is not None:
        return when
    return when.replace(tzinfo=UTC)


class JobStore:
    """Synchronous on purpose: callers on an event loop run these in a thread (`asyncio.to_thread`)."""

    def __init__(self, engine: Engine) -> None:
        self._sessions = sessionmaker(engine, expire_on_commit=False)

    def _insert(self, session: Session, job: NewJob, status: JobStatus, outcome: str | None) -> None:
        now = utcnow()
        row = JobRow(
            id=job.id,
            frontend=job.frontend,
            user_id=job.user_id,
            guild_id=job.guild_id,
            channel_id=job.channel_id,
            prompt=job.prompt,
            negative_prompt=job.negative_prompt,
            options=job.options,
            seed=job.seed,
            model=job.model,
            status=status,
            outcome=outcome,
            delivery=job.delivery,
            created_at=now,
            updated_at=now,
            kind=job.kind,
            parent_id=job.parent_id,
            parent_index=job.parent_index,
        )
        row.transitions.append(TransitionRow(status=status, detail=outcome, at=now))
        session.add(row)

    def reject(self, job: NewJob, reason: str) -> None:
        """Record a request that was refused before it reached the queue."""
        with self._sessions.begin() as session:
            self._insert(session, job, JobStatus.REJECTED, reason)

    @staticmethod
    def _active(session: Session, user_id: str) -> int:
        query = select(func.count()).where(JobRow.user_id == user_id, JobRow.status.in_(ACTIVE_STATUSES))
        return session.scalar(query) or 0

    def active_count(self, user_id: str) -> int:
        with self._sessions() as session:
            return self._active(session, user_id)

    def _lock_member(self, session: Session, frontend: str, user_id: str) -> MemberQuotaRow:
        """The member's quota row, created if new and locked for this transaction. The insert comes first so
        that on SQLite the transaction takes the write lock before it reads anything (no stale snapshot);
        on PostgreSQL the row lock serialises this member's admissions across bot processes."""
        values = {"frontend": frontend, "user_id": user_id, "gpu_day": "", "gpu_seconds": 0.0}
        insert = postgresql_insert if session.get_bind().dialect.name == "postgresql" else sqlite_insert
        session.execute(insert(MemberQuotaRow).values(**values).on_conflict_do_nothing())
        query = select(MemberQuotaRow).where(MemberQuotaRow.frontend == frontend, MemberQuotaRow.user_id == user_id)
        return session.execute(query.with_for_update()).scalar_one()

    def _lock_guild(self, session: Session, guild_id: str, day: str) -> GuildQuotaRow:
        insert = postgresql_insert if session.get_bind().dialect.name == "postgresql" else sqlite_insert
        session.execute(insert(GuildQuotaRow).values(guild_id=guild_id, day=day, images=0).on_conflict_do_nothing())
        query = select(GuildQuotaRow).where(GuildQuotaRow.guild_id == guild_id, GuildQuotaRow.day == day)
        return session.execute(query.with_for_update()).scalar_one()

    def accept(
        self,
        job: NewJob,
        *,
        tier: Tier,
        quota: QuotaPolicy,
        images: int,
        bypass: bool = False,
        now: datetime | None = None,
    ) -> Admission:
        """Record the job as queued if it fits the member's quota (`bypass`: moderators), taking the images
        from their bucket and the server's daily count; else record it as rejected and raise `OverQuota`.
        Atomic per member across processes: 100 simultaneous requests accept exactly what fits."""
        now = now or utcnow()
        day = now.date().isoformat()
        with self._sessions.begin() as session:
            member = self._lock_member(session, job.frontend, job.user_id)
            guild = None
            if quota.guild_daily_images is not None and job.guild_id is not None and not bypass:
                guild = self._lock_guild(session, job.guild_id, day)
            usage = QuotaUsage(
                tokens=member.tokens,
                updated_at=_aware(member.updated_at),
                active_jobs=self._active(session, job.user_id),
                gpu_seconds_today=member.gpu_seconds if member.gpu_day == day else 0.0,
                guild_images_today=guild.images if guild is not None else 0,
            )
            if bypass:
                admission = Admission(True, None, max(0.0, tokens_now(tier, usage, now) - images))
            else:
                admission = admit(tier, usage, images, now, guild_daily_images=quota.guild_daily_images)
            if admission.refused:
                self._insert(session, job, JobStatus.REJECTED, f"over quota: {admission.reason}")
            else:
                member.tokens, member.updated_at = admission.tokens, now
                if guild is not None:
                    guild.images += images
                self._insert(session, job, JobStatus.QUEUED, None)
        if admission.refused:
            raise OverQuota(admission, tier, usage)
        return admission

    def quota_state(self, frontend: str, user_id: str, tier: Tier, now: datetime | None = None) -> QuotaState:
        now = now or utcnow()
        with self._sessions() as session:
            row = session.get(MemberQuotaRow, (frontend, user_id))
            active = self._active(session, user_id)
        usage = QuotaUsage(
            tokens=row.tokens if row else None,
            updated_at=_aware(row.updated_at) if row else None,
            active_jobs=active,
            gpu_seconds_today=row.gpu_seconds if row and row.gpu_day == now.date().isoformat() else 0.0,
        )
        tokens = tokens_now(tier, usage, now)
        retry = None
        if tokens < 1 and tier.refill_per_hour > 0:
            retry = (1 - tokens) / tier.refill_per_hour * 3600
        return QuotaState(tier, tokens, active, usage.gpu_seconds_today, retry)

    def add_gpu_seconds(self, frontend: str, user_id: str, seconds: float, now: datetime | None = None) -> None:
        day = (now or utcnow()).date().isoformat()
        with self._sessions.begin() as session:
            row = self._lock_member(session, frontend, user_id)
            row.gpu_seconds = (row.gpu_seconds if row.gpu_day == day else 0.0) + max(0.0, seconds)
            row.gpu_day = day

    # -- strikes, bans and appeals ----------------------------------------------------------------------------

    def add_strike(
        self, frontend: str, user_id: str, *, actor_id: str, reason: str, guild_id: str | None, job_id: str | None
    ) -> None:
        with self._sessions.begin() as session:
            session.add(
                StrikeRow(
                    frontend=frontend,
                    user_id=user_id,
                    guild_id=guild_id,
                    job_id=job_id,
                    actor_id=actor_id,
                    reason=reason,
                    at=utcnow(),
                )
            )

    def strikes_since(
        self, frontend: str, user_id: str, since: datetime, *, guild_id: str | None
    ) -> list[tuple[datetime, str, str]]:
        """(when, reason, by whom) of the member's strikes in this server since `since`, oldest first."""
        with self._sessions() as session:
            rows = session.scalars(
                select(StrikeRow)
                .where(
                    StrikeRow.frontend == frontend,
                    StrikeRow.user_id == user_id,
                    StrikeRow.at >= since,
                    _here(StrikeRow.guild_id, guild_id),
                )
                .order_by(StrikeRow.id)
            )
            return [(_aware(r.at), r.reason, r.actor_id) for r in rows]  # type: ignore[misc]

    def ban(
        self,
        frontend: str,
        user_id: str,
        *,
        actor_id: str,
        reason: str,
        guild_id: str | None,
        until: datetime | None,
    ) -> Ban:
        with self._sessions.begin() as session:
            row = BanRow(
                frontend=frontend,
                user_id=user_id,
                guild_id=guild_id,
                actor_id=actor_id,
                reason=reason,
                at=utcnow(),
                until=until,
            )
            session.add(row)
            session.flush()
            return _ban(row)

    def bans(self, frontend: str, user_id: str, *, guild_id: str | None) -> list[Ban]:
        """Every ban the member has had here (this server's, and any for everywhere), oldest first (lifted ones
        included)."""
        with self._sessions() as session:
            query = select(BanRow).where(
                BanRow.frontend == frontend,
                BanRow.user_id == user_id,
                BanRow.guild_id.is_(None) | _here(BanRow.guild_id, guild_id),
            )
            return [_ban(row) for row in session.scalars(query.order_by(BanRow.id))]

    def active_ban(self, frontend: str, user_id: str, guild_id: str | None, now: datetime | None = None) -> Ban | None:
        """The ban in force for the member here (a server's, or one for everywhere), the longest first."""
        now = now or utcnow()
        with self._sessions() as session:
            query = select(BanRow).where(
                BanRow.frontend == frontend,
                BanRow.user_id == user_id,
                BanRow.lifted_at.is_(None),
                (BanRow.guild_id.is_(None)) | (BanRow.guild_id == guild_id),
            )
            live = [_ban(row) for row in session.scalars(query)]
        live = [ban for ban in live if ban.until is None or ban.until > now]
        live.sort(key=lambda ban: (ban.until is not None, -(ban.until or now).timestamp()))
        return live[0] if live else None

    def lift_bans(self, frontend: str, user_id: str, guild_id: str | None, *, actor_id: str) -> int:
        """Lift the member's bans in force here; returns how many."""
        now = utcnow()
        with self._sessions.begin() as session:
            result = session.execute(
                update(BanRow)
                .where(
                    BanRow.frontend == frontend,
                    BanRow.user_id == user_id,
                    BanRow.lifted_at.is_(None),
                    (BanRow.guild_id.is_(None)) | (BanRow.guild_id == guild_id),
                )
                .values(lifted_at=now, lifted_by=actor_id)
            )
            return int(result.rowcount or 0)  # type: ignore[attr-defined]

    def open_appeal(
        self, frontend: str, user_id: str, job_id: str, guild_id: str | None, *, per_day: int
    ) -> Appeal | str:
        """A new appeal about `job_id`, or why not: "duplicate" (already appealed) or "limit" (`per_day` used)."""
        now = utcnow()
        with self._sessions.begin() as session:
            self._lock_member(session, frontend, user_id)
            if session.scalar(select(AppealRow.id).where(AppealRow.job_id == job_id)) is not None:
                return "duplicate"
            today = now.replace(hour=0, minute=0, second=0, microsecond=0)
            count = session.scalar(
                select(func.count()).where(
                    AppealRow.frontend == frontend, AppealRow.user_id == user_id, AppealRow.at >= today
                )
            )
            if (count or 0) >= per_day:
                return "limit"
            row = AppealRow(frontend=frontend, user_id=user_id, guild_id=guild_id, job_id=job_id, status="open", at=now)
            session.add(row)
            session.flush()
            return _appeal(row)

    def withdraw_appeal(self, appeal_id: int) -> None:
        """Take back an open appeal that never reached the moderators, so it does not count."""
        with self._sessions.begin() as session:
            row = session.get(AppealRow, appeal_id, with_for_update=True)
            if row is not None and row.status == "open":
                session.delete(row)

    def appeal_for(self, job_id: str) -> Appeal | None:
        with self._sessions() as session:
            row = session.scalar(select(AppealRow).where(AppealRow.job_id == job_id))
            return _appeal(row) if row else None

    def settle(
        self, job_id: str, *, approve: bool, actor_id: str, options: Mapping[str, Any] | None = None
    ) -> Settled | None:
        """A moderator's decision on `job_id`, taken once:
        - a held job: approved, its held images become postable (completed, to be posted); else declined;
        - a refused prompt or a withheld job, while an appeal about it is open: the appeal closes; an approved
          prompt is queued (with `options` added to its own); held images of a withheld job are released if
          approved, declined if not;
        - a posted result (reported), unless a moderator decided about the job before: rejected, declined (to be
          taken down); approved, nothing changes.
        Any open appeal about the job closes with the decision. Returns None, changing nothing, when there is
        nothing (left) to decide."""
        try:
            return self._settle(job_id, approve=approve, actor_id=actor_id, options=options or {})
        except _NothingToDecide:
            return None

    def _settle(self, job_id: str, *, approve: bool, actor_id: str, options: Mapping[str, Any]) -> Settled:
        verdict = "approved" if approve else "rejected"
        detail = f"{verdict} by {actor_id}"
        now = utcnow()
        with self._sessions.begin() as session:
            # Writing first takes SQLite's write lock before anything is read; each claim is a conditional
            # update besides, so that of two moderators deciding at once only one wins.
            closed = session.execute(
                update(AppealRow)
                .where(AppealRow.job_id == job_id, AppealRow.status == "open")
                .values(status=verdict, decided_by=actor_id, decided_at=now)
                .execution_options(synchronize_session=False)
            ).rowcount  # type: ignore[attr-defined]
            row = session.get(JobRow, job_id)
            if row is None:
                raise _NothingToDecide
            before = JobStatus(row.status)
            decidable = (
                before is JobStatus.HELD
                or (before is JobStatus.POSTED and not self._decided(session, job_id))
                or (before in (JobStatus.REJECTED, JobStatus.WITHHELD) and closed)
            )
            if not decidable:
                raise _NothingToDecide  # and the transaction rolls back
            releasable = any(image.gate_action == "review" for image in row.images)
            after: JobStatus = before
            if before is JobStatus.HELD or (before is JobStatus.WITHHELD and releasable):
                after = JobStatus.COMPLETED if approve else JobStatus.DECLINED
            elif before is JobStatus.REJECTED and approve:
                after = JobStatus.QUEUED
            elif before is JobStatus.POSTED and not approve:
                after = JobStatus.DECLINED
            if after is not before:
                values: dict[str, Any] = {"status": after, "updated_at": now}
                if after is JobStatus.QUEUED:
                    values.update(outcome=None, options={**row.options, **options})
                elif after is JobStatus.DECLINED:
                    values.update(outcome=detail)
                moved = session.execute(
                    update(JobRow)
                    .where(JobRow.id == job_id, JobRow.status == before)
                    .values(**values)
                    .execution_options(synchronize_session=False)
                ).rowcount  # type: ignore[attr-defined]
                if not moved:
                    raise _NothingToDecide  # another decision came first
                if after is JobStatus.COMPLETED:
                    session.execute(
                        update(ImageRow)
                        .where(ImageRow.job_id == job_id, ImageRow.gate_action == "review")
                        .values(gate_action="allow")
                        .execution_options(synchronize_session=False)
                    )
                session.add(TransitionRow(job_id=job_id, status=after, detail=detail, at=now))
            appeal = session.scalar(select(AppealRow).where(AppealRow.job_id == job_id)) if closed else None
            return Settled(before, after, _appeal(appeal) if appeal is not None else None)

    @staticmethod
    def _decided(session: Session, job_id: str) -> bool:
        """Whether a moderator's decision about the job is on record (see `MODERATOR_DECISIONS`)."""
        query = select(MemberActionRow.id).where(
            MemberActionRow.job_id == job_id,
            MemberActionRow.allowed.is_(True),
            MemberActionRow.action.in_(MODERATOR_DECISIONS),
        )
        return session.scalar(query.limit(1)) is not None

    def transition(
        self, job_id: str, status: JobStatus, *, detail: str | None = None, message_id: str | None = None
    ) -> bool:
        """Move a job to `status`. Returns False (and changes nothing) if it already ended or is there."""
        with self._sessions.begin() as session:
            row = session.get(JobRow, job_id, with_for_update=True)
            if row is None or row.status in FINAL_STATUSES or row.status == status:
                return False
            now = utcnow()
            row.status = status
            row.updated_at = now
            if status in FINAL_STATUSES and detail is not None:
                row.outcome = detail
            if message_id is not None:
                row.message_id = message_id
            session.add(TransitionRow(job_id=job_id, status=status, detail=detail, at=now))
            return True

    def add_images(self, job_id: str, images: list[StoredImage]) -> None:
        """Record stored images; recording the same index again replaces nothing."""
        with self._sessions.begin() as session:
            have = set(session.scalars(select(ImageRow.index).where(ImageRow.job_id == job_id)))
            for image in images:
                if image.index in have:
                    continue
                session.add(
                    ImageRow(
                        job_id=job_id,
                        index=image.index,
                        seed=image.seed,
                        width=image.width,
                        height=image.height,
                        path=image.path,
                        sha256=image.sha256,
                        size_bytes=image.size_bytes,
                        gate_action=image.gate_action,
                        gate_category=image.gate_category,
                        gate_layer=image.gate_layer,
                        gate_score=image.gate_score,
                        preview_path=image.preview_path,
                    )
                )

    def get(self, job_id: str) -> JobRecord | None:
        with self._sessions() as session:
            row = session.get(JobRow, job_id)
            return _record(row) if row else None

    def all_jobs(self) -> list[JobRecord]:
        """Every job, oldest first."""
        with self._sessions() as session:
            return [_record(row) for row in session.scalars(select(JobRow).order_by(JobRow.created_at))]

    def unfinished(self) -> list[JobRecord]:
        """Jobs accepted but not yet ended, oldest first: what a restarted bot must pick up."""
        with self._sessions() as session:
            rows = session.scalars(select(JobRow).where(JobRow.status.in_(ACTIVE_STATUSES)).order_by(JobRow.created_at))
            return [_record(row) for row in rows]

    def find(self, job_id_or_prefix: str) -> JobRecord | None:
        """A job by its id, or by the short id shown to users (its first characters) when that is unique."""
        wanted = job_id_or_prefix.strip().lower()
        if not wanted or not all(c in "0123456789abcdef" for c in wanted):
            return None
        with self._sessions() as session:
            row = session.get(JobRow, wanted)
            if row is None and 4 <= len(wanted) < 32:
                rows = list(session.scalars(select(JobRow).where(JobRow.id.startswith(wanted)).limit(2)))
                row = rows[0] if len(rows) == 1 else None
            return _record(row) if row else None

    def active_jobs(self, user_id: str | None = None) -> list[JobRecord]:
        """Accepted jobs not yet ended, oldest first; only `user_id`'s when given."""
        with self._sessions() as session:
            query = select(JobRow).where(JobRow.status.in_(ACTIVE_STATUSES))
            if user_id is not None:
                query = query.where(JobRow.user_id == user_id)
            return [_record(row) for row in session.scalars(query.order_by(JobRow.created_at))]

    def usage_since(self, frontend: str, user_id: str, since: datetime) -> Usage:
        """What `user_id` asked for since `since`: accepted jobs, images they asked for, and jobs still active."""
        with self._sessions() as session:
            rows = session.execute(
                select(JobRow.status, JobRow.options).where(
                    JobRow.frontend == frontend,
                    JobRow.user_id == user_id,
                    JobRow.created_at >= since,
                    JobRow.status != JobStatus.REJECTED,
                )
            ).all()
            active = self._active(session, user_id)
        images = sum(int((options or {}).get("count") or 1) for _, options in rows)
        return Usage(jobs=len(rows), images=images, active=active)

    def user_settings(self, frontend: str, user_id: str) -> dict[str, Any]:
        with self._sessions() as session:
            row = session.get(UserSettingsRow, (frontend, user_id))
            return dict(row.settings) if row else {}

    def save_user_settings(self, frontend: str, user_id: str, settings: dict[str, Any]) -> None:
        """Replace a member's defaults; an empty mapping forgets them."""
        with self._sessions.begin() as session:
            row = session.get(UserSettingsRow, (frontend, user_id), with_for_update=True)
            if not settings:
                if row is not None:
                    session.delete(row)
                return
            if row is None:
                session.add(UserSettingsRow(frontend=frontend, user_id=user_id, settings=settings, updated_at=utcnow()))
            else:
                row.settings, row.updated_at = settings, utcnow()

    def record_action(
        self,
        actor_id: str,
        action: str,
        *,
        allowed: bool,
        job_id: str | None = None,
        guild_id: str | None = None,
        detail: str | None = None,
    ) -> None:
        with self._sessions.begin() as session:
            session.add(
                MemberActionRow(
                    at=utcnow(),
                    actor_id=actor_id,
                    guild_id=guild_id,
                    action=action,
                    job_id=job_id,
                    allowed=allowed,
                    detail=detail,
                )
            )

    def actions(self, job_id: str | None = None) -> list[MemberAction]:
        """Recorded member actions, oldest first; only those on `job_id` when given."""
        with self._sessions() as session:
            query = select(MemberActionRow).order_by(MemberActionRow.id)
            if job_id is not None:
                query = query.where(MemberActionRow.job_id == job_id)
            return [
                MemberAction(r.at, r.actor_id, r.guild_id, r.action, r.job_id, r.allowed, r.detail)
                for r in session.scalars(query)
            ]

    def recent_jobs(self, user_id: str, *, guild_id: str | None, limit: int = 10) -> list[JobRecord]:
        """The member's latest jobs in this server, newest first (refused ones included)."""
        with self._sessions() as session:
            query = select(JobRow).where(JobRow.user_id == user_id, _here(JobRow.guild_id, guild_id))
            return [_record(row) for row in session.scalars(query.order_by(JobRow.created_at.desc()).limit(limit))]

    def forget_user(self, user_id: str) -> list[str]:
        """A member's data-deletion request: their prompts, delivery data and image files go; image hashes,
        sizes and decisions stay for the record. Returns the file paths to delete."""
        paths: list[str] = []
        with self._sessions.begin() as session:
            for row in session.scalars(select(JobRow).where(JobRow.user_id == user_id)):
                row.prompt, row.negative_prompt, row.delivery = "[deleted]", "", {}
                row.options = {k: v for k, v in row.options.items() if k not in ("safety_negative",)}
                for image in row.images:
                    paths += [p for p in (image.path, image.preview_path) if p]
                    image.path, image.preview_path = "", None
        return paths

    def expire_images(self, before: datetime) -> list[str]:
        """Images made before `before` lose their files (hashes stay). Returns the file paths to delete."""
        paths: list[str] = []
        with self._sessions.begin() as session:
            query = select(ImageRow).join(JobRow).where(JobRow.created_at < before, ImageRow.path != "")
            for image in session.scalars(query):
                paths += [p for p in (image.path, image.preview_path) if p]
                image.path, image.preview_path = "", None
        return paths
