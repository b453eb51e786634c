"""A generation request as any front end hands it over, and its checks."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from engine.errors import InvalidRequest
from engine.jobs import GenerationSpec, random_seed
from engine.limits import Limits


@dataclass(frozen=True)
class ImagineRequest:
    """What a user asked for, before any check. Unset options are None."""

    frontend: str
    user_id: str
    prompt: str
    guild_id: str | None = None
    channel_id: str | None = None
    negative_prompt: str | None = None
    seed: int | None = None
    count: int | None = None
    steps: int | None = None
    width: int | None = None
    height: int | None = None
    guidance: float | None = None
    model: str | None = None
    style: str | None = None
    style_strength: float | None = None
    # Whether the place it was asked in is marked for adults (a Discord age-restricted channel).
    nsfw_channel: bool = False
    # Front-end data needed to answer later, even after a restart (for Discord: the interaction).
    delivery: dict[str, Any] = field(default_factory=dict)

    def options(self) -> dict[str, Any]:
        return {
            "count": self.count,
            "steps": self.steps,
            "width": self.width,
            "height": self.height,
            "seed": self.seed,
            "guidance": self.guidance,
            "style": self.style,
            "style_strength": self.style_strength,
            "nsfw_channel": self.nsfw_channel,
        }


def build_spec(request: ImagineRequest, limits: Limits) -> GenerationSpec:
    """The spec to queue: a seed chosen now if none was given (so it is recorded), checked against `limits`
    (the model's own, see `ModelSpec.limits`)."""
    if request.style_strength is not None and not 0.0 <= request.style_strength <= 2.0:
        raise InvalidRequest(
            "style_strength", f"style strength must be between 0 and 2 (got {request.style_strength})."
        )
    spec = GenerationSpec(
        prompt=request.prompt.strip(),
        negative_prompt=(request.negative_prompt or "").strip(),
        seed=random_seed() if request.seed is None else request.seed,
        count=1 if request.count is None else request.count,
        steps=request.steps,
        width=request.width,
        height=request.height,
        guidance_scale=request.guidance,
        style=request.style or None,
        style_strength=request.style_strength,
    )
    limits.check(spec)
    return spec
