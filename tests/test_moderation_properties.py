"""Properties of the normaliser and the prompt gate over arbitrary Unicode text."""

import re

from hypothesis import given, settings
from hypothesis import strategies as st

from moderation import check_lines
from moderation.normalize import letter_runs, normalize, variants
from moderation.policy import Policy
from moderation.prompt_gate import PromptGate

GATE = PromptGate.from_package()
ADULT = Policy(allow_adult=True).effective(nsfw_channel=True)

# Any text, plus text built from the characters evasions use, so that the interesting paths are taken often.
# Look-alike letters (Cyrillic, Greek, full-width, mathematical, circled), leet symbols, separators, zero-width and
# combining characters: escaped here so that the file itself shows no look-alikes.
_CHARACTERS = (
    "nude0134579@$!.-_*,|/\\ "
    "\u0430\u0435\u043e\u0440\u0441\u0445\u0443\u03bd\u03c5"  # Cyrillic and Greek
    "\u200b\u200d\u00ad\ufeff\u0301\u0308"  # zero-width, soft hyphen, byte-order mark, combining accents
    "\uff2e\uff55\U0001d427\u24dd"  # full-width, mathematical bold, circled
)
_TRICKY = st.sampled_from([*_CHARACTERS, "nude", "naked", "child", "kill all", "my ex"])
TEXT = st.one_of(st.text(max_size=200), st.lists(_TRICKY, max_size=40).map("".join))
FAST = settings(max_examples=150, deadline=None)


@FAST
@given(TEXT)
def test_normalize_never_raises_and_yields_plain_words(text: str) -> None:
    result = normalize(text)
    assert re.fullmatch(r"(?:[a-z0-9]+(?: [a-z0-9]+)*)?", result)


@FAST
@given(TEXT)
def test_normalize_is_idempotent(text: str) -> None:
    once = normalize(text)
    assert normalize(once) == once


@FAST
@given(TEXT)
def test_variants_and_letter_runs_are_normalised_text(text: str) -> None:
    forms = variants(text)
    assert forms[0] == normalize(text)
    for form in forms:
        assert normalize(form) == form
        for run in letter_runs(form):
            assert run.isalpha()
            assert len(run) >= 3


@FAST
@given(TEXT, TEXT)
def test_gate_never_raises_nor_errors(prompt: str, negative: str) -> None:
    for policy in (None, ADULT):
        decision = GATE.check(prompt, negative, policy=policy)
        assert decision.layer != "error", decision.detail  # no checker broke on this input
        assert 0.0 <= decision.score <= 1.0
        assert decision.allowed == (decision.layer == "none")
        assert (decision.category is None) == decision.allowed


@FAST
@given(st.lists(TEXT, max_size=5))
def test_check_lines_yields_one_result_per_non_empty_line(lines: list[str]) -> None:
    results = list(check_lines(lines, GATE, None))
    assert len(results) == sum(1 for line in lines if line.strip())
    assert all(set(r) == {"prompt", "allowed", "category", "layer", "score"} for r in results)


@FAST
@given(st.sampled_from(["nude", "naked", "porn", "gore", "suicide"]), st.sampled_from([".", "-", " ", "\u200b", "*"]))
def test_separated_letters_are_still_caught(word: str, mark: str) -> None:
    assert not GATE.check(f"a {mark.join(word)} picture").allowed
