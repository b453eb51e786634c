"""What the bot answers outside the end-to-end flows: a failing button, the result buttons for any count, the appeal
on a withheld result, the quota text."""

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, cast

import discord
import pytest

from bot.db.store import QuotaState
from bot.discord import text
from bot.discord.buttons import _answered, result_view
from bot.discord.reporter import InteractionReporter
from moderation.quota import Tier


@dataclass
class FakeResponse:
    deferred: bool = False
    sent: list[str] = field(default_factory=list)

    def is_done(self) -> bool:
        return self.deferred or bool(self.sent)

    async def send_message(self, content: str, *, ephemeral: bool = False) -> None:
        assert ephemeral
        self.sent.append(content)


@dataclass
class FakeFollowup:
    sent: list[str] = field(default_factory=list)

    async def send(self, content: str, *, ephemeral: bool = False) -> None:
        assert ephemeral
        self.sent.append(content)


@dataclass
class FakeInteraction:
    response: FakeResponse = field(default_factory=FakeResponse)
    followup: FakeFollowup = field(default_factory=FakeFollowup)


@pytest.mark.parametrize("deferred", [False, True])
async def test_a_failing_press_is_answered_and_logged(deferred: bool, caplog: pytest.LogCaptureFixture) -> None:
    interaction = FakeInteraction(FakeResponse(deferred=deferred))
    async with _answered(cast(discord.Interaction, interaction), "var"):
        raise RuntimeError("the database went away")
    answers = interaction.followup.sent if deferred else interaction.response.sent
    assert answers == [text.button_error()]
    assert "the var button failed" in caplog.text
    assert "the database went away" in caplog.text


async def test_a_press_that_works_is_left_alone() -> None:
    interaction: Any = FakeInteraction()
    async with _answered(interaction, "info"):
        pass
    assert interaction.response.sent == []
    assert interaction.followup.sent == []


@dataclass
class _Job:
    id: str = "0" * 32


@dataclass
class _Image:
    index: int


@pytest.mark.parametrize("count", range(1, 11))
async def test_the_result_buttons_fit_any_allowed_count(count: int) -> None:
    view = result_view(cast(Any, _Job()), cast(Any, [_Image(i) for i in range(count)]))
    labels = [cast(Any, item).item.label for item in view.children]
    assert [label for label in labels if label and label[0] in "UV"] == [f"U{n}" for n in range(1, count + 1)] + [
        f"V{n}" for n in range(1, count + 1)
    ]
    assert len(view.children) == 2 * count + 4


@dataclass
class _Desk:
    can_deliver: bool


@dataclass
class _Client:
    review_desk: _Desk


@dataclass
class _Original:
    edits: list[tuple[str, Any]] = field(default_factory=list)

    async def edit_original_response(self, *, content: str, view: Any = None) -> None:
        self.edits.append((content, view))


@pytest.mark.parametrize(
    ("desk", "held", "category", "appeal"),
    [
        (True, 0, "sexual", True),  # blocked, and there is somewhere to appeal to
        (False, 0, "sexual", False),  # no review channel: nowhere to appeal to
        (True, 1, "sexual", False),  # held: a moderator reviews it anyway
        (True, 0, "sexual/minors", False),  # never appealable
    ],
)
async def test_a_withheld_result_offers_an_appeal_only_where_one_can_be_made(
    desk: bool, held: int, category: str, appeal: bool
) -> None:
    interaction = _Original()
    reporter = InteractionReporter(cast(Any, _Client(_Desk(desk))), cast(Any, interaction))
    await reporter.withheld(cast(Any, _Job()), held=held, blocked=1 - held, category=category)
    ((content, view),) = interaction.edits
    assert "image check" in content
    buttons = [cast(Any, item).item.custom_id for item in view.children] if view is not None else []
    assert buttons == ([f"imagine:appeal:{_Job().id}"] if appeal else [])


def test_info_says_when_the_daily_gpu_budget_starts_again() -> None:
    state = QuotaState(
        tier=Tier(daily_gpu_seconds=600), tokens=3, active_jobs=0, gpu_seconds_today=120, retry_after_seconds=None
    )
    midnight = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0) + timedelta(days=1)
    shown = text.quota(state)
    assert "120 of 600 s" in shown
    assert f"<t:{int(midnight.timestamp())}:R>" in shown
    assert "<t:" not in text.quota(QuotaState(Tier(), 3, 0, 0, None))  # no budget, nothing to reset
