"""The sandbox's Slack console: a web page that plays Slack for one workspace.

The user picks a Slack user, types a slash command, clicks buttons and opens the
App Home tab. The console turns each of these into the request Slack would send,
signs it with the sandbox's signing secret and posts it to the bot's own
POST /slack/events over HTTP. The bot replies through the Slack Web API and
response URLs, which the Slack simulator records, and the page shows those
recordings: ephemeral replies, DMs, the Home view and the digest channel.
"""

from __future__ import annotations

import itertools
import json
import logging
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from urllib.parse import urlencode

import httpx

from bot.simulators.slack import SlackSimulator, SlackUser, dm_channel_id, make_app_home_opened, make_block_action, make_command, sign_request

logger = logging.getLogger(__name__)

COMMANDS = ("/crm-connect", "/crm-status", "/crm-reset")
# The console waits for the bot's follow-up calls until none came for QUIET_SECONDS.
QUIET_SECONDS = 1.0
SETTLE_TIMEOUT_SECONDS = 10.0
WORKING_ACK = "Working on it…"
# "@dana" as typed: an @ at the start of a word, then a Slack handle's characters, not ending in a dot or hyphen.
TYPED_MENTION = re.compile(r"(?<![\w<|@])@([\w.-]*\w)")


@dataclass
class CommandEntry:
    """One slash command sent from the console, with the response URLs its replies went to."""

    id: int
    user_id: str
    line: str
    ack: dict | None
    response_urls: list[str] = field(default_factory=list)


class SlackConsole:
    """Sends signed Slack requests to the bot and reads what the bot sent back."""

    def __init__(self, *, slack: SlackSimulator, bot_url: str, signing_secret: str, digest_channel: str,
                 digest_channel_name: str, post_digest: Callable[[], str]) -> None:
        self.slack = slack
        self.bot_url = bot_url.rstrip("/")
        self.digest_channel = digest_channel
        self.digest_channel_name = digest_channel_name
        self._signing_secret = signing_secret
        self._post_digest = post_digest
        self._http = httpx.Client(timeout=10)
        self._entries: list[CommandEntry] = []
        self._ids = itertools.count(1)
        self._lock = threading.Lock()

    def close(self) -> None:
        self._http.close()

    def user_name(self, user_id: str) -> str:
        user = self.slack.users.get(user_id)
        return user.real_name if user else user_id

    # Acting as Slack

    def send_command(self, user_id: str, command: str, text: str) -> CommandEntry:
        """Post a signed slash command and wait until the bot's replies have arrived."""
        if command not in COMMANDS:
            raise ValueError(f"Unknown command {command!r}; use one of {', '.join(COMMANDS)}")
        before = self._activity()
        response_url = self.slack.new_response_url()
        form = make_command(command, self.escape_mentions(text), user_id=user_id, user_name=self._slack_name(user_id), team_id=self.slack.team_id,
                            channel_id=dm_channel_id(user_id), response_url=response_url)
        response = self._post_form(form)

        entry = CommandEntry(next(self._ids), user_id, f"{command} {text}".strip(), _ack_message(response), [response_url])
        with self._lock:
            self._entries.append(entry)
        if entry.ack is None or entry.ack.get("text") == WORKING_ACK:
            self._settle(before)
        return entry

    def escape_mentions(self, text: str) -> str:
        """Turn each `@name` of a workspace user into `<@ID|name>`, as Slack's client does for a user picked from its list.

        A name matches a user's handle or the first word of their full name, in any case.
        Other `@words` stay as typed, as they would in Slack when no user is picked from the list.
        """
        def replace(match: re.Match) -> str:
            user = self._user_named(match.group(1))
            return f"<@{user.id}|{user.name}>" if user else match.group(0)

        return TYPED_MENTION.sub(replace, text)

    def click(self, user_id: str, *, source: str, action_id: str, value: str, block_id: str) -> None:
        """Post a signed button click from a reply, a message or the Home tab, and wait for the bot's reply.

        `source` is "reply:<entry id>", "message:<channel>:<ts>" or "home".
        """
        before = self._activity()
        response_url = self.slack.new_response_url()
        channel_id = message = None
        kind, _, rest = source.partition(":")
        if kind == "reply":
            entry = self._entry(int(rest))
            entry.response_urls.append(response_url)
            channel_id = dm_channel_id(user_id)
        elif kind == "message":
            channel_id, _, ts = rest.partition(":")
            message = {"type": "message", "ts": ts}
        elif kind != "home":
            raise ValueError(f"Unknown button source {source!r}")

        form = make_block_action(action_id, value, user_id=user_id, user_name=self._slack_name(user_id),
                                 team_id=self.slack.team_id, response_url=response_url, channel_id=channel_id,
                                 message=message, block_id=block_id or "actions")
        self._post_form(form)
        self._settle(before)

    def open_home(self, user_id: str) -> None:
        """Send app_home_opened, as Slack does when the user opens the app's Home tab."""
        before = self._activity()
        body = json.dumps(make_app_home_opened(user_id, team_id=self.slack.team_id)).encode()
        headers = {**sign_request(self._signing_secret, body), "Content-Type": "application/json"}
        self._http.post(f"{self.bot_url}/slack/events", content=body, headers=headers).raise_for_status()
        self._settle(before, timeout=3.0)

    def post_digest(self) -> str:
        """Post the digest now, as `crm-bot digest --now` does, and return what happened."""
        return self._post_digest()

    # Reading what the bot sent

    def replies(self, user_id: str) -> list[tuple[CommandEntry, list[dict]]]:
        """Return the user's commands, newest first, each with its ephemeral replies as they stand now."""
        with self._lock:
            entries = [entry for entry in self._entries if entry.user_id == user_id]
        return [(entry, self._entry_messages(entry)) for entry in reversed(entries)]

    def dms(self, user_id: str) -> list[dict]:
        return self.slack.channel_messages(dm_channel_id(user_id))

    def home(self, user_id: str) -> dict | None:
        return self.slack.home_view(user_id)

    def digest_messages(self) -> list[dict]:
        return self.slack.channel_messages(self.digest_channel)

    def state(self, user_id: str) -> dict:
        """Return everything the page shows for one user, as JSON-ready data."""
        return {
            "user": user_id,
            "replies": [{"id": entry.id, "command": entry.line, "messages": messages}
                        for entry, messages in self.replies(user_id)],
            "dms": self.dms(user_id),
            "home": self.home(user_id),
            "digest": self.digest_messages(),
        }

    # Helpers

    def _entry(self, entry_id: int) -> CommandEntry:
        with self._lock:
            for entry in self._entries:
                if entry.id == entry_id:
                    return entry
        raise ValueError(f"No command with id {entry_id}")

    def _entry_messages(self, entry: CommandEntry) -> list[dict]:
        messages = [entry.ack] if entry.ack else []
        for response_url in entry.response_urls:
            for post in self.slack.responses(response_url):
                if not isinstance(post, dict):
                    continue
                if post.get("delete_original"):
                    messages = messages[:-1]
                elif post.get("replace_original") and messages:
                    messages[-1] = post
                else:
                    messages.append(post)
        return messages

    def _user_named(self, name: str) -> SlackUser | None:
        key = name.casefold()
        for user_id, user in self.slack.users.items():
            if user_id == self.slack.bot_user_id:
                continue
            first_name = user.real_name.split(" ", 1)[0]
            if key in (user.name.casefold(), first_name.casefold()):
                return user
        return None

    def _slack_name(self, user_id: str) -> str:
        user = self.slack.users.get(user_id)
        return user.name if user else user_id

    def _post_form(self, form: dict) -> httpx.Response:
        body = urlencode(form).encode()
        headers = {**sign_request(self._signing_secret, body), "Content-Type": "application/x-www-form-urlencoded"}
        response = self._http.post(f"{self.bot_url}/slack/events", content=body, headers=headers)
        response.raise_for_status()
        return response

    def _activity(self) -> int:
        return len(self.slack.calls) + len(self.slack.response_posts)

    def _settle(self, before: int, *, timeout: float = SETTLE_TIMEOUT_SECONDS) -> None:
        """Wait until the bot has called Slack at least once since `before` and then stayed quiet."""
        deadline = time.monotonic() + timeout
        seen = before
        changed_at = time.monotonic()
        while time.monotonic() < deadline:
            current = self._activity()
            if current != seen:
                seen = current
                changed_at = time.monotonic()
            elif current > before and time.monotonic() - changed_at >= QUIET_SECONDS:
                return
            time.sleep(0.05)
        logger.info("Sandbox console stopped waiting for the bot after %.0f s", timeout)


def _ack_message(response: httpx.Response) -> dict | None:
    """Return the message in the bot's HTTP response to a command (its ack), or None for an empty ack."""
    if not response.content:
        return None
    if response.headers.get("content-type", "").startswith("application/json"):
        body = response.json()
        return body if isinstance(body, dict) else None
    return {"text": response.text}
