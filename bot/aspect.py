"""Aspect ratios and explicit sizes, turned into a width and height the model can draw."""

from __future__ import annotations

import math
import re

from engine.errors import InvalidRequest

ASPECTS = ("1:1", "4:3", "3:4", "3:2", "2:3", "16:9", "9:16")
_SIZE = re.compile(r"^\s*(\d{2,5})\s*[x\u00d7*]\s*(\d{2,5})\s*$", re.IGNORECASE)


def parse_aspect(text: str, *, field: str = "aspect") -> str:
    """One of `ASPECTS` ("16x9" and "16/9" are read as "16:9"), or `InvalidRequest` listing them."""
    wanted = re.sub(r"\s+", "", text).replace("x", ":").replace("/", ":")
    if wanted not in ASPECTS:
        raise InvalidRequest(field, f"The aspect ratio {text!r} is not offered. Choose one of: {', '.join(ASPECTS)}.")
    return wanted


def parse_size(text: str, *, field: str = "size") -> tuple[int, int]:
    match = _SIZE.match(text)
    if match is None:
        raise InvalidRequest(field, f"The size {text!r} is not readable: write it as WIDTHxHEIGHT, like 768x512.")
    return int(match[1]), int(match[2])


def size_for_aspect(aspect: str, base: tuple[int, int], max_size: int) -> tuple[int, int]:
    """A width and height in `aspect` with about the area of the model's `base` size, in multiples of 64
    (of 8 for models smaller than 256 px), the longer side at most `max_size`."""
    ratio_w, ratio_h = (int(part) for part in aspect.split(":"))
    area = base[0] * base[1]
    grain = 64 if min(base) >= 256 else 8
    width = math.sqrt(area * ratio_w / ratio_h)
    height = width * ratio_h / ratio_w
    scale = min(1.0, max_size / max(width, height))
    width, height = width * scale, height * scale
    return max(grain, int(width // grain) * grain), max(grain, int(height // grain) * grain)
