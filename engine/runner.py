"""The GPU side of the worker: the model pool, styles, previews and memory, behind `BatchRunner`."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any

from engine.errors import InvalidRequest, ModelLoadError
from engine.jobs import GeneratedImage, Job
from engine.limits import Limits
from engine.memory import derive_max_batch, free_memory, is_out_of_memory
from engine.options import EngineOptions
from engine.pipeline import ModelPool, generate_batch, warm_up
from engine.previews import preview_png
from engine.registry import ModelRegistry
from engine.styles import StyleLibrary
from engine.worker import StepHook

log = logging.getLogger(__name__)

CPU_BATCH_IMAGES = 8


class PipelineRunner:
    def __init__(
        self,
        registry: ModelRegistry,
        options: EngineOptions,
        limits: Limits,
        *,
        served: Sequence[str] | None = None,
    ) -> None:
        self.registry = registry
        self.options = options
        self.limits = limits
        self.served = list(served) if served else registry.names()
        unknown = [name for name in self.served if name not in registry.names()]
        if unknown:
            raise InvalidRequest("model", f"Unknown model(s) {unknown}; the registry has {registry.names()}.")
        self.pool = ModelPool(registry, options)
        self.styles = StyleLibrary(options.styles_dir) if options.styles_dir else None

    def start(self) -> None:
        """Load the first served model and warm it up, so the first user does not wait for either. A model that
        cannot be loaded (offline, a typo in its id) does not stop the others from being served: the next one is
        loaded instead, and that model's jobs fail with the reason. Raises only when none can be loaded."""
        first: ModelLoadError | None = None
        for name in self.served:
            try:
                model = self.pool.get(name)
            except ModelLoadError as error:
                log.error("%s", error)
                first = first or error
                continue
            if first is not None:
                log.warning("serving %s; jobs for the models above will fail until they can be loaded", name)
            if self.options.warmup:
                warm_up(model)
            return
        assert first is not None
        raise first

    def served_models(self) -> list[str]:
        return list(self.served)

    def loaded_models(self) -> list[str]:
        return self.pool.loaded()

    def check(self, job: Job) -> None:
        if job.model not in self.served:
            raise InvalidRequest("model", f"This engine does not serve {job.model!r}.")
        self.registry.get(job.model).limits(self.limits).check(job.spec)
        if job.spec.style is not None:
            if self.styles is None:
                raise InvalidRequest("style", "No styles are installed here.")
            self.styles.check(job.spec.style, job.spec.style_strength)

    def max_batch_images(self, model: str) -> int:
        loaded = self.pool.peek(model)
        if loaded is None:
            return self.options.max_batch_images or CPU_BATCH_IMAGES
        return derive_max_batch(loaded, loaded.default_width, loaded.default_height, self.options.max_batch_images)

    def run(
        self, jobs: Sequence[Job], on_step: StepHook, should_stop: Callable[[], bool]
    ) -> list[list[GeneratedImage]]:
        model = self.pool.get(jobs[0].model)

        def step(index: int, total: int, latents: Any) -> None:
            preview = None
            if self.options.previews and latents is not None:

                def preview(image: int) -> bytes | None:
                    return preview_png(model, latents, image)

            on_step(index, total, preview)

        return generate_batch(
            model, [job.spec for job in jobs], on_step=step, should_stop=should_stop, styles=self.styles
        )

    def is_out_of_memory(self, error: BaseException) -> bool:
        return is_out_of_memory(error)

    def free_memory(self) -> None:
        free_memory()
