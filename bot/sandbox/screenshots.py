"""Take the README's screenshots of the sandbox: `python -m bot.sandbox.screenshots [folder]`.

Starts a fresh sandbox in a temporary folder, connects the agency, lets the sync
run, requests a Direct Connection for a stubborn account, posts the digest and
opens the App Home, then saves console.png, app-home.png and digest.png
(default folder: docs/screenshots). Needs Debian's chromium and chromium-driver.
"""

from __future__ import annotations

import argparse
import logging
import sys
import tempfile
import time
from pathlib import Path

import httpx

from bot.sandbox import scenario
from bot.sandbox.browser import missing_browser, open_chromium
from bot.sandbox.runner import Sandbox
from storage import queries
from storage.db import session_scope
from storage.models import CONNECTED

logger = logging.getLogger(__name__)

WIDTH = 1280
MAX_HEIGHT = 2400
SYNC_TIMEOUT_SECONDS = 60


def newest_link(sandbox: Sandbox, user_id: str) -> str:
    for message in reversed(sandbox.console.dms(user_id)):
        for block in message.get("blocks") or []:
            for element in block.get("elements") or []:
                if element.get("url"):
                    return element["url"]
    raise RuntimeError("The bot sent no link by DM")


def authorise(sandbox: Sandbox, link: str, choice: str) -> None:
    """Complete the CRM's chooselocation page as a user would, and load the bot's callback page."""
    callback_url = sandbox.crm.authorize(link, choice)
    httpx.get(callback_url, timeout=30).raise_for_status()


def wait_for_sync(sandbox: Sandbox) -> None:
    deadline = time.monotonic() + SYNC_TIMEOUT_SECONDS
    while time.monotonic() < deadline:
        with session_scope(sandbox.services.engine) as session:
            if queries.count_accounts_by_status(session=session).get(CONNECTED, 0) >= len(scenario.INSTALLED):
                return
        time.sleep(0.2)
    raise RuntimeError(f"The agency sync did not finish within {SYNC_TIMEOUT_SECONDS} s")


def prepare(sandbox: Sandbox) -> None:
    """Walk the first steps of the procedure so that every surface has something to show."""
    console = sandbox.console
    agent = scenario.AGENT

    console.send_command(agent, "/crm-connect", "agency")
    authorise(sandbox, newest_link(sandbox, agent), f"company:{scenario.AGENCY_COMPANY_ID}")
    wait_for_sync(sandbox)

    console.post_digest()
    console.send_command(agent, "/crm-status", "")
    console.send_command(agent, "/crm-connect", "Oak Hardware")
    console.open_home(agent)


def capture(driver, url: str, path: Path) -> None:
    driver.set_window_size(WIDTH, 900)
    driver.get(url)
    height = driver.execute_script("return document.documentElement.scrollHeight")
    driver.set_window_size(WIDTH, min(height + 40, MAX_HEIGHT))
    driver.save_screenshot(str(path))
    logger.info("Saved %s", path)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Take screenshots of the sandbox's console, App Home and digest.")
    parser.add_argument("folder", nargs="?", default="docs/screenshots", help="where to save the PNG files (default docs/screenshots)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("werkzeug").setLevel(logging.WARNING)
    logging.getLogger("httpx").setLevel(logging.WARNING)

    reason = missing_browser()
    if reason is not None:
        print(f"Cannot take screenshots: {reason}", file=sys.stderr)
        return 2

    folder = Path(args.folder)
    folder.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as scratch, Sandbox(Path(scratch) / "sandbox", port=0) as sandbox:
        prepare(sandbox)
        driver = open_chromium(Path(scratch) / "chromium-profile", width=WIDTH)
        try:
            user = f"user={scenario.AGENT}"
            capture(driver, f"{sandbox.console_url}?{user}", folder / "console.png")
            capture(driver, f"{sandbox.console_url}?{user}&panel=home", folder / "app-home.png")
            capture(driver, f"{sandbox.console_url}?{user}&panel=digest", folder / "digest.png")
        finally:
            driver.quit()
    return 0


if __name__ == "__main__":
    sys.exit(main())
