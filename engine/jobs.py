"""The job contract between the bot and the engine: what to generate and what comes back.

Everything here is plain data with a JSON form, versioned so that a bot and an engine of
different releases sharing one queue fail loudly instead of misreading each other.
"""

from __future__ import annotations

import base64
import json
import secrets
import time
import uuid
from dataclasses import asdict, dataclass, field
from enum import StrEnum
from typing import Any

SCHEMA_VERSION = 1
MAX_SEED = 2**32 - 1


def random_seed() -> int:
    return secrets.randbelow(MAX_SEED + 1)


def new_job_id() -> str:
    return uuid.uuid4().hex


@dataclass(frozen=True)
class GenerationSpec:
    """What to draw. `None` for steps, size or guidance means the model's own default."""

    prompt: str
    seed: int
    negative_prompt: str = ""
    count: int = 1
    steps: int | None = None
    width: int | None = None
    height: int | None = None
    guidance_scale: float | None = None
    # A LoRA style by name, and how strongly it applies (None: the style's own default).
    style: str | None = None
    style_strength: float | None = None

    def seeds(self) -> list[int]:
        """One seed per image: image i uses seed + i, so every image can be reproduced alone."""
        return [(self.seed + i) % (MAX_SEED + 1) for i in range(self.count)]


@dataclass(frozen=True)
class Job:
    id: str
    model: str
    spec: GenerationSpec
    created_at: float = field(default_factory=time.time)
    version: int = SCHEMA_VERSION

    @property
    def batch_key(self) -> str:
        """Jobs with equal keys can share one pipeline call: everything but prompts and seeds matches."""
        spec = self.spec
        return json.dumps(
            [self.model, spec.width, spec.height, spec.steps, spec.guidance_scale, spec.style, spec.style_strength]
        )

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> Job:
        data = json.loads(text)
        version = data.get("version")
        if version != SCHEMA_VERSION:
            raise ValueError(f"job schema version {version!r} is not supported (this engine speaks {SCHEMA_VERSION})")
        return cls(
            id=data["id"],
            model=data["model"],
            spec=GenerationSpec(**data["spec"]),
            created_at=data["created_at"],
            version=version,
        )


class EventKind(StrEnum):
    STARTED = "started"
    PROGRESS = "progress"
    DONE = "done"
    FAILED = "failed"
    CANCELLED = "cancelled"


TERMINAL_KINDS = frozenset({EventKind.DONE, EventKind.FAILED, EventKind.CANCELLED})


@dataclass(frozen=True)
class GeneratedImage:
    index: int
    seed: int
    width: int
    height: int
    png: bytes
    flagged: str | None = None  # what flagged it as unsafe on the engine (e.g. the model's own safety checker)


@dataclass(frozen=True)
class Event:
    """One thing that happened to a job. Exactly one terminal event (done/failed/cancelled) ends a job."""

    kind: EventKind
    step: int = 0
    total_steps: int = 0
    reason: str = ""
    seconds: float = 0.0
    model: str = ""
    worker: str = ""
    images: tuple[GeneratedImage, ...] = ()
    preview: bytes | None = None  # a small low-resolution image of the work so far (progress events)

    @property
    def terminal(self) -> bool:
        return self.kind in TERMINAL_KINDS

    def to_json(self) -> str:
        data: dict[str, Any] = asdict(self)
        data["images"] = [
            {**asdict(image), "png": base64.b64encode(image.png).decode("ascii")} for image in self.images
        ]
        if self.preview is not None:
            data["preview"] = base64.b64encode(self.preview).decode("ascii")
        data["version"] = SCHEMA_VERSION
        return json.dumps(data)

    @classmethod
    def from_json(cls, text: str) -> Event:
        data = json.loads(text)
        data.pop("version", None)
        images = tuple(
            GeneratedImage(**{**image, "png": base64.b64decode(image["png"])}) for image in data.pop("images", [])
        )
        preview = data.pop("preview", None)
        return cls(
            kind=EventKind(data.pop("kind")),
            images=images,
            preview=base64.b64decode(preview) if preview is not None else None,
            **data,
        )
