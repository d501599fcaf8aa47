"""Socket Mode: Slack requests over a WebSocket instead of POST /slack/events.

With SLACK_APP_TOKEN set, the bot opens the connection itself, so Slack needs no
public URL. The CRM's OAuth redirect and webhooks still arrive over HTTP, so the
web server keeps running beside it.

Bolt's builtin adapter uses slack_sdk's own WebSocket client, which needs no
extra package. It reconnects by itself when the connection drops.
"""

from __future__ import annotations

import logging

from slack_bolt import App
from slack_bolt.adapter.socket_mode import SocketModeHandler

logger = logging.getLogger(__name__)


def start_socket_mode(bolt: App, app_token: str) -> SocketModeHandler:
    """Open the Socket Mode connection in background threads and return its handler.

    The handler's client calls apps.connections.open with the app-level token
    (through the Bolt app's Web API client, so SLACK_API_URL applies) and then
    connects to the URL that Slack returns. Close it with `handler.close()`.
    """
    handler = SocketModeHandler(bolt, app_token, logger=logging.getLogger("slack_bolt.socket_mode"))
    handler.connect()
    logger.info("Socket Mode connection opened; Slack requests now arrive over the WebSocket")
    return handler
