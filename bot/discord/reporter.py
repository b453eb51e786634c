"""Talks to one Discord user about one job, through the interaction they started it with.

The interaction's token is kept in the job record, so after a restart the same reporter is
rebuilt from it (`rehydrate`). When the token has expired (15 minutes), results go to the
channel instead, mentioning the user.
"""

from __future__ import annotations

import io
import logging
from typing import Any

import aiohttp
import discord

from bot.attachments import fit_image
from bot.db.store import JobRecord
from bot.discord import text
from bot.orchestrator import Delivery, DeliveryError, Refusal
from engine.queue.base import QueuePosition

log = logging.getLogger(__name__)

_HISTORY_SCAN = 50


def delivery_data(interaction: discord.Interaction) -> dict[str, Any]:
    """What must be kept to answer this interaction later, even from a restarted process."""
    return {
        "interaction_id": str(interaction.id),
        "application_id": str(interaction.application_id),
        "token": interaction.token,
        "channel_id": str(interaction.channel_id) if interaction.channel_id else None,
        "guild_id": str(interaction.guild_id) if interaction.guild_id else None,
        "attachment_size_limit": interaction.filesize_limit,
    }


def rehydrate(client: discord.Client, data: dict[str, Any]) -> discord.Interaction[discord.Client]:
    """An `Interaction` rebuilt from `delivery_data`, enough to edit its response and send follow-ups."""
    payload: dict[str, Any] = {
        "id": data["interaction_id"],
        "application_id": data["application_id"],
        "type": 2,
        "token": data["token"],
        "version": 1,
        "attachment_size_limit": data.get("attachment_size_limit") or 10 * 1024 * 1024,
    }
    if data.get("guild_id"):
        payload["guild_id"] = data["guild_id"]
    if data.get("channel_id"):
        payload["channel_id"] = data["channel_id"]
    # discord.py has no public constructor for an interaction it did not receive; this is its own.
    return discord.Interaction(data=payload, state=client._connection)  # type: ignore[arg-type]


DEFAULT_SIZE_LIMIT = 10 * 1024 * 1024  # Discord's upload limit for a server without boosts


def _files(delivery: Delivery, size_limit: int) -> list[discord.File]:
    """One file per image (Discord shows two to four as a gallery on desktop and on phones, so a grid would
    only double the upload). A file over the interaction's size limit goes as a smaller WebP or JPEG."""
    files = []
    for image, png in delivery.images:
        data, extension = fit_image(png, size_limit)
        files.append(
            discord.File(
                io.BytesIO(data),
                filename=f"imagine-{delivery.job.id[:8]}-{image.seed}.{extension}",
                description=delivery.job.prompt[:1000],
            )
        )
    return files


def _delivery_error(error: Exception) -> DeliveryError:
    if isinstance(error, discord.DiscordServerError | aiohttp.ClientError | TimeoutError):
        return DeliveryError(f"Discord is not answering ({type(error).__name__})", permanent=False)
    if isinstance(error, discord.HTTPException):
        return DeliveryError(f"Discord refused the message ({error.status}, code {error.code})", permanent=True)
    return DeliveryError(f"{type(error).__name__}", permanent=True)


def _token_expired(error: discord.HTTPException) -> bool:
    # 10015 Unknown Webhook / 50027 Invalid Webhook Token: the interaction token has run out.
    return error.status in (401, 404) or error.code in (10015, 50027)


def _appeal_view(job_id: str) -> discord.ui.View:
    from bot.discord.buttons import appeal_view

    return appeal_view(job_id)


def _view(delivery: Delivery) -> discord.ui.View:
    from bot.discord.buttons import result_view  # the buttons answer through this module's reporter

    return result_view(delivery.job, [image for image, _ in delivery.images])


class InteractionReporter:
    def __init__(self, client: discord.Client, interaction: discord.Interaction[discord.Client]) -> None:
        self.client = client
        self.interaction = interaction

    def _size_limit(self) -> int:
        return int(self.interaction.filesize_limit or DEFAULT_SIZE_LIMIT)

    async def _edit(self, content: str, preview: bytes | None = None, view: discord.ui.View | None = None) -> bool:
        """Status edits are best effort: a lost edit must never stop the job. Returns whether it was made."""
        try:
            if view is not None:
                await self.interaction.edit_original_response(content=content, view=view)
            elif preview is None:
                await self.interaction.edit_original_response(content=content)
            else:
                preview_file = discord.File(io.BytesIO(preview), filename="preview.png", spoiler=False)
                await self.interaction.edit_original_response(content=content, attachments=[preview_file])
        except (discord.HTTPException, aiohttp.ClientError, TimeoutError) as error:
            log.info("could not edit the status message: %s", error)
            return False
        return True

    async def refused(self, refusal: Refusal) -> None:
        if refusal.appealable_job is not None:
            await self._edit(text.refused(refusal), view=_appeal_view(refusal.appealable_job))
        else:
            await self._edit(text.refused(refusal))

    async def queued(self, job: JobRecord, position: QueuePosition | None, eta_seconds: float | None) -> None:
        await self._edit(text.queued(job, position, eta_seconds))

    async def progress(self, job: JobRecord, step: int, total: int, preview: bytes | None) -> None:
        await self._edit(text.progress(job, step, total), preview)

    async def still_waiting(self, job: JobRecord) -> None:
        await self._edit(text.still_waiting(job))

    async def withheld(self, job: JobRecord, *, held: int, blocked: int, category: str | None) -> None:
        content = text.withheld(job, held=held, blocked=blocked, category=category)
        # An appeal needs a review channel to go to, and sexual content involving minors has none to make.
        desk = getattr(self.client, "review_desk", None)
        if held or desk is None or not desk.can_deliver or category == "sexual/minors":
            await self._edit(content)
        else:
            await self._edit(content, view=_appeal_view(job.id))

    async def reviewed(self, job: JobRecord, *, approved: bool) -> None:
        """Tell the member what a moderator decided: on the original message while its token lives, else in
        the channel with a mention (never for a private job)."""
        content = text.reviewed(job, approved=approved)
        if await self._edit(content, view=discord.ui.View()):
            return
        if job.options.get("private") or job.channel_id is None:
            return
        try:
            channel = self.client.get_partial_messageable(int(job.channel_id))
            await channel.send(content=f"<@{job.user_id}> {content}")
        except (discord.HTTPException, aiohttp.ClientError, TimeoutError) as error:
            log.warning("could not tell %s about the review of job %s: %s", job.user_id, job.id, error)

    async def failed(self, job: JobRecord, reason: str) -> None:
        await self._edit(text.failed(job, reason))

    async def cancelled(self, job: JobRecord) -> None:
        await self._edit(text.cancelled(job))

    async def deliver(self, delivery: Delivery) -> str | None:
        job = delivery.job
        # The status message must be a message in its own right before the follow-up: on Discord the
        # first follow-up after a "thinking" reply would otherwise replace it, and be deleted with it.
        await self._edit(text.posting(job))  # (a text-only edit keeps any preview; it goes with the message)
        private = bool(job.options.get("private"))
        try:
            message = await self.interaction.followup.send(
                content=text.delivered(delivery, mention=False),
                files=_files(delivery, self._size_limit()),
                view=_view(delivery),
                ephemeral=private,
                wait=True,
            )
        except discord.HTTPException as error:
            if not _token_expired(error):
                raise _delivery_error(error) from error
            return await self._deliver_to_channel(delivery)
        except (aiohttp.ClientError, TimeoutError) as error:
            raise _delivery_error(error) from error
        try:
            await self.interaction.delete_original_response()
        except (discord.HTTPException, aiohttp.ClientError, TimeoutError) as error:
            log.info("could not remove the status message: %s", error)
        return str(message.id)

    async def _deliver_to_channel(self, delivery: Delivery) -> str:
        channel_id = delivery.job.channel_id
        if channel_id is None:
            raise DeliveryError("the interaction expired and there is no channel to post in", permanent=True)
        if delivery.job.options.get("private"):
            # A private result cannot go to the channel; the job ends as failed and says why.
            raise DeliveryError("the interaction expired before the private result could be shown", permanent=True)
        channel = self.client.get_partial_messageable(int(channel_id))
        try:
            message = await channel.send(
                content=text.delivered(delivery, mention=True),
                files=_files(delivery, self._size_limit()),
                view=_view(delivery),
            )
        except (discord.HTTPException, aiohttp.ClientError, TimeoutError) as error:
            raise _delivery_error(error) from error
        return str(message.id)

    async def find_delivered(self, job: JobRecord) -> str | None:
        """Look for our own message carrying this job's id among the channel's latest messages."""
        if job.channel_id is None or self.client.user is None:
            return None
        marker = f"job `{text.short_id(job.id)}`"
        channel = self.client.get_partial_messageable(int(job.channel_id))
        try:
            async for message in channel.history(limit=_HISTORY_SCAN):
                if message.author.id == self.client.user.id and marker in message.content and message.attachments:
                    return str(message.id)
        except (discord.HTTPException, aiohttp.ClientError, TimeoutError) as error:
            log.warning("cannot read channel %s to check for an earlier post: %s", job.channel_id, error)
        return None
