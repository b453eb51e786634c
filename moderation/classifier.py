"""The learned second opinion on prompts: hashed n-gram features and one logistic regression per category.

Features of a normalised prompt (see `moderation.normalize`): its words, its word pairs and the 3- to 5-letter
pieces of each word (padded with a space at each end), each hashed (CRC-32) into `dim` buckets, counted once,
and scaled to unit length. Character pieces carry typos and unseen spellings ("nakid") to known words.

The model file (`moderation/data/prompt_classifier.npz`) is written by
`python -m moderation.training.train_prompt_classifier`, which also chooses each category's threshold on the
training part of the labelled set; inference needs numpy only. Nothing in the file is pickled.
"""

from __future__ import annotations

import itertools
import json
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

from moderation import ModerationError

FEATURE_VERSION = 1
DEFAULT_DIM = 1 << 18
MODEL_FILE = "prompt_classifier.npz"
MIN_CONTENT_WORDS = 3
"""The classifier refuses nothing on fewer content words than this ("a woman", "a cat's head", "poster"): on so
little evidence its probabilities say more about the training set than about the prompt. The term lists and
rules still judge such prompts."""
_STOPWORDS = """a an the of to in on at by for with and or but is are was be it its this that my your his her their our
me i you he she we they them as from into how what who do does can pls please make draw generate show picture image
photo"""
STOPWORDS = frozenset(_STOPWORDS.split())
REQUIRES = {"sexual/minors": ("sexual", 0.5)}
"""Categories the classifier alone refuses only when another is likely too: sexual content involving minors needs
the sexual score at 0.5 or more, so that "a young boy in a football kit" is never refused on the word "boy"."""


class ClassifierError(ModerationError):
    """The model file is missing, unreadable or made for other features."""


def feature_keys(normalized: str) -> set[str]:
    """The distinct features of a normalised text, before hashing."""
    words = normalized.split()
    keys = {"w" + w for w in words}
    keys.update(f"b{a} {b}" for a, b in itertools.pairwise(words))
    for word in words:
        padded = f" {word} "
        for n in (3, 4, 5):
            keys.update("c" + padded[i : i + n] for i in range(len(padded) - n + 1))
    return keys


def content_words(normalized: str) -> int:
    """Words that carry meaning: not a stop word, at least two characters."""
    return sum(1 for w in normalized.split() if len(w) >= 2 and w not in STOPWORDS)


def featurize(normalized: str, dim: int) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.float32]]:
    """Hashed bucket indices (sorted, distinct) and their unit-length weights."""
    buckets = np.fromiter((zlib.crc32(k.encode()) % dim for k in feature_keys(normalized)), dtype=np.int64)
    if buckets.size == 0:
        return buckets, np.zeros(0, dtype=np.float32)
    indices, counts = np.unique(buckets, return_counts=True)
    values = counts.astype(np.float32)
    values /= np.float32(np.sqrt(float(np.dot(values, values))))
    return indices, values


class Classifier(Protocol):
    """What the prompt gate needs from a classifier (tests pass fakes)."""

    @property
    def thresholds(self) -> Mapping[str, float]: ...

    def scores(self, normalized: str) -> dict[str, float]: ...

    def confident(
        self, category: str, scores: Mapping[str, float], threshold: float | None = None, *, words: int = 99
    ) -> bool: ...


@dataclass(frozen=True)
class PromptClassifier:
    """One-vs-rest logistic regression over hashed features. `weights` has one row per category."""

    categories: tuple[str, ...]
    weights: npt.NDArray[np.float32]
    bias: npt.NDArray[np.float32]
    thresholds: Mapping[str, float]
    dim: int = DEFAULT_DIM
    meta: Mapping[str, Any] = field(default_factory=dict, hash=False)

    def __post_init__(self) -> None:
        if self.weights.shape != (len(self.categories), self.dim) or self.bias.shape != (len(self.categories),):
            raise ClassifierError(
                f"the weights have shape {self.weights.shape} and the bias {self.bias.shape}, but "
                f"{len(self.categories)} categories over {self.dim} features need "
                f"({len(self.categories)}, {self.dim}) and ({len(self.categories)},)."
            )
        missing = sorted(set(self.categories) - set(self.thresholds))
        if missing:
            raise ClassifierError(f"the model has no threshold for {', '.join(missing)}.")

    def scores(self, normalized: str) -> dict[str, float]:
        """Each category's probability (0..1) for a normalised prompt."""
        indices, values = featurize(normalized, self.dim)
        logits = self.weights[:, indices] @ values + self.bias
        probabilities = 1.0 / (1.0 + np.exp(-logits.astype(np.float64)))
        return {category: float(p) for category, p in zip(self.categories, probabilities, strict=True)}

    def confident(
        self, category: str, scores: Mapping[str, float], threshold: float | None = None, *, words: int = 99
    ) -> bool:
        """Whether the scores refuse `category`: at or above its threshold (the model's unless given), any
        category it `REQUIRES` likely too, and `words` (the prompt's `content_words`) at least MIN_CONTENT_WORDS."""
        if words < MIN_CONTENT_WORDS:
            return False
        needed = REQUIRES.get(category)
        if needed is not None and scores.get(needed[0], 1.0) < needed[1]:
            return False
        return scores[category] >= (self.thresholds[category] if threshold is None else threshold)

    def scores_many(self, texts: Sequence[str]) -> npt.NDArray[np.float64]:
        """Probabilities for many normalised prompts: one row per text, one column per category."""
        return np.array([[self.scores(t)[c] for c in self.categories] for t in texts], dtype=np.float64)

    def save(self, path: Path) -> None:
        """Write the model as a compressed .npz holding only the non-zero weight columns."""
        used = np.flatnonzero(np.any(self.weights != 0, axis=0))
        meta = {**self.meta, "feature_version": FEATURE_VERSION, "dim": self.dim}
        np.savez_compressed(
            path,
            categories=np.array(self.categories),
            columns=used.astype(np.int32),
            weights=self.weights[:, used].astype(np.float16),
            bias=self.bias.astype(np.float32),
            thresholds=np.array([self.thresholds[c] for c in self.categories], dtype=np.float32),
            meta=np.array(json.dumps(meta, sort_keys=True)),
        )

    @classmethod
    def load(cls, path: Path | Any) -> PromptClassifier:
        """Read a model written by `save` (a path or an importlib resource)."""
        try:
            with path.open("rb") as handle, np.load(handle, allow_pickle=False) as data:
                meta = json.loads(str(data["meta"]))
                if meta.get("feature_version") != FEATURE_VERSION:
                    raise ClassifierError(
                        f"{path} was trained on feature version {meta.get('feature_version')}, this code makes "
                        f"version {FEATURE_VERSION}: retrain with python -m moderation.training.train_prompt_classifier"
                    )
                dim = int(meta["dim"])
                categories = tuple(str(c) for c in data["categories"])
                weights = np.zeros((len(categories), dim), dtype=np.float32)
                weights[:, data["columns"]] = data["weights"].astype(np.float32)
                thresholds = {c: float(t) for c, t in zip(categories, data["thresholds"], strict=True)}
                return cls(categories, weights, data["bias"].astype(np.float32), thresholds, dim, meta)
        except ClassifierError:
            raise
        except (OSError, KeyError, ValueError) as error:
            raise ClassifierError(
                f"could not read the prompt classifier at {path} ({error}); retrain it with "
                "python -m moderation.training.train_prompt_classifier"
            ) from error

    @classmethod
    def from_package(cls) -> PromptClassifier:
        return cls.load(resources.files("moderation") / "data" / MODEL_FILE)
