"""GET /healthz: liveness and database reachability."""

from __future__ import annotations

from flask import Flask, jsonify

from bot.services import Services
from storage.db import check_database


def register(web: Flask, services: Services) -> None:
    @web.get("/healthz")
    def healthz():
        database_ok = check_database(services.engine)
        body = {"status": "ok" if database_ok else "degraded", "database": "ok" if database_ok else "unreachable"}
        return jsonify(body), 200 if database_ok else 503
