"""The Flask web app: Slack requests, the OAuth callback and health."""

from __future__ import annotations

import logging

from flask import Flask, request
from slack_bolt.adapter.flask import SlackRequestHandler

from bot.app import create_bolt_app
from bot.services import Services, build_services
from bot.settings import Settings
from handlers import health, oauth, webhooks

logger = logging.getLogger(__name__)


def create_web_app(services: Services | None = None) -> Flask:
    """Build the web app. Without `services`, settings come from the environment."""
    if services is None:
        settings = Settings.from_env()
        settings.require_for_serve()
        services = build_services(settings)

    bolt = create_bolt_app(services)
    slack_handler = SlackRequestHandler(bolt)
    web = Flask(__name__)
    web.config["MAX_CONTENT_LENGTH"] = 1024 * 1024

    @web.post("/slack/events")
    def slack_events():
        return slack_handler.handle(request)

    oauth.register(web, services)
    health.register(web, services)
    webhooks.register(web, services)

    web.extensions["crm_services"] = services
    # Socket Mode feeds the same Bolt app from a WebSocket (bot/socket_mode.py).
    web.extensions["crm_bolt"] = bolt
    return web
