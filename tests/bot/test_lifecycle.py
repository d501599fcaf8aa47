"""Connection lifecycle: refresh job, token helper, failure states and window, health check.

Every CRM response comes from the CRM simulator over HTTP, and the database is real.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from datetime import timedelta
from pathlib import Path

import pytest
from freezegun import freeze_time

from bot.crm import CrmError, CrmReason
from bot.lifecycle import Outcome, refresh_due_connections, run_health_check
from storage import lifecycle_queries, queries
from storage.db import session_scope, utcnow
from tests.bot.lifecycle_helpers import (
    account_of, connect_agency, connect_direct, connect_minted, connection_of, events_of, expire_soon,
)
from tests.conftest import AGENT

ROOT = Path(__file__).resolve().parents[2]


def refresh_requests(crm) -> list:
    return [request for request in crm.requests_to("/oauth/token") if request.form.get("grant_type") == "refresh_token"]


def stored_tokens(services, connection_id: int):
    with session_scope(services.engine) as session:
        return services.connections.tokens.tokens_of(queries.get_connection(session=session, connection_id=connection_id))


def invalid_grant_events(services) -> list:
    with session_scope(services.engine) as session:
        accounts = queries.list_accounts(session=session)
        return [event for account in accounts for event in queries.list_events(session=session, account_id=account.id, limit=100)
                if event.reason in ("invalid_grant", "needs_reconnect")]


def owner_dms(bot) -> list[str]:
    return [message.get("text", "") for message in bot.slack.dms_to(AGENT)]


# Refresh under concurrency

def test_refresh_twenty_threads_once(bot):
    services, crm = bot.services, bot.crm
    _, connection_id = connect_direct(services, crm)
    expire_soon(services, connection_id)
    start = threading.Barrier(20)
    outcomes = []

    def work():
        start.wait()
        outcomes.append(services.lifecycle.refresh_connection(connection_id))

    threads = [threading.Thread(target=work) for _ in range(20)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)

    assert len(outcomes) == 20
    assert crm.refresh_successes == 1
    assert len(refresh_requests(crm)) == 1
    assert outcomes.count(Outcome.REFRESHED) == 1
    assert invalid_grant_events(services) == []
    latest = stored_tokens(services, connection_id)
    assert latest.version == 2
    # Only the newest refresh token still works at the CRM.
    services.connections.tokens.refresh(connection_id, seen_version=latest.version)
    assert crm.refresh_successes == 2


def test_refresh_two_processes_once(bot, database_url):
    services, crm = bot.services, bot.crm
    _, connection_id = connect_direct(services, crm)
    expire_soon(services, connection_id)
    start_at = time.time() + 3
    env = {**os.environ, "TOKEN_ENCRYPTION_KEY": bot.settings.token_encryption_key}
    command = [sys.executable, "-m", "tests.bot.refresh_worker", database_url, crm.url, crm.client_id, crm.client_secret,
               str(connection_id), str(start_at)]

    workers = [subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
               for _ in range(2)]
    results = [worker.communicate(timeout=60) for worker in workers]

    for worker, (stdout, stderr) in zip(workers, results):
        assert worker.returncode == 0, stderr
        assert stdout.strip() == "2"
    assert crm.refresh_successes == 1
    assert len(refresh_requests(crm)) == 1
    latest = stored_tokens(services, connection_id)
    services.connections.tokens.refresh(connection_id, seen_version=latest.version)
    assert crm.refresh_successes == 2


# Refresh job

def test_refresh_job_refreshes_expiring(bot):
    services, crm = bot.services, bot.crm
    account_id, expiring = connect_direct(services, crm)
    _, fresh = connect_direct(services, crm, "loc-bolt", "Bolt Plumbing")
    expire_soon(services, expiring)

    summary = refresh_due_connections(services)

    assert summary.outcomes == {Outcome.REFRESHED: 1}
    assert crm.refresh_successes == 1
    assert connection_of(services, expiring).version == 2
    assert connection_of(services, fresh).version == 1
    assert events_of(services, account_id)[0].kind == "refreshed"


def test_refresh_job_mints_without_refresh_token(bot):
    services, crm = bot.services, bot.crm
    crm.mint_refresh_tokens = False
    agency_id, _ = connect_agency(services, crm)
    account_id, connection_id = connect_minted(services, agency_id, "loc-acme", "Acme Dental")
    expire_soon(services, connection_id)
    mints_before = len(crm.requests_to("/oauth/locationToken"))

    summary = refresh_due_connections(services)

    assert summary.outcomes == {Outcome.REFRESHED: 1}
    assert len(crm.requests_to("/oauth/locationToken")) == mints_before + 1
    assert refresh_requests(crm) == []
    assert connection_of(services, connection_id).version == 2
    assert "minted again" in events_of(services, account_id)[0].detail


def test_refresh_job_refreshes_agency(bot):
    services, crm = bot.services, bot.crm
    _, connection_id = connect_agency(services, crm)
    expire_soon(services, connection_id)

    summary = refresh_due_connections(services)

    assert summary.outcomes == {Outcome.REFRESHED: 1}
    assert refresh_requests(crm)[0].form["user_type"] == "Company"


def test_refresh_margin_with_frozen_clock(bot):
    services, crm = bot.services, bot.crm
    _, connection_id = connect_direct(services, crm)
    expires_at = connection_of(services, connection_id).expires_at

    with freeze_time(expires_at - timedelta(minutes=16), tick=True):
        assert refresh_due_connections(services).outcomes == {}
    with freeze_time(expires_at - timedelta(minutes=14), tick=True):
        assert refresh_due_connections(services).outcomes == {Outcome.REFRESHED: 1}

    assert crm.refresh_successes == 1


# Calls with an account's token

def test_call_refreshes_token_within_margin(bot):
    services, crm = bot.services, bot.crm
    _, connection_id = connect_direct(services, crm)
    expires_at = connection_of(services, connection_id).expires_at

    with freeze_time(expires_at - timedelta(minutes=5), tick=True):
        location = services.connections.tokens.call_with_token(connection_id, lambda token: services.crm.get_location(token, "loc-acme"))

    assert location["name"] == "Acme Dental"
    paths = [request.path for request in crm.requests if request.path in ("/oauth/token", "/locations/loc-acme")]
    assert paths[-2:] == ["/oauth/token", "/locations/loc-acme"]


def test_call_retries_once_after_401(bot):
    services, crm = bot.services, bot.crm
    _, connection_id = connect_direct(services, crm)
    crm.expire_access_tokens(location_id="loc-acme")

    location = services.connections.tokens.call_with_token(connection_id, lambda token: services.crm.get_location(token, "loc-acme"))

    assert location["id"] == "loc-acme"
    assert crm.refresh_successes == 1
    assert len(crm.requests_to("/locations/loc-acme")) == 2


def test_call_second_401_raises(bot):
    services, crm = bot.services, bot.crm
    _, connection_id = connect_direct(services, crm)
    crm.fail_next("/locations/loc-acme", status=401, body={"statusCode": 401, "message": "Invalid token: access token is invalid"}, count=2)

    with pytest.raises(CrmError) as error:
        services.connections.tokens.call_with_token(connection_id, lambda token: services.crm.get_location(token, "loc-acme"))

    assert error.value.reason is CrmReason.INVALID_TOKEN
    assert crm.refresh_successes == 1
    assert len(crm.requests_to("/locations/loc-acme")) == 2


# Failure states, each from the CRM's own response

def test_invalid_grant_needs_reconnect(bot):
    services, crm = bot.services, bot.crm
    account_id, connection_id = connect_direct(services, crm)
    crm.revoke_grants(location_id="loc-acme")
    expire_soon(services, connection_id)

    summary = refresh_due_connections(services)

    account = account_of(services, account_id)
    assert summary.outcomes == {Outcome.RED: 1}
    assert account.reason == "needs_reconnect"
    assert "refresh token is invalid" in account.last_error
    assert any("No Active CRM Connection" in text for text in owner_dms(bot))
    # A final response is not retried.
    assert refresh_due_connections(services).outcomes == {}


def test_location_not_active_pauses(bot):
    services, crm = bot.services, bot.crm
    account_id, connection_id = connect_direct(services, crm)
    crm.pause_location("loc-acme")
    expire_soon(services, connection_id)

    summary = refresh_due_connections(services)

    account = account_of(services, account_id)
    assert summary.outcomes == {Outcome.PAUSED: 1}
    assert account.reason == "paused"
    assert connection_of(services, connection_id).refresh_token_encrypted is not None
    with session_scope(services.engine) as session:
        failure = lifecycle_queries.get_failure(session=session, connection_id=connection_id)
    assert failure.next_attempt_at > utcnow() + timedelta(minutes=29)


def test_paused_recovers_after_backoff(bot):
    services, crm = bot.services, bot.crm
    account_id, connection_id = connect_direct(services, crm)
    crm.pause_location("loc-acme")
    expire_soon(services, connection_id)
    refresh_due_connections(services)
    crm.resume_location("loc-acme")

    assert refresh_due_connections(services).outcomes == {}
    with freeze_time(utcnow() + timedelta(minutes=31), tick=True):
        summary = refresh_due_connections(services)

    assert summary.outcomes == {Outcome.RECOVERED: 1}
    assert account_of(services, account_id).status == "connected"
    dms = owner_dms(bot)
    assert sum("is Connected again" in text for text in dms) == 1
    assert sum("now shows" in text for text in dms) == 1


def test_no_location_access_not_owned(bot):
    services, crm = bot.services, bot.crm
    account_id, connection_id = connect_direct(services, crm)
    crm.fail_next("/locations/loc-acme", status=403, body={"statusCode": 403, "message": "The token does not have access to this location."})

    outcome = services.lifecycle.check_connection(connection_id)

    assert outcome is Outcome.RED
    assert account_of(services, account_id).reason == "not_owned"


def test_transient_fault_stays_green(bot):
    services, crm = bot.services, bot.crm
    account_id, connection_id = connect_direct(services, crm)
    expire_soon(services, connection_id)
    crm.fail_next("/oauth/token", status=503, count=3)

    summary = refresh_due_connections(services)

    account = account_of(services, account_id)
    assert summary.outcomes == {Outcome.RETRYING: 1}
    assert account.status == "connected"
    assert events_of(services, account_id)[0].kind == "refresh_failed"
    assert owner_dms(bot) == []


@pytest.mark.parametrize("status", [429, 500, 502])
def test_transient_statuses_are_retried(bot, status):
    services, crm = bot.services, bot.crm
    _, connection_id = connect_direct(services, crm)
    crm.fail_next("/locations/loc-acme", status=status, headers={"Retry-After": "0"}, count=3)

    assert services.lifecycle.check_connection(connection_id) is Outcome.RETRYING


def test_transient_fault_red_after_window(bot):
    services, crm = bot.services, bot.crm
    account_id, connection_id = connect_direct(services, crm)
    expire_soon(services, connection_id)
    start = utcnow()

    crm.fail_next("/oauth/token", status=500, count=3)
    assert refresh_due_connections(services).outcomes == {Outcome.RETRYING: 1}
    with freeze_time(start + timedelta(hours=23), tick=True):
        crm.fail_next("/oauth/token", status=500, count=3)
        assert refresh_due_connections(services).outcomes == {Outcome.RETRYING: 1}
        assert account_of(services, account_id).status == "connected"
    with freeze_time(start + timedelta(hours=24, minutes=30), tick=True):
        crm.fail_next("/oauth/token", status=500, count=3)
        assert refresh_due_connections(services).outcomes == {Outcome.RED: 1}

    account = account_of(services, account_id)
    assert account.reason == "needs_reconnect"
    assert "failed for more than 24 h" in account.last_error
    assert sum("now shows" in text for text in owner_dms(bot)) == 1
    with session_scope(services.engine) as session:
        assert lifecycle_queries.get_failure(session=session, connection_id=connection_id).attempts == 3


class TestShortWindow:
    @pytest.fixture
    def settings_overrides(self):
        return {"transient_failure_window_hours": 1.0}

    def test_window_setting_applies(self, bot):
        services, crm = bot.services, bot.crm
        account_id, connection_id = connect_direct(services, crm)
        crm.fail_next("/locations/loc-acme", status=500, count=6)
        start = utcnow()

        assert services.lifecycle.check_connection(connection_id) is Outcome.RETRYING
        with freeze_time(start + timedelta(hours=1, minutes=1), tick=True):
            assert services.lifecycle.check_connection(connection_id) is Outcome.RED

        assert "failed for more than 1 h" in account_of(services, account_id).last_error


# Health check

def test_health_check_finds_revoked_token(bot):
    services, crm = bot.services, bot.crm
    acme_id, _ = connect_direct(services, crm)
    bolt_id, _ = connect_direct(services, crm, "loc-bolt", "Bolt Plumbing")
    crm.revoke_grants(location_id="loc-bolt")

    summary = run_health_check(services)

    assert summary.outcomes == {Outcome.OK: 1, Outcome.RED: 1}
    assert account_of(services, acme_id).status == "connected"
    assert account_of(services, bolt_id).reason == "needs_reconnect"


def test_health_check_skips_red_accounts(bot):
    services, crm = bot.services, bot.crm
    account_id, _ = connect_direct(services, crm)
    crm.revoke_grants(location_id="loc-acme")
    run_health_check(services)
    requests_before = len(crm.requests)

    summary = run_health_check(services)

    assert summary.outcomes == {}
    assert len(crm.requests) == requests_before
    assert account_of(services, account_id).reason == "needs_reconnect"


def test_health_check_waits_out_429(bot):
    services, crm = bot.services, bot.crm
    account_id, _ = connect_direct(services, crm)
    crm.fail_next("/locations/loc-acme", status=429, body={"statusCode": 429, "message": "Too many requests"},
                  headers={"Retry-After": "0"})

    summary = run_health_check(services)

    assert summary.outcomes == {Outcome.OK: 1}
    assert len(crm.requests_to("/locations/loc-acme")) == 2
    assert account_of(services, account_id).status == "connected"
