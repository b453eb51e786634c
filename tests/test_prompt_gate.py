import pytest

from moderation.normalize import normalize
from moderation.prompt_gate import PromptGate

GATE = PromptGate.from_package()


@pytest.mark.parametrize(
    "prompt",
    [
        "a castle in Scunthorpe",
        "a therapist's office with plants",
        "grape harvest in Sussex",
        "breast cancer awareness ribbon",
        "a cocktail on a beach bar",
        "a great tit on a branch",
        "a rooster at sunrise",
        "Essex countryside",
        "children playing football in a park",
        "a 4k photo of a cat",
        "a b c blocks on a shelf",
        "I am a cat",
    ],
)
def test_innocent_prompts_pass(prompt: str) -> None:
    assert GATE.check(prompt).allowed


@pytest.mark.parametrize(
    ("prompt", "category"),
    [
        ("a nude woman", "sexual"),
        ("NSFW art", "sexual"),
        ("n.u.d.e portrait", "sexual"),
        ("n u d e portrait", "sexual"),
        ("a n.u.d.e portrait", "sexual"),
        ("a n u d e portrait", "sexual"),
        ("a N-U-D-E portrait", "sexual"),
        ("nаked (Cyrillic a)", "sexual"),
        ("n\u200bude with a zero-width space", "sexual"),
        ("ｎｕｄｅ in full width", "sexual"),
        ("s3xy pose", "sexual"),
        ("naaaaked", "sexual"),
        ("a decapitated statue, gore", "violence/graphic"),
        ("naked child", "sexual/minors"),
        ("sexy schoolgirl", "sexual/minors"),
    ],
)
def test_evasions_are_caught(prompt: str, category: str) -> None:
    decision = GATE.check(prompt)
    assert not decision.allowed
    assert decision.category == category
    assert decision.label


def test_normalize_folds_to_plain_words() -> None:
    assert normalize("Ｈéllo,\u200b W0rld!") == "hello world"
    assert normalize("1990 was a year") == "1990 was a year"
