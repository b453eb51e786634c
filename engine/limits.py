"""What a model accepts. Checked before a job is queued and again before it reaches the GPU."""

from __future__ import annotations

from dataclasses import dataclass

from engine.errors import InvalidRequest
from engine.jobs import MAX_SEED, GenerationSpec


@dataclass(frozen=True)
class Limits:
    max_count: int = 4
    max_steps: int = 50
    min_size: int = 64
    max_size: int = 1024
    max_prompt_chars: int = 1000

    def check(self, spec: GenerationSpec) -> None:
        """Raise `InvalidRequest` naming the first option outside the limits and what is allowed."""
        prompt = spec.prompt.strip()
        if not prompt:
            raise InvalidRequest("prompt", "The prompt is empty: describe the image you want.")
        if len(prompt) > self.max_prompt_chars:
            raise InvalidRequest(
                "prompt",
                f"The prompt is {len(prompt)} characters long; the limit is {self.max_prompt_chars}. Shorten it.",
            )
        if len(spec.negative_prompt) > self.max_prompt_chars:
            raise InvalidRequest(
                "negative",
                f"The negative prompt is {len(spec.negative_prompt)} characters long; "
                f"the limit is {self.max_prompt_chars}. Shorten it.",
            )
        if not 1 <= spec.count <= self.max_count:
            raise InvalidRequest("count", f"count must be between 1 and {self.max_count} (got {spec.count}).")
        if not 0 <= spec.seed <= MAX_SEED:
            raise InvalidRequest("seed", f"seed must be a whole number from 0 to {MAX_SEED} (got {spec.seed}).")
        if spec.steps is not None and not 1 <= spec.steps <= self.max_steps:
            raise InvalidRequest(
                "steps", f"steps must be between 1 and {self.max_steps} for this model (got {spec.steps})."
            )
        for name, value in (("width", spec.width), ("height", spec.height)):
            if value is None:
                continue
            if not self.min_size <= value <= self.max_size or value % 8:
                raise InvalidRequest(
                    "size",
                    f"{name} must be a multiple of 8 between {self.min_size} and {self.max_size} (got {value}).",
                )
        if spec.guidance_scale is not None and not 0.0 <= spec.guidance_scale <= 30.0:
            raise InvalidRequest("guidance", f"guidance must be between 0 and 30 (got {spec.guidance_scale}).")
