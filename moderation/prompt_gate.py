"""The prompt gate: term lists, compositional rules, negative-prompt rules and a classifier, under a policy.

A prompt is refused when, for a category the policy blocks,

1. `blocklist`: a term of that category's list (`moderation/data/<category>.txt`) occurs as whole words in the
   normalised prompt (so "Scunthorpe" or "therapist" never trip a shorter term; harmless phrases in
   `allow.txt` such as "naked mole rat" are matched first and ignored), or a spelled-out letter run
   ("n u d e") contains one;
2. `rules`: a compositional rule fires (a minor with a sexual word, "kill all <group>"...; `prompt_rules.py`);
3. `negative`: the negative prompt inverts a safeguard ("clothes, underwear" as negative); the term lists are
   never applied to negative prompts, where "nsfw, nude" means the user wants to avoid them;
4. `classifier`: the learned second opinion is at least as confident as the category's threshold.

The most serious category found by layers 1-3 wins (`PRIORITY`); the classifier is asked only when they find
nothing the policy blocks. If anything raises, the gate fails closed: the prompt is refused with layer `error`
and the error is logged.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from moderation.classifier import STOPWORDS, Classifier, PromptClassifier, content_words
from moderation.normalize import join_letter_runs, letter_runs, normalize, squeeze
from moderation.policy import CATEGORIES, CATEGORY_LABELS, Policy
from moderation.prompt_rules import MINOR_AGE, Finding, RuleSet

__all__ = ["CATEGORIES", "CATEGORY_LABELS", "Decision", "PromptGate"]

log = logging.getLogger(__name__)

# Term list files: the categories, then the context lists the rules read. "allow" holds harmless phrases.
_FILES = {
    "sexual": "sexual.txt",
    "sexual/minors": "sexual_minors.txt",
    "violence/graphic": "violence_graphic.txt",
    "hate": "hate.txt",
    "harassment": "harassment.txt",
    "self-harm": "self_harm.txt",
    "illicit": "illicit.txt",
    "minors": "minors.txt",
    "suggestive": "suggestive.txt",
    "people": "people.txt",
    "adults": "adults.txt",
    "groups": "groups.txt",
    "allow": "allow.txt",
    "objects": "objects.txt",
}
# The order in which categories are reported when several apply: the most serious first.
PRIORITY = ("sexual/minors", "violence/graphic", "self-harm", "hate", "illicit", "harassment", "sexual")
_STRICT = Policy()
_MAX_WORDS = 6  # the longest phrase in a term list, in words
# Terms that describe what is done to, or how someone looks, and say nothing harmful of a thing. They are left to
# the classifier when said of an object (objects.txt): directly ("a sexy retro jukebox", "beheading a dragon"), or
# anywhere in a prompt that names an object and no person ("a beheaded statue").
OBJECT_MODIFIERS: Mapping[str, frozenset[str]] = {
    "sexual": frozenset({"sexy"}),
    "violence/graphic": frozenset(
        {"beheaded", "beheading", "behead", "beheads", "decapitated", "decapitating", "decapitate"}
        | {"dismembered", "mutilated", "cut in half", "severed head", "impaled"}
    ),
}
_MODIFIER_TERMS = frozenset().union(*OBJECT_MODIFIERS.values())
# "Sexy" said of a body or a pose means a person even when none is named ("a sexy pose").
_SEXY_BODY = re.compile(
    r"\bsexy(?: \w+){0,2}? (?:pose|poses|posing|body|bodies|legs|butt|ass|chest|figure|curves|outfit|outfits|"
    r"lingerie|selfie|selfies|dance|dancing|photo|photos|photoshoot|pic|pics|picture|pictures|look|anime)\b"
)
# A harmful term right after one of these is said not to be wanted ("a battle, no gore", "sfw, no nudity").
_NEGATIONS = frozenset({"no", "not", "without", "zero"})
# Only a plain "no nudity": "no: n.u.d.e" is a decoy in front of a term, not a negation.
_NEGATED = re.compile(rf"\b(?:{'|'.join(sorted(_NEGATIONS))})\s+([^\W_][\w-]*)", re.IGNORECASE)
_HARMFUL_TAGS = frozenset(CATEGORIES)
_MODIFIED_TAGS = frozenset(OBJECT_MODIFIERS)
_PERSON_TAGS = frozenset({"people", "minors", "adults"})


@dataclass(frozen=True)
class Decision:
    """The gate's verdict. `detail` says which term, rule or error decided, for moderators and the audit
    log only: users are told the category (`label`) and how to appeal, never the term lists."""

    allowed: bool
    category: str | None = None
    layer: str = "blocklist"
    score: float = 1.0
    detail: str = ""

    @property
    def label(self) -> str:
        """The category in plain words, for the person whose prompt was refused."""
        if self.layer == "error":
            return "a safety check that could not run"
        return CATEGORY_LABELS.get(self.category or "", self.category or "")

    @property
    def user_message(self) -> str:
        """What to tell the user about a refusal: the category and how to appeal, never the matched term."""
        if self.allowed:
            return ""
        if self.layer == "error":
            return "The prompt could not be checked right now, so it was not accepted. Try again in a moment."
        return (
            f"This prompt was stopped by the rule against {self.label}. If you think that is a mistake, "
            "ask a moderator of this server to review it."
        )


def _load_terms(text: str) -> list[str]:
    terms = []
    for line in text.splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            terms.append(normalize(line))
    return [t for t in terms if t]


# Terms that hide inside everyday words ("rape" in "grape", "spic" in "spicy", "paki" in "pakistan"): inside a
# spelled-out run they count only as the whole run.
_NOT_INSIDE = frozenset({"rape", "rapes", "raped", "spic", "spics", "paki", "pakis"})


def _inner_pattern(terms: Iterable[str]) -> re.Pattern[str]:
    # For spelled-out letter runs, where word boundaries are gone: terms of four letters or more
    # anywhere in the run (shorter ones would match by chance).
    joined = {t.replace(" ", "") for t in terms} - _NOT_INSIDE
    alternatives = sorted((re.escape(t) for t in joined if len(t) >= 4), key=len, reverse=True)
    return re.compile("|".join(alternatives) or "(?!)")


class TermIndex:
    """Whole-word lookup of every list's terms at once: at each word, the longest phrase that is a term wins."""

    def __init__(self, terms: Mapping[str, Iterable[str]]) -> None:
        self._tags: dict[str, set[str]] = {}
        for tag, words in terms.items():
            for term in words:
                if term:
                    self._tags.setdefault(term, set()).add(tag)
        self._longest = min(_MAX_WORDS, max((t.count(" ") + 1 for t in self._tags), default=1))
        self._vocabulary = {word for term in self._tags for word in term.split()}
        self._inner = {
            tag: _inner_pattern(words)
            for tag, words in terms.items()
            if tag not in ("allow", "people", "adults", "objects")
        }

    def _lookup(self, phrase: str) -> tuple[str, set[str]] | None:
        for candidate in (
            phrase,
            phrase[:-1] if phrase.endswith("s") else "",
            phrase[:-2] if phrase.endswith("es") else "",
        ):
            if candidate and candidate in self._tags:
                return candidate, self._tags[candidate]
        return None

    def _said_of_object(self, term: str, term_tags: set[str], words: Sequence[str], after: int) -> bool:
        """Whether `term` (at the word before `after`) is an object modifier said directly of an object: the
        object is the next word, or follows at most two words that are in no list ("a sexy retro jukebox", never
        "a sexy woman's jukebox")."""
        if term not in _MODIFIER_TERMS or not term_tags <= _MODIFIED_TAGS:
            return False
        for word in words[after : after + 3]:
            found = self._lookup(word)
            if found is not None:
                return "objects" in found[1]
        return False

    def _is_harmful(self, phrase: str) -> bool:
        hit = self._lookup(phrase)
        return hit is not None and bool(hit[1] & _HARMFUL_TAGS)

    def _is_person(self, word: str) -> bool:
        hit = self._lookup(word)
        return hit is not None and bool(hit[1] & _PERSON_TAGS)

    def resegment(self, normalized: str) -> str:
        """Words run together or broken apart to hide a term, put right: "nakedwoman" → "naked woman" (a harmful
        term and a word for a person, both of four letters or more), "nu de" → "nude" (two pieces that are no
        known word or stop word, one of them at most three letters, that together make a harmful term)."""
        words = normalized.split()
        out: list[str] = []
        i = 0
        while i < len(words):
            word = words[i]
            if i + 1 < len(words):
                following = words[i + 1]
                joined = word + following
                if (
                    min(len(word), len(following)) <= 3
                    and not ({word, following} & (self._vocabulary | STOPWORDS))
                    and self._is_harmful(joined)
                ):
                    out.append(joined)
                    i += 2
                    continue
            if len(word) >= 8 and word not in self._vocabulary:
                for cut in range(4, len(word) - 3):
                    head, tail = word[:cut], word[cut:]
                    if (self._is_harmful(head) and self._is_person(tail)) or (
                        self._is_person(head) and self._is_harmful(tail)
                    ):
                        out.extend((head, tail))
                        break
                else:
                    out.append(word)
                i += 1
                continue
            out.append(word)
            i += 1
        return " ".join(out)

    def unstretch(self, normalized: str) -> str:
        """Stretched words squeezed to the spelling a term list knows ("naaaked" → "naked", "boooobs" →
        "boobs"; "xxx" is known as it is), else to single letters ("himsellllf" → "himself")."""
        words = normalized.split()
        for i, word in enumerate(words):
            forms = squeeze(word)
            if forms and word not in self._vocabulary:
                words[i] = next((f for f in forms if f in self._vocabulary), forms[0])
        return " ".join(words)

    def scan(
        self,
        normalized: str,
        tags: dict[str, str],
        every: dict[str, set[str]] | None = None,
        negated: frozenset[str] = frozenset(),
    ) -> tuple[str, str]:
        """Add `tag → term` for each list with a term in the text (first found wins; `every`, if given, collects
        all the terms found per tag). Return the text with
        harmless (allow-listed) phrases dropped, for the rules, and the same without the names of groups of
        people, for the classifier (so that it judges what is said, never which group is named).

        Spelled-out words ("c o c k t a i l") are read joined, and their letters are also searched for terms of
        four letters or more ("a n u d e")."""
        runs = letter_runs(normalized)
        words = join_letter_runs(normalized).split() if runs else normalized.split()
        kept: list[str] = []
        anonymous: list[str] = []
        i = 0
        while i < len(words):
            for size in range(min(self._longest, len(words) - i), 0, -1):
                hit = self._lookup(" ".join(words[i : i + size]))
                if hit is not None:
                    term, term_tags = hit
                    unwanted = (
                        i > 0 and words[i - 1] in _NEGATIONS and words[i] in negated and term_tags <= _HARMFUL_TAGS
                    )
                    if unwanted or self._said_of_object(term, term_tags, words, i + size):
                        i += size
                        break
                    for tag in term_tags:
                        tags.setdefault(tag, term)
                        if every is not None:
                            every.setdefault(tag, set()).add(term)
                    if "allow" not in term_tags:
                        kept.extend(words[i : i + size])
                        anonymous.extend([] if "groups" in term_tags else words[i : i + size])
                    i += size
                    break
            else:
                kept.append(words[i])
                anonymous.append(words[i])
                i += 1
        for run in runs:
            whole = self._lookup(run)
            if whole is not None and "allow" in whole[1]:
                continue  # "r a p e s e e d"
            for tag, pattern in self._inner.items():
                match = pattern.search(run)
                if match:
                    tags.setdefault(tag, match.group(0))
                    if every is not None:
                        every.setdefault(tag, set()).add(match.group(0))
        return " ".join(kept), " ".join(anonymous)


class PromptGate:
    """Checks a prompt and its negative prompt against a `Policy` (the strict default when none is given)."""

    def __init__(self, terms: Mapping[str, list[str]], classifier: Classifier | None = None) -> None:
        self._index = TermIndex(terms)
        self._rules = RuleSet(terms.get("groups", ()), [*terms.get("people", ()), *terms.get("minors", ())])
        self.classifier = classifier

    @classmethod
    def from_package(cls, extra_dir: Path | None = None, *, classifier: bool = True) -> PromptGate:
        """The shipped term lists and model, plus any list files (same names as the shipped ones) in `extra_dir`.

        Without `classifier` the learned second opinion is left out (term lists and rules only).
        """
        data = resources.files("moderation") / "data"
        terms = {tag: _load_terms((data / name).read_text("utf-8")) for tag, name in _FILES.items()}
        if extra_dir is not None:
            for tag, name in _FILES.items():
                path = extra_dir / name
                if path.is_file():
                    terms[tag] += _load_terms(path.read_text("utf-8"))
        return cls(terms, PromptClassifier.from_package() if classifier else None)

    def check(self, prompt: str, negative: str = "", *, policy: Policy | None = None) -> Decision:
        """The verdict on a prompt. Never raises: a failing check refuses the prompt (layer "error")."""
        try:
            return self._check(prompt, negative, policy or _STRICT)
        except Exception as error:
            log.exception("prompt check failed; refusing the prompt")
            return Decision(False, None, "error", 1.0, f"{type(error).__name__}: {error}")

    def findings(self, prompt: str, negative: str = "") -> list[Finding]:
        """Everything the term lists and rules find, whatever the policy (for moderators and tests)."""
        return self._findings(prompt, negative)[0]

    def classifier_text(self, prompt: str) -> str:
        """What the classifier reads: the normalised prompt without harmless phrases and without group names."""
        return self._findings(prompt, "")[1]

    def _findings(self, prompt: str, negative: str) -> tuple[list[Finding], str]:
        tags: dict[str, str] = {}
        every: dict[str, set[str]] = {}
        text = self._index.resegment(self._index.unstretch(normalize(prompt)))
        negated = frozenset(normalize(word) for word in _NEGATED.findall(prompt))
        masked, anonymous = self._index.scan(text, tags, every, negated)
        if not any(t in tags for t in _PERSON_TAGS) and not MINOR_AGE.search(masked):
            for category, modifiers in OBJECT_MODIFIERS.items():
                # "Sexy" of no person at all ("a sexy red ferrari") is no harm; what is done to a body needs a
                # named object to be sure it is no one's ("a beheaded statue", never "a beheaded body").
                said_of_a_thing = "objects" in tags or (category == "sexual" and not _SEXY_BODY.search(masked))
                if category in tags and every[category] <= modifiers and said_of_a_thing:
                    del tags[category]
        found = [
            Finding(category, "blocklist", f"term {tags[category]!r}") for category in CATEGORIES if category in tags
        ]
        found += self._rules.positive([masked], tags, prompt)
        if negative.strip():
            found += self._rules.negative(negative, masked, tags)
        return found, anonymous

    def _check(self, prompt: str, negative: str, policy: Policy) -> Decision:
        found, classifier_text = self._findings(prompt, negative)
        found = [f for f in found if policy.blocks(f.category)]
        for category in PRIORITY:  # the most serious category; for one category, the first layer that found it
            finding = next((f for f in found if f.category == category), None)
            if finding is not None:
                return Decision(False, category, finding.layer, 1.0, finding.detail)
        top = 0.0
        if self.classifier is not None and policy.use_classifier:
            scores = self.classifier.scores(classifier_text)
            words = content_words(classifier_text)
            blocked = [c for c in PRIORITY if policy.blocks(c) and c in scores]
            for category in blocked:
                threshold = policy.classifier_thresholds.get(category, self.classifier.thresholds[category])
                if self.classifier.confident(category, scores, threshold, words=words):
                    return Decision(False, category, "classifier", scores[category], f"threshold {threshold:.2f}")
            top = max((scores[c] for c in blocked), default=0.0)
        return Decision(True, None, "none", top)
