"""LoRA styles: each `<name>.safetensors` in the styles folder is a style that requests ask for by name.

An optional `<name>.json` beside it gives the default strength and a description:
`{"strength": 0.8, "description": "watercolour, soft edges"}`. A style is loaded into a model once (as a
named adapter) and switched on and off afterwards; the base model is never reloaded. The folder is read on
every lookup, so styles added or replaced while the engine runs are picked up (a replaced file is reloaded);
a folder that does not exist yet is an empty library.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import re
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from engine.errors import InvalidRequest

if TYPE_CHECKING:
    from engine.pipeline import LoadedModel

log = logging.getLogger(__name__)

STYLE_SUFFIX = ".safetensors"
DEFAULT_STRENGTH = 1.0
MAX_STRENGTH = 2.0
MAX_LOADED_STYLES = 8


@dataclass(frozen=True)
class Style:
    name: str
    path: Path
    strength: float = DEFAULT_STRENGTH
    description: str = ""


def _adapter_name(style: str) -> str:
    # peft keeps adapters in ModuleDicts, whose keys may not contain "."; the hash keeps "a.b" and "a_b" apart.
    readable = re.sub(r"\W", "_", style)[:40]
    return f"style_{readable}_{hashlib.sha1(style.encode()).hexdigest()[:8]}"


def _read_sidecar(path: Path) -> tuple[float, str]:
    sidecar = path.with_suffix(".json")
    if not sidecar.is_file():
        return DEFAULT_STRENGTH, ""
    try:
        data: Any = json.loads(sidecar.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        log.warning("style sidecar %s is unreadable (%s); using the defaults", sidecar, exc)
        return DEFAULT_STRENGTH, ""
    if not isinstance(data, dict):
        log.warning('style sidecar %s must hold an object like {"strength": 0.8}; using the defaults', sidecar)
        return DEFAULT_STRENGTH, ""
    strength = data.get("strength", DEFAULT_STRENGTH)
    if isinstance(strength, bool) or not isinstance(strength, int | float) or not 0 <= strength <= MAX_STRENGTH:
        log.warning(
            "style sidecar %s: strength must be a number from 0 to %s (got %r)", sidecar, MAX_STRENGTH, strength
        )
        strength = DEFAULT_STRENGTH
    description = data.get("description", "")
    if not isinstance(description, str):
        log.warning("style sidecar %s: description must be text (got %r)", sidecar, description)
        description = ""
    return float(strength), description


def _check_strength(strength: float) -> float:
    weight = float(strength)
    if not math.isfinite(weight) or not 0 <= weight <= MAX_STRENGTH:
        raise InvalidRequest("style_strength", f"The style strength must be from 0 to {MAX_STRENGTH} (got {weight}).")
    return weight


def takes_lora(pipe: Any) -> bool:
    """Whether `pipe` can load LoRA files at all (diffusers' LoRA loader mixins; the demo pipeline has SD's)."""
    return callable(getattr(pipe, "load_lora_weights", None))


def clear_style(model: LoadedModel) -> None:
    """Switch every LoRA off, so the model draws exactly what the base model draws. Loaded adapters stay."""
    if model.active_style is None:
        return
    model.pipe.disable_lora()
    model.active_style = None


class StyleLibrary:
    """The styles in `directory`, and applying one to a loaded model."""

    def __init__(self, directory: str | Path, *, max_loaded: int = MAX_LOADED_STYLES) -> None:
        self.directory = Path(directory).expanduser()
        if self.directory.exists() and not self.directory.is_dir():
            raise NotADirectoryError(f"The styles folder {self.directory} is a file: point the setting at a folder.")
        if not self.directory.exists():
            log.info("styles folder %s does not exist (yet): no styles until it does", self.directory)
        if max_loaded < 1:
            raise ValueError(f"max_loaded must be at least 1 (got {max_loaded})")
        self.max_loaded = max_loaded

    def describe(self) -> list[Style]:
        """Every style, sorted by name."""
        styles: list[Style] = []
        if not self.directory.is_dir():
            return styles
        for path in sorted(self.directory.glob("*" + STYLE_SUFFIX)):
            if path.is_file():
                strength, description = _read_sidecar(path)
                styles.append(Style(path.stem, path, strength, description))
        return styles

    def names(self) -> list[str]:
        return [style.name for style in self.describe()]

    def get(self, name: str) -> Style:
        """The style called `name`, or `InvalidRequest` listing the choices."""
        styles = self.describe()
        for style in styles:
            if style.name == name:
                return style
        if not styles:
            raise InvalidRequest("style", f"There is no style called {name!r}: no styles are installed.")
        choices = ", ".join(style.name for style in styles)
        raise InvalidRequest("style", f"There is no style called {name!r}. Choose one of: {choices}.")

    def check(self, style: str, strength: float | None = None) -> None:
        """Raise `InvalidRequest` unless `style` exists and `strength` (when given) is in range. Loads nothing."""
        entry = self.get(style)
        _check_strength(entry.strength if strength is None else strength)

    def apply(self, model: LoadedModel, style: str | None, strength: float | None = None) -> None:
        """Make `model` draw in `style` at `strength` (None: the style's default); style None: no style at all.

        The first use of a style on a model loads it (`load_lora_weights`); after that switching is cheap
        (`set_adapters`). At most `max_loaded` styles stay loaded per model, least recently used out first.
        Note for compiled models: each change of adapters makes torch.compile recompile the denoiser.
        """
        if style is None:
            clear_style(model)
            return
        entry = self.get(style)
        weight = _check_strength(entry.strength if strength is None else strength)
        if not takes_lora(model.pipe):
            raise InvalidRequest(
                "style",
                f"The style {entry.name!r} cannot be applied to the model {model.name!r} "
                f"({type(model.pipe).__name__}): styles are LoRAs and this model takes none. Leave the style out, "
                "or pick a Stable Diffusion model.",
            )
        adapter = self._ensure_loaded(model, entry)
        if model.active_style == (entry.name, weight):
            return
        pipe = model.pipe
        pipe.enable_lora()  # undoes clear_style's disable_lora; a no-op otherwise
        pipe.set_adapters([adapter], adapter_weights=[weight])
        model.active_style = (entry.name, weight)

    def _ensure_loaded(self, model: LoadedModel, entry: Style) -> str:
        stat = entry.path.stat()
        fingerprint = (stat.st_mtime_ns, stat.st_size)
        pipe = model.pipe
        known = model.adapters.get(entry.name)
        if known is not None:
            if known[1] == fingerprint:
                model.adapters.move_to_end(entry.name)
                return known[0]
            log.info("style %s changed on disk; reloading it into %s", entry.name, model.name)
            self._drop(model, entry.name)
        while len(model.adapters) >= self.max_loaded:
            self._drop(model, next(iter(model.adapters)))
        adapter = _adapter_name(entry.name)
        try:
            with warnings.catch_warnings():
                # peft warns whenever a second adapter joins a model; several named adapters is the design here.
                warnings.filterwarnings(
                    "ignore", message="Already found a `peft_config` attribute", category=UserWarning
                )
                pipe.load_lora_weights(str(entry.path), adapter_name=adapter)
        except Exception as exc:
            self._forget_partial(model, adapter)
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise InvalidRequest(
                "style", f"The style {entry.name!r} does not fit the model {model.name!r} ({first}). Pick another."
            ) from exc
        model.adapters[entry.name] = (adapter, fingerprint)
        log.info("style %s loaded into %s", entry.name, model.name)
        return adapter

    @staticmethod
    def _drop(model: LoadedModel, name: str) -> None:
        adapter, _ = model.adapters.pop(name)
        if model.active_style is not None and model.active_style[0] == name:
            clear_style(model)
        with warnings.catch_warnings():
            # Deleting the adapter peft last activated makes it activate another one, and warn. The LoRA layers
            # are off (clear_style) or about to be set explicitly (apply), so which one it picks never shows.
            warnings.filterwarnings(
                "ignore", message="Adapter .* was active which is now deleted", category=UserWarning
            )
            model.pipe.delete_adapters([adapter])

    @staticmethod
    def _forget_partial(model: LoadedModel, adapter: str) -> None:
        """A load that failed half way may have left layers behind; take them out again (best effort)."""
        try:
            if adapter in {name for names in model.pipe.get_list_adapters().values() for name in names}:
                model.pipe.delete_adapters([adapter])
        except Exception:  # the original error is the one worth reporting
            log.debug("could not remove the partly loaded adapter %s", adapter, exc_info=True)
