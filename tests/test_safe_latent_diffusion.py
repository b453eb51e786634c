"""Safe Latent Diffusion on an SD 1.x-style model (the tiny one), configured per model."""

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from engine.errors import JobCancelled
from engine.jobs import GenerationSpec
from engine.options import EngineOptions
from engine.pipeline import generate, load_model_spec
from engine.registry import ModelSpec

OPTIONS = EngineOptions(device="cpu", warmup=False)


def pixels(png: bytes) -> np.ndarray:
    import io

    return np.asarray(Image.open(io.BytesIO(png)).convert("RGB"), dtype=np.int16)


def test_sld_steers_generation_and_keeps_seeds(tiny_model_dir: Path) -> None:
    plain_spec = ModelSpec(name="tiny", source=str(tiny_model_dir))
    plain = load_model_spec(plain_spec, OPTIONS)
    safe = load_model_spec(replace(plain_spec, safe_latent_diffusion="max"), OPTIONS)
    assert safe.sld_level == "max"
    spec = GenerationSpec(prompt="a person on a beach", seed=3, steps=12, guidance_scale=7.0)
    steps: list[int] = []
    (safe_image,) = generate(safe, spec, on_step=lambda step, total: steps.append(step))
    (plain_image,) = generate(plain, spec)
    (again,) = generate(safe, spec)
    assert steps == list(range(1, 13))
    assert np.abs(pixels(safe_image.png) - pixels(plain_image.png)).max() > 0  # SLD changed the result
    assert np.array_equal(pixels(safe_image.png), pixels(again.png))  # and is still reproducible


def test_sld_can_be_cancelled(tiny_model_dir: Path) -> None:
    safe = load_model_spec(ModelSpec(name="tiny", source=str(tiny_model_dir), safe_latent_diffusion="strong"), OPTIONS)
    calls = 0

    def stop() -> bool:
        nonlocal calls
        calls += 1
        return calls > 2

    with pytest.raises(JobCancelled):
        generate(safe, GenerationSpec(prompt="a cat", seed=1, steps=10, guidance_scale=7.0), should_stop=stop)
