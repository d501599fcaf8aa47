"""Posting a digest to Slack: the first message in the channel, the rest in its thread, paced.

Slack accepts about one message per second per channel (chat.postMessage),
so thread replies go out once per `interval` seconds. The client
retries 429 after Retry-After and every 5xx with exponential backoff, so a
DigestPostError means that the fault outlasted those retries.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError
from slack_sdk.http_retry.builtin_handlers import ConnectionErrorRetryHandler, RateLimitErrorRetryHandler, ServerErrorRetryHandler
from slack_sdk.http_retry.interval_calculator import RetryIntervalCalculator

from bot.digest import Message
from bot.errors import BotError

logger = logging.getLogger(__name__)

MESSAGE_INTERVAL = 1.0
RETRIES = 4
BACKOFF_SECONDS = 0.5

# Errors that concern the whole channel: posting more to it cannot succeed.
CHANNEL_ERRORS = ("not_in_channel", "channel_not_found", "is_archived", "invalid_auth", "not_authed", "account_inactive",
                  "missing_scope")


class DigestPostError(BotError):
    """Slack rejected a digest message. `error` is Slack's error code, such as not_in_channel."""

    def __init__(self, channel: str, error: str) -> None:
        super().__init__(f"Posting the digest to {channel} failed: {error}")
        self.channel = channel
        self.error = error

    @property
    def is_channel_fault(self) -> bool:
        return self.error in CHANNEL_ERRORS


class AnyServerErrorRetryHandler(ServerErrorRetryHandler):
    """Retry every 5xx; slack_sdk's own handler retries only 500 and 503."""

    def _can_retry(self, *, state, request, response=None, error=None) -> bool:
        return response is not None and 500 <= response.status_code < 600


@dataclass(frozen=True)
class PostResult:
    message_ts: str
    posted: int
    failed: int


class Backoff(RetryIntervalCalculator):
    """Exponential backoff from `base` seconds, with up to 50% random jitter."""

    def __init__(self, base: float) -> None:
        self.base = base

    def calculate_sleep_duration(self, current_attempt: int) -> float:
        return self.base * (2 ** current_attempt) * (1 + random.random() / 2)


def make_digest_client(*, token: str | None, base_url: str, backoff: float = BACKOFF_SECONDS) -> WebClient:
    handlers = [
        ConnectionErrorRetryHandler(max_retry_count=RETRIES, interval_calculator=Backoff(backoff)),
        RateLimitErrorRetryHandler(max_retry_count=RETRIES),
        AnyServerErrorRetryHandler(max_retry_count=RETRIES, interval_calculator=Backoff(backoff)),
    ]
    return WebClient(token=token, base_url=base_url, timeout=10, retry_handlers=handlers)


class DigestPoster:
    def __init__(self, client: WebClient, *, interval: float = MESSAGE_INTERVAL) -> None:
        self.client = client
        self.interval = interval

    def post_digest(self, channel: str, messages: Sequence[Message], *, on_first_posted: Callable[[str], None]) -> PostResult:
        """Post the first message to the channel and the others as replies in its thread.

        `on_first_posted(ts)` runs as soon as the first message is in, so its ts
        is stored even when a later reply fails. Raises DigestPostError when the
        first message fails, or when a reply fails for a reason that concerns
        the whole channel. A reply that fails for its own content is logged and
        skipped.
        """
        first, *replies = messages
        begun = time.monotonic()
        ts = self._post(channel, first)
        on_first_posted(ts)
        logger.info("Posted the digest to %s (ts %s); %d thread replies follow", channel, ts, len(replies))

        posted, failed = 1, 0
        next_at = self._next_slot(begun, begun)
        for number, message in enumerate(replies, start=2):
            _sleep_until(next_at)
            begun = time.monotonic()
            try:
                self._post(channel, message, thread_ts=ts)
            except DigestPostError as error:
                if error.is_channel_fault:
                    raise
                logger.error("Digest reply %d of %d in %s failed: %s", number, len(messages), channel, error.error)
                failed += 1
            else:
                posted += 1
            next_at = self._next_slot(next_at, begun)
        return PostResult(message_ts=ts, posted=posted, failed=failed)

    def _next_slot(self, slot: float, begun: float) -> float:
        """Return when the next message may go: one interval after this slot, or after a post slowed by retries."""
        now = time.monotonic()
        if now - begun > self.interval:
            return now + self.interval
        return max(slot, begun) + self.interval

    def _post(self, channel: str, message: Message, *, thread_ts: str | None = None) -> str:
        try:
            response = self.client.chat_postMessage(channel=channel, text=message.text, blocks=message.blocks or None,
                                                    thread_ts=thread_ts, unfurl_links=False)
        except SlackApiError as error:
            raise DigestPostError(channel, str(error.response.get("error") or f"HTTP {error.response.status_code}")) from error
        return response["ts"]


def _sleep_until(moment: float) -> None:
    delay = moment - time.monotonic()
    if delay > 0:
        time.sleep(delay)
