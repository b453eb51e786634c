from typing import Any

import pytest

from moderation import ModerationError
from moderation.policy import CATEGORIES, CATEGORY_LABELS, Policy, PolicyBook, PolicyError


def test_default_is_strict() -> None:
    policy = Policy()
    assert policy.blocked == frozenset(CATEGORIES)
    assert not policy.allow_adult
    assert not policy.adult_allowed
    assert policy.use_classifier
    assert dict(policy.classifier_thresholds) == {}
    assert set(CATEGORY_LABELS) == set(CATEGORIES)


def test_effective_lifts_adult_content_only_with_opt_in_and_nsfw_channel() -> None:
    assert Policy().effective(nsfw_channel=True).blocks("sexual")
    assert Policy(allow_adult=True).blocks("sexual")
    assert Policy(allow_adult=True).effective(nsfw_channel=False).blocks("sexual")
    adult = Policy(allow_adult=True).effective(nsfw_channel=True)
    assert not adult.blocks("sexual")
    assert adult.adult_allowed
    assert adult.blocks("sexual/minors")
    # Back to an ordinary channel: sexual content is refused again.
    assert adult.effective(nsfw_channel=False).blocks("sexual")


def test_minors_and_adult_content_cannot_be_unblocked_through_the_list() -> None:
    policy = Policy(blocked=frozenset({"hate"}))
    assert policy.blocked == {"hate", "sexual", "sexual/minors"}
    assert policy.effective(nsfw_channel=True).blocked == {"hate", "sexual", "sexual/minors"}


def test_unknown_category_names_the_valid_ones() -> None:
    with pytest.raises(PolicyError) as raised:
        Policy(blocked=frozenset({"gore"}))
    message = str(raised.value)
    assert "'gore'" in message
    for name in CATEGORIES:
        assert name in message
    assert isinstance(raised.value, ValueError)
    assert isinstance(raised.value, ModerationError)


@pytest.mark.parametrize(
    ("data", "fragment"),
    [
        ({"default": {"blocked": ["violence"]}}, "default.blocked: unknown category 'violence'"),
        ({"guilds": {"1": {"blocked": "hate"}}}, "single string"),
        ({"guilds": {"1": {"allow_adult": "yes"}}}, "guilds.1.allow_adult must be true or false"),
        ({"guilds": {"1": {"nsfw": True}}}, "unknown setting(s) 'nsfw'"),
        ({"default": {"classifier_thresholds": {"hate": 1.5}}}, "at most 1"),
        ({"default": {"classifier_thresholds": {"spam": 0.5}}}, "unknown category 'spam'"),
        ({"guilds": []}, "guilds must be a table"),
        ({"defaults": {}}, "unknown key(s) 'defaults'"),
    ],
)
def test_bad_configuration_is_explained(data: dict[str, Any], fragment: str) -> None:
    with pytest.raises(PolicyError) as raised:
        PolicyBook.from_dict(data)
    assert fragment in str(raised.value)


def test_policy_book_from_a_plain_mapping() -> None:
    book = PolicyBook.from_dict(
        {
            "default": {"classifier_thresholds": {"hate": 0.9}},
            "guilds": {
                "123": {"allow_adult": True},
                456: {"blocked": ["sexual/minors", "hate"], "classifier_thresholds": {"illicit": 0.95}},
            },
        }
    )
    assert book.for_guild(None) == book.default
    assert book.for_guild("999") == book.default
    assert book.default.classifier_thresholds == {"hate": 0.9}

    adult_guild = book.for_guild(123)
    assert adult_guild.allow_adult
    assert adult_guild.blocked == frozenset(CATEGORIES)  # inherited from the default
    assert book.for_channel(123, nsfw_channel=True).adult_allowed
    assert not book.for_channel(123, nsfw_channel=False).adult_allowed
    assert not book.for_channel(None, nsfw_channel=True).adult_allowed

    lenient = book.for_guild("456")
    assert lenient.blocked == {"sexual/minors", "hate", "sexual"}
    assert not lenient.blocks("violence/graphic")
    assert lenient.classifier_thresholds == {"hate": 0.9, "illicit": 0.95}  # merged over the default's


def test_empty_configuration_is_the_strict_default() -> None:
    assert PolicyBook.from_dict({}) == PolicyBook()
    assert PolicyBook().for_guild(1) == Policy()
