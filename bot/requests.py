"""A generation request as any front end hands it over, and its checks."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from bot.aspect import parse_aspect, size_for_aspect
from bot.prompt_params import split_parameters
from engine.errors import InvalidRequest
from engine.jobs import GenerationSpec, random_seed
from engine.limits import Limits
from engine.registry import ModelRegistry

KINDS = ("imagine", "reroll", "variation", "upscale")
VARIATION_STRENGTH = 0.6
UPSCALE_STRENGTH = 0.3
# When a model's registry entry names no size, aspect ratios are worked out around this one.
FALLBACK_BASE_SIZE = (512, 512)
# What a member may keep as their own defaults (`/settings`).
USER_DEFAULTS = ("model", "aspect", "steps", "private")


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
    aspect: str | None = None
    private: bool | None = None  # only the requester sees the result
    # How it came about: a new request, or a re-roll/variation/upscale of image `parent_index` of job `parent_id`.
    kind: str = "imagine"
    parent_id: str | None = None
    parent_index: int | None = None
    strength: float | None = None  # for variations and upscales: how far from the source image
    init_image: bytes | None = None  # the source image, read from the parent's stored file
    # The member's groups (Discord role ids), for quota tiers; moderators are not held to quotas.
    roles: tuple[str, ...] = ()
    moderator: bool = False
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
            "aspect": self.aspect,
            "private": bool(self.private),
            "strength": self.strength,
            "nsfw_channel": self.nsfw_channel,
        }


def _first(*values: Any) -> Any:
    return next((value for value in values if value is not None), None)


def resolve(request: ImagineRequest, defaults: Mapping[str, Any], registry: ModelRegistry) -> ImagineRequest:
    """The request with its inline `--parameters` taken out of the prompt and every option settled:
    the command's own options win over inline parameters, which win over the member's saved defaults.
    Raise `InvalidRequest` for a bad parameter, model or aspect."""
    prompt, inline = split_parameters(request.prompt)
    saved_model = defaults.get("model") if defaults.get("model") in registry.names() else None
    model = _first(request.model, inline.model, saved_model)
    model_spec = registry.get(model)  # unknown names: InvalidRequest listing the models
    explicit_size = request.width is not None or request.height is not None
    inline_size = inline.width is not None
    aspect = _first(request.aspect, inline.aspect, None if explicit_size or inline_size else defaults.get("aspect"))
    if aspect is not None:
        aspect = parse_aspect(aspect)
    width, height = request.width, request.height
    if not explicit_size:
        if request.aspect is None and inline_size:
            width, height = inline.width, inline.height
        elif aspect is not None:
            base = (model_spec.width or FALLBACK_BASE_SIZE[0], model_spec.height or FALLBACK_BASE_SIZE[1])
            max_size = model_spec.max_size or 1 << 16
            width, height = size_for_aspect(aspect, base, max_size)
    steps = _first(request.steps, inline.steps)
    if steps is None and isinstance(defaults.get("steps"), int):
        steps = defaults["steps"]
        if model_spec.max_steps is not None:
            steps = min(steps, model_spec.max_steps)
    return replace(
        request,
        prompt=prompt,
        model=model_spec.name,
        negative_prompt=_first(request.negative_prompt, inline.negative),
        seed=_first(request.seed, inline.seed),
        count=_first(request.count, inline.count),
        steps=steps,
        width=width,
        height=height,
        guidance=_first(request.guidance, inline.guidance),
        style=_first(request.style, inline.style),
        aspect=aspect,
        private=bool(_first(request.private, inline.private, defaults.get("private"), False)),
    )


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
        init_image=request.init_image,
        strength=request.strength,
    )
    limits.check(spec)
    return spec
