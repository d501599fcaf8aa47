"""The `crm-bot` command line."""

from __future__ import annotations

import argparse
import logging
import re
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


def cmd_clock(settings: Settings, _args) -> int:
    from bot.scheduler import run_clock
    from bot.services import build_services

    settings.require("SLACK_BOT_TOKEN", "TOKEN_ENCRYPTION_KEY")
    run_clock(build_services(settings))
    return 0


def cmd_digest(settings: Settings, args) -> int:
    from bot.digest_service import FAILED, PARTIAL, DigestService
    from bot.services import build_services

    settings.require("SLACK_BOT_TOKEN", "TOKEN_ENCRYPTION_KEY")
    channels = settings.digest_channels
    if args.channel:
        channels = tuple(part.strip() for part in args.channel.split(",") if part.strip())
        for channel in channels:
            if not re.fullmatch(r"[CG][A-Z0-9]{2,}", channel):
                raise ConfigError(f"--channel has a malformed channel id: {channel!r}. Use ids, for example --channel C0123ABCD")
    if not channels:
        raise ConfigError("No digest channel: set DIGEST_CHANNEL, for example DIGEST_CHANNEL=C0123ABCD, or pass --channel C0123ABCD")

    outcomes = DigestService.from_services(build_services(settings)).post_digest(channels=channels, force=args.force)
    for outcome in outcomes:
        print(outcome.describe())
    return 1 if any(outcome.status in (FAILED, PARTIAL) for outcome in outcomes) else 0


def cmd_sandbox(_settings: Settings, args) -> int:
    from bot.sandbox.runner import run_sandbox

    # The sandbox builds its own settings: it needs no environment at all.
    run_sandbox(args.dir, host=args.host, port=args.port)
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

    clock = commands.add_parser("clock", help="run the periodic jobs (digest, token refresh, health checks) until stopped")
    clock.set_defaults(handler=cmd_clock)

    digest = commands.add_parser("digest", help="post the digest of accounts that show No Active CRM Connection")
    digest.add_argument("--now", action="store_true", required=True, help="post now instead of at DIGEST_TIME")
    digest.add_argument("--channel", help="channel id(s) to post to, comma-separated (default: DIGEST_CHANNEL)")
    digest.add_argument("--force", action="store_true", help="post another digest even when today's is already posted")
    digest.set_defaults(handler=cmd_digest)

    sandbox = commands.add_parser("sandbox", help="run the bot with a simulated Slack and CRM in a browser, no credentials needed")
    sandbox.add_argument("--dir", default=".sandbox", help="folder for the database, key and CRM state (default .sandbox)")
    sandbox.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1: this machine only, since the pages have no login)")
    sandbox.add_argument("--port", type=int, default=3000, help="port to listen on (default 3000)")
    sandbox.set_defaults(handler=cmd_sandbox)
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
