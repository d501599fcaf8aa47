"""Query functions of the agency sync. Each takes the session and keyword-only values."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import delete, update
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col, select

from storage.models import LOCATION, Account, Connection
from storage.queries import create_account, get_account_by_location_id, name_key
from storage.sync_models import SyncLease, SyncRun

# Leases

def acquire_sync_lease(*, session: Session, agency_id: int, holder: str, now: datetime, expires_at: datetime) -> bool:
    """Take the agency's sync lease unless another holder's lease is still valid. Return whether it was taken.

    Call it in a `write_lock_scope`. When two callers insert the first lease of
    an agency at once, PostgreSQL rejects the second insert by primary key, and
    that caller gets False.
    """
    statement = select(SyncLease).where(SyncLease.agency_id == agency_id).with_for_update()
    lease = session.exec(statement).first()

    if lease is None:
        try:
            with session.begin_nested():
                session.add(SyncLease(agency_id=agency_id, holder=holder, expires_at=expires_at))
        except IntegrityError:
            return False
        return True

    if lease.holder != holder and lease.expires_at > now:
        return False
    lease.holder = holder
    lease.expires_at = expires_at
    session.add(lease)
    session.flush()
    return True


def renew_sync_lease(*, session: Session, agency_id: int, holder: str, expires_at: datetime, run_id: int | None = None) -> bool:
    """Extend the lease that `holder` holds. Return False when the holder lost it."""
    values: dict = {"expires_at": expires_at}
    if run_id is not None:
        values["run_id"] = run_id
    result = session.execute(
        update(SyncLease).where(SyncLease.agency_id == agency_id, SyncLease.holder == holder).values(**values)
    )
    return result.rowcount == 1


def release_sync_lease(*, session: Session, agency_id: int, holder: str) -> None:
    session.execute(delete(SyncLease).where(SyncLease.agency_id == agency_id, SyncLease.holder == holder))


def get_sync_lease(*, session: Session, agency_id: int) -> SyncLease | None:
    return session.get(SyncLease, agency_id)


# Runs

def create_sync_run(*, session: Session, agency_id: int, requester_user_id: str | None, started_at: datetime) -> SyncRun:
    run = SyncRun(agency_id=agency_id, requester_user_id=requester_user_id, started_at=started_at)
    session.add(run)
    session.flush()
    return run


def get_sync_run(*, session: Session, run_id: int) -> SyncRun | None:
    return session.get(SyncRun, run_id)


def get_last_sync_run(*, session: Session, agency_id: int, before_run_id: int | None = None) -> SyncRun | None:
    """Return the agency's newest sync run, or its newest one older than `before_run_id`."""
    statement = select(SyncRun).where(SyncRun.agency_id == agency_id)
    if before_run_id is not None:
        statement = statement.where(SyncRun.id < before_run_id)
    return session.exec(statement.order_by(col(SyncRun.id).desc()).limit(1)).first()


# Accounts

def list_agency_accounts(*, session: Session, agency_id: int) -> Sequence[Account]:
    return session.exec(select(Account).where(Account.agency_id == agency_id).order_by(Account.id)).all()


def upsert_synced_account(*, session: Session, location_id: str, name: str, agency_id: int | None, company_id: str | None) -> tuple[Account, bool]:
    """Insert or update the account of a CRM location, matched by location id. Return it and whether it is new.

    Another sync or an OAuth callback may insert the same location at the same
    moment. The insert runs in a savepoint, so the loser of that race reads the
    winner's row instead of failing.
    """
    account = get_account_by_location_id(session=session, location_id=location_id)
    created = False

    if account is None:
        try:
            with session.begin_nested():
                account = create_account(session=session, name=name, location_id=location_id,
                                         agency_id=agency_id, company_id=company_id)
            created = True
        except IntegrityError:
            account = get_account_by_location_id(session=session, location_id=location_id)
            if account is None:
                raise

    if name and account.name != name.strip():
        account.name = name.strip()
        account.name_key = name_key(name)
    account.agency_id = agency_id
    account.company_id = company_id
    session.add(account)
    return account, created


# Connections

def get_location_connection(*, session: Session, location_id: str) -> Connection | None:
    """Return the Location-token connection of a CRM location, looked up by its location id.

    A Company-token connection never matches, so its token cannot reach a
    location endpoint through this lookup.
    """
    statement = select(Connection).where(Connection.location_id == location_id, Connection.user_type == LOCATION)
    return session.exec(statement.order_by(col(Connection.id).desc())).first()
