"""Connection lifecycle: proactive refresh, daily health check, failure states and their window.

How a CRM response moves a connection (and its account or agency):

    success                    green again; a failing streak ends
    invalid_grant, revoked     red, needs_reconnect (final; no retries)
    403 no access              red, not_owned (final)
    not installed              red, not_installed (final)
    Location is not active     red, paused; tokens kept, retried with backoff
    timeout, 5xx, 429, other   counted and retried with backoff; red (needs_reconnect)
                               only after failing for longer than
                               TRANSIENT_FAILURE_WINDOW_HOURS

Each status change runs in a transaction that locks the account's row, so
with several processes one of them makes the change, writes its event and
sends the owner's DM.

The clock process calls `refresh_due_connections` and `run_health_check`.
"""

from __future__ import annotations

import enum
import logging
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import timedelta
from typing import TYPE_CHECKING

from bot.accounts import mark_connected, mark_red, set_agency_status
from bot.crm import CrmError, CrmReason
from bot.settings import Settings
from bot.tokens import REFRESH_MARGIN, TokenStore
from storage import lifecycle_queries, queries
from storage.db import session_scope, utcnow, write_lock_scope
from storage.lifecycle_models import OPERATION_CHECK, OPERATION_REFRESH, ConnectionFailure
from storage.models import CONNECTED, NEEDS_RECONNECT, NOT_INSTALLED, NOT_OWNED, PAUSED, Account, Connection

if TYPE_CHECKING:
    from bot.connections import ConnectionService
    from bot.services import Services

logger = logging.getLogger(__name__)

HEALTH_CHECK_WORKERS = 4
WEBHOOK_DELIVERY_RETENTION = timedelta(days=7)

# CRM responses that settle a connection's state: no retry can change them.
FINAL_REASONS = {
    CrmReason.INVALID_GRANT: NEEDS_RECONNECT,
    CrmReason.INVALID_TOKEN: NEEDS_RECONNECT,
    CrmReason.SCOPE: NEEDS_RECONNECT,
    CrmReason.NO_LOCATION_ACCESS: NOT_OWNED,
    CrmReason.NOT_INSTALLED: NOT_INSTALLED,
}


@dataclass(frozen=True)
class Backoff:
    """Delay before retry number `attempts + 1`: `base` doubled per attempt, at most `cap`."""

    base: timedelta
    cap: timedelta

    def delay(self, attempts: int) -> timedelta:
        return min(self.cap, self.base * 2 ** max(0, attempts - 1))


TRANSIENT_BACKOFF = Backoff(base=timedelta(minutes=5), cap=timedelta(hours=1))
PAUSED_BACKOFF = Backoff(base=timedelta(minutes=30), cap=timedelta(hours=12))


class Outcome(enum.StrEnum):
    OK = "ok"                  # the connection works; nothing changed
    REFRESHED = "refreshed"    # new tokens were stored
    RECOVERED = "recovered"    # a red account or agency turned green
    RETRYING = "retrying"      # a transient fault was counted; retried later
    PAUSED = "paused"          # the CRM reports the location as not active
    RED = "red"                # a final response, or a fault that outlasted the window
    GONE = "gone"              # the connection was deleted meanwhile
    ERROR = "error"            # a bug or a database fault; logged


@dataclass
class JobSummary:
    """Counts of the outcomes of one job run, by `Outcome` value."""

    job: str
    outcomes: Counter = field(default_factory=Counter)

    @property
    def total(self) -> int:
        return sum(self.outcomes.values())

    def __str__(self) -> str:
        counts = ", ".join(f"{count} {name}" for name, count in sorted(self.outcomes.items())) or "nothing to do"
        return f"{self.job}: {counts}"


def refresh_due_connections(services: Services) -> JobSummary:
    """Refresh every connection whose access token expires within 15 minutes, and retry failing ones.

    A job function for the clock process. Safe to run in several processes at
    once: each refresh re-checks expiry under the connection's row lock.
    """
    return services.lifecycle.refresh_due()


def run_health_check(services: Services) -> JobSummary:
    """Verify each green account's location token with GET /locations/{id}, a few in parallel.

    A job function for the clock process, meant to run daily, so that a
    revoked token is found before the account's automations need it.
    """
    return services.lifecycle.check_health()


class Lifecycle:
    def __init__(self, *, settings: Settings, tokens: TokenStore, connections: ConnectionService) -> None:
        self.settings = settings
        self.tokens = tokens
        self.engine = tokens.engine
        self.crm = tokens.crm
        self.connections = connections

    @property
    def failure_window(self) -> timedelta:
        return timedelta(hours=self.settings.transient_failure_window_hours)

    # Jobs

    def refresh_due(self) -> JobSummary:
        now = utcnow()
        with session_scope(self.engine) as session:
            connection_ids = lifecycle_queries.list_due_connection_ids(session=session, expiring_before=now + REFRESH_MARGIN, now=now)

        summary = JobSummary("refresh")
        for connection_id in connection_ids:
            summary.outcomes[self._safely(self.refresh_connection, connection_id)] += 1
        logger.info("Refresh job done: %s", summary)
        return summary

    def check_health(self, *, workers: int = HEALTH_CHECK_WORKERS) -> JobSummary:
        with session_scope(self.engine) as session:
            connection_ids = [connection.id for connection, _ in lifecycle_queries.list_green_location_connections(session=session)]
            lifecycle_queries.delete_old_deliveries(session=session, before=utcnow() - WEBHOOK_DELIVERY_RETENTION)

        # The CRM client waits for a free slot of each location's and
        # company's rate limit, so the pool only bounds the open requests.
        summary = JobSummary("health check")
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="health-check") as pool:
            for outcome in pool.map(lambda connection_id: self._safely(self.check_connection, connection_id), connection_ids):
                summary.outcomes[outcome] += 1
        logger.info("Health check done: %s", summary)
        return summary

    def _safely(self, work, connection_id: int) -> Outcome:
        try:
            return work(connection_id)
        except Exception:
            logger.exception("Lifecycle work on connection %s failed", connection_id)
            return Outcome.ERROR

    # One connection

    def refresh_connection(self, connection_id: int) -> Outcome:
        """Renew a connection's tokens when they are due; a failing connection is retried the way it failed."""
        with session_scope(self.engine) as session:
            connection = queries.get_connection(session=session, connection_id=connection_id)
            if connection is None:
                return Outcome.GONE
            failure = lifecycle_queries.get_failure(session=session, connection_id=connection_id)

        if failure is not None and failure.operation == OPERATION_CHECK:
            return self.check_connection(connection_id)

        try:
            tokens = self.tokens.renew(connection_id)
        except LookupError:
            return Outcome.GONE
        except CrmError as error:
            return self.record_failure(connection_id, error, operation=OPERATION_REFRESH)
        return self.record_success(connection_id, refreshed=tokens.renewed)

    def check_connection(self, connection_id: int) -> Outcome:
        """Fetch the connection's location with its own token; a 401 renews the token once."""
        with session_scope(self.engine) as session:
            connection = queries.get_connection(session=session, connection_id=connection_id)
            if connection is None or connection.location_id is None:
                return Outcome.GONE
            location_id = connection.location_id

        try:
            self.tokens.call_with_token(connection_id, lambda access_token: self.crm.get_location(access_token, location_id))
        except LookupError:
            return Outcome.GONE
        except CrmError as error:
            return self.record_failure(connection_id, error, operation=OPERATION_CHECK)

        # NOTE: a renewal inside the check is not written to the history as "refreshed".
        return self.record_success(connection_id, refreshed=False)

    # Outcomes

    def record_success(self, connection_id: int, *, refreshed: bool, actor_user_id: str | None = None, detail: str | None = None) -> Outcome:
        """End a failing streak, turn a red account or agency green, and note a refresh in the history."""
        with write_lock_scope(self.engine) as session:
            connection = queries.get_connection(session=session, connection_id=connection_id)
            if connection is None:
                return Outcome.GONE
            lifecycle_queries.delete_failure(session=session, connection_id=connection_id)
            account, change = None, None

            if connection.account_id is not None:
                account = lifecycle_queries.lock_account(session=session, account_id=connection.account_id)
                if account.status != CONNECTED:
                    change = mark_connected(session, account, method=connection.method, actor_user_id=actor_user_id,
                                            detail=detail or "The connection works again")
                elif refreshed:
                    queries.add_event(session=session, kind="refreshed", account_id=account.id, actor_user_id=actor_user_id,
                                      detail=detail or _refresh_detail(connection))
            else:
                agency = lifecycle_queries.lock_agency(session=session, agency_id=connection.agency_id)
                if agency.status != CONNECTED:
                    set_agency_status(session, agency, connected=True)
                    change = True
                elif refreshed:
                    queries.add_event(session=session, kind="refreshed", agency_id=agency.id, actor_user_id=actor_user_id,
                                      detail=detail or "Agency tokens refreshed")

        if account is not None and change is not None:
            self.connections.notify_change(account, change.turned_green, False)
        if change is not None:
            logger.info("Connection %s recovered", connection_id)
            return Outcome.RECOVERED
        return Outcome.REFRESHED if refreshed else Outcome.OK

    def record_failure(self, connection_id: int, error: CrmError, *, operation: str, actor_user_id: str | None = None) -> Outcome:
        """Classify a failed refresh or check, and change the state of the account or agency accordingly."""
        logger.warning("%s of connection %s failed: %s (%s)", operation.capitalize(), connection_id, error.reason, error.crm_message)
        now = utcnow()
        change = None

        with write_lock_scope(self.engine) as session:
            connection = queries.get_connection(session=session, connection_id=connection_id)
            if connection is None:
                return Outcome.GONE
            account = lifecycle_queries.lock_account(session=session, account_id=connection.account_id) if connection.account_id else None
            agency = None if account else lifecycle_queries.lock_agency(session=session, agency_id=connection.agency_id)

            final_reason = FINAL_REASONS.get(error.reason)
            if final_reason is not None:
                lifecycle_queries.delete_failure(session=session, connection_id=connection_id)
                change = self._turn_red(session, account, agency, final_reason, error.crm_message, actor_user_id)
                outcome = Outcome.RED

            elif error.reason is CrmReason.LOCATION_NOT_ACTIVE:
                self._count_failure(session, connection, error, operation, now, PAUSED_BACKOFF)
                change = self._turn_red(session, account, agency, PAUSED, error.crm_message, actor_user_id)
                outcome = Outcome.PAUSED

            else:
                if not error.is_transient:
                    logger.error("Unexpected CRM answer for connection %s, counted like a transient fault: %s", connection_id, error)
                failure = self._count_failure(session, connection, error, operation, now, TRANSIENT_BACKOFF)
                outcome = Outcome.RETRYING
                if failure.attempts == 1:
                    self._note_failure(session, account, agency, error, operation, actor_user_id)
                if now - failure.first_failed_at > self.failure_window:
                    hours = f"{self.settings.transient_failure_window_hours:g}"
                    message = f"The CRM has failed for more than {hours} h: {error.crm_message}"
                    change = self._turn_red(session, account, agency, NEEDS_RECONNECT, message, actor_user_id)
                    outcome = Outcome.RED

        if account is not None and change is not None:
            self.connections.notify_change(account, False, change.turned_red)
        return outcome

    def _count_failure(self, session, connection: Connection, error: CrmError, operation: str, now, backoff: Backoff) -> ConnectionFailure:
        failure = lifecycle_queries.get_failure(session=session, connection_id=connection.id)
        if failure is None or failure.reason != error.reason.value:
            # A new kind of fault starts a new streak, and with it a new window.
            failure = failure or ConnectionFailure(connection_id=connection.id)
            failure.reason = error.reason.value
            failure.attempts = 1
            failure.first_failed_at = now
        else:
            failure.attempts += 1

        failure.operation = operation
        failure.last_error = error.crm_message
        failure.last_failed_at = now
        failure.next_attempt_at = now + backoff.delay(failure.attempts)
        lifecycle_queries.save_failure(session=session, failure=failure)
        return failure

    def _turn_red(self, session, account: Account | None, agency, reason: str, message: str, actor_user_id: str | None):
        """Mark the account, or the agency, red. Return the account's StatusChange (None for an agency)."""
        if account is not None:
            return mark_red(session, account, reason=reason, error=message, actor_user_id=actor_user_id)
        if agency is not None and (agency.status == CONNECTED or agency.reason != reason):
            set_agency_status(session, agency, connected=False, reason=reason)
            logger.info("Agency %s shows No Active CRM Connection (%s)", agency.id, reason)
        return None

    def _note_failure(self, session, account: Account | None, agency, error: CrmError, operation: str, actor_user_id: str | None) -> None:
        kind = "refresh_failed" if operation == OPERATION_REFRESH else "check_failed"
        if account is not None:
            account.last_error = error.crm_message
            session.add(account)
        queries.add_event(session=session, kind=kind, account_id=account.id if account else None,
                          agency_id=agency.id if agency else None, reason=error.reason.value,
                          detail=f"{error.crm_message} (retried with backoff)", actor_user_id=actor_user_id)


def _refresh_detail(connection: Connection) -> str:
    if connection.refresh_token_encrypted is None:
        return "Location token minted again through the agency"
    return "Tokens refreshed"
