"""Connect Accounts: sync an agency's sub-accounts and connect each installed one through the agency.

One run of `run_agency_sync`:

1. takes the agency's lease, so two syncs of one agency never run at once;
2. lists the agency's sub-accounts (/locations/search) and the ones where the
   app is installed (/oauth/installedLocations), page by page;
3. creates or updates an account record for each sub-account;
4. mints a location token for each installed one and turns it green (method
   "agency"), and marks the others red with a reason;
5. marks the accounts that left the agency since the last sync as not owned.

A transient CRM fault never turns an account red. The account waits for a
later pass of the same run, and when the run ends with such accounts, or is
interrupted, the next run resumes: it skips the accounts that the unfinished
run already connected. Repeating a run is harmless, because records are
matched by location id and every write is an upsert.
"""

from __future__ import annotations

import enum
import logging
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from bot import sync_render
from bot.accounts import mark_connected, mark_red, record_failure, set_agency_status
from bot.crm import CrmError, CrmReason
from bot.errors import ConfigError
from bot.slack_gateway import SlackGateway
from bot.tokens import Tokens
from storage import queries, sync_queries
from storage.db import session_scope, utcnow, write_lock_scope
from storage.models import CONNECTED, METHOD_AGENCY, METHOD_DIRECT, NEEDS_RECONNECT, NOT_INSTALLED, NOT_OWNED, PAUSED, Account, Agency
from storage.sync_models import RUN_FAILED, RUN_FINISHED, RUN_INTERRUPTED, RUN_PARTIAL, RUN_RUNNING, RUN_STOPPED

if TYPE_CHECKING:
    from bot.connections import ConnectionService
    from bot.services import Services

logger = logging.getLogger(__name__)

# NOTE: the CRM documents a default page size of 10 for /locations/search but no maximum; 100 is assumed to be accepted.
PAGE_SIZE = 100
MAX_PAGES = 1_000
UPSERT_BATCH = 100
LEASE_SECONDS = 120
HEARTBEAT_SECONDS = 2.0
HEARTBEAT_ACCOUNTS = 25
LIST_ATTEMPTS = 4
RETRY_PASSES = 3
RETRY_WAIT_SECONDS = 2.0
MISSED_EVENT_DAYS = 7


class Outcome(enum.StrEnum):
    """The result of a run for one sub-account. Each value is also the name of a SyncSummary count."""

    CONNECTED = "connected"
    ALREADY_DIRECT = "already_direct"
    NOT_INSTALLED = "not_installed"
    NOT_OWNED = "not_owned"
    PAUSED = "paused"
    FAILED = "failed"
    DEFERRED = "deferred"


@dataclass(frozen=True)
class SyncSummary:
    """The result of one run, with counts of sub-accounts by outcome.

    `status` is "finished", "partial" (some accounts deferred), "interrupted",
    "stopped" (the agency was disconnected), "failed" or "already_running".
    `total` counts the sub-accounts that the CRM lists for the agency, and the
    outcome counts add up to it. `left_agency` counts the agency's accounts that
    the CRM no longer lists, which `total` leaves out.
    """

    agency_id: int
    agency_name: str
    status: str
    total: int = 0
    processed: int = 0
    connected: int = 0
    already_direct: int = 0
    not_installed: int = 0
    not_owned: int = 0
    paused: int = 0
    failed: int = 0
    deferred: int = 0
    left_agency: int = 0
    created: int = 0
    error: str | None = None
    seconds: float = 0.0

    @property
    def red(self) -> int:
        return self.not_installed + self.not_owned + self.paused + self.failed + self.left_agency

    @property
    def text(self) -> str:
        return sync_render.summary_text(self)


@dataclass(frozen=True)
class SyncProgress:
    """One progress report of a run. `summary` is set on the last report only."""

    agency_name: str
    processed: int
    total: int
    summary: SyncSummary | None = None


ProgressCallback = Callable[[SyncProgress], None]


class SlackProgress:
    """Show a run's progress in one DM to the requester, edited in place, and end with the summary.

    Slack accepts about one chat.update per second per channel, so progress
    edits come at most every `min_interval` seconds. The summary is always sent.
    """

    def __init__(self, slack: SlackGateway, user_id: str, *, min_interval: float = 1.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.slack = slack
        self.user_id = user_id
        self.min_interval = min_interval
        self._clock = clock
        self._message: tuple[str, str] | None = None
        self._last_sent = float("-inf")

    def __call__(self, report: SyncProgress) -> None:
        if report.summary is not None:
            text = report.summary.text
        else:
            text = sync_render.progress_text(report.agency_name, report.processed, report.total)
        now = self._clock()
        if report.summary is None and now - self._last_sent < self.min_interval:
            return

        self._last_sent = now
        if self._message is None:
            self._message = self.slack.post_dm(self.user_id, text=text)
        elif not self.slack.update_message(*self._message, text=text) and report.summary is not None:
            self.slack.send_dm(self.user_id, text=text)


class AgencyGone(Exception):
    """The agency was disconnected, or another run took the lease, while this run worked."""


class RunFailed(Exception):
    """The CRM rejected the agency's token or the app's setup; no account is touched further."""


@dataclass
class _Target:
    """One sub-account of a run, with the state of its record when the run read it."""

    location_id: str
    name: str
    company_id: str
    installed: bool
    account_id: int = 0
    status: str = ""
    method: str | None = None
    token_written_at: datetime | None = None


@dataclass
class _Run:
    agency: Agency
    holder: str
    run_id: int
    tokens: Tokens
    progress: ProgressCallback | None
    started: float
    resume_after: datetime | None = None
    total: int = 0
    processed: int = 0
    created: int = 0
    left_agency: int = 0
    counts: dict[Outcome, int] = field(default_factory=lambda: {outcome: 0 for outcome in Outcome})
    last_heartbeat: float = 0.0
    since_heartbeat: int = 0


class AgencySync:
    """Connect Accounts for one agency at a time. Built from the connection service that owns the tokens."""

    def __init__(
        self,
        connections: ConnectionService,
        *,
        retry_wait: float = RETRY_WAIT_SECONDS,
        lease_seconds: int = LEASE_SECONDS,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.connections = connections
        self.settings = connections.settings
        self.engine = connections.engine
        self.crm = connections.crm
        self.tokens = connections.tokens
        self.retry_wait = retry_wait
        self.lease_seconds = lease_seconds
        self._sleep = sleep

    # The run

    def run(self, agency_id: int, *, requester_user_id: str | None = None, progress: ProgressCallback | None = None) -> SyncSummary:
        """Sync one agency and return the summary, which also goes to `progress` as the last report."""
        started = time.monotonic()
        with session_scope(self.engine) as session:
            agency = queries.get_agency(session=session, agency_id=agency_id)
        if agency is None:
            raise LookupError(f"Agency {agency_id} does not exist")

        holder = uuid.uuid4().hex
        if not self._take_lease(agency.id, holder):
            logger.info("A sync of agency %s is already running; not starting another", agency.id)
            return self._report_end(progress, SyncSummary(agency.id, agency.name, "already_running"))

        try:
            with write_lock_scope(self.engine) as session:
                run_row = sync_queries.create_sync_run(session=session, agency_id=agency.id, requester_user_id=requester_user_id,
                                                       started_at=utcnow())
                resume_after = self._resume_point(session, agency.id, run_row.id)
                sync_queries.renew_sync_lease(session=session, agency_id=agency.id, holder=holder,
                                              expires_at=self._lease_expiry(), run_id=run_row.id)
            logger.info("Sync %s of agency %s started (resuming after %s)", run_row.id, agency.id, resume_after)
            summary = self._run_guarded(agency, holder, run_row.id, resume_after, progress, started)
        finally:
            with write_lock_scope(self.engine) as session:
                sync_queries.release_sync_lease(session=session, agency_id=agency.id, holder=holder)

        return self._report_end(progress, summary)

    def _run_guarded(self, agency: Agency, holder: str, run_id: int, resume_after: datetime | None,
                     progress: ProgressCallback | None, started: float) -> SyncSummary:
        run: _Run | None = None
        try:
            tokens = self._agency_tokens(agency)
            run = _Run(agency=agency, holder=holder, run_id=run_id, tokens=tokens, progress=progress,
                       started=started, resume_after=resume_after, last_heartbeat=time.monotonic())
            self._sync(run)
        except AgencyGone as stop:
            logger.warning("Sync %s of agency %s stopped: %s", run_id, agency.id, stop)
            return self._finish(agency, run_id, run, RUN_STOPPED, str(stop), started)
        except (ConfigError, RunFailed) as error:
            logger.error("Sync %s of agency %s failed: %s", run_id, agency.id, error)
            return self._finish(agency, run_id, run, RUN_FAILED, str(error), started)
        except CrmError as error:
            # Listing failed. No account was marked red for it, and the next run starts the listing again.
            if not error.is_transient:
                logger.error("Sync %s of agency %s failed: %s", run_id, agency.id, error)
                return self._finish(agency, run_id, run, RUN_FAILED,
                                    f"the CRM rejected listing the sub-accounts ({error.crm_message})", started)
            logger.warning("Sync %s of agency %s interrupted: %s", run_id, agency.id, error)
            return self._finish(agency, run_id, run, RUN_INTERRUPTED, "the CRM did not answer while listing the sub-accounts", started)
        except Exception:
            logger.exception("Sync %s of agency %s failed", run_id, agency.id)
            return self._finish(agency, run_id, run, RUN_INTERRUPTED, "an unexpected error, which the bot logged", started)

        status = RUN_PARTIAL if run.counts[Outcome.DEFERRED] else RUN_FINISHED
        return self._finish(agency, run_id, run, status, None, started)

    def _sync(self, run: _Run) -> None:
        agency = run.agency
        app_id = self.settings.app_id
        if not app_id:
            raise ConfigError("CRM_APP_ID is not set, so the bot cannot list the sub-accounts where the app is installed. "
                              "Set it to the app's id from the CRM marketplace, for example CRM_APP_ID=64f0c0ffee1234567890abcd")

        # List
        rows = self._list_sub_accounts(run)
        installed = self._list_installed(run, app_id)
        targets = self._targets(agency, rows, installed)
        run.total = len(targets)
        logger.info("Agency %s lists %s sub-accounts, %s with the app installed", agency.id, len(targets), len(installed))

        # Records
        self._upsert_records(run, targets)
        self._report(run)

        # Tokens
        deferred = [target for target in targets if self._sync_target(run, target) is Outcome.DEFERRED]
        for attempt in range(1, RETRY_PASSES + 1):
            if not deferred:
                break
            wait = self.retry_wait * 2 ** (attempt - 1)
            logger.warning("Agency %s: minting failed transiently for %s accounts; retrying them in %.1f s", agency.id, len(deferred), wait)
            self._sleep(wait)
            deferred = [target for target in deferred if self._sync_target(run, target) is Outcome.DEFERRED]

        run.counts[Outcome.DEFERRED] = len(deferred)
        run.processed = run.total

        # Accounts that left
        listed = {target.location_id for target in targets}
        self._mark_left_accounts(run, listed)

    # Lease and run rows

    def _lease_expiry(self) -> datetime:
        return utcnow() + timedelta(seconds=self.lease_seconds)

    def _take_lease(self, agency_id: int, holder: str) -> bool:
        with write_lock_scope(self.engine) as session:
            return sync_queries.acquire_sync_lease(session=session, agency_id=agency_id, holder=holder, now=utcnow(),
                                                   expires_at=self._lease_expiry())

    def _resume_point(self, session, agency_id: int, run_id: int) -> datetime | None:
        """Return when the previous run started, when that run left work undone; else None."""
        previous = sync_queries.get_last_sync_run(session=session, agency_id=agency_id, before_run_id=run_id)
        if previous is None:
            return None
        if previous.status == RUN_RUNNING:
            # This run holds the lease now, so a run still marked running died with its process.
            previous.status = RUN_INTERRUPTED
            previous.finished_at = utcnow()
            session.add(previous)
        if previous.status in (RUN_PARTIAL, RUN_INTERRUPTED):
            return previous.started_at
        return None

    def _heartbeat(self, run: _Run, *, force: bool = False) -> None:
        """Renew the lease, store the progress, and stop when the agency was disconnected meanwhile."""
        run.since_heartbeat += 1
        due = time.monotonic() - run.last_heartbeat >= HEARTBEAT_SECONDS or run.since_heartbeat >= HEARTBEAT_ACCOUNTS
        if not (force or due):
            return
        run.last_heartbeat = time.monotonic()
        run.since_heartbeat = 0

        with write_lock_scope(self.engine) as session:
            if not sync_queries.renew_sync_lease(session=session, agency_id=run.agency.id, holder=run.holder,
                                                 expires_at=self._lease_expiry()):
                raise AgencyGone("another sync of this agency took over")
            agency = queries.get_agency(session=session, agency_id=run.agency.id)
            connection = queries.get_connection_for_agency(session=session, agency_id=run.agency.id)
            if agency is None or agency.status != CONNECTED or connection is None:
                raise AgencyGone("the agency was disconnected")
            self._store_counts(session, run)

    def _store_counts(self, session, run: _Run) -> None:
        row = sync_queries.get_sync_run(session=session, run_id=run.run_id)
        row.total = run.total
        row.processed = run.processed
        for outcome in Outcome:
            setattr(row, outcome.value, run.counts[outcome])
        session.add(row)

    def _finish(self, agency: Agency, run_id: int, run: _Run | None, status: str, error: str | None, started: float) -> SyncSummary:
        seconds = time.monotonic() - started
        with write_lock_scope(self.engine) as session:
            row = sync_queries.get_sync_run(session=session, run_id=run_id)
            if run is not None:
                self._store_counts(session, run)
            row.status = status
            row.error = error
            row.finished_at = utcnow()
            session.add(row)
            if status in (RUN_FINISHED, RUN_PARTIAL):
                fresh = queries.get_agency(session=session, agency_id=agency.id)
                fresh.last_sync_at = row.finished_at
                session.add(fresh)

        counts = run.counts if run is not None else {outcome: 0 for outcome in Outcome}
        summary = SyncSummary(
            agency_id=agency.id,
            agency_name=agency.name,
            status=status,
            total=run.total if run else 0,
            processed=run.processed if run else 0,
            error=error,
            created=run.created if run else 0,
            left_agency=run.left_agency if run else 0,
            seconds=seconds,
            **{outcome.value: counts[outcome] for outcome in Outcome},
        )
        logger.info("Sync %s of agency %s ended after %.1f s with status %s: %s accounts listed, %s connected, "
                    "%s deferred, %s left the agency", run_id, agency.id, seconds, status, summary.total, summary.connected,
                    summary.deferred, summary.left_agency)
        return summary

    def _report(self, run: _Run) -> None:
        if run.progress is None:
            return
        try:
            run.progress(SyncProgress(run.agency.name, run.processed, run.total))
        except Exception:
            logger.exception("Progress report of the sync of agency %s failed", run.agency.id)

    def _report_end(self, progress: ProgressCallback | None, summary: SyncSummary) -> SyncSummary:
        if progress is not None:
            try:
                progress(SyncProgress(summary.agency_name, summary.processed, summary.total, summary))
            except Exception:
                logger.exception("Final report of the sync of agency %s failed", summary.agency_id)
        return summary

    # Agency token

    def _agency_tokens(self, agency: Agency) -> Tokens:
        """Return the agency's Company tokens, refreshed when they expire soon."""
        with session_scope(self.engine) as session:
            fresh = queries.get_agency(session=session, agency_id=agency.id)
            connection = queries.get_connection_for_agency(session=session, agency_id=agency.id)
            if fresh is None or fresh.status != CONNECTED or connection is None:
                raise AgencyGone("the agency is not connected")
            connection_id = connection.id
        return self._refresh_agency(agency, connection_id, seen_version=None)

    def _refresh_agency(self, agency: Agency, connection_id: int, *, seen_version: int | None) -> Tokens:
        try:
            tokens = self.tokens.refresh(connection_id, seen_version=seen_version)
        except LookupError as error:
            raise AgencyGone("the agency was disconnected") from error
        except CrmError as error:
            if error.is_transient:
                raise
            with write_lock_scope(self.engine) as session:
                fresh = queries.get_agency(session=session, agency_id=agency.id)
                set_agency_status(session, fresh, connected=False, reason=NEEDS_RECONNECT)
            raise AgencyGone(f"the CRM rejected the agency's tokens ({error.crm_message})") from error

        if tokens.user_type != "Company":
            raise RunFailed("The agency's stored connection does not hold a Company token. Connect the agency again with `/crm-connect agency`.")
        return tokens

    def _call_agency(self, run: _Run, call: Callable[[str], object]):
        """Run a Company-endpoint call with the agency token: renew the token once on 401, retry transient faults."""
        renewed = False
        for attempt in range(1, LIST_ATTEMPTS + 1):
            try:
                return call(run.tokens.access_token)
            except CrmError as error:
                if error.reason is CrmReason.INVALID_TOKEN and not renewed:
                    renewed = True
                    run.tokens = self._refresh_agency(run.agency, run.tokens.connection_id, seen_version=run.tokens.version)
                    continue
                if not error.is_transient or attempt == LIST_ATTEMPTS:
                    raise
                wait = self.retry_wait * 2 ** (attempt - 1)
                logger.warning("Agency %s: listing failed (%s); retrying in %.1f s", run.agency.id, error.crm_message, wait)
                self._sleep(wait)
        raise AssertionError("unreachable")

    # Listing

    def _list_sub_accounts(self, run: _Run) -> dict[str, dict]:
        """List the agency's sub-accounts by id. A location repeated on two pages is kept once."""
        company_id = run.agency.company_id
        rows: dict[str, dict] = {}
        for page_number in range(MAX_PAGES):
            skip = page_number * PAGE_SIZE
            page = self._call_agency(run, lambda token: self.crm.search_locations(token, company_id=company_id, skip=skip, limit=PAGE_SIZE))
            for row in page:
                location_id = str(row.get("id") or row.get("_id") or "")
                if location_id and location_id not in rows:
                    rows[location_id] = row
            if len(page) < PAGE_SIZE:
                return rows
        logger.warning("Agency %s lists more than %s sub-accounts; the sync covers the first pages only", run.agency.id, MAX_PAGES * PAGE_SIZE)
        return rows

    def _list_installed(self, run: _Run, app_id: str) -> dict[str, dict]:
        """List the sub-accounts where the app is installed, by id (the CRM names the field `_id`)."""
        company_id = run.agency.company_id
        rows: dict[str, dict] = {}
        for page_number in range(MAX_PAGES):
            skip = page_number * PAGE_SIZE
            try:
                page, count = self._call_agency(run, lambda token: self.crm.installed_locations(
                    token, company_id=company_id, app_id=app_id, skip=skip, limit=PAGE_SIZE))
            except CrmError as error:
                if error.status == 422 or error.reason is CrmReason.APP_ID:
                    raise ConfigError(
                        f"The CRM rejected the app id {app_id!r} when listing installed sub-accounts ({error.crm_message}). "
                        f"Set CRM_APP_ID to the app's id from the CRM marketplace, for example CRM_APP_ID=64f0c0ffee1234567890abcd"
                    ) from error
                raise
            for row in page:
                location_id = str(row.get("_id") or row.get("id") or "")
                if location_id and row.get("isInstalled", True) and location_id not in rows:
                    rows[location_id] = row
            if len(page) < PAGE_SIZE or skip + len(page) >= count:
                return rows
        return rows

    def _targets(self, agency: Agency, rows: dict[str, dict], installed: dict[str, dict]) -> list[_Target]:
        targets = []
        for location_id, row in rows.items():
            targets.append(_Target(location_id=location_id, name=str(row.get("name") or location_id),
                                   company_id=str(row.get("companyId") or agency.company_id),
                                   installed=location_id in installed))
        # installedLocations is scoped to the agency, so a location only it lists still belongs to the agency.
        for location_id, row in installed.items():
            if location_id not in rows:
                targets.append(_Target(location_id=location_id, name=str(row.get("name") or location_id),
                                       company_id=agency.company_id, installed=True))
        return targets

    # Records

    def _upsert_records(self, run: _Run, targets: list[_Target]) -> None:
        for start in range(0, len(targets), UPSERT_BATCH):
            with write_lock_scope(self.engine) as session:
                for target in targets[start:start + UPSERT_BATCH]:
                    self._upsert_one(session, run, target)
            self._heartbeat(run, force=True)

    def _upsert_one(self, session, run: _Run, target: _Target) -> None:
        owner = run.agency if target.company_id == run.agency.company_id else (
            queries.get_agency_by_company_id(session=session, company_id=target.company_id))
        account, created = sync_queries.upsert_synced_account(
            session=session, location_id=target.location_id, name=target.name,
            agency_id=owner.id if owner else None, company_id=target.company_id)
        if created:
            run.created += 1
            queries.add_event(session=session, kind="created", account_id=account.id,
                              detail=f"Listed among the sub-accounts of the agency {run.agency.name}")

        target.account_id = account.id
        target.status = account.status
        target.method = account.method
        if account.status == CONNECTED and account.method == METHOD_AGENCY:
            connection = queries.get_connection_for_account(session=session, account_id=account.id)
            target.token_written_at = connection.updated_at if connection else None

    # One account

    def _sync_target(self, run: _Run, target: _Target) -> Outcome:
        outcome = self._decide(run, target)
        if outcome is not Outcome.DEFERRED:
            run.counts[outcome] += 1
            run.processed += 1
        self._heartbeat(run)
        self._report(run)
        return outcome

    def _decide(self, run: _Run, target: _Target) -> Outcome:
        if target.status == CONNECTED and target.method == METHOD_DIRECT:
            # A Direct Connection does not depend on the agency, so the sync leaves it alone.
            return Outcome.ALREADY_DIRECT
        if target.company_id != run.agency.company_id:
            self._mark(target, NOT_OWNED, f"The CRM lists this sub-account under the company {target.company_id}, not the agency.")
            return Outcome.NOT_OWNED
        if not target.installed:
            self._mark(target, NOT_INSTALLED, "The app is not installed on this sub-account.", missed=True)
            return Outcome.NOT_INSTALLED
        if self._done_by_unfinished_run(run, target):
            return Outcome.CONNECTED
        return self._mint(run, target)

    def _done_by_unfinished_run(self, run: _Run, target: _Target) -> bool:
        return (run.resume_after is not None and target.status == CONNECTED and target.method == METHOD_AGENCY
                and target.token_written_at is not None and target.token_written_at >= run.resume_after)

    def _mint(self, run: _Run, target: _Target) -> Outcome:
        company_id = run.agency.company_id
        try:
            grant = self._call_mint(run, target)
        except CrmError as error:
            return self._mint_failed(target, error)

        with write_lock_scope(self.engine) as session:
            account = queries.get_account(session=session, account_id=target.account_id)
            self.tokens.save_grant(session, grant, method=METHOD_AGENCY, account_id=account.id)
            change = None
            if not (account.status == CONNECTED and account.method == METHOD_AGENCY):
                change = mark_connected(session, account, method=METHOD_AGENCY, detail=f"Synced through the agency {run.agency.name}")
        logger.info("Account %s synced through agency %s (%s)", account.id, run.agency.id, company_id)

        target.status = CONNECTED
        target.method = METHOD_AGENCY
        if change is not None:
            self.connections.notify_change(account, change.turned_green, False)
        return Outcome.CONNECTED

    def _call_mint(self, run: _Run, target: _Target):
        company_id = run.agency.company_id
        try:
            return self.crm.mint_location_token(run.tokens.access_token, company_id=company_id, location_id=target.location_id)
        except CrmError as error:
            if error.reason is not CrmReason.INVALID_TOKEN:
                raise
        # The agency's access token expired or was revoked: refresh it once, then mint again.
        run.tokens = self._refresh_agency(run.agency, run.tokens.connection_id, seen_version=run.tokens.version)
        return self.crm.mint_location_token(run.tokens.access_token, company_id=company_id, location_id=target.location_id)

    def _mint_failed(self, target: _Target, error: CrmError) -> Outcome:
        if error.is_transient:
            logger.warning("Minting for account %s failed transiently (%s); it keeps its status", target.account_id, error.crm_message)
            return Outcome.DEFERRED
        if error.reason is CrmReason.NO_LOCATION_ACCESS:
            self._mark(target, NOT_OWNED, error.crm_message)
            return Outcome.NOT_OWNED
        if error.reason is CrmReason.NOT_INSTALLED:
            self._mark(target, NOT_INSTALLED, error.crm_message, missed=True)
            return Outcome.NOT_INSTALLED
        if error.reason is CrmReason.LOCATION_NOT_ACTIVE:
            self._mark(target, PAUSED, error.crm_message)
            return Outcome.PAUSED
        if error.reason in (CrmReason.AUTH_CLASS, CrmReason.SCOPE, CrmReason.VERSION_HEADER, CrmReason.INVALID_CLIENT):
            raise RunFailed(f"The CRM rejected minting location tokens ({error.crm_message}). The agency connection needs "
                            f"the scope oauth.write in CRM_SCOPES; connect the agency again with `/crm-connect agency`.") from error

        with write_lock_scope(self.engine) as session:
            account = queries.get_account(session=session, account_id=target.account_id)
            record_failure(session, account, kind="sync_failed", reason=error.reason.value, error=error.crm_message)
            self._add_missed_event(session, account)
        logger.info("Agency sync could not mint for account %s: %s", target.account_id, error.reason)
        return Outcome.FAILED

    def _mark(self, target: _Target, reason: str, error: str, *, missed: bool = False) -> None:
        """Mark an account red, dropping a token minted through the agency, which can no longer be renewed."""
        with write_lock_scope(self.engine) as session:
            account = queries.get_account(session=session, account_id=target.account_id)
            if account.method == METHOD_AGENCY and reason != PAUSED:
                connection = queries.get_connection_for_account(session=session, account_id=account.id)
                if connection is not None:
                    queries.delete_connection(session=session, connection=connection)
            change = mark_red(session, account, reason=reason, error=error)
            if missed:
                self._add_missed_event(session, account)
        target.status = account.status
        if change.turned_red:
            self.connections.notify_change(account, False, True)

    def _add_missed_event(self, session, account: Account) -> None:
        """Record that the agency login did not cover the account, once per MISSED_EVENT_DAYS."""
        since = utcnow() - timedelta(days=MISSED_EVENT_DAYS)
        if queries.count_events(session=session, account_id=account.id, kind="missed_by_agency_login", since=since) == 0:
            queries.add_event(session=session, kind="missed_by_agency_login", account_id=account.id,
                              detail="The agency login and sync did not connect this sub-account")

    # Accounts that left

    def _mark_left_accounts(self, run: _Run, listed: set[str]) -> None:
        """Handle accounts of the agency that the CRM no longer lists: they were moved to another agency or removed."""
        with session_scope(self.engine) as session:
            left_ids = [account.id for account in sync_queries.list_agency_accounts(session=session, agency_id=run.agency.id)
                    if account.location_id and account.location_id not in listed]

        for account_id in left_ids:
            with write_lock_scope(self.engine) as session:
                account = queries.get_account(session=session, account_id=account_id)
                account.agency_id = None
                queries.add_event(session=session, kind="left_agency", account_id=account.id, agency_id=run.agency.id,
                                  detail=f"No longer listed among the sub-accounts of the agency {run.agency.name}")
                change = None
                if not (account.status == CONNECTED and account.method == METHOD_DIRECT):
                    connection = queries.get_connection_for_account(session=session, account_id=account.id)
                    if connection is not None and connection.method == METHOD_AGENCY:
                        queries.delete_connection(session=session, connection=connection)
                    change = mark_red(session, account, reason=NOT_OWNED,
                                      error="The agency no longer lists this sub-account: it was moved to another agency or removed.")
            run.left_agency += 1
            if change is not None and change.turned_red:
                self.connections.notify_change(account, False, True)
            logger.info("Account %s left agency %s", account_id, run.agency.id)


def run_agency_sync(services: Services, agency_id: int, *, progress: ProgressCallback | None = None,
                    requester_user_id: str | None = None) -> SyncSummary:
    """Run Connect Accounts for one agency now, in this thread, and return the summary.

    `progress` gets a SyncProgress after each account and the summary last;
    `SlackProgress` shows them in a DM. When another sync of the agency holds
    the lease, nothing runs and the summary's status is "already_running".
    """
    return AgencySync(services.connections).run(agency_id, requester_user_id=requester_user_id, progress=progress)


def start_agency_sync(connections: ConnectionService, agency_ids: list[int], *, requester_user_id: str | None) -> threading.Thread:
    """Sync agencies one after another in a background thread, reporting to the requester by DM."""

    def work() -> None:
        for agency_id in agency_ids:
            progress = SlackProgress(connections.slack, requester_user_id) if requester_user_id else None
            try:
                AgencySync(connections).run(agency_id, requester_user_id=requester_user_id, progress=progress)
            except Exception:
                logger.exception("Background sync of agency %s failed", agency_id)

    thread = threading.Thread(target=work, name=f"agency-sync-{'-'.join(map(str, agency_ids))}", daemon=True)
    thread.start()
    return thread
