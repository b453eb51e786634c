"""Midjourney-style parameters typed inside a prompt: `a fox --ar 16:9 --seed 5 --no text --steps 4`.

People type these out of habit, so they work; the options of a command still win over them.
A parameter starts with two hyphens (or the long dash that phones put in their place) after a space;
`well--known` or `pre-war` in the prompt stay words.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from bot.aspect import ASPECTS, parse_aspect, parse_size
from engine.errors import InvalidRequest

# name -> (aliases, takes a value, help)
_PARAMETERS: dict[str, tuple[tuple[str, ...], bool, str]] = {
    "ar": (("aspect",), True, "--ar 16:9 (aspect ratio: " + ", ".join(ASPECTS) + ")"),
    "size": ((), True, "--size 768x512"),
    "seed": ((), True, "--seed 42"),
    "no": (("negative",), True, "--no text, watermark (what to keep out)"),
    "steps": ((), True, "--steps 4"),
    "guidance": (("cfg",), True, "--guidance 7.5"),
    "count": (("n",), True, "--count 2"),
    "model": ((), True, "--model NAME"),
    "style": ((), True, "--style NAME"),
    "private": ((), False, "--private (only you see the result)"),
}
_ALIASES = {alias: name for name, (aliases, _, _) in _PARAMETERS.items() for alias in (name, *aliases)}
# A parameter marker: "--name" or "—name" (a phone's autocorrect) at the start or after whitespace.
_MARKER = re.compile(r"(?:^|(?<=\s))(?:--|\u2014|\u2013)(?=[A-Za-z])")


def valid_parameters() -> str:
    return "; ".join(help_text for _, _, help_text in _PARAMETERS.values())


@dataclass(frozen=True)
class InlineParameters:
    """What the prompt's own parameters asked for. Unset ones are None."""

    aspect: str | None = None
    width: int | None = None
    height: int | None = None
    seed: int | None = None
    negative: str | None = None
    steps: int | None = None
    guidance: float | None = None
    count: int | None = None
    model: str | None = None
    style: str | None = None
    private: bool | None = None
    given: tuple[str, ...] = field(default=())


def _bad(name: str, value: str, expected: str) -> InvalidRequest:
    return InvalidRequest(
        "parameters", f"`--{name} {value}` is not valid: {expected}. Valid parameters: {valid_parameters()}."
    )


def _int(name: str, value: str) -> int:
    try:
        return int(value)
    except ValueError:
        raise _bad(name, value, "give a whole number") from None


def _float(name: str, value: str) -> float:
    try:
        return float(value)
    except ValueError:
        raise _bad(name, value, "give a number") from None


_NEGATIVE_PROMPT = re.compile(r"\bnegative prompt\s*:", re.IGNORECASE)


def split_parameters(prompt: str) -> tuple[str, InlineParameters]:
    """The prompt without its parameters, and the parameters. Raise `InvalidRequest` on unknown or
    malformed ones, naming them and listing the valid parameters."""
    pieces = _MARKER.split(prompt)
    text = pieces[0].strip()
    values: dict[str, Any] = {}
    given: list[str] = []
    for piece in pieces[1:]:
        word, _, rest = piece.partition(" ")
        raw_name, value = word.lower(), rest.strip()
        name = _ALIASES.get(raw_name)
        if name is None:
            raise InvalidRequest(
                "parameters", f"`--{raw_name}` is not a parameter here. Valid parameters: {valid_parameters()}."
            )
        if name in given:
            raise InvalidRequest("parameters", f"`--{raw_name}` is given twice; give it once.")
        given.append(name)
        takes_value = _PARAMETERS[name][1]
        if not takes_value:
            if value:
                text = f"{text} {value}".strip()  # a flag: what follows is more prompt
            values[name] = True
            continue
        if not value:
            raise _bad(raw_name, "", "it needs a value, for example " + _PARAMETERS[name][2])
        if name == "no":
            values["negative"] = ", ".join(p.strip(" ,\n") for p in _NEGATIVE_PROMPT.split(value) if p.strip(" ,\n"))
            continue
        first, _, after = value.partition(" ")
        if after.strip():
            text = f"{text} {after.strip()}".strip()  # words after a one-word value belong to the prompt
        if name == "ar":
            values["aspect"] = parse_aspect(first, field="parameters")
        elif name == "size":
            values["width"], values["height"] = parse_size(first, field="parameters")
        elif name in ("seed", "steps", "count"):
            values[name] = _int(raw_name, first)
        elif name == "guidance":
            values[name] = _float(raw_name, first)
        else:
            values[name] = first
    # A prompt pasted from another tool often carries its negative prompt as "Negative prompt: ..." (Automatic1111's
    # format): that part is what to avoid, so it joins the negative prompt rather than being drawn.
    found = _NEGATIVE_PROMPT.search(text)
    if found is not None:
        avoid = text[found.end() :].strip(" ,\n")
        text = text[: found.start()].strip(" ,\n")
        if avoid:
            values["negative"] = ", ".join(part for part in (avoid, values.get("negative")) if part)
    return text, InlineParameters(**values, given=tuple(given))
