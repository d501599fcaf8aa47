"""The `crm-bot` command line."""

from __future__ import annotations

import argparse
import logging
import sys

from bot.errors import ConfigError
from bot.settings import Settings

logger = logging.getLogger(__name__)


def configure_logging() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    # httpx logs every request URL at INFO, and a URL can carry an OAuth code.
    logging.getLogger("httpx").setLevel(logging.WARNING)


def cmd_migrate(settings: Settings, _args) -> int:
    from storage.db import make_engine
    from storage.migrate import upgrade

    upgrade(make_engine(settings.database_url))
    print("Database schema is up to date.")
    return 0


def cmd_serve(settings: Settings, args) -> int:
    from bot.server import serve

    settings.require_for_serve()
    serve(settings, host=args.host, port=args.port or settings.port, threads=args.threads)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="crm-bot", description="Slack bot that keeps every CRM sub-account connected.")
    commands = parser.add_subparsers(dest="command", required=True)

    serve = commands.add_parser("serve", help="run the web process (Slack requests, OAuth callback, health)")
    serve.add_argument("--host", default="0.0.0.0", help="address to listen on (default 0.0.0.0)")
    serve.add_argument("--port", type=int, default=None, help="port to listen on (default: PORT, else 3000)")
    serve.add_argument("--threads", type=int, default=8, help="request threads (default 8)")
    serve.set_defaults(handler=cmd_serve)

    migrate = commands.add_parser("migrate", help="upgrade the database schema to the newest version")
    migrate.set_defaults(handler=cmd_migrate)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    configure_logging()
    try:
        settings = Settings.from_env()
        return args.handler(settings, args)
    except ConfigError as error:
        print(f"crm-bot: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
