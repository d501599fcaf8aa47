"""Running the sandbox: simulators, the real web app and the sandbox pages in one process.

State lives in one directory (default .sandbox): the SQLite database, the
encryption key (made once, mode 0600) and the simulated CRM's accounts and tokens,
saved when the sandbox stops so that the bot's stored tokens still work next time.
The simulated CRM listens on the sandbox's port + 1 when that port is free, so links
the bot sent before a restart still reach it.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import signal
import socket
import threading
from pathlib import Path

from cryptography.fernet import Fernet
from werkzeug.middleware.dispatcher import DispatcherMiddleware
from werkzeug.serving import make_server
from werkzeug.utils import redirect

from bot.errors import ConfigError
from bot.sandbox import scenario
from bot.sandbox.console import SlackConsole
from bot.sandbox.web import PREFIX, create_console_app
from bot.scheduler import start_embedded
from bot.services import Services, build_services
from bot.settings import Settings
from bot.simulators.crm import CrmSimulator
from bot.simulators.slack import SlackSimulator
from bot.web import create_web_app
from storage.migrate import upgrade

logger = logging.getLogger(__name__)

DATABASE_FILE = "crm-bot.db"
KEY_FILE = "encryption.key"
CRM_STATE_FILE = "crm-state.json"
TEAM_ID = "T0SANDBOX"
CRM_CLIENT_ID = "sandbox-app-4f2a-9c1d"


def ensure_key(directory: Path) -> str:
    """Return the sandbox's Fernet key, creating the key file (mode 0600) on first use."""
    path = directory / KEY_FILE
    try:
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return path.read_text().strip()
    with os.fdopen(descriptor, "w") as file:
        key = Fernet.generate_key().decode()
        file.write(key + "\n")
    logger.info("Created the sandbox encryption key at %s", path)
    return key


def post_digest_now(services: Services) -> str:
    """Post the digest to DIGEST_CHANNEL now and return what happened, in words."""
    try:
        from bot.digest_service import ALREADY_POSTED, DigestService
    except ImportError:
        # NOTE: the digest ships in its own modules; without them the console reports that instead of failing.
        return "This build has no digest service, so nothing was posted."

    digest = DigestService.from_services(services)
    outcomes = digest.post_digest()
    # The sandbox shows the digest before and after a fix on the same day, so a second post is forced.
    if outcomes and all(outcome.status == ALREADY_POSTED for outcome in outcomes):
        outcomes = digest.post_digest(force=True)
    return " ".join(outcome.describe() for outcome in outcomes)


class Sandbox:
    """The whole bot on 127.0.0.1 with simulated Slack and CRM. Use start() and stop(), or `with`."""

    def __init__(self, directory: str | os.PathLike = ".sandbox", *, host: str = "127.0.0.1", port: int = 3000,
                 scheduler: bool = False) -> None:
        """`scheduler` runs the periodic jobs as `crm-bot serve` does with SCHEDULER=embedded.

        It is off by default so that tests see no job run at a time of their choosing.
        """
        self.directory = Path(directory)
        self.host = host
        self.port = port
        self.run_scheduler = scheduler
        self.crm = CrmSimulator(client_id=CRM_CLIENT_ID, client_secret=secrets.token_urlsafe(24))
        self.slack = SlackSimulator(bot_token=f"xoxb-sandbox-{secrets.token_hex(8)}", team_id=TEAM_ID)
        self.signing_secret = secrets.token_hex(16)
        self.services: Services | None = None
        self.console: SlackConsole | None = None
        self.scheduler: BackgroundScheduler | None = None
        self._server = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        """The base URL of the bot and the sandbox pages."""
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    @property
    def console_url(self) -> str:
        return f"{self.url}{PREFIX}/"

    def start(self) -> Sandbox:
        # The server binds first, so that a busy port fails before anything starts and PUBLIC_URL can carry the port.
        # Werkzeug exits the process when it cannot bind, so the socket is bound here, where OSError can be caught.
        listener = socket.create_server((self.host, self.port))
        dispatcher = _Dispatcher()
        self._server = make_server(self.host, self.port, dispatcher, threaded=True, fd=listener.fileno())
        listener.close()

        self.directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        key = ensure_key(self.directory)

        # Simulators
        self._start_crm()
        scenario.seed_slack(self.slack)
        self.slack.start()
        settings = self._settings(key)

        # The bot
        self.services = build_services(settings)
        upgrade(self.services.engine)
        if scenario.seed_bot(self.services.engine):
            logger.info("Seeded the sandbox database with the transferred and external accounts")
        bot_app = create_web_app(self.services)

        # The sandbox pages
        self.console = SlackConsole(slack=self.slack, bot_url=self.url, signing_secret=self.signing_secret,
                                    digest_channel=scenario.DIGEST_CHANNEL, digest_channel_name=scenario.DIGEST_CHANNEL_NAME,
                                    post_digest=lambda: post_digest_now(self.services))
        pages = create_console_app(self.console, self.crm)
        dispatcher.app = DispatcherMiddleware(bot_app, {PREFIX: pages})

        self._thread = threading.Thread(target=self._server.serve_forever, name="sandbox-web", daemon=True)
        self._thread.start()
        logger.info("Sandbox serving on %s", self.url)

        if self.run_scheduler:
            self.scheduler = start_embedded(self.services)
        return self

    def stop(self) -> None:
        if self.scheduler is not None:
            # Waits for a running job, so that it does not call a simulator or the database that is closing.
            self.scheduler.shutdown(wait=True)
            self.scheduler = None
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        self._save_crm()
        if self.console is not None:
            self.console.close()
        if self.services is not None:
            self.services.close()
        self.crm.stop()
        self.slack.stop()

    def __enter__(self) -> Sandbox:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def _settings(self, key: str) -> Settings:
        return Settings(
            slack_bot_token=self.slack.bot_token,
            slack_signing_secret=self.signing_secret,
            slack_api_url=self.slack.api_url,
            database_url=f"sqlite:///{(self.directory / DATABASE_FILE).resolve()}",
            public_url=f"http://{self._public_host()}:{self._server.server_address[1]}",
            port=self._server.server_address[1],
            crm_client_id=self.crm.client_id,
            crm_client_secret=self.crm.client_secret,
            crm_authorize_url=f"{self.crm.url}/oauth/chooselocation",
            crm_api_url=self.crm.url,
            crm_app_url=self.crm.url,
            crm_webhook_public_key=self.crm.webhook_public_key_pem,
            token_encryption_key=key,
            digest_channels=(scenario.DIGEST_CHANNEL,),
            scheduler="embedded" if self.run_scheduler else "off",
        )

    def _public_host(self) -> str:
        return "127.0.0.1" if self.host in ("0.0.0.0", "") else self.host

    def _start_crm(self) -> None:
        """Load and start the simulated CRM on the sandbox's port + 1, or on any free port when that one is taken."""
        ports = [self.port + 1] if 0 < self.port < 65535 else []
        for port in [*ports, 0]:
            self.crm = CrmSimulator(client_id=CRM_CLIENT_ID, client_secret=self.crm.client_secret, port=port)
            self._load_crm()
            try:
                self.crm.start()
                return
            except OSError as error:
                if port == 0:
                    raise
                logger.warning("The simulated CRM cannot listen on port %d (%s), so it takes a free port; "
                               "links sent before this start do not reach it", port, error.strerror)

    def _load_crm(self) -> None:
        path = self.directory / CRM_STATE_FILE
        if path.exists():
            self.crm.import_state(json.loads(path.read_text()))
            logger.info("Loaded the simulated CRM from %s", path)
        else:
            scenario.seed_crm(self.crm)

    def _save_crm(self) -> None:
        # NOTE: the CRM's state is saved only here, when the sandbox stops. After a crash or a kill -9 the
        # bot's stored tokens may be unknown to the CRM, and those accounts need /crm-reset or a new link.
        path = self.directory / CRM_STATE_FILE
        # The file contains the simulated CRM's tokens. Only this sandbox accepts them, but the file stays private.
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(descriptor, "w") as file:
            json.dump(self.crm.export_state(), file)


class _Dispatcher:
    """A WSGI app whose target is set once the server has bound its port. "/" leads to the console."""

    def __init__(self) -> None:
        self.app = None

    def __call__(self, environ, start_response):
        if environ.get("PATH_INFO") in ("", "/"):
            return redirect(f"{PREFIX}/")(environ, start_response)
        return self.app(environ, start_response)


def run_sandbox(directory: str, *, host: str, port: int, scheduler: bool = True) -> None:
    """Run the sandbox, with the periodic jobs unless `scheduler` is False, until Ctrl-C or SIGTERM."""
    # One access-log line per page and Slack request would bury the bot's own log.
    logging.getLogger("werkzeug").setLevel(logging.WARNING)
    try:
        sandbox = Sandbox(directory, host=host, port=port, scheduler=scheduler).start()
    except OSError as error:
        raise ConfigError(f"The sandbox cannot listen on {host}:{port} ({error.strerror}). "
                          f"Stop what uses the port, or pass another one, for example --port {port + 2} "
                          f"(the simulated CRM takes the port after the sandbox's).") from error
    stopped = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stopped.set())

    print(f"\nCRM Connect sandbox is running. Open {sandbox.console_url} in a browser.")
    print(f"State is kept in {sandbox.directory.resolve()}; delete that folder to start over. Stop with Ctrl-C.\n")
    try:
        stopped.wait()
    except KeyboardInterrupt:
        pass
    finally:
        sandbox.stop()
