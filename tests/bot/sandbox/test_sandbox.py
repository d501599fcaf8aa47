"""The sandbox, started in-process and driven through its HTTP interface: the console's
forms, the CRM control panel and the simulated CRM's chooselocation page."""

from __future__ import annotations

import os
import socket
import stat
import time
from urllib.parse import parse_qsl, urlencode, urlsplit

import httpx
import pytest

from bot.sandbox import scenario
from bot.sandbox.runner import KEY_FILE, Sandbox
from bot.scheduler import DIGEST_JOB_ID, REFRESH_JOB_ID
from storage import queries
from storage.db import session_scope
from storage.models import CONNECTED
from tests.conftest import reply_text

AGENT = scenario.AGENT
AGENCY = scenario.AGENCY_COMPANY_ID


class Console:
    """A browser without JavaScript: posts the console's forms and reads its JSON state."""

    def __init__(self, sandbox: Sandbox) -> None:
        self.sandbox = sandbox
        self.http = httpx.Client(base_url=sandbox.url, timeout=30, follow_redirects=True)

    def command(self, line: str, user_id: str = AGENT) -> str:
        """Send a slash command and return the text of its replies."""
        command, _, text = line.partition(" ")
        page = self.http.post("/sandbox/command", data={"user": user_id, "command": command, "text": text})
        assert page.status_code == 200
        entry = self.state(user_id)["replies"][0]
        assert entry["command"] == line
        return "\n".join(reply_text(message) for message in entry["messages"])

    def click_reply(self, action_id: str, user_id: str = AGENT) -> str:
        """Click a button of the newest command's replies and return the replies' text afterwards."""
        entry = self.state(user_id)["replies"][0]
        button = next(element for message in entry["messages"] for block in message.get("blocks") or []
                      for element in block.get("elements") or [] if element.get("action_id") == action_id)
        page = self.http.post("/sandbox/click", data={"user": user_id, "source": f"reply:{entry['id']}", "action_id": action_id,
                                                      "value": button["value"], "block_id": "reset_confirm"})
        assert page.status_code == 200
        return "\n".join(reply_text(message) for message in self.state(user_id)["replies"][0]["messages"])

    def state(self, user_id: str = AGENT) -> dict:
        return self.http.get("/sandbox/api/state", params={"user": user_id}).json()

    def dm_count(self, user_id: str = AGENT) -> int:
        return len(self.state(user_id)["dms"])

    def newest_link(self, user_id: str = AGENT, after: int = 0) -> str:
        """Return the URL of the newest DM'd connect link among the DMs after the first `after`."""
        for dm in reversed(self.state(user_id)["dms"][after:]):
            for block in dm.get("blocks") or []:
                for element in block.get("elements") or []:
                    if element.get("url"):
                        return element["url"]
        raise AssertionError(f"No link among the DMs: {self.state(user_id)['dms'][after:]}")

    def authorise(self, link: str, *, login: str, choice: str) -> str:
        """Log in on the CRM's chooselocation page, pick an account, authorise, and return the callback page."""
        chooser = self.http.get(f"{link}&{urlencode({'login': login})}")
        assert chooser.status_code == 200
        assert "Logged in as" in chooser.text

        fields = dict(parse_qsl(urlsplit(link).query))
        parts = urlsplit(link)
        redirect = self.http.post(f"{parts.scheme}://{parts.netloc}{parts.path}", follow_redirects=False,
                                  data={**fields, "login": login, "choice": choice, "action": "authorize"})
        assert redirect.status_code == 302
        callback = self.http.get(redirect.headers["location"])
        assert callback.status_code == 200
        return callback.text

    def panel(self, action: str, target: str) -> str:
        page = self.http.post("/sandbox/crm", data={"action": action, "target": target})
        assert page.status_code == 200
        return page.text

    def post_digest(self) -> list[dict]:
        before = len(self.state()["digest"])
        self.http.post("/sandbox/digest", data={"user": AGENT})
        digest = self.state()["digest"]
        assert len(digest) > before
        return digest[before:]


@pytest.fixture
def sandbox(tmp_path):
    with Sandbox(tmp_path / "sandbox", port=0) as running:
        yield running


@pytest.fixture
def console(sandbox):
    client = Console(sandbox)
    yield client
    client.http.close()


def wait_connected(sandbox: Sandbox, count: int, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with session_scope(sandbox.services.engine) as session:
            if queries.count_accounts_by_status(session=session).get(CONNECTED, 0) >= count:
                return
        time.sleep(0.2)
    raise AssertionError(f"Fewer than {count} accounts connected after {timeout} s")


def digest_text(messages: list[dict]) -> str:
    return "\n".join(reply_text(message) for message in messages)


def test_sandbox_walks_procedure(sandbox, console):
    # The agency connects, and the sync connects its installed sub-accounts.
    reply = console.command("/crm-connect agency")
    assert "Sent an agency-level link to you by DM" in reply
    page = console.authorise(console.newest_link(), login=f"company:{AGENCY}", choice=f"company:{AGENCY}")
    assert "Agency connected" in page
    wait_connected(sandbox, len(scenario.INSTALLED))
    status = console.command("/crm-status")
    assert f"{len(scenario.INSTALLED)} of 21 accounts Connected" in status

    # The digest before the fixes lists the stubborn, paused, transferred and external accounts.
    before = digest_text(console.post_digest())
    assert "7 of 21 accounts show No Active CRM Connection" in before
    assert "No earlier digest to compare with, so no account is marked new or recovered." in before
    assert "*new*" not in before
    for name in ("Oak Hardware", "Ridge Auto", "Summit Realty", "Tidal Marina"):
        assert name in before

    # A stubborn sub-account (app not installed) gets a Direct Connection.
    dms = console.dm_count()
    reply = console.command("/crm-connect Oak Hardware")
    assert "Direct Connection link for *Oak Hardware*" in reply
    assert "not installed" in reply
    page = console.authorise(console.newest_link(after=dms), login="location:loc-oak-hardware", choice="location:loc-oak-hardware")
    assert "Oak Hardware is connected" in page
    assert "Oak Hardware* (loc-oak-hardware): Connected" in console.command("/crm-status Oak Hardware")

    # The transferred sub-account: the agency does not own it any more.
    assert "You don't own this account" in console.command("/crm-status Summit Realty")
    dms = console.dm_count()
    console.command("/crm-connect Summit Realty direct")
    page = console.authorise(console.newest_link(after=dms), login="location:loc-summit-realty", choice="location:loc-summit-realty")
    assert "Summit Realty is connected" in page

    # A revoked token, then a reset that sends a fresh link.
    assert "Revoke tokens: done for Summit Realty" in console.panel("revoke", "loc-summit-realty")
    assert "Reset the connection of *Summit Realty*" in console.command("/crm-reset Summit Realty")
    dms = console.dm_count()
    replies = console.click_reply("reset_confirm")
    assert "could not" in replies.lower() or "fresh" in replies.lower()
    page = console.authorise(console.newest_link(after=dms), login="location:loc-summit-realty", choice="location:loc-summit-realty")
    assert "Summit Realty is connected" in page
    assert "Summit Realty* (loc-summit-realty): Connected" in console.command("/crm-status Summit Realty")

    # The digest after the fixes no longer lists them.
    after = digest_text(console.post_digest())
    red_part, _, recovered = after.partition("*Recovered since the last digest*")
    assert "5 of 21 accounts show No Active CRM Connection" in after
    assert "0 new and 2 recovered since the last digest." in after
    assert "*new*" not in after
    assert "Oak Hardware" not in red_part
    assert "Summit Realty" not in red_part
    assert "Ridge Auto" in red_part
    assert recovered.startswith(" (2): *Oak Hardware* (loc-oak-hardware), *Summit Realty* (loc-summit-realty)")

    # The App Home shows the same counts.
    console.http.post("/sandbox/home", data={"user": AGENT})
    home = console.state()["home"]
    assert home["type"] == "home"
    assert f"*{len(scenario.INSTALLED) + 2}* Connected" in reply_text(home)


def test_console_page_escapes_text(sandbox, console):
    console.command("/crm-connect <b>bold</b> & <script>x</script>")

    page = console.http.get("/sandbox/", params={"user": AGENT}).text

    assert "<script>x</script>" not in page
    assert "&lt;script&gt;x&lt;/script&gt;" in page


def test_key_file_private_and_kept(tmp_path):
    directory = tmp_path / "sandbox"
    with Sandbox(directory, port=0):
        key = (directory / KEY_FILE).read_text()
    with Sandbox(directory, port=0) as again:
        assert (directory / KEY_FILE).read_text() == key
        assert again.services.settings.token_encryption_key == key.strip()

    assert stat.S_IMODE(os.stat(directory / KEY_FILE).st_mode) == 0o600


def test_tokens_survive_restart(tmp_path):
    directory = tmp_path / "sandbox"
    with Sandbox(directory, port=0) as first:
        console = Console(first)
        console.command("/crm-connect Tidal Marina direct")
        console.authorise(console.newest_link(), login="location:loc-tidal-marina", choice="location:loc-tidal-marina")
        console.http.close()

    with Sandbox(directory, port=0) as second:
        console = Console(second)
        console.command("/crm-reset Tidal Marina")
        replies = console.click_reply("reset_confirm")
        console.http.close()
    assert "Tidal Marina* (loc-tidal-marina) is Connected" in replies


def test_root_leads_to_console(sandbox):
    response = httpx.get(sandbox.url, follow_redirects=False)

    assert response.status_code in (301, 302, 303, 307, 308)
    assert response.headers["location"].endswith("/sandbox/")


def test_panel_uninstall_sends_webhook(sandbox, console):
    console.command("/crm-connect Tidal Marina direct")
    console.authorise(console.newest_link(), login="location:loc-tidal-marina", choice="location:loc-tidal-marina")

    flash = console.panel("uninstall", "loc-tidal-marina")

    assert "The CRM sent the UNINSTALL webhook to the bot (HTTP 200)" in flash
    assert "Tidal Marina* (loc-tidal-marina): No Active CRM Connection" in console.command("/crm-status Tidal Marina")


def test_busy_port_reported(sandbox, tmp_path):
    from bot.errors import ConfigError
    from bot.sandbox.runner import run_sandbox

    port = int(sandbox.url.rsplit(":", 1)[1])

    with pytest.raises(ConfigError, match=f"cannot listen on 127.0.0.1:{port}"):
        run_sandbox(str(tmp_path / "other"), host="127.0.0.1", port=port)


def test_typed_mention_becomes_user(sandbox, console):
    reply = console.command("/crm-connect Tidal Marina @Dana")

    assert f"Sent a Direct Connection link for *Tidal Marina* (loc-tidal-marina) to <@{scenario.OWNER}> by DM" in reply
    assert console.state(scenario.OWNER)["dms"]


def test_unknown_mention_kept(sandbox, console):
    reply = console.command("/crm-connect Tidal Marina @nobody")

    assert "“@nobody” is not a Slack user" in reply


def test_panel_keeps_user(sandbox, console):
    page = console.http.get("/sandbox/crm", params={"user": scenario.OWNER}).text
    flash = console.http.post(f"/sandbox/crm?user={scenario.OWNER}", data={"action": "pause", "target": "loc-acme-dental"})

    assert f'href="/sandbox/?user={scenario.OWNER}"' in page
    assert f'href="/sandbox/?user={scenario.OWNER}"' in flash.text
    assert "Pause: done for Acme Dental" in flash.text


def test_scheduler_registers_jobs(tmp_path):
    with Sandbox(tmp_path / "sandbox", port=0, scheduler=True) as running:
        scheduler = running.scheduler
        jobs = {job.id for job in scheduler.get_jobs()}
    assert {REFRESH_JOB_ID, DIGEST_JOB_ID} <= jobs
    assert not scheduler.running


def test_scheduler_off_by_default(sandbox):
    assert sandbox.scheduler is None


def free_port_pair() -> int:
    """Return a port that is free, with the next one free too."""
    for _ in range(50):
        with socket.socket() as first:
            first.bind(("127.0.0.1", 0))
            port = first.getsockname()[1]
            with socket.socket() as second:
                try:
                    second.bind(("127.0.0.1", port + 1))
                except OSError:
                    continue
        return port
    raise AssertionError("No two free ports in a row")


def test_crm_port_follows_sandbox(tmp_path):
    port = free_port_pair()
    with Sandbox(tmp_path / "sandbox", port=port) as first:
        assert first.crm.url == f"http://127.0.0.1:{port + 1}"
    with Sandbox(tmp_path / "sandbox", port=port) as again:
        assert again.crm.url == f"http://127.0.0.1:{port + 1}"


def test_crm_port_taken_falls_back(tmp_path):
    port = free_port_pair()
    with socket.create_server(("127.0.0.1", port + 1)), Sandbox(tmp_path / "sandbox", port=port) as running:
        console = Console(running)
        status = console.command("/crm-status Tidal Marina")
        console.http.close()
        assert running.crm.url != f"http://127.0.0.1:{port + 1}"
    assert "Tidal Marina" in status
