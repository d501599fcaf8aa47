"""advise: one test per rule of the advice table, and the history that drives it."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from bot.accounts import history_of, record_failure
from bot.advice import Action, History, advise, command_ref, status_label
from storage import queries
from storage.db import session_scope
from storage.models import Account

APP_URL = "https://app.example-crm.test"


def make_account(*, status: str = "disconnected", reason: str | None = "never_connected", agency_id: int | None = 1,
                 location_id: str | None = "loc-acme", method: str | None = None) -> Account:
    return Account(name="Acme Dental", name_key="acme dental", location_id=location_id, agency_id=agency_id,
                   status=status, reason=reason, method=method)


def test_connected_needs_nothing():
    advice = advise(make_account(status="connected", reason=None, method="agency"), History(), app_url=APP_URL)

    assert advice.action is Action.NONE
    assert advice.text == "No action needed."


def test_three_failures_escalate_direct():
    advice = advise(make_account(reason="needs_reconnect"), History(failed_attempts=3), app_url=APP_URL)

    assert advice.action is Action.CONNECT_DIRECT
    assert advice.text.startswith("Connecting failed 3 times in 7 days.")
    assert "`/crm-connect loc-acme direct`" in advice.text
    assert "check in the CRM that the agency still owns it" in advice.text


def test_two_failures_not_escalated():
    advice = advise(make_account(reason="needs_reconnect"), History(failed_attempts=2), app_url=APP_URL)

    assert advice.action is Action.RESET


def test_paused_never_escalated():
    advice = advise(make_account(reason="paused"), History(failed_attempts=5), app_url=APP_URL)

    assert advice.action is Action.WAIT


def test_not_owned_direct_connection():
    advice = advise(make_account(reason="not_owned"), History(), app_url=APP_URL)

    assert advice.action is Action.CONNECT_DIRECT
    assert advice.text == ("You don't own this account through the agency. Send a Direct Connection link with "
                           "`/crm-connect loc-acme direct` and log in to that account directly.")


def test_not_installed_install_steps():
    advice = advise(make_account(reason="not_installed"), History(), app_url=APP_URL)

    assert advice.action is Action.CONNECT_DIRECT
    assert "install it from the app's page in the CRM marketplace (Install, then pick this sub-account)" in advice.text
    assert "run `/crm-connect agency` to sync it" in advice.text
    assert "`/crm-connect loc-acme direct`" in advice.text
    assert "incognito" not in advice.text


def test_not_installed_after_agency_login():
    advice = advise(make_account(reason="not_installed"), History(agency_link_used=True), app_url=APP_URL)

    assert "install it from the app's page" in advice.text
    assert f"open the link in an incognito window and log in at {APP_URL}" in advice.text


def test_paused_waits():
    advice = advise(make_account(reason="paused"), History(), app_url=APP_URL)

    assert advice.action is Action.WAIT
    assert "Location is not active" in advice.text


def test_failing_tokens_reset():
    advice = advise(make_account(reason="needs_reconnect"), History(), app_url=APP_URL)

    assert advice.action is Action.RESET
    assert advice.text.startswith("Reset the connection with `/crm-reset loc-acme`.")


def test_paused_never_connected_waits_then_connects():
    advice = advise(make_account(reason="paused"), History(has_tokens=False), app_url=APP_URL)

    assert advice.action is Action.WAIT
    assert "it was never connected" in advice.text
    assert advice.text.endswith("then connect it with `/crm-connect loc-acme`.")


def test_cleared_tokens_connect_again():
    advice = advise(make_account(reason="needs_reconnect"), History(has_tokens=False), app_url=APP_URL)

    assert advice.action is Action.CONNECT
    assert advice.text.startswith("The bot cleared the rejected tokens")
    assert "`/crm-connect loc-acme`" in advice.text


def test_failed_sync_direct_connection():
    advice = advise(make_account(), History(sync_failed=True, agency_connected=True), app_url=APP_URL)

    assert advice.action is Action.CONNECT_DIRECT
    assert advice.text.startswith("The agency sync could not connect this account.")
    assert "`/crm-connect loc-acme direct`" in advice.text


def test_missed_by_agency_login_incognito():
    advice = advise(make_account(), History(agency_link_used=True, agency_connected=True), app_url=APP_URL)

    assert advice.action is Action.CONNECT_DIRECT
    assert advice.text.startswith("The agency login did not connect this account.")
    assert f"open the link in an incognito window and log in at {APP_URL}, not at a white-label domain." in advice.text


def test_outside_agency_direct_connection():
    advice = advise(make_account(agency_id=None, location_id=None), History(), app_url=APP_URL)

    assert advice.action is Action.CONNECT_DIRECT
    assert advice.text.startswith("This account is outside the agency, so it needs a Direct Connection. "
                                  "Send a link with `/crm-connect Acme Dental direct`.")


def test_agency_connected_connects_through_it():
    advice = advise(make_account(), History(agency_connected=True), app_url=APP_URL)

    assert advice.action is Action.CONNECT
    assert advice.text == "Connect it through the agency with `/crm-connect loc-acme`."


def test_agency_not_connected_sends_link():
    advice = advise(make_account(), History(), app_url=APP_URL)

    assert advice.action is Action.CONNECT
    assert advice.text.startswith("Send a connect link with `/crm-connect loc-acme`.")
    assert APP_URL in advice.text


def test_status_label_wording():
    assert status_label(make_account(status="connected", reason=None)) == "Connected"
    assert status_label(make_account(reason="not_owned")) == "No Active CRM Connection (not owned by the agency)"


def test_command_ref_falls_back_to_name():
    assert command_ref(make_account()) == "loc-acme"
    assert command_ref(make_account(location_id=None)) == "Acme Dental"


@pytest.mark.parametrize("kind, field", [("sync_failed", "sync_failed"), ("missed_by_agency_login", "agency_link_used")])
def test_history_reads_sync_events(engine, kind, field):
    with session_scope(engine) as session:
        account = queries.create_account(session=session, name="Acme Dental", location_id="loc-acme")
        queries.add_event(session=session, kind=kind, account_id=account.id)

        history = history_of(session, account)

    assert getattr(history, field) is True


def test_history_counts_sync_failures(engine):
    with session_scope(engine) as session:
        account = queries.create_account(session=session, name="Acme Dental", location_id="loc-acme")
        for kind in ("sync_failed", "connect_failed", "refresh_failed"):
            record_failure(session, account, kind=kind, reason="rejected", error="Bad request")

        history = history_of(session, account)

    assert history.failed_attempts == 3


README = Path(__file__).resolve().parents[2] / "README.md"

# One case per row of the README's advice table, in the table's order.
README_ROW_CASES = [
    (make_account(status="connected", reason=None, method="agency"), History()),
    (make_account(reason="needs_reconnect"), History(failed_attempts=3)),
    (make_account(reason="not_owned"), History()),
    (make_account(reason="not_installed"), History()),
    (make_account(reason="paused"), History(has_tokens=False)),
    (make_account(reason="paused"), History()),
    (make_account(reason="needs_reconnect"), History(has_tokens=False)),
    (make_account(reason="needs_reconnect"), History()),
    (make_account(), History(sync_failed=True)),
    (make_account(), History(agency_link_used=True)),
    (make_account(agency_id=None), History()),
    (make_account(), History(agency_connected=True)),
    (make_account(), History()),
]


def readme_actions() -> list[str]:
    section = README.read_text().split("## When an account is red: the advice", 1)[1].split("\n## ", 1)[0]
    rows = re.findall(r"^\| (\d+) \|.*\| `(\w+)` \|$", section, flags=re.MULTILINE)
    return [action for _, action in rows]


def test_readme_table_matches_rules():
    actions = [advise(account, history, app_url=APP_URL).action.value for account, history in README_ROW_CASES]

    assert readme_actions() == actions
