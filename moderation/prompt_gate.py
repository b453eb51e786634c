"""The prompt gate: word-boundary matching of normalised text against per-category term lists.

Term lists are data files (`moderation/data/<category>.txt`, one term or phrase per line).
Matching is on whole words, so "Scunthorpe" or "therapist" never trip a shorter term. A minor
term together with a sexual term is refused as sexual content involving minors.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from moderation.normalize import letter_runs, normalize, variants

CATEGORY_LABELS = {
    "sexual": "sexual content",
    "sexual/minors": "sexual content involving minors",
    "violence/graphic": "graphic violence",
    "self-harm": "self-harm",
}
_FILES = {
    "sexual": "sexual.txt",
    "violence/graphic": "violence_graphic.txt",
    "self-harm": "self_harm.txt",
    "minors": "minors.txt",
}


@dataclass(frozen=True)
class Decision:
    allowed: bool
    category: str | None = None
    layer: str = "blocklist"

    @property
    def label(self) -> str:
        return CATEGORY_LABELS.get(self.category or "", self.category or "")


def _load_terms(text: str) -> list[str]:
    terms = []
    for line in text.splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            terms.append(normalize(line))
    return [t for t in terms if t]


def _pattern(terms: list[str]) -> re.Pattern[str]:
    # Longest first so a phrase wins over its first word; an optional plural ending.
    alternatives = sorted({re.escape(t) for t in terms}, key=len, reverse=True)
    return re.compile(r"\b(?:" + "|".join(alternatives) + r")(?:s|es)?\b")


def _inner_pattern(terms: list[str]) -> re.Pattern[str]:
    # For spelled-out letter runs, where word boundaries are gone: terms of four letters or more
    # anywhere in the run (shorter ones would match by chance).
    joined = {t.replace(" ", "") for t in terms}
    return re.compile("|".join(sorted((re.escape(t) for t in joined if len(t) >= 4), key=len, reverse=True)) or "(?!)")


class PromptGate:
    def __init__(self, terms: dict[str, list[str]]) -> None:
        self._patterns = {category: _pattern(words) for category, words in terms.items() if words}
        self._inner = {category: _inner_pattern(words) for category, words in terms.items() if words}

    @classmethod
    def from_package(cls, extra_dir: Path | None = None) -> PromptGate:
        """The shipped term lists, plus any `<category>.txt` files in `extra_dir`."""
        data = resources.files("moderation") / "data"
        terms = {category: _load_terms((data / name).read_text("utf-8")) for category, name in _FILES.items()}
        if extra_dir is not None:
            for category, name in _FILES.items():
                path = extra_dir / name
                if path.is_file():
                    terms[category] += _load_terms(path.read_text("utf-8"))
        return cls(terms)

    def _hits(self, text: str) -> set[str]:
        found = set()
        for form in variants(text):
            runs = letter_runs(form)
            for category, pattern in self._patterns.items():
                if pattern.search(form) or any(self._inner[category].search(run) for run in runs):
                    found.add(category)
        return found

    def check(self, prompt: str) -> Decision:
        hits = self._hits(prompt)
        if "sexual" in hits and "minors" in hits:
            return Decision(False, "sexual/minors")
        for category in ("sexual", "violence/graphic", "self-harm"):
            if category in hits:
                return Decision(False, category)
        return Decision(True)
