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

    @property
    def can_deliver(self) -> bool:
        return self.channel_id is not None

    async def _post(self, job: JobRecord, content: str) -> bool:
        """Post `job` with its previews and the decision buttons; False if there is no channel or Discord refused."""
        if self.channel_id is None:
            log.warning("job %s needs a moderator but no review channel is configured", job.id)
            return False
        files = await asyncio.to_thread(_previews, job)
        try:
            await self.client.get_partial_messageable(self.channel_id).send(
                content=content, files=files, view=review_view(job.id)
            )
        except (discord.HTTPException, aiohttp.ClientError, TimeoutError) as error:
            log.error("could not post job %s to the review channel: %s", job.id, error)
            return False
        return True

    async def held(self, job: JobRecord) -> bool:
        return await self._post(job, text.review_post(job, heading="Held by the image check"))

    async def appealed(self, job: JobRecord, appeal_id: int) -> bool:
        return await self._post(job, text.review_post(job, heading=f"Appeal #{appeal_id}"))

    async def reported(self, job: JobRecord, reporter_id: str, message_url: str | None) -> bool:
        """A member reported a posted result (the report button). Returns whether it reached the channel."""
        return await self._post(job, text.report_for_moderators(job, reporter_id, message_url))
