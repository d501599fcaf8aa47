"""Slack Web API wrapper that speaks in the bot's verbs.

Retries 429 (honouring Retry-After), 5xx and connection errors through
slack_sdk's retry handlers, so no caller sees a transient Slack fault
unless it outlasts them.
"""

from __future__ import annotations

import logging

from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError
from slack_sdk.http_retry.builtin_handlers import (
    ConnectionErrorRetryHandler, RateLimitErrorRetryHandler, ServerErrorRetryHandler,
)
from slack_sdk.webhook import WebhookClient

logger = logging.getLogger(__name__)

RETRIES = 3


def retry_handlers() -> list:
    return [
        ConnectionErrorRetryHandler(max_retry_count=RETRIES),
        RateLimitErrorRetryHandler(max_retry_count=RETRIES),
        ServerErrorRetryHandler(max_retry_count=RETRIES),
    ]


def make_web_client(*, token: str | None, base_url: str) -> WebClient:
    return WebClient(token=token, base_url=base_url, timeout=10, retry_handlers=retry_handlers())


class SlackGateway:
    def __init__(self, client: WebClient) -> None:
        self.client = client

    def send_dm(self, user_id: str, *, text: str, blocks: list | None = None) -> str | None:
        """Open a DM with the user and post into it. Return the message ts, or None when Slack refused."""
        try:
            channel = self.client.conversations_open(users=user_id)["channel"]["id"]
            response = self.client.chat_postMessage(channel=channel, text=text, blocks=blocks)
        except SlackApiError as error:
            logger.error("DM to %s failed: %s", user_id, error.response.get("error"))
            return None
        logger.info("DM sent to %s", user_id)
        return response.get("ts")

    def post_dm(self, user_id: str, *, text: str, blocks: list | None = None) -> tuple[str, str] | None:
        """Post into a user's DM and return (channel, ts) for later edits, or None when Slack refused."""
        try:
            channel = self.client.conversations_open(users=user_id)["channel"]["id"]
            response = self.client.chat_postMessage(channel=channel, text=text, blocks=blocks)
        except SlackApiError as error:
            logger.error("DM to %s failed: %s", user_id, error.response.get("error"))
            return None
        logger.info("DM sent to %s", user_id)
        return channel, response["ts"]

    def update_message(self, channel: str, ts: str, *, text: str, blocks: list | None = None) -> bool:
        """Edit a message that the bot posted (chat.update). Return whether Slack accepted the edit."""
        try:
            self.client.chat_update(channel=channel, ts=ts, text=text, blocks=blocks)
        except SlackApiError as error:
            logger.error("Editing message %s in %s failed: %s", ts, channel, error.response.get("error"))
            return False
        return True

    def respond(self, response_url: str, *, text: str, blocks: list | None = None, replace_original: bool = False) -> bool:
        """Post an ephemeral reply to a command's or button's response_url."""
        webhook = WebhookClient(response_url, timeout=10, retry_handlers=retry_handlers())
        response = webhook.send(text=text, blocks=blocks, response_type="ephemeral", replace_original=replace_original)
        if response.status_code != 200:
            logger.error("Reply to response_url failed with HTTP %s", response.status_code)
            return False
        return True
