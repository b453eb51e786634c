"""One typed configuration object, read once from `imagine.toml` and `IMAGINE_*` environment variables.

Every setting has a place in the file (`[section] key`) and an environment name
(`IMAGINE_SECTION_KEY`, or `IMAGINE_KEY` for top-level settings); the environment wins.
`load_settings(path, environ)` takes the environment as a mapping so tests pass a dict.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import platformdirs

from bot.errors import ConfigError
from engine.limits import Limits
from engine.options import EngineOptions
from engine.registry import SCHEDULERS, SLD_LEVELS, ModelRegistry, ModelSpec
from moderation.policy import PolicyBook, PolicyError
from moderation.quota import QuotaError, QuotaPolicy

DEFAULT_MODEL = "stabilityai/sd-turbo"
DEFAULT_API_URL = "https://discord.com/api/v10"
DEFAULT_GATEWAY_URL = "wss://gateway.discord.gg/"
CONFIG_ENV = "IMAGINE_CONFIG"
DEFAULT_CONFIG_FILE = "imagine.toml"


class Secret:
    """A value that must never be printed: `repr` and `str` hide it; `reveal()` hands it over."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "Secret('**********')"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)


@dataclass(frozen=True)
class DiscordSettings:
    token: Secret | None = None
    api_url: str = DEFAULT_API_URL
    gateway_url: str = DEFAULT_GATEWAY_URL
    # Commands synced to these guilds appear at once; global commands can take a while to show.
    guild_ids: tuple[int, ...] = ()
    # Members with one of these roles, or with Discord's Manage Messages permission, are moderators.
    moderator_role_ids: tuple[int, ...] = ()
    # Where reported images go for moderators to look at; unset: reports are only recorded.
    review_channel_id: int | None = None

    def require_token(self) -> Secret:
        if self.token is None or not self.token.reveal().strip():
            raise ConfigError(
                "IMAGINE_DISCORD_TOKEN is not set: create a bot at https://discord.com/developers/applications, "
                "then set IMAGINE_DISCORD_TOKEN (or `token` under [discord] in imagine.toml)."
            )
        return self.token


@dataclass(frozen=True)
class BotSettings:
    max_jobs_per_user: int = 2
    progress_interval_seconds: float = 1.0
    watchdog_seconds: float = 60.0
    allow_direct_messages: bool = False


@dataclass(frozen=True)
class EngineSettings:
    device: str = "auto"
    dtype: str = "auto"
    channels_last: bool = True
    compile: bool = False
    offload: str = "none"
    vae_tiling: str = "auto"
    max_batch_images: int | None = None
    max_loaded_models: int = 1
    warmup: bool = True
    previews: bool = True
    styles_dir: str | None = None
    heartbeat_seconds: float = 2.0
    lease_seconds: float = 30.0
    max_attempts: int = 3
    hang_seconds: float = 180.0
    # The engine yields the CPU to the bot (Unix niceness 0-19): where both share a machine, a busy engine would
    # otherwise delay the bot's acknowledgements. It costs the engine nothing when the CPU is not contended.
    nice: int = 10


DEFAULT_SAFETY_NEGATIVE = "nsfw, nudity, naked, sexual, gore, blood, violence"
DEFAULT_IMAGE_CLASSIFIERS = ("moderation.image_gate:NudeNetClassifier",)


@dataclass(frozen=True)
class SafetySettings:
    # Added to every negative prompt where sexual content is not allowed.
    negative_prompt: str = DEFAULT_SAFETY_NEGATIVE
    image_gate: bool = True
    image_classifiers: tuple[str, ...] = DEFAULT_IMAGE_CLASSIFIERS
    image_action: str = "review"  # review (held for moderators) or block
    # Label -> score at which the image gate trips (None: recorded, never trips); on top of the gate's defaults.
    image_thresholds: Mapping[str, float | None] = field(default_factory=dict, hash=False)
    c2pa_certificate: str | None = None  # PEM chain; with c2pa_key, images are signed with a C2PA manifest
    c2pa_key: str | None = None


@dataclass(frozen=True)
class ModerationSettings:
    # Escalation: this many strikes within the window bans for `ban_hours`; a ban after an earlier ban is permanent.
    strikes_to_ban: int = 3
    strike_window_days: int = 30
    ban_hours: float = 24.0
    appeals_per_day: int = 3
    # Images (not their hashes or the audit log) are deleted this many days after they were made; 0 keeps them.
    image_retention_days: int = 0


@dataclass(frozen=True)
class Settings:
    data_dir: Path
    database_url: str
    model: str = DEFAULT_MODEL
    queue_url: str = "local"
    log_level: str = "INFO"
    discord: DiscordSettings = field(default_factory=DiscordSettings)
    bot: BotSettings = field(default_factory=BotSettings)
    engine: EngineSettings = field(default_factory=EngineSettings)
    limits: Limits = field(default_factory=Limits)
    registry: ModelRegistry = field(default_factory=lambda: ModelRegistry.single(DEFAULT_MODEL))
    safety: SafetySettings = field(default_factory=SafetySettings)
    policies: PolicyBook = field(default_factory=PolicyBook)
    quota: QuotaPolicy = field(default_factory=QuotaPolicy)
    moderation: ModerationSettings = field(default_factory=ModerationSettings)
    source: Path | None = None

    @property
    def images_dir(self) -> Path:
        return self.data_dir / "images"

    @property
    def styles_dir(self) -> Path:
        return Path(self.engine.styles_dir).expanduser() if self.engine.styles_dir else self.data_dir / "styles"

    def engine_options(self) -> EngineOptions:
        e = self.engine
        return EngineOptions(
            device=e.device,
            dtype=e.dtype,
            channels_last=e.channels_last,
            compile=e.compile,
            offload=e.offload,
            vae_tiling=e.vae_tiling,
            max_batch_images=e.max_batch_images,
            max_loaded_models=e.max_loaded_models,
            warmup=e.warmup,
            previews=e.previews,
            styles_dir=self.styles_dir,
        )

    @property
    def queue_path(self) -> Path:
        """Where the local queue keeps its jobs when `queue_url` is `local`."""
        return self.data_dir / "queue.sqlite3"


def _parse_int(value: object) -> int:
    if isinstance(value, bool):
        raise ValueError
    if isinstance(value, int):
        return value
    return int(str(value).strip())


def _parse_positive_int(value: object) -> int:
    number = _parse_int(value)
    if number < 1:
        raise ValueError
    return number


def _parse_count(value: object) -> int:
    number = _parse_int(value)
    if not 1 <= number <= 10:
        raise ValueError
    return number


def _parse_niceness(value: object) -> int:
    number = _parse_int(value)
    if not 0 <= number <= 19:
        raise ValueError
    return number


def _parse_float(value: object) -> float:
    if isinstance(value, bool):
        raise ValueError
    return float(value) if isinstance(value, int | float) else float(str(value).strip())


def _parse_positive_float(value: object) -> float:
    number = _parse_float(value)
    if not number > 0:
        raise ValueError
    return number


def _parse_bool(value: object) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off"):
        return False
    raise ValueError


def _choice(*choices: str) -> Callable[[object], str]:
    def parse(value: object) -> str:
        text = _parse_str(value).lower()
        if text not in choices:
            raise ValueError
        return text

    return parse


def _parse_str(value: object) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ValueError
    return value.strip()


def _parse_url(schemes: tuple[str, ...]) -> Callable[[object], str]:
    def parse(value: object) -> str:
        text = _parse_str(value)
        parts = urlsplit(text)
        if parts.scheme not in schemes or not parts.netloc:
            raise ValueError
        return text

    return parse


def _parse_queue_url(value: object) -> str:
    text = _parse_str(value)
    if text == "local" or urlsplit(text).scheme in ("redis", "rediss"):
        return text
    raise ValueError


def _parse_database_url(value: object) -> str:
    text = _parse_str(value)
    scheme = urlsplit(text).scheme
    if scheme.split("+")[0] not in ("sqlite", "postgresql", "postgres"):
        raise ValueError
    return text


def _parse_list(value: object) -> tuple[str, ...]:
    items = value if isinstance(value, list) else [p for p in str(value).split(",")]
    return tuple(_parse_str(item) for item in items if str(item).strip())


def _parse_ids(value: object) -> tuple[int, ...]:
    items = value if isinstance(value, list) else [p for p in str(value).split(",") if p.strip()]
    return tuple(_parse_positive_int(item) for item in items)


class _BadEntry(ValueError):
    """One entry of a table setting is invalid: the error names that entry, not the whole table."""

    def __init__(self, key: object, value: object, accepts: str) -> None:
        super().__init__(key)
        self.key = key
        self.value = value
        self.accepts = accepts


_THRESHOLD_ACCEPTS = "a label with a threshold above 0 and at most 1, or `off`"


def _parse_threshold(value: object) -> float | None:
    if isinstance(value, str) and value.strip().lower() == "off":
        return None
    number = _parse_float(value)
    if not 0 < number <= 1:
        raise ValueError
    return number


def _parse_thresholds(value: object) -> dict[str, float | None]:
    """A TOML table {label = threshold}, or from the environment "label=0.8,other=off"."""
    if isinstance(value, dict):
        items: list[tuple[object, object]] = list(value.items())
    elif isinstance(value, str):
        items = []
        for part in (p for p in value.split(",") if p.strip()):
            name, sep, text = part.rpartition("=")  # rpartition: a label may itself contain "="
            items.append((name.strip(), text) if sep else (part.strip(), ""))
    else:
        raise ValueError
    thresholds: dict[str, float | None] = {}
    for key, number in items:
        if not isinstance(key, str) or not key.strip():
            raise _BadEntry(key, number, _THRESHOLD_ACCEPTS)
        try:
            thresholds[key.strip()] = _parse_threshold(number)
        except (ValueError, TypeError):
            raise _BadEntry(key, number, _THRESHOLD_ACCEPTS) from None
    return thresholds


def _parse_device(value: object) -> str:
    text = _parse_str(value).lower()
    if text not in ("auto", "cpu", "cuda", "mps") and not text.startswith("cuda:"):
        raise ValueError
    return text


def _parse_log_level(value: object) -> str:
    text = _parse_str(value).upper()
    if text not in ("DEBUG", "INFO", "WARNING", "ERROR"):
        raise ValueError
    return text


@dataclass(frozen=True)
class _Option:
    section: str | None
    key: str
    parse: Callable[[object], Any]
    accepts: str

    @property
    def env(self) -> str:
        parts = [self.section, self.key] if self.section else [self.key]
        return "IMAGINE_" + "_".join(parts).upper()

    @property
    def where(self) -> str:
        return f"[{self.section}] {self.key}" if self.section else self.key


_OPTIONS = (
    _Option(None, "model", _parse_str, "a diffusers model id such as stabilityai/sd-turbo, or a local folder"),
    _Option(None, "data_dir", _parse_str, "a folder path"),
    _Option(None, "database_url", _parse_database_url, "a sqlite:/// or postgresql:// URL"),
    _Option(None, "queue_url", _parse_queue_url, "`local` or a redis:// URL"),
    _Option(None, "log_level", _parse_log_level, "DEBUG, INFO, WARNING or ERROR"),
    _Option("discord", "token", _parse_str, "the bot token from the Discord developer portal"),
    _Option("discord", "api_url", _parse_url(("http", "https")), "an http(s) URL such as " + DEFAULT_API_URL),
    _Option("discord", "gateway_url", _parse_url(("ws", "wss")), "a ws(s) URL such as " + DEFAULT_GATEWAY_URL),
    _Option("discord", "guild_ids", _parse_ids, "a comma-separated list of server ids"),
    _Option("discord", "moderator_role_ids", _parse_ids, "a comma-separated list of role ids"),
    _Option("discord", "review_channel_id", _parse_positive_int, "a channel id"),
    _Option("bot", "allow_direct_messages", _parse_bool, "true or false"),
    _Option("bot", "max_jobs_per_user", _parse_positive_int, "a whole number of at least 1"),
    _Option("bot", "progress_interval_seconds", _parse_positive_float, "a number of seconds above 0"),
    _Option("bot", "watchdog_seconds", _parse_positive_float, "a number of seconds above 0"),
    _Option(None, "default_model", _parse_str, "the name of a model under [models.NAME]"),
    _Option("engine", "device", _parse_device, "auto, cpu, cuda, cuda:N or mps"),
    _Option("engine", "dtype", _choice("auto", "fp16", "bf16", "fp32"), "auto, fp16, bf16 or fp32"),
    _Option("engine", "channels_last", _parse_bool, "true or false"),
    _Option("engine", "compile", _parse_bool, "true or false"),
    _Option("engine", "offload", _choice("none", "model", "sequential"), "none, model or sequential"),
    _Option("engine", "vae_tiling", _choice("auto", "on", "off"), "auto, on or off"),
    _Option("engine", "max_batch_images", _parse_positive_int, "a whole number of at least 1"),
    _Option("engine", "max_loaded_models", _parse_positive_int, "a whole number of at least 1"),
    _Option("engine", "warmup", _parse_bool, "true or false"),
    _Option("engine", "previews", _parse_bool, "true or false"),
    _Option("engine", "styles_dir", _parse_str, "a folder of LoRA .safetensors files"),
    _Option("engine", "nice", _parse_niceness, "a whole number from 0 (no yielding) to 19"),
    _Option("engine", "hang_seconds", _parse_positive_float, "a number of seconds above 0"),
    _Option("engine", "heartbeat_seconds", _parse_positive_float, "a number of seconds above 0"),
    _Option("engine", "lease_seconds", _parse_positive_float, "a number of seconds above 0"),
    _Option("engine", "max_attempts", _parse_positive_int, "a whole number of at least 1"),
    _Option("safety", "negative_prompt", str, "text added to negative prompts (empty: none)"),
    _Option("safety", "image_gate", _parse_bool, "true or false"),
    _Option("safety", "image_classifiers", _parse_list, "a list of module:Class image classifiers"),
    _Option("safety", "image_action", _choice("review", "block"), "review or block"),
    _Option(
        "safety",
        "image_thresholds",
        _parse_thresholds,
        'a [safety.image_thresholds] table of label = threshold such as "violence/graphic" = 0.8 (above 0, at '
        "most 1, or `off`); in the environment violence/graphic=0.8,normal=off",
    ),
    _Option("safety", "c2pa_certificate", _parse_str, "a PEM certificate chain file"),
    _Option("safety", "c2pa_key", _parse_str, "a PEM private key file"),
    _Option("moderation", "strikes_to_ban", _parse_positive_int, "a whole number of at least 1"),
    _Option("moderation", "strike_window_days", _parse_positive_int, "a whole number of days"),
    _Option("moderation", "ban_hours", _parse_positive_float, "a number of hours above 0"),
    _Option("moderation", "appeals_per_day", _parse_int, "a whole number (0 turns appeals off)"),
    _Option("moderation", "image_retention_days", _parse_int, "a whole number of days (0 keeps images)"),
    _Option("limits", "max_count", _parse_count, "a whole number from 1 to 10 (a Discord message holds 10 files)"),
    _Option("limits", "max_steps", _parse_positive_int, "a whole number of at least 1"),
    _Option("limits", "min_size", _parse_positive_int, "a whole number of pixels"),
    _Option("limits", "max_size", _parse_positive_int, "a whole number of pixels"),
    _Option("limits", "max_prompt_chars", _parse_positive_int, "a whole number of at least 1"),
)


def _read_file(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as handle:
            return tomllib.load(handle)
    except FileNotFoundError:
        raise ConfigError(
            f"config file {path} does not exist: create it or leave out --config/IMAGINE_CONFIG."
        ) from None
    except tomllib.TOMLDecodeError as error:
        raise ConfigError(f"config file {path} is not valid TOML: {error}") from None
    except OSError as error:
        raise ConfigError(f"config file {path} cannot be read: {error.strerror}") from None


def _parse_guidance(value: object) -> float:
    number = _parse_float(value)
    if not 0 <= number <= 30:
        raise ValueError
    return number


_MODEL_KEYS: dict[str, Callable[[object], Any]] = {
    "source": _parse_str,
    "default_steps": _parse_positive_int,
    "default_guidance": _parse_guidance,
    "width": _parse_positive_int,
    "height": _parse_positive_int,
    "scheduler": _choice(*SCHEDULERS),
    "max_steps": _parse_positive_int,
    "max_size": _parse_positive_int,
    "config": _parse_str,
    "safe_latent_diffusion": _choice(*SLD_LEVELS),
}


def _models(data: Mapping[str, Any], path: Path) -> list[ModelSpec]:
    tables = data.get("models", {})
    if not isinstance(tables, dict):
        raise ConfigError(f"{path}: [models] must hold one table per model, e.g. [models.turbo].")
    specs = []
    for name, table in tables.items():
        if not isinstance(table, dict) or "source" not in table:
            raise ConfigError(f"{path}: [models.{name}] needs `source` (a hub id, folder or checkpoint file).")
        values: dict[str, Any] = {}
        for key, value in table.items():
            if key not in _MODEL_KEYS:
                raise ConfigError(f"{path}: unknown setting `{key}` under [models.{name}]; see the README.")
            try:
                values[key] = _MODEL_KEYS[key](value)
            except (ValueError, TypeError):
                raise ConfigError(f"{path}: [models.{name}] {key} = {value!r} is not valid.") from None
        specs.append(ModelSpec(name=name, **values))
    return specs


def _registry(models: list[ModelSpec], model: str | None, default: str | None) -> ModelRegistry:
    """[models.*] tables, with `model` (IMAGINE_MODEL) naming the default: a registered name, or a source
    that is served under its own name. With no tables, `model` alone (or SD-Turbo) is the registry."""
    names = [m.name for m in models]
    wanted = model or default
    if wanted and wanted not in names:
        if model is None:
            raise ConfigError(f"default_model = {default!r} is not one of the models: {', '.join(names)}.")
        models = [*models, ModelSpec(name=wanted, source=wanted)]
    if not models:
        return ModelRegistry.single(DEFAULT_MODEL)
    return ModelRegistry(tuple(models), default=wanted or models[0].name)


def _file_values(data: Mapping[str, Any], path: Path) -> dict[tuple[str | None, str], object]:
    known = {(o.section, o.key) for o in _OPTIONS}
    sections = {o.section for o in _OPTIONS if o.section}
    values: dict[tuple[str | None, str], object] = {}
    for key, value in data.items():
        if key in ("models", "policy", "quota"):
            continue
        if isinstance(value, dict) and key in sections:
            for inner, inner_value in value.items():
                if (key, inner) not in known:
                    raise ConfigError(f"{path}: unknown setting `{inner}` under [{key}]; see the README for the list.")
                values[(key, inner)] = inner_value
        elif (None, key) in known:
            values[(None, key)] = value
        else:
            raise ConfigError(f"{path}: unknown setting `{key}`; see the README for the list.")
    return values


def find_config_file(explicit: str | None, environ: Mapping[str, str]) -> Path | None:
    if explicit:
        return Path(explicit)
    if environ.get(CONFIG_ENV):
        return Path(environ[CONFIG_ENV])
    default = Path(DEFAULT_CONFIG_FILE)
    return default if default.is_file() else None


def load_settings(path: Path | None = None, environ: Mapping[str, str] | None = None) -> Settings:
    """Read settings from the file at `path` (if any) and the environment; raise `ConfigError` on bad values."""
    env = os.environ if environ is None else environ
    data = _read_file(path) if path else {}
    raw = _file_values(data, path) if path else {}
    parsed: dict[tuple[str | None, str], Any] = {}
    for option in _OPTIONS:
        from_env = env.get(option.env)
        if from_env is not None and from_env.strip() != "":
            value: object = from_env
            source = option.env
        elif (option.section, option.key) in raw:
            value = raw[(option.section, option.key)]
            source = f"{path}: {option.where}"
        else:
            continue
        try:
            parsed[(option.section, option.key)] = option.parse(value)
        except _BadEntry as bad:
            raise ConfigError(f"{source}: {bad.key!r} = {bad.value!r} is not valid: expected {bad.accepts}.") from None
        except (ValueError, TypeError):
            shown = "(hidden)" if option.key == "token" else repr(value)
            raise ConfigError(f"{source} = {shown} is not valid: expected {option.accepts}.") from None

    def section(name: str) -> dict[str, Any]:
        return {key: value for (sec, key), value in parsed.items() if sec == name}

    data_dir = Path(parsed.get((None, "data_dir")) or platformdirs.user_data_dir("imagine")).expanduser()
    database_url = parsed.get((None, "database_url")) or f"sqlite:///{data_dir / 'imagine.sqlite3'}"
    discord_values = section("discord")
    if "token" in discord_values:
        discord_values["token"] = Secret(discord_values["token"])
    limits = Limits(**section("limits"))
    registry = _registry(
        _models(data, path) if path else [], parsed.get((None, "model")), parsed.get((None, "default_model"))
    )
    if limits.min_size > limits.max_size:
        raise ConfigError("[limits] min_size must not be larger than max_size.")
    try:
        policies = PolicyBook.from_dict(data.get("policy", {})) if path else PolicyBook()
    except PolicyError as error:
        raise ConfigError(f"{path}: [policy] {error}") from None
    bot = BotSettings(**section("bot"))
    try:
        quota = QuotaPolicy.from_dict(data.get("quota", {}), max_concurrent=bot.max_jobs_per_user)
    except QuotaError as error:
        raise ConfigError(f"{path}: {error}") from None
    safety = SafetySettings(**section("safety"))
    if bool(safety.c2pa_certificate) != bool(safety.c2pa_key):
        raise ConfigError("[safety] c2pa_certificate and c2pa_key go together: set both or neither.")
    return Settings(
        data_dir=data_dir,
        database_url=database_url,
        model=registry.default,
        queue_url=parsed.get((None, "queue_url"), "local"),
        log_level=parsed.get((None, "log_level"), "INFO"),
        discord=DiscordSettings(**discord_values),
        bot=bot,
        engine=EngineSettings(**section("engine")),
        limits=limits,
        registry=registry,
        safety=safety,
        policies=policies,
        quota=quota,
        moderation=ModerationSettings(**section("moderation")),
        source=path,
    )


def describe_options() -> list[tuple[str, str, str]]:
    """(file key, environment variable, accepted values) for every setting, for `imagine config`."""
    return [(o.where, o.env, o.accepts) for o in _OPTIONS]
