"""The job contract between the bot and the engine: what to generate and what comes back.

Everything here is plain data with a JSON form, versioned so that a bot and an engine of
different releases sharing one queue fail loudly instead of misreading each other.
"""

from __future__ import annotations

import base64
import io
import json
import secrets
import time
import uuid
from dataclasses import asdict, dataclass, field
from enum import StrEnum
from typing import Any

SCHEMA_VERSION = 1
MAX_SEED = 2**32 - 1
DEFAULT_STRENGTH = 0.6  # image-to-image: how far from the source when a spec leaves strength out


def source_size(data: bytes) -> tuple[int, int]:
    """(width, height) of an image from its header, each rounded down to a multiple of 8.

    Reads only the header, so it is cheap; `ValueError` when PIL cannot tell what the bytes are.
    """
    from PIL import Image

    try:
        with Image.open(io.BytesIO(data)) as image:
            width, height = image.size
    except Exception as exc:  # PIL raises many kinds of error for bytes that are no image
        raise ValueError(f"not an image PIL can read ({type(exc).__name__})") from exc
    return width // 8 * 8, height // 8 * 8


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
    # Image-to-image: the source image (PNG or anything PIL reads) and how far from it to go (0 < s <= 1;
    # None: DEFAULT_STRENGTH). The source is resized to width x height; a size left out is the source's own.
    init_image: bytes | None = field(default=None, repr=False)
    strength: float | None = None

    def effective_strength(self) -> float | None:
        """The strength an image-to-image spec runs at; None for text-to-image (where strength is ignored)."""
        if self.init_image is None:
            return None
        return DEFAULT_STRENGTH if self.strength is None else float(self.strength)

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
    # Whose job it is, for fair turns between users (an opaque key such as "discord:1234"; "" is anonymous, one
    # owner like any other), and the owner's tier weight (>= 1): weight 2 gets about twice the turns of weight 1.
    owner: str = ""
    weight: int = 1

    @property
    def batch_key(self) -> str:
        """Jobs with equal keys can share one pipeline call: everything but prompts and seeds matches."""
        spec = self.spec
        key: list[Any] = [
            self.model,
            spec.width,
            spec.height,
            spec.steps,
            spec.guidance_scale,
            spec.style,
            spec.style_strength,
        ]
        if spec.init_image is not None:
            # Image-to-image jobs with different sources can share a call (one source per image), but only at
            # one strength and one output size; a size left out comes from the source.
            size: Any = None
            if spec.width is None or spec.height is None:
                try:
                    size = list(source_size(spec.init_image))
                except ValueError:
                    size = "unreadable"
            key += ["img2img", spec.effective_strength(), size]
        return json.dumps(key)

    def to_json(self) -> str:
        data = asdict(self)
        init_image = self.spec.init_image
        data["spec"]["init_image"] = base64.b64encode(init_image).decode("ascii") if init_image is not None else None
        return json.dumps(data, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> Job:
        data = json.loads(text)
        version = data.get("version")
        if version != SCHEMA_VERSION:
            raise ValueError(f"job schema version {version!r} is not supported (this engine speaks {SCHEMA_VERSION})")
        spec = dict(data["spec"])
        if spec.get("init_image") is not None:
            spec["init_image"] = base64.b64decode(spec["init_image"], validate=True)
        return cls(
            id=data["id"],
            model=data["model"],
            spec=GenerationSpec(**spec),
            created_at=data["created_at"],
            version=version,
            owner=str(data.get("owner", "")),
            weight=int(data.get("weight", 1)),
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
