"""The Discord client: connects, registers the commands, and resumes jobs left over from a restart."""

from __future__ import annotations

import logging

import discord
import yarl
from discord import app_commands

from bot.config import Settings
from bot.db.store import JobRecord
from bot.discord.commands import imagine_command, on_command_error
from bot.discord.reporter import InteractionReporter, rehydrate
from bot.orchestrator import Orchestrator, Reporter

log = logging.getLogger(__name__)


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
        self.tree.add_command(imagine_command(self, orchestrator, settings.limits))
        self._resumed = False

    async def setup_hook(self) -> None:
        guilds = [discord.Object(id=guild_id) for guild_id in self.settings.discord.guild_ids]
        if guilds:
            for guild in guilds:
                self.tree.copy_global_to(guild=guild)
                await self.tree.sync(guild=guild)
        else:
            await self.tree.sync()
        log.info("slash commands registered (%s)", f"{len(guilds)} server(s)" if guilds else "global")

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
