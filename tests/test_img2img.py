"""Image-to-image (variations and upscales): the job contract, the limits, and the real pipeline on the tiny model."""

from __future__ import annotations

import base64
import io
import json
import math
import threading
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw

from engine.errors import InvalidRequest, JobCancelled
from engine.jobs import DEFAULT_STRENGTH, EventKind, GeneratedImage, GenerationSpec, Job
from engine.limits import Limits
from engine.metadata import read_png_metadata
from engine.options import EngineOptions
from engine.pipeline import LoadedModel, generate, generate_batch, image_to_image_steps, load_model_spec
from engine.queue import LocalQueue
from engine.registry import ModelRegistry, ModelSpec
from engine.runner import PipelineRunner
from engine.worker import StepHook, Worker, WorkerOptions

CPU = EngineOptions(device="cpu", warmup=False)


def source_png(size: tuple[int, int] = (64, 64), *, colour: tuple[int, int, int] = (30, 60, 200)) -> bytes:
    """A picture with shapes on a flat background, as PNG bytes."""
    image = Image.new("RGB", size, colour)
    draw = ImageDraw.Draw(image)
    width, height = size
    draw.rectangle((width // 8, height // 8, width * 5 // 8, height * 5 // 8), fill=(240, 200, 20))
    draw.ellipse((width // 2, height // 2, width - 4, height - 4), fill=(200, 20, 40))
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


SOURCE = source_png()


def pixels(image: GeneratedImage) -> np.ndarray:
    with Image.open(io.BytesIO(image.png)) as decoded:
        assert decoded.size == (image.width, image.height)
        return np.asarray(decoded.convert("RGB"), dtype=np.int16)


@pytest.fixture(scope="module")
def model(tiny_model_dir: Path) -> LoadedModel:
    return load_model_spec(ModelSpec(name="tiny", source=str(tiny_model_dir)), CPU)


# --- the job contract ------------------------------------------------------------------------------------------


def test_a_job_with_a_source_image_round_trips_through_json() -> None:
    job = Job(id="j", model="m", spec=GenerationSpec(prompt="a cat", seed=3, init_image=SOURCE, strength=0.35))

    text = job.to_json()

    assert json.loads(text)["spec"]["init_image"] == base64.b64encode(SOURCE).decode("ascii")
    assert Job.from_json(text) == job
    plain = Job(id="p", model="m", spec=GenerationSpec(prompt="a cat", seed=3))
    assert json.loads(plain.to_json())["spec"]["init_image"] is None
    assert Job.from_json(plain.to_json()) == plain
    assert "init_image=" not in repr(job.spec)  # the bytes stay out of logs


def test_a_job_written_before_image_to_image_still_loads() -> None:
    data = json.loads(Job(id="old", model="m", spec=GenerationSpec(prompt="a cat", seed=3)).to_json())
    del data["spec"]["init_image"], data["spec"]["strength"]

    job = Job.from_json(json.dumps(data))

    assert (job.spec.init_image, job.spec.strength, job.spec.effective_strength()) == (None, None, None)


def test_the_batch_key_keeps_image_to_image_apart_and_includes_strength() -> None:
    def key(**spec: Any) -> str:
        return Job(id="x", model="m", spec=GenerationSpec(prompt="p", seed=1, **spec)).batch_key

    text = key()
    variation = key(init_image=SOURCE)
    assert text != variation
    assert variation == key(init_image=SOURCE, strength=DEFAULT_STRENGTH)  # None means the default
    assert variation == key(init_image=source_png(colour=(0, 0, 0)))  # another source of the same size batches
    assert variation != key(init_image=SOURCE, strength=0.3)
    assert variation != key(init_image=source_png((128, 64)))  # the size comes from the source when left out
    upscale = key(init_image=SOURCE, width=128, height=128)
    assert upscale == key(init_image=source_png((96, 96)), width=128, height=128)  # an explicit size decides
    assert text == key(strength=0.3)  # strength means nothing without a source
    assert key(init_image=b"not an image") != variation  # still a key (the limits refuse the job)


# --- limits ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("strength", [0.0, -0.1, 1.01, math.nan])
def test_strength_outside_zero_to_one_is_refused(strength: float) -> None:
    with pytest.raises(InvalidRequest, match="strength must be above 0 and at most 1") as caught:
        Limits().check(GenerationSpec(prompt="a cat", seed=1, init_image=SOURCE, strength=strength))
    assert caught.value.field == "strength"


def test_an_undecodable_source_is_refused() -> None:
    truncated = SOURCE[: len(SOURCE) // 2]  # the header reads; the pixels do not
    for data in (b"not an image at all", truncated):
        with pytest.raises(InvalidRequest, match="source image could not be read") as caught:
            Limits().check(GenerationSpec(prompt="a cat", seed=1, init_image=data))
        assert caught.value.field == "init_image"


def test_image_to_image_may_draw_up_to_twice_the_max_size() -> None:
    limits = Limits(max_size=64)
    limits.check(GenerationSpec(prompt="a cat", seed=1, init_image=SOURCE, strength=1.0, width=128, height=128))
    with pytest.raises(InvalidRequest, match="between 64 and 128 for image-to-image") as caught:
        limits.check(GenerationSpec(prompt="a cat", seed=1, init_image=SOURCE, width=136, height=128))
    assert caught.value.field == "size"
    with pytest.raises(InvalidRequest, match="multiple of 8"):
        limits.check(GenerationSpec(prompt="a cat", seed=1, init_image=SOURCE, width=100, height=128))
    with pytest.raises(InvalidRequest, match="between 64 and 64"):  # text-to-image keeps the plain limit
        limits.check(GenerationSpec(prompt="a cat", seed=1, width=128, height=128))
    with pytest.raises(InvalidRequest, match="source image's width"):  # a source too large to draw at its own size
        limits.check(GenerationSpec(prompt="a cat", seed=1, init_image=source_png((200, 64))))
    with pytest.raises(InvalidRequest, match="the most this engine accepts") as caught:
        limits.check(GenerationSpec(prompt="a cat", seed=1, init_image=source_png((300, 300)), width=64, height=64))
    assert caught.value.field == "init_image"


def test_image_to_image_steps_run_at_least_one_denoising_step() -> None:
    assert image_to_image_steps(4, 0.5) == (4, 2)
    assert image_to_image_steps(4, 1.0) == (4, 4)
    assert image_to_image_steps(1, 0.6) == (2, 1)  # SD-Turbo's single step would run none at all
    assert image_to_image_steps(1, 0.3) == (4, 1)


# --- the pipeline ----------------------------------------------------------------------------------------------


def test_variations_have_the_requested_size_and_are_reproducible(model: LoadedModel) -> None:
    spec = GenerationSpec(prompt="a harbour", seed=9, count=2, init_image=SOURCE, width=64, height=48)

    first = generate(model, spec)
    again = generate(model, spec)
    text = generate(model, replace(spec, init_image=None))

    assert [(i.index, i.seed, i.width, i.height) for i in first] == [(0, 9, 64, 48), (1, 10, 64, 48)]
    assert np.array_equal(pixels(first[0]), pixels(again[0]))
    assert not np.array_equal(pixels(first[0]), pixels(first[1]))  # each image its own seed
    assert np.abs(pixels(first[0]) - pixels(text[0])).mean() > 5  # not what text-to-image draws at this seed
    meta = read_png_metadata(first[0].png)
    assert meta["strength"] == str(DEFAULT_STRENGTH)
    assert meta["source_image"].startswith("sha256:")
    assert meta["parameters"].endswith(f"Denoising strength: {DEFAULT_STRENGTH}")
    assert "strength" not in read_png_metadata(text[0].png)


def test_a_size_left_out_is_the_sources_rounded_down_to_8(model: LoadedModel) -> None:
    [image] = generate(model, GenerationSpec(prompt="a harbour", seed=1, init_image=source_png((70, 60))))
    assert (image.width, image.height) == (64, 56)


def test_an_upscale_doubles_the_source(model: LoadedModel) -> None:
    spec = GenerationSpec(prompt="a harbour", seed=1, init_image=SOURCE, strength=0.3, width=128, height=128)

    [image] = generate(model, spec, limits=Limits(max_size=64))

    assert (image.width, image.height) == (128, 128)
    assert pixels(image).shape == (128, 128, 3)


def final_latents(model: LoadedModel, spec: GenerationSpec) -> torch.Tensor:
    seen: list[torch.Tensor] = []
    generate_batch(model, [spec], on_step=lambda step, total, latents: seen.append(latents.clone()))
    return seen[-1]


def test_a_low_strength_stays_closer_to_the_source(model: LoadedModel) -> None:
    # Measured on the latents, not the pixels: the tiny model's random VAE decoder normalises its input away, so
    # every image it decodes is about equally far (mean ~44 levels) from any source, whatever the strength.
    pipe = model.pipe
    with torch.no_grad():
        with Image.open(io.BytesIO(SOURCE)) as picture:
            encoded = pipe.vae.encode(pipe.image_processor.preprocess(picture.convert("RGB")))
        source = encoded.latent_dist.mean * pipe.vae.config.scaling_factor
    spec = GenerationSpec(prompt="a harbour", seed=4, steps=8, init_image=SOURCE)

    distances = [
        float((final_latents(model, replace(spec, strength=strength)) - source).abs().mean())
        for strength in (0.25, 0.5, 1.0)
    ]

    assert distances == sorted(distances)
    assert distances[0] * 4 < distances[-1]  # measured: 0.59, 1.35, 12.1


def test_progress_counts_the_steps_image_to_image_runs(model: LoadedModel) -> None:
    seen: list[tuple[int, int]] = []

    [image] = generate(
        model,
        GenerationSpec(prompt="a boat", seed=1, steps=4, init_image=SOURCE, strength=0.5),
        on_step=lambda step, total: seen.append((step, total)),
    )

    assert seen == [(1, 2), (2, 2)]
    assert read_png_metadata(image.png)["steps"] == "4"


def test_a_single_step_model_still_makes_a_variation(model: LoadedModel) -> None:
    seen: list[tuple[int, int]] = []

    [image] = generate(
        model,
        GenerationSpec(prompt="a boat", seed=1, steps=1, init_image=SOURCE),
        on_step=lambda step, total: seen.append((step, total)),
    )

    assert seen == [(1, 1)]
    assert read_png_metadata(image.png)["steps"] == "2"  # what reproduces it: 2 steps at 0.6 run one


def test_image_to_image_can_be_cancelled(model: LoadedModel) -> None:
    steps: list[int] = []
    with pytest.raises(JobCancelled):
        generate(
            model,
            GenerationSpec(prompt="a boat", seed=1, steps=8, init_image=SOURCE, strength=1.0),
            on_step=lambda step, total: steps.append(step),
            should_stop=lambda: len(steps) >= 2,
        )
    assert steps == [1, 2]


def test_sources_batch_together_and_each_image_matches_its_run_alone(model: LoadedModel) -> None:
    specs = [
        GenerationSpec(prompt="a harbour", seed=20, count=2, init_image=SOURCE),
        GenerationSpec(prompt="a forest", seed=30, init_image=source_png(colour=(10, 120, 10)), negative_prompt="fog"),
    ]

    batched = generate_batch(model, specs)
    alone = [generate(model, spec) for spec in specs]

    assert [[i.seed for i in images] for images in batched] == [[20, 21], [30]]
    for together, single in zip(batched, alone, strict=True):
        for a, b in zip(together, single, strict=True):
            assert np.abs(pixels(a) - pixels(b)).max() <= 1  # float rounding only, as for text-to-image
    with pytest.raises(ValueError, match="strength"):
        generate_batch(model, [specs[0], replace(specs[0], init_image=None)])
    with pytest.raises(ValueError, match="strength"):
        generate_batch(model, [specs[0], replace(specs[0], strength=0.2)])


def test_an_undecodable_or_tiny_source_fails_before_the_pipeline(model: LoadedModel) -> None:
    with pytest.raises(InvalidRequest) as caught:
        generate(model, GenerationSpec(prompt="a boat", seed=1, init_image=b"\x89PNG broken"))
    assert caught.value.field == "init_image"
    buffer = io.BytesIO()
    Image.new("RGB", (4, 64)).save(buffer, format="PNG")
    with pytest.raises(InvalidRequest, match="width must be a positive multiple of 8 \\(got 0\\)"):
        generate(model, GenerationSpec(prompt="a boat", seed=1, init_image=buffer.getvalue()))


def test_the_image_to_image_pipeline_shares_the_weights_and_is_built_once(model: LoadedModel) -> None:
    generate(model, GenerationSpec(prompt="a boat", seed=1, init_image=SOURCE))
    built = model.img2img_pipe

    generate(model, GenerationSpec(prompt="a boat", seed=2, init_image=SOURCE))

    assert model.img2img_pipe is built
    assert type(built).__name__ == "StableDiffusionImg2ImgPipeline"
    assert built.unet is model.pipe.unet
    assert built.vae is model.pipe.vae


def test_a_style_applies_to_variations_too(model: LoadedModel, tiny_model_dir: Path, tmp_path: Path) -> None:
    pytest.importorskip("peft")
    from engine.styles import StyleLibrary
    from engine.tiny import create_tiny_lora

    create_tiny_lora(tiny_model_dir, tmp_path / "ink.safetensors", seed=1)
    library = StyleLibrary(tmp_path)
    spec = GenerationSpec(prompt="a boat", seed=1, init_image=SOURCE, strength=1.0)

    [plain] = generate(model, spec, styles=library)
    [styled] = generate(model, replace(spec, style="ink"), styles=library)
    [plain_again] = generate(model, spec, styles=library)

    assert np.abs(pixels(styled) - pixels(plain)).max() > 1
    assert np.array_equal(pixels(plain_again), pixels(plain))
    assert read_png_metadata(styled.png)["style"] == "ink"


def test_a_safe_latent_diffusion_model_varies_through_the_plain_pipeline(tiny_model_dir: Path) -> None:
    safe = load_model_spec(ModelSpec(name="tiny", source=str(tiny_model_dir), safe_latent_diffusion="strong"), CPU)

    [image] = generate(safe, GenerationSpec(prompt="a boat", seed=1, guidance_scale=7.0, init_image=SOURCE))

    assert (image.width, image.height) == (64, 64)
    assert type(safe.img2img_pipe).__name__ == "StableDiffusionImg2ImgPipeline"


# --- through the worker ----------------------------------------------------------------------------------------


class RecordingRunner(PipelineRunner):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.calls: list[list[str]] = []

    def run(
        self, jobs: Sequence[Job], on_step: StepHook, should_stop: Callable[[], bool]
    ) -> list[list[GeneratedImage]]:
        self.calls.append([job.id for job in jobs])
        return super().run(jobs, on_step, should_stop)


def test_the_worker_carries_the_source_from_claim_to_done(tiny_model_dir: Path, tmp_path: Path) -> None:
    name = str(tiny_model_dir)
    runner = RecordingRunner(ModelRegistry.single(name), CPU, Limits(max_size=64))
    queue = LocalQueue(tmp_path / "queue.sqlite3", lease_seconds=30, poll_seconds=0.01)
    upscale = GenerationSpec(prompt="a cat", seed=5, steps=4, init_image=SOURCE, strength=0.5, width=128, height=128)
    jobs = [
        Job(id="text", model=name, spec=GenerationSpec(prompt="a cat", seed=5)),
        Job(id="u1", model=name, spec=upscale),
        Job(id="u2", model=name, spec=replace(upscale, init_image=source_png(colour=(0, 0, 0)), seed=6)),
        Job(id="v1", model=name, spec=GenerationSpec(prompt="a cat", seed=5, init_image=SOURCE, strength=0.7)),
    ]
    try:
        for job in jobs:
            queue.submit(job)
        options = WorkerOptions(worker_id="w", progress_interval_seconds=0, claim_timeout_seconds=0.05)
        Worker(queue, runner, options).run(threading.Event(), burst=True)

        assert runner.calls == [["text"], ["u1", "u2"], ["v1"]]
        events = {job.id: [event for _, event in queue.events(job.id)] for job in jobs}
        for job_id in ("u1", "u2"):
            done = events[job_id][-1]
            assert done.kind is EventKind.DONE
            assert [(i.width, i.height) for i in done.images] == [(128, 128)]
            assert read_png_metadata(done.images[0].png)["strength"] == "0.5"
            progress = [(e.step, e.total_steps) for e in events[job_id] if e.kind is EventKind.PROGRESS]
            assert progress == [(1, 2), (2, 2)]
        assert events["v1"][-1].kind is EventKind.DONE
        assert events["text"][-1].kind is EventKind.DONE
        assert "strength" not in read_png_metadata(events["text"][-1].images[0].png)
    finally:
        queue.close()
