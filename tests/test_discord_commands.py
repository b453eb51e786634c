"""End to end through the fake Discord: every command and every result button, with their refusals.

The real `imagine` processes run the tiny model, registered as `tiny` (64 px) and `tiny-b` in a config file."""

import io
from pathlib import Path

import pytest
from deployment import Deployment, all_jobs, content_of, image_messages
from fake_discord import DEFAULT_USER_ID, EPHEMERAL, FakeInteraction, FakeMessage
from PIL import Image

from bot.db.models import JobStatus
from bot.db.store import JobRecord

pytestmark = pytest.mark.slow

OTHER_USER = DEFAULT_USER_ID + 1
REVIEW_CHANNEL = 100_000_000_000_000_900


def configure(deployment: Deployment, extra: str = "") -> dict[str, str]:
    model = deployment.settings["IMAGINE_MODEL"]
    config = deployment.tmp_path / "imagine.toml"
    config.write_text(
        f"""
model = "tiny"
[models.tiny]
source = "{model}"
width = 64
height = 64
[models.tiny-b]
source = "{model}"
[limits]
min_size = 32
[discord]
review_channel_id = {REVIEW_CHANNEL}
moderator_role_ids = [{deployment.fake.moderator_role_id}]
{extra}
"""
    )
    return {"IMAGINE_CONFIG": str(config), "IMAGINE_MODEL": "tiny", "IMAGINE_BOT_MAX_JOBS_PER_USER": "3"}


def sizes(message: FakeMessage) -> list[tuple[int, int]]:
    return [Image.open(io.BytesIO(a.data)).size for a in message.attachments]


def reply(interaction: FakeInteraction) -> str:
    """What an ephemeral answer said: the deferred reply's edits, or a follow-up."""
    texts = [content_of(interaction)] + [m.content or "" for m in interaction.followups]
    return "\n".join(texts)


def job_of(deployment: Deployment, message: FakeMessage) -> JobRecord:
    return next(r for r in all_jobs(deployment.store()) if r.message_id == str(message.id))


async def posted(deployment: Deployment, interaction: FakeInteraction) -> FakeMessage:
    await deployment.wait_for(lambda: bool(image_messages(interaction)), timeout=120)
    (message,) = image_messages(interaction)
    await deployment.wait_for(lambda: job_of_or_none(deployment, message) is not None)
    return message


def job_of_or_none(deployment: Deployment, message: FakeMessage) -> JobRecord | None:
    return next((r for r in all_jobs(deployment.store()) if r.message_id == str(message.id)), None)


async def test_inline_parameters_and_every_result_button(deployment: Deployment) -> None:
    fake = deployment.fake
    fake.add_channel(REVIEW_CHANNEL)
    await deployment.start("run", **configure(deployment))
    await deployment.wait_for(fake.identified.is_set)
    await fake.wait_commands()

    # Autocomplete offers the registry's models.
    choices = await fake.autocomplete("imagine", {"prompt": "x", "model": "tiny"}, "model")
    assert [c["value"] for c in choices] == ["tiny", "tiny-b"]

    # Midjourney-style parameters in the prompt; the count option is a real option.
    first = await fake.send_slash_command(
        "imagine", {"prompt": "a red cube --ar 16:9 --seed 7 --no text --steps 2", "count": 2}
    )
    message = await posted(deployment, first)
    assert sizes(message) == [(80, 48), (80, 48)]  # 16:9 around the model's 64 px, in multiples of 8
    job = job_of(deployment, message)
    assert job.prompt == "a red cube"
    assert job.negative_prompt == "text"
    assert job.seed == 7
    assert job.options["steps"] == 2
    assert "seeds 7, 8" in (message.content or "")
    assert f"job `{job.id[:8]}`" in (message.content or "")
    ids = fake.buttons(message)
    assert ids == [
        f"imagine:up:{job.id}:0",
        f"imagine:up:{job.id}:1",
        f"imagine:reroll:{job.id}",
        f"imagine:var:{job.id}:0",
        f"imagine:var:{job.id}:1",
        f"imagine:info:{job.id}",
        f"imagine:delete:{job.id}",
        f"imagine:report:{job.id}",
    ]

    # V1: an image-to-image variation of the first image, linked to its parent.
    variation = await fake.press_button(message, f"imagine:var:{job.id}:0", user_id=OTHER_USER)
    varied = await posted(deployment, variation)
    assert sizes(varied) == [(80, 48)]
    child = job_of(deployment, varied)
    assert (child.kind, child.parent_id, child.parent_index, child.user_id) == ("variation", job.id, 0, str(OTHER_USER))
    assert child.options["strength"] == 0.6
    assert "variation of image 1" in (varied.content or "")

    # U2: twice the size of the second image.
    upscale = await fake.press_button(message, f"imagine:up:{job.id}:1")
    upscaled = await posted(deployment, upscale)
    assert sizes(upscaled) == [(160, 96)]
    assert job_of(deployment, upscaled).parent_index == 1

    # Re-roll: the same settings with a new seed.
    reroll = await fake.press_button(message, f"imagine:reroll:{job.id}")
    rerolled = await posted(deployment, reroll)
    again = job_of(deployment, rerolled)
    assert sizes(rerolled) == [(80, 48), (80, 48)]
    assert again.kind == "reroll"
    assert again.seed != job.seed
    assert again.prompt == job.prompt

    # Info: the full settings, for the presser only.
    info = await fake.press_button(message, f"imagine:info:{job.id}", user_id=OTHER_USER)
    await deployment.wait_for(lambda: job.id in reply(info))
    assert info.original is not None
    assert info.original.flags & EPHEMERAL
    assert "steps 2" in reply(info)
    assert "aspect 16:9" in reply(info)

    # Report: to the review channel with the images spoilered, and recorded.
    report = await fake.press_button(message, f"imagine:report:{job.id}", user_id=OTHER_USER)
    await deployment.wait_for(lambda: "report was sent" in reply(report))
    (review,) = fake.channel_messages(REVIEW_CHANNEL)
    assert job.id[:8] in (review.content or "")
    assert [a.filename.startswith("SPOILER_") for a in review.attachments] == [True, True]

    # Delete by someone else: refused politely and recorded; the message stays.
    refused = await fake.press_button(message, f"imagine:delete:{job.id}", user_id=OTHER_USER)
    await deployment.wait_for(lambda: "Only the person who made this" in reply(refused))
    assert not message.deleted
    # A moderator (by role) may delete it.
    removal = await fake.press_button(
        message, f"imagine:delete:{job.id}", user_id=OTHER_USER + 1, roles=(fake.moderator_role_id,)
    )
    await deployment.wait_for(lambda: message.deleted)
    assert removal.callbacks[0]["type"] == 6
    await deployment.wait_for(lambda: len(deployment.store().actions(job.id)) == 3)  # recorded once it is gone
    actions = [(a.action, a.actor_id, a.allowed) for a in deployment.store().actions(job.id)]
    assert actions == [
        ("report", str(OTHER_USER), True),
        ("message.deleted", str(OTHER_USER), False),
        ("message.deleted", str(OTHER_USER + 1), True),
    ]

    # A bad parameter: what was wrong and what is valid.
    bad = await fake.send_slash_command("imagine", {"prompt": "a cat --ar 5:4"})
    await deployment.wait_for(lambda: "not offered" in content_of(bad))
    assert "16:9" in content_of(bad)
    unknown = await fake.send_slash_command("imagine", {"prompt": "a cat --v 6"})
    await deployment.wait_for(lambda: "`--v` is not a parameter" in content_of(unknown))
    assert "--seed 42" in content_of(unknown)


async def test_queue_cancel_info_settings_help_and_places(deployment: Deployment) -> None:
    """No engine runs, so jobs wait in the queue while they are listed and cancelled."""
    fake = deployment.fake
    other_channel = fake.channel_id + 10
    extra = f'[policy.guilds."{fake.guild_id}"]\nchannels = ["{fake.channel_id}"]'
    await deployment.start("bot", **configure(deployment, extra))
    await deployment.wait_for(fake.identified.is_set)
    await fake.wait_commands()

    # One at a time, so "your latest job" below is the second lighthouse.
    mine = []
    for i in range(2):
        mine.append(await fake.send_slash_command("imagine", {"prompt": f"a lighthouse {i}"}))
        await deployment.wait_for(lambda: "Queued" in content_of(mine[-1]))
    theirs = await fake.send_slash_command("imagine", {"prompt": "a windmill"}, user_id=OTHER_USER)
    await deployment.wait_for(lambda: "Queued" in content_of(theirs))
    jobs = all_jobs(deployment.store())
    my_jobs = [j for j in jobs if j.user_id == str(DEFAULT_USER_ID)]
    their_job = next(j for j in jobs if j.user_id == str(OTHER_USER))

    listing = await fake.send_slash_command("queue")
    await deployment.wait_for(lambda: "Your jobs" in reply(listing))
    assert all(j.id[:8] in reply(listing) for j in my_jobs)
    assert their_job.id[:8] not in reply(listing)
    everything = await fake.send_slash_command("queue", moderator=True, user_id=OTHER_USER + 5)
    await deployment.wait_for(lambda: "Every job" in reply(everything))
    assert all(j.id[:8] in reply(everything) for j in jobs)

    # Cancelling someone else's job: refused and recorded. Your own: by short id, or the latest by default.
    refused = await fake.send_slash_command("cancel", {"job": their_job.id[:8]})
    await deployment.wait_for(lambda: "Only the person who made this" in reply(refused))
    choices = await fake.autocomplete("cancel", {"job": ""}, "job")
    assert {c["value"] for c in choices} == {j.id for j in my_jobs}
    latest = await fake.send_slash_command("cancel")
    await deployment.wait_for(lambda: "Cancelling" in reply(latest))
    await deployment.wait_for(lambda: "Cancelled" in content_of(mine[1]))
    by_moderator = await fake.send_slash_command("cancel", {"job": their_job.id}, moderator=True, user_id=9)
    await deployment.wait_for(lambda: "Cancelled" in content_of(theirs))
    assert "Cancelling" in reply(by_moderator)
    store = deployment.store()
    assert store.get(my_jobs[1].id).status is JobStatus.CANCELLED  # type: ignore[union-attr]
    assert store.get(my_jobs[0].id).status is JobStatus.QUEUED  # type: ignore[union-attr]
    assert [(a.actor_id, a.allowed) for a in store.actions(their_job.id)] == [
        (str(DEFAULT_USER_ID), False),
        ("9", True),
    ]
    missing = await fake.send_slash_command("cancel", {"job": "ffffffff"})
    await deployment.wait_for(lambda: "There is no job" in reply(missing))

    usage = await fake.send_slash_command("info")
    await deployment.wait_for(lambda: "Today" in reply(usage))
    assert "2 job(s), 2 image(s)" in reply(usage)
    assert "1 of 3 job(s)" in reply(usage)

    # Saved defaults apply to the next /imagine: a private (ephemeral) result in 3:4.
    saved = await fake.send_slash_command("settings", {"private": True, "aspect": "3:4", "model": "tiny-b"})
    await deployment.wait_for(lambda: "Saved" in reply(saved))
    assert "aspect 3:4" in reply(saved)
    hidden = await fake.send_slash_command("imagine", {"prompt": "a secret garden"})
    await deployment.wait_for(lambda: "Queued" in content_of(hidden))
    assert hidden.callbacks[0]["data"]["flags"] & EPHEMERAL
    record = store.find(next(j.id for j in all_jobs(store) if j.prompt == "a secret garden"))
    assert record is not None
    assert (record.options["aspect"], record.options["private"], record.model) == ("3:4", True, "tiny-b")
    # `--private` in the prompt as a phone writes it (a long dash, any case) is private from the first reply; the
    # explicit option wins over it.
    dashed = await fake.send_slash_command("imagine", {"prompt": "a moonlit pier —Private"}, user_id=OTHER_USER)
    await deployment.wait_for(lambda: "Queued" in content_of(dashed))
    assert dashed.callbacks[0]["data"]["flags"] & EPHEMERAL
    public = await fake.send_slash_command(
        "imagine", {"prompt": "a sunny pier --private", "private": False}, user_id=OTHER_USER + 1
    )
    await deployment.wait_for(lambda: "Queued" in content_of(public))
    assert not public.callbacks[0].get("data", {}).get("flags", 0) & EPHEMERAL
    record = store.find(next(j.id for j in all_jobs(store) if j.prompt.startswith("a sunny pier")))
    assert record is not None
    assert record.options["private"] is False
    bad_model = await fake.send_slash_command("settings", {"model": "nope"})
    await deployment.wait_for(lambda: "no model called" in reply(bad_model))
    reset = await fake.send_slash_command("settings", {"reset": True})
    await deployment.wait_for(lambda: "none" in reply(reset))

    help_reply = await fake.send_slash_command("help")
    await deployment.wait_for(lambda: "Appeals" in reply(help_reply))
    assert "--ar 16:9" in reply(help_reply)

    # Places: a channel outside the guild's list, and direct messages (off by default).
    elsewhere = await fake.send_slash_command("imagine", {"prompt": "a boat"}, channel_id=other_channel)
    await deployment.wait_for(lambda: "not made in this channel" in content_of(elsewhere))
    assert f"<#{fake.channel_id}>" in content_of(elsewhere)
    direct = await fake.send_slash_command("imagine", {"prompt": "a boat"}, direct=True, channel_id=777)
    await deployment.wait_for(lambda: "direct messages" in content_of(direct))


async def test_buttons_survive_a_restart_and_big_files_shrink(deployment: Deployment, tmp_path: Path) -> None:
    fake = deployment.fake
    settings = configure(deployment)
    run = await deployment.start("run", **settings)
    await deployment.wait_for(fake.identified.is_set)
    # An upload limit smaller than the PNG: the image goes as a smaller encoding instead of failing.
    small = await fake.send_slash_command(
        "imagine", {"prompt": "a blue sphere", "size": "256x256", "seed": 3}, attachment_size_limit=6_000
    )
    message = await posted(deployment, small)
    (attachment,) = message.attachments
    assert len(attachment.data) <= 6_000
    assert attachment.filename.endswith((".webp", ".jpg"))
    assert Image.open(io.BytesIO(attachment.data)).size[0] in (128, 256)
    job = job_of(deployment, message)

    await run.kill()
    fake.identified.clear()
    await deployment.start("run", **settings)
    await deployment.wait_for(fake.identified.is_set)
    variation = await fake.press_button(message, f"imagine:var:{job.id}:0")
    varied = await posted(deployment, variation)
    assert job_of(deployment, varied).parent_id == job.id
