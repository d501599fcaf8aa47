"""Connect Accounts: the agency sync against the CRM and Slack simulators, on a real database."""

from __future__ import annotations

import logging
import threading
from dataclasses import replace
from datetime import timedelta
from urllib.parse import parse_qs, urlsplit

import pytest

from bot.accounts import mark_connected, set_agency_status
from bot.advice import advise
from bot.accounts import history_of
from bot.sync import AgencySync, SlackProgress, SyncProgress, run_agency_sync
from storage import queries, sync_queries
from storage.db import session_scope, utcnow, write_lock_scope
from storage.models import CONNECTED, METHOD_AGENCY, METHOD_DIRECT
from tests.conftest import AGENCY_COMPANY_ID, AGENT

FINISHED_TEXT = (
    "*Sync of the agency Bright Agency finished:* 3 accounts.\n"
    "• 2 Connected through the agency\n"
    "• 1 No Active CRM Connection: app not installed on the sub-account\n"
    "`/crm-status` lists every account that shows No Active CRM Connection, with its next step."
)


def connect_agency(services, crm, company_id: str = AGENCY_COMPANY_ID, name: str = "Bright Agency") -> int:
    """Store an agency connection made through the simulator's install page, without starting a sync."""
    callback = crm.authorize(services.crm.build_authorize_url("state"), f"company:{company_id}")
    grant = services.crm.exchange_code(parse_qs(urlsplit(callback).query)["code"][0], user_type="Company")
    with session_scope(services.engine) as session:
        agency = queries.get_or_create_agency(session=session, company_id=grant.company_id, name=name)
        services.connections.tokens.save_grant(session, grant, method=METHOD_AGENCY, agency_id=agency.id)
        set_agency_status(session, agency, connected=True)
        return agency.id


def account(services, location_id: str):
    with session_scope(services.engine) as session:
        return queries.get_account_by_location_id(session=session, location_id=location_id)


def event_kinds(services, location_id: str) -> list[str]:
    with session_scope(services.engine) as session:
        found = queries.get_account_by_location_id(session=session, location_id=location_id)
        return [event.kind for event in queries.list_events(session=session, account_id=found.id, limit=50)]


def fast_sync(bot) -> AgencySync:
    return AgencySync(bot.services.connections, retry_wait=0.01)


# Outcomes

def test_sync_connects_installed_accounts(bot):
    agency_id = connect_agency(bot.services, bot.crm)

    summary = run_agency_sync(bot.services, agency_id)

    assert summary.status == "finished"
    assert (summary.total, summary.connected, summary.not_installed, summary.deferred) == (3, 2, 1, 0)
    acme = account(bot.services, "loc-acme")
    assert acme.status == CONNECTED
    assert acme.method == METHOD_AGENCY
    assert acme.agency_id == agency_id
    assert account(bot.services, "loc-ext") is None


def test_sync_marks_uninstalled_not_installed(bot):
    agency_id = connect_agency(bot.services, bot.crm)

    run_agency_sync(bot.services, agency_id)

    nope = account(bot.services, "loc-nope")
    assert nope.status != CONNECTED
    assert nope.reason == "not_installed"
    assert "missed_by_agency_login" in event_kinds(bot.services, "loc-nope")
    with session_scope(bot.services.engine) as session:
        advice = advise(nope, history_of(session, nope), app_url=bot.settings.crm_app_url)
    assert "install it from the app's page in the CRM marketplace" in advice.text
    assert "incognito window" in advice.text


def test_sync_mints_with_company_token_only(bot):
    agency_id = connect_agency(bot.services, bot.crm)

    run_agency_sync(bot.services, agency_id)

    mints = bot.crm.requests_to("/oauth/locationToken")
    assert sorted(request.form["locationId"] for request in mints) == ["loc-acme", "loc-bolt"]
    assert {request.form["companyId"] for request in mints} == {AGENCY_COMPANY_ID}
    assert [request for request in bot.crm.requests if request.path.startswith("/locations/loc-")] == []
    installed = bot.crm.requests_to("/oauth/installedLocations")
    assert installed[0].query["appId"] == bot.settings.app_id


def test_sync_progress_message_edited_in_place(bot):
    agency_id = connect_agency(bot.services, bot.crm)

    run_agency_sync(bot.services, agency_id, progress=SlackProgress(bot.services.slack, AGENT, min_interval=0))

    posts = bot.slack.dms_to(AGENT)
    assert [post["text"] for post in posts] == ["Synced 0 of 3 accounts of the agency Bright Agency…"]
    updates = [call.args for call in bot.slack.calls_to("chat.update")]
    assert [update["text"] for update in updates[:-1]] == [
        "Synced 1 of 3 accounts of the agency Bright Agency…",
        "Synced 2 of 3 accounts of the agency Bright Agency…",
        "Synced 3 of 3 accounts of the agency Bright Agency…",
    ]
    assert updates[-1]["text"] == FINISHED_TEXT
    assert {update["channel"] for update in updates} == {"D" + AGENT[1:]} or len({update["ts"] for update in updates}) == 1


def test_sync_repeat_is_harmless(bot):
    agency_id = connect_agency(bot.services, bot.crm)

    first = run_agency_sync(bot.services, agency_id)
    second = run_agency_sync(bot.services, agency_id)

    assert (second.connected, second.not_installed, second.created) == (first.connected, first.not_installed, 0)
    assert first.created == 3
    with session_scope(bot.services.engine) as session:
        assert len(queries.list_accounts(session=session)) == 3
    assert event_kinds(bot.services, "loc-acme").count("connected") == 1


def test_sync_keeps_direct_connection(bot):
    agency_id = connect_agency(bot.services, bot.crm)
    run_agency_sync(bot.services, agency_id)
    with session_scope(bot.services.engine) as session:
        acme = queries.get_account_by_location_id(session=session, location_id="loc-acme")
        mark_connected(session, acme, method=METHOD_DIRECT)

    summary = run_agency_sync(bot.services, agency_id)

    assert (summary.connected, summary.already_direct) == (1, 1)
    assert account(bot.services, "loc-acme").method == METHOD_DIRECT


def test_sync_marks_paused_account(bot):
    bot.crm.add_location("loc-sleepy", "Sleepy Spa", AGENCY_COMPANY_ID, active=False)
    agency_id = connect_agency(bot.services, bot.crm)

    summary = run_agency_sync(bot.services, agency_id)

    assert summary.paused == 1
    assert account(bot.services, "loc-sleepy").reason == "paused"


# Ownership

def test_sync_mint_403_sets_not_owned(bot):
    agency_id = connect_agency(bot.services, bot.crm)

    def transfer_before_mints(report: SyncProgress) -> None:
        if report.processed == 0 and report.summary is None:
            bot.crm.transfer_location("loc-acme", "comp-other")

    summary = run_agency_sync(bot.services, agency_id, progress=transfer_before_mints)

    assert summary.not_owned == 1
    acme = account(bot.services, "loc-acme")
    assert acme.reason == "not_owned"
    assert acme.last_error == "The token does not have access to this location."
    with session_scope(bot.services.engine) as session:
        advice = advise(acme, history_of(session, acme), app_url=bot.settings.crm_app_url)
    assert advice.text.startswith("You don't own this account through the agency.")


def test_sync_account_moved_since_last_sync(bot):
    agency_id = connect_agency(bot.services, bot.crm)
    run_agency_sync(bot.services, agency_id)
    bot.crm.transfer_location("loc-bolt", "comp-other")

    summary = run_agency_sync(bot.services, agency_id)

    assert (summary.total, summary.left_agency) == (2, 1)
    bolt = account(bot.services, "loc-bolt")
    assert bolt.status != CONNECTED
    assert bolt.reason == "not_owned"
    assert bolt.agency_id is None
    with session_scope(bot.services.engine) as session:
        assert queries.get_connection_for_account(session=session, account_id=bolt.id) is None


def test_sync_summary_counts_left_accounts(bot):
    agency_id = connect_agency(bot.services, bot.crm)
    run_agency_sync(bot.services, agency_id)
    bot.crm.transfer_location("loc-bolt", "comp-other")

    lines = run_agency_sync(bot.services, agency_id).text.splitlines()

    assert lines[0] == "*Sync of the agency Bright Agency finished:* 3 accounts."
    bullets = [line for line in lines if line.startswith("• ")]
    assert sum(int(bullet.split()[1]) for bullet in bullets) == 3
    assert "• 1 no longer in the agency: moved to another agency or removed" in bullets


def test_sync_end_logged(bot, caplog):
    agency_id = connect_agency(bot.services, bot.crm)

    with caplog.at_level(logging.INFO, logger="bot.sync"):
        run_agency_sync(bot.services, agency_id)

    ended = [record.getMessage() for record in caplog.records if " ended after " in record.getMessage()]
    assert len(ended) == 1
    assert " with status finished: 3 accounts listed, 2 connected, 0 deferred, 0 left the agency" in ended[0]


def test_sync_same_name_in_two_agencies(bot):
    bot.crm.add_location("loc-acme-2", "Acme Dental", "comp-other")
    first = connect_agency(bot.services, bot.crm)
    second = connect_agency(bot.services, bot.crm, company_id="comp-other", name="Other Agency")

    run_agency_sync(bot.services, first)
    run_agency_sync(bot.services, second)

    with session_scope(bot.services.engine) as session:
        matches = queries.find_accounts(session=session, query="acme dental")
        assert sorted(match.location_id for match in matches) == ["loc-acme", "loc-acme-2"]
        assert {match.agency_id for match in matches} == {first, second}
        assert all(match.status == CONNECTED for match in matches)


def test_sync_repeated_location_kept_once(bot):
    bot.crm.repeated_in_listings.add("loc-acme")
    agency_id = connect_agency(bot.services, bot.crm)

    summary = run_agency_sync(bot.services, agency_id)

    assert (summary.total, summary.connected) == (3, 2)
    assert len([request for request in bot.crm.requests_to("/oauth/locationToken") if request.form["locationId"] == "loc-acme"]) == 1


# Faults

def test_sync_retries_transient_mint_faults(bot):
    agency_id = connect_agency(bot.services, bot.crm)
    bot.crm.fail_next("/oauth/locationToken", status=503, count=3)
    bot.crm.fail_next("/oauth/locationToken", status=429, count=1, headers={"Retry-After": "1"})

    summary = fast_sync(bot).run(agency_id)

    assert (summary.status, summary.connected, summary.deferred) == ("finished", 2, 0)
    assert account(bot.services, "loc-acme").status == CONNECTED
    assert account(bot.services, "loc-bolt").status == CONNECTED


def test_sync_resumes_after_listing_fault(bot):
    agency_id = connect_agency(bot.services, bot.crm)
    bot.crm.fail_next("/locations/search", status=500, count=4)
    bot.crm.fail_next("/oauth/installedLocations", status=504, count=2)

    summary = fast_sync(bot).run(agency_id)

    assert (summary.status, summary.connected) == ("finished", 2)


def test_sync_transient_fault_not_red(bot):
    agency_id = connect_agency(bot.services, bot.crm)
    # Three attempts per call, in the first pass and three retry passes, for two accounts.
    bot.crm.fail_next("/oauth/locationToken", status=500, count=24)

    summary = fast_sync(bot).run(agency_id)

    assert (summary.status, summary.deferred, summary.connected) == ("partial", 2, 0)
    assert "2 not reached: the CRM did not answer, so they keep their status" in summary.text
    acme = account(bot.services, "loc-acme")
    assert acme.reason == "never_connected"
    assert "sync_failed" not in event_kinds(bot.services, "loc-acme")


def test_sync_resume_skips_done_accounts(bot):
    agency_id = connect_agency(bot.services, bot.crm)
    # loc-acme is minted first; every attempt for loc-bolt then fails.
    bot.crm.fail_next("/oauth/locationToken", status=500, count=12, after=1)
    partial = fast_sync(bot).run(agency_id)
    mints_before = len(bot.crm.requests_to("/oauth/locationToken"))

    resumed = fast_sync(bot).run(agency_id)

    assert (partial.status, partial.connected, partial.deferred) == ("partial", 1, 1)
    assert (resumed.status, resumed.connected, resumed.deferred) == ("finished", 2, 0)
    minted_again = [request.form["locationId"] for request in bot.crm.requests_to("/oauth/locationToken")[mints_before:]]
    assert minted_again == ["loc-bolt"]


def test_sync_listing_outage_interrupts(bot):
    agency_id = connect_agency(bot.services, bot.crm)
    bot.crm.fail_next("/locations/search", status=502, count=50)

    summary = fast_sync(bot).run(agency_id)

    assert summary.status == "interrupted"
    assert summary.text == ("The sync of the agency Bright Agency was interrupted: the CRM did not answer while listing "
                            "the sub-accounts. No account was marked red. Run `/crm-connect agency` again to resume.")
    with session_scope(bot.services.engine) as session:
        assert queries.list_accounts(session=session) == []


def test_sync_422_names_app_id(bot):
    agency_id = connect_agency(bot.services, bot.crm)
    bot.crm.fail_next("/oauth/installedLocations", status=422, body={"statusCode": 422, "message": ["appId should not be empty"]})

    summary = run_agency_sync(bot.services, agency_id)

    assert summary.status == "failed"
    assert "CRM_APP_ID" in summary.text
    assert "appId should not be empty" in summary.text


def test_sync_without_app_id_names_it(bot):
    agency_id = connect_agency(bot.services, bot.crm)
    sync = fast_sync(bot)
    sync.settings = replace(sync.settings, crm_app_id=None, crm_client_id=None)

    summary = sync.run(agency_id)

    assert summary.status == "failed"
    assert summary.error.startswith("CRM_APP_ID is not set")
    assert bot.crm.requests_to("/oauth/installedLocations") == []


def test_sync_stops_when_agency_disconnected(bot):
    bot.crm.add_bulk_locations(AGENCY_COMPANY_ID, installed=60)
    agency_id = connect_agency(bot.services, bot.crm)

    def disconnect_midway(report: SyncProgress) -> None:
        if report.processed == 10 and report.summary is None:
            with session_scope(bot.services.engine) as session:
                set_agency_status(session, queries.get_agency(session=session, agency_id=agency_id), connected=False,
                                  reason="needs_reconnect")

    summary = run_agency_sync(bot.services, agency_id, progress=disconnect_midway)

    assert summary.status == "stopped"
    assert 10 <= summary.processed < 40
    assert summary.text.startswith(f"The sync of the agency Bright Agency stopped after {summary.processed} of 63 accounts: "
                                   "the agency was disconnected.")
    with session_scope(bot.services.engine) as session:
        assert sync_queries.get_sync_lease(session=session, agency_id=agency_id) is None


def test_sync_stops_when_agency_revoked(bot):
    agency_id = connect_agency(bot.services, bot.crm)

    def revoke_before_mints(report: SyncProgress) -> None:
        if report.processed == 0 and report.summary is None:
            bot.crm.revoke_grants(company_id=AGENCY_COMPANY_ID)

    summary = run_agency_sync(bot.services, agency_id, progress=revoke_before_mints)

    assert summary.status == "stopped"
    assert "the CRM rejected the agency's tokens" in summary.text
    with session_scope(bot.services.engine) as session:
        assert queries.get_agency(session=session, agency_id=agency_id).status != CONNECTED
    assert account(bot.services, "loc-acme").reason == "never_connected"


# Concurrency

def test_sync_skips_while_lease_held(bot):
    agency_id = connect_agency(bot.services, bot.crm)
    with write_lock_scope(bot.services.engine) as session:
        sync_queries.acquire_sync_lease(session=session, agency_id=agency_id, holder="other-process", now=utcnow(),
                                        expires_at=utcnow() + timedelta(minutes=2))

    summary = run_agency_sync(bot.services, agency_id)

    assert summary.status == "already_running"
    assert summary.text == "A sync of the agency Bright Agency is already running, so this request did not start another one."
    assert bot.crm.requests_to("/locations/search") == []


def test_sync_takes_over_expired_lease(bot):
    agency_id = connect_agency(bot.services, bot.crm)
    with write_lock_scope(bot.services.engine) as session:
        sync_queries.acquire_sync_lease(session=session, agency_id=agency_id, holder="dead-process", now=utcnow(),
                                        expires_at=utcnow() - timedelta(seconds=1))

    summary = run_agency_sync(bot.services, agency_id)

    assert summary.status == "finished"


def test_sync_twice_at_once_runs_once(bot):
    bot.crm.add_bulk_locations(AGENCY_COMPANY_ID, installed=40)
    agency_id = connect_agency(bot.services, bot.crm)
    barrier = threading.Barrier(2)
    summaries = []

    def run() -> None:
        barrier.wait()
        summaries.append(run_agency_sync(bot.services, agency_id))

    threads = [threading.Thread(target=run) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)

    statuses = sorted(summary.status for summary in summaries)
    assert statuses in (["already_running", "finished"], ["finished", "finished"])
    with session_scope(bot.services.engine) as session:
        assert len(queries.list_accounts(session=session)) == 43
        assert queries.count_accounts_by_status(session=session)[CONNECTED] == 42
