"""The fake Discord speaks well enough for the real discord.py client, over real HTTP and a real websocket."""

from __future__ import annotations

import asyncio
import io
from collections.abc import AsyncIterator

import aiohttp
import discord
import pytest
import yarl
from discord import app_commands
from fake_discord import LOADING, FakeDiscord
from PIL import Image


def tiny_png() -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (4, 4), "red").save(buffer, format="PNG")
    return buffer.getvalue()


class Pressed(discord.ui.View):
    def __init__(self) -> None:
        super().__init__(timeout=None)

    @discord.ui.button(label="Go", custom_id="go")
    async def go(self, interaction: discord.Interaction, button: discord.ui.Button[Pressed]) -> None:
        await interaction.response.edit_message(content="pressed", view=None)


class PingBot(discord.Client):
    """A small bot whose commands put what they got (or the error they hit) on `results`."""

    def __init__(self) -> None:
        super().__init__(intents=discord.Intents.default(), guild_ready_timeout=0.1)
        self.tree = app_commands.CommandTree(self)
        self.results: asyncio.Queue[object] = asyncio.Queue()
        self.proceed = asyncio.Event()

        @self.tree.command(description="Defer, edit, then follow up with a picture")
        async def ping(interaction: discord.Interaction) -> None:
            await interaction.response.defer(thinking=True)
            await interaction.edit_original_response(content="working")
            sent = await interaction.followup.send(file=discord.File(io.BytesIO(tiny_png()), "ping.png"), wait=True)
            await self.results.put(await sent.attachments[0].read())

        @self.tree.command(description="Defer, then follow up once")
        async def replace(interaction: discord.Interaction, word: str, times: int = 1) -> None:
            await interaction.response.defer(thinking=True)
            await self.results.put(await interaction.followup.send(word * times, wait=True))

        @self.tree.command(description="Defer, then follow up when the test says so")
        async def later(interaction: discord.Interaction) -> None:
            await interaction.response.defer()
            await self.proceed.wait()
            try:
                await interaction.followup.send("too late")
            except discord.NotFound as error:
                await self.results.put(error)

        @self.tree.command(description="A message with a button")
        async def menu(interaction: discord.Interaction) -> None:
            await interaction.response.send_message("choose", view=Pressed())

    async def setup_hook(self) -> None:
        await self.tree.sync()

    async def result(self) -> object:
        return await asyncio.wait_for(self.results.get(), 5)


@pytest.fixture
async def fake() -> AsyncIterator[FakeDiscord]:
    async with FakeDiscord() as fake:
        yield fake
    assert fake.errors == []


@pytest.fixture
async def bot(fake: FakeDiscord, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[PingBot]:
    monkeypatch.setattr(discord.http.Route, "BASE", fake.api_url)
    monkeypatch.setattr(discord.gateway.DiscordWebSocket, "DEFAULT_GATEWAY", yarl.URL(fake.gateway_url))
    bot = PingBot()
    running = asyncio.create_task(bot.start(fake.token))
    await fake.wait_for(lambda: fake.identified.is_set() or running.done(), timeout=5)
    if running.done():
        running.result()  # raises what stopped the client
    await bot.wait_until_ready()
    yield bot
    await bot.close()
    await running


async def test_ping_defers_edits_and_follows_up_with_a_png(fake: FakeDiscord, bot: PingBot) -> None:
    assert {"ping", "replace", "later", "menu"} <= {command["name"] for command in await fake.wait_commands()}

    interaction = await fake.send_slash_command("ping")
    downloaded = await bot.result()

    assert interaction.deferred
    assert [c["type"] for c in interaction.callbacks] == [5]
    original = interaction.original
    assert original is not None
    assert original.content == "working"
    assert not original.flags & LOADING
    assert [edit["content"] for edit in original.edits] == ["working"]
    [followup] = interaction.followups
    assert followup.id != original.id
    [attachment] = followup.attachments
    assert (attachment.filename, attachment.content_type) == ("ping.png", "image/png")
    assert Image.open(io.BytesIO(attachment.data)).size == (4, 4)
    assert downloaded == attachment.data  # discord.py fetched it back from the attachment's url
    post = next(r for r in fake.requests if r.method == "POST" and r.path.startswith("/webhooks/"))
    assert post.query["wait"] == "1"
    assert post.files[0].data == attachment.data
    assert post.status == 200
    assert [m.id for m in fake.channel_messages()] == [original.id, followup.id]


async def test_first_followup_after_a_defer_replaces_the_loading_message(fake: FakeDiscord, bot: PingBot) -> None:
    interaction = await fake.send_slash_command("replace", {"word": "ab", "times": 2})
    sent = await bot.result()

    assert interaction.payload["data"]["options"] == [
        {"name": "word", "type": 3, "value": "ab"},
        {"name": "times", "type": 4, "value": 2},
    ]
    assert isinstance(sent, discord.WebhookMessage)
    assert sent.content == "abab"
    assert interaction.original is not None
    assert sent.id == interaction.original.id
    assert interaction.followups == [interaction.original] == fake.channel_messages()
    assert interaction.original.edits == []
    assert not interaction.original.flags & LOADING


async def test_followup_after_the_token_expired_is_not_found(fake: FakeDiscord, bot: PingBot) -> None:
    interaction = await fake.send_slash_command("later")
    await fake.wait_for(lambda: interaction.deferred, timeout=5)
    fake.expire_token(interaction)
    bot.proceed.set()

    error = await bot.result()

    assert isinstance(error, discord.NotFound)
    assert error.code == 10015
    assert interaction.followups == []


async def test_button_press_updates_the_message(fake: FakeDiscord, bot: PingBot) -> None:
    interaction = await fake.send_slash_command("menu")
    await fake.wait_for(lambda: interaction.original is not None, timeout=5)
    assert interaction.original is not None
    assert interaction.original.components

    press = await fake.press_button(interaction.original, "go")
    await fake.wait_for(lambda: bool(press.callbacks), timeout=5)

    assert press.callbacks[0]["type"] == 7
    assert press.original is interaction.original
    assert (interaction.original.content, interaction.original.components) == ("pressed", [])


async def test_bot_posts_to_a_channel_and_reads_its_history(fake: FakeDiscord, bot: PingBot) -> None:
    channel = await bot.fetch_channel(fake.channel_id)
    assert isinstance(channel, discord.TextChannel)
    first = await channel.send("hello")
    await channel.send(file=discord.File(io.BytesIO(tiny_png()), "cat.png"))

    history = [message async for message in channel.history(limit=10)]

    assert [m.id for m in reversed(history)] == [m.id for m in fake.channel_messages()]
    assert history[-1].id == first.id
    assert history[-1].content == "hello"
    assert history[0].attachments[0].filename == "cat.png"


async def test_bot_routes_want_the_bot_token(fake: FakeDiscord) -> None:
    async with aiohttp.ClientSession() as session:
        async with session.get(f"{fake.api_url}/users/@me") as response:
            assert response.status == 401
        headers = {"Authorization": f"Bot {fake.token}"}
        async with session.get(f"{fake.api_url}/users/@me", headers=headers) as response:
            assert response.status == 200
            assert response.headers["Content-Type"] == "application/json"
        async with session.get(f"{fake.api_url}/no/such/route", headers=headers) as response:
            assert response.status == 404
            assert (await response.json())["code"] == 0
    assert [(r.path, r.status) for r in fake.requests] == [
        ("/users/@me", 401),
        ("/users/@me", 200),
        ("/no/such/route", 404),
    ]


async def test_client_resumes_after_a_disconnect(fake: FakeDiscord, bot: PingBot) -> None:
    await fake.disconnect_clients()
    await fake.wait_ready(timeout=5)

    assert (fake.identifies, fake.resumes) == (1, 1)
    interaction = await fake.send_slash_command("replace", {"word": "again"})
    assert isinstance(await bot.result(), discord.WebhookMessage)
    assert interaction.followups


async def test_gateway_protocol_at_the_frame_level(fake: FakeDiscord) -> None:
    async with aiohttp.ClientSession() as session:
        async with session.ws_connect(f"{fake.gateway_url}?v=10&encoding=json") as ws:
            assert (await ws.receive_json())["op"] == 10  # HELLO
            await ws.send_json({"op": 1, "d": None})
            assert (await ws.receive_json())["op"] == 11  # heartbeat ACK
            await ws.send_json({"op": 6, "d": {"token": fake.token, "session_id": "unknown", "seq": 3}})
            assert (await ws.receive_json()) == {"op": 9, "d": False, "s": None, "t": None}  # invalid session
            await ws.send_json({"op": 2, "d": {"token": "wrong"}})
            assert (await ws.receive()).type is aiohttp.WSMsgType.CLOSE
            assert ws.close_code == 4004
        async with session.ws_connect(fake.gateway_url) as ws:
            await ws.receive_json()
            await ws.send_json({"op": 2, "d": {"token": fake.token}})
            ready, guild = await ws.receive_json(), await ws.receive_json()
            assert fake.identified.is_set()
    assert (ready["t"], ready["s"], ready["d"]["resume_gateway_url"]) == ("READY", 1, fake.gateway_url)
    assert (guild["t"], guild["s"], guild["d"]["id"]) == ("GUILD_CREATE", 2, str(fake.guild_id))
    await fake.wait_for(lambda: not fake.identified.is_set(), timeout=5)  # cleared once no client is left
