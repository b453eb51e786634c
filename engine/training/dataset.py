"""Find the training images and their captions, check them all up front, and turn them into batches.

Three shapes of data are accepted as they are:
- captions in sidecars: `cat.png` + `cat.txt` (kohya, SimpleTuner, EveryDream), in the folder or below it;
- `metadata.jsonl` in the folder, one `{"file_name": "cat.png", "text": "a cat"}` per line (diffusers imagefolder),
  with or without `.txt` sidecars that say the same (`imagine demo dataset` writes both);
- no captions, one `--instance-prompt` for every image (DreamBooth).

Every problem is collected before anything is raised, so one run reports them all. The batch order and every
per-example random choice (crop, flip, caption dropout) are pure functions of the seed and the batch number, so a
resumed run draws exactly what an uninterrupted one would. Checking a dataset does not import torch.
"""

from __future__ import annotations

import json
import math
import random
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from PIL import Image, ImageOps

from engine.training.errors import DatasetError, DatasetProblem

if TYPE_CHECKING:
    import torch

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp")
METADATA_FILE = "metadata.jsonl"
MIN_IMAGES = 2
MAX_BUCKET_ASPECT = 2.0


@dataclass(frozen=True)
class Example:
    path: Path
    caption: str
    width: int
    height: int


def _images_in(folder: Path) -> list[Path]:
    return sorted(
        path
        for path in folder.rglob("*")
        if path.is_file() and path.suffix.lower() in IMAGE_SUFFIXES and not path.name.startswith(".")
    )


def _image_size(path: Path, resolution: int, problems: list[DatasetProblem]) -> tuple[int, int] | None:
    try:
        with Image.open(path) as image:
            image.load()
            width, height = ImageOps.exif_transpose(image).size
    except Exception as exc:
        problems.append(
            DatasetProblem(str(path), f"cannot be read as an image ({type(exc).__name__}): re-save it or remove it")
        )
        return None
    smallest = max(8, resolution // 2)
    if min(width, height) < smallest:
        problems.append(
            DatasetProblem(
                str(path),
                f"is only {width}x{height}; at --resolution {resolution} its shorter side must be at least "
                f"{smallest} px: use a larger copy, remove it, or lower --resolution",
            )
        )
        return None
    return width, height


def _read_metadata(folder: Path, problems: list[DatasetProblem]) -> dict[Path, str]:
    captions: dict[Path, str] = {}
    metadata = folder / METADATA_FILE
    try:
        lines = metadata.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        problems.append(DatasetProblem(str(metadata), f"cannot be read ({exc}): save it as UTF-8 text"))
        return captions
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        where = f"{metadata}, line {number}"
        try:
            entry: Any = json.loads(line)
        except ValueError:
            problems.append(DatasetProblem(where, 'is not JSON: write {"file_name": "x.png", "text": "a caption"}'))
            continue
        if not isinstance(entry, dict) or not isinstance(entry.get("file_name"), str):
            problems.append(DatasetProblem(where, 'has no "file_name": name the image this line describes'))
            continue
        text = entry.get("text")
        path = (folder / entry["file_name"]).resolve()
        if not isinstance(text, str) or not text.strip():
            problems.append(DatasetProblem(where, f'has no "text" for {entry["file_name"]}: add the caption'))
        elif not path.is_file():
            problems.append(DatasetProblem(where, f"names {entry['file_name']}, which does not exist: fix the name"))
        elif path in captions:
            problems.append(DatasetProblem(where, f"describes {entry['file_name']} a second time: keep one line"))
        else:
            captions[path] = text.strip()
    return captions


def _sidecar_caption(image: Path, problems: list[DatasetProblem]) -> str | None:
    sidecar = image.with_suffix(".txt")
    try:
        caption = sidecar.read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError) as exc:
        problems.append(DatasetProblem(str(sidecar), f"cannot be read ({exc}): save it as UTF-8 text"))
        return ""
    if not caption:
        problems.append(DatasetProblem(str(sidecar), "is empty: write the caption for its image in it"))
    return caption


def _metadata_caption(image: Path, metadata: dict[Path, str], problems: list[DatasetProblem]) -> str | None:
    """The caption `metadata.jsonl` gives `image`. A `.txt` sidecar may say the same (the demo dataset writes both,
    for other trainers); one that says something else, or captions an image the metadata leaves out, is reported."""
    caption = metadata.get(image.resolve())
    sidecar = image.with_suffix(".txt")
    if not sidecar.is_file():
        if caption is None:
            problems.append(
                DatasetProblem(str(image), f"has no line in {METADATA_FILE}: add one, or move the image out")
            )
        return caption
    try:
        written = sidecar.read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError) as exc:
        problems.append(DatasetProblem(str(sidecar), f"cannot be read ({exc}): save it as UTF-8 text"))
        return None
    if caption is None:
        problems.append(
            DatasetProblem(
                str(image),
                f"has a caption in {sidecar.name} but no line in {METADATA_FILE}: add the line, or delete "
                f"{METADATA_FILE} to caption by the .txt files alone",
            )
        )
        return None
    if written != caption:
        problems.append(
            DatasetProblem(
                str(sidecar),
                f'says "{written}" but {METADATA_FILE} says "{caption}" for {image.name}: remove one of the two '
                f"caption sources (the .txt files or {METADATA_FILE})",
            )
        )
        return None
    return caption


def load_examples(folder: Path, *, resolution: int, instance_prompt: str | None, batch_size: int = 1) -> list[Example]:
    """Every image in `folder` with its caption, or `DatasetError` listing every problem found."""
    problems: list[DatasetProblem] = []
    folder = Path(folder)
    if not folder.is_dir():
        what = "is a file" if folder.exists() else "does not exist"
        raise DatasetError([DatasetProblem(str(folder), f"{what}: give the folder that holds the training images")])
    images = _images_in(folder)
    has_metadata = (folder / METADATA_FILE).is_file()
    sidecars = [image for image in images if image.with_suffix(".txt").is_file()]
    metadata = _read_metadata(folder, problems) if has_metadata else {}
    if instance_prompt is not None and (has_metadata or sidecars):
        source = METADATA_FILE if has_metadata else f".txt captions ({sidecars[0].with_suffix('.txt').name}, ...)"
        problems.append(
            DatasetProblem(
                str(folder),
                f"has {source} but --instance-prompt gives every image the same caption: drop one of the two",
            )
        )

    examples: list[Example] = []
    for image in images:
        if has_metadata:
            caption: str | None = _metadata_caption(image, metadata, problems)
        elif instance_prompt is not None:
            caption = instance_prompt
        else:
            caption = _sidecar_caption(image, problems)
            if caption is None:
                problems.append(
                    DatasetProblem(
                        str(image),
                        f"has no caption: write it in {image.with_suffix('.txt').name}, or pass --instance-prompt",
                    )
                )
        size = _image_size(image, resolution, problems)
        if size is not None and caption:
            examples.append(Example(image, caption, *size))

    if not images:
        problems.append(
            DatasetProblem(str(folder), f"holds no images ({', '.join(IMAGE_SUFFIXES)}): point at the image folder")
        )
    elif len(examples) < max(MIN_IMAGES, batch_size):
        problems.append(DatasetProblem(str(folder), _too_few(len(examples), len(images), batch_size)))
    if problems:
        raise DatasetError(problems)
    return examples


def _too_few(usable: int, found: int, batch_size: int) -> str:
    least = max(MIN_IMAGES, batch_size)
    have = f"{usable} image(s)" if usable == found else f"{usable} usable image(s) of {found}"
    need = f"training needs at least {least}" + (f" at --batch-size {batch_size}" if batch_size > MIN_IMAGES else "")
    fixes = ["add more"]
    if usable < found:
        fixes.insert(0, "fix the problems above")
    if batch_size > MIN_IMAGES and usable >= MIN_IMAGES:
        fixes.append(f"lower --batch-size to {usable}")
    fix = fixes[0] if len(fixes) == 1 else f"{', '.join(fixes[:-1])} or {fixes[-1]}"
    return f"has {have}; {need}: {fix}"


def load_class_examples(folder: Path, *, resolution: int, class_prompt: str) -> list[Example]:
    """The prior-preservation images in `folder` (may be none yet), all captioned with `class_prompt`."""
    problems: list[DatasetProblem] = []
    if folder.exists() and not folder.is_dir():
        raise DatasetError([DatasetProblem(str(folder), "is a file: --class-data must be a folder")])
    examples: list[Example] = []
    for image in _images_in(folder) if folder.is_dir() else []:
        size = _image_size(image, resolution, problems)
        if size is not None:
            examples.append(Example(image, class_prompt, *size))
    if problems:
        raise DatasetError(problems)
    return examples


# --- buckets ---------------------------------------------------------------------------------------------------


def make_buckets(resolution: int, step: int) -> list[tuple[int, int]]:
    """(width, height) pairs, multiples of `step`, of about resolution² pixels, aspect ratio up to 2:1."""
    area = resolution * resolution
    buckets = {(resolution, resolution)}
    width = step
    while width <= resolution * MAX_BUCKET_ASPECT:
        height = (area // width) // step * step
        if height >= step and max(width / height, height / width) <= MAX_BUCKET_ASPECT:
            buckets.add((width, height))
            buckets.add((height, width))
        width += step
    return sorted(buckets)


def nearest_bucket(width: int, height: int, buckets: list[tuple[int, int]]) -> tuple[int, int]:
    ratio = math.log(width / height)
    return min(buckets, key=lambda bucket: (abs(math.log(bucket[0] / bucket[1]) - ratio), -bucket[0] * bucket[1]))


# --- transforms ------------------------------------------------------------------------------------------------


def load_pixels(example: Example, size: tuple[int, int], *, crop: str, flip: bool, rng: random.Random) -> torch.Tensor:
    """The image resized to cover `size` (w, h), cropped to it, maybe mirrored: a (3, h, w) tensor in [-1, 1]."""
    import torch

    width, height = size
    with Image.open(example.path) as opened:
        image = ImageOps.exif_transpose(opened).convert("RGB")
    scale = max(width / image.width, height / image.height)
    resized = (max(width, round(image.width * scale)), max(height, round(image.height * scale)))
    image = image.resize(resized, Image.Resampling.BICUBIC)
    if crop == "random":
        left, top = rng.randint(0, resized[0] - width), rng.randint(0, resized[1] - height)
    else:
        left, top = (resized[0] - width) // 2, (resized[1] - height) // 2
    image = image.crop((left, top, left + width, top + height))
    if flip and rng.random() < 0.5:
        image = ImageOps.mirror(image)
    data = torch.frombuffer(bytearray(image.tobytes()), dtype=torch.uint8).reshape(height, width, 3)
    return data.permute(2, 0, 1).float().div(127.5).sub(1.0)


# --- batch order -----------------------------------------------------------------------------------------------


def _mix(*numbers: int) -> int:
    """One 63-bit seed from several integers (stable across runs and platforms)."""
    value = 0x9E3779B97F4A7C15
    for number in numbers:
        value = (value ^ (number & 0xFFFFFFFFFFFFFFFF)) * 0xBF58476D1CE4E5B9 & 0xFFFFFFFFFFFFFFFF
        value ^= value >> 31
    return value & 0x7FFFFFFFFFFFFFFF


@dataclass(frozen=True)
class Batch:
    examples: list[Example]
    size: tuple[int, int]
    seed: int  # for everything random about this batch: crops, flips, caption dropout, noise, timesteps


class BatchPlan:
    """Which examples make up micro-batch number n, for any n, the same in every run with the same seed.

    Without buckets every image is cropped square at the resolution. With buckets, images are grouped by the
    aspect-ratio bucket nearest their own and a batch never mixes buckets. Each epoch shuffles the examples
    within each bucket and then the order of the batches.
    """

    def __init__(
        self,
        examples: list[Example],
        *,
        batch_size: int,
        resolution: int,
        seed: int,
        buckets: list[tuple[int, int]] | None = None,
    ) -> None:
        self.examples = examples
        self.seed = seed
        groups: dict[tuple[int, int], list[int]] = {}
        for index, example in enumerate(examples):
            size = nearest_bucket(example.width, example.height, buckets) if buckets else (resolution, resolution)
            groups.setdefault(size, []).append(index)
        self.groups = dict(sorted(groups.items()))
        self.batch_size = batch_size
        self.batches_per_epoch = sum(math.ceil(len(group) / batch_size) for group in self.groups.values())

    def _epoch(self, epoch: int) -> list[tuple[tuple[int, int], list[int]]]:
        rng = random.Random(_mix(self.seed, epoch, 1))
        batches: list[tuple[tuple[int, int], list[int]]] = []
        for size, members in self.groups.items():
            order = list(members)
            rng.shuffle(order)
            batches += [(size, order[i : i + self.batch_size]) for i in range(0, len(order), self.batch_size)]
        rng.shuffle(batches)
        return batches

    def batch(self, number: int) -> Batch:
        epoch, position = divmod(number, self.batches_per_epoch)
        size, indices = self._epoch(epoch)[position]
        return Batch([self.examples[i] for i in indices], size, _mix(self.seed, number, 2))

    def bucket_counts(self) -> dict[tuple[int, int], int]:
        return {size: len(members) for size, members in self.groups.items()}


def cycle_examples(examples: list[Example], start: int, count: int, seed: int) -> list[Example]:
    """`count` examples from a shuffled, endless cycle over `examples`, beginning at position `start`."""
    chosen: list[Example] = []
    for position in range(start, start + count):
        epoch, index = divmod(position, len(examples))
        order = list(range(len(examples)))
        random.Random(_mix(seed, epoch, 3)).shuffle(order)
        chosen.append(examples[order[index]])
    return chosen


def captions_of(examples: Iterable[Example]) -> list[str]:
    return [example.caption for example in examples]
