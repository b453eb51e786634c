"""Builds the safeguards the configuration asks for: the prompt gate and the image finishing step."""

from __future__ import annotations

import logging
from pathlib import Path

from bot.config import Settings
from bot.errors import ConfigError
from bot.finishing import Finisher, Marker
from bot.images import ImageStore
from moderation.prompt_gate import PromptGate

log = logging.getLogger(__name__)


def build_prompt_gate(settings: Settings) -> PromptGate:
    return PromptGate.from_package()


def build_marker(settings: Settings) -> Marker:
    """The provenance step every image imagine hands out goes through: the bot's posts and `imagine generate`."""
    from moderation.provenance import mark

    certificate, key = settings.safety.c2pa_certificate, settings.safety.c2pa_key
    if not (certificate and key):
        return lambda png, job_id, model: mark(png, job_id=job_id, model=model)
    from moderation.c2pa_signing import C2paSigner

    try:
        signer = C2paSigner.from_files(Path(certificate), Path(key))
    except Exception as error:
        raise ConfigError(f"[safety] c2pa_certificate/c2pa_key cannot be used: {error}") from None

    def mark_and_sign(png: bytes, job_id: str, model: str) -> bytes:
        return signer.sign(mark(png, job_id=job_id, model=model), job_id=job_id, model=model)

    return mark_and_sign


def build_finisher(settings: Settings) -> Finisher:
    from moderation.image_gate import ImageGate, blurred_preview

    gate = None
    if settings.safety.image_gate:
        gate = ImageGate.from_specs(
            settings.safety.image_classifiers,
            thresholds=settings.safety.image_thresholds,
            action=settings.safety.image_action,
        )
    else:
        log.warning("the image gate is off ([safety] image_gate = false): images are posted unchecked")
    return Finisher(ImageStore(settings.images_dir), gate=gate, mark=build_marker(settings), blur=blurred_preview)
