"""What the bot says in Discord. Plain strings, so they can be read and changed in one place."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from bot.db.store import Ban, JobRecord, QuotaState
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


def _lineage(job: JobRecord) -> str:
    if job.parent_id is None:
        return ""
    parent = f"job `{short_id(job.parent_id)}`"
    number = (job.parent_index or 0) + 1
    return {
        "reroll": f" · re-roll of {parent}",
        "variation": f" · variation of image {number} of {parent}",
        "upscale": f" · upscale of image {number} of {parent}",
    }.get(job.kind, "")


def delivered(delivery: Delivery, *, mention: bool) -> str:
    job = delivery.job
    seeds = ", ".join(str(image.seed) for image, _ in delivery.images)
    label = "seed" if len(delivery.images) == 1 else "seeds"
    timing = f" · {delivery.seconds:.1f}s" if delivery.seconds is not None else ""
    who = f"<@{job.user_id}> " if mention else ""
    negative = f"\n-# not: {quote_prompt(job.negative_prompt, 150)}" if job.negative_prompt else ""
    style = f" · style {job.options['style']}" if job.options.get("style") else ""
    size = f" · {delivery.images[0][0].width}×{delivery.images[0][0].height}" if delivery.images else ""
    return (
        f"{who}**{quote_prompt(job.prompt)}**{negative}\n"
        f"-# {label} {seeds} · {job.model}{style}{size}{timing} · job `{short_id(job.id)}`{_lineage(job)}"
        f" · AI-generated{partly_withheld(delivery.held, delivery.blocked)}"
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


def button_error() -> str:
    return "❌ Something went wrong on our side and that button did nothing. Please try again in a moment."


def command_error() -> str:
    return "❌ Something went wrong on our side and your request was not queued. Please try again in a moment."


# -- buttons and commands ---------------------------------------------------------------------------------


def job_not_found(job_ref: str) -> str:
    return f"⚠️ There is no job `{quote_prompt(job_ref, 40)}`. `/queue` lists your jobs."


def not_yours(action: str) -> str:
    return f"🙅 Only the person who made this, or a moderator, can {action} it. This attempt was noted."


def deleted() -> str:
    return "🗑️ Deleted."


def cancel_outcome(job: JobRecord, outcome: str) -> str:
    return {
        "cancelled": f"🚫 Cancelling job `{short_id(job.id)}`.",
        "ended": f"Job `{short_id(job.id)}` has already finished, so there is nothing to cancel.",
        "refused": not_yours("cancel"),
    }[outcome]


def nothing_to_cancel() -> str:
    return "You have no job waiting or running."


def reported(forwarded: bool) -> str:
    where = "sent to this server's moderators" if forwarded else "recorded for this server's moderators"
    return f"🚩 Thank you: your report was {where}. The image stays up until a moderator decides."


def report_for_moderators(job: JobRecord, reporter_id: str, message_url: str | None) -> str:
    link = f"\n{message_url}" if message_url else ""
    return (
        f"🚩 **Report** from <@{reporter_id}> about job `{short_id(job.id)}` by <@{job.user_id}>\n"
        f"> {quote_prompt(job.prompt)}\n-# model {job.model} · seed {job.seed}{link}"
    )


def job_info(job: JobRecord) -> str:
    options = job.options
    lines = [
        f"**Job `{job.id}`** · {job.status.value}",
        f"**Prompt:** {quote_prompt(job.prompt, 1000)}",
    ]
    if job.negative_prompt:
        lines.append(f"**Negative:** {quote_prompt(job.negative_prompt, 500)}")
    sizes = sorted({f"{image.width}×{image.height}" for image in job.images})
    settings = [
        f"model {job.model}",
        f"seed {job.seed}",
        f"steps {options.get('steps') or 'model default'}",
        f"guidance {options.get('guidance') if options.get('guidance') is not None else 'model default'}",
        f"size {', '.join(sizes) or 'model default'}",
    ]
    if options.get("aspect"):
        settings.append(f"aspect {options['aspect']}")
    if options.get("style"):
        settings.append(f"style {options['style']} ({options.get('style_strength') or 'default strength'})")
    if options.get("strength") is not None:
        settings.append(f"strength {options['strength']}")
    lines.append("**Settings:** " + " · ".join(settings))
    lineage = _lineage(job).removeprefix(" · ")
    if lineage:
        lines.append(f"**Made from:** {lineage}")
    lines.append(f"-# asked by <@{job.user_id}> <t:{int(job.created_at.timestamp())}:R>")
    return "\n".join(lines)


def queue_listing(rows: list[tuple[JobRecord, int | None]], *, everyone: bool) -> str:
    if not rows:
        return "The queue is empty." if everyone else "You have no job waiting or running."
    title = "**Every job in progress**" if everyone else "**Your jobs in progress**"
    lines = [title]
    for job, place in rows[:20]:
        where = f"#{place} in the queue" if place else job.status.value
        who = f" · <@{job.user_id}>" if everyone else ""
        lines.append(f"`{short_id(job.id)}` · {where}{who} · {quote_prompt(job.prompt, 60)}")
    if len(rows) > 20:
        lines.append(f"…and {len(rows) - 20} more")
    lines.append("-# `/cancel job:` stops one.")
    return "\n".join(lines)


def usage(jobs: int, images: int, active: int, cap: int, max_count: int) -> str:
    return (
        f"**Today** (since midnight UTC): {jobs} job(s), {images} image(s).\n"
        f"**Now:** {active} of {cap} job(s) at a time in progress, so you can start {max(0, cap - active)} more.\n"
        f"-# Each job makes up to {max_count} images."
    )


def user_settings(settings: dict[str, object], *, changed: bool) -> str:
    head = "✅ Saved. Your defaults:" if changed else "Your defaults:"
    if not settings:
        return f"{head} none: every option uses the server's default. Set them with `/settings`."
    shown = " · ".join(f"{key} {value}" for key, value in sorted(settings.items()))
    return f"{head} {shown}\n-# Options you give `/imagine` still win over these."


def help_text(parameters: str, appeal_hint: str) -> str:
    return (
        "**imagine** draws images from your words.\n"
        "• `/imagine prompt:` makes up to 4 images. Options: negative, aspect, size, count, seed, steps, guidance, "
        "model, style, private.\n"
        f"• You can also type parameters in the prompt: {parameters}. The command's options win over them.\n"
        "• Under a result: 🔄 makes new ones, **V1–V4** varies one image, **U1–U4** upscales one 2×, ℹ️ shows the "
        "full settings, 🗑️ deletes (yours, or any for moderators), 🚩 reports it to the moderators.\n"
        "• `/queue` shows your jobs, `/cancel` stops one, `/info` shows what you have used today, `/settings` keeps "
        "your own defaults.\n"
        "**Rules:** prompts and images are checked for sexual content, content involving minors, graphic violence, "
        "hate, harassment, self-harm and dangerous or illegal activity; what is refused is not made or posted. Every "
        "image is marked as AI-generated.\n"
        f"**Appeals:** {appeal_hint}"
    )


def unknown_model(name: str, choices: list[str]) -> str:
    return f"⚠️ There is no model called {quote_prompt(name, 60)!r}. Choose one of: {', '.join(choices)}."


def delete_failed() -> str:
    return "❌ Discord would not delete that message just now. Try again in a moment."


def appeal_hint(review_channel_id: int | None) -> str:
    where = f" (they work in <#{review_channel_id}>)" if review_channel_id else ""
    return (
        "if a prompt or image of yours was stopped and you think that is wrong, use 🚩 on a result or ask a "
        f"moderator of this server{where}; every decision is recorded, so it can be looked at again."
    )


def reviewed(job: JobRecord, *, approved: bool) -> str:
    if approved:
        return f"✅ A moderator looked at your request and approved it: it is on its way.\n-# job `{short_id(job.id)}`"
    return f"🛡️ A moderator looked at your request and kept it back.\n-# job `{short_id(job.id)}`"


def appeal_outcome(outcome: str) -> str:
    return {
        "opened": "📨 Your appeal was sent to this server's moderators. You will hear back here.",
        "duplicate": "You have already appealed this one; a moderator will look at it.",
        "limit": "You have used today's appeals. Try again tomorrow, or ask a moderator.",
        "closed": "Appeals are turned off on this server; ask a moderator.",
        "unavailable": (
            "Appeals are not set up on this server, so nothing was sent and no appeal was used up. "
            "Contact a moderator of this server directly."
        ),
        "undelivered": (
            "Your appeal could not reach this server's moderators just now, so it was not counted. "
            "Try again later, or contact a moderator directly."
        ),
        "decided": "A moderator has already decided about this one, so it cannot be appealed again.",
        "final": "This cannot be appealed: the rule it broke holds everywhere, with no exceptions.",
        "not yours": "Only the person whose request it was can appeal it.",
    }[outcome]


def review_post(job: JobRecord, *, heading: str) -> str:
    scores = [
        f"image {image.index + 1}: {image.gate_action} {image.gate_category or ''} "
        f"({image.gate_layer or '-'}, {image.gate_score:.2f})"
        for image in job.images
        if image.gate_score is not None and image.gate_action != "allow"
    ]
    lines = [
        f"**{heading}** · job `{job.id}` by <@{job.user_id}>",
        f"> {quote_prompt(job.prompt, 500)}",
        f"-# model {job.model} · seed {job.seed} · status {job.status.value}"
        + (f" · {job.outcome}" if job.outcome else ""),
    ]
    if scores:
        lines.append("-# " + " · ".join(scores))
    return "\n".join(lines)


def review_decided(original: str, result: str, moderator_id: str) -> str:
    return f"{original}\n**Decision:** {result} by <@{moderator_id}>"


def not_moderator() -> str:
    return "🙅 Only moderators can do that. This attempt was noted."


def _until(until: datetime | None) -> str:
    return "for good" if until is None else f"until <t:{int(until.timestamp())}:f>"


def banned(user_id: str, until: datetime | None) -> str:
    return f"⛔ <@{user_id}> may not make images here {_until(until)}."


def unbanned(user_id: str, lifted: int) -> str:
    return f"✅ Lifted {lifted} ban(s) of <@{user_id}>." if lifted else f"<@{user_id}> has no ban in force here."


def strikes(user_id: str, listed: list[tuple[datetime, str, str]], to_ban: int, days: int, ban: Ban | None) -> str:
    lines = [f"**Strikes of <@{user_id}>** in the last {days} days: {len(listed)} (a ban comes at {to_ban})"]
    lines += [
        f"• <t:{int(at.timestamp())}:d> by <@{actor}>: {quote_prompt(reason, 100)}" for at, reason, actor in listed
    ]
    if ban is not None:
        lines.append(f"⛔ That made a ban {_until(ban.until)}.")
    return "\n".join(lines)


def history(user_id: str, entries: list[str]) -> str:
    if not entries:
        return f"<@{user_id}> has no record here."
    return f"**Record of <@{user_id}>** (newest jobs first)\n" + "\n".join(f"• {e}" for e in entries[:25])


def purged(user_id: str, result: tuple[int, int]) -> str:
    files, redacted = result
    return (
        f"🧹 Deleted the data of <@{user_id}> in every server: {files} image file(s), their prompts, and {redacted} "
        "audit entries redacted (the audit chain stays verifiable)."
    )


def quota(state: QuotaState) -> str:
    tier = state.tier
    refill = (
        f" One more image in about {max(1, round(state.retry_after_seconds / 60))} min."
        if state.retry_after_seconds
        else ""
    )
    # Daily budgets are counted per UTC day: say when the next one starts, in the member's own time zone.
    midnight = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0) + timedelta(days=1)
    budget = (
        f"\n**GPU time today:** {state.gpu_seconds_today:.0f} of {tier.daily_gpu_seconds:g} s; "
        f"a new day's budget starts <t:{int(midnight.timestamp())}:R>."
        if tier.daily_gpu_seconds is not None
        else ""
    )
    return (
        f"**Images you can ask for now:** {int(state.tokens)} of {tier.burst:g} "
        f"(refills {tier.refill_per_hour:g} an hour).{refill}{budget}\n-# tier {tier.name}"
    )
