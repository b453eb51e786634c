"""The buttons under a result. Their custom ids carry the job id, so they keep working after a restart:
discord.py matches any pressed button against `JobButton`'s template, whichever process posted it."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

import aiohttp
import discord

from bot.db.models import JobStatus
from bot.db.store import JobRecord, StoredImage
from bot.discord import text
from bot.discord.permissions import is_moderator, role_ids
from bot.discord.reporter import InteractionReporter, delivery_data

if TYPE_CHECKING:
    from bot.discord.client import ImagineClient

log = logging.getLogger(__name__)

ACTIONS = ("reroll", "var", "up", "info", "delete", "report", "appeal")
MOD_ACTIONS = ("approve", "reject", "strike", "ban")
_KINDS = {"reroll": "reroll", "var": "variation", "up": "upscale"}


def custom_id(action: str, job_id: str, index: int | None = None) -> str:
    return f"imagine:{action}:{job_id}" + (f":{index}" if index is not None else "")


class JobButton(
    discord.ui.DynamicItem[discord.ui.Button[discord.ui.View]],
    template=r"imagine:(?P<action>reroll|var|up|info|delete|report|appeal):(?P<job>[0-9a-f]{32})(?::(?P<index>[0-9]))?",
):
    def __init__(
        self,
        action: str,
        job_id: str,
        index: int | None = None,
        *,
        label: str | None = None,
        emoji: str | None = None,
        style: discord.ButtonStyle = discord.ButtonStyle.secondary,
        row: int | None = None,
    ) -> None:
        super().__init__(
            discord.ui.Button(
                label=label, emoji=emoji, style=style, row=row, custom_id=custom_id(action, job_id, index)
            )
        )
        self.action, self.job_id, self.index = action, job_id, index

    @classmethod
    async def from_custom_id(
        cls,
        interaction: discord.Interaction,
        item: discord.ui.Item[Any],
        match: re.Match[str],
        /,
    ) -> JobButton:
        index = match["index"]
        return cls(match["action"], match["job"], int(index) if index is not None else None)

    async def callback(self, interaction: discord.Interaction) -> None:
        client: ImagineClient = interaction.client  # type: ignore[assignment]
        async with _answered(interaction, self.action):
            await press(client, interaction, self.action, self.job_id, self.index)


class ModButton(
    discord.ui.DynamicItem[discord.ui.Button[discord.ui.View]],
    template=r"imagine:mod:(?P<action>approve|reject|strike|ban):(?P<job>[0-9a-f]{32})",
):
    """A moderator's decision under a post in the review channel."""

    def __init__(self, action: str, job_id: str) -> None:
        style = discord.ButtonStyle.success if action == "approve" else discord.ButtonStyle.danger
        labels = {"approve": "Approve", "reject": "Reject", "strike": "Reject + strike", "ban": "Ban"}
        super().__init__(
            discord.ui.Button(label=labels[action], style=style, custom_id=f"imagine:mod:{action}:{job_id}")
        )
        self.action, self.job_id = action, job_id

    @classmethod
    async def from_custom_id(
        cls, interaction: discord.Interaction, item: discord.ui.Item[Any], match: re.Match[str], /
    ) -> ModButton:
        return cls(match["action"], match["job"])

    async def callback(self, interaction: discord.Interaction) -> None:
        client: ImagineClient = interaction.client  # type: ignore[assignment]
        async with _answered(interaction, f"mod:{self.action}"):
            await decide(client, interaction, self.action, self.job_id)


def review_view(job_id: str) -> discord.ui.View:
    view = discord.ui.View(timeout=None)
    for action in MOD_ACTIONS:
        view.add_item(ModButton(action, job_id))
    return view


def appeal_view(job_id: str) -> discord.ui.View:
    view = discord.ui.View(timeout=None)
    view.add_item(JobButton("appeal", job_id, label="Appeal", emoji="📨"))
    return view


def result_view(job: JobRecord, images: list[StoredImage]) -> discord.ui.View:
    """U1–U4 and V1–V4 for the posted images, then re-roll, info, delete and report.

    A row holds five buttons and a message five rows: up to four images, U and re-roll share the first row; from
    five on, U and V take a row per five images each (ten images fill four rows) and re-roll joins the last row."""
    view = discord.ui.View(timeout=None)
    numbers = [(image.index, position + 1) for position, image in enumerate(images)]
    per_kind = -(-len(numbers) // 5) if len(numbers) >= 5 else 1
    for kind, label, first_row in (("up", "U", 0), ("var", "V", per_kind)):
        for position, (index, number) in enumerate(numbers):
            view.add_item(JobButton(kind, job.id, index, label=f"{label}{number}", row=first_row + position // 5))
        if kind == "up" and len(numbers) < 5:
            view.add_item(JobButton("reroll", job.id, emoji="🔄", row=0))
    last = 2 * per_kind
    if len(numbers) >= 5:
        view.add_item(JobButton("reroll", job.id, emoji="🔄", row=last))
    for action, emoji in (("info", "ℹ️"), ("delete", "🗑️"), ("report", "🚩")):
        view.add_item(JobButton(action, job.id, emoji=emoji, row=last))
    return view


@contextlib.asynccontextmanager
async def _answered(interaction: discord.Interaction, action: str) -> AsyncIterator[None]:
    """A press that fails still gets an answer: discord.py's views only log an error, which would leave the
    member looking at "thinking…" until Discord gives up."""
    try:
        yield
    except Exception:
        log.exception("the %s button failed", action)
        await _ephemeral(interaction, text.button_error())


async def _ephemeral(interaction: discord.Interaction, content: str) -> None:
    try:
        if interaction.response.is_done():
            await interaction.followup.send(content, ephemeral=True)
        else:
            await interaction.response.send_message(content, ephemeral=True)
    except (discord.HTTPException, aiohttp.ClientError, TimeoutError) as error:
        log.info("could not answer a button press: %s", error)


async def press(
    client: ImagineClient, interaction: discord.Interaction, action: str, job_id: str, index: int | None
) -> None:
    store = client.orchestrator.store
    job = await asyncio.to_thread(store.get, job_id)
    if job is None:
        await _ephemeral(interaction, text.job_not_found(job_id[:8]))
        return
    if action in _KINDS:
        await _derive(client, interaction, job, _KINDS[action], index or 0)
    elif action == "info":
        await _ephemeral(interaction, text.job_info(job))
    elif action == "delete":
        await _delete(client, interaction, job)
    elif action == "report":
        await _report(client, interaction, job)
    elif action == "appeal":
        await interaction.response.defer(ephemeral=True, thinking=True)
        outcome = await client.orchestrator.appeal(job, str(interaction.user.id))
        await _ephemeral(interaction, text.appeal_outcome(outcome))


async def decide(client: ImagineClient, interaction: discord.Interaction, action: str, job_id: str) -> None:
    actor = str(interaction.user.id)
    orchestrator = client.orchestrator
    guild = str(interaction.guild_id) if interaction.guild_id else None
    if not is_moderator(interaction, client.settings.discord):
        await orchestrator.member_action(actor, f"mod.{action}", allowed=False, job_id=job_id, guild_id=guild)
        await _ephemeral(interaction, text.not_moderator())
        return
    job = await asyncio.to_thread(orchestrator.store.get, job_id)
    if job is None:
        await _ephemeral(interaction, text.job_not_found(job_id[:8]))
        return
    await interaction.response.defer()  # the review post is edited below, when the decision is made
    # The orchestrator records the decision (or why it was refused).
    result = await orchestrator.decide(job, action, actor_id=actor, reporter=client.reporter_for(job))
    after = await asyncio.to_thread(orchestrator.store.get, job_id)
    declined = after is not None and after.status is JobStatus.DECLINED
    if job.status is JobStatus.POSTED and declined and job.message_id and job.channel_id:
        # A reported result the moderator rejects comes down.
        try:
            await client.get_partial_messageable(int(job.channel_id)).get_partial_message(int(job.message_id)).delete()
            await orchestrator.member_action(actor, "message.deleted", allowed=True, job=job, guild_id=guild)
            result += "; the posted message was removed"
        except (discord.HTTPException, aiohttp.ClientError, TimeoutError) as error:
            log.warning("could not remove the message of job %s: %s", job.id, error)
    original = interaction.message.content if interaction.message is not None else ""
    try:
        await interaction.edit_original_response(content=text.review_decided(original, result, actor), view=None)
    except (discord.HTTPException, aiohttp.ClientError, TimeoutError) as error:
        log.warning("could not mark the review of job %s as decided: %s", job_id, error)


async def _derive(
    client: ImagineClient, interaction: discord.Interaction, job: JobRecord, kind: str, index: int
) -> None:
    from bot.discord.commands import is_age_restricted

    await interaction.response.defer(thinking=True, ephemeral=bool(job.options.get("private")))
    await client.orchestrator.derive(
        job,
        kind,
        index,
        user_id=str(interaction.user.id),
        channel_id=str(interaction.channel_id) if interaction.channel_id else None,
        nsfw_channel=is_age_restricted(interaction.channel),
        delivery=delivery_data(interaction),
        reporter=InteractionReporter(client, interaction),
        roles=role_ids(interaction),
        moderator=is_moderator(interaction, client.settings.discord),
    )


async def _delete(client: ImagineClient, interaction: discord.Interaction, job: JobRecord) -> None:
    actor = str(interaction.user.id)
    allowed = actor == job.user_id or is_moderator(interaction, client.settings.discord)
    detail = None if actor == job.user_id else f"message of {job.user_id}"
    guild = str(interaction.guild_id) if interaction.guild_id else None
    if not allowed:
        await client.orchestrator.member_action(actor, "message.deleted", allowed=False, job=job, guild_id=guild)
        await _ephemeral(interaction, text.not_yours("delete"))
        return
    await interaction.response.defer()  # acknowledges the press; the message itself is what goes
    try:
        await interaction.delete_original_response()
    except discord.NotFound:
        pass  # already gone
    except (discord.HTTPException, aiohttp.ClientError, TimeoutError) as error:
        log.warning("could not delete the result of job %s: %s", job.id, error)
        await _ephemeral(interaction, text.delete_failed())
        return
    await client.orchestrator.member_action(
        actor, "message.deleted", allowed=True, job=job, guild_id=guild, detail=detail
    )


async def _report(client: ImagineClient, interaction: discord.Interaction, job: JobRecord) -> None:
    await interaction.response.defer(ephemeral=True, thinking=True)
    actor = str(interaction.user.id)
    message = interaction.message
    url = message.jump_url if message is not None and interaction.guild_id else None
    forwarded = await client.review_desk.reported(job, actor, url)
    await client.orchestrator.member_action(
        actor,
        "report",
        allowed=True,
        job=job,
        guild_id=str(interaction.guild_id) if interaction.guild_id else None,
        detail="sent to the review channel" if forwarded else "recorded (no review channel reached)",
    )
    await _ephemeral(interaction, text.reported(forwarded))
