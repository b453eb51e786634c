"""Safeguards: prompt and image gates, provenance, audit log and limits. No Discord objects here."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # imported for annotations only, so `import moderation` stays cheap
    from moderation.policy import Policy
    from moderation.prompt_gate import PromptGate


class ModerationError(Exception):
    """Base of the errors the moderation package raises on purpose."""


def check_lines(lines: Iterable[str], gate: PromptGate, policy: Policy | None = None) -> Iterator[dict[str, Any]]:
    """One verdict per non-empty line (a positive prompt; surrounding white space is dropped):
    `{"prompt", "allowed", "category", "layer", "score"}`, ready to print as JSON lines."""
    for line in lines:
        prompt = line.strip()
        if not prompt:
            continue
        decision = gate.check(prompt, policy=policy)
        yield {
            "prompt": prompt,
            "allowed": decision.allowed,
            "category": decision.category,
            "layer": decision.layer,
            "score": decision.score,
        }
