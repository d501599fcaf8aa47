"""End to end: the real `crm-bot serve` process, signed slash commands, the DM'd link
through the CRM simulator's authorize page, and /crm-status reporting Connected."""

from __future__ import annotations

import html
import os
import re
import socket
import subprocess
import sys
import time
from urllib.parse import urlencode

import httpx
import pytest
from cryptography.fernet import Fernet

from bot.simulators.slack import make_command, sign_request
from tests.conftest import AGENT, SIGNING_SECRET, reply_text


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def serve_env(*, slack, crm, database_url: str, port: int) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if not key.startswith(("SLACK_", "CRM_", "DIGEST_"))}
    env.update({
        "SLACK_BOT_TOKEN": slack.bot_token,
        "SLACK_SIGNING_SECRET": SIGNING_SECRET,
        "SLACK_API_URL": slack.api_url,
        "DATABASE_URL": database_url,
        "PUBLIC_URL": f"http://127.0.0.1:{port}",
        "PORT": str(port),
        "CRM_CLIENT_ID": crm.client_id,
        "CRM_CLIENT_SECRET": crm.client_secret,
        "CRM_AUTHORIZE_URL": f"{crm.url}/oauth/chooselocation",
        "CRM_API_URL": crm.url,
        "TOKEN_ENCRYPTION_KEY": Fernet.generate_key().decode(),
        "SCHEDULER": "off",
    })
    return env


def wait_healthy(url: str, process: subprocess.Popen, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"crm-bot serve exited with {process.returncode}: {process.stderr.read()}")
        try:
            if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    raise AssertionError("crm-bot serve did not answer /healthz in time")


@pytest.fixture
def served(slack, crm, database_url):
    port = free_port()
    env = serve_env(slack=slack, crm=crm, database_url=database_url, port=port)
    process = subprocess.Popen([sys.executable, "-m", "bot", "serve", "--host", "127.0.0.1"], env=env,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_healthy(url, process)
        yield url
    finally:
        process.terminate()
        try:
            _, stderr = process.communicate(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            _, stderr = process.communicate()
        # Secrets must never reach the log.
        assert crm.client_secret not in stderr
        assert env["TOKEN_ENCRYPTION_KEY"] not in stderr


def send_command(url: str, slack, command: str, text: str) -> tuple[httpx.Response, str]:
    response_url = slack.new_response_url()
    body = urlencode(make_command(command, text, user_id=AGENT, response_url=response_url)).encode()
    headers = sign_request(SIGNING_SECRET, body)
    headers["Content-Type"] = "application/x-www-form-urlencoded"
    started = time.monotonic()
    response = httpx.post(f"{url}/slack/events", content=body, headers=headers, timeout=5)
    assert time.monotonic() - started < 3.0
    return response, response_url


def test_serve_connects_account_end_to_end(served, slack, crm):
    response, response_url = send_command(served, slack, "/crm-connect", "Acme Dental direct")
    assert response.status_code == 200
    slack.wait_for(lambda sim: sim.responses(response_url), timeout=10)

    dm = slack.wait_for(lambda sim: sim.dms_to(AGENT), timeout=10)[-1]
    link = next(element["url"] for block in dm["blocks"] for element in block.get("elements", []) if element.get("url"))

    # Follow the link as a browser would: the CRM's page, its form, then the redirect to the bot.
    with httpx.Client(follow_redirects=False, timeout=10) as browser:
        chooser = browser.get(link)
        assert chooser.status_code == 200
        fields = dict(re.findall(r'<input type="hidden" name="([^"]+)" value="([^"]*)"', chooser.text))
        fields = {key: html.unescape(value) for key, value in fields.items()}
        redirect = browser.post(f"{crm.url}/oauth/chooselocation", data={**fields, "choice": "location:loc-acme", "action": "authorize"})
        assert redirect.status_code == 302
        page = browser.get(redirect.headers["location"])
    assert page.status_code == 200
    assert "Acme Dental is connected" in page.text

    _, status_url = send_command(served, slack, "/crm-status", "Acme Dental")
    status = slack.wait_for(lambda sim: sim.responses(status_url), timeout=10)[-1]
    assert "Acme Dental* (loc-acme): Connected" in reply_text(status)


def test_serve_refuses_without_signing_secret(slack, crm, tmp_path):
    env = serve_env(slack=slack, crm=crm, database_url=f"sqlite:///{tmp_path / 'bot.db'}", port=free_port())
    del env["SLACK_SIGNING_SECRET"]

    result = subprocess.run([sys.executable, "-m", "bot", "serve"], env=env, capture_output=True, text=True, timeout=30)

    assert result.returncode == 2
    assert "SLACK_SIGNING_SECRET is required" in result.stderr
    assert "SLACK_SIGNING_SECRET=" in result.stderr
    assert "Traceback" not in result.stderr


def test_healthz_reports_database(served):
    response = httpx.get(f"{served}/healthz")

    assert response.json() == {"status": "ok", "database": "ok"}
