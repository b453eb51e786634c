"""LoRA styles, with real (random) LoRAs for the tiny model loaded through diffusers and peft on the CPU."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import save_file

from engine.errors import InvalidRequest
from engine.jobs import GeneratedImage, GenerationSpec
from engine.options import EngineOptions
from engine.pipeline import LoadedModel, generate, generate_batch, load_model_spec
from engine.registry import ModelSpec
from engine.styles import Style, StyleLibrary
from engine.tiny import create_tiny_lora

pytest.importorskip("peft")

INK_RANK, INK_ALPHA = 4, 16  # alpha != rank: the file's adapter metadata must carry the scale (16 / 4 = 4)


@pytest.fixture(scope="module")
def styles_dir(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("styles")
    create_tiny_lora(tiny_model_dir, folder / "ink.safetensors", rank=INK_RANK, alpha=INK_ALPHA, seed=1)
    create_tiny_lora(tiny_model_dir, folder / "pale.wash.safetensors", rank=2, alpha=2, seed=2)
    (folder / "pale.wash.json").write_text(json.dumps({"strength": 0.5, "description": "soft and light"}))
    create_tiny_lora(tiny_model_dir, folder / "odd.safetensors", rank=2, alpha=2, seed=3)
    (folder / "odd.json").write_text("{not json")
    save_file({"something.else": torch.ones(2, 2)}, str(folder / "broken.safetensors"))
    (folder / "notes.txt").write_text("not a style")
    return folder


@pytest.fixture(scope="module")
def model(tiny_model_dir: Path) -> LoadedModel:
    return load_model_spec(ModelSpec(name="tiny", source=str(tiny_model_dir)), EngineOptions(device="cpu"))


@pytest.fixture(scope="module")
def library(styles_dir: Path) -> StyleLibrary:
    return StyleLibrary(styles_dir)


def array(image: GeneratedImage) -> np.ndarray:
    with Image.open(io.BytesIO(image.png)) as decoded:
        return np.asarray(decoded.convert("RGB"), dtype=np.int16)


def draw(
    model: LoadedModel, library: StyleLibrary, style: str | None = None, strength: float | None = None
) -> np.ndarray:
    spec = GenerationSpec(prompt="a quiet harbour", seed=3, style=style, style_strength=strength)
    [image] = generate(model, spec, styles=library)
    return array(image)


def difference(first: np.ndarray, second: np.ndarray) -> int:
    return int(np.abs(first - second).max())


def test_the_folder_lists_its_styles_with_sidecar_defaults(library: StyleLibrary, styles_dir: Path) -> None:
    assert library.names() == ["broken", "ink", "odd", "pale.wash"]
    described = {style.name: style for style in library.describe()}
    assert described["pale.wash"] == Style("pale.wash", styles_dir / "pale.wash.safetensors", 0.5, "soft and light")
    assert described["odd"].strength == 1.0  # an unreadable sidecar falls back to the defaults (and logs)
    assert described["ink"].description == ""


def test_unknown_style_lists_the_choices(library: StyleLibrary, model: LoadedModel) -> None:
    with pytest.raises(InvalidRequest, match=r"no style called 'sepia'\. Choose one of: broken, ink, odd") as caught:
        library.apply(model, "sepia", None)

    assert caught.value.field == "style"


def test_an_empty_or_missing_folder(tmp_path: Path, model: LoadedModel, tiny_model_dir: Path) -> None:
    with pytest.raises(InvalidRequest, match="no styles are installed"):
        StyleLibrary(tmp_path).apply(model, "ink", None)
    missing = StyleLibrary(tmp_path / "missing")  # a default folder nobody created yet: simply no styles
    assert missing.names() == []
    (tmp_path / "missing").mkdir()
    create_tiny_lora(tiny_model_dir, tmp_path / "missing" / "late.safetensors")
    assert missing.names() == ["late"]  # picked up without a restart
    (tmp_path / "file").write_text("")
    with pytest.raises(NotADirectoryError):
        StyleLibrary(tmp_path / "file")


def test_a_style_changes_the_picture_and_no_style_brings_the_base_back_exactly(
    model: LoadedModel, library: StyleLibrary
) -> None:
    unet = model.pipe.unet
    base = draw(model, library)

    styled = draw(model, library, "ink")
    back = draw(model, library)

    assert difference(base, styled) > 10
    assert difference(base, back) == 0  # LoRA layers switched off, not merely turned down
    assert model.pipe.unet is unet  # the base model was never reloaded


def test_strength_scales_the_style_and_zero_is_the_base(model: LoadedModel, library: StyleLibrary) -> None:
    base = draw(model, library)

    zero = draw(model, library, "ink", 0.0)
    half = draw(model, library, "ink", 0.5)
    full = draw(model, library, "ink", 1.0)

    # Weight 0 adds lora_B(lora_A(x)) * 0.0 == 0.0 to every output: the base pixels, up to kernel rounding.
    assert difference(base, zero) <= 1
    assert 1 < difference(base, half) < difference(base, full)


def test_alpha_is_read_from_the_file_so_the_strength_is_right(model: LoadedModel, library: StyleLibrary) -> None:
    draw(model, library, "ink")
    adapter, _ = model.adapters["ink"]

    to_q = model.pipe.unet.down_blocks[1].attentions[0].transformer_blocks[0].attn1.to_q
    assert to_q.scaling[adapter] == pytest.approx(INK_ALPHA / INK_RANK)  # 1.0 (4x too weak) without the metadata


def test_each_style_loads_once_and_switching_is_cheap(model: LoadedModel, library: StyleLibrary) -> None:
    ink = draw(model, library, "ink")
    pale = draw(model, library, "pale.wash")  # the sidecar's strength 0.5
    assert model.active_style == ("pale.wash", 0.5)
    ink_again = draw(model, library, "ink")

    assert difference(ink, ink_again) == 0
    assert difference(ink, pale) > 10
    adapters = model.pipe.get_list_adapters()["unet"]
    assert sorted(adapters) == sorted(record[0] for record in model.adapters.values())
    assert len(adapters) == len(set(adapters)) == len(model.adapters)


def test_strength_out_of_range_is_refused(model: LoadedModel, library: StyleLibrary) -> None:
    with pytest.raises(InvalidRequest, match=r"from 0 to 2\.0") as caught:
        library.apply(model, "ink", 2.5)

    assert caught.value.field == "style_strength"
    with pytest.raises(InvalidRequest, match="no style called 'nope'"):
        library.check("nope")
    with pytest.raises(InvalidRequest, match="strength"):
        library.check("ink", -1.0)
    library.check("pale.wash")  # loads nothing
    library.check("ink", 2.0)


def test_a_lora_that_does_not_fit_is_an_invalid_request_and_leaves_the_model_working(
    model: LoadedModel, library: StyleLibrary
) -> None:
    base = draw(model, library)

    with pytest.raises(InvalidRequest, match="does not fit the model") as caught:
        draw(model, library, "broken")

    assert caught.value.field == "style"
    assert "broken" not in model.adapters
    assert difference(draw(model, library), base) == 0


def test_a_replaced_file_is_reloaded(tiny_model_dir: Path, tmp_path: Path, model: LoadedModel) -> None:
    create_tiny_lora(tiny_model_dir, tmp_path / "swap.safetensors", seed=5)
    library = StyleLibrary(tmp_path)
    before = draw(model, library, "swap")

    create_tiny_lora(tiny_model_dir, tmp_path / "swap.safetensors", seed=6, rank=8)  # other weights, other size
    after = draw(model, library, "swap")

    assert difference(before, after) > 10
    assert list(model.adapters).count("swap") == 1


def test_at_most_max_loaded_styles_stay_in_a_model(tiny_model_dir: Path, styles_dir: Path) -> None:
    model = load_model_spec(ModelSpec(name="tiny", source=str(tiny_model_dir)), EngineOptions(device="cpu"))
    library = StyleLibrary(styles_dir, max_loaded=1)

    draw(model, library, "ink")
    draw(model, library, "pale.wash")

    assert list(model.adapters) == ["pale.wash"]
    assert model.pipe.get_list_adapters()["unet"] == [model.adapters["pale.wash"][0]]


def test_a_styled_batch_matches_styled_images_alone(model: LoadedModel, library: StyleLibrary) -> None:
    specs = [
        GenerationSpec(prompt="a red door", seed=1, style="ink", style_strength=0.8),
        GenerationSpec(prompt="a blue door", seed=2, count=2, style="ink", style_strength=0.8),
    ]

    batched = generate_batch(model, specs, styles=library)
    alone = [generate(model, spec, styles=library) for spec in specs]

    for images, reference in zip(batched, alone, strict=True):
        for image, single in zip(images, reference, strict=True):
            assert difference(array(image), array(single)) <= 1


def test_a_style_for_another_model_on_the_demo_model_is_an_invalid_request(
    library: StyleLibrary, tmp_path: Path
) -> None:
    """The demo pipeline takes LoRAs (its own: see test_training_demo); an SD style does not fit it."""
    from engine.demo.pipeline import build_pipeline

    torch.manual_seed(0)
    build_pipeline(32, (32, 32), 1).save_pretrained(str(tmp_path / "tiny-demo"))
    demo = load_model_spec(ModelSpec(name="tiny-demo", source=str(tmp_path / "tiny-demo")), EngineOptions(device="cpu"))
    plain = GenerationSpec(prompt="a red circle", seed=1, steps=2)
    [before] = generate(demo, plain, styles=library)

    with pytest.raises(InvalidRequest) as caught:
        generate(demo, GenerationSpec(prompt="a red circle", seed=1, steps=2, style="ink"), styles=library)

    assert caught.value.field == "style"
    assert caught.value.message.startswith("The style 'ink' does not fit the model 'tiny-demo' (")
    [after] = generate(demo, plain, styles=library)
    assert after.width == 64
    assert difference(array(before), array(after)) == 0  # nothing of the failed load is left behind
