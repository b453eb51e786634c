"""The demo dataset: one plain shape on a plain background, with a natural caption. Deterministic per seed.

Written as PNGs with `.txt` caption sidecars plus a `metadata.jsonl` (`file_name`, `text` and the ground truth), so
any trainer that reads image folders can use it. `HELD_OUT` lists the (shape colour, background, shape) triples that
never appear in training; the quality bench asks for exactly those.
"""

from __future__ import annotations

import json
import random
from dataclasses import asdict, dataclass
from pathlib import Path

from PIL import Image, ImageDraw

COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (220, 30, 30),
    "orange": (245, 140, 20),
    "yellow": (245, 225, 30),
    "green": (30, 170, 50),
    "blue": (30, 70, 220),
    "purple": (130, 40, 180),
    "pink": (250, 150, 200),
    "white": (245, 245, 245),
    "black": (20, 20, 20),
    "gray": (128, 128, 128),
}
SHAPES = ("circle", "square", "triangle")
SIZES = {"small": (0.32, 0.40), "": (0.44, 0.54), "large": (0.58, 0.72)}  # side as a fraction of the image
CORNERS = ("top left", "top right", "bottom left", "bottom right")
TEXTURES = ("plain", "striped")  # "striped" is never in the base dataset: it is the fine-tuning concept
STRIPE = "white"

# (shape colour, background colour, shape): never drawn for training, asked for by the quality bench.
HELD_OUT: tuple[tuple[str, str, str], ...] = (
    ("red", "blue", "circle"),
    ("orange", "black", "square"),
    ("yellow", "purple", "triangle"),
    ("green", "white", "circle"),
    ("blue", "yellow", "square"),
    ("purple", "gray", "triangle"),
    ("pink", "green", "circle"),
    ("white", "red", "square"),
    ("black", "orange", "triangle"),
    ("gray", "pink", "circle"),
    ("red", "green", "square"),
    ("blue", "white", "triangle"),
    ("yellow", "black", "circle"),
    ("green", "purple", "square"),
    ("pink", "blue", "triangle"),
    ("purple", "yellow", "circle"),
)
_HELD = frozenset(HELD_OUT)

# Every word a caption can use, in a fixed order: the demo tokenizer's vocabulary (one token per word).
VOCABULARY: tuple[str, ...] = (
    *COLOURS,
    *SHAPES,
    "small",
    "large",
    "striped",
    "a",
    "an",
    "on",
    "in",
    "of",
    "the",
    "with",
    "background",
    "top",
    "bottom",
    "left",
    "right",
    "corner",
    "centre",
    "center",
    "middle",
)


@dataclass(frozen=True)
class Sample:
    """One drawn image: its ground truth and its caption."""

    colour: str
    background: str
    shape: str
    size: str
    texture: str
    x: int  # bounding box, pixels
    y: int
    side: int
    place: str  # "centre", a corner ("top left", ...), or "" (anywhere)
    caption: str


def is_held_out(colour: str, background: str, shape: str) -> bool:
    return (colour, background, shape) in _HELD


def _place(rng: random.Random, image_size: int, side: int) -> tuple[str, int, int]:
    free = image_size - side
    margin = max(1, image_size // 32)
    mode = rng.random()
    if mode < 0.3:
        jitter = max(1, free // 8)
        x = free // 2 + rng.randint(-jitter, jitter)
        y = free // 2 + rng.randint(-jitter, jitter)
        return "centre", x, y
    if mode < 0.6:
        corner = rng.choice(CORNERS)
        x = margin if "left" in corner else free - margin
        y = margin if "top" in corner else free - margin
        return corner, x, y
    return "", rng.randint(margin, free - margin), rng.randint(margin, free - margin)


def _article(phrase: str) -> str:
    return "an" if phrase[0] in "aeiou" else "a"


def caption_for(
    colour: str, background: str, shape: str, size: str, place: str, texture: str, rng: random.Random
) -> str:
    adjectives = " ".join(word for word in (size, colour, "striped" if texture == "striped" else "") if word)
    thing = f"{adjectives} {shape}"
    where = ""
    if place == "centre":
        where = rng.choice(("in the centre", "in the center", "in the middle"))
    elif place:
        where = rng.choice((f"in the {place} corner", "in the corner"))
    a_thing = f"{_article(thing)} {thing}"
    a_background = f"{_article(background)} {background}"
    template = rng.randrange(4)
    if template == 0 or (template == 2 and not where):
        text = f"{a_thing} on {a_background} background"
    elif template == 1:
        text = f"{background} background with {a_thing}" + (f" {where}" if where else "")
    elif template == 2:
        text = f"{a_thing} {where} of {a_background} background"
    else:
        text = f"{colour} {shape} on {background}" if texture == "plain" else f"{thing} on {background}"
    return text


def sample(
    rng: random.Random,
    image_size: int = 64,
    *,
    held_out: bool = False,
    texture: str = "plain",
    combination: tuple[str, str, str] | None = None,
) -> Sample:
    """Draw one random sample. `held_out=False` never yields a `HELD_OUT` triple; `combination` fixes the triple."""
    names = list(COLOURS)
    while True:
        if combination is not None:
            colour, background, shape = combination
        else:
            colour, background = rng.sample(names, 2)
            shape = rng.choice(SHAPES)
        if texture == "striped" and STRIPE in (colour, background):
            if combination is not None:
                raise ValueError(f"a striped {colour} shape on {background} would hide its {STRIPE} stripes")
            continue
        if combination is not None or held_out or not is_held_out(colour, background, shape):
            break
    size = rng.choice(list(SIZES))
    low, high = SIZES[size]
    side = round(image_size * rng.uniform(low, high))
    place, x, y = _place(rng, image_size, side)
    caption = caption_for(colour, background, shape, size, place, texture, rng)
    return Sample(colour, background, shape, size, texture, x, y, side, place, caption)


def stripe_colour(colour: str) -> tuple[int, int, int]:
    """Stripes are white bands: a striped shape is never white, and never on white."""
    del colour
    return COLOURS[STRIPE]


def shape_mask(item: Sample, image_size: int) -> Image.Image:
    """The shape's silhouette, mode "L" (255 inside)."""
    mask = Image.new("L", (image_size, image_size), 0)
    draw = ImageDraw.Draw(mask)
    x0, y0, x1, y1 = item.x, item.y, item.x + item.side - 1, item.y + item.side - 1
    if item.shape == "circle":
        draw.ellipse((x0, y0, x1, y1), fill=255)
    elif item.shape == "square":
        draw.rectangle((x0, y0, x1, y1), fill=255)
    else:
        draw.polygon(((x0 + x1) / 2, y0, x1, y1, x0, y1), fill=255)
    return mask


def render(item: Sample, image_size: int = 64) -> Image.Image:
    image = Image.new("RGB", (image_size, image_size), COLOURS[item.background])
    mask = shape_mask(item, image_size)
    image.paste(COLOURS[item.colour], mask=mask)
    if item.texture == "striped":
        period = max(4, image_size // 8)
        stripes = Image.new("L", (image_size, image_size), 0)
        draw = ImageDraw.Draw(stripes)
        for top in range(0, image_size, period):
            draw.rectangle((0, top, image_size - 1, top + period // 2 - 1), fill=255)
        inside = Image.new("L", (image_size, image_size), 0)
        inside.paste(stripes, mask=mask)
        image.paste(stripe_colour(item.colour), mask=inside)
    return image


def write_dataset(
    out: Path,
    count: int,
    seed: int = 0,
    *,
    held_out: bool = False,
    image_size: int = 64,
    texture: str = "plain",
) -> list[Sample]:
    """Write `count` images to `out` (`00000.png` + `00000.txt`, and `metadata.jsonl`). Returns the samples.

    `held_out=True` may also draw the `HELD_OUT` triples (the training set never does); `texture="striped"` draws
    the fine-tuning concept instead of plain shapes.
    """
    if count < 1:
        raise ValueError(f"count must be at least 1, not {count}")
    if texture not in TEXTURES:
        raise ValueError(f"texture must be one of {', '.join(TEXTURES)}, not {texture!r}")
    if image_size < 16:
        raise ValueError(f"image_size must be at least 16 pixels, not {image_size}")
    out.mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    samples = [sample(rng, image_size, held_out=held_out, texture=texture) for _ in range(count)]
    width = max(5, len(str(count - 1)))
    with (out / "metadata.jsonl").open("w", encoding="utf-8") as index:
        for number, item in enumerate(samples):
            stem = f"{number:0{width}d}"
            render(item, image_size).save(out / f"{stem}.png")
            (out / f"{stem}.txt").write_text(item.caption + "\n", encoding="utf-8")
            index.write(json.dumps({"file_name": f"{stem}.png", "text": item.caption, **asdict(item)}) + "\n")
    return samples
