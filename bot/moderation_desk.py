"""What the orchestrator needs from moderation beyond the gates: an audit sink, a review desk where
moderators see flagged work, and the words for a quota refusal."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from bot.db.store import JobRecord, OverQuota
    from bot.orchestrator import Refusal


class AuditSink(Protocol):
    def append(
        self,
        event: str,
        *,
        actor_id: str | None = None,
        user_id: str | None = None,
        guild_id: str | None = None,
        job_id: str | None = None,
        category: str | None = None,
        data: Mapping[str, Any] | None = None,
    ) -> object: ...


class NullAudit:
    """For tests and tools that run without an audit log."""

    def append(self, event: str, **_: object) -> object:
        return None


class ReviewDesk(Protocol):
    """Where flagged work goes for moderators (for Discord: the review channel)."""

    @property
    def can_deliver(self) -> bool:
        """Whether there is anywhere to send work (for Discord: a review channel is configured). Without it
        nothing is held for review and no appeal is taken."""
        ...

    async def held(self, job: JobRecord) -> bool:
        """Images of `job` were held by the image gate. Returns whether the moderators were reached."""
        ...

    async def appealed(self, job: JobRecord, appeal_id: int) -> bool:
        """The member appealed a refused or held `job`. Returns whether the moderators were reached."""
        ...


def _duration(seconds: float) -> str:
    if seconds < 90:
        return f"{max(1, round(seconds))} seconds"
    if seconds < 5400:
        return f"{round(seconds / 60)} minutes"
    return f"{seconds / 3600:.1f} hours"


def quota_refusal(over: OverQuota) -> Refusal:
    from bot.orchestrator import Refusal

    admission, tier, usage = over.admission, over.tier, over.usage
    retry = admission.retry_after_seconds
    later = f" Try again in about {_duration(retry)}." if retry else ""
    reason = admission.reason
    if reason == "concurrent":
        words = (
            f"You already have {usage.active_jobs} job(s) in progress; the limit is {tier.max_concurrent} at a time. "
            "Wait for one to finish, then try again."
        )
    elif reason == "gpu_budget":
        words = f"You have used today's image-making time ({tier.daily_gpu_seconds or 0:g} GPU seconds).{later}"
    elif reason == "guild_cap":
        words = f"This server has made as many images today as it allows.{later}"
    elif reason == "rate":
        words = f"You are making images faster than this server allows ({tier.refill_per_hour:g} an hour).{later}"
    else:
        words = f"You are over this server's limits.{later}"
    return Refusal("busy", words)
