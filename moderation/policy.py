"""What each guild refuses: content categories, the adult opt-in and classifier thresholds.

The categories follow OpenAI's moderation set. Two rules hold whatever a guild configures:

- sexual content involving minors (`sexual/minors`) is refused everywhere, with no override;
- adult sexual content (`sexual`) is allowed only where the guild opted in (`allow_adult`) *and* the channel
  is age-restricted (Discord's "nsfw" flag). `Policy.effective(nsfw_channel)` gives the policy for a channel.

A `PolicyBook` holds the default policy and per-guild overrides, built from a plain mapping:

    {"default": {"blocked": [...], "classifier_thresholds": {"hate": 0.9}},
     "guilds": {"123": {"allow_adult": true, "blocked": ["sexual/minors", "hate"]}}}

A guild entry changes only the fields it names; the rest come from the default.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, fields, replace
from types import MappingProxyType
from typing import Any

from moderation import ModerationError

CATEGORIES: tuple[str, ...] = (
    "sexual",
    "sexual/minors",
    "violence/graphic",
    "hate",
    "harassment",
    "self-harm",
    "illicit",
)
CATEGORY_LABELS: Mapping[str, str] = MappingProxyType(
    {
        "sexual": "sexual content",
        "sexual/minors": "sexual content involving minors",
        "violence/graphic": "graphic violence",
        "hate": "hateful content",
        "harassment": "harassment",
        "self-harm": "self-harm",
        "illicit": "dangerous or illicit activity",
    }
)
ALWAYS_BLOCKED = frozenset({"sexual/minors"})
"""Refused everywhere; no policy can lift these."""
ADULT = "sexual"
"""Lifted only by `allow_adult` in an age-restricted channel, never by leaving it out of `blocked`."""


class PolicyError(ModerationError, ValueError):
    """A policy setting is invalid; the message names the setting and what it accepts."""


def _check_categories(names: Iterable[str], where: str) -> frozenset[str]:
    if isinstance(names, str):
        raise PolicyError(f"{where} must be a list of category names, not the single string {names!r}.")
    chosen = frozenset(names)
    unknown = sorted(chosen - set(CATEGORIES))
    if unknown:
        raise PolicyError(
            f"{where}: unknown categor{'y' if len(unknown) == 1 else 'ies'} {', '.join(map(repr, unknown))}; "
            f"valid names are {', '.join(CATEGORIES)}."
        )
    return chosen


@dataclass(frozen=True)
class Policy:
    """The categories refused in one place. The default is strict: every category refused, no adult content.

    `blocked` is normalised on creation: `sexual/minors` is always in it, and `sexual` is in it unless
    `allow_adult` and `nsfw_channel` are both true; what a configuration says about those two is overruled.
    `classifier_thresholds` overrides the shipped model's calibrated probability threshold per category
    (higher means the classifier alone refuses less often); `use_classifier=False` turns that layer off.
    """

    blocked: frozenset[str] = frozenset(CATEGORIES)
    allow_adult: bool = False
    nsfw_channel: bool = False
    use_classifier: bool = True
    classifier_thresholds: Mapping[str, float] = field(default_factory=lambda: MappingProxyType({}), hash=False)
    # The channels (by id) where requests are taken; empty means every channel.
    channels: frozenset[str] = frozenset()

    def __post_init__(self) -> None:
        blocked = _check_categories(self.blocked, "blocked") | ALWAYS_BLOCKED
        blocked = blocked - {ADULT} if self.adult_allowed else blocked | {ADULT}
        object.__setattr__(self, "blocked", blocked)
        thresholds = dict(self.classifier_thresholds)
        _check_categories(thresholds, "classifier_thresholds")
        for name, value in thresholds.items():
            if isinstance(value, bool) or not isinstance(value, int | float) or not 0.0 < value <= 1.0:
                raise PolicyError(
                    f"classifier_thresholds[{name!r}] must be a number above 0 and at most 1, not {value!r}."
                )
        object.__setattr__(
            self, "classifier_thresholds", MappingProxyType({k: float(v) for k, v in thresholds.items()})
        )

    @property
    def adult_allowed(self) -> bool:
        """Whether adult sexual content passes here: the guild opted in and the channel is age-restricted."""
        return self.allow_adult and self.nsfw_channel

    def blocks(self, category: str) -> bool:
        return category in self.blocked

    def allows_channel(self, channel_id: str | int | None) -> bool:
        return not self.channels or (channel_id is not None and str(channel_id) in self.channels)

    def effective(self, nsfw_channel: bool) -> Policy:
        """This guild's policy in a channel that is (or is not) marked age-restricted."""
        return replace(self, nsfw_channel=nsfw_channel)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], *, base: Policy | None = None, where: str = "policy") -> Policy:
        """A policy from plain configuration values; keys left out keep `base`'s values (or the defaults)."""
        if not isinstance(data, Mapping):
            raise PolicyError(f"{where} must be a table of settings, not {type(data).__name__}.")
        known = {f.name for f in fields(cls)} - {"nsfw_channel"}
        unknown = sorted(set(data) - known)
        if unknown:
            raise PolicyError(
                f"{where}: unknown setting(s) {', '.join(map(repr, unknown))}; "
                f"valid settings are {', '.join(sorted(known))}."
            )
        changes: dict[str, Any] = {}
        if "blocked" in data:
            changes["blocked"] = _check_categories(data["blocked"], f"{where}.blocked")
        for flag in ("allow_adult", "use_classifier"):
            if flag in data:
                if not isinstance(data[flag], bool):
                    raise PolicyError(f"{where}.{flag} must be true or false, not {data[flag]!r}.")
                changes[flag] = data[flag]
        if "channels" in data:
            channels = data["channels"]
            if not isinstance(channels, list) or not all(str(c).strip().isdigit() for c in channels):
                raise PolicyError(f'{where}.channels must be a list of channel ids, like ["1234567890"].')
            changes["channels"] = frozenset(str(c).strip() for c in channels)
        if "classifier_thresholds" in data:
            thresholds = data["classifier_thresholds"]
            if not isinstance(thresholds, Mapping):
                raise PolicyError(f"{where}.classifier_thresholds must be a table of category = number.")
            changes["classifier_thresholds"] = {**(base.classifier_thresholds if base else {}), **thresholds}
        try:
            return replace(base, **changes) if base is not None else cls(**changes)
        except PolicyError as error:
            raise PolicyError(f"{where}: {error}") from None


@dataclass(frozen=True)
class PolicyBook:
    """The default policy and the guilds that differ from it."""

    default: Policy = field(default_factory=Policy)
    guilds: Mapping[str, Policy] = field(default_factory=lambda: MappingProxyType({}), hash=False)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> PolicyBook:
        if not isinstance(data, Mapping):
            raise PolicyError(f"the moderation policy must be a table, not {type(data).__name__}.")
        unknown = sorted(set(data) - {"default", "guilds"})
        if unknown:
            raise PolicyError(
                f"moderation policy: unknown key(s) {', '.join(map(repr, unknown))}; valid keys are default and guilds."
            )
        default = Policy.from_dict(data.get("default", {}), where="default")
        guilds_data = data.get("guilds", {})
        if not isinstance(guilds_data, Mapping):
            raise PolicyError("guilds must be a table of guild id = settings.")
        guilds = {
            str(guild): Policy.from_dict(settings, base=default, where=f"guilds.{guild}")
            for guild, settings in guilds_data.items()
        }
        return cls(default, MappingProxyType(guilds))

    def for_guild(self, guild_id: str | int | None) -> Policy:
        """The guild's policy for an ordinary channel (direct messages and unknown guilds get the default)."""
        if guild_id is None:
            return self.default
        return self.guilds.get(str(guild_id), self.default)

    def for_channel(self, guild_id: str | int | None, *, nsfw_channel: bool) -> Policy:
        return self.for_guild(guild_id).effective(nsfw_channel)
