"""Running the web app under gunicorn from `crm-bot serve`."""

from __future__ import annotations

import logging

from gunicorn.app.base import BaseApplication

from bot.services import build_services
from bot.settings import Settings
from storage.migrate import upgrade

logger = logging.getLogger(__name__)


class _Server(BaseApplication):
    def __init__(self, app, options: dict) -> None:
        self._app = app
        self._options = options
        super().__init__()

    def load_config(self) -> None:
        for key, value in self._options.items():
            self.cfg.set(key, value)

    def load(self):
        return self._app


def serve(settings: Settings, *, host: str, port: int, threads: int) -> None:
    """Migrate the schema, then serve the web app in one gunicorn worker with `threads` threads."""
    from bot.web import create_web_app

    services = build_services(settings)
    upgrade(services.engine)
    web = create_web_app(services)

    logger.info("Serving on %s:%s", host, port)
    options = {
        "bind": f"{host}:{port}",
        "workers": 1,
        "worker_class": "gthread",
        "threads": threads,
        "timeout": 60,
        "graceful_timeout": 10,
        "accesslog": None,
    }
    if settings.slack_app_token:
        options["post_worker_init"] = lambda _worker: _start_socket_mode(web, settings)
    if settings.scheduler == "embedded":
        # post_fork runs in the one worker, so the jobs run once, in the process that owns the engine.
        options["post_fork"] = lambda _server, _worker: _start_scheduler(services)
    _Server(web, options).run()


def _start_socket_mode(web, settings: Settings) -> None:
    # Started in the worker, after the fork, so the connection lives in the process that owns the app.
    from bot.socket_mode import start_socket_mode

    start_socket_mode(web.extensions["crm_bolt"], settings.slack_app_token)


def _start_scheduler(services) -> None:
    from bot.scheduler import start_embedded

    start_embedded(services)
