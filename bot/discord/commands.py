"""The slash commands. Each turns an interaction into a plain request for the orchestrator, or answers
from the job record.

No `from __future__ import annotations`: discord.py reads the option types (with their limits,
taken from the settings at start-up) from the evaluated annotations of the callbacks below.
"""

import asyncio
import logging
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Literal, Optional

import aiohttp
import discord
from discord import app_commands

from bot.aspect import ASPECTS, parse_size
from bot.discord import text
from bot.discord.permissions import is_moderator, role_ids
from bot.discord.reporter import InteractionReporter, delivery_data
from bot.orchestrator import Refusal
from bot.prompt_params import split_parameters, valid_parameters
from bot.requests import ImagineRequest
from engine.errors import InvalidRequest
from engine.jobs import MAX_SEED
from engine.styles import StyleLibrary

if TYPE_CHECKING:
    from bot.discord.client import ImagineClient

log = logging.getLogger(__name__)

Aspect = Literal["1:1", "4:3", "3:4", "3:2", "2:3", "16:9", "9:16"]
assert Aspect.__args__ == ASPECTS  # type: ignore[attr-defined]  # one list of aspects, two spellings
_CHOICES_SHOWN = 25  # Discord shows at most 25 autocomplete choices


def is_age_restricted(channel: object) -> bool:
    """Discord's age-restricted ("NSFW") flag; threads inherit their parent's."""
    is_nsfw = getattr(channel, "is_nsfw", None)
    return bool(is_nsfw()) if callable(is_nsfw) else False


def inline_private(prompt: str) -> bool:
    """Whether the prompt's inline parameters ask for a private result; False when they cannot be read (the
    request is refused for them later, with the reason)."""
    try:
        return split_parameters(prompt)[1].private is True
    except InvalidRequest:
        return False


def _client(interaction: discord.Interaction) -> "ImagineClient":
    return interaction.client  # type: ignore[return-value]


def _matching(names: list[str], current: str) -> list[app_commands.Choice[str]]:
    wanted = current.lower().strip()
    found = [name for name in names if wanted in name.lower()]
    return [app_commands.Choice(name=name[:100], value=name[:100]) for name in found[:_CHOICES_SHOWN]]


async def model_names(interaction: discord.Interaction, current: str) -> list[app_commands.Choice[str]]:
    return _matching(_client(interaction).settings.registry.names(), current)


async def style_names(interaction: discord.Interaction, current: str) -> list[app_commands.Choice[str]]:
    library = StyleLibrary(_client(interaction).settings.styles_dir)
    return _matching(await asyncio.to_thread(library.names), current)


async def reply(interaction: discord.Interaction, content: str) -> None:
    """Answer a deferred ephemeral command, or one not yet answered."""
    try:
        if interaction.response.is_done():
            await interaction.edit_original_response(content=content)
        else:
            await interaction.response.send_message(content, ephemeral=True)
    except (discord.HTTPException, aiohttp.ClientError, TimeoutError) as error:
        log.info("could not answer /%s: %s", interaction.command.name if interaction.command else "?", error)


def build_commands(limits_max_count: int, limits_max_steps: int) -> list[app_commands.Command]:  # type: ignore[type-arg]
    @app_commands.command(name="imagine", description="Create images from a text prompt")
    @app_commands.describe(
        prompt="What to draw; parameters like --ar 16:9 --seed 5 --no text also work",
        negative="What to keep out of the image",
        aspect="Shape of the image",
        size="An exact size, WIDTHxHEIGHT (within the model's limits); wins over aspect",
        count=f"How many images (1 to {limits_max_count})",
        seed=f"A number from 0 to {MAX_SEED}: the same seed and prompt give the same image",
        steps=f"Sampling steps (1 to {limits_max_steps}); leave empty for the model's default",
        guidance="How closely to follow the prompt (0 to 30); leave empty for the model's default",
        model="Which model draws it",
        style="A style trained for this server",
        private="Only you see the result",
    )
    @app_commands.autocomplete(model=model_names, style=style_names)
    async def imagine(
        interaction: discord.Interaction,
        prompt: str,
        negative: Optional[str] = None,  # noqa: UP045 - discord.py reads these annotations at run time
        aspect: Optional[Aspect] = None,  # noqa: UP045
        size: Optional[str] = None,  # noqa: UP045
        count: Optional[app_commands.Range[int, 1, limits_max_count]] = None,  # noqa: UP045
        seed: Optional[app_commands.Range[int, 0, MAX_SEED]] = None,  # noqa: UP045
        steps: Optional[app_commands.Range[int, 1, limits_max_steps]] = None,  # noqa: UP045
        guidance: Optional[app_commands.Range[float, 0.0, 30.0]] = None,  # noqa: UP045
        model: Optional[str] = None,  # noqa: UP045
        style: Optional[str] = None,  # noqa: UP045
        private: Optional[bool] = None,  # noqa: UP045
    ) -> None:
        client = _client(interaction)
        # Acknowledge first: Discord gives three seconds, and everything below may take longer. Whether the
        # result is private must be known now: the option, else `--private` in the prompt (read by the same
        # parser as every other parameter), else the member's saved default.
        if private is None:
            private = inline_private(prompt) or await client.saved_private(str(interaction.user.id)) or None
        hidden = bool(private)
        await interaction.response.defer(thinking=True, ephemeral=hidden)
        reporter = InteractionReporter(client, interaction)
        width = height = None
        if size is not None:
            try:
                width, height = parse_size(size)
            except InvalidRequest as error:
                await reporter.refused(Refusal("invalid", error.message))
                return
        request = ImagineRequest(
            frontend="discord",
            user_id=str(interaction.user.id),
            guild_id=str(interaction.guild_id) if interaction.guild_id else None,
            channel_id=str(interaction.channel_id) if interaction.channel_id else None,
            prompt=prompt,
            negative_prompt=negative,
            seed=seed,
            count=count,
            steps=steps,
            width=width,
            height=height,
            guidance=guidance,
            model=model,
            style=style,
            aspect=aspect,
            private=private,
            roles=role_ids(interaction),
            moderator=is_moderator(interaction, client.settings.discord),
            nsfw_channel=is_age_restricted(interaction.channel),
            delivery=delivery_data(interaction),
        )
        await client.orchestrator.submit(request, reporter)

    async def active_job_names(interaction: discord.Interaction, current: str) -> list[app_commands.Choice[str]]:
        client = _client(interaction)
        everyone = is_moderator(interaction, client.settings.discord)
        user = None if everyone else str(interaction.user.id)
        jobs = await asyncio.to_thread(client.orchestrator.store.active_jobs, user)
        wanted = current.lower().strip()
        choices = []
        for job in reversed(jobs):
            label = f"{text.short_id(job.id)} · {job.status.value} · {text.quote_prompt(job.prompt, 60)}"
            if wanted in label.lower():
                choices.append(app_commands.Choice(name=label[:100], value=job.id))
        return choices[:_CHOICES_SHOWN]

    @app_commands.command(name="queue", description="Your jobs waiting or running (moderators see everyone's)")
    async def queue(interaction: discord.Interaction) -> None:
        client = _client(interaction)
        await interaction.response.defer(ephemeral=True, thinking=True)
        everyone = is_moderator(interaction, client.settings.discord)
        orchestrator = client.orchestrator
        jobs = await asyncio.to_thread(orchestrator.store.active_jobs, None if everyone else str(interaction.user.id))
        rows = []
        for job in jobs:
            position = await asyncio.to_thread(orchestrator.queue.position, job.id)
            rows.append((job, position.place if position is not None else None))
        await reply(interaction, text.queue_listing(rows, everyone=everyone))

    @app_commands.command(name="cancel", description="Stop a job of yours that is waiting or running")
    @app_commands.describe(job="The job id (from /queue); leave empty for your latest job")
    @app_commands.autocomplete(job=active_job_names)
    async def cancel(interaction: discord.Interaction, job: Optional[str] = None) -> None:  # noqa: UP045
        client = _client(interaction)
        await interaction.response.defer(ephemeral=True, thinking=True)
        store = client.orchestrator.store
        user_id = str(interaction.user.id)
        if job is None:
            mine = await asyncio.to_thread(store.active_jobs, user_id)
            if not mine:
                await reply(interaction, text.nothing_to_cancel())
                return
            record = mine[-1]
        else:
            found = await asyncio.to_thread(store.find, job)
            if found is None:
                await reply(interaction, text.job_not_found(job))
                return
            record = found
        outcome = await client.orchestrator.cancel(
            record,
            user_id,
            moderator=is_moderator(interaction, client.settings.discord),
            guild_id=str(interaction.guild_id) if interaction.guild_id else None,
        )
        await reply(interaction, text.cancel_outcome(record, outcome))

    @app_commands.command(name="info", description="What you have used today and what remains")
    async def info(interaction: discord.Interaction) -> None:
        client = _client(interaction)
        await interaction.response.defer(ephemeral=True, thinking=True)
        midnight = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
        used = await asyncio.to_thread(
            client.orchestrator.store.usage_since, "discord", str(interaction.user.id), midnight
        )
        settings = client.settings
        tier = settings.quota.tier_for(role_ids(interaction))
        state = await asyncio.to_thread(
            client.orchestrator.store.quota_state, "discord", str(interaction.user.id), tier
        )
        moderator = (
            "\n-# As a moderator you are not held to these limits."
            if is_moderator(interaction, settings.discord)
            else ""
        )
        await reply(
            interaction,
            text.usage(used.jobs, used.images, used.active, tier.max_concurrent, settings.limits.max_count)
            + "\n"
            + text.quota(state)
            + moderator,
        )

    @app_commands.command(name="settings", description="Your own defaults for /imagine")
    @app_commands.describe(
        model="Model to use when /imagine names none",
        aspect="Aspect ratio to use when /imagine gives none",
        steps="Sampling steps to use when /imagine gives none",
        private="Results only you see, unless /imagine says otherwise",
        reset="Forget all your defaults",
    )
    @app_commands.autocomplete(model=model_names)
    async def settings(
        interaction: discord.Interaction,
        model: Optional[str] = None,  # noqa: UP045
        aspect: Optional[Aspect] = None,  # noqa: UP045
        steps: Optional[app_commands.Range[int, 1, limits_max_steps]] = None,  # noqa: UP045
        private: Optional[bool] = None,  # noqa: UP045
        reset: bool = False,
    ) -> None:
        client = _client(interaction)
        await interaction.response.defer(ephemeral=True, thinking=True)
        store = client.orchestrator.store
        user_id = str(interaction.user.id)
        if model is not None and model not in client.settings.registry.names():
            await reply(interaction, text.unknown_model(model, client.settings.registry.names()))
            return
        current = {} if reset else await asyncio.to_thread(store.user_settings, "discord", user_id)
        changes = {"model": model, "aspect": aspect, "steps": steps, "private": private}
        updated = {**current, **{key: value for key, value in changes.items() if value is not None}}
        changed = reset or updated != current
        if changed:
            await asyncio.to_thread(store.save_user_settings, "discord", user_id, updated)
            client.forget_saved(user_id)
        await reply(interaction, text.user_settings(updated, changed=changed))

    @app_commands.command(name="help", description="What this bot does, its rules, and how to appeal")
    async def help_command(interaction: discord.Interaction) -> None:
        appeal = text.appeal_hint(_client(interaction).settings.discord.review_channel_id)
        await interaction.response.send_message(text.help_text(valid_parameters(), appeal), ephemeral=True)

    return [imagine, queue, cancel, info, settings, help_command]


async def on_command_error(interaction: discord.Interaction, error: app_commands.AppCommandError) -> None:
    """The one place a failed command turns into words for the user; never leave them "thinking"."""
    log.error("command %s failed", interaction.command.name if interaction.command else "?", exc_info=error)
    try:
        if interaction.response.is_done():
            await interaction.edit_original_response(content=text.command_error())
        else:
            await interaction.response.send_message(text.command_error(), ephemeral=True)
    except discord.HTTPException:
        log.warning("could not tell the user about the failed command")
