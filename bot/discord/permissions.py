"""Who counts as a moderator in Discord terms."""

from __future__ import annotations

import discord

from bot.config import DiscordSettings


def is_moderator(interaction: discord.Interaction, settings: DiscordSettings) -> bool:
    """Members allowed to manage messages in the channel (or administrators), or holding a moderator role."""
    permissions = interaction.permissions
    if permissions.manage_messages or permissions.administrator:
        return True
    roles = getattr(interaction.user, "roles", ())
    return any(role.id in settings.moderator_role_ids for role in roles)


def role_ids(interaction: discord.Interaction) -> tuple[str, ...]:
    """The member's role ids (none in direct messages), for quota tiers."""
    return tuple(str(role.id) for role in getattr(interaction.user, "roles", ()))
