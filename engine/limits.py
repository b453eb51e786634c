"""What a model accepts. Checked before a job is queued and again before it reaches the GPU."""

from __future__ import annotations

import io
import math
import warnings
from dataclasses import dataclass
from typing import TYPE_CHECKING

from engine.errors import InvalidRequest
from engine.jobs import MAX_SEED, GenerationSpec

if TYPE_CHECKING:
    from PIL import Image

UPSCALE_FACTOR = 2  # image-to-image may draw up to this many times max_size per side (an upscale)
SOURCE_PIXELS_FACTOR = 16  # a source image may have up to this many times max_size squared pixels


def _unreadable(detail: str) -> InvalidRequest:
    return InvalidRequest(
        "init_image", f"The source image could not be read ({detail}): send a PNG, JPEG or WebP image."
    )


def decode_init_image(data: bytes, *, max_pixels: int | None = None) -> Image.Image:
    """Decode a source image fully (a truncated file fails here, not on the GPU) and return it.

    Raises `InvalidRequest("init_image", ...)` for bytes PIL cannot decode, or for an image with more than
    `max_pixels` pixels (checked from the header, before decoding).
    """
    from PIL import Image

    try:
        with warnings.catch_warnings():
            # The pixel limit below is ours; PIL's own bomb warning would only repeat it.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data))
        if max_pixels is not None and image.width * image.height > max_pixels:
            width, height = image.size
            image.close()
            raise InvalidRequest(
                "init_image",
                f"The source image is {width}x{height}; the most this engine accepts is {max_pixels} pixels. "
                "Send a smaller image.",
            )
        image.load()
    except InvalidRequest:
        raise
    except Exception as exc:  # PIL raises many kinds of error (OSError, ValueError, SyntaxError...) for bad data
        raise _unreadable(type(exc).__name__) from exc
    return image


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
        if spec.init_image is not None:
            self._check_image_to_image(spec, spec.init_image)
        for name, value in (("width", spec.width), ("height", spec.height)):
            if value is None or spec.init_image is not None:
                continue
            if not self.min_size <= value <= self.max_size or value % 8:
                raise InvalidRequest(
                    "size",
                    f"{name} must be a multiple of 8 between {self.min_size} and {self.max_size} (got {value}).",
                )
        if spec.guidance_scale is not None and not 0.0 <= spec.guidance_scale <= 30.0:
            raise InvalidRequest("guidance", f"guidance must be between 0 and 30 (got {spec.guidance_scale}).")

    def _check_image_to_image(self, spec: GenerationSpec, init_image: bytes) -> None:
        """Strength, the source image, and the output size (up to UPSCALE_FACTOR x max_size: an upscale)."""
        strength = spec.strength
        if strength is not None and not (math.isfinite(strength) and 0.0 < strength <= 1.0):
            raise InvalidRequest(
                "strength",
                f"strength must be above 0 and at most 1 (got {strength}): low stays close to the source image, "
                "1 nearly ignores it.",
            )
        with decode_init_image(init_image, max_pixels=self.max_size * self.max_size * SOURCE_PIXELS_FACTOR) as image:
            own_width, own_height = image.width // 8 * 8, image.height // 8 * 8
        largest = self.max_size * UPSCALE_FACTOR
        for name, value, own in (("width", spec.width, own_width), ("height", spec.height, own_height)):
            if value is None:
                if not self.min_size <= own <= largest:
                    raise InvalidRequest(
                        "size",
                        f"The source image's {name} ({own} px, rounded down to a multiple of 8) is not between "
                        f"{self.min_size} and {largest}: set the {name} to draw at.",
                    )
            elif not self.min_size <= value <= largest or value % 8:
                raise InvalidRequest(
                    "size",
                    f"{name} must be a multiple of 8 between {self.min_size} and {largest} for image-to-image "
                    f"(got {value}).",
                )
