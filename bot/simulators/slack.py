"""Local HTTP simulator of the Slack Web API, response URLs and request signing.

``SlackSimulator`` serves the Web API methods that the bot calls, at ``api_url``, which is what
``WebClient(base_url=...)`` expects. ``slack_sdk`` posts each call to ``base_url`` plus the
method name, with a form-encoded or JSON body and ``Authorization: Bearer <bot token>``. Like
Slack, the simulator reports API errors as HTTP 200 with ``{"ok": false, "error": ...}``.

The module-level helpers build signed requests in Slack's shapes, so tests can post slash
commands and button clicks to the bot's own HTTP endpoint.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import secrets
import threading
import time
from collections import deque
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Callable
from urllib.parse import parse_qsl, urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from bot.simulators.http import (
    Response,
    ServedSimulator,
    SimulatorRequestHandler,
    take_due_fault,
)
from bot.simulators.websocket import SocketModeServer

logger = logging.getLogger(__name__)

SIM_APP_ID = "A0SIMAPP"
SIM_BOT_ID = "B0SIMBOT"
SIM_TEAM_NAME = "CRM Connect Sandbox"
SIM_TEAM_DOMAIN = "crm-connect-sandbox"
SIM_VERIFICATION_TOKEN = "sim-verification-token"

# Slack's limits: blocks per message, blocks per App Home view, characters of a section's
# text, and characters of an action_id.
MAX_MESSAGE_BLOCKS = 50
MAX_VIEW_BLOCKS = 100
MAX_SECTION_TEXT = 3000
MAX_ACTION_ID = 255

# A response_url accepts 5 posts. Slack also expires it after 30 minutes, which the simulator
# does not enforce.
MAX_RESPONSE_URL_POSTS = 5

# Arguments that slack_sdk sends as JSON strings inside form bodies.
_JSON_ARGUMENTS = ("blocks", "view", "attachments")


@dataclass
class SlackCall:
    """Web API call as the simulator received it, with JSON-string arguments decoded.

    ``status`` and ``response`` are the HTTP status and the JSON body that the simulator sent
    back, which separate rejected calls from delivered ones.
    """

    method: str
    args: dict[str, Any]
    headers: dict[str, str]
    time: float
    status: int = 200
    response: Any = None


@dataclass
class ResponsePost:
    """Post to a response_url. ``body`` is the decoded JSON message."""

    response_url: str
    body: Any
    headers: dict[str, str]
    time: float


@dataclass
class SlackUser:
    """Workspace member that ``users.info`` and ``conversations.open`` know."""

    id: str
    name: str
    real_name: str
    tz: str


@dataclass
class _Channel:
    name: str
    member: bool


@dataclass
class _Fault:
    error: str | None
    status: int
    retry_after: int | None
    remaining: int
    delay: float
    skip: int = 0


@dataclass
class _Response(Response):
    # Decoded JSON body, which SlackCall records as the method's result.
    payload: Any = None


class _ApiError(Exception):
    """Web API error code that a method handler returns as ``{"ok": false}``."""

    def __init__(self, error: str) -> None:
        super().__init__(error)
        self.error = error


def _json_response(status: int, payload: Any, headers: dict[str, str] | None = None) -> _Response:
    body = json.dumps(payload).encode()
    headers = dict(headers or {})
    return _Response(status, body, "application/json; charset=utf-8", headers, payload=payload)


def _text_response(status: int, text: str) -> _Response:
    return _Response(status, text.encode(), "text/plain; charset=utf-8")


def dm_channel_id(user_id: str) -> str:
    """Return the simulator's direct-message channel id for a user, such as U0AB → D0AB."""
    return f"D{user_id[1:]}"


def _decode_json_arguments(args: dict[str, Any]) -> dict[str, Any]:
    """Decode ``blocks``, ``view`` and ``attachments`` when they arrive as JSON strings.

    A string that is not valid JSON stays a string, and the method handler rejects it.
    """
    decoded = dict(args)
    for name in _JSON_ARGUMENTS:
        value = decoded.get(name)
        if isinstance(value, str) and value:
            try:
                decoded[name] = json.loads(value)
            except ValueError:
                logger.info("Slack simulator received %s that is not valid JSON", name)
    return decoded


def _blocks_error(blocks: Any, max_blocks: int) -> str | None:
    """Return why ``blocks`` breaks Slack's Block Kit limits, or None when it is valid."""
    if not isinstance(blocks, list):
        return "blocks must be a JSON array"
    if len(blocks) > max_blocks:
        return f"{len(blocks)} blocks exceed the limit of {max_blocks}"

    for index, block in enumerate(blocks):
        if not isinstance(block, dict) or not block.get("type"):
            return f"block {index} has no type"
        text = block.get("text")
        if block["type"] == "section" and isinstance(text, dict):
            if len(text.get("text", "")) > MAX_SECTION_TEXT:
                return f"block {index} has more than {MAX_SECTION_TEXT} characters of text"
        elements = list(block.get("elements") or [])
        if isinstance(block.get("accessory"), dict):
            elements.append(block["accessory"])
        for element in elements:
            if isinstance(element, dict) and len(element.get("action_id", "")) > MAX_ACTION_ID:
                return f"block {index} has an action_id longer than {MAX_ACTION_ID} characters"
    return None


def _describe_outcome(call: SlackCall) -> str:
    response = call.response if isinstance(call.response, dict) else {}
    if response.get("ok"):
        return "ok"
    return f"error {response.get('error')} (HTTP {call.status})"


def _zone_offset_seconds(tz: str) -> int:
    try:
        offset = datetime.now(ZoneInfo(tz)).utcoffset()
    except ZoneInfoNotFoundError:
        logger.warning("Slack simulator has no time zone data for %r; using UTC", tz)
        return 0
    return int(offset.total_seconds()) if offset is not None else 0


class SlackSimulator(ServedSimulator):
    """Threaded local server that behaves like the Slack Web API for one bot in one workspace.

    The workspace starts with the bot user and the user ``U0AGENT01`` that ``make_command``
    uses by default. Add more with ``add_user`` and ``add_channel``. All state is guarded by
    one lock, so tests may read recordings while the bot sends requests.
    """

    label = "Slack simulator"
    thread_name = "slack-simulator"

    def __init__(
        self,
        bot_token: str = "xoxb-sim-token",
        team_id: str = "T0SIM0001",
        app_token: str = "xapp-1-A0SIMAPP-sim-token",
        bot_user_id: str = "U0SIMBOT",
        host: str = "127.0.0.1",
        port: int = 0,
    ) -> None:
        super().__init__(host, port, _SlackRequestHandler)
        self.bot_token = bot_token
        self.app_token = app_token
        self.team_id = team_id
        self.bot_user_id = bot_user_id

        self.calls: list[SlackCall] = []
        self.response_posts: list[ResponsePost] = []
        self.users: dict[str, SlackUser] = {}

        self._lock = threading.Lock()
        self._channels: dict[str, _Channel] = {}
        self._messages: dict[tuple[str, str], dict[str, Any]] = {}
        self._home_views: dict[str, dict[str, Any]] = {}
        self._response_post_counts: dict[str, int] = {}
        self._faults: dict[str, deque[_Fault]] = {}
        self._next_ts = 100
        self._socket_mode: SocketModeServer | None = None

        self._methods: dict[str, Callable[[dict[str, Any]], dict[str, Any]]] = {
            "auth.test": self._auth_test,
            "conversations.open": self._conversations_open,
            "chat.postMessage": self._chat_post_message,
            "chat.update": self._chat_update,
            "chat.postEphemeral": self._chat_post_ephemeral,
            "views.publish": self._views_publish,
            "users.info": self._users_info,
            "apps.connections.open": self._apps_connections_open,
        }

        self.add_user(bot_user_id, "crm-connect", real_name="CRM Connect")
        self.add_user("U0AGENT01", "agent", real_name="Support Agent")

    # Server lifecycle

    def _stop_companions(self) -> None:
        if self._socket_mode is not None:
            self._socket_mode.stop()
            self._socket_mode = None

    @property
    def api_url(self) -> str:
        """Web API base URL for ``WebClient(base_url=...)``, ending in ``/api/``."""
        return f"{self.url}/api/"

    # Workspace state

    def add_user(
        self, user_id: str, name: str, *, real_name: str | None = None, tz: str = "America/New_York"
    ) -> SlackUser:
        """Add a workspace member, or replace the one with the same id, and return it."""
        user = SlackUser(user_id, name, real_name or name, tz)
        with self._lock:
            self.users[user_id] = user
        return user

    def add_channel(self, channel_id: str, name: str, member: bool = True) -> None:
        """Add a channel. The bot can post only where ``member`` is true."""
        with self._lock:
            self._channels[channel_id] = _Channel(name, member)

    def new_response_url(self) -> str:
        """Return a fresh response_url on this server."""
        return f"{self.url}/response/{secrets.token_urlsafe(12)}"

    @property
    def socket_mode(self) -> SocketModeServer:
        """The Socket Mode WebSocket server, started on first use."""
        with self._lock:
            if self._socket_mode is None:
                self._socket_mode = SocketModeServer(SIM_APP_ID, host=self._host)
            return self._socket_mode

    def channel_messages(self, channel: str) -> list[dict[str, Any]]:
        """Return the messages of a channel as they stand now, after any chat.update, oldest first."""
        with self._lock:
            found = [message for (channel_id, _ts), message in self._messages.items() if channel_id == channel]
        return sorted(found, key=lambda message: float(message["ts"]))

    def home_view(self, user_id: str) -> dict[str, Any] | None:
        """Return the App Home view last published for a user, or None."""
        with self._lock:
            return self._home_views.get(user_id)

    # Recordings

    def calls_to(self, method: str) -> list[SlackCall]:
        """Return the recorded calls of one Web API method, such as ``chat.postMessage``."""
        with self._lock:
            return [call for call in self.calls if call.method == method]

    def messages(self, channel: str | None = None) -> list[dict[str, Any]]:
        """Return the arguments of each delivered ``chat.postMessage``, optionally in one channel.

        Calls that got an error or an injected failure are left out. ``calls_to`` has them.
        """
        return [
            call.args
            for call in self.calls_to("chat.postMessage")
            if isinstance(call.response, dict) and call.response.get("ok")
            and (channel is None or call.args.get("channel") == channel)
        ]

    def dms_to(self, user_id: str) -> list[dict[str, Any]]:
        """Return the delivered ``chat.postMessage`` arguments for a user's DM.

        A message counts when its channel is the user's DM channel id or the user id itself.
        """
        targets = {dm_channel_id(user_id), user_id}
        return [args for args in self.messages() if args.get("channel") in targets]

    def responses(self, response_url: str | None = None) -> list[Any]:
        """Return the bodies posted to response URLs, optionally to one URL."""
        with self._lock:
            return [
                post.body
                for post in self.response_posts
                if response_url is None or post.response_url == response_url
            ]

    def wait_for(self, predicate: Callable[[SlackSimulator], Any], timeout: float = 5.0) -> Any:
        """Poll until ``predicate(self)`` is truthy and return its value.

        Raises AssertionError with a summary of the recorded calls after ``timeout`` seconds.
        """
        deadline = time.monotonic() + timeout
        while True:
            value = predicate(self)
            if value:
                return value
            if time.monotonic() >= deadline:
                raise AssertionError(
                    f"Slack simulator condition not met within {timeout} s. "
                    f"Recorded:\n{self.describe_recordings()}"
                )
            time.sleep(0.02)

    def describe_recordings(self) -> str:
        """Return one line per recorded call and response_url post, for failure messages."""
        with self._lock:
            calls = list(self.calls)
            posts = list(self.response_posts)

        lines = []
        for call in calls:
            channel = call.args.get("channel") or call.args.get("user_id") or ""
            text = str(call.args.get("text", ""))[:80]
            lines.append(f"  {call.method} {channel} text={text!r} -> {_describe_outcome(call)}")
        for post in posts:
            body = post.body
            text = str(body.get("text", "") if isinstance(body, dict) else body)
            lines.append(f"  response_url {post.response_url} text={text[:80]!r}")
        return "\n".join(lines) or "  (nothing)"

    # Fault injection

    def fail_next(
        self,
        method: str,
        *,
        error: str | None = None,
        status: int = 200,
        retry_after: int | None = None,
        count: int = 1,
        delay: float = 0.0,
        after: int = 0,
    ) -> None:
        """Fail the next ``count`` calls of ``method`` with an error instead of serving them.

        With status 200, ``error`` is the Web API error code. Status 429 sends
        ``{"ok": false, "error": "ratelimited"}`` with ``Retry-After`` (``retry_after`` seconds,
        default 1). Any other status is sent as that HTTP status, with ``error`` or
        ``internal_error`` in the body. ``delay`` is the number of seconds to wait before
        responding. ``after`` calls of ``method`` are served normally before the first failure.
        """
        if status == 200 and error is None:
            raise ValueError("fail_next() with status 200 needs an error, such as 'not_in_channel'")
        if count < 1:
            raise ValueError(f"count must be at least 1, got {count}")

        with self._lock:
            fault = _Fault(error, status, retry_after, count, delay, skip=after)
            self._faults.setdefault(method, deque()).append(fault)

    # Request handling

    def handle(
        self,
        method: str,
        path: str,
        headers: dict[str, str],
        args: dict[str, Any],
        raw_body: bytes,
    ) -> _Response:
        """Produce the response to one HTTP request. Called from the server's threads."""
        if path.startswith("/api/"):
            return self._serve_api(path.removeprefix("/api/"), headers, args)
        if method == "POST" and path.startswith("/response/"):
            return self._record_response_post(path, headers, args, raw_body)
        return _text_response(404, f"Not found: {method} {path}")

    def _serve_api(self, method: str, headers: dict[str, str], args: dict[str, Any]) -> _Response:
        received_at = time.time()
        args = _decode_json_arguments(args)
        logger.debug("Slack simulator received %s", method)

        response = self._take_fault(method)
        if response is None:
            response = _json_response(200, self._call_method(method, headers, args))

        call = SlackCall(method, args, headers, received_at, response.status, response.payload)
        with self._lock:
            self.calls.append(call)
        return response

    def _call_method(
        self, method: str, headers: dict[str, str], args: dict[str, Any]
    ) -> dict[str, Any]:
        handler = self._methods.get(method)
        try:
            if handler is None:
                raise _ApiError("unknown_method")
            self._authenticate(headers, args, method)
            return handler(args)
        except _ApiError as error:
            logger.info("Slack simulator returned error %s for %s", error.error, method)
            return {"ok": False, "error": error.error}

    def _authenticate(self, headers: dict[str, str], args: dict[str, Any], method: str = "") -> None:
        scheme, _, token = headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer":
            token = str(args.get("token", ""))
        if not token:
            raise _ApiError("not_authed")
        # apps.connections.open takes the app-level token (xapp-), every other method the bot token.
        expected = self.app_token if method == "apps.connections.open" else self.bot_token
        if token.strip().startswith("xapp-") != expected.startswith("xapp-"):
            raise _ApiError("not_allowed_token_type")
        if not hmac.compare_digest(token.strip().encode(), expected.encode()):
            raise _ApiError("invalid_auth")

    def _take_fault(self, method: str) -> _Response | None:
        with self._lock:
            fault = take_due_fault(self._faults.get(method))
        if fault is None:
            return None

        logger.info("Slack simulator injects a failure for %s (HTTP %d)", method, fault.status)
        if fault.status == 429:
            retry_after = str(fault.retry_after if fault.retry_after is not None else 1)
            response = _json_response(
                429, {"ok": False, "error": "ratelimited"}, {"Retry-After": retry_after}
            )
        else:
            error = fault.error or "internal_error"
            response = _json_response(fault.status, {"ok": False, "error": error})
        response.delay = fault.delay
        return response

    def _record_response_post(
        self, path: str, headers: dict[str, str], args: dict[str, Any], raw_body: bytes
    ) -> _Response:
        body: Any = args
        if "payload" in args:
            body = args["payload"]
        elif not args and raw_body:
            body = raw_body.decode("utf-8", "replace")
        if isinstance(body, str):
            try:
                body = json.loads(body)
            except ValueError:
                return _text_response(400, "invalid_payload")

        response_url = f"{self.url}{path}"
        with self._lock:
            count = self._response_post_counts.get(path, 0)
            if count >= MAX_RESPONSE_URL_POSTS:
                # NOTE: the status and body that Slack sends for a spent response_url are not
                # confirmed; 404 "used_url" is an assumption.
                logger.info("Slack simulator rejected post %d to %s", count + 1, response_url)
                return _text_response(404, "used_url")
            self._response_post_counts[path] = count + 1
            self.response_posts.append(ResponsePost(response_url, body, headers, time.time()))
        return _text_response(200, "ok")

    # Web API methods

    def _auth_test(self, args: dict[str, Any]) -> dict[str, Any]:
        return {
            "ok": True,
            "url": f"{self.url}/",
            "team": SIM_TEAM_NAME,
            "user": self.users[self.bot_user_id].name,
            "team_id": self.team_id,
            "user_id": self.bot_user_id,
            "bot_id": SIM_BOT_ID,
            "is_enterprise_install": False,
        }

    def _conversations_open(self, args: dict[str, Any]) -> dict[str, Any]:
        users = args.get("users") or []
        if isinstance(users, str):
            users = [user.strip() for user in users.split(",") if user.strip()]
        if not users:
            raise _ApiError("users_list_not_supplied")
        if len(users) > 8:
            raise _ApiError("too_many_users")

        with self._lock:
            if any(user not in self.users for user in users):
                raise _ApiError("user_not_found")

        if len(users) == 1:
            channel_id = dm_channel_id(users[0])
        else:
            digest = hashlib.sha256(",".join(sorted(users)).encode()).hexdigest()
            channel_id = f"G{digest[:10].upper()}"
        return {"ok": True, "channel": {"id": channel_id}}

    def _chat_post_message(self, args: dict[str, Any]) -> dict[str, Any]:
        channel = self._resolve_channel(args.get("channel"))
        self._check_content(args)

        with self._lock:
            ts = self._new_ts_locked()
            message = self._message_payload(args, ts)
            self._messages[(channel, ts)] = message
        return {"ok": True, "channel": channel, "ts": ts, "message": message}

    def _chat_update(self, args: dict[str, Any]) -> dict[str, Any]:
        channel = self._resolve_channel(args.get("channel"))
        ts = str(args.get("ts", ""))
        self._check_content(args)

        with self._lock:
            if (channel, ts) not in self._messages:
                raise _ApiError("message_not_found")
            message = self._message_payload(args, ts)
            self._messages[(channel, ts)] = message
        return {"ok": True, "channel": channel, "ts": ts, "text": message["text"],
                "message": message}

    def _chat_post_ephemeral(self, args: dict[str, Any]) -> dict[str, Any]:
        self._resolve_channel(args.get("channel"))
        with self._lock:
            if args.get("user") not in self.users:
                raise _ApiError("user_not_found")
        self._check_content(args)

        with self._lock:
            ts = self._new_ts_locked()
        return {"ok": True, "message_ts": ts}

    def _views_publish(self, args: dict[str, Any]) -> dict[str, Any]:
        user_id = args.get("user_id")
        view = args.get("view")
        with self._lock:
            if user_id not in self.users:
                raise _ApiError("user_not_found")
        if not isinstance(view, dict) or view.get("type") != "home":
            raise _ApiError("invalid_arguments")
        if _blocks_error(view.get("blocks", []), MAX_VIEW_BLOCKS) is not None:
            raise _ApiError("invalid_arguments")

        published = {**view, "id": f"V{secrets.token_hex(5).upper()}", "team_id": self.team_id}
        with self._lock:
            self._home_views[user_id] = published
        return {"ok": True, "view": published}

    def _apps_connections_open(self, args: dict[str, Any]) -> dict[str, Any]:
        return {"ok": True, "url": self.socket_mode.new_url()}

    def _users_info(self, args: dict[str, Any]) -> dict[str, Any]:
        with self._lock:
            user = self.users.get(str(args.get("user", "")))
        if user is None:
            raise _ApiError("user_not_found")

        return {"ok": True, "user": {
            "id": user.id,
            "team_id": self.team_id,
            "name": user.name,
            "real_name": user.real_name,
            "tz": user.tz,
            "tz_offset": _zone_offset_seconds(user.tz),
            "is_bot": user.id == self.bot_user_id,
            "deleted": False,
            "profile": {"real_name": user.real_name, "display_name": user.name},
        }}

    # Method helpers

    def _resolve_channel(self, channel: Any) -> str:
        """Return the channel that a post goes to, or raise the Web API error for it.

        A user id stands for that user's DM, and DM ids are always accepted.
        """
        channel = str(channel or "")
        with self._lock:
            if channel[:1] in ("U", "W") and channel in self.users:
                return dm_channel_id(channel)
            if channel.startswith("D"):
                return channel
            known = self._channels.get(channel)
        if known is None:
            raise _ApiError("channel_not_found")
        if not known.member:
            raise _ApiError("not_in_channel")
        return channel

    def _check_content(self, args: dict[str, Any]) -> None:
        blocks = args.get("blocks")
        if not args.get("text") and not blocks:
            raise _ApiError("no_text")
        if blocks is not None:
            problem = _blocks_error(blocks, MAX_MESSAGE_BLOCKS)
            if problem is not None:
                logger.info("Slack simulator rejected blocks: %s", problem)
                raise _ApiError("invalid_blocks")

    def _message_payload(self, args: dict[str, Any], ts: str) -> dict[str, Any]:
        message = {
            "type": "message",
            "user": self.bot_user_id,
            "bot_id": SIM_BOT_ID,
            "text": str(args.get("text", "")),
            "ts": ts,
        }
        for name in ("blocks", "thread_ts"):
            if args.get(name):
                message[name] = args[name]
        return message

    def _new_ts_locked(self) -> str:
        """Return a message timestamp that is unique and increases within this simulator."""
        value = self._next_ts
        self._next_ts += 100
        return f"{1_700_000_000 + value // 1_000_000}.{value % 1_000_000:06d}"


class _SlackRequestHandler(SimulatorRequestHandler):
    label = "Slack simulator"

    def _dispatch(self) -> None:
        try:
            raw_body = self.read_body()
        except ValueError as error:
            logger.warning(
                "Slack simulator rejected a body without a valid Content-Length: %s", error
            )
            self.write(_text_response(400, "Content-Length is missing or invalid"))
            return

        parts = urlsplit(self.path)
        headers = {name.lower(): value for name, value in self.headers.items()}
        try:
            args = self._parse_args(parts.query, raw_body, headers.get("content-type", ""))
        except ValueError as error:
            logger.warning("Slack simulator rejected a malformed body: %s", error)
            self.write(_json_response(200, {"ok": False, "error": "invalid_json"}))
            return

        response = self.server.simulator.handle(self.command, parts.path, headers, args, raw_body)
        if response.delay > 0:
            time.sleep(response.delay)
        self.write(response)

    do_GET = do_POST = _dispatch

    @staticmethod
    def _parse_args(query: str, body: bytes, content_type: str) -> dict[str, Any]:
        """Merge query parameters with a form-encoded or JSON object body."""
        args: dict[str, Any] = dict(parse_qsl(query, keep_blank_values=True))
        media_type = content_type.split(";")[0].strip().lower()
        if media_type == "application/json" and body:
            decoded = json.loads(body)
            if not isinstance(decoded, dict):
                raise ValueError("JSON body must be an object")
            args.update(decoded)
        elif media_type == "application/x-www-form-urlencoded":
            args.update(parse_qsl(body.decode("utf-8", "replace"), keep_blank_values=True))
        return args


def sign_request(
    signing_secret: str, body: bytes | str, timestamp: int | None = None
) -> dict[str, str]:
    """Return the ``X-Slack-Request-Timestamp`` and ``X-Slack-Signature`` headers for a body.

    The signature is ``v0=`` plus the hex HMAC-SHA256 of ``v0:{timestamp}:{body}`` keyed with
    the signing secret. ``timestamp`` defaults to now, in Unix seconds.
    """
    if isinstance(body, str):
        body = body.encode()
    if timestamp is None:
        timestamp = int(time.time())

    base = f"v0:{timestamp}:".encode() + body
    digest = hmac.new(signing_secret.encode(), base, hashlib.sha256).hexdigest()
    return {"X-Slack-Request-Timestamp": str(timestamp), "X-Slack-Signature": f"v0={digest}"}


def _default_channel_name(channel_id: str) -> str:
    return "directmessage" if channel_id.startswith("D") else "support"


def _new_trigger_id() -> str:
    return f"{secrets.randbelow(10**12)}.{secrets.randbelow(10**11)}.{secrets.token_hex(16)}"


def make_command(
    command: str,
    text: str,
    *,
    user_id: str = "U0AGENT01",
    user_name: str = "agent",
    team_id: str = "T0SIM0001",
    channel_id: str = "C0SUPPORT",
    channel_name: str | None = None,
    response_url: str,
    trigger_id: str | None = None,
    enterprise_id: str | None = None,
    api_app_id: str = SIM_APP_ID,
) -> dict[str, str]:
    """Return the form fields that Slack posts for a slash command.

    ``channel_name`` defaults to ``directmessage`` for a DM channel id (``D...``) and to
    ``support`` otherwise. ``enterprise_id`` is sent only when given, as for workspaces outside
    an Enterprise Grid.
    """
    fields = {
        "token": SIM_VERIFICATION_TOKEN,
        "team_id": team_id,
        "team_domain": SIM_TEAM_DOMAIN,
        "channel_id": channel_id,
        "channel_name": channel_name or _default_channel_name(channel_id),
        "user_id": user_id,
        "user_name": user_name,
        "command": command,
        "text": text,
        "api_app_id": api_app_id,
        "is_enterprise_install": "false",
        "response_url": response_url,
        "trigger_id": trigger_id or _new_trigger_id(),
    }
    if enterprise_id is not None:
        fields["enterprise_id"] = enterprise_id
    return fields


def make_block_action(
    action_id: str,
    value: str,
    *,
    user_id: str = "U0AGENT01",
    user_name: str = "agent",
    team_id: str = "T0SIM0001",
    response_url: str,
    channel_id: str | None = None,
    message: dict[str, Any] | None = None,
    block_id: str = "actions",
    api_app_id: str = SIM_APP_ID,
) -> dict[str, str]:
    """Return the form fields that Slack posts when a user clicks a button.

    The ``block_actions`` payload is JSON in the ``payload`` field. With ``channel_id`` the
    click comes from a message in that channel, whose ``ts`` is taken from ``message`` when
    given. Without it the click comes from the user's App Home view.
    """
    action_ts = f"{time.time():.6f}"
    payload: dict[str, Any] = {
        "type": "block_actions",
        "user": {"id": user_id, "username": user_name, "name": user_name, "team_id": team_id},
        "api_app_id": api_app_id,
        "token": SIM_VERIFICATION_TOKEN,
        "trigger_id": _new_trigger_id(),
        "team": {"id": team_id, "domain": SIM_TEAM_DOMAIN},
        "enterprise": None,
        "is_enterprise_install": False,
        "response_url": response_url,
        "actions": [{
            "action_id": action_id,
            "block_id": block_id,
            "value": value,
            "type": "button",
            "action_ts": action_ts,
        }],
        "state": {"values": {}},
    }

    if channel_id is not None:
        message_ts = (message or {}).get("ts", action_ts)
        payload["container"] = {
            "type": "message", "message_ts": message_ts, "channel_id": channel_id,
            "is_ephemeral": False,
        }
        payload["channel"] = {"id": channel_id, "name": _default_channel_name(channel_id)}
    else:
        payload["container"] = {"type": "view", "view_id": "V0SIMHOME"}
        payload["view"] = {"id": "V0SIMHOME", "type": "home", "team_id": team_id}
    if message is not None:
        payload["message"] = message

    return {"payload": json.dumps(payload)}


def make_app_home_opened(
    user_id: str = "U0AGENT01",
    *,
    team_id: str = "T0SIM0001",
    tab: str = "home",
    api_app_id: str = SIM_APP_ID,
) -> dict[str, Any]:
    """Return the Events API body that Slack posts when a user opens the app's Home tab.

    The bot receives it as JSON, so post it with ``Content-Type: application/json``.
    """
    event_time = int(time.time())
    return {
        "token": SIM_VERIFICATION_TOKEN,
        "team_id": team_id,
        "api_app_id": api_app_id,
        "event": {
            "type": "app_home_opened",
            "user": user_id,
            "channel": dm_channel_id(user_id),
            "tab": tab,
            "event_ts": f"{event_time}.000100",
        },
        "type": "event_callback",
        "event_id": f"Ev{secrets.token_hex(5).upper()}",
        "event_time": event_time,
        "authorizations": [{"team_id": team_id, "user_id": "U0SIMBOT", "is_bot": True}],
    }
