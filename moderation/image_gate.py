"""The image gate: every generated image goes past one or more classifiers before anyone sees it.

A classifier is anything with a `name` and a `classify(image) -> {label: score}` method; the gate compares
scores against per-label thresholds and maps labels to policy categories ("sexual"). Classifiers are named
in config as "module:Class" strings (`load_classifier`), so an operator can add one without touching this
pipeline. The gate fails closed: a classifier that raises, or an image that cannot be decoded, sends the
image to review, never straight out.

Every label a classifier returns counts: one with no configured threshold trips at `DEFAULT_THRESHOLD` (0.5).
The exceptions are NudeNet's labels that name no harm (faces, feet, covered parts: `NUDENET_UNTHRESHOLDED`),
which are recorded but never trip unless given a threshold. A label's policy category: NudeNet's exposed
intimate parts are "sexual"; a label that is itself a policy category name ("sexual", "violence/graphic",
"hate", ...) is judged under that category, so a place that allows it (adult content in an age-restricted
channel) lets it through; any other label has no category, and a tripped one is held or blocked everywhere.

The bundled classifier is NudeNet: a YOLOv8n ONNX model of 12 MB that ships inside the `nudenet` wheel, so
nothing is downloaded. nudenet is an optional extra (`imagine[nudenet]`), imported only when this classifier
is used, because of its licence: the wheel's metadata says MIT, but the LICENSE files inside it are AGPL-3.0,
and we take the stricter reading for both its code and the bundled weights. imagine (Apache-2.0) neither
vendors nor modifies it, so its own licence stays Apache-2.0; whoever installs the extra, or ships an image
that contains it, takes on AGPL-3.0 for that part.
"""

from __future__ import annotations

import importlib
import importlib.util
import io
import math
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol, runtime_checkable

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from moderation import ModerationError
from moderation.policy import CATEGORIES

Action = Literal["allow", "block", "review"]

# NudeNet's 18 labels. Only the *_EXPOSED labels of intimate parts are thresholded; "covered" labels,
# faces, feet, armpits, bellies and male chests never block.
NUDENET_LABELS = (
    "FEMALE_GENITALIA_COVERED",
    "FACE_FEMALE",
    "BUTTOCKS_EXPOSED",
    "FEMALE_BREAST_EXPOSED",
    "FEMALE_GENITALIA_EXPOSED",
    "MALE_BREAST_EXPOSED",
    "ANUS_EXPOSED",
    "FEET_EXPOSED",
    "BELLY_COVERED",
    "FEET_COVERED",
    "ARMPITS_COVERED",
    "ARMPITS_EXPOSED",
    "FACE_MALE",
    "BELLY_EXPOSED",
    "MALE_GENITALIA_EXPOSED",
    "ANUS_COVERED",
    "FEMALE_BREAST_COVERED",
    "BUTTOCKS_COVERED",
)
# NudeNet's own cut-off is 0.2 (weaker detections are not reported); 0.5 keeps its false positives on
# swimwear and skin-coloured scenes rare while real nudity typically scores 0.6-0.9. Tune per community.
DEFAULT_THRESHOLDS: dict[str, float] = {
    "FEMALE_GENITALIA_EXPOSED": 0.5,
    "MALE_GENITALIA_EXPOSED": 0.5,
    "ANUS_EXPOSED": 0.5,
    "FEMALE_BREAST_EXPOSED": 0.5,
    "BUTTOCKS_EXPOSED": 0.5,
}
DEFAULT_CATEGORIES: dict[str, str] = {label: "sexual" for label in DEFAULT_THRESHOLDS}
NUDENET_UNTHRESHOLDED = frozenset(NUDENET_LABELS) - DEFAULT_THRESHOLDS.keys()
DEFAULT_THRESHOLD = 0.5  # for any label without a threshold of its own
DEFAULT_CLASSIFIER = "moderation.image_gate:NudeNetClassifier"


class ImageGateError(ModerationError):
    """The image gate is misconfigured (a classifier spec that does not load, an unknown action)."""


@runtime_checkable
class ImageClassifier(Protocol):
    """Scores an image: label -> confidence in 0..1. Labels it does not see may be left out."""

    name: str

    def classify(self, image: Image.Image) -> dict[str, float]: ...


@dataclass(frozen=True)
class ImageDecision:
    allowed: bool
    action: Action
    category: str | None = None  # policy category of the label that decided, e.g. "sexual"; None: it has none
    label: str | None = None  # the label that decided (when allowed: the thresholded label closest to its limit)
    score: float = 0.0
    layer: str = "image"  # name of the classifier that decided; "error" when the gate failed closed
    scores: dict[str, float] = field(default_factory=dict)  # every label of every classifier (max per label)
    error: str | None = None  # what went wrong, when layer == "error"


class NullClassifier:
    """Sees nothing. For deployments that have no classifier yet, and for tests of `load_classifier`."""

    name = "null"

    def classify(self, image: Image.Image) -> dict[str, float]:
        return {}


class NudeNetClassifier:
    """NudeNet's detector; a label's score is the highest confidence of its boxes (0.0 when none).

    The model is loaded on the first `classify`, once, under a lock; onnxruntime sessions are safe to call
    from several threads. Raises ImageGateError at construction when nudenet is not installed.
    """

    name = "nudenet"

    def __init__(self) -> None:
        if importlib.util.find_spec("nudenet") is None:
            raise ImageGateError(
                "the NudeNet image classifier needs the nudenet package: pip install 'imagine[nudenet]' "
                "(AGPL-3.0 licensed; see README) or configure another classifier"
            )
        self._detector: Any = None
        self._lock = threading.Lock()

    def _load(self) -> Any:
        with self._lock:
            if self._detector is None:
                nudenet = importlib.import_module("nudenet")
                onnxruntime = importlib.import_module("onnxruntime")
                detector = nudenet.NudeDetector()  # the 320n model bundled in the wheel
                # One inference thread: onnxruntime's default takes every core, which starves the bot's
                # event loop in the same process (late acknowledgements) to save a few ms per image.
                options = onnxruntime.SessionOptions()
                options.intra_op_num_threads = 1
                options.inter_op_num_threads = 1
                model_path = Path(str(nudenet.__file__)).with_name("320n.onnx")
                detector.onnx_session = onnxruntime.InferenceSession(
                    str(model_path), sess_options=options, providers=["CPUExecutionProvider"]
                )
                self._detector = detector
            return self._detector

    def classify(self, image: Image.Image) -> dict[str, float]:
        detector = self._detector if self._detector is not None else self._load()
        # nudenet expects an OpenCV-style BGR array (what cv2.imread returns).
        bgr = np.ascontiguousarray(np.asarray(image.convert("RGB"))[:, :, ::-1])
        scores = dict.fromkeys(NUDENET_LABELS, 0.0)
        for detection in detector.detect(bgr):
            label = str(detection["class"])
            scores[label] = max(scores.get(label, 0.0), float(detection["score"]))
        return scores


def load_classifier(spec: str) -> ImageClassifier:
    """Import and instantiate a classifier named "package.module:ClassName" (constructed with no arguments)."""
    module_name, sep, attribute = spec.partition(":")
    if not sep or not module_name or not attribute:
        raise ImageGateError(f"image classifier {spec!r} should look like 'package.module:ClassName'")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ImageGateError(f"image classifier {spec!r}: cannot import {module_name!r} ({exc})") from exc
    factory = getattr(module, attribute, None)
    if factory is None or not callable(factory):
        raise ImageGateError(f"image classifier {spec!r}: {module_name!r} has no class {attribute!r}")
    classifier = factory()
    if not isinstance(classifier, ImageClassifier):
        raise ImageGateError(
            f"image classifier {spec!r} needs a `name` attribute and a `classify(image) -> dict[str, float]` method"
        )
    return classifier


class ImageGate:
    """Runs every classifier on an image and decides allow / block / review.

    `thresholds` maps a label to the score at which it trips, or to None for a label that is recorded but never
    trips; labels not listed trip at `default_threshold`, except NudeNet's `NUDENET_UNTHRESHOLDED`. `categories`
    maps a label to its policy category; a label not listed is its own category when it is a policy category
    name, and has none otherwise. `action` is what a tripped threshold does: "block" (never shown) or "review"
    (held for moderators).
    """

    def __init__(
        self,
        classifiers: Sequence[ImageClassifier],
        thresholds: Mapping[str, float | None],
        action: str = "review",
        *,
        categories: Mapping[str, str] | None = None,
        default_threshold: float = DEFAULT_THRESHOLD,
    ) -> None:
        if action not in ("block", "review"):
            raise ImageGateError(f"image gate action must be 'block' or 'review', got {action!r}")
        for label, threshold in {**thresholds, "(default)": default_threshold}.items():
            if threshold is not None and not 0.0 < threshold <= 1.0:
                raise ImageGateError(f"image gate threshold for {label} must be in (0, 1], got {threshold}")
        self.classifiers = list(classifiers)
        self.thresholds: dict[str, float | None] = {**dict.fromkeys(NUDENET_UNTHRESHOLDED), **thresholds}
        self.default_threshold = default_threshold
        self.action: Action = "block" if action == "block" else "review"
        self.categories = dict(DEFAULT_CATEGORIES if categories is None else categories)

    @classmethod
    def from_specs(
        cls,
        specs: Sequence[str] = (DEFAULT_CLASSIFIER,),
        thresholds: Mapping[str, float | None] | None = None,
        action: str = "review",
    ) -> ImageGate:
        """A gate from config: classifier specs, thresholds (each overrides that label's entry in
        DEFAULT_THRESHOLDS; other labels trip at DEFAULT_THRESHOLD) and the action."""
        classifiers = [load_classifier(spec) for spec in specs]
        return cls(classifiers, {**DEFAULT_THRESHOLDS, **(thresholds or {})}, action)

    def threshold(self, label: str) -> float | None:
        """The score at which `label` trips; None when it never does."""
        return self.thresholds.get(label, self.default_threshold)

    def category(self, label: str) -> str | None:
        """The policy category a tripped `label` is judged under; None when it maps to none."""
        category = self.categories.get(label)
        if category is None and label in CATEGORIES:
            return label
        return category

    def check(self, png: bytes) -> ImageDecision:
        """Decide on one encoded image (PNG, or anything else PIL reads)."""
        try:
            with Image.open(io.BytesIO(png)) as opened:
                image = opened.convert("RGB")
        except Exception as exc:  # fail closed whatever the decoder raises (bad data, decompression bomb)
            return ImageDecision(False, "review", layer="error", error=f"cannot decode the image: {exc}")
        return self.check_image(image)

    def check_image(self, image: Image.Image) -> ImageDecision:
        """Decide on a decoded image."""
        scores: dict[str, float] = {}
        best: tuple[float, str, str] | None = None  # (score, label, classifier) of the strongest tripped label
        nearest: tuple[float, str, str, float] | None = None  # the thresholded label closest to its threshold
        errors: list[str] = []
        for classifier in self.classifiers:
            try:
                result = {str(label): float(score) for label, score in classifier.classify(image).items()}
                if not all(math.isfinite(score) for score in result.values()):
                    raise ValueError(f"non-finite score in {result}")
            except Exception as exc:  # fail closed whatever a plug-in raises or returns
                errors.append(f"{classifier.name}: {type(exc).__name__}: {exc}")
                continue
            for label, score in result.items():
                scores[label] = max(scores.get(label, 0.0), score)
                threshold = self.threshold(label)
                if threshold is None:
                    continue
                if score >= threshold and (best is None or score > best[0]):
                    best = (score, label, classifier.name)
                if score > 0 and (nearest is None or score / threshold > nearest[0] / nearest[3]):
                    nearest = (score, label, classifier.name, threshold)
        if best is not None:
            score, label, layer = best
            return ImageDecision(False, self.action, self.category(label), label, score, layer, scores)
        if errors:
            return ImageDecision(False, "review", layer="error", scores=scores, error="; ".join(errors))
        if nearest is not None:
            score, label, layer, _ = nearest
            return ImageDecision(True, "allow", None, label, score, layer, scores)
        return ImageDecision(True, "allow", scores=scores)


def blurred_preview(png: bytes, *, max_side: int = 256, radius: float = 24) -> bytes:
    """A strongly blurred, downscaled PNG of `png` (no metadata), for a moderators' review message."""
    with Image.open(io.BytesIO(png)) as opened:
        image = opened.convert("RGB")
    image.thumbnail((max_side, max_side), Image.Resampling.BILINEAR)
    blurred = image.filter(ImageFilter.GaussianBlur(radius))
    buffer = io.BytesIO()
    blurred.save(buffer, format="PNG")
    return buffer.getvalue()


def synthetic_scene(size: int = 512, seed: int = 0) -> Image.Image:
    """A drawn landscape (sky gradient, sun, hills, trees, noise): a harmless test image, made offline."""
    rng = np.random.default_rng(seed)
    y = np.linspace(0.0, 1.0, size)[:, None, None]
    sky = (1 - y) * np.array([90.0, 150.0, 235.0]) + y * np.array([200.0, 225.0, 250.0])
    pixels = np.broadcast_to(sky, (size, size, 3)).copy()
    image = Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(image)
    sun = int(rng.integers(size // 8, size - size // 8))
    draw.ellipse([sun - size // 14, size // 10, sun + size // 14, size // 10 + size // 7], fill=(250, 220, 90))
    for layer, colour in enumerate([(70, 120, 70), (50, 100, 55), (35, 80, 40)]):
        base = size * (0.55 + 0.12 * layer)
        xs = np.linspace(0, size, 9)
        ys = base + rng.uniform(-size * 0.08, size * 0.08, xs.size)
        draw.polygon([*zip(xs.tolist(), ys.tolist(), strict=True), (size, size), (0, size)], fill=colour)
    for _ in range(12):
        x, top = int(rng.integers(0, size)), int(size * rng.uniform(0.6, 0.85))
        height = size // 10
        draw.rectangle([x - 2, top, x + 2, top + height], fill=(90, 60, 30))
        draw.ellipse([x - height // 3, top - height // 2, x + height // 3, top + height // 4], fill=(30, 90, 35))
    noisy = np.asarray(image, dtype=np.float64) + rng.normal(0, 4, (size, size, 3))
    return Image.fromarray(np.clip(noisy, 0, 255).astype(np.uint8))


def benchmark_image_gate(runs: int = 20) -> list[float]:
    """Milliseconds per `ImageGate.check` of a 512x512 PNG with the default NudeNet gate (model loaded first)."""
    gate = ImageGate.from_specs()
    buffer = io.BytesIO()
    synthetic_scene(512).save(buffer, format="PNG")
    png = buffer.getvalue()
    gate.check(png)  # loads the model; not timed
    timings = []
    for _ in range(runs):
        start = time.perf_counter()
        gate.check(png)
        timings.append((time.perf_counter() - start) * 1000)
    return timings
