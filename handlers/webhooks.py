"""POST /webhooks/crm: CRM marketplace webhooks (app installs and uninstalls)."""

from __future__ import annotations

from flask import Flask, jsonify, request

from bot.services import Services


def register(web: Flask, services: Services) -> None:
    @web.post("/webhooks/crm")
    def crm_webhook():
        # The signature covers the raw bytes, so they are read before any parsing.
        result = services.webhooks.handle(request.get_data(cache=False), request.headers)
        return jsonify({"message": result.message}), result.status
