"""The slash commands. Each turns an interaction into a plain request for the orchestrator."""

# No `from __future__ import annotations`: discord.py reads the option types (with their limits,
# taken from the settings at start-up) from the evaluated annotations of the callbacks below.

import logging
from typing import Optional

import discord
from discord import app_commands

from bot.discord import text
from bot.discord.reporter import InteractionReporter, delivery_data
from bot.orchestrator import Orchestrator
from bot.requests import ImagineRequest
from engine.jobs import MAX_SEED
from engine.limits import Limits

log = logging.getLogger(__name__)


def is_age_restricted(channel: object) -> bool:
    """Discord's age-restricted ("NSFW") flag; threads inherit their parent's."""
    is_nsfw = getattr(channel, "is_nsfw", None)
    return bool(is_nsfw()) if callable(is_nsfw) else False


def imagine_command(client: discord.Client, orchestrator: Orchestrator, limits: Limits) -> app_commands.Command:  # type: ignore[type-arg]
    @app_commands.command(name="imagine", description="Create images from a text prompt")
    @app_commands.describe(
        prompt="What to draw",
        negative="What to keep out of the image",
        seed=f"A number from 0 to {MAX_SEED}: the same seed and prompt give the same image",
        count=f"How many images (1 to {limits.max_count})",
        steps=f"Sampling steps (1 to {limits.max_steps}); leave empty for the model's default",
    )
    async def imagine(
        interaction: discord.Interaction,
        prompt: str,
        negative: Optional[str] = None,  # noqa: UP045 - discord.py reads this annotation at run time
        seed: Optional[app_commands.Range[int, 0, MAX_SEED]] = None,  # noqa: UP045
        count: Optional[app_commands.Range[int, 1, limits.max_count]] = None,  # noqa: UP045
        steps: Optional[app_commands.Range[int, 1, limits.max_steps]] = None,  # noqa: UP045
    ) -> None:
        # Acknowledge first: Discord gives three seconds, and everything below may take longer.
        await interaction.response.defer(thinking=True)
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
            nsfw_channel=is_age_restricted(interaction.channel),
            delivery=delivery_data(interaction),
        )
        await orchestrator.submit(request, InteractionReporter(client, interaction))

    return imagine


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
