"""Text normalisation that undoes the usual ways of slipping a word past a filter.

Look-alike letters (Cyrillic а), zero-width and other format characters, full-width forms,
leetspeak, separated letters (n.u.d.e, n u d e) and stretched letters (nuuude) all fold
back to the plain word, so the term lists only need the plain spelling.
"""

from __future__ import annotations

import re
import unicodedata

from anyascii import anyascii

_LEET = str.maketrans({"0": "o", "1": "i", "3": "e", "4": "a", "5": "s", "7": "t", "@": "a", "$": "s", "!": "i"})
_TOKEN = re.compile(r"[a-z0-9@$!]*[a-z0-9]")  # a trailing "!" or "$" is punctuation
# Three or more single letters separated by the same mark: "n.u.d.e", "n-u-d-e" (not "a n.u.d.e").
# Letters separated by spaces alone are left to `letter_runs`.
_SPACED = re.compile(r"\b[a-z](?P<gap>\s*[.\-_*,+|/\\]+\s*)(?:[a-z](?P=gap)){1,}[a-z]\b")
_LETTER_RUN = re.compile(r"\b(?:[a-z] ){2,}[a-z]\b")
_STRETCHED = re.compile(r"([a-z])\1{2,}")


def _fold_leet(match: re.Match[str]) -> str:
    token = match.group(0)
    # Only tokens that mix letters with look-alike symbols are leetspeak; plain numbers stay numbers.
    if any(c.isalpha() for c in token) and any(not c.isalpha() for c in token):
        return token.translate(_LEET)
    return token


def _strip_format_characters(text: str) -> str:
    return "".join(c for c in text if unicodedata.category(c) not in ("Cf", "Cc", "Mn") or c in "\n\t")


def normalize(text: str) -> str:
    """Lower-case ASCII words separated by single spaces."""
    text = unicodedata.normalize("NFKC", text)
    text = _strip_format_characters(unicodedata.normalize("NFKD", text))
    text = anyascii(text).lower()
    text = _TOKEN.sub(_fold_leet, text)
    text = _SPACED.sub(lambda m: re.sub(r"[^a-z]", "", m.group(0)), text)
    text = re.sub(r"[^a-z0-9]+", " ", text)
    return text.strip()


def letter_runs(normalized: str) -> list[str]:
    """Runs of three or more single letters in normalised text, joined: "a n u d e cat" → ["anude"].

    Such runs are spelled out on purpose, so the gate searches them for terms anywhere, not by word.
    """
    return [match.group(0).replace(" ", "") for match in _LETTER_RUN.finditer(normalized)]


def variants(text: str) -> tuple[str, ...]:
    """The normalised text, and the same with stretched letters squeezed ("naaaked" → "naked")."""
    base = normalize(text)
    squeezed = _STRETCHED.sub(r"\1", base)
    return (base,) if squeezed == base else (base, squeezed)
