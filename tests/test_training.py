"""Fine-tuning a LoRA on the tiny model, on the CPU: training, saving, resuming, serving, and every dataset error."""

from __future__ import annotations

import io
import json
import subprocess
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from bot_process import IMAGINE, imagine_env
from PIL import Image
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from bot.cli import main
from engine.demo import MODEL_DIR
from engine.jobs import GeneratedImage, GenerationSpec
from engine.pipeline import LoadedModel, generate, load_model
from engine.styles import StyleLibrary
from engine.training import DatasetError, TrainConfig, TrainingUsageError, train
from engine.training.dataset import BatchPlan, load_class_examples, load_examples, make_buckets
from engine.training.export import KOHYA_FILE, LORA_FILE, register_style
from engine.training.lora import TrainResult

pytest.importorskip("peft")

RANK, ALPHA = 4, 16  # alpha != rank: a reload that forgot alpha would be 4x too weak
RESOLUTION = 16
COLOURS = {"red": (220, 30, 30), "green": (30, 200, 40), "blue": (30, 40, 220), "yellow": (230, 220, 30)}


def write_image(path: Path, colour: tuple[int, int, int], size: tuple[int, int] = (24, 20)) -> Path:
    image = Image.new("RGB", size, colour)
    image.paste((255, 255, 255), (4, 4, size[0] // 2, size[1] // 2))
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path)
    return path


def captioned_folder(folder: Path) -> Path:
    for name, colour in COLOURS.items():
        write_image(folder / f"{name}.png", colour)
        (folder / f"{name}.txt").write_text(f"a {name} square\n")
    return folder


def config(data: Path, base: Path, output: Path, **overrides: object) -> TrainConfig:
    settings: dict[str, object] = {
        "data": data,
        "base": str(base),
        "output": output,
        "steps": 4,
        "rank": RANK,
        "alpha": ALPHA,
        "learning_rate": 5e-2,
        "resolution": RESOLUTION,
        "batch_size": 2,
        "device": "cpu",
    }
    settings.update(overrides)
    return TrainConfig(**settings)  # type: ignore[arg-type]


def array(image: GeneratedImage) -> np.ndarray:
    with Image.open(io.BytesIO(image.png)) as decoded:
        return np.asarray(decoded.convert("RGB"), dtype=np.int16)


def draw(model: LoadedModel, library: StyleLibrary | None = None, style: str | None = None) -> np.ndarray:
    spec = GenerationSpec(prompt="a red square", seed=7, steps=2, width=32, height=32, style=style)
    [image] = generate(model, spec, styles=library)
    return array(image)


def difference(first: np.ndarray, second: np.ndarray) -> int:
    return int(np.abs(first - second).max())


@pytest.fixture(scope="module", autouse=True)
def one_thread() -> Iterator[None]:
    """Tensors this small train faster on one thread, and far faster when other work shares the cores."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return captioned_folder(tmp_path_factory.mktemp("data"))


@pytest.fixture(scope="module")
def trained(tiny_model_dir: Path, data_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> TrainResult:
    output = tmp_path_factory.mktemp("trained")
    return train(
        config(
            data_dir,
            tiny_model_dir,
            output,
            steps=16,
            lr_schedule="cosine",
            warmup_steps=2,
            validation_prompts=["a red square"],
            validation_every=8,
            kohya=True,
        ),
        progress=False,
    )


# --- training and the saved LoRA --------------------------------------------------------------------------------


def test_loss_goes_down_on_a_small_dataset(trained: TrainResult) -> None:
    assert len(trained.losses) == 16
    assert all(np.isfinite(trained.losses))
    assert trained.probe_after < trained.probe_before * 0.97, (trained.probe_before, trained.probe_after)
    summary = json.loads((trained.output / "training.json").read_text())
    assert summary["probe_loss"] == {"before": trained.probe_before, "after": trained.probe_after}
    assert summary["settings"]["alpha"] == ALPHA
    assert sorted(p.name for p in (trained.output / "validation").glob("*.png")) == [
        "step-000008-0.png",
        "step-000016-0.png",
    ]


def test_the_lora_file_carries_its_alpha(trained: TrainResult) -> None:
    with safe_open(str(trained.lora), framework="pt") as opened:
        metadata = opened.metadata()
    adapter = json.loads(metadata["lora_adapter_metadata"])
    assert adapter["unet.r"] == RANK
    assert adapter["unet.lora_alpha"] == ALPHA
    kohya = load_file(str(trained.output / KOHYA_FILE))
    alphas = {float(value) for key, value in kohya.items() if key.endswith(".alpha")}
    assert alphas == {float(ALPHA)}
    assert all(key.startswith("lora_unet_") for key in kohya)


def test_reloaded_lora_draws_like_the_trained_model_and_off_draws_the_base(
    trained: TrainResult, tiny_model_dir: Path, tmp_path: Path
) -> None:
    in_memory = draw(trained.model)
    styles = tmp_path / "styles"
    register_style(trained.lora, styles, "squares", description="test squares")
    shutil_kohya = styles / "squares_kohya.safetensors"
    shutil_kohya.write_bytes((trained.output / KOHYA_FILE).read_bytes())
    library = StyleLibrary(styles)

    fresh = load_model(str(tiny_model_dir), device="cpu")
    base = draw(fresh, library)
    styled = draw(fresh, library, "squares")
    kohya = draw(fresh, library, "squares_kohya")
    back = draw(fresh, library)

    assert difference(in_memory, styled) <= 1  # same strength as trained: alpha survived the round trip
    assert difference(in_memory, kohya) <= 1
    assert difference(base, styled) >= 8  # the LoRA really changes the picture at the same seed
    assert difference(base, back) == 0  # and without it the model draws the base image again


def test_a_style_registered_after_the_library_exists_is_picked_up(trained: TrainResult, tmp_path: Path) -> None:
    library = StyleLibrary(tmp_path / "styles")
    assert library.names() == []
    register_style(trained.lora, tmp_path / "styles", "late", description="added while running", strength=0.8)
    [style] = library.describe()
    assert (style.name, style.strength, style.description) == ("late", 0.8, "added while running")
    assert sorted(p.name for p in (tmp_path / "styles").iterdir()) == ["late.json", "late.safetensors"]


# --- resume -----------------------------------------------------------------------------------------------------


class Interrupted(Exception):
    pass


def test_resume_continues_exactly_like_an_uninterrupted_run(
    tiny_model_dir: Path, data_dir: Path, tmp_path: Path
) -> None:
    options: dict[str, object] = {
        "steps": 4,
        "batch_size": 1,
        "gradient_accumulation": 2,
        "lr_schedule": "cosine",
        "warmup_steps": 1,
        "crop": "random",
        "flip": True,
        "caption_dropout": 0.3,
        "noise_offset": 0.1,
        "min_snr_gamma": 5.0,
        "checkpoint_every": 2,
        "seed": 11,
    }
    whole = train(config(data_dir, tiny_model_dir, tmp_path / "whole", **options), progress=False)

    def stop_at_two(step: int, loss: float) -> None:
        if step == 2:
            raise Interrupted

    with pytest.raises(Interrupted):
        train(config(data_dir, tiny_model_dir, tmp_path / "split", **options), progress=False, on_step=stop_at_two)
    assert not (tmp_path / "split" / LORA_FILE).exists()
    resumed = train(config(data_dir, tiny_model_dir, tmp_path / "split", resume="latest", **options), progress=False)

    assert resumed.losses == whole.losses[2:]
    expected, got = load_file(str(whole.lora)), load_file(str(resumed.lora))
    assert expected.keys() == got.keys()
    assert all(torch.equal(expected[key], got[key]) for key in expected)
    first = load_file(str(tmp_path / "split" / "checkpoints" / "checkpoint-000002" / "adapter.safetensors"))
    assert any(not torch.equal(value, torch.zeros_like(value)) for key, value in first.items() if "lora_B" in key)

    with pytest.raises(TrainingUsageError, match="trained with --rank 4, this run has 8"):
        train(config(data_dir, tiny_model_dir, tmp_path / "split", resume="latest", **{**options, "rank": 8}))
    with pytest.raises(TrainingUsageError, match="not a checkpoint folder"):
        train(config(data_dir, tiny_model_dir, tmp_path / "split", resume=str(tmp_path / "split")))
    with pytest.raises(TrainingUsageError, match="no checkpoint"):
        train(config(data_dir, tiny_model_dir, tmp_path / "none", resume="latest"))


def test_gradient_checkpointing_trains_the_same_weights(tiny_model_dir: Path, data_dir: Path, tmp_path: Path) -> None:
    plain = train(config(data_dir, tiny_model_dir, tmp_path / "plain", steps=1), progress=False)
    saving = train(
        config(data_dir, tiny_model_dir, tmp_path / "ckpt", steps=1, gradient_checkpointing=True), progress=False
    )
    assert saving.model.pipe.unet.is_gradient_checkpointing
    assert not plain.model.pipe.unet.is_gradient_checkpointing
    expected, got = load_file(str(plain.lora)), load_file(str(saving.lora))
    assert all(torch.allclose(expected[key], got[key], atol=1e-6) for key in expected)


# --- options ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("overrides", "says"),
    [
        ({"steps": 0}, "--steps must be a whole number of at least 1"),
        ({"rank": 0}, "--rank must be"),
        ({"alpha": -1.0}, "--alpha must be a number above 0"),
        ({"learning_rate": 0.0}, "--learning-rate must be above 0"),
        ({"lr_schedule": "steps"}, "--lr-schedule must be one of constant, cosine, linear"),
        ({"warmup_steps": 4}, "--warmup-steps (4) must be fewer than --steps (4)"),
        ({"resolution": 100}, "--resolution must be a multiple of 8"),
        ({"crop": "diagonal"}, "--crop must be one of center, random"),
        ({"caption_dropout": 1.0}, "--caption-dropout must be from 0 up to"),
        ({"min_snr_gamma": 0.0}, "--min-snr-gamma must be above 0"),
        ({"noise_offset": 2.0}, "--noise-offset must be from 0 to 1"),
        ({"mixed_precision": "fp8"}, "--mixed-precision must be one of no, fp16, bf16"),
        ({"validation_every": 2}, "--validation-every needs at least one --validation-prompt"),
        ({"class_prompt": "a square"}, "--class-data is missing"),
        ({"class_prompt": "a square", "class_data": Path("c")}, "needs --instance-prompt as well"),
        ({"instance_prompt": " "}, "--instance-prompt is empty"),
        ({"batch_size": 0}, "--batch-size must be a whole number of at least 1 (got 0)"),
        ({"gradient_accumulation": 0}, "--gradient-accumulation must be a whole number of at least 1 (got 0)"),
        ({"resolution": 0}, "--resolution must be a multiple of 8, at least 16 (got 0)"),
        ({"checkpoint_every": 0}, "--checkpoint-every must be a whole number of at least 1 (got 0)"),
        ({"validation_every": 0, "validation_prompts": ["x"]}, "--validation-every must be a whole number of at least"),
    ],
)
def test_bad_options_are_refused_with_the_option_named(
    overrides: dict[str, object], says: str, data_dir: Path, tmp_path: Path
) -> None:
    with pytest.raises(TrainingUsageError) as caught:
        config(data_dir, tmp_path / "no-model", tmp_path / "out", **overrides).check()
    assert says in str(caught.value)


@pytest.mark.parametrize(
    ("overrides", "says"),
    [
        ({"rank": 8}, "--rank applies to LoRA training; leave it out with --full"),
        ({"flip": True, "mixed_precision": "fp16"}, "--flip, --mixed-precision apply to LoRA training; leave them out"),
        ({"validation_prompts": ["x"]}, "--validation-prompt applies to LoRA training"),
        ({"batch_size": 0}, "--batch-size must be a whole number of at least 1 (got 0)"),
        ({"steps": 0}, "--steps must be a whole number of at least 1 (got 0)"),
        ({"learning_rate": 0.0}, "--learning-rate must be above 0"),
        ({"checkpoint_every": 0}, "--checkpoint-every must be a whole number of at least 1 (got 0)"),
    ],
)
def test_full_training_refuses_lora_options_and_bad_numbers(
    overrides: dict[str, object], says: str, tmp_path: Path
) -> None:
    full = {"rank": 16, "alpha": None, "learning_rate": 5e-4, "batch_size": 32, **overrides}
    with pytest.raises(TrainingUsageError) as caught:
        config(tmp_path, tmp_path / "demo", tmp_path / "out", **full).check_full()
    assert says in str(caught.value)


def test_full_training_accepts_lora_options_left_at_their_defaults(tmp_path: Path) -> None:
    defaults = {"rank": 16, "flip": False, "mixed_precision": "no", "validation_prompts": [], "warmup_steps": 0}
    config(tmp_path, tmp_path / "demo", tmp_path / "out", alpha=None, **defaults).check_full()


def test_mixed_precision_is_refused_on_a_cpu(data_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(TrainingUsageError, match="--mixed-precision fp16 needs a CUDA GPU"):
        train(config(data_dir, tmp_path / "no-model", tmp_path / "out", mixed_precision="fp16"))
    assert not (tmp_path / "out").exists()


# --- dataset shapes and buckets ---------------------------------------------------------------------------------


def test_the_three_data_shapes_are_read(tmp_path: Path) -> None:
    sidecars = captioned_folder(tmp_path / "kohya")
    (sidecars / "nested").mkdir()
    write_image(sidecars / "nested" / "more.png", (1, 2, 3))
    (sidecars / "nested" / "more.txt").write_text("nested caption")
    found = load_examples(sidecars, resolution=RESOLUTION, instance_prompt=None)
    assert {e.path.name: e.caption for e in found}["more.png"] == "nested caption"
    assert len(found) == 5

    jsonl = tmp_path / "imagefolder"
    for name, colour in COLOURS.items():
        write_image(jsonl / f"{name}.png", colour)
    lines = [json.dumps({"file_name": f"{name}.png", "text": f"{name} thing"}) for name in COLOURS]
    (jsonl / "metadata.jsonl").write_text("\n".join(lines) + "\n\n")
    assert sorted(e.caption for e in load_examples(jsonl, resolution=RESOLUTION, instance_prompt=None)) == sorted(
        f"{name} thing" for name in COLOURS
    )

    dreambooth = tmp_path / "dreambooth"
    for name, colour in COLOURS.items():
        write_image(dreambooth / f"{name}.jpg", colour)
    found = load_examples(dreambooth, resolution=RESOLUTION, instance_prompt="a sks square")
    assert {e.caption for e in found} == {"a sks square"}


def test_buckets_keep_batches_to_one_aspect_ratio() -> None:
    buckets = make_buckets(64, 8)
    assert (64, 64) in buckets
    assert all(w % 8 == 0 and h % 8 == 0 and w * h <= 64 * 64 and max(w / h, h / w) <= 2 for w, h in buckets)
    from engine.training.dataset import Example

    examples = [Example(Path(f"{i}.png"), "x", *size) for i, size in enumerate([(100, 50)] * 3 + [(50, 100)] * 3)]
    plan = BatchPlan(examples, batch_size=2, resolution=64, seed=3, buckets=buckets)
    assert len(plan.bucket_counts()) == 2
    for number in range(8):
        batch = plan.batch(number)
        assert len({(e.width, e.height) for e in batch.examples}) == 1
        wide = batch.examples[0].width > batch.examples[0].height
        assert (batch.size[0] > batch.size[1]) == wide
    again = BatchPlan(examples, batch_size=2, resolution=64, seed=3, buckets=buckets)
    assert [again.batch(n).examples for n in range(8)] == [plan.batch(n).examples for n in range(8)]


# --- dataset errors ---------------------------------------------------------------------------------------------


def problems_of(folder: Path, *, instance_prompt: str | None = None, batch_size: int = 1) -> list[str]:
    with pytest.raises(DatasetError) as caught:
        load_examples(folder, resolution=RESOLUTION, instance_prompt=instance_prompt, batch_size=batch_size)
    return [str(problem) for problem in caught.value.problems]


def test_missing_folder_and_empty_folder(tmp_path: Path) -> None:
    [missing] = problems_of(tmp_path / "nowhere")
    assert missing == f"{tmp_path / 'nowhere'}: does not exist: give the folder that holds the training images"
    (tmp_path / "empty").mkdir()
    [empty] = problems_of(tmp_path / "empty")
    assert empty.startswith(f"{tmp_path / 'empty'}: holds no images")


def test_every_caption_and_image_problem_is_reported_together(tmp_path: Path) -> None:
    folder = captioned_folder(tmp_path / "data")
    write_image(folder / "uncaptioned.png", (9, 9, 9))
    write_image(folder / "blank.png", (8, 8, 8))
    (folder / "blank.txt").write_text("  \n")
    (folder / "broken.png").write_bytes(b"not a png at all")
    (folder / "broken.txt").write_text("a broken file")
    write_image(folder / "tiny.png", (7, 7, 7), size=(6, 6))
    (folder / "tiny.txt").write_text("a tiny image")

    problems = problems_of(folder)
    assert problems == [
        f"{folder / 'blank.txt'}: is empty: write the caption for its image in it",
        f"{folder / 'broken.png'}: cannot be read as an image (UnidentifiedImageError): re-save it or remove it",
        f"{folder / 'tiny.png'}: is only 6x6; at --resolution 16 its shorter side must be at least 8 px: "
        "use a larger copy, remove it, or lower --resolution",
        f"{folder / 'uncaptioned.png'}: has no caption: write it in uncaptioned.txt, or pass --instance-prompt",
    ]


def test_metadata_problems_name_the_line(tmp_path: Path) -> None:
    folder = tmp_path / "data"
    for name, colour in COLOURS.items():
        write_image(folder / f"{name}.png", colour)
    lines = [
        json.dumps({"file_name": "red.png", "text": "red"}),
        "{broken",
        json.dumps({"text": "no file"}),
        json.dumps({"file_name": "green.png"}),
        json.dumps({"file_name": "ghost.png", "text": "ghost"}),
        json.dumps({"file_name": "red.png", "text": "red again"}),
        json.dumps({"file_name": "blue.png", "text": "blue"}),
    ]
    (folder / "metadata.jsonl").write_text("\n".join(lines) + "\n")
    metadata = folder / "metadata.jsonl"
    assert problems_of(folder) == [
        f'{metadata}, line 2: is not JSON: write {{"file_name": "x.png", "text": "a caption"}}',
        f'{metadata}, line 3: has no "file_name": name the image this line describes',
        f'{metadata}, line 4: has no "text" for green.png: add the caption',
        f"{metadata}, line 5: names ghost.png, which does not exist: fix the name",
        f"{metadata}, line 6: describes red.png a second time: keep one line",
        f"{folder / 'green.png'}: has no line in metadata.jsonl: add one, or move the image out",
        f"{folder / 'yellow.png'}: has no line in metadata.jsonl: add one, or move the image out",
    ]


def test_metadata_and_sidecars_that_agree_are_read_as_one(tmp_path: Path) -> None:
    folder = captioned_folder(tmp_path / "data")
    lines = [json.dumps({"file_name": f"{name}.png", "text": f"a {name} square"}) for name in COLOURS]
    (folder / "metadata.jsonl").write_text("\n".join(lines) + "\n")
    (folder / "red.txt").unlink()  # an image captioned by the metadata alone is fine too
    found = load_examples(folder, resolution=RESOLUTION, instance_prompt=None)
    assert sorted(e.caption for e in found) == sorted(f"a {name} square" for name in COLOURS)


def test_metadata_and_sidecars_that_disagree_are_each_reported(tmp_path: Path) -> None:
    folder = captioned_folder(tmp_path / "data")
    write_image(folder / "extra.png", (5, 5, 5))
    (folder / "extra.txt").write_text("an extra square")
    lines = [json.dumps({"file_name": f"{name}.png", "text": f"a {name} square"}) for name in COLOURS]
    lines[1] = json.dumps({"file_name": "green.png", "text": "a lime square"})
    (folder / "metadata.jsonl").write_text("\n".join(lines) + "\n")
    (folder / "blue.txt").write_text("a navy square\n")

    fix = "remove one of the two caption sources (the .txt files or metadata.jsonl)"
    assert problems_of(folder) == [
        f'{folder / "blue.txt"}: says "a navy square" but metadata.jsonl says "a blue square" for blue.png: {fix}',
        f"{folder / 'extra.png'}: has a caption in extra.txt but no line in metadata.jsonl: add the line, or delete "
        "metadata.jsonl to caption by the .txt files alone",
        f'{folder / "green.txt"}: says "a green square" but metadata.jsonl says "a lime square" for green.png: {fix}',
    ]


def test_instance_prompt_with_captions_is_refused(tmp_path: Path) -> None:
    sidecars = captioned_folder(tmp_path / "sidecars")
    [both] = problems_of(sidecars, instance_prompt="a sks square")
    assert "--instance-prompt gives every image the same caption: drop one of the two" in both


def test_too_few_images(tmp_path: Path) -> None:
    folder = tmp_path / "one"
    write_image(folder / "only.png", (1, 1, 1))
    [few] = problems_of(folder, instance_prompt="a thing")
    assert few == f"{folder}: has 1 image(s); training needs at least 2: add more"
    [big_batch] = problems_of(captioned_folder(tmp_path / "four"), batch_size=8)
    assert big_batch.endswith(
        "has 4 image(s); training needs at least 8 at --batch-size 8: add more or lower --batch-size to 4"
    )


def test_too_few_usable_images_is_reported_with_the_unusable_ones(tmp_path: Path) -> None:
    folder = tmp_path / "data"
    write_image(folder / "a.png", (1, 1, 1))
    (folder / "b.png").write_bytes(b"not a png")
    assert problems_of(folder, instance_prompt="a thing") == [
        f"{folder / 'b.png'}: cannot be read as an image (UnidentifiedImageError): re-save it or remove it",
        f"{folder}: has 1 usable image(s) of 2; training needs at least 2: fix the problems above or add more",
    ]


def test_a_demo_dataset_is_read_as_it_is_written(tmp_path: Path) -> None:
    from engine.demo.dataset import write_dataset

    samples = write_dataset(tmp_path / "shapes", 6, seed=2)
    found = load_examples(tmp_path / "shapes", resolution=64, instance_prompt=None)
    assert [e.caption for e in found] == [item.caption for item in samples]


def test_class_data_problems(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("x")
    with pytest.raises(DatasetError, match="--class-data must be a folder"):
        load_class_examples(tmp_path / "file", resolution=RESOLUTION, class_prompt="a square")
    (tmp_path / "classes").mkdir()
    (tmp_path / "classes" / "bad.png").write_bytes(b"nope")
    with pytest.raises(DatasetError, match=r"bad\.png: cannot be read"):
        load_class_examples(tmp_path / "classes", resolution=RESOLUTION, class_prompt="a square")
    assert load_class_examples(tmp_path / "absent", resolution=RESOLUTION, class_prompt="a square") == []


# --- the command line -------------------------------------------------------------------------------------------


def imagine(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [IMAGINE, *args],
        env=imagine_env({"OMP_NUM_THREADS": "1", **(env or {})}),
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def test_cli_trains_with_prior_preservation_and_serves_the_result(tiny_model_dir: Path, tmp_path: Path) -> None:
    data = tmp_path / "photos"
    for index, (name, colour) in enumerate(COLOURS.items()):
        write_image(data / f"{name}.png", colour, size=(32, 16) if index % 2 else (16, 32))
    styles = tmp_path / "styles"
    out = tmp_path / "out"
    result = imagine(
        "train", str(data), "--base", str(tiny_model_dir), "--output", str(out), "--steps", "2",
        "--resolution", str(RESOLUTION), "--rank", "2", "--alpha", "4", "--batch-size", "2",
        "--gradient-accumulation", "2", "--buckets", "--instance-prompt", "a sks square",
        "--class-prompt", "a square", "--class-data", str(tmp_path / "classes"), "--num-class-images", "2",
        "--validation-prompt", "a sks square", "--checkpoint-every", "1", "--kohya", "--style", "sks",
        "--learning-rate", "1e-3",
        env={"IMAGINE_ENGINE_STYLES_DIR": str(styles), "IMAGINE_DATA_DIR": str(tmp_path / "state")},
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    assert "loss=" in result.stderr  # the progress bar
    assert "2/2" in result.stderr
    assert result.stdout.splitlines() == [str(styles / "sks.safetensors"), str(out / LORA_FILE), str(out / KOHYA_FILE)]
    assert len(list((tmp_path / "classes").glob("*.png"))) == 2
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["checkpoint-000001", "checkpoint-000002"]
    assert (out / "validation" / "step-000002-0.png").is_file()
    summary = json.loads((out / "training.json").read_text())
    assert summary["buckets"] == {"12x20": 2, "20x12": 2}
    assert json.loads((styles / "sks.json").read_text())["description"] == "a sks square"


def test_generate_with_lora_draws_the_trained_style(
    trained: TrainResult, tiny_model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # In-process (the subprocess path is the `train` test above): the ML libraries are already imported here.
    for name, value in {
        "IMAGINE_DATA_DIR": str(tmp_path / "state"),
        "IMAGINE_ENGINE_DEVICE": "cpu",
        "TRANSFORMERS_VERBOSITY": "error",
        "DIFFUSERS_VERBOSITY": "error",
        "HF_HUB_DISABLE_PROGRESS_BARS": "1",
    }.items():
        monkeypatch.setenv(name, value)
    common = ["generate", "a red square", "--model", str(tiny_model_dir), "--seed", "7", "--steps", "2"]
    common += ["--size", "64x64"]
    assert main([*common, "--out", str(tmp_path / "base")]) == 0
    assert main([*common, "--out", str(tmp_path / "lora"), "--lora", str(trained.output)]) == 0
    assert main([*common, "--out", str(tmp_path / "file"), "--lora", str(trained.lora), "--lora-scale", "1"]) == 0
    [base], [lora], [file] = (list((tmp_path / kind).glob("*.png")) for kind in ("base", "lora", "file"))

    def pixels(path: Path) -> np.ndarray:
        with Image.open(path) as image:
            return np.asarray(image.convert("RGB"), dtype=np.int16)

    assert difference(pixels(lora), pixels(file)) == 0
    assert difference(pixels(base), pixels(lora)) >= 8

    assert main([*common, "--out", str(tmp_path / "x"), "--lora", str(tmp_path / "nothing")]) == 2
    assert main([*common, "--out", str(tmp_path / "x"), "--lora", str(trained.lora), "--lora-scale", "3"]) == 2
    assert main([*common, "--out", str(tmp_path / "x"), "--lora", str(trained.lora), "--style", "s"]) == 2
    assert not (tmp_path / "x").exists()


def test_cli_trains_a_lora_on_the_demo_dataset_as_written(tiny_model_dir: Path, tmp_path: Path) -> None:
    data, out = tmp_path / "shapes", tmp_path / "out"
    written = imagine("demo", "dataset", str(data), "--count", "4")
    assert written.returncode == 0, written.stderr
    assert (data / "metadata.jsonl").is_file()  # both caption sources
    assert (data / "00000.txt").is_file()
    result = imagine(
        "train", str(data), "--base", str(tiny_model_dir), "--output", str(out), "--steps", "2", "--resolution", "64"
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [str(out / LORA_FILE)]
    assert json.loads((out / "training.json").read_text())["images"] == 4


@pytest.mark.skipif(not (MODEL_DIR / "model_index.json").is_file(), reason="the trained demo model is not bundled")
def test_generate_with_an_sd_lora_on_the_demo_model_is_a_usage_error(
    trained: TrainResult, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("IMAGINE_DATA_DIR", str(tmp_path / "state"))
    monkeypatch.setenv("IMAGINE_ENGINE_DEVICE", "cpu")
    code = main(
        ["generate", "a red square", "--model", "demo", "--out", str(tmp_path / "x"), "--lora", str(trained.lora)]
    )
    assert code == 2
    [line] = capsys.readouterr().err.splitlines()
    assert line.startswith(f"imagine: The LoRA {trained.lora} does not fit the model 'demo' (")
    assert line.endswith("): use a LoRA trained on this model.")
    assert not (tmp_path / "x").exists()


def test_generate_with_a_lora_that_does_not_fit_is_a_usage_error(
    tiny_model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("IMAGINE_DATA_DIR", str(tmp_path / "state"))
    monkeypatch.setenv("IMAGINE_ENGINE_DEVICE", "cpu")
    broken = tmp_path / "broken.safetensors"
    save_file({"something.else": torch.ones(2, 2)}, str(broken))
    code = main(
        ["generate", "a cat", "--model", str(tiny_model_dir), "--out", str(tmp_path / "x"), "--lora", str(broken)]
    )
    assert code == 2
    [line] = capsys.readouterr().err.splitlines()
    assert line.startswith(f"imagine: The LoRA {broken} does not fit the model '{tiny_model_dir}' (")
    assert line.endswith("): use a LoRA trained on this model.")


def test_cli_reports_every_dataset_problem_and_exits_2(tmp_path: Path) -> None:
    data = tmp_path / "photos"
    write_image(data / "one.png", (1, 2, 3))
    (data / "two.png").write_bytes(b"garbage")
    (data / "two.txt").write_text("two")
    out = tmp_path / "out"
    result = imagine("train", str(data), "--base", str(tmp_path / "never"), "--output", str(out), "--steps", "5")
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    lines = result.stderr.splitlines()
    assert lines[0] == "imagine: the dataset has 4 problem(s); nothing was trained:"
    assert len(lines) == 5
    text = result.stderr
    assert f"{data / 'one.png'}: has no caption: write it in one.txt, or pass --instance-prompt" in text
    assert f"{data / 'one.png'}: is only 24x20; at --resolution 512" in text
    assert f"{data / 'two.png'}: cannot be read as an image" in text
    assert f"{data}: has 0 usable image(s) of 2; training needs at least 2" in lines[-1]
    assert not out.exists()


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["--steps", "0"], "imagine: --steps must be a whole number of at least 1 (got 0)"),
        (["--steps", "3", "--mixed-precision", "bf16"], "imagine: --mixed-precision bf16 needs a CUDA GPU"),
        (["--steps", "many"], "steps must be a whole number (got 'many')"),
        (["--steps", "3", "--batch-size", "0"], "imagine: --batch-size must be a whole number of at least 1 (got 0)"),
        (["--steps", "3", "--resolution", "0"], "imagine: --resolution must be a multiple of 8, at least 16 (got 0)"),
        (["--steps", "3", "--learning-rate", "0"], "imagine: --learning-rate must be above 0 and at most 1 (got 0.0)"),
    ],
)
def test_cli_bad_train_options_exit_2_with_one_line(data_dir: Path, tmp_path: Path, args: list[str], says: str) -> None:
    result = imagine(
        "train", str(data_dir), "--base", "x", "--output", str(tmp_path / "out"), "--resolution", "16", *args
    )
    assert result.returncode == 2
    assert says in result.stderr
    assert "Traceback" not in result.stderr
