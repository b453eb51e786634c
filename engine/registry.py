"""The models an installation serves, by name, each with its own defaults and limits."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, replace

from engine.demo import DEMO_MODEL
from engine.errors import InvalidRequest
from engine.limits import Limits

SLD_LEVELS = ("off", "weak", "medium", "strong", "max")
SCHEDULERS = ("default", "euler", "euler_a", "ddim", "dpm++", "dpm++_sde", "unipc", "lcm", "pndm")


@dataclass(frozen=True)
class ModelSpec:
    """One servable model. `source` is a diffusers hub id, a local folder, or a single-file checkpoint
    (`.safetensors`/`.ckpt`). Unset defaults come from the model itself once loaded."""

    name: str
    source: str
    default_steps: int | None = None
    default_guidance: float | None = None
    width: int | None = None
    height: int | None = None
    scheduler: str = "default"
    max_steps: int | None = None
    max_size: int | None = None
    # For single-file checkpoints: a diffusers folder or hub id whose configs describe the architecture.
    config: str | None = None
    # Safe Latent Diffusion (SD 1.x/2.x only): steers generation away from unsafe concepts when guidance > 1.
    safe_latent_diffusion: str = "off"

    @property
    def single_file(self) -> bool:
        return self.source.lower().endswith((".safetensors", ".ckpt"))

    def limits(self, base: Limits) -> Limits:
        """The installation's limits, narrowed by this model's own."""
        return replace(
            base,
            max_steps=min(base.max_steps, self.max_steps or base.max_steps),
            max_size=min(base.max_size, self.max_size or base.max_size),
        )


@dataclass(frozen=True)
class ModelRegistry:
    models: tuple[ModelSpec, ...]
    default: str

    def __post_init__(self) -> None:
        names = [m.name for m in self.models]
        if not names:
            raise ValueError("the registry needs at least one model")
        if len(set(names)) != len(names):
            raise ValueError("model names must be unique")
        if self.default not in names:
            raise ValueError(f"the default model {self.default!r} is not in the registry")

    @classmethod
    def single(cls, source: str) -> ModelRegistry:
        """A registry of one model, named after its source (what `IMAGINE_MODEL` alone gives)."""
        return cls((ModelSpec(name=source, source=source),), default=source)

    def __iter__(self) -> Iterator[ModelSpec]:
        return iter(self.models)

    def names(self) -> list[str]:
        """The configured models' names, then `demo` (the bundled demo model) unless a configured model took it."""
        names = [m.name for m in self.models]
        return names if DEMO_MODEL in names else [*names, DEMO_MODEL]

    def get(self, name: str | None) -> ModelSpec:
        """The model called `name` (None: the default), or `InvalidRequest` listing the choices."""
        wanted = name or self.default
        for model in self.models:
            if model.name == wanted:
                return model
        if wanted == DEMO_MODEL:
            return ModelSpec(name=DEMO_MODEL, source=DEMO_MODEL, width=64, height=64)
        raise InvalidRequest("model", f"There is no model called {wanted!r}. Choose one of: {', '.join(self.names())}.")
