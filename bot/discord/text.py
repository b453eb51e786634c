"""What the bot says in Discord. Plain strings, so they can be read and changed in one place."""

from __future__ import annotations

from bot.db.store import JobRecord
from bot.orchestrator import Delivery, Refusal
from engine.queue.base import QueuePosition

_REFUSAL_ICONS = {"invalid": "⚠️", "blocked": "⛔", "busy": "⏳", "error": "❌"}
_BAR = 12


def short_id(job_id: str) -> str:
    return job_id[:8]


def quote_prompt(prompt: str, limit: int = 300) -> str:
    text = prompt if len(prompt) <= limit else prompt[: limit - 1] + "…"
    return text.replace("`", "'").replace("\n", " ")


def refused(refusal: Refusal) -> str:
    return f"{_REFUSAL_ICONS.get(refusal.kind, '❌')} {refusal.reason}"


def _duration(seconds: float) -> str:
    if seconds < 60:
        return f"{max(1, round(seconds))} s"
    return f"{round(seconds / 60)} min"


def queued(job: JobRecord, position: QueuePosition | None, eta_seconds: float | None) -> str:
    if position is None or position.jobs_ahead == 0:
        where = "next in line"
    else:
        where = f"position **{position.place}** in the queue"
    eta = f", about {_duration(eta_seconds)}" if eta_seconds is not None else ""
    return f"⏳ Queued: {where}{eta}.\n> {quote_prompt(job.prompt)}\n-# job `{short_id(job.id)}`"


def progress(job: JobRecord, step: int, total: int) -> str:
    if total <= 0:
        return f"🎨 Starting…\n> {quote_prompt(job.prompt)}\n-# job `{short_id(job.id)}`"
    filled = round(_BAR * min(step, total) / total)
    bar = "▰" * filled + "▱" * (_BAR - filled)
    return f"🎨 Generating {bar} step {step}/{total}\n> {quote_prompt(job.prompt)}\n-# job `{short_id(job.id)}`"


def still_waiting(job: JobRecord) -> str:
    return (
        "⏳ The image engine has not answered yet: it may be busy or restarting. Your job is kept and will run; "
        f"there is no need to ask again.\n-# job `{short_id(job.id)}`"
    )


def posting(job: JobRecord) -> str:
    return f"📤 Posting your images…\n-# job `{short_id(job.id)}`"


def delivered(delivery: Delivery, *, mention: bool) -> str:
    job = delivery.job
    seeds = ", ".join(str(image.seed) for image, _ in delivery.images)
    label = "seed" if len(delivery.images) == 1 else "seeds"
    timing = f" · {delivery.seconds:.1f}s" if delivery.seconds is not None else ""
    who = f"<@{job.user_id}> " if mention else ""
    negative = f"\n-# not: {quote_prompt(job.negative_prompt, 150)}" if job.negative_prompt else ""
    return (
        f"{who}**{quote_prompt(job.prompt)}**{negative}\n"
        f"-# {label} {seeds} · {job.model}{timing} · job `{short_id(job.id)}` · AI-generated"
        f"{partly_withheld(delivery.held, delivery.blocked)}"
    )


def _category_words(category: str | None) -> str:
    return {
        "sexual": "sexual content",
        "sexual/minors": "sexual content involving minors",
        "violence/graphic": "graphic violence",
        "self-harm": "self-harm",
        "hate": "hate",
        "harassment": "harassment",
        "illicit": "dangerous or illegal activity",
    }.get(category or "", "unsafe content")


def withheld(job: JobRecord, *, held: int, blocked: int, category: str | None) -> str:
    what = _category_words(category)
    if held:
        return (
            f"🛡️ The image check flagged your result as possible {what}, so it was held for a moderator to review. "
            f"You will hear back here.\n-# job `{short_id(job.id)}`"
        )
    return (
        f"🛡️ The image check flagged your result as {what}, so it was not posted. If you think that is a mistake, "
        f"ask a moderator of this server.\n-# job `{short_id(job.id)}`"
    )


def partly_withheld(held: int, blocked: int) -> str:
    parts = []
    if held:
        parts.append(f"{held} held for a moderator's review")
    if blocked:
        parts.append(f"{blocked} not posted")
    return f"\n-# 🛡️ {' and '.join(parts)} after the image check" if parts else ""


def failed(job: JobRecord, reason: str) -> str:
    return f"❌ Your image could not be made: {reason}\n-# job `{short_id(job.id)}`"


def cancelled(job: JobRecord) -> str:
    return f"🚫 Cancelled.\n-# job `{short_id(job.id)}`"


def command_error() -> str:
    return "❌ Something went wrong on our side and your request was not queued. Please try again in a moment."
