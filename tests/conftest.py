"""Fixtures: a real database (SQLite, and PostgreSQL when TEST_DATABASE_URL is set), the
CRM and Slack simulators on 127.0.0.1, and the bot's web app served over real HTTP."""

from __future__ import annotations

import os
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, replace
from urllib.parse import urlencode

import httpx
import pytest
from cryptography.fernet import Fernet
from sqlalchemy import create_engine, text
from werkzeug.serving import make_server

from bot.services import Services, build_services
from bot.settings import Settings
from bot.simulators.crm import CrmSimulator
from bot.simulators.slack import SlackSimulator, make_block_action, make_command, sign_request
from bot.web import create_web_app
from storage.db import make_engine
from storage.migrate import upgrade

SIGNING_SECRET = "test-signing-secret-0123456789abcdef"
TEAM_ID = "T0SIM0001"
AGENT = "U0AGENT01"
OTHER_USER = "U0OTHER02"
AGENCY_COMPANY_ID = "comp-agency-1"


def database_params() -> list[str]:
    params = ["sqlite"]
    if os.environ.get("TEST_DATABASE_URL"):
        params.append("postgresql")
    elif os.environ.get("CI") == "true":
        raise RuntimeError("CI=true but TEST_DATABASE_URL is unset: the PostgreSQL tests must run in CI.")
    return params


@pytest.fixture(params=database_params())
def database_url(request, tmp_path) -> Iterator[str]:
    """A migrated, empty database: a SQLite file, or a fresh schema in the PostgreSQL test database."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'bot.db'}"
        upgrade(make_engine(url))
        yield url
        return

    from bot.settings import normalise_database_url

    base = normalise_database_url(os.environ["TEST_DATABASE_URL"])
    schema = f"test_{uuid.uuid4().hex[:12]}"
    admin = create_engine(base)
    with admin.begin() as connection:
        connection.execute(text(f'CREATE SCHEMA "{schema}"'))
    separator = "&" if "?" in base else "?"
    url = f"{base}{separator}{urlencode({'options': f'-csearch_path={schema}'})}"
    upgrade(make_engine(url))
    yield url
    with admin.begin() as connection:
        connection.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
    admin.dispose()


@pytest.fixture
def engine(database_url):
    engine = make_engine(database_url)
    yield engine
    engine.dispose()


@pytest.fixture
def crm() -> Iterator[CrmSimulator]:
    simulator = CrmSimulator()
    simulator.add_company(AGENCY_COMPANY_ID, "Bright Agency")
    simulator.add_location("loc-acme", "Acme Dental", AGENCY_COMPANY_ID)
    simulator.add_location("loc-bolt", "Bolt Plumbing", AGENCY_COMPANY_ID)
    simulator.add_location("loc-nope", "Nope Bakery", AGENCY_COMPANY_ID, installed=False)
    simulator.add_company("comp-other", "Other Agency")
    simulator.add_location("loc-ext", "Outside Gym", "comp-other")
    with simulator:
        yield simulator


@pytest.fixture
def slack() -> Iterator[SlackSimulator]:
    simulator = SlackSimulator(team_id=TEAM_ID)
    with simulator:
        yield simulator


class _Dispatcher:
    """A WSGI app whose target is set after the server has bound its port."""

    def __init__(self) -> None:
        self.app = None

    def __call__(self, environ, start_response):
        return self.app(environ, start_response)


@dataclass
class Bot:
    url: str
    settings: Settings
    services: Services
    slack: SlackSimulator
    crm: CrmSimulator
    http: httpx.Client

    def post_signed(self, form: dict, *, secret: str = SIGNING_SECRET, timestamp: int | None = None) -> httpx.Response:
        body = urlencode(form).encode()
        headers = sign_request(secret, body, timestamp)
        headers["Content-Type"] = "application/x-www-form-urlencoded"
        return self.http.post(f"{self.url}/slack/events", content=body, headers=headers)

    def command(self, command: str, text: str = "", *, user_id: str = AGENT, team_id: str = TEAM_ID) -> tuple[httpx.Response, str]:
        """Send a signed slash command; return the HTTP response and the command's response_url."""
        response_url = self.slack.new_response_url()
        form = make_command(command, text, user_id=user_id, team_id=team_id, response_url=response_url)
        return self.post_signed(form), response_url

    def click(self, action_id: str, value: str, *, user_id: str = AGENT, team_id: str = TEAM_ID) -> tuple[httpx.Response, str]:
        response_url = self.slack.new_response_url()
        form = make_block_action(action_id, value, user_id=user_id, team_id=team_id, response_url=response_url)
        return self.post_signed(form), response_url

    def replies(self, response_url: str, count: int = 1, timeout: float = 10.0) -> list[dict]:
        """Wait for `count` posts to a response_url and return them."""
        return self.slack.wait_for(lambda sim: (lambda got: got if len(got) >= count else None)(sim.responses(response_url)), timeout=timeout)

    def last_reply_text(self, response_url: str, count: int = 2) -> str:
        posts = self.replies(response_url, count)
        return reply_text(posts[-1])


def reply_text(post: dict) -> str:
    """Join a message's text and the text of its blocks."""
    parts = [post.get("text") or ""]
    for block in post.get("blocks") or []:
        if isinstance(block.get("text"), dict):
            parts.append(block["text"].get("text", ""))
        for element in block.get("elements") or []:
            if isinstance(element, dict) and isinstance(element.get("text"), str):
                parts.append(element["text"])
    return "\n".join(parts)


def make_settings(*, slack: SlackSimulator, crm: CrmSimulator, database_url: str, public_url: str, **overrides) -> Settings:
    settings = Settings(
        slack_bot_token=slack.bot_token,
        slack_signing_secret=SIGNING_SECRET,
        slack_api_url=slack.api_url,
        database_url=database_url,
        public_url=public_url,
        crm_client_id=crm.client_id,
        crm_client_secret=crm.client_secret,
        crm_authorize_url=f"{crm.url}/oauth/chooselocation",
        crm_api_url=crm.url,
        crm_app_url="https://app.example-crm.test",
        token_encryption_key=Fernet.generate_key().decode(),
    )
    return replace(settings, **overrides)


@pytest.fixture
def settings_overrides() -> dict:
    """Override in a test module to change the bot's settings."""
    return {}


@pytest.fixture
def bot(database_url, engine, slack, crm, settings_overrides) -> Iterator[Bot]:
    dispatcher = _Dispatcher()
    server = make_server("127.0.0.1", 0, dispatcher, threaded=True)
    url = f"http://127.0.0.1:{server.server_port}"

    settings = make_settings(slack=slack, crm=crm, database_url=database_url, public_url=url, **settings_overrides)
    services = build_services(settings, engine=engine)
    services.crm.retry = replace(services.crm.retry, base_delay=0.01, max_delay=0.05)
    dispatcher.app = create_web_app(services)

    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    with httpx.Client(timeout=15) as http:
        yield Bot(url=url, settings=settings, services=services, slack=slack, crm=crm, http=http)
    server.shutdown()
    services.crm.close()
