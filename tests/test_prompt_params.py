"""Inline Midjourney-style parameters, aspect ratios and how a request's options are settled."""

import pytest

from bot.aspect import ASPECTS, parse_aspect, parse_size, size_for_aspect
from bot.prompt_params import split_parameters
from bot.requests import ImagineRequest, resolve
from engine.errors import InvalidRequest
from engine.registry import ModelRegistry, ModelSpec


def test_parameters_are_taken_out_of_the_prompt() -> None:
    text, params = split_parameters("a fox in the snow --ar 16:9 --seed 5 --no text, watermark --steps 4")
    assert text == "a fox in the snow"
    assert (params.aspect, params.seed, params.negative, params.steps) == ("16:9", 5, "text, watermark", 4)


def test_words_with_hyphens_stay_in_the_prompt_and_phone_dashes_count() -> None:
    text, params = split_parameters("a well--known pre-war house —ar 2:3 –seed 9")
    assert text == "a well--known pre-war house"
    assert (params.aspect, params.seed) == ("2:3", 9)


def test_words_after_a_one_word_value_belong_to_the_prompt() -> None:
    text, params = split_parameters("--ar 3:2 a castle --private at dusk")
    assert text == "a castle at dusk"
    assert params.aspect == "3:2"
    assert params.private is True


def test_aliases_and_every_kind_of_value() -> None:
    text, params = split_parameters("x --aspect 16x9 --cfg 7.5 --n 2 --model tiny --style ink --size 768x512")
    assert text == "x"
    assert params.aspect == "16:9"
    assert params.guidance == 7.5
    assert params.count == 2
    assert (params.model, params.style, params.width, params.height) == ("tiny", "ink", 768, 512)


@pytest.mark.parametrize(
    ("prompt", "says"),
    [
        ("a cat --v 6", "`--v` is not a parameter"),
        ("a cat --ar 5:4", "aspect ratio '5:4' is not offered"),
        ("a cat --ar", "it needs a value"),
        ("a cat --seed abc", "give a whole number"),
        ("a cat --cfg lots", "give a number"),
        ("a cat --seed 1 --seed 2", "given twice"),
        ("a cat --size big", "WIDTHxHEIGHT"),
    ],
)
def test_bad_parameters_say_what_is_valid(prompt: str, says: str) -> None:
    with pytest.raises(InvalidRequest) as caught:
        split_parameters(prompt)
    assert says in caught.value.message
    if "aspect" not in says and "WIDTH" not in says and "twice" not in says:
        assert "--ar 16:9" in caught.value.message  # the list of valid parameters


def test_aspects_keep_the_area_and_the_grain() -> None:
    for aspect in ASPECTS:
        width, height = size_for_aspect(aspect, (512, 512), 1024)
        assert width % 64 == 0
        assert height % 64 == 0
        assert 0.8 < width * height / (512 * 512) <= 1.0
        ratio_w, ratio_h = (int(p) for p in aspect.split(":"))
        assert abs(width / height - ratio_w / ratio_h) < 0.2
    assert size_for_aspect("16:9", (512, 512), 1024) == (640, 384)
    assert size_for_aspect("1:1", (64, 64), 1024) == (64, 64)
    assert max(size_for_aspect("16:9", (1024, 1024), 1024)) <= 1024


def test_aspect_and_size_spellings() -> None:
    assert parse_aspect(" 16 / 9 ") == "16:9"
    assert parse_size("768 × 512") == (768, 512)
    with pytest.raises(InvalidRequest, match="Choose one of: 1:1"):
        parse_aspect("21:9")


REGISTRY = ModelRegistry(
    (ModelSpec("tiny", "tiny-folder", width=64, height=64, max_steps=8), ModelSpec("other", "other-folder")),
    default="tiny",
)


def request(prompt: str, **options: object) -> ImagineRequest:
    return ImagineRequest(frontend="discord", user_id="u", prompt=prompt, **options)  # type: ignore[arg-type]


def test_options_win_over_inline_parameters_which_win_over_saved_defaults() -> None:
    saved = {"aspect": "9:16", "steps": 20, "private": True, "model": "other"}
    settled = resolve(request("a boat --seed 3 --ar 16:9 --steps 2", seed=4), saved, REGISTRY)
    assert settled.prompt == "a boat"
    assert settled.seed == 4  # the option
    assert settled.steps == 2  # inline, over the saved 20
    assert settled.aspect == "16:9"
    assert settled.model == "other"  # saved default
    assert settled.private is True
    assert (settled.width, settled.height) == (640, 384)  # 512 px base: "other" names no size

    plain = resolve(request("a boat", model="tiny"), saved, REGISTRY)
    assert plain.aspect == "9:16"
    assert (plain.width, plain.height) == (48, 80)  # around tiny's 64 px, in multiples of 8
    assert plain.steps == 8  # the saved 20, capped at the model's own limit


def test_an_explicit_size_wins_over_any_aspect() -> None:
    settled = resolve(request("a boat --ar 16:9", width=128, height=96), {"aspect": "1:1"}, REGISTRY)
    assert (settled.width, settled.height) == (128, 96)


def test_a_saved_model_that_was_removed_is_ignored_but_a_named_one_is_checked() -> None:
    assert resolve(request("a boat"), {"model": "gone"}, REGISTRY).model == "tiny"
    with pytest.raises(InvalidRequest, match="Choose one of: tiny, other"):
        resolve(request("a boat --model gone"), {}, REGISTRY)


@pytest.mark.parametrize(
    ("prompt", "text", "negative"),
    [
        (
            "a businesswoman in an office, Negative prompt: nsfw, nudity, gore",
            "a businesswoman in an office",
            "nsfw, nudity, gore",
        ),
        ("a cat on a sofa\nnegative prompt: lowres, bad hands", "a cat on a sofa", "lowres, bad hands"),
        ("a positive and negative space poster", "a positive and negative space poster", None),
    ],
)
def test_a_pasted_negative_prompt_is_what_to_avoid(prompt: str, text: str, negative: str | None) -> None:
    assert split_parameters(prompt)[0] == text
    assert split_parameters(prompt)[1].negative == negative


def test_a_pasted_negative_prompt_after_an_inline_no_joins_it() -> None:
    text, inline = split_parameters("a harbour --ar 16:9 --no people, Negative prompt: blur")
    assert text == "a harbour"
    assert inline.aspect == "16:9"
    assert inline.negative == "people, blur"
