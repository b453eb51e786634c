"""The image gate: thresholds, actions and fail-closed behaviour with fake classifiers; the real NudeNet model
on harmless synthetic images; the blurred review preview."""

from __future__ import annotations

import importlib.util
import io
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from PIL import Image

from moderation.image_gate import (
    DEFAULT_THRESHOLD,
    DEFAULT_THRESHOLDS,
    NUDENET_LABELS,
    NUDENET_UNTHRESHOLDED,
    ImageClassifier,
    ImageGate,
    ImageGateError,
    NudeNetClassifier,
    benchmark_image_gate,
    blurred_preview,
    load_classifier,
    synthetic_scene,
)

needs_nudenet = pytest.mark.skipif(
    importlib.util.find_spec("nudenet") is None, reason="the nudenet extra is not installed: pip install '.[nudenet]'"
)


class FakeClassifier:
    """Returns fixed scores (none by default); `load_classifier("test_image_gate:FakeClassifier")` builds one."""

    def __init__(self, scores: dict[str, float] | None = None, name: str = "fake") -> None:
        self.name = name
        self.scores = scores or {}

    def classify(self, image: Image.Image) -> dict[str, float]:
        return dict(self.scores)


class BrokenClassifier:
    name = "broken"

    def classify(self, image: Image.Image) -> dict[str, float]:
        raise RuntimeError("model file is corrupt")


class NotAClassifier:
    pass


def png_of(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.fixture(scope="module")
def scene_png() -> bytes:
    return png_of(synthetic_scene(512))


@pytest.fixture(scope="module")
def small_png() -> bytes:
    return png_of(Image.new("RGB", (64, 64), (120, 160, 200)))


@pytest.fixture(scope="module")
def nudenet() -> NudeNetClassifier:
    return NudeNetClassifier()


def gate(*classifiers: ImageClassifier, action: str = "review") -> ImageGate:
    return ImageGate(list(classifiers), DEFAULT_THRESHOLDS, action)


def test_scores_under_threshold_are_allowed_and_report_the_nearest_label(small_png: bytes) -> None:
    decision = gate(FakeClassifier({"FEMALE_BREAST_EXPOSED": 0.3, "BUTTOCKS_EXPOSED": 0.45})).check(small_png)
    assert decision.allowed
    assert decision.action == "allow"
    assert decision.category is None
    assert (decision.label, decision.score, decision.layer) == ("BUTTOCKS_EXPOSED", 0.45, "fake")
    assert decision.scores == {"FEMALE_BREAST_EXPOSED": 0.3, "BUTTOCKS_EXPOSED": 0.45}


def test_nothing_seen_is_allowed_without_a_label(small_png: bytes) -> None:
    decision = gate(FakeClassifier()).check(small_png)
    assert decision.allowed
    assert (decision.label, decision.score) == (None, 0.0)


@pytest.mark.parametrize("action", ["review", "block"])
def test_a_score_at_the_threshold_trips_the_configured_action(small_png: bytes, action: str) -> None:
    decision = gate(FakeClassifier({"MALE_GENITALIA_EXPOSED": 0.5}), action=action).check(small_png)
    assert not decision.allowed
    assert decision.action == action
    assert (decision.category, decision.label, decision.score) == ("sexual", "MALE_GENITALIA_EXPOSED", 0.5)


def test_covered_and_non_intimate_labels_never_trip(small_png: bytes) -> None:
    harmless = {label: 0.99 for label in NUDENET_LABELS if label not in DEFAULT_THRESHOLDS}
    assert "FEMALE_BREAST_COVERED" in harmless
    assert "MALE_BREAST_EXPOSED" in harmless
    assert gate(FakeClassifier(harmless), action="block").check(small_png).allowed


def test_the_strongest_tripped_label_decides_and_names_its_classifier(small_png: bytes) -> None:
    first = FakeClassifier({"FEMALE_BREAST_EXPOSED": 0.6}, name="first")
    second = FakeClassifier({"ANUS_EXPOSED": 0.8, "FEMALE_BREAST_EXPOSED": 0.2}, name="second")
    decision = gate(first, second).check(small_png)
    assert (decision.label, decision.score, decision.layer) == ("ANUS_EXPOSED", 0.8, "second")
    assert decision.scores == {"FEMALE_BREAST_EXPOSED": 0.6, "ANUS_EXPOSED": 0.8}  # max per label


def test_labels_that_name_no_policy_category_trip_with_no_category(small_png: bytes) -> None:
    violence = ImageGate([FakeClassifier({"gore": 0.9})], {"gore": 0.7}, "block")
    decision = violence.check(small_png)
    # No category: no place's policy can allow it, so the finisher holds or blocks it everywhere.
    assert (decision.action, decision.category, decision.label) == ("block", None, "gore")


@pytest.mark.parametrize("category", ["violence/graphic", "sexual", "hate", "sexual/minors"])
def test_a_plug_in_label_named_like_a_policy_category_is_judged_under_it(small_png: bytes, category: str) -> None:
    decision = gate(FakeClassifier({category: 0.99})).check(small_png)
    assert not decision.allowed
    assert (decision.category, decision.label, decision.score) == (category, category, 0.99)


def test_labels_without_a_threshold_trip_at_the_default(small_png: bytes) -> None:
    assert DEFAULT_THRESHOLD == 0.5
    assert gate(FakeClassifier({"weapons": 0.49})).check(small_png).allowed
    decision = gate(FakeClassifier({"weapons": 0.5})).check(small_png)
    assert (decision.allowed, decision.label, decision.category) == (False, "weapons", None)
    lenient = ImageGate([FakeClassifier({"weapons": 0.6})], {}, default_threshold=0.7)
    assert lenient.check(small_png).allowed


def test_a_label_turned_off_is_recorded_but_never_trips(small_png: bytes) -> None:
    binary = FakeClassifier({"normal": 0.98, "nsfw": 0.02})
    decision = ImageGate([binary], {"normal": None}).check(small_png)
    assert decision.allowed
    assert decision.scores == {"normal": 0.98, "nsfw": 0.02}
    assert decision.label == "nsfw"  # the nearest label that can trip


def test_a_threshold_makes_a_harmless_nudenet_label_count(small_png: bytes) -> None:
    assert "FACE_FEMALE" in NUDENET_UNTHRESHOLDED
    decision = ImageGate([FakeClassifier({"FACE_FEMALE": 0.8})], {"FACE_FEMALE": 0.7}).check(small_png)
    assert (decision.allowed, decision.label, decision.category) == (False, "FACE_FEMALE", None)


def test_configured_thresholds_override_the_defaults_label_by_label() -> None:
    configured = ImageGate.from_specs(
        ["moderation.image_gate:NullClassifier"], thresholds={"ANUS_EXPOSED": 0.9, "violence/graphic": 0.8}
    )
    assert configured.threshold("ANUS_EXPOSED") == 0.9
    assert configured.threshold("FEMALE_BREAST_EXPOSED") == DEFAULT_THRESHOLDS["FEMALE_BREAST_EXPOSED"]
    assert configured.threshold("violence/graphic") == 0.8
    assert configured.threshold("FEET_EXPOSED") is None
    assert configured.threshold("anything else") == DEFAULT_THRESHOLD


def test_a_failing_classifier_sends_the_image_to_review(small_png: bytes) -> None:
    decision = gate(FakeClassifier(), BrokenClassifier(), action="block").check(small_png)
    assert not decision.allowed
    assert decision.action == "review"
    assert decision.layer == "error"
    assert decision.error is not None
    assert "model file is corrupt" in decision.error


def test_a_classifier_returning_nonsense_fails_closed(small_png: bytes) -> None:
    for scores in ({"ANUS_EXPOSED": float("nan")}, {"ANUS_EXPOSED": "high"}):
        decision = gate(FakeClassifier(scores)).check(small_png)  # type: ignore[arg-type]  # deliberately not floats
        assert (decision.allowed, decision.action, decision.layer) == (False, "review", "error")


def test_a_tripped_label_still_decides_when_another_classifier_fails(small_png: bytes) -> None:
    decision = gate(BrokenClassifier(), FakeClassifier({"ANUS_EXPOSED": 0.9}), action="block").check(small_png)
    assert (decision.action, decision.layer) == ("block", "fake")


def test_undecodable_data_goes_to_review() -> None:
    decision = gate(FakeClassifier()).check(b"this is not a png")
    assert (decision.allowed, decision.action, decision.layer) == (False, "review", "error")


def test_bad_configuration_is_refused() -> None:
    with pytest.raises(ImageGateError, match="'block' or 'review'"):
        ImageGate([], DEFAULT_THRESHOLDS, "allow")
    with pytest.raises(ImageGateError, match=r"\(0, 1\]"):
        ImageGate([], {"ANUS_EXPOSED": 1.5})
    with pytest.raises(ImageGateError, match=r"\(default\) must be in \(0, 1\]"):
        ImageGate([], {}, default_threshold=0.0)


def test_classifiers_load_from_module_class_specs(small_png: bytes) -> None:
    fake = load_classifier("test_image_gate:FakeClassifier")
    assert isinstance(fake, FakeClassifier)
    null = load_classifier("moderation.image_gate:NullClassifier")
    assert null.name == "null"
    configured = ImageGate.from_specs(["moderation.image_gate:NullClassifier", "test_image_gate:FakeClassifier"])
    assert configured.check(small_png).allowed


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("moderation.image_gate.NullClassifier", "should look like"),
        ("moderation.no_such_module:Thing", "cannot import"),
        ("moderation.image_gate:NoSuchClass", "has no class"),
        ("test_image_gate:NotAClassifier", "needs a `name`"),
    ],
)
def test_bad_classifier_specs_say_what_is_wrong(spec: str, message: str) -> None:
    with pytest.raises(ImageGateError, match=message):
        load_classifier(spec)


@needs_nudenet
def test_nudenet_allows_a_landscape(nudenet: NudeNetClassifier, scene_png: bytes) -> None:
    decision = ImageGate([nudenet], DEFAULT_THRESHOLDS, "block").check(scene_png)
    assert decision.allowed, decision
    assert set(decision.scores) == set(NUDENET_LABELS)
    assert all(0.0 <= score < 0.5 for score in decision.scores.values())


@needs_nudenet
def test_nudenet_allows_flat_colours_and_noise(nudenet: NudeNetClassifier) -> None:
    rng = np.random.default_rng(7)
    images = [
        Image.new("RGB", (512, 512), (220, 180, 150)),  # skin-like flat colour
        Image.fromarray(rng.integers(0, 256, (512, 512, 3), dtype=np.uint8)),
        Image.new("RGB", (640, 384), (10, 10, 10)),
    ]
    checker = ImageGate([nudenet], DEFAULT_THRESHOLDS, "block")
    for image in images:
        assert checker.check(png_of(image)).allowed


@needs_nudenet
def test_nudenet_loads_once_under_concurrent_use(scene_png: bytes) -> None:
    classifier = NudeNetClassifier()
    image = synthetic_scene(256, seed=3)
    with ThreadPoolExecutor(max_workers=4) as pool:
        results = list(pool.map(lambda _: classifier.classify(image), range(4)))
    assert all(result == results[0] for result in results)
    detector = classifier._detector
    classifier.classify(image)
    assert classifier._detector is detector


@needs_nudenet
def test_benchmark_reports_milliseconds_per_check() -> None:
    timings = benchmark_image_gate(runs=2)
    assert len(timings) == 2
    assert all(0 < ms < 10_000 for ms in timings)


def high_frequency_energy(image: Image.Image) -> float:
    grey = np.asarray(image.convert("L"), dtype=np.float64)
    return float(np.mean(np.abs(np.diff(grey, axis=0))) + np.mean(np.abs(np.diff(grey, axis=1))))


def test_blurred_preview_is_small_and_blurred(scene_png: bytes) -> None:
    preview_png = blurred_preview(scene_png)
    assert len(preview_png) < len(scene_png)
    with Image.open(io.BytesIO(preview_png)) as preview:
        assert preview.format == "PNG"
        assert max(preview.size) == 256
        assert not getattr(preview, "text", {})  # no prompt or other metadata in the preview
        sharp = Image.open(io.BytesIO(scene_png)).convert("RGB").resize(preview.size)
        assert high_frequency_energy(preview) < 0.25 * high_frequency_energy(sharp)


def test_blurred_preview_keeps_aspect_ratio_and_accepts_a_smaller_size() -> None:
    wide = png_of(synthetic_scene(512).resize((512, 256)))
    with Image.open(io.BytesIO(blurred_preview(wide, max_side=128, radius=8))) as preview:
        assert preview.size == (128, 64)
