import hashlib
import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from moderation.classifier import (
    DEFAULT_DIM,
    FEATURE_VERSION,
    MIN_CONTENT_WORDS,
    ClassifierError,
    PromptClassifier,
    content_words,
    feature_keys,
    featurize,
)
from moderation.policy import CATEGORIES
from moderation.training import prompt_set

MODEL = PromptClassifier.from_package()
ROWS = prompt_set.read()


def test_shipped_model_matches_the_code_and_the_labelled_set() -> None:
    assert MODEL.categories == CATEGORIES
    assert MODEL.dim == DEFAULT_DIM
    assert MODEL.meta["feature_version"] == FEATURE_VERSION
    assert all(0.5 <= MODEL.thresholds[c] <= 0.99 + 1e-6 for c in CATEGORIES)  # stored as float32
    # Edit the labelled set and you must retrain: python -m moderation.training.train_prompt_classifier
    digest = hashlib.sha256(prompt_set.DATA_FILE.read_bytes()).hexdigest()
    assert MODEL.meta["data_sha256"] == digest
    lists = hashlib.sha256(
        b"".join((prompt_set.DATA_FILE.parent / n).read_bytes() for n in ("groups.txt", "allow.txt"))
    )
    assert MODEL.meta["lists_sha256"] == lists.hexdigest()
    assert prompt_set.DATA_FILE.with_name("prompt_classifier.npz").stat().st_size < 512 * 1024


def test_held_out_report_is_stored_with_the_model() -> None:
    held_out = MODEL.meta["held_out"]
    assert held_out["held_out"] == sum(r["split"] == "test" for r in ROWS)
    # The classifier alone is a second opinion: modest recall, few false positives.
    assert held_out["recall"] >= 0.3
    assert held_out["false_positive_rate"] <= 0.03


def test_labelled_set_is_well_formed_and_split_by_phrase() -> None:
    assert len(ROWS) >= 500
    labels = Counter(r["label"] for r in ROWS)
    assert set(labels) == {"benign", *CATEGORIES}
    assert all(set(r) == {"text", "label", "split", "group"} for r in ROWS)
    splits: dict[str, set[str]] = {r["group"]: set() for r in ROWS}
    for row in ROWS:
        splits[row["group"]].add(row["split"])
    assert all(len(s) == 1 for s in splits.values()), "every phrase and its variants belong to one split"
    by_text: dict[str, set[str]] = {}
    for row in ROWS:
        by_text.setdefault(row["text"], set()).add(row["split"])
    assert all(len(s) == 1 for s in by_text.values()), "no prompt is in both splits"
    for label in labels:
        in_test = sum(r["label"] == label and r["split"] == "test" for r in ROWS)
        assert in_test >= 15, label


def test_labelled_set_file_is_what_the_generator_writes() -> None:
    # Edit the phrases in moderation/training/prompt_set.py, then run python -m moderation.training.prompt_set.
    assert [*prompt_set.examples(), *prompt_set.fresh_examples()] == ROWS


def test_features_are_stable_distinct_and_unit_length() -> None:
    indices, values = featurize("a red fox", DEFAULT_DIM)
    again, _ = featurize("a red fox", DEFAULT_DIM)
    assert np.array_equal(indices, again)
    assert len(set(indices.tolist())) == len(indices)
    assert float(np.dot(values, values)) == pytest.approx(1.0, abs=1e-6)
    assert "wfox" in feature_keys("a red fox")
    assert "bred fox" in feature_keys("a red fox")
    assert " fo" in {k[1:] for k in feature_keys("a red fox") if k.startswith("c")}
    empty_indices, empty_values = featurize("", DEFAULT_DIM)
    assert empty_indices.size == 0
    assert empty_values.size == 0


def test_scores_are_probabilities() -> None:
    scores = MODEL.scores("a quiet harbour at dawn")
    assert set(scores) == set(CATEGORIES)
    assert all(0.0 <= s <= 1.0 for s in scores.values())
    assert MODEL.scores("")  # no features: the bias alone


def test_confident_needs_content_words_and_the_required_category() -> None:
    high = dict.fromkeys(CATEGORIES, 0.995)
    assert MODEL.confident("hate", high, words=MIN_CONTENT_WORDS)
    assert not MODEL.confident("hate", high, words=MIN_CONTENT_WORDS - 1)
    assert not MODEL.confident("hate", {**high, "hate": 0.1})
    assert MODEL.confident("hate", {**high, "hate": 0.1}, threshold=0.05)
    assert not MODEL.confident("sexual/minors", {**high, "sexual": 0.2})  # minors alone is not enough
    assert content_words("a photo of a cat s head") == 2


def test_save_and_load_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "model.npz"
    MODEL.save(path)
    loaded = PromptClassifier.load(path)
    assert loaded.thresholds == MODEL.thresholds
    text = "a poster of a cat on a sofa"
    assert loaded.scores(text) == pytest.approx(MODEL.scores(text), abs=1e-3)  # weights are stored as float16


def test_unreadable_or_foreign_model_files_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ClassifierError, match="could not read"):
        PromptClassifier.load(tmp_path / "missing.npz")
    (tmp_path / "junk.npz").write_bytes(b"not a zip file")
    with pytest.raises(ClassifierError, match="retrain"):
        PromptClassifier.load(tmp_path / "junk.npz")
    old = tmp_path / "old.npz"
    np.savez(old, meta=np.array(json.dumps({"feature_version": FEATURE_VERSION - 1, "dim": 8})))
    with pytest.raises(ClassifierError, match="feature version"):
        PromptClassifier.load(old)
    with pytest.raises(ClassifierError, match="shape"):
        PromptClassifier(("hate",), np.zeros((1, 4), np.float32), np.zeros(1, np.float32), {"hate": 0.5}, dim=8)


def test_training_script_runs_on_a_small_set(tmp_path: Path) -> None:
    pytest.importorskip("sklearn")
    from moderation.training import train_prompt_classifier as training

    by_group: dict[str, list[dict[str, str]]] = {}
    for row in ROWS:
        by_group.setdefault(row["group"], []).append(row)
    small = [row for rows in list(by_group.values())[::6] for row in rows]
    lines: list[str] = []
    model = training.train(small, dim=1 << 12, c_grid=(10.0,), log=lines.append)
    assert model.categories == CATEGORIES
    assert len(lines) == len(CATEGORIES)
    assert all(0.5 <= t <= 0.99 for t in model.thresholds.values())
    report = training.evaluate(model, small)
    assert set(report) == {"held_out", "recall", "false_positive_rate", "per_category"}
    model.save(tmp_path / "small.npz")
    assert PromptClassifier.load(tmp_path / "small.npz").dim == 1 << 12
