"""The Bolt app: wires every Slack surface to the services."""

from __future__ import annotations

import logging

from slack_bolt import App

from bot.services import Services
from handlers import actions, commands, digest
from handlers import home

logger = logging.getLogger(__name__)


def create_bolt_app(services: Services) -> App:
    settings = services.settings
    app = App(
        # The client carries the bot token and the Slack API URL.
        signing_secret=settings.slack_signing_secret,
        client=services.slack.client,
        # Keep Bolt's own logger quiet about request bodies, which hold user text.
        logger=logging.getLogger("slack_bolt"),
    )

    commands.register(app, services)
    actions.register(app, services)
    digest.register(app, services)
    home.register(app, services)

    @app.error
    def on_error(error, body):
        logger.exception("Unhandled error in a Slack listener (type %s)", body.get("type") if isinstance(body, dict) else None, exc_info=error)

    return app
