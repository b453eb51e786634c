"""One base error for the bot package; each message is written for the person who must act on it."""

from __future__ import annotations


class ImagineError(Exception):
    """Base of every error the bot raises on purpose. `exit_code` is what the command line returns."""

    exit_code = 1


class ConfigError(ImagineError):
    """A setting is missing or invalid. The message names the setting and what it accepts."""

    exit_code = 2


class UsageError(ImagineError):
    """A command-line argument is invalid."""

    exit_code = 2


class DatabaseError(ImagineError):
    """The database could not be reached or migrated."""
