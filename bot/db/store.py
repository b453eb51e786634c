"""The job record: what was asked, every status it went through, and the images it produced."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Engine, func, select
from sqlalchemy.orm import Session, sessionmaker

from bot.db.models import (
    ACTIVE_STATUSES,
    FINAL_STATUSES,
    ImageRow,
    JobRow,
    JobStatus,
    MemberActionRow,
    TransitionRow,
    UserSettingsRow,
)


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


class OverJobCap(Exception):
    def __init__(self, active: int, cap: int) -> None:
        super().__init__(f"{active} active jobs, cap {cap}")
        self.active = active
        self.cap = cap


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

    def accept(self, job: NewJob, *, max_active: int) -> None:
        """Record the job as queued, or as rejected (raising `OverJobCap`) if the user is at `max_active`."""
        with self._sessions.begin() as session:
            active = self._active(session, job.user_id)
            over = active >= max_active
            if over:
                self._insert(session, job, JobStatus.REJECTED, f"busy: over the limit of {max_active} jobs at once")
            else:
                self._insert(session, job, JobStatus.QUEUED, None)
        if over:
            raise OverJobCap(active, max_active)

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
