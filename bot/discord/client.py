"""The Discord client: connects, registers the commands and the result buttons, and resumes jobs left
over from a restart."""

from __future__ import annotations

import asyncio
import logging
import time

import discord
import yarl
from discord import app_commands

from bot.config import Settings
from bot.db.store import JobRecord
from bot.discord.buttons import JobButton, ModButton
from bot.discord.commands import build_commands, on_command_error
from bot.discord.mod_commands import mod_group
from bot.discord.reporter import InteractionReporter, rehydrate
from bot.discord.review import DiscordReviewDesk
from bot.loop_monitor import LoopMonitor
from bot.orchestrator import Orchestrator, Reporter

log = logging.getLogger(__name__)

# A saved "private" default is looked up before the interaction is acknowledged, so never for long.
_SAVED_LOOKUP_SECONDS = 0.5
_SAVED_CACHE_SECONDS = 60.0


def point_at(api_url: str, gateway_url: str) -> None:
    """Send REST and gateway traffic to `api_url`/`gateway_url` (Discord, or a compatible server)."""
    discord.http.Route.BASE = api_url.rstrip("/")
    discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY = yarl.URL(gateway_url)


class ImagineClient(discord.Client):
    def __init__(self, settings: Settings, orchestrator: Orchestrator) -> None:
        # The bot never joins voice, so the missing voice libraries are not worth a warning at each start.
        discord.VoiceClient.warn_nacl = discord.VoiceClient.warn_dave = False
        # No privileged intents: slash commands need none, and a new bot works without portal changes.
        super().__init__(intents=discord.Intents.default(), guild_ready_timeout=0.5)
        self.settings = settings
        self.orchestrator = orchestrator
        self.tree = app_commands.CommandTree(self)
        self.tree.error(on_command_error)
        for command in build_commands(settings.limits.max_count, settings.limits.max_steps):
            self.tree.add_command(command)
        self.tree.add_command(mod_group())
        self.review_desk = DiscordReviewDesk(self, settings.discord.review_channel_id)
        orchestrator.review_desk = self.review_desk
        self.loop_monitor = LoopMonitor()
        self._saved_private: dict[str, tuple[float, bool]] = {}
        self._resumed = False

    async def setup_hook(self) -> None:
        self.add_dynamic_items(JobButton, ModButton)
        self.loop_monitor.start()
        self._retention = asyncio.create_task(self._expire_images(), name="image-retention")
        guilds = [discord.Object(id=guild_id) for guild_id in self.settings.discord.guild_ids]
        if guilds:
            for guild in guilds:
                self.tree.copy_global_to(guild=guild)
                await self.tree.sync(guild=guild)
        else:
            await self.tree.sync()
        log.info("slash commands registered (%s)", f"{len(guilds)} server(s)" if guilds else "global")

    async def _expire_images(self) -> None:
        """Image retention: once an hour, files older than the configured number of days are deleted."""
        while True:
            try:
                deleted = await self.orchestrator.expire_images()
                if deleted:
                    log.info("deleted %d image file(s) past the retention period", deleted)
            except Exception:
                log.exception("image retention failed; trying again in an hour")
            await asyncio.sleep(3600)

    async def close(self) -> None:
        retention = getattr(self, "_retention", None)
        if retention is not None:
            retention.cancel()
        await self.loop_monitor.stop()
        log.info("%s", self.loop_monitor.summary())
        await super().close()

    async def on_ready(self) -> None:
        log.info("connected to Discord as %s", self.user)
        if not self._resumed:
            self._resumed = True
            resumed = await self.orchestrator.resume(self.reporter_for)
            if resumed:
                log.info("picked up %d job(s) left from before the restart", resumed)

    def reporter_for(self, record: JobRecord) -> Reporter | None:
        if record.frontend != "discord" or not record.delivery.get("token"):
            return None
        return InteractionReporter(self, rehydrate(self, record.delivery))

    async def saved_private(self, user_id: str) -> bool:
        """The member's saved "private" default; False when it cannot be read at once."""
        cached = self._saved_private.get(user_id)
        if cached is not None and time.monotonic() - cached[0] < _SAVED_CACHE_SECONDS:
            return cached[1]
        store = self.orchestrator.store
        try:
            saved = await asyncio.wait_for(
                asyncio.to_thread(store.user_settings, "discord", user_id), _SAVED_LOOKUP_SECONDS
            )
        except TimeoutError:
            return False
        private = saved.get("private") is True
        self._saved_private[user_id] = (time.monotonic(), private)
        return private

    def forget_saved(self, user_id: str) -> None:
        self._saved_private.pop(user_id, None)
