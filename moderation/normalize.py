"""Text normalisation that undoes the usual ways of slipping a word past a filter.

Look-alike letters (Cyrillic а), zero-width and other format characters, full-width forms,
leetspeak, separated letters (n.u.d.e, n u d e) and stretched letters (nuuude) all fold
back to the plain word, so the term lists only need the plain spelling.

`normalize` is idempotent: its output (lower-case ASCII words and numbers separated by single spaces)
normalises to itself.
"""

from __future__ import annotations

import re
import unicodedata

from anyascii import anyascii

_LEET = str.maketrans({"0": "o", "1": "i", "3": "e", "4": "a", "5": "s", "7": "t", "@": "a", "$": "s", "!": "i"})
_TOKEN = re.compile(r"[a-z0-9@$!]*[a-z0-9]")  # a trailing "!" or "$" is punctuation
# A number with a unit is not leetspeak: 4k, 35mm, 1990s, 3d, 1080p, 12yo.
_UNIT = re.compile(
    r"\d+(?:s|k|d|p|px|mm|cm|m|km|st|nd|rd|th|x|fps|bit|yo|yr|yrs|h|hp|gb|mb|kg|g|ml|l|v|hz|mp|girl|girls|boy|boys)"
)
# Three or more single letters (or leet symbols) separated by the same mark: "n.u.d.e", "n-u-d-3" (not "a n.u.d.e").
# Letters separated by spaces alone are left to `letter_runs`.
_SPACED = re.compile(r"\b[a-z0-9](?P<gap>\s*[.\-_*,+|/\\]+\s*)(?:[a-z0-9](?P=gap)){1,}[a-z0-9]\b")
_LETTER_RUN = re.compile(r"\b(?:[a-z] ){2,}[a-z]\b")
_STRETCHED = re.compile(r"([a-z])\1{2,}")
_WORD = re.compile(r"\w+")

# Letters from other scripts that look like a Latin letter but transliterate to something else (Cyrillic р is
# "r" to a transliterator and "p" to a reader), or that are worth pinning down. Applied to a word only when it
# mixes them with Latin letters or consists of nothing else, the way people write "nаked" or "рorn"; a real
# Russian or Greek word is transliterated as usual.
_CONFUSABLES = str.maketrans(
    {
        # Cyrillic
        "а": "a", "в": "b", "е": "e", "ё": "e", "к": "k", "м": "m", "н": "h", "о": "o", "р": "p", "с": "c",
        "т": "t", "у": "y", "х": "x", "ѕ": "s", "і": "i", "ї": "i", "ј": "j", "ԁ": "d", "һ": "h", "ԛ": "q",
        "ԝ": "w", "ӏ": "l", "ь": "b", "ɡ": "g", "А": "A", "В": "B", "Е": "E", "К": "K", "М": "M", "Н": "H",
        "О": "O", "Р": "P", "С": "C", "Т": "T", "У": "Y", "Х": "X", "Ѕ": "S", "І": "I", "Ј": "J",
        # Greek
        "α": "a", "β": "b", "γ": "y", "ε": "e", "η": "n", "ι": "i", "κ": "k", "ν": "v", "ο": "o", "ρ": "p",
        "τ": "t", "υ": "u", "χ": "x", "ω": "w", "Α": "A", "Β": "B", "Ε": "E", "Ζ": "Z", "Η": "H", "Ι": "I",
        "Κ": "K", "Μ": "M", "Ν": "N", "Ο": "O", "Ρ": "P", "Τ": "T", "Υ": "Y", "Χ": "X",
        # Armenian and others
        "օ": "o", "ս": "u", "ո": "n", "հ": "h", "ց": "g", "ı": "i", "ȷ": "j",
    }
)  # fmt: skip
_CONFUSABLE_CHARS = frozenset(chr(code) for code in _CONFUSABLES)


def _unconfuse_word(match: re.Match[str]) -> str:
    word = match.group(0)
    if word.isascii():
        return word
    foreign = [c for c in word if not c.isascii()]
    mixed = any(c.isascii() and c.isalpha() for c in word)
    if mixed or all(c in _CONFUSABLE_CHARS for c in foreign):
        return word.translate(_CONFUSABLES)
    return word


def _fold_leet(match: re.Match[str]) -> str:
    token = match.group(0)
    # Only tokens that mix letters with look-alike symbols are leetspeak; numbers (with a unit) stay numbers.
    if any(c.isalpha() for c in token) and any(not c.isalpha() for c in token) and not _UNIT.fullmatch(token):
        return token.translate(_LEET)
    return token


def _join_spaced(match: re.Match[str]) -> str:
    return _TOKEN.sub(_fold_leet, re.sub(r"[^a-z0-9]", "", match.group(0)))


def _strip_format_characters(text: str) -> str:
    # Format (zero-width and the like), control and combining characters; NFKD first split accents off letters.
    return "".join(c for c in text if unicodedata.category(c) not in ("Cf", "Cc", "Mn", "Me") or c in "\n\t")


def normalize(text: str) -> str:
    """Lower-case ASCII words separated by single spaces."""
    text = unicodedata.normalize("NFKC", text)
    text = _strip_format_characters(unicodedata.normalize("NFKD", text))
    text = _WORD.sub(_unconfuse_word, text)
    text = anyascii(text).lower()
    text = _TOKEN.sub(_fold_leet, text)
    text = _SPACED.sub(_join_spaced, text)
    text = re.sub(r"[^a-z0-9]+", " ", text)
    return text.strip()


def letter_runs(normalized: str) -> list[str]:
    """Runs of three or more single letters in normalised text, joined: "a n u d e cat" → ["anude"].

    Such runs are spelled out on purpose, so the gate searches them for terms anywhere, not by word.
    """
    return [match.group(0).replace(" ", "") for match in _LETTER_RUN.finditer(normalized)]


def join_letter_runs(normalized: str) -> str:
    """Normalised text with each run of single letters written as one word: "a c o c k t a i l" → "acocktail"."""
    return _LETTER_RUN.sub(lambda m: m.group(0).replace(" ", ""), normalized)


def squeeze(normalized: str) -> tuple[str, ...]:
    """Stretched letters squeezed, to one and to two ("naaaked" → "naked", "boooobs" → "boobs"); () if none."""
    if not _STRETCHED.search(normalized):
        return ()
    return (_STRETCHED.sub(r"\1", normalized), _STRETCHED.sub(r"\1\1", normalized))


def variants(text: str) -> tuple[str, ...]:
    """The normalised text, and the same with stretched letters squeezed ("naaaked" → "naked")."""
    base = normalize(text)
    return (base, *squeeze(base))
