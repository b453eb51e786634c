import pytest

from engine.errors import InvalidRequest
from engine.jobs import GenerationSpec
from engine.limits import Limits

LIMITS = Limits(max_count=4, max_steps=50, min_size=64, max_size=1024, max_prompt_chars=1000)


def spec(**changes: object) -> GenerationSpec:
    values: dict[str, object] = {"prompt": "a red fox in snow", "seed": 1}
    values.update(changes)
    return GenerationSpec(**values)  # type: ignore[arg-type]


def test_a_normal_request_passes() -> None:
    LIMITS.check(spec(count=4, steps=50, width=512, height=768))


@pytest.mark.parametrize(
    ("changes", "field", "says"),
    [
        ({"prompt": "   "}, "prompt", "empty"),
        ({"prompt": "x" * 1001}, "prompt", "limit is 1000"),
        ({"negative_prompt": "y" * 1001}, "negative", "limit is 1000"),
        ({"count": 0}, "count", "between 1 and 4"),
        ({"count": 5}, "count", "between 1 and 4"),
        ({"steps": 0}, "steps", "between 1 and 50"),
        ({"steps": 51}, "steps", "between 1 and 50"),
        ({"width": 500}, "size", "multiple of 8"),
        ({"height": 2048}, "size", "between 64 and 1024"),
        ({"seed": -1}, "seed", "0 to 4294967295"),
        ({"seed": 2**32}, "seed", "0 to 4294967295"),
        ({"guidance_scale": 100.0}, "guidance", "between 0 and 30"),
    ],
)
def test_each_bad_option_gets_a_clear_message(changes: dict[str, object], field: str, says: str) -> None:
    with pytest.raises(InvalidRequest) as caught:
        LIMITS.check(spec(**changes))
    assert caught.value.field == field
    assert says in caught.value.message


def test_seeds_are_consecutive_and_wrap() -> None:
    assert spec(seed=5, count=3).seeds() == [5, 6, 7]
    assert spec(seed=2**32 - 1, count=2).seeds() == [2**32 - 1, 0]
