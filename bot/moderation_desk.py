"""What the orchestrator needs from moderation beyond the gates: an audit sink, a review desk where
moderators see flagged work, and the words for a quota refusal."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Protocol

from bot import messages

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


def quota_refusal(over: OverQuota) -> Refusal:
    from bot.orchestrator import Refusal

    admission, tier, usage = over.admission, over.tier, over.usage
    words = messages.over_quota(
        admission.reason,
        retry_after_seconds=admission.retry_after_seconds,
        active_jobs=usage.active_jobs,
        max_concurrent=tier.max_concurrent,
        daily_gpu_seconds=tier.daily_gpu_seconds,
        refill_per_hour=tier.refill_per_hour,
    )
    return Refusal("busy", words)
