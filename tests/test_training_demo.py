"""`imagine train` on the demo model (a tiny random one, on the CPU): the same trainer, files and serving as SD."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors import safe_open
from safetensors.torch import load_file

from bot.cli import main
from engine.demo.pipeline import DemoPipeline, build_pipeline
from engine.jobs import GenerationSpec
from engine.pipeline import LoadedModel, generate, load_model
from engine.styles import StyleLibrary, takes_lora
from engine.training import TrainConfig, TrainingUsageError, train
from engine.training.export import LORA_FILE, register_style
from engine.training.lora import TrainResult

pytest.importorskip("peft")

RANK, ALPHA = 4, 16  # alpha != rank: a reload that forgot alpha would be 4x too weak
PROMPT = "a red circle on a blue background"


@pytest.fixture(scope="module", autouse=True)
def one_thread() -> Iterator[None]:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def demo_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("tiny-demo") / "tiny-demo"
    torch.manual_seed(0)
    build_pipeline(32, (32, 32), 1).save_pretrained(str(folder))
    return folder


@pytest.fixture(scope="module")
def shapes(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("shapes")
    assert main(["demo", "dataset", str(folder), "--count", "4"]) == 0
    return folder


def config(data: Path, base: Path, output: Path, **overrides: object) -> TrainConfig:
    settings: dict[str, object] = {
        "data": data,
        "base": str(base),
        "output": output,
        "steps": 12,
        "rank": RANK,
        "alpha": ALPHA,
        "learning_rate": 2e-2,
        "resolution": 32,
        "batch_size": 2,
        "device": "cpu",
    }
    settings.update(overrides)
    return TrainConfig(**settings)  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def trained(demo_dir: Path, shapes: Path, tmp_path_factory: pytest.TempPathFactory) -> TrainResult:
    output = tmp_path_factory.mktemp("trained")
    settings = config(shapes, demo_dir, output, validation_prompts=[PROMPT], validation_every=6)
    return train(settings, progress=False)


def draw(model: LoadedModel, library: StyleLibrary | None = None, style: str | None = None) -> np.ndarray:
    spec = GenerationSpec(prompt=PROMPT, seed=7, steps=2, width=32, height=32, guidance_scale=2.0, style=style)
    [image] = generate(model, spec, styles=library)
    with Image.open(io.BytesIO(image.png)) as decoded:
        return np.asarray(decoded.convert("RGB"), dtype=np.int16)


def difference(first: np.ndarray, second: np.ndarray) -> int:
    return int(np.abs(first - second).max())


def test_the_demo_pipeline_takes_loras(demo_dir: Path) -> None:
    assert takes_lora(load_model(str(demo_dir), device="cpu").pipe)


def test_loss_goes_down_and_the_lora_covers_unet_and_text_encoder(trained: TrainResult) -> None:
    assert isinstance(trained.model.pipe, DemoPipeline)
    assert len(trained.losses) == 12
    assert all(np.isfinite(trained.losses))
    assert trained.probe_after < trained.probe_before * 0.97, (trained.probe_before, trained.probe_after)
    assert sorted(p.name for p in (trained.output / "validation").glob("*.png")) == [
        "step-000006-0.png",
        "step-000012-0.png",
    ]
    with Image.open(trained.output / "validation" / "step-000012-0.png") as image:
        assert image.size == (32, 32)
    with safe_open(str(trained.lora), framework="pt") as opened:
        metadata = opened.metadata()
        keys = list(opened.keys())
    adapter = json.loads(metadata["lora_adapter_metadata"])
    assert (adapter["unet.r"], adapter["unet.lora_alpha"]) == (RANK, ALPHA)
    assert (adapter["text_encoder.r"], adapter["text_encoder.lora_alpha"]) == (RANK, ALPHA)
    assert any(key.startswith("unet.") for key in keys)
    assert any(key.startswith("text_encoder.") for key in keys)


def test_the_lora_reloads_at_the_trained_strength_as_a_style(
    trained: TrainResult, demo_dir: Path, tmp_path: Path
) -> None:
    in_memory = draw(trained.model)
    register_style(trained.lora, tmp_path / "styles", "shapes", description="demo shapes")
    library = StyleLibrary(tmp_path / "styles")

    fresh = load_model(str(demo_dir), device="cpu")
    base = draw(fresh, library)
    styled = draw(fresh, library, "shapes")
    back = draw(fresh, library)

    assert difference(in_memory, styled) <= 1  # alpha survived the round trip
    assert difference(base, styled) >= 8
    assert difference(base, back) == 0


def test_generate_with_the_lora_changes_the_image_and_scale_0_draws_the_base(
    trained: TrainResult, demo_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name, value in {
        "IMAGINE_DATA_DIR": str(tmp_path / "state"),
        "IMAGINE_ENGINE_DEVICE": "cpu",
        "TRANSFORMERS_VERBOSITY": "error",
        "DIFFUSERS_VERBOSITY": "error",
        "HF_HUB_DISABLE_PROGRESS_BARS": "1",
    }.items():
        monkeypatch.setenv(name, value)
    common = ["generate", PROMPT, "--model", str(demo_dir), "--seed", "7", "--steps", "2", "--guidance", "2"]
    assert main([*common, "--out", str(tmp_path / "base")]) == 0
    assert main([*common, "--out", str(tmp_path / "lora"), "--lora", str(trained.output)]) == 0
    assert main([*common, "--out", str(tmp_path / "off"), "--lora", str(trained.lora), "--lora-scale", "0"]) == 0
    [base], [lora], [off] = (list((tmp_path / kind).glob("*.png")) for kind in ("base", "lora", "off"))

    def pixels(path: Path) -> np.ndarray:
        with Image.open(path) as image:
            return np.asarray(image.convert("RGB"), dtype=np.int16)

    assert difference(pixels(base), pixels(lora)) >= 8
    assert difference(pixels(base), pixels(off)) == 0


class Interrupted(Exception):
    pass


def test_resume_continues_exactly_like_an_uninterrupted_run(demo_dir: Path, shapes: Path, tmp_path: Path) -> None:
    options: dict[str, object] = {
        "steps": 4,
        "batch_size": 1,
        "gradient_accumulation": 2,
        "lr_schedule": "cosine",
        "flip": True,
        "caption_dropout": 0.3,
        "checkpoint_every": 2,
        "seed": 5,
    }
    whole = train(config(shapes, demo_dir, tmp_path / "whole", **options), progress=False)

    def stop_at_two(step: int, loss: float) -> None:
        if step == 2:
            raise Interrupted

    with pytest.raises(Interrupted):
        train(config(shapes, demo_dir, tmp_path / "split", **options), progress=False, on_step=stop_at_two)
    checkpoint = load_file(str(tmp_path / "split" / "checkpoints" / "checkpoint-000002" / "adapter.safetensors"))
    assert any(key.startswith("text_encoder.") for key in checkpoint)
    resumed = train(config(shapes, demo_dir, tmp_path / "split", resume="latest", **options), progress=False)

    assert resumed.losses == whole.losses[2:]
    expected, got = load_file(str(whole.lora)), load_file(str(resumed.lora))
    assert expected.keys() == got.keys()
    assert all(torch.equal(expected[key], got[key]) for key in expected)


@pytest.mark.parametrize(
    ("overrides", "says"),
    [
        ({"resolution": 64}, "is the demo model, which draws at 32 px: use --resolution 32 (got 64)"),
        ({"kohya": True}, "--kohya writes Stable Diffusion's kohya format: leave it out for the demo model"),
    ],
)
def test_demo_only_options_are_refused(
    overrides: dict[str, object], says: str, demo_dir: Path, shapes: Path, tmp_path: Path
) -> None:
    with pytest.raises(TrainingUsageError) as caught:
        train(config(shapes, demo_dir, tmp_path / "out", steps=1, **overrides), progress=False)
    assert says in str(caught.value)
    assert not (tmp_path / "out" / LORA_FILE).exists()


def test_cli_trains_the_demo_model_with_progress_checkpoints_and_a_style(
    demo_dir: Path, shapes: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    styles, out = tmp_path / "styles", tmp_path / "out"
    monkeypatch.setenv("IMAGINE_ENGINE_STYLES_DIR", str(styles))
    monkeypatch.setenv("IMAGINE_DATA_DIR", str(tmp_path / "state"))
    monkeypatch.setenv("IMAGINE_ENGINE_DEVICE", "cpu")
    code = main(
        ["train", str(shapes), "--base", str(demo_dir), "--output", str(out), "--steps", "2", "--resolution", "32",
         "--rank", "2", "--checkpoint-every", "1", "--style", "shapes"]
    )  # fmt: skip
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert captured.out.splitlines() == [str(styles / "shapes.safetensors"), str(out / LORA_FILE)]
    assert "loss=" in captured.err
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["checkpoint-000001", "checkpoint-000002"]
    assert json.loads((out / "training.json").read_text())["images"] == 4

    # Without --resolution the demo model trains at its own 32 px; any other size is refused before training.
    assert (
        main(["train", str(shapes), "--base", str(demo_dir), "--output", str(tmp_path / "plain"), "--steps", "1"]) == 0
    )
    capsys.readouterr()
    bigger = ["--output", str(tmp_path / "big"), "--steps", "1", "--resolution", "64"]
    assert main(["train", str(shapes), "--base", str(demo_dir), *bigger]) == 2
    assert capsys.readouterr().err.splitlines() == [
        f"imagine: --base {demo_dir} is the demo model, which draws at 32 px: use --resolution 32 (got 64)"
    ]
    assert not (tmp_path / "big" / LORA_FILE).exists()
