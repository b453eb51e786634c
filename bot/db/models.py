"""Tables. Changing one needs a migration in `migrations/versions`. (`jobs.status` is a plain string column,
so a new `JobStatus` value needs none.)"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import JSON, BigInteger, Boolean, DateTime, Float, ForeignKey, Index, Integer, String, Text
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship


class Base(DeclarativeBase):
    pass


class JobStatus(StrEnum):
    REJECTED = "rejected"  # invalid options, blocked prompt or over a limit: never queued
    QUEUED = "queued"
    RUNNING = "running"
    COMPLETED = "completed"  # images stored, not yet posted
    POSTING = "posting"  # a post was attempted; on restart check before posting again
    POSTED = "posted"
    HELD = "held"  # every image was held back for a moderator's review
    WITHHELD = "withheld"  # every image was blocked by the image gate (or held with no moderators to review it)
    DECLINED = "declined"  # a moderator rejected it: held images are never posted, a posted result is taken down
    FAILED = "failed"
    CANCELLED = "cancelled"


ACTIVE_STATUSES = (JobStatus.QUEUED, JobStatus.RUNNING, JobStatus.COMPLETED, JobStatus.POSTING)
FINAL_STATUSES = (
    JobStatus.REJECTED,
    JobStatus.POSTED,
    JobStatus.HELD,
    JobStatus.WITHHELD,
    JobStatus.DECLINED,
    JobStatus.FAILED,
    JobStatus.CANCELLED,
)


class JobRow(Base):
    __tablename__ = "jobs"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    frontend: Mapped[str] = mapped_column(String(16))
    user_id: Mapped[str] = mapped_column(String(32))
    guild_id: Mapped[str | None] = mapped_column(String(32))
    channel_id: Mapped[str | None] = mapped_column(String(32))
    prompt: Mapped[str] = mapped_column(Text)
    negative_prompt: Mapped[str] = mapped_column(Text, default="")
    options: Mapped[dict[str, Any]] = mapped_column(JSON)
    seed: Mapped[int | None] = mapped_column(BigInteger)
    model: Mapped[str] = mapped_column(String(255))
    status: Mapped[str] = mapped_column(String(16))
    outcome: Mapped[str | None] = mapped_column(Text)
    # What the front end needs to answer later (for Discord: interaction id and token), kept so that
    # a restarted bot can still deliver.
    delivery: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    message_id: Mapped[str | None] = mapped_column(String(32))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    # imagine, reroll, variation or upscale; the last three name the job (and image) they came from.
    kind: Mapped[str] = mapped_column(String(16), default="imagine", server_default="imagine")
    parent_id: Mapped[str | None] = mapped_column(String(32))
    parent_index: Mapped[int | None] = mapped_column(Integer)

    transitions: Mapped[list[TransitionRow]] = relationship(
        back_populates="job", order_by="TransitionRow.id", cascade="all, delete-orphan"
    )
    images: Mapped[list[ImageRow]] = relationship(
        back_populates="job", order_by="ImageRow.index", cascade="all, delete-orphan"
    )

    __table_args__ = (
        Index("ix_jobs_user_status", "user_id", "status"),
        Index("ix_jobs_status", "status"),
        Index("ix_jobs_parent", "parent_id"),
    )


class TransitionRow(Base):
    __tablename__ = "job_transitions"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), index=True)
    status: Mapped[str] = mapped_column(String(16))
    detail: Mapped[str | None] = mapped_column(Text)
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True))

    job: Mapped[JobRow] = relationship(back_populates="transitions")


class ImageRow(Base):
    __tablename__ = "images"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), index=True)
    index: Mapped[int] = mapped_column(Integer)
    seed: Mapped[int] = mapped_column(BigInteger)
    width: Mapped[int] = mapped_column(Integer)
    height: Mapped[int] = mapped_column(Integer)
    path: Mapped[str] = mapped_column(Text)
    sha256: Mapped[str] = mapped_column(String(64))
    size_bytes: Mapped[int] = mapped_column(Integer)
    gate_action: Mapped[str] = mapped_column(String(16), default="allow", server_default="allow")
    gate_category: Mapped[str | None] = mapped_column(String(32))
    gate_layer: Mapped[str | None] = mapped_column(String(64))
    gate_score: Mapped[float | None] = mapped_column(Float)
    preview_path: Mapped[str | None] = mapped_column(Text)

    job: Mapped[JobRow] = relationship(back_populates="images")

    __table_args__ = (Index("uq_images_job_index", "job_id", "index", unique=True),)


class UserSettingsRow(Base):
    """A member's own defaults for new requests (model, aspect, steps, private)."""

    __tablename__ = "user_settings"

    frontend: Mapped[str] = mapped_column(String(16), primary_key=True)
    user_id: Mapped[str] = mapped_column(String(32), primary_key=True)
    settings: Mapped[dict[str, Any]] = mapped_column(JSON)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class MemberActionRow(Base):
    """What a member did to a job (cancel, delete, report), including attempts that were refused."""

    __tablename__ = "member_actions"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    actor_id: Mapped[str] = mapped_column(String(32))
    guild_id: Mapped[str | None] = mapped_column(String(32))
    action: Mapped[str] = mapped_column(String(32))
    job_id: Mapped[str | None] = mapped_column(String(32))
    allowed: Mapped[bool] = mapped_column(Boolean)
    detail: Mapped[str | None] = mapped_column(Text)

    __table_args__ = (Index("ix_member_actions_job", "job_id"), Index("ix_member_actions_actor", "actor_id"))


class MemberQuotaRow(Base):
    """A member's token bucket (as last written) and their GPU seconds on `gpu_day` (UTC, YYYY-MM-DD)."""

    __tablename__ = "member_quota"

    frontend: Mapped[str] = mapped_column(String(16), primary_key=True)
    user_id: Mapped[str] = mapped_column(String(32), primary_key=True)
    tokens: Mapped[float | None] = mapped_column(Float)
    updated_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    gpu_day: Mapped[str] = mapped_column(String(10), default="", server_default="")
    gpu_seconds: Mapped[float] = mapped_column(Float, default=0.0, server_default="0")


class GuildQuotaRow(Base):
    __tablename__ = "guild_quota"

    guild_id: Mapped[str] = mapped_column(String(32), primary_key=True)
    day: Mapped[str] = mapped_column(String(10), primary_key=True)
    images: Mapped[int] = mapped_column(Integer, default=0, server_default="0")


class StrikeRow(Base):
    __tablename__ = "strikes"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    frontend: Mapped[str] = mapped_column(String(16))
    user_id: Mapped[str] = mapped_column(String(32))
    guild_id: Mapped[str | None] = mapped_column(String(32))
    job_id: Mapped[str | None] = mapped_column(String(32))
    actor_id: Mapped[str] = mapped_column(String(32))
    reason: Mapped[str] = mapped_column(Text)
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True))

    __table_args__ = (Index("ix_strikes_user", "frontend", "user_id", "at"),)


class BanRow(Base):
    __tablename__ = "bans"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    frontend: Mapped[str] = mapped_column(String(16))
    user_id: Mapped[str] = mapped_column(String(32))
    guild_id: Mapped[str | None] = mapped_column(String(32))
    actor_id: Mapped[str] = mapped_column(String(32))
    reason: Mapped[str] = mapped_column(Text)
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    until: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))  # None: permanent
    lifted_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    lifted_by: Mapped[str | None] = mapped_column(String(32))

    __table_args__ = (Index("ix_bans_user", "frontend", "user_id"),)


class AppealRow(Base):
    __tablename__ = "appeals"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    frontend: Mapped[str] = mapped_column(String(16))
    user_id: Mapped[str] = mapped_column(String(32))
    guild_id: Mapped[str | None] = mapped_column(String(32))
    job_id: Mapped[str] = mapped_column(String(32))
    status: Mapped[str] = mapped_column(String(16))  # open, approved, rejected
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    decided_by: Mapped[str | None] = mapped_column(String(32))
    decided_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))

    __table_args__ = (
        Index("ix_appeals_user", "frontend", "user_id", "at"),
        Index("uq_appeals_job", "job_id", unique=True),
    )
