"""The invisible watermark: survives PNG and JPEG round trips, stays invisible, and never claims an unmarked image."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from moderation import watermark
from moderation.image_gate import synthetic_scene
from moderation.watermark import MIN_SIDE, WatermarkError, confidence, embed, extract, fits

PAYLOAD = bytes.fromhex("1a2b3c4d")


def photo_like(seed: int, width: int = 512, height: int = 512) -> Image.Image:
    """Smooth random colour fields plus sensor-like noise: closer to a photograph than a drawing."""
    rng = np.random.default_rng(seed)
    coarse = rng.uniform(30, 225, (6, 6, 3)).astype(np.uint8)
    smooth = Image.fromarray(coarse).resize((width, height), Image.Resampling.BICUBIC)
    pixels = np.asarray(smooth, dtype=np.float32) + rng.normal(0, rng.uniform(1, 10), (height, width, 3))
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))


def reencode(image: Image.Image, format: str, **options: int) -> Image.Image:
    buffer = io.BytesIO()
    image.save(buffer, format=format, **options)
    with Image.open(io.BytesIO(buffer.getvalue())) as reopened:
        reopened.load()
        return reopened.copy()


def psnr(a: Image.Image, b: Image.Image) -> float:
    diff = np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64)
    return float(10 * np.log10(255**2 / np.mean(diff**2)))


@pytest.fixture(scope="module", params=["scene", "photo"])
def original(request: pytest.FixtureRequest) -> Image.Image:
    return synthetic_scene(512, seed=5) if request.param == "scene" else photo_like(11)


@pytest.fixture(scope="module")
def marked(original: Image.Image) -> Image.Image:
    return embed(original, PAYLOAD)


def test_the_mark_reads_back_after_a_png_round_trip(marked: Image.Image) -> None:
    assert extract(reencode(marked, "PNG")) == PAYLOAD


@pytest.mark.parametrize("quality", [90, 75])
def test_the_mark_survives_jpeg(marked: Image.Image, quality: int) -> None:
    assert extract(reencode(marked, "JPEG", quality=quality)) == PAYLOAD


def test_the_mark_is_invisible(original: Image.Image, marked: Image.Image) -> None:
    assert marked.size == original.size
    assert marked.mode == original.mode
    assert psnr(original, marked) >= 38.0


def test_different_payloads_read_back_as_themselves(original: Image.Image) -> None:
    for payload in (b"\x00\x00\x00\x00", b"\xff\xff\xff\xff", b"job1"):
        assert extract(embed(original, payload)) == payload


@pytest.mark.parametrize(("width", "height"), [(1024, 768), (517, 515), (256, 256)])
def test_other_sizes_carry_the_mark(width: int, height: int) -> None:
    image = photo_like(3, width, height)
    assert extract(reencode(embed(image, PAYLOAD), "JPEG", quality=75)) == PAYLOAD


def test_alpha_and_greyscale_images_keep_their_mode() -> None:
    rgba = photo_like(4).convert("RGBA")
    rgba.putalpha(200)
    marked_rgba = embed(rgba, PAYLOAD)
    assert marked_rgba.mode == "RGBA"
    assert np.array_equal(np.asarray(marked_rgba)[..., 3], np.asarray(rgba)[..., 3])
    assert extract(marked_rgba) == PAYLOAD
    grey = embed(photo_like(5).convert("L"), PAYLOAD)
    assert grey.mode == "L"
    assert extract(reencode(grey, "JPEG", quality=75)) == PAYLOAD


def test_unmarked_images_are_never_claimed() -> None:
    rng = np.random.default_rng(2024)
    y, x = np.mgrid[0:512, 0:512]
    images = [synthetic_scene(512, seed=seed) for seed in range(10)]
    images += [photo_like(seed) for seed in range(100, 115)]
    images += [Image.fromarray(rng.integers(0, 256, (512, 512, 3), dtype=np.uint8)) for _ in range(5)]
    images += [Image.new("RGB", (512, 512), tuple(int(v) for v in rng.integers(0, 256, 3))) for _ in range(5)]
    images += [Image.new("RGB", (512, 512), colour) for colour in [(0, 0, 0), (255, 255, 255), (128, 128, 128)]]
    images += [
        Image.fromarray(np.stack([(x * a + y * b) % 256 for a, b in gradient], axis=-1).astype(np.uint8))
        for gradient in [((0.3, 0.1), (0.2, 0.4), (0.05, 0.45)), ((0.5, 0.0), (0.0, 0.5), (0.25, 0.25))]
    ]
    images += [reencode(image, "JPEG", quality=75) for image in images[:5]]
    for image in images:
        assert extract(image) is None
        assert confidence(image) < 0.2


def test_small_images_are_refused_clearly_and_never_read() -> None:
    tiny = photo_like(6, 64, 64)
    assert not fits(tiny)
    with pytest.raises(WatermarkError, match=f"at least {MIN_SIDE}x{MIN_SIDE}"):
        embed(tiny, PAYLOAD)
    assert extract(tiny) is None
    assert not fits(photo_like(6, 1024, 200))


def test_the_payload_has_a_fixed_size(original: Image.Image) -> None:
    with pytest.raises(WatermarkError, match="exactly 4 bytes"):
        embed(original, b"too long")


def test_an_image_with_no_room_for_the_mark_is_refused() -> None:
    with pytest.raises(WatermarkError, match="did not read back"):
        embed(Image.new("RGB", (512, 512), (0, 0, 0)), PAYLOAD)


def test_a_resized_copy_is_not_misread(marked: Image.Image) -> None:
    # The block grid moves when the image is resized, so the mark is usually lost; it must never read as another id.
    for size in [(384, 384), (640, 640)]:
        assert extract(marked.resize(size, Image.Resampling.LANCZOS)) in (None, PAYLOAD)


def test_palette_images_come_back_as_rgb() -> None:
    palette = photo_like(8).convert("P", palette=Image.Palette.ADAPTIVE)
    marked = embed(palette, PAYLOAD)
    assert marked.mode == "RGB"
    assert extract(marked) == PAYLOAD


def test_the_numpy_haar_band_matches_pywavelets() -> None:
    pywt = pytest.importorskip("pywt")
    luma = np.asarray(photo_like(9).convert("L"), dtype=np.float64)
    blocks, (height, width) = watermark._blocks(luma)
    ll = pywt.dwt2(luma[:height, :width], "haar")[0]
    expected = ll.reshape(height // 8, 4, width // 8, 4).transpose(0, 2, 1, 3).reshape(-1, 4, 4)
    assert np.allclose(blocks, expected)
