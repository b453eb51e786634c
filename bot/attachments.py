"""Fitting an image under a front end's upload limit: a smaller encoding rather than a failed post."""

from __future__ import annotations

import io

from PIL import Image

# Tried in order until one fits: lossless first, then lossy encodings, then smaller sizes.
_ENCODINGS: tuple[tuple[str, dict[str, object]], ...] = (
    ("webp", {"lossless": True, "quality": 100, "method": 4}),
    ("webp", {"quality": 90, "method": 4}),
    ("jpeg", {"quality": 85, "optimize": True}),
    ("webp", {"quality": 75, "method": 4}),
    ("jpeg", {"quality": 70, "optimize": True}),
)


def _encode(image: Image.Image, kind: str, options: dict[str, object]) -> bytes:
    buffer = io.BytesIO()
    converted = image.convert("RGB") if kind == "jpeg" else image
    converted.save(buffer, format=kind.upper(), **options)
    return buffer.getvalue()


def fit_image(png: bytes, limit: int) -> tuple[bytes, str]:
    """`png` itself when it is at most `limit` bytes; otherwise the first smaller encoding that fits, halving
    the size as a last resort. Returns the bytes and their file extension ("png", "webp" or "jpg")."""
    if len(png) <= limit:
        return png, "png"
    image: Image.Image = Image.open(io.BytesIO(png))
    image.load()
    while True:
        for kind, options in _ENCODINGS:
            data = _encode(image, kind, options)
            if len(data) <= limit:
                return data, "jpg" if kind == "jpeg" else kind
        if min(image.size) <= 16:
            return data, "jpg" if kind == "jpeg" else kind
        image = image.resize((max(1, image.width // 2), max(1, image.height // 2)), Image.Resampling.LANCZOS)
