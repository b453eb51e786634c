"""`/mod`: bans, strikes, a member's record and their data-deletion request. Each checks that the caller
is a moderator (Discord only hides the group from others) and is recorded in the audit log."""

import asyncio
from datetime import timedelta
from typing import TYPE_CHECKING, Optional

import discord
from discord import app_commands

from bot.db.store import utcnow
from bot.discord import text
from bot.discord.commands import reply
from bot.discord.permissions import is_moderator

if TYPE_CHECKING:
    from bot.discord.client import ImagineClient

# No `from __future__ import annotations`: discord.py reads the option types from the annotations.


def _client(interaction: discord.Interaction) -> "ImagineClient":
    return interaction.client  # type: ignore[return-value]


async def _moderator(interaction: discord.Interaction, action: str, target: discord.User | discord.Member) -> bool:
    client = _client(interaction)
    await interaction.response.defer(ephemeral=True, thinking=True)
    if is_moderator(interaction, client.settings.discord):
        return True
    actor, guild = str(interaction.user.id), str(interaction.guild_id) if interaction.guild_id else None
    await client.orchestrator.member_action(
        actor, f"mod.{action}", allowed=False, user_id=str(target.id), guild_id=guild, detail=str(target.id)
    )
    await reply(interaction, text.not_moderator())
    return False


def mod_group() -> app_commands.Group:
    group = app_commands.Group(
        name="mod",
        description="Moderators: bans, strikes, a member's record in this server",
        default_permissions=discord.Permissions(manage_messages=True),
        guild_only=True,
    )

    @group.command(name="ban", description="Stop a member from making images here")
    @app_commands.describe(user="Who", hours="How long (leave empty for good)", reason="Why (the member is told)")
    async def ban(
        interaction: discord.Interaction,
        user: discord.User,
        reason: str,
        hours: Optional[app_commands.Range[float, 0.1, 8760.0]] = None,  # noqa: UP045
    ) -> None:
        if not await _moderator(interaction, "ban", user):
            return
        until = utcnow() + timedelta(hours=hours) if hours is not None else None
        guild = str(interaction.guild_id) if interaction.guild_id else None
        await _client(interaction).orchestrator.ban(
            "discord", str(user.id), actor_id=str(interaction.user.id), reason=reason, guild_id=guild, until=until
        )
        await reply(interaction, text.banned(str(user.id), until))

    @group.command(name="unban", description="Lift a member's ban here")
    async def unban(interaction: discord.Interaction, user: discord.User) -> None:
        if not await _moderator(interaction, "unban", user):
            return
        guild = str(interaction.guild_id) if interaction.guild_id else None
        lifted = await _client(interaction).orchestrator.unban(
            "discord", str(user.id), actor_id=str(interaction.user.id), guild_id=guild
        )
        await reply(interaction, text.unbanned(str(user.id), lifted))

    @group.command(name="strikes", description="A member's strikes in this server, or give one")
    @app_commands.describe(user="Who", add="Give a strike with this reason")
    async def strikes(
        interaction: discord.Interaction,
        user: discord.User,
        add: Optional[str] = None,  # noqa: UP045
    ) -> None:
        if not await _moderator(interaction, "strikes", user):
            return
        orchestrator = _client(interaction).orchestrator
        guild = str(interaction.guild_id) if interaction.guild_id else None
        ban = None
        if add:
            ban = await orchestrator.strike(
                "discord", str(user.id), actor_id=str(interaction.user.id), reason=add, guild_id=guild, job_id=None
            )
        rules = orchestrator.settings.moderation
        since = utcnow() - timedelta(days=rules.strike_window_days)
        listed = await asyncio.to_thread(
            orchestrator.store.strikes_since, "discord", str(user.id), since, guild_id=guild
        )
        await reply(
            interaction, text.strikes(str(user.id), listed, rules.strikes_to_ban, rules.strike_window_days, ban)
        )

    @group.command(name="history", description="A member's recent record in this server")
    async def history(interaction: discord.Interaction, user: discord.User) -> None:
        if not await _moderator(interaction, "history", user):
            return
        client = _client(interaction)
        guild = str(interaction.guild_id) if interaction.guild_id else None
        entries = await asyncio.to_thread(client.orchestrator.history, str(user.id), guild)
        await client.orchestrator.record_event(
            "mod.history", actor_id=str(interaction.user.id), user_id=str(user.id), guild_id=guild
        )
        await reply(interaction, text.history(str(user.id), entries))

    # A deletion request covers all of the member's data, so this one is not limited to the moderator's server.
    @group.command(
        name="purge", description="Delete a member's images and personal data in every server (their request)"
    )
    async def purge(interaction: discord.Interaction, user: discord.User) -> None:
        if not await _moderator(interaction, "purge", user):
            return
        result = await _client(interaction).orchestrator.purge_user(
            "discord", str(user.id), actor_id=str(interaction.user.id)
        )
        await reply(interaction, text.purged(str(user.id), result))

    return group
