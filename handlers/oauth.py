"""GET /oauth/callback: the CRM's OAuth redirect."""

from __future__ import annotations

import logging

from flask import Flask, request

from bot.callback import CallbackPage
from bot.pages import render_callback_page
from bot.services import Services

logger = logging.getLogger(__name__)

HEADERS = {
    "Content-Type": "text/html; charset=utf-8",
    "Cache-Control": "no-store",
    "Referrer-Policy": "no-referrer",
    "X-Content-Type-Options": "nosniff",
    "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'",
}


def register(web: Flask, services: Services) -> None:
    @web.get("/oauth/callback")
    def oauth_callback():
        params = {key: request.args.get(key, "") for key in ("code", "state", "error")}
        try:
            page = services.callback.handle(params)
        except Exception:
            logger.exception("OAuth callback failed")
            page = CallbackPage("Something failed", "The bot could not finish the connection, and the error was logged.",
                                "Reload this page in a minute. If it keeps failing, ask for a fresh link with /crm-connect.",
                                status=500)
        return render_callback_page(page), page.status, HEADERS
