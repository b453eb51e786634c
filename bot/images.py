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

    def _write(self, name: str, data: bytes, when: datetime | None) -> Path:
        folder = self.root / (when or datetime.now(UTC)).strftime("%Y/%m/%d")
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / name
        partial = path.with_name(path.name + ".partial")
        partial.write_bytes(data)
        os.replace(partial, path)
        return path

    def save_preview(self, job_id: str, index: int, png: bytes, *, when: datetime | None = None) -> Path:
        """A blurred preview of an image held for review, for the moderators' channel."""
        return self._write(f"{job_id}-{index}.blurred.png", png, when)

    def save(self, job_id: str, image: GeneratedImage, *, when: datetime | None = None) -> StoredImage:
        path = self._write(f"{job_id}-{image.index}.png", image.png, when)
        return StoredImage(
            index=image.index,
            seed=image.seed,
            width=image.width,
            height=image.height,
            path=str(path),
            sha256=hashlib.sha256(image.png).hexdigest(),
            size_bytes=len(image.png),
        )
