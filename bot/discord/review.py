"""The moderators' review channel: held images (blurred) and appeals, each with decision buttons."""

from __future__ import annotations

import asyncio
import io
import logging
from pathlib import Path

import aiohttp
import discord

from bot.db.store import JobRecord
from bot.discord import text
from bot.discord.buttons import review_view

log = logging.getLogger(__name__)


def _previews(job: JobRecord) -> list[discord.File]:
    """Blurred previews of held images (spoilered too), and the posted ones of an appealed job."""
    files = []
    for image in job.images:
        path = image.preview_path if image.gate_action != "allow" else image.path
        if not path:
            continue
        try:
            data = Path(path).read_bytes()
        except OSError:
            continue
        files.append(discord.File(io.BytesIO(data), filename=f"review-{job.id[:8]}-{image.index}.png", spoiler=True))
    return files


class DiscordReviewDesk:
    def __init__(self, client: discord.Client, channel_id: int | None) -> None:
        self.client = client
        self.channel_id = channel_id

    async def _post(self, job: JobRecord, heading: str) -> None:
        if self.channel_id is None:
            log.warning("job %s needs a moderator (%s) but no review channel is configured", job.id, heading)
            return
        files = await asyncio.to_thread(_previews, job)
        try:
            await self.client.get_partial_messageable(self.channel_id).send(
                content=text.review_post(job, heading=heading), files=files, view=review_view(job.id)
            )
        except (discord.HTTPException, aiohttp.ClientError, TimeoutError) as error:
            log.error("could not post job %s to the review channel: %s", job.id, error)

    async def held(self, job: JobRecord) -> None:
        await self._post(job, "Held by the image check")

    async def appealed(self, job: JobRecord, appeal_id: int) -> None:
        await self._post(job, f"Appeal #{appeal_id}")
