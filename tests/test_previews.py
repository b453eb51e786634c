"""Latent previews: the linear latent -> RGB approximation, on the tiny model's real latents and on fakes."""

from __future__ import annotations

import io
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import torch
from PIL import Image

from engine.jobs import GenerationSpec
from engine.options import EngineOptions
from engine.pipeline import LoadedModel, generate_batch, load_model_spec
from engine.previews import SD1_FACTORS, SD3_FACTORS, SDXL_FACTORS, latent_factors, preview_png
from engine.registry import ModelSpec


@pytest.fixture(scope="module")
def model(tiny_model_dir: Path) -> LoadedModel:
    return load_model_spec(ModelSpec(name="tiny", source=str(tiny_model_dir)), EngineOptions(device="cpu"))


def fake_model(latent_channels: int, scaling_factor: float) -> LoadedModel:
    """A LoadedModel around a stand-in pipeline: previews only read the VAE's config."""
    vae = SimpleNamespace(config=SimpleNamespace(latent_channels=latent_channels, scaling_factor=scaling_factor))
    return LoadedModel("fake", SimpleNamespace(vae=vae), torch.device("cpu"), torch.float32, 1, 0.0, 512, 512)


def decode(png: bytes | None) -> Image.Image:
    assert png is not None
    image = Image.open(io.BytesIO(png))
    assert image.format == "PNG"
    assert image.mode == "RGB"
    return image


def test_previews_from_the_latents_of_a_real_batch(model: LoadedModel) -> None:
    previews: list[list[bytes | None]] = []

    def on_step(step: int, total: int, latents: Any) -> None:
        previews.append([preview_png(model, latents, index) for index in range(latents.shape[0])])

    specs = [
        GenerationSpec(prompt="a kite", seed=1, count=2, width=96),
        GenerationSpec(prompt="a pier", seed=5, width=96),
    ]
    generate_batch(model, specs, on_step=on_step)

    assert len(previews) == 4
    assert all(len(step) == 3 for step in previews)
    for step in previews:
        images = [decode(png) for png in step]
        assert {image.size for image in images} == {(48, 32)}  # latent size: 96x64 px / the tiny VAE's 2
        assert len({image.tobytes() for image in images}) == 3  # one picture per image of the batch
    assert decode(previews[0][0]).tobytes() != decode(previews[-1][0]).tobytes()  # and they change as it draws


def test_previews_shrink_to_max_side_and_never_grow(model: LoadedModel) -> None:
    latents = torch.randn(2, 4, 64, 96)

    assert decode(preview_png(model, latents, 1, max_side=48)).size == (48, 32)
    assert decode(preview_png(model, latents, 0, max_side=500)).size == (96, 64)
    with pytest.raises(IndexError):
        preview_png(model, latents, 2)


def test_a_preview_is_fast(model: LoadedModel) -> None:
    latents = torch.randn(4, 4, 64, 64)  # a batch of 512 px SD images
    timings = []
    for _ in range(20):
        started = time.perf_counter()
        preview_png(model, latents, 3)
        timings.append(time.perf_counter() - started)

    assert min(timings) < 0.005  # best of 20: other processes share this machine


@pytest.mark.parametrize(
    ("channels", "scaling", "expected"),
    [
        (4, 0.18215, SD1_FACTORS),  # SD 1.x / 2.x
        (4, 0.13025, SDXL_FACTORS),  # SDXL's VAE
        (16, 1.5305, SD3_FACTORS),  # SD3
        (16, 0.3611, None),  # Flux: packed latents, no published factors here
        (32, 0.41407, None),  # Sana's DC-AE
    ],
)
def test_factors_follow_the_vae(channels: int, scaling: float, expected: Any) -> None:
    assert latent_factors(fake_model(channels, scaling).pipe) is expected


def test_sd3_latents_preview_and_unknown_layouts_give_none() -> None:
    assert decode(preview_png(fake_model(16, 1.5305), torch.randn(1, 16, 8, 8, dtype=torch.bfloat16), 0)).size == (8, 8)
    flux = fake_model(16, 0.3611)
    assert preview_png(flux, torch.randn(1, 4096, 64), 0) is None  # Flux packs 2x2 patches: (batch, tokens, 64)
    sd = fake_model(4, 0.18215)
    assert preview_png(sd, torch.randn(1, 16, 8, 8), 0) is None  # channel count does not match the VAE
    assert preview_png(sd, None, 0) is None
    no_vae = LoadedModel("x", SimpleNamespace(), torch.device("cpu"), torch.float32, 1, 0.0, 64, 64)
    assert preview_png(no_vae, torch.randn(1, 4, 8, 8), 0) is None
