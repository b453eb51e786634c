"""What happens to images between the engine and the user: the image gate, provenance marks, storage.

Runs in a worker thread (classifiers and watermarking are CPU work). Every image gets a decision:
allow (posted), review (held for moderators, with a blurred preview kept) or block (never posted).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Protocol

from bot.db.store import StoredImage
from bot.images import ImageStore
from engine.jobs import GeneratedImage

log = logging.getLogger(__name__)


class GateDecision(Protocol):
    @property
    def action(self) -> str: ...  # allow, review or block

    @property
    def category(self) -> str | None: ...

    @property
    def score(self) -> float: ...

    @property
    def layer(self) -> str: ...


class Gate(Protocol):
    def check(self, png: bytes) -> GateDecision: ...


@dataclass(frozen=True)
class _EngineFlag:
    """The engine already flagged the image (a model's own safety checker blacks it out)."""

    layer: str
    action: str = "block"
    category: str | None = "sexual"
    score: float = 1.0


Marker = Callable[[bytes, str, str], bytes]  # (png, job id, model) → marked png
Blur = Callable[[bytes], bytes]


@dataclass
class Finisher:
    images: ImageStore
    gate: Gate | None = None
    mark: Marker | None = None
    blur: Blur | None = None

    def finish(
        self,
        job_id: str,
        model: str,
        generated: Sequence[GeneratedImage],
        *,
        blocks: Callable[[str], bool] = lambda category: True,
    ) -> list[StoredImage]:
        """Gate, mark and store each image. `blocks(category)` says whether this place refuses a category
        (adult content may be allowed in an age-restricted channel); a gate error is never let through."""
        stored = []
        for image in generated:
            decision: GateDecision | None
            if image.flagged:
                decision = _EngineFlag(layer=image.flagged)
            elif self.gate is not None:
                decision = self.gate.check(image.png)
            else:
                decision = None
            png = self.mark(image.png, job_id, model) if self.mark is not None else image.png
            saved = self.images.save(job_id, replace(image, png=png))
            allowed_here = decision is not None and decision.category is not None and not blocks(decision.category)
            if decision is None or decision.action == "allow" or allowed_here:
                stored.append(saved)
                continue
            preview = None
            if decision.action == "review" and self.blur is not None:
                preview = str(self.images.save_preview(job_id, image.index, self.blur(png)))
            log.info(
                "job %s image %d: %s (%s, %s %.2f)",
                job_id,
                image.index,
                decision.action,
                decision.category,
                decision.layer,
                decision.score,
            )
            stored.append(
                replace(
                    saved,
                    gate_action=decision.action,
                    gate_category=decision.category,
                    gate_layer=decision.layer,
                    gate_score=float(decision.score),
                    preview_path=preview,
                )
            )
        return stored
