"""Where finished images live on disk: one folder per day, one file per image, written atomically."""

from __future__ import annotations

import hashlib
import os
from datetime import UTC, datetime
from pathlib import Path

from bot.db.store import StoredImage
from engine.jobs import GeneratedImage


class ImageStore:
    def __init__(self, root: Path) -> None:
        self.root = root

    def save(self, job_id: str, image: GeneratedImage, *, when: datetime | None = None) -> StoredImage:
        day = (when or datetime.now(UTC)).strftime("%Y/%m/%d")
        folder = self.root / day
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"{job_id}-{image.index}.png"
        partial = path.with_suffix(".png.partial")
        partial.write_bytes(image.png)
        os.replace(partial, path)
        return StoredImage(
            index=image.index,
            seed=image.seed,
            width=image.width,
            height=image.height,
            path=str(path),
            sha256=hashlib.sha256(image.png).hexdigest(),
            size_bytes=len(image.png),
        )
