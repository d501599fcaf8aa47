"""Status changes of accounts, each written with an event."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import timedelta

from sqlmodel import Session

from bot.advice import REPEATED_FAILURE_DAYS, History
from storage import queries
from storage.db import utcnow
from storage.models import CONNECTED, DISCONNECTED, Account

logger = logging.getLogger(__name__)

FAILURE_EVENTS = ("connect_failed", "refresh_failed", "sync_failed")


@dataclass(frozen=True)
class StatusChange:
    account_id: int
    turned_green: bool
    turned_red: bool


def mark_connected(session: Session, account: Account, *, method: str, actor_user_id: str | None = None, detail: str | None = None) -> StatusChange:
    was_green = account.status == CONNECTED
    now = utcnow()

    account.status = CONNECTED
    account.reason = None
    account.method = method
    account.last_error = None
    account.red_since = None
    account.connected_at = now
    account.updated_at = now
    session.add(account)

    queries.add_event(session=session, kind="connected", account_id=account.id, detail=detail or f"Connected by {method}",
                      actor_user_id=actor_user_id)
    logger.info("Account %s is connected (%s)", account.id, method)
    return StatusChange(account.id, turned_green=not was_green, turned_red=False)


def mark_red(session: Session, account: Account, *, reason: str, error: str | None = None, actor_user_id: str | None = None, event_kind: str = "failed") -> StatusChange:
    was_green = account.status == CONNECTED
    changed = was_green or account.reason != reason
    now = utcnow()

    account.status = DISCONNECTED
    account.reason = reason
    account.last_error = error
    if was_green or account.red_since is None:
        account.red_since = now
    account.updated_at = now
    session.add(account)

    if changed or event_kind != "failed":
        queries.add_event(session=session, kind=event_kind, account_id=account.id, reason=reason, detail=error,
                          actor_user_id=actor_user_id)
    if changed:
        logger.info("Account %s shows No Active CRM Connection (%s)", account.id, reason)
    return StatusChange(account.id, turned_green=False, turned_red=was_green)


def record_failure(session: Session, account: Account, *, kind: str, reason: str | None, error: str, actor_user_id: str | None = None) -> None:
    """Record a failed connect or refresh without changing the status."""
    account.last_error = error
    account.updated_at = utcnow()
    session.add(account)
    queries.add_event(session=session, kind=kind, account_id=account.id, reason=reason, detail=error, actor_user_id=actor_user_id)


def history_of(session: Session, account: Account) -> History:
    since = utcnow() - timedelta(days=REPEATED_FAILURE_DAYS)
    failed = sum(queries.count_events(session=session, account_id=account.id, kind=kind, since=since) for kind in FAILURE_EVENTS)
    agency_link_used = queries.count_events(session=session, account_id=account.id, kind="missed_by_agency_login", since=since) > 0
    sync_failed = queries.count_events(session=session, account_id=account.id, kind="sync_failed", since=since) > 0

    agency_connected = False
    if account.agency_id is not None:
        agency = queries.get_agency(session=session, agency_id=account.agency_id)
        agency_connected = agency is not None and agency.status == CONNECTED
    has_tokens = queries.get_connection_for_account(session=session, account_id=account.id) is not None
    return History(failed_attempts=failed, agency_link_used=agency_link_used, agency_connected=agency_connected,
                   sync_failed=sync_failed, has_tokens=has_tokens)


def set_agency_status(session: Session, agency, *, connected: bool, reason: str | None = None) -> None:
    agency.status = CONNECTED if connected else DISCONNECTED
    agency.reason = None if connected else reason
    agency.updated_at = utcnow()
    session.add(agency)
    queries.add_event(session=session, kind="agency_connected" if connected else "agency_failed", agency_id=agency.id, reason=reason)
