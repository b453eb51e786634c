"""A socket-level fake Discord (REST and gateway on 127.0.0.1) that the real discord.py client talks to.

Point a client at it: ``discord.http.Route.BASE = fake.api_url`` and
``discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY = yarl.URL(fake.gateway_url)`` (the bot process reads
both from IMAGINE_DISCORD_API_URL and IMAGINE_DISCORD_GATEWAY_URL). Create the client with
``guild_ready_timeout=0.1``: the fake sends its one GUILD_CREATE right after READY, and otherwise on_ready
waits 2 s for more guilds.

Real Discord behaviour is kept on purpose, because the bot must cope with it:
- an interaction takes one callback (a second answers 400, code 40060), within ``ack_timeout`` seconds
  (3, like Discord; None turns the check off); its webhook routes answer only after that callback;
- the first follow-up after a "thinking" defer replaces the loading message, which stays @original;
- after ``expire_token`` the token's webhook routes answer 404 code 10015 (Discord: after 15 minutes);
- an unknown route answers 404 code 0 and, like every REST call, is kept in ``requests``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import mimetypes
import secrets
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from types import TracebackType
from typing import Any, Self

from aiohttp import BodyPartReader, WSMsgType, web

JSON = dict[str, Any]
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

API_PREFIX = "/api/v10"
DISCORD_EPOCH_MS = 1_420_070_400_000
EPHEMERAL, LOADING = 1 << 6, 1 << 7  # message flags
# View channel, send messages, embed links, attach files, read history, use application commands.
MEMBER_PERMISSIONS = str(sum(1 << bit for bit in (10, 11, 14, 15, 16, 31)))
MANAGE_MESSAGES = 1 << 13
MODERATOR_PERMISSIONS = str(int(MEMBER_PERMISSIONS) | MANAGE_MESSAGES)
DEFAULT_USER_ID = 200_000_000_000_000_001


@dataclass(frozen=True)
class UserOption:
    """A USER option's value in a slash command: the member with this id."""

    id: int


@dataclass
class FakeAttachment:
    filename: str
    content_type: str | None
    data: bytes
    id: int = 0  # given when the attachment joins a message


@dataclass
class FakeMessage:
    id: int
    channel_id: int
    content: str | None
    embeds: list[JSON] = field(default_factory=list)
    components: list[JSON] = field(default_factory=list)
    flags: int = 0
    attachments: list[FakeAttachment] = field(default_factory=list)
    webhook_token: str | None = None  # token of the interaction that made it, if any
    edits: list[JSON] = field(default_factory=list)  # each PATCH (or type-7 update) payload, in order
    deleted: bool = False


@dataclass
class FakeInteraction:
    id: int
    token: str
    payload: JSON  # the INTERACTION_CREATE payload sent
    callbacks: list[JSON] = field(default_factory=list)
    acked: float | None = None  # time.monotonic() of the first callback
    original: FakeMessage | None = None  # @original: made by a type 4/5 callback, or `message` after 6/7
    followups: list[FakeMessage] = field(default_factory=list)  # incl. a first one that replaced the defer
    message: FakeMessage | None = None  # the message whose button was pressed
    created: float = field(default_factory=time.monotonic)
    expired: bool = False

    @property
    def deferred(self) -> bool:
        return any(callback.get("type") == 5 for callback in self.callbacks)


@dataclass
class RecordedRequest:
    method: str
    path: str  # relative to api_url, e.g. "/users/@me"
    query: dict[str, str]
    json: Any  # the JSON body, or the payload_json of a multipart body; None when empty
    files: list[FakeAttachment]
    timestamp: float  # time.monotonic()
    status: int = 0


RECORD = web.RequestKey("record", RecordedRequest)


class _Error(Exception):
    def __init__(self, status: int, code: int, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


class _Connection:
    def __init__(self, ws: web.WebSocketResponse) -> None:
        self.ws, self.seq, self.ready, self._lock = ws, 0, False, asyncio.Lock()

    async def send(self, op: int, data: Any, event: str | None = None) -> None:
        async with self._lock:  # sequence numbers go out in order
            seq = None
            if op == 0:
                self.seq += 1
                seq = self.seq
            await self.ws.send_str(json.dumps({"op": op, "d": data, "s": seq, "t": event}))


def _json(data: Any, status: int = 200) -> web.Response:
    # Not web.json_response: its "; charset=utf-8" makes discord.py treat the body as text.
    return web.Response(status=status, body=json.dumps(data).encode(), content_type="application/json")


def _truthy(value: str | None) -> bool:
    return value is not None and value.lower() in ("1", "true")


def _iso(snowflake: int) -> str:
    return datetime.fromtimestamp(((snowflake >> 22) + DISCORD_EPOCH_MS) / 1000, UTC).isoformat()


def _user_json(user_id: int, name: str, *, bot: bool = False) -> JSON:
    return {"id": str(user_id), "username": name, "discriminator": "0", "avatar": None, "bot": bot}


def _channel_json(channel_id: int, guild_id: int, *, nsfw: bool = False) -> JSON:
    return {
        "id": str(channel_id),
        "type": 0,
        "guild_id": str(guild_id),
        "name": "general",
        "position": 0,
        "nsfw": nsfw,
    }


def _option_type(value: object) -> int:
    for kind, code in ((UserOption, 6), (bool, 5), (int, 4), (float, 10), (str, 3)):
        if isinstance(value, kind):
            return code
    raise TypeError(f"option values must be bool, int, float or str, not {type(value).__name__}")


async def _read_body(request: web.Request) -> tuple[Any, list[FakeAttachment]]:
    if not request.content_type.startswith("multipart/"):
        raw = await request.read()
        return (json.loads(raw) if raw else None), []
    payload: Any = None
    files: list[FakeAttachment] = []
    reader = await request.multipart()
    while (part := await reader.next()) is not None:
        assert isinstance(part, BodyPartReader), "nested multipart is not supported"
        if part.name == "payload_json":
            payload = json.loads(await part.text())
        else:  # discord.py sends files as application/octet-stream; Discord sniffs the real type
            name = part.filename or "unknown"
            content_type = mimetypes.guess_type(name)[0] or part.headers.get("Content-Type")
            files.append(FakeAttachment(name, content_type, bytes(await part.read())))
    return payload, files


class FakeDiscord:
    def __init__(
        self,
        *,
        token: str = "fake-bot-token",
        application_id: int = 100_000_000_000_000_001,
        bot_user_id: int = 100_000_000_000_000_002,
        guild_id: int = 100_000_000_000_000_003,
        channel_id: int = 100_000_000_000_000_004,
        ack_timeout: float | None = 3.0,
        moderator_role_id: int = 100_000_000_000_000_005,
    ) -> None:
        self.token, self.application_id, self.bot_user_id = token, application_id, bot_user_id
        self.guild_id, self.channel_id, self.ack_timeout = guild_id, channel_id, ack_timeout
        self.moderator_role_id = moderator_role_id
        self.nsfw_channels: set[int] = set()  # channels marked age-restricted
        self.api_url = self.gateway_url = ""
        self.commands: list[JSON] = []
        self.requests: list[RecordedRequest] = []
        self.errors: list[Exception] = []  # exceptions raised while handling requests (answered 400)
        self.identified = asyncio.Event()  # set while a connected client has been sent READY (or RESUMED)
        self.identifies = self.resumes = 0
        self._commands_put = False
        self._command_index: dict[str, JSON] = {}
        self._channels = {channel_id}
        self._messages: dict[int, FakeMessage] = {}
        self._interactions: dict[str, FakeInteraction] = {}
        self._sessions: set[str] = set()
        self._connections: set[_Connection] = set()
        self._changed = asyncio.Event()
        self._last_id = 0
        self._base = ""
        self._runner: web.AppRunner | None = None

    # -- lifecycle ------------------------------------------------------------------------------------------

    async def start(self) -> None:
        @web.middleware
        async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
            return await self._handle(request, handler)

        app = web.Application(client_max_size=64 * 1024 * 1024, middlewares=[middleware])
        for method, path, route_handler in self._routes():
            app.router.add_route(method, API_PREFIX + path, route_handler)
        app.router.add_get("/", self._gateway)
        app.router.add_get("/attachments/{channel_id}/{attachment_id}/{filename}", self._get_attachment)
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", 0).start()
        port = self._runner.addresses[0][1]
        self._base = f"http://127.0.0.1:{port}"
        self.api_url, self.gateway_url = self._base + API_PREFIX, f"ws://127.0.0.1:{port}/"

    async def stop(self) -> None:
        await self._close_connections(1001, "fake Discord stopped")
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.stop()

    # -- driving the client from a test ---------------------------------------------------------------------
    # (ASYNC109 would rather have callers wrap these in asyncio.timeout(); a plain timeout reads better in tests.)

    async def wait_ready(self, timeout: float = 30) -> None:  # noqa: ASYNC109
        await self.wait_for(self.identified.is_set, timeout)

    async def wait_commands(self, timeout: float = 30) -> list[JSON]:  # noqa: ASYNC109
        await self.wait_for(lambda: self._commands_put, timeout)
        return self.commands

    async def send_slash_command(
        self,
        name: str,
        options: dict[str, object] | None = None,
        *,
        user_id: int = DEFAULT_USER_ID,
        channel_id: int | None = None,
        guild_id: int | None = None,
        attachment_size_limit: int = 10 * 1024 * 1024,
        moderator: bool = False,
        roles: tuple[int, ...] = (),
        direct: bool = False,
        subcommand: str | None = None,
    ) -> FakeInteraction:
        """A slash command from `user_id`; `moderator` gives them Manage Messages, `roles` their role ids,
        `direct` sends it from a direct message instead of the guild channel, `subcommand` names the command
        of a group (`/mod ban`: name "mod", subcommand "ban")."""
        data = self._command_data(name, options, subcommand)
        return await self._interact(
            2, data, user_id, channel_id, guild_id, attachment_size_limit,
            permissions=MODERATOR_PERMISSIONS if moderator else MEMBER_PERMISSIONS, roles=roles, direct=direct,
        )  # fmt: skip

    async def autocomplete(
        self, name: str, options: dict[str, object], focused: str, *, user_id: int = DEFAULT_USER_ID
    ) -> list[JSON]:
        """The choices the client offers while `focused` is typed (the value given in `options`)."""
        data = self._command_data(name, options)
        for option in data["options"]:
            option["focused"] = option["name"] == focused
        interaction = await self._interact(4, data, user_id, None, None, 10 * 1024 * 1024)
        await self.wait_for(lambda: bool(interaction.callbacks))
        return list((interaction.callbacks[0].get("data") or {}).get("choices") or [])

    def _command_data(self, name: str, options: dict[str, object] | None, subcommand: str | None = None) -> JSON:
        command = self._command_index.get(name, {})
        given = [
            {"name": k, "type": _option_type(v), "value": str(v.id) if isinstance(v, UserOption) else v}
            for k, v in (options or {}).items()
        ]
        data: JSON = {
            "id": command.get("id", str(self._new_id())),
            "name": name,
            "type": 1,
            "options": [{"name": subcommand, "type": 1, "options": given}] if subcommand else given,
        }
        users = [v for v in (options or {}).values() if isinstance(v, UserOption)]
        if users:
            data["resolved"] = {
                "users": {str(u.id): _user_json(u.id, f"user{u.id % 10_000}") for u in users},
                "members": {str(u.id): {"roles": [], "joined_at": _iso(self.guild_id), "flags": 0} for u in users},
            }
        if "guild_id" in command:
            data["guild_id"] = command["guild_id"]
        return data

    async def press_button(
        self,
        message: FakeMessage,
        custom_id: str,
        *,
        user_id: int = DEFAULT_USER_ID,
        moderator: bool = False,
        roles: tuple[int, ...] = (),
    ) -> FakeInteraction:
        data = {"custom_id": custom_id, "component_type": 2}
        return await self._interact(
            3, data, user_id, message.channel_id, None, 10 * 1024 * 1024, message,
            permissions=MODERATOR_PERMISSIONS if moderator else MEMBER_PERMISSIONS, roles=roles,
        )  # fmt: skip

    def buttons(self, message: FakeMessage) -> list[str]:
        """The custom ids of the buttons under `message`, in order."""
        return [
            component["custom_id"]
            for row in message.components
            for component in row.get("components", [])
            if component.get("type") == 2 and "custom_id" in component
        ]

    def add_channel(self, channel_id: int, *, nsfw: bool = False) -> None:
        """A channel of the guild besides the default one (the bot learns of it at its next connect)."""
        self._channels.add(channel_id)
        if nsfw:
            self.nsfw_channels.add(channel_id)

    def channel_messages(self, channel_id: int | None = None) -> list[FakeMessage]:
        wanted = channel_id or self.channel_id
        return [m for _, m in sorted(self._messages.items()) if m.channel_id == wanted and not m.deleted]

    async def wait_for(self, predicate: Callable[[], bool], timeout: float = 30) -> None:  # noqa: ASYNC109
        deadline = time.monotonic() + timeout
        while not predicate():
            if time.monotonic() >= deadline:
                code = getattr(predicate, "__code__", None)
                where = f" ({code.co_filename}:{code.co_firstlineno})" if code else ""
                recent = "\n  ".join(f"{r.method} {r.path} -> {r.status}" for r in self.requests[-8:])
                raise TimeoutError(
                    f"{getattr(predicate, '__qualname__', predicate)}{where} still false after {timeout} s; "
                    f"client identified: {self.identified.is_set()}; errors in the fake: {self.errors}; "
                    f"last requests:\n  {recent or '(none)'}"
                )
            self._changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), 0.05)

    def expire_token(self, interaction: FakeInteraction) -> None:
        interaction.expired = True

    async def disconnect_clients(self) -> None:
        self.identified.clear()
        await self._close_connections(4000, "fake disconnect")  # 4000 = "unknown error": the client resumes

    # -- gateway --------------------------------------------------------------------------------------------

    async def _gateway(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        conn = _Connection(ws)
        self._connections.add(conn)
        try:
            await conn.send(10, {"heartbeat_interval": 41250})
            async for msg in ws:
                if msg.type is WSMsgType.TEXT:
                    await self._on_gateway_message(conn, json.loads(msg.data))
        finally:
            self._connections.discard(conn)
            if not any(other.ready for other in self._connections):
                self.identified.clear()
        return ws

    async def _on_gateway_message(self, conn: _Connection, msg: JSON) -> None:
        op, data = msg.get("op"), msg.get("d") or {}
        if op == 1:  # heartbeat
            await conn.send(11, None)
        elif op == 2 and data.get("token") != self.token:
            await conn.ws.close(code=4004, message=b"Authentication failed.")
        elif op == 2:  # identify
            session_id = secrets.token_hex(16)
            self._sessions.add(session_id)
            await conn.send(0, self._ready_json(session_id), "READY")
            await conn.send(0, self._guild_json(), "GUILD_CREATE")
            self.identifies += 1
            self._mark_ready(conn)
        elif op == 6 and (data.get("token") != self.token or data.get("session_id") not in self._sessions):
            await conn.send(9, False)  # invalid session, not resumable: the client identifies afresh
        elif op == 6:  # resume; nothing is replayed
            conn.seq = int(data.get("seq") or 0)
            await conn.send(0, {}, "RESUMED")
            self.resumes += 1
            self._mark_ready(conn)

    def _mark_ready(self, conn: _Connection) -> None:
        conn.ready = True
        self.identified.set()
        self._changed.set()

    async def _close_connections(self, code: int, reason: str) -> None:
        for conn in list(self._connections):
            conn.ready = False
            await conn.ws.close(code=code, message=reason.encode())

    async def _interact(
        self,
        kind: int,
        data: JSON,
        user_id: int,
        channel_id: int | None,
        guild_id: int | None,
        size_limit: int,
        message: FakeMessage | None = None,
        *,
        permissions: str = MEMBER_PERMISSIONS,
        roles: tuple[int, ...] = (),
        direct: bool = False,
    ) -> FakeInteraction:
        await self.wait_ready()
        targets = [conn for conn in self._connections if conn.ready]
        channel_id, guild_id = channel_id or self.channel_id, guild_id or self.guild_id
        self._channels.add(channel_id)
        interaction_id = self._new_id()
        user = _user_json(user_id, f"user{user_id % 10_000}")
        payload: JSON = {
            "id": str(interaction_id),
            "application_id": str(self.application_id),
            "type": kind,
            "data": data,
            "token": secrets.token_hex(16),
            "version": 1,
            "guild_id": str(guild_id),
            "channel_id": str(channel_id),
            "channel": _channel_json(channel_id, guild_id, nsfw=channel_id in self.nsfw_channels),
            "member": {
                **self._member_json(user),
                "roles": [str(role) for role in roles],
                "permissions": permissions,
            },
            "app_permissions": MEMBER_PERMISSIONS,
            "locale": "en-US",
            "guild_locale": "en-US",
            "entitlements": [],
            "authorizing_integration_owners": {"0": str(guild_id)},
            "context": 0,
            "attachment_size_limit": size_limit,
        }
        if direct:  # a direct message: no guild, no member, a DM channel
            for key in ("guild_id", "member", "guild_locale"):
                del payload[key]
            payload.update(
                user=user,
                channel={"id": str(channel_id), "type": 1, "recipients": [user]},
                authorizing_integration_owners={"1": str(user_id)},
                context=1,
            )
        if message is not None:
            payload["message"] = self._message_json(message)
        interaction = FakeInteraction(interaction_id, payload["token"], payload, message=message)
        self._interactions[interaction.token] = interaction
        for conn in targets:
            await conn.send(0, payload, "INTERACTION_CREATE")
        return interaction

    # -- REST -----------------------------------------------------------------------------------------------

    def _routes(self) -> list[tuple[str, str, Handler]]:
        webhook_message = "/webhooks/{app_id}/{token}/messages/{message_id}"
        channel_message = "/channels/{channel_id}/messages/{message_id}"
        return [
            ("GET", "/users/@me", lambda _: self._ok(_user_json(self.bot_user_id, "imagine", bot=True))),
            ("GET", "/oauth2/applications/@me", self._get_application),
            ("GET", "/gateway", lambda _: self._ok({"url": self.gateway_url})),
            ("GET", "/gateway/bot", lambda _: self._ok({"url": self.gateway_url, "shards": 1})),
            ("PUT", "/applications/{app_id}/commands", self._put_commands),
            ("PUT", "/applications/{app_id}/guilds/{guild_id}/commands", self._put_commands),
            ("POST", "/interactions/{interaction_id}/{token}/callback", self._callback),
            ("POST", "/webhooks/{app_id}/{token}", self._followup),
            *((method, webhook_message, self._webhook_message_route) for method in ("GET", "PATCH", "DELETE")),
            ("GET", "/channels/{channel_id}", self._get_channel),
            ("GET", "/channels/{channel_id}/messages", self._list_messages),
            ("POST", "/channels/{channel_id}/messages", self._create_channel_message),
            *((method, channel_message, self._channel_message_route) for method in ("GET", "PATCH", "DELETE")),
        ]

    async def _handle(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.path == "/":  # the gateway
            return await handler(request)
        path = request.path.removeprefix(API_PREFIX)
        record = RecordedRequest(request.method, path, dict(request.query), None, [], time.monotonic())
        self.requests.append(record)
        try:
            record.json, record.files = await _read_body(request)
            request[RECORD] = record
            token_route = path.startswith(("/webhooks/", "/interactions/"))  # their token is their auth
            if (
                request.path.startswith(API_PREFIX)
                and not token_route
                and request.headers.get("Authorization") != f"Bot {self.token}"
            ):
                raise _Error(401, 0, "401: Unauthorized")
            response = await handler(request)
        except _Error as error:
            response = _json({"code": error.code, "message": error.message}, error.status)
        except web.HTTPException as error:  # no such route, or method
            message = f"{error.status}: {error.reason} ({request.method} {path})"
            response = _json({"code": 0, "message": message}, error.status)
        except Exception as error:  # a bug here, or a request it can't read: 400 fails fast (500 is retried)
            self.errors.append(error)
            response = _json({"code": 0, "message": f"fake Discord failed: {error!r}"}, 400)
        record.status = response.status
        self._changed.set()
        return response

    async def _ok(self, data: Any) -> web.Response:
        return _json(data)

    async def _get_application(self, request: web.Request) -> web.Response:
        app = {"id": str(self.application_id), "name": "imagine", "description": "", "icon": None, "flags": 0}
        owner = _user_json(DEFAULT_USER_ID, "owner")
        return _json({**app, "bot_public": True, "bot_require_code_grant": False, "owner": owner, "verify_key": ""})

    async def _put_commands(self, request: web.Request) -> web.Response:
        if request.match_info["app_id"] != str(self.application_id):
            raise _Error(403, 50001, "Missing Access")
        guild = request.match_info.get("guild_id")
        echoed = [self._echo_command(command, guild) for command in request[RECORD].json or []]
        self.commands, self._commands_put = echoed, True
        self._command_index.update((command["name"], command) for command in echoed)
        return _json(echoed)

    def _echo_command(self, command: JSON, guild_id: str | None) -> JSON:
        known = self._command_index.get(command["name"], {})  # ids stay stable across syncs, as on Discord
        echoed = {"type": 1, "description": "", **command, "application_id": str(self.application_id)}
        echoed.update(id=known.get("id", str(self._new_id())), version=str(self._new_id()))
        if guild_id is not None:
            echoed["guild_id"] = guild_id
        return echoed

    async def _callback(self, request: web.Request) -> web.StreamResponse:
        interaction = self._interactions.get(request.match_info["token"])
        if interaction is None or interaction.expired or request.match_info["interaction_id"] != str(interaction.id):
            raise _Error(404, 10062, "Unknown interaction")
        if interaction.callbacks:
            raise _Error(400, 40060, "Interaction has already been acknowledged.")
        if self.ack_timeout is not None and time.monotonic() - interaction.created > self.ack_timeout:
            raise _Error(404, 10062, "Unknown interaction")  # what Discord says after its 3 s
        record = request[RECORD]
        body: JSON = record.json or {}
        kind, data = body.get("type"), body.get("data") or {}
        if kind not in (4, 5, 6, 7, 8, 9) or (kind in (6, 7) and interaction.message is None):
            raise _Error(400, 50035, f"Invalid Form Body (callback type {kind})")
        interaction.callbacks.append(body)
        interaction.acked = interaction.acked or time.monotonic()
        if kind in (4, 5):
            interaction.original = self._new_message(
                int(interaction.payload["channel_id"]), data, record.files, interaction.token
            )
            interaction.original.flags |= LOADING if kind == 5 else 0
            interaction.original.flags |= (data.get("flags") or 0) & EPHEMERAL
        elif kind in (6, 7):
            interaction.original = interaction.message
            if kind == 7 and interaction.message is not None:
                self._edit(interaction.message, data, record.files)
        if not _truthy(request.query.get("with_response")):
            return web.Response(status=204)
        original = interaction.original
        callback = {
            "id": str(interaction.id),
            "type": interaction.payload["type"],
            "response_message_id": str(original.id) if original else None,
            "response_message_loading": kind == 5,
            "response_message_ephemeral": bool(original and original.flags & EPHEMERAL),
        }
        response: JSON = {"interaction": callback}
        if kind in (4, 5, 7) and original is not None:
            response["resource"] = {"type": kind, "message": self._message_json(original)}
        return _json(response)

    async def _followup(self, request: web.Request) -> web.StreamResponse:
        interaction = self._webhook_interaction(request)
        record = request[RECORD]
        data: JSON = record.json or {}
        original = interaction.original
        if interaction.deferred and original is not None and original.flags & LOADING:
            self._apply(original, data, record.files)  # Discord: it replaces the "thinking" message
            message = original
        else:
            channel_id = int(interaction.payload["channel_id"])
            message = self._new_message(channel_id, data, record.files, interaction.token)
        interaction.followups.append(message)
        if not _truthy(request.query.get("wait")):
            return web.Response(status=204)
        return _json(self._message_json(message))

    async def _webhook_message_route(self, request: web.Request) -> web.Response:
        return self._message_route(request, self._webhook_message(request))

    async def _channel_message_route(self, request: web.Request) -> web.Response:
        return self._message_route(request, self._channel_message(request))

    def _message_route(self, request: web.Request, message: FakeMessage) -> web.Response:
        if request.method == "DELETE":
            message.deleted = True
            return web.Response(status=204)
        if request.method == "PATCH":
            self._edit(message, request[RECORD].json or {}, request[RECORD].files)
        return _json(self._message_json(message))

    async def _get_channel(self, request: web.Request) -> web.Response:
        return _json(_channel_json(self._channel_id(request), self.guild_id))

    async def _list_messages(self, request: web.Request) -> web.Response:
        channel_id, query = self._channel_id(request), request.query
        before, after = int(query.get("before", 1 << 63)), int(query.get("after", 0))
        found = [m for m in self.channel_messages(channel_id) if after < m.id < before]
        newest_first = [m for m in reversed(found) if not m.flags & EPHEMERAL][: int(query.get("limit", 50))]
        return _json([self._message_json(m) for m in newest_first])

    async def _create_channel_message(self, request: web.Request) -> web.Response:
        record = request[RECORD]
        message = self._new_message(self._channel_id(request), record.json or {}, record.files, None)
        return _json(self._message_json(message))

    async def _get_attachment(self, request: web.Request) -> web.Response:
        for message in self._messages.values():
            for attachment in message.attachments:
                if str(attachment.id) == request.match_info["attachment_id"]:
                    return web.Response(body=attachment.data, content_type=attachment.content_type)
        raise _Error(404, 0, "404: Not Found")

    # -- state ----------------------------------------------------------------------------------------------

    def _new_id(self) -> int:
        """A snowflake: milliseconds since the Discord epoch, shifted; strictly increasing."""
        self._last_id = max(self._last_id + 1, (int(time.time() * 1000) - DISCORD_EPOCH_MS) << 22)
        return self._last_id

    def _webhook_interaction(self, request: web.Request) -> FakeInteraction:
        interaction = self._interactions.get(request.match_info["token"])
        if interaction is None or interaction.expired or not interaction.callbacks:
            raise _Error(404, 10015, "Unknown Webhook")
        if request.match_info["app_id"] != str(self.application_id):
            raise _Error(404, 10015, "Unknown Webhook")
        return interaction

    def _webhook_message(self, request: web.Request) -> FakeMessage:
        interaction, wanted = self._webhook_interaction(request), request.match_info["message_id"]
        if wanted == "@original":
            message = interaction.original
        else:
            message = self._messages.get(int(wanted)) if wanted.isdigit() else None
            if message is not None and message.webhook_token is None:
                message = None  # not the application's message
        if message is None or message.deleted:
            raise _Error(404, 10008, "Unknown Message")
        return message

    def _channel_id(self, request: web.Request) -> int:
        raw = request.match_info["channel_id"]
        if not raw.isdigit() or int(raw) not in self._channels:
            raise _Error(404, 10003, "Unknown Channel")
        return int(raw)

    def _channel_message(self, request: web.Request) -> FakeMessage:
        channel_id, raw = self._channel_id(request), request.match_info["message_id"]
        message = self._messages.get(int(raw)) if raw.isdigit() else None
        if message is None or message.channel_id != channel_id or message.deleted or message.flags & EPHEMERAL:
            raise _Error(404, 10008, "Unknown Message")
        return message

    def _new_message(self, channel: int, data: JSON, files: list[FakeAttachment], token: str | None) -> FakeMessage:
        message = FakeMessage(self._new_id(), channel, None, webhook_token=token)
        self._apply(message, data, files)
        self._messages[message.id] = message
        return message

    def _edit(self, message: FakeMessage, data: JSON, files: list[FakeAttachment]) -> None:
        message.edits.append(data)
        self._apply(message, data, files)

    def _apply(self, message: FakeMessage, data: JSON, files: list[FakeAttachment]) -> None:
        if "content" in data:
            message.content = data["content"]
        if "embeds" in data:
            message.embeds = data["embeds"] or []
        if "components" in data:
            message.components = data["components"] or []
        flags = (data["flags"] or 0) if "flags" in data else message.flags
        message.flags = (message.flags & EPHEMERAL | flags) & ~LOADING  # ephemerality can't change
        for attachment in files:
            attachment.id = self._new_id()
        if "attachments" in data:  # existing ones to keep by id, new ones by index into files[n]
            keep = {int(entry["id"]) for entry in data["attachments"] or []}
            kept = [a for a in message.attachments if a.id in keep]
            message.attachments = kept + [a for index, a in enumerate(files) if index in keep]
        else:
            message.attachments = [*message.attachments, *files]

    # -- payloads -------------------------------------------------------------------------------------------

    def _member_json(self, user: JSON) -> JSON:
        return {"user": user, "roles": [], "joined_at": _iso(self.guild_id), "flags": 0}

    def _ready_json(self, session_id: str) -> JSON:
        return {
            "v": 10,
            "user": _user_json(self.bot_user_id, "imagine", bot=True),
            "guilds": [{"id": str(self.guild_id), "unavailable": True}],
            "session_id": session_id,
            "resume_gateway_url": self.gateway_url,
            "application": {"id": str(self.application_id), "flags": 0},
        }

    def _guild_json(self) -> JSON:
        everyone = {"id": str(self.guild_id), "name": "@everyone", "permissions": MEMBER_PERMISSIONS}
        moderators = {"id": str(self.moderator_role_id), "name": "moderators", "permissions": MEMBER_PERMISSIONS}
        return {
            "id": str(self.guild_id),
            "name": "Fake Guild",
            "owner_id": str(DEFAULT_USER_ID),
            "member_count": 2,
            "roles": [everyone, moderators],
            "members": [self._member_json(_user_json(self.bot_user_id, "imagine", bot=True))],
            "channels": [
                _channel_json(channel, self.guild_id, nsfw=channel in self.nsfw_channels)
                for channel in sorted(self._channels)
            ],
        }

    def _message_json(self, message: FakeMessage) -> JSON:
        payload: JSON = {
            "id": str(message.id),
            "channel_id": str(message.channel_id),
            "type": 20 if message.webhook_token else 0,  # 20: reply to a slash command
            "author": _user_json(self.bot_user_id, "imagine", bot=True),
            "timestamp": _iso(message.id),
            "content": message.content or "",
            "embeds": message.embeds,
            "components": message.components,
            "flags": message.flags,
            "attachments": [self._attachment_json(message.channel_id, a) for a in message.attachments],
        }
        if message.webhook_token:
            payload.update(webhook_id=str(self.application_id), application_id=str(self.application_id))
        return payload

    def _attachment_json(self, channel_id: int, attachment: FakeAttachment) -> JSON:
        url = f"{self._base}/attachments/{channel_id}/{attachment.id}/{attachment.filename}"
        return {
            "id": str(attachment.id),
            "filename": attachment.filename,
            "size": len(attachment.data),
            "content_type": attachment.content_type,
            "url": url,
            "proxy_url": url,
        }
