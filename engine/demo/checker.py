"""A deterministic checker for demo images: what colour the background is, what colour and class the shape is,
and whether the shape is striped. Used by the tests (on the dataset's own images) and by the quality bench.

Every pixel is labelled with its nearest palette colour (images are first reduced to 32x32). The background is
the commonest label on the border; the shape is the largest connected region of other labels. Its class is the
template (circle, square or triangle drawn in the region's bounding box) that overlaps it best.
"""

from __future__ import annotations

import itertools
from collections import deque

import numpy as np
from PIL import Image, ImageDraw

from engine.demo.dataset import COLOURS, SHAPES

SIZE = 32
NONE = "none"
_NAMES = tuple(COLOURS)
_PALETTE = np.array([COLOURS[name] for name in _NAMES], dtype=np.float32)


def labels(image: Image.Image) -> np.ndarray:
    """(SIZE, SIZE) palette indices, one per pixel."""
    small = image.convert("RGB")
    if small.size != (SIZE, SIZE):
        small = small.resize((SIZE, SIZE), Image.Resampling.BOX)
    pixels = np.asarray(small, dtype=np.float32)
    distances = ((pixels[:, :, None, :] - _PALETTE[None, None]) ** 2).sum(axis=3)
    return np.asarray(distances.argmin(axis=2))


def _largest_region(mask: np.ndarray) -> np.ndarray:
    seen = np.zeros_like(mask, dtype=bool)
    best: list[tuple[int, int]] = []
    height, width = mask.shape
    for start in zip(*np.nonzero(mask), strict=True):
        if seen[start]:
            continue
        region = []
        queue = deque([start])
        seen[start] = True
        while queue:
            y, x = queue.popleft()
            region.append((int(y), int(x)))
            for ny, nx in ((y - 1, x), (y + 1, x), (y, x - 1), (y, x + 1)):
                if 0 <= ny < height and 0 <= nx < width and mask[ny, nx] and not seen[ny, nx]:
                    seen[ny, nx] = True
                    queue.append((ny, nx))
        if len(region) > len(best):
            best = region
    out = np.zeros_like(mask, dtype=bool)
    if best:
        ys, xs = zip(*best, strict=True)
        out[list(ys), list(xs)] = True
    return out


def _template(shape: str, box: tuple[int, int, int, int]) -> np.ndarray:
    scale = 4  # drawn supersampled, kept where at least half a pixel is covered
    x0, y0, x1, y1 = (value * scale for value in box)
    canvas = Image.new("L", (SIZE * scale, SIZE * scale), 0)
    draw = ImageDraw.Draw(canvas)
    x1, y1 = x1 + scale - 1, y1 + scale - 1
    if shape == "circle":
        draw.ellipse((x0, y0, x1, y1), fill=255)
    elif shape == "square":
        draw.rectangle((x0, y0, x1, y1), fill=255)
    else:
        draw.polygon(((x0 + x1) / 2, y0, x1, y1, x0, y1), fill=255)
    return np.asarray(canvas.resize((SIZE, SIZE), Image.Resampling.BOX)) >= 128


def _regions(image: Image.Image) -> tuple[np.ndarray, int, np.ndarray]:
    """(labels, background label, shape mask)."""
    grid = labels(image)
    border = np.concatenate([grid[0], grid[-1], grid[:, 0], grid[:, -1]])
    background = int(np.bincount(border, minlength=len(_NAMES)).argmax())
    return grid, background, _largest_region(grid != background)


def classify(mask: np.ndarray) -> str:
    if mask.sum() < 4:
        return NONE
    ys, xs = np.nonzero(mask)
    box = (int(xs.min()), int(ys.min()), int(xs.max()), int(ys.max()))
    scores = []
    for shape in SHAPES:
        template = _template(shape, box)
        scores.append((template & mask).sum() / max(1, (template | mask).sum()))
    return SHAPES[int(np.argmax(scores))]


def check(image: Image.Image) -> tuple[str, str, str]:
    """(shape colour, background colour, shape class); the shape parts are "none" when there is no shape."""
    grid, background, mask = _regions(image)
    if mask.sum() < 4:
        return NONE, _NAMES[background], NONE
    colour = int(np.bincount(grid[mask], minlength=len(_NAMES)).argmax())
    return _NAMES[colour], _NAMES[background], classify(mask)


def is_striped(image: Image.Image) -> bool:
    """Whether the shape is filled with horizontal bands: row by row its commonest colour alternates between two
    colours, each dominating at least a quarter of its rows, changing at least four times."""
    grid, _, mask = _regions(image)
    rows = [row for row in range(SIZE) if mask[row].sum() >= 2]
    if len(rows) < 6:
        return False
    dominant = [int(np.bincount(grid[row][mask[row]]).argmax()) for row in rows]
    changes = sum(1 for a, b in itertools.pairwise(dominant) if a != b)
    shares = sorted(np.bincount(dominant), reverse=True)
    return bool(changes >= 4 and len(shares) >= 2 and shares[1] >= len(rows) / 4)
