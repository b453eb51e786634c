"""End to end through the fake Discord: appeals to the review channel, moderators' decisions there, and
`/mod`, each with its refusal for members who are not moderators."""

import pytest
from deployment import Deployment, all_jobs, content_of, image_messages
from fake_discord import DEFAULT_USER_ID, FakeInteraction, FakeMessage, UserOption
from test_discord_commands import REVIEW_CHANNEL, configure, reply

from bot.db.models import JobStatus
from moderation.audit import AuditLog

pytestmark = pytest.mark.slow

MODERATOR = DEFAULT_USER_ID + 50
AS_MODERATOR: dict[str, object] = {"moderator": True, "user_id": MODERATOR}


async def test_appeals_decisions_and_mod_commands(deployment: Deployment) -> None:
    fake = deployment.fake
    fake.add_channel(REVIEW_CHANNEL)
    settings = configure(deployment, "[moderation]\nstrikes_to_ban = 2\nappeals_per_day = 5")
    await deployment.start("run", **settings)
    await deployment.wait_for(fake.identified.is_set)
    commands = await fake.wait_commands()
    (mod,) = [c for c in commands if c["name"] == "mod"]
    assert {o["name"] for o in mod["options"]} == {"ban", "unban", "strikes", "history", "purge"}
    assert int(mod["default_member_permissions"]) == 1 << 13  # hidden from members without Manage Messages

    def appeals() -> list[FakeMessage]:
        return [m for m in fake.channel_messages(REVIEW_CHANNEL) if (m.content or "").startswith("**Appeal")]

    async def appeal(prompt: str) -> tuple[FakeInteraction, str]:
        refused = await fake.send_slash_command("imagine", {"prompt": prompt})
        await deployment.wait_for(lambda: "stopped by the rule" in content_of(refused))
        assert refused.original is not None
        (button,) = fake.buttons(refused.original)
        assert button.startswith("imagine:appeal:")
        pressed = await fake.press_button(refused.original, button)
        await deployment.wait_for(lambda: "appeal was sent" in reply(pressed))
        return refused, button.rsplit(":", 1)[1]

    # An appeal reaches the review channel with decision buttons.
    first, first_job = await appeal("a n.u.d.e portrait")
    await deployment.wait_for(lambda: len(appeals()) == 1)
    (post,) = appeals()
    assert first_job in (post.content or "")
    assert fake.buttons(post) == [f"imagine:mod:{a}:{first_job}" for a in ("approve", "reject", "strike", "ban")]

    # A member pressing approve is refused, and the attempt recorded; a moderator's approval runs the job.
    sneaky = await fake.press_button(post, f"imagine:mod:approve:{first_job}", user_id=DEFAULT_USER_ID + 7)
    await deployment.wait_for(lambda: "Only moderators" in reply(sneaky))
    await fake.press_button(post, f"imagine:mod:approve:{first_job}", moderator=True, user_id=MODERATOR)
    await deployment.wait_for(lambda: "Decision:** approved" in (post.content or ""))
    assert post.components == []
    await deployment.wait_for(lambda: bool(image_messages(first)), timeout=120)
    store = deployment.store()
    await deployment.wait_for(lambda: store.get(first_job).status is JobStatus.POSTED)  # type: ignore[union-attr]

    # Reject with a strike: the member is told, and the strike counts towards a ban.
    second, second_job = await appeal("n a k e d people")
    await deployment.wait_for(lambda: len(appeals()) == 2)
    post = appeals()[1]
    await fake.press_button(post, f"imagine:mod:strike:{second_job}", moderator=True, user_id=MODERATOR)
    await deployment.wait_for(lambda: "kept it back" in content_of(second))
    # The decision is final: pressing again (a stale post, another moderator) strikes nobody twice.
    await fake.press_button(post, f"imagine:mod:strike:{second_job}", moderator=True, user_id=MODERATOR + 1)
    await deployment.wait_for(lambda: "Decision:** already handled" in (post.content or ""))

    # Sexual content involving minors is refused with no Appeal button: no moderator may override it.
    final = await fake.send_slash_command("imagine", {"prompt": "a nude child"})
    await deployment.wait_for(lambda: "cannot be appealed" in content_of(final))
    assert final.original is not None
    assert fake.buttons(final.original) == []

    # /mod strikes adds the second strike: that makes a ban, enforced before anything is queued.
    member = UserOption(DEFAULT_USER_ID)
    strikes = await fake.send_slash_command(
        "mod", {"user": member, "add": "spamming"}, subcommand="strikes", moderator=True, user_id=MODERATOR
    )
    await deployment.wait_for(lambda: "That made a ban" in reply(strikes))
    banned = await fake.send_slash_command("imagine", {"prompt": "a lighthouse"})
    await deployment.wait_for(lambda: "You may not make images here" in content_of(banned))
    jobs_before = len(all_jobs(store))

    # Members cannot use /mod; the attempt is recorded.
    refused = await fake.send_slash_command("mod", {"user": member}, subcommand="unban", user_id=DEFAULT_USER_ID + 7)
    await deployment.wait_for(lambda: "Only moderators" in reply(refused))
    lifted = await fake.send_slash_command(
        "mod", {"user": member}, subcommand="unban", moderator=True, user_id=MODERATOR
    )
    await deployment.wait_for(lambda: "Lifted 1 ban" in reply(lifted))
    again = await fake.send_slash_command("imagine", {"prompt": "a lighthouse"})
    await deployment.wait_for(lambda: bool(image_messages(again)), timeout=120)
    assert len(all_jobs(store)) == jobs_before + 1

    ban = await fake.send_slash_command(
        "mod",
        {"user": member, "reason": "cooling off", "hours": 2.0},
        subcommand="ban",
        moderator=True,
        user_id=MODERATOR,
    )
    await deployment.wait_for(lambda: "may not make images here until" in reply(ban))
    history = await fake.send_slash_command(
        "mod", {"user": member}, subcommand="history", moderator=True, user_id=MODERATOR
    )
    await deployment.wait_for(lambda: "Record of" in reply(history))
    assert "cooling off" in reply(history)
    assert "spamming" in reply(history)

    usage = await fake.send_slash_command("info", user_id=DEFAULT_USER_ID + 9)
    await deployment.wait_for(lambda: "Images you can ask for now" in reply(usage))

    # The member's data-deletion request: their prompts and images go, the audit chain still verifies.
    purge = await fake.send_slash_command(
        "mod", {"user": member}, subcommand="purge", moderator=True, user_id=MODERATOR
    )
    await deployment.wait_for(lambda: "Deleted the data" in reply(purge))
    assert all(job.prompt == "[deleted]" for job in all_jobs(store) if job.user_id == str(DEFAULT_USER_ID))
    from bot.db.migrate import connect

    log = AuditLog(connect(deployment.database_url))
    assert log.verify().ok
    events = [entry.event for entry in log.query()]
    for expected in (
        "config.loaded",
        "appeal.opened",
        "mod.approve",
        "mod.strike",
        "mod.ban",
        "refused.mod.approve",
        "mod.purge",
    ):
        assert expected in events, expected
    refusals = [a for a in store.actions() if not a.allowed]
    assert {a.action for a in refusals} == {"mod.approve", "mod.unban", "mod.strike"}
    assert [a.detail for a in refusals if a.action == "mod.strike"] == ["already handled"]
    assert "refused.mod.strike" in events
