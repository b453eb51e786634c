"""Fair use: a token bucket of images per member, jobs at a time, a daily GPU-time budget, a daily cap per
server, and tiers (by Discord role, or any group a front end names) that change those numbers.

Pure arithmetic: the caller holds the state (in the database, under a lock, so that several bot processes
agree) and asks `admit` whether one more request fits.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

from moderation import ModerationError


class QuotaError(ModerationError, ValueError):
    """The quota configuration is invalid; the message names the setting."""


@dataclass(frozen=True)
class Tier:
    """What one member may use. `burst` images can be asked for at once; the bucket refills at
    `refill_per_hour` images an hour. `daily_gpu_seconds` None means no daily budget. `weight` is the
    member's share of the engines when several wait (2 = about twice the turns of weight 1)."""

    name: str = "default"
    burst: float = 8.0
    refill_per_hour: float = 60.0
    max_concurrent: int = 2
    daily_gpu_seconds: float | None = None
    weight: int = 1
    role_ids: tuple[str, ...] = ()


@dataclass(frozen=True)
class QuotaPolicy:
    default: Tier = field(default_factory=Tier)
    tiers: tuple[Tier, ...] = ()
    guild_daily_images: int | None = None  # per server and UTC day; None: no cap

    def tier_for(self, role_ids: Iterable[str]) -> Tier:
        """The most generous tier (highest weight, then largest burst) any of `role_ids` is in, else the default."""
        held = set(role_ids)
        matching = [tier for tier in self.tiers if held & set(tier.role_ids)]
        if not matching:
            return self.default
        return max(matching, key=lambda tier: (tier.weight, tier.burst))

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], *, max_concurrent: int) -> QuotaPolicy:
        """From the `[quota]` table: burst, refill_per_hour, daily_gpu_seconds, guild_daily_images, and
        `[quota.tiers.NAME]` tables with role_ids plus any of the per-member numbers and weight."""
        known = {"burst", "refill_per_hour", "daily_gpu_seconds", "guild_daily_images", "tiers", "max_concurrent"}
        _no_unknown(data, known, "quota")
        default = _tier("default", data, Tier(max_concurrent=max_concurrent), "quota")
        tiers_data = data.get("tiers", {})
        if not isinstance(tiers_data, Mapping):
            raise QuotaError("quota.tiers must be a table of tier name = settings.")
        tiers = []
        for name, settings in tiers_data.items():
            where = f"quota.tiers.{name}"
            if not isinstance(settings, Mapping):
                raise QuotaError(f"{where} must be a table of settings.")
            _no_unknown(settings, {*known - {"tiers", "guild_daily_images"}, "weight", "role_ids"}, where)
            roles = settings.get("role_ids", [])
            if not isinstance(roles, list) or not roles or not all(str(r).strip().isdigit() for r in roles):
                raise QuotaError(f"{where}.role_ids must be a non-empty list of role ids.")
            tier = _tier(str(name), settings, replace(default, name=str(name)), where)
            tiers.append(replace(tier, role_ids=tuple(str(r).strip() for r in roles)))
        guild_cap = data.get("guild_daily_images")
        if guild_cap is not None and (isinstance(guild_cap, bool) or not isinstance(guild_cap, int) or guild_cap < 1):
            raise QuotaError("quota.guild_daily_images must be a whole number of at least 1.")
        return cls(default, tuple(tiers), guild_cap)


def _no_unknown(data: Mapping[str, Any], known: set[str], where: str) -> None:
    unknown = sorted(set(data) - known)
    if unknown:
        raise QuotaError(
            f"{where}: unknown setting(s) {', '.join(map(repr, unknown))}; valid: {', '.join(sorted(known))}."
        )


def _number(data: Mapping[str, Any], key: str, where: str, *, minimum: float) -> float | None:
    if key not in data:
        return None
    value = data[key]
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) or value < minimum:
        raise QuotaError(f"{where}.{key} must be a number of at least {minimum:g}, not {value!r}.")
    return float(value)


def _tier(name: str, data: Mapping[str, Any], base: Tier, where: str) -> Tier:
    changes: dict[str, Any] = {"name": name}
    for key, minimum in (("burst", 1.0), ("refill_per_hour", 0.0), ("daily_gpu_seconds", 1.0)):
        value = _number(data, key, where, minimum=minimum)
        if value is not None:
            changes[key] = value
    for key in ("max_concurrent", "weight"):
        value = _number(data, key, where, minimum=1)
        if value is not None:
            if value != int(value):
                raise QuotaError(f"{where}.{key} must be a whole number.")
            changes[key] = int(value)
    return replace(base, **changes)


@dataclass(frozen=True)
class Usage:
    """A member's state as stored: the bucket as last written, and what they used today."""

    tokens: float | None  # None: never seen, a full bucket
    updated_at: datetime | None
    active_jobs: int
    gpu_seconds_today: float
    guild_images_today: int = 0


@dataclass(frozen=True)
class Admission:
    allowed: bool
    reason: str | None  # rate, concurrent, gpu_budget or guild_cap when refused
    tokens: float  # the bucket after this request (unchanged when refused)
    retry_after_seconds: float | None = None

    @property
    def refused(self) -> bool:
        return not self.allowed


def tokens_now(tier: Tier, usage: Usage, now: datetime) -> float:
    if usage.tokens is None or usage.updated_at is None:
        return tier.burst
    elapsed_hours = max(0.0, (now - usage.updated_at).total_seconds() / 3600)
    return min(tier.burst, usage.tokens + elapsed_hours * tier.refill_per_hour)


def seconds_until(tier: Tier, tokens: float, wanted: float) -> float | None:
    """How long until the bucket holds `wanted` tokens; None if it never refills."""
    if tokens >= wanted:
        return 0.0
    if tier.refill_per_hour <= 0:
        return None
    return (wanted - tokens) / tier.refill_per_hour * 3600


def admit(tier: Tier, usage: Usage, images: int, now: datetime, *, guild_daily_images: int | None = None) -> Admission:
    """Whether a request for `images` images fits, checked in the order a member can act on: jobs at a time,
    the daily GPU budget, the server's daily cap, then the bucket (a request bigger than the whole bucket is
    let through when the bucket is full, so a small tier can still ask for its largest allowed count)."""
    tokens = tokens_now(tier, usage, now)
    if usage.active_jobs >= tier.max_concurrent:
        return Admission(False, "concurrent", tokens)
    if tier.daily_gpu_seconds is not None and usage.gpu_seconds_today >= tier.daily_gpu_seconds:
        return Admission(False, "gpu_budget", tokens, _seconds_to_midnight(now))
    if guild_daily_images is not None and usage.guild_images_today + images > guild_daily_images:
        return Admission(False, "guild_cap", tokens, _seconds_to_midnight(now))
    needed = min(float(images), tier.burst)
    if tokens + 1e-9 < needed:
        return Admission(False, "rate", tokens, seconds_until(tier, tokens, needed))
    return Admission(True, None, max(0.0, tokens - images))


def _seconds_to_midnight(now: datetime) -> float:
    midnight = now.replace(hour=0, minute=0, second=0, microsecond=0)
    return 86400 - (now - midnight).total_seconds()
