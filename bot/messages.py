"""What the front process tells a member, whatever the front end: refusals, limits and places.

The Discord wording of everything else (progress, results, buttons, moderator replies) is in `bot/discord/text.py`;
between them they are all the text a member reads, kept together so it can be reviewed and translated."""

from __future__ import annotations

from collections.abc import Iterable

CHECK_FAILED = (
    "The prompt could not be checked right now, so it was not queued. This is not your doing: try again later."
)


def banned(until_timestamp: int | None, reason: str) -> str:
    until = "for good" if until_timestamp is None else f"until <t:{until_timestamp}:f>"
    return f"You may not make images here {until}. Reason: {reason}. A moderator of this server can lift it."


def prompt_blocked(label: str, *, appealable: bool) -> str:
    if not appealable:
        return (
            f"This prompt was stopped by the rule against {label}. That rule holds everywhere, with no exceptions, "
            "so it cannot be appealed."
        )
    return (
        f"This prompt was stopped by the rule against {label}. If you think that is a mistake, ask a moderator of "
        "this server to look at it."
    )


def no_direct_messages() -> str:
    return "Images are not made in direct messages here. Use the bot in a server channel."


def wrong_channel(channel_ids: Iterable[str]) -> str:
    where = ", ".join(f"<#{channel}>" for channel in sorted(channel_ids))
    return f"Images are not made in this channel. Use {where}."


def image_unavailable() -> str:
    return "That image is no longer available, so it cannot be varied or upscaled."


def image_file_removed() -> str:
    return "That image's file has been removed, so it cannot be varied or upscaled."


def no_such_image(job_id: str, number: int) -> str:
    return f"Job {job_id[:8]} has no image {number}."


def duration(seconds: float) -> str:
    if seconds < 90:
        return f"{max(1, round(seconds))} seconds"
    if seconds < 5400:
        return f"{round(seconds / 60)} minutes"
    return f"{seconds / 3600:.1f} hours"


def over_quota(
    reason: str | None,
    *,
    retry_after_seconds: float | None,
    active_jobs: int,
    max_concurrent: int,
    daily_gpu_seconds: float | None,
    refill_per_hour: float,
) -> str:
    later = f" Try again in about {duration(retry_after_seconds)}." if retry_after_seconds else ""
    if reason == "concurrent":
        return (
            f"You already have {active_jobs} job(s) in progress; the limit is {max_concurrent} at a time. "
            "Wait for one to finish, then try again."
        )
    if reason == "gpu_budget":
        return f"You have used today's image-making time ({daily_gpu_seconds or 0:g} GPU seconds).{later}"
    if reason == "guild_cap":
        return f"This server has made as many images today as it allows.{later}"
    if reason == "rate":
        return f"You are making images faster than this server allows ({refill_per_hour:g} an hour).{later}"
    return f"You are over this server's limits.{later}"
