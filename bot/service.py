"""The bot process: database, queue, orchestrator and Discord client, and on one VM a supervised engine."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import signal
import socket
import sys
from dataclasses import replace
from pathlib import Path

import discord

from bot.config import Settings
from bot.db.migrate import connect, upgrade
from bot.db.store import JobStore
from bot.discord.client import ImagineClient, point_at
from bot.errors import ConfigError, ImagineError
from bot.orchestrator import Orchestrator
from bot.safety import build_finisher, build_prompt_gate
from bot.supervisor import EngineSupervisor
from engine.queue import EngineStatus, open_queue
from moderation.audit import AuditLog

log = logging.getLogger(__name__)


def engine_argv(config_path: Path | None, worker_id: str) -> list[str]:
    argv = [sys.executable, "-m", "bot"]
    if config_path is not None:
        argv += ["--config", str(config_path)]
    return [*argv, "engine", "--worker-id", worker_id]


def settings_fingerprint(settings: Settings) -> dict[str, object]:
    """What the audit log keeps about the configuration at each start: a hash of every setting (the token
    left out) and the values moderators care about, so a change between starts can be seen."""
    shown = repr(replace(settings, discord=replace(settings.discord, token=None)))
    return {
        "sha256": hashlib.sha256(shown.encode()).hexdigest(),
        "source": str(settings.source) if settings.source else None,
        "models": settings.registry.names(),
        "policy_default_blocked": sorted(settings.policies.default.blocked),
        "policy_guilds": sorted(settings.policies.guilds),
        "image_action": settings.safety.image_action,
        "quota_tiers": [tier.name for tier in settings.quota.tiers],
    }


def review_channel_warning(settings: Settings) -> str | None:
    """What to warn about at start-up when images would be held for a review that nobody can give."""
    safety = settings.safety
    if not safety.image_gate or safety.image_action != "review" or settings.discord.review_channel_id is not None:
        return None
    return (
        "[safety] image_action is review, but [discord] review_channel_id is not set: flagged images will be "
        "withheld instead of held for moderators, and members cannot appeal. Set review_channel_id to a channel "
        "only moderators can see."
    )


def supervised_worker_id() -> str:
    return f"{socket.gethostname()}-local"


async def serve(settings: Settings, *, with_engine: bool) -> None:
    """Run until SIGINT/SIGTERM. With `with_engine`, also start and supervise a local engine."""
    token = settings.discord.require_token()
    database = connect(settings.database_url)
    await asyncio.to_thread(upgrade, database)
    queue = open_queue(
        settings.queue_url,
        local_path=settings.queue_path,
        lease_seconds=settings.engine.lease_seconds,
        max_attempts=settings.engine.max_attempts,
    )
    audit = AuditLog(database)
    orchestrator = Orchestrator(
        settings=settings,
        store=JobStore(database),
        queue=queue,
        finisher=build_finisher(settings),
        gate=build_prompt_gate(settings),
        audit=audit,
    )
    await asyncio.to_thread(audit.append, "config.loaded", data=settings_fingerprint(settings))
    warning = review_channel_warning(settings)
    if warning is not None:
        log.warning("%s", warning)
    point_at(settings.discord.api_url, settings.discord.gateway_url)
    supervisor = None
    if with_engine:
        worker_id = supervised_worker_id()

        async def health() -> EngineStatus | None:
            engines = await asyncio.to_thread(queue.engines)
            return next((e for e in engines if e.worker == worker_id), None)

        supervisor = EngineSupervisor(
            engine_argv(settings.source, worker_id), health=health, hang_seconds=settings.engine.hang_seconds
        )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    client = ImagineClient(settings, orchestrator)
    try:
        async with client:
            tasks = [asyncio.create_task(client.start(token.reveal()), name="discord")]
            if supervisor is not None:
                tasks.append(asyncio.create_task(supervisor.run(), name="engine-supervisor"))
            stopper = asyncio.create_task(stop.wait(), name="stop")
            done, _ = await asyncio.wait([*tasks, stopper], return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                if task is not stopper and not task.cancelled() and task.exception() is not None:
                    error = task.exception()
                    if isinstance(error, discord.LoginFailure):
                        raise ConfigError(
                            "Discord rejected IMAGINE_DISCORD_TOKEN: copy the bot token again from the "
                            "developer portal (Bot → Reset Token)."
                        ) from None
                    if isinstance(error, discord.PrivilegedIntentsRequired):
                        raise ImagineError("Discord refused the gateway intents this bot asked for.") from None
                    raise ImagineError(f"lost the connection to Discord: {error}") from error
            log.info("stopping")
            for task in [*tasks, stopper]:
                task.cancel()
            await asyncio.gather(*tasks, stopper, return_exceptions=True)
    finally:
        await orchestrator.aclose()
        if supervisor is not None:
            await supervisor.stop()
        with contextlib.suppress(Exception):
            queue.close()
        database.dispose()
