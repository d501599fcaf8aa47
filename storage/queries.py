"""Query functions. Each takes the session and keyword-only values."""

from __future__ import annotations

import re
from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import func, update
from sqlmodel import Session, col, select

from storage.db import utcnow
from storage.models import CONNECTED, DISCONNECTED, Account, Agency, Connection, Event, OAuthState


# Slack messages show *, _, ~ and ` in names as these look-alikes (`bot.render.escape_name`).
LOOKALIKE_ORIGINALS = str.maketrans({"\u2217": "*", "\uff3f": "_", "\u223c": "~", "\u02cb": "`"})


def name_key(name: str) -> str:
    """Fold a name for case-insensitive lookup: undo look-alikes, casefold and collapse whitespace."""
    return re.sub(r"\s+", " ", name.translate(LOOKALIKE_ORIGINALS)).strip().casefold()


# Accounts

def get_account(*, session: Session, account_id: int) -> Account | None:
    return session.get(Account, account_id)


def get_account_by_location_id(*, session: Session, location_id: str) -> Account | None:
    return session.exec(select(Account).where(Account.location_id == location_id)).first()


def find_accounts(*, session: Session, query: str) -> Sequence[Account]:
    """Find accounts by exact location id, else by case-insensitive name."""
    by_id = get_account_by_location_id(session=session, location_id=query.strip())
    if by_id is not None:
        return [by_id]
    statement = select(Account).where(Account.name_key == name_key(query)).order_by(Account.id)
    return session.exec(statement).all()


def create_account(
    *,
    session: Session,
    name: str,
    location_id: str | None = None,
    agency_id: int | None = None,
    company_id: str | None = None,
    owner_user_id: str | None = None,
) -> Account:
    account = Account(
        name=name.strip(),
        name_key=name_key(name),
        location_id=location_id,
        agency_id=agency_id,
        company_id=company_id,
        owner_user_id=owner_user_id,
    )
    session.add(account)
    session.flush()
    return account


def list_accounts(*, session: Session, status: str | None = None) -> Sequence[Account]:
    statement = select(Account).order_by(Account.name_key, Account.id)
    if status == CONNECTED:
        statement = statement.where(Account.status == CONNECTED)
    elif status == DISCONNECTED:
        statement = statement.where(Account.status != CONNECTED)
    return session.exec(statement).all()


def count_accounts_by_status(*, session: Session) -> dict[str, int]:
    rows = session.exec(select(Account.status, func.count()).group_by(Account.status)).all()
    return {status: count for status, count in rows}


def count_accounts_by_agency(*, session: Session) -> dict[tuple[int | None, bool], int]:
    """Count accounts by (agency id, green)."""
    rows = session.exec(select(Account.agency_id, Account.status, func.count()).group_by(Account.agency_id, Account.status)).all()
    counts: dict[tuple[int | None, bool], int] = {}
    for agency_id, status, count in rows:
        key = (agency_id, status == CONNECTED)
        counts[key] = counts.get(key, 0) + count
    return counts


# Agencies

def get_agency(*, session: Session, agency_id: int) -> Agency | None:
    return session.get(Agency, agency_id)


def get_agency_by_company_id(*, session: Session, company_id: str) -> Agency | None:
    return session.exec(select(Agency).where(Agency.company_id == company_id)).first()


def list_agencies(*, session: Session) -> Sequence[Agency]:
    return session.exec(select(Agency).order_by(Agency.id)).all()


def get_or_create_agency(*, session: Session, company_id: str, name: str | None = None) -> Agency:
    agency = get_agency_by_company_id(session=session, company_id=company_id)
    if agency is None:
        agency = Agency(company_id=company_id, name=name or company_id)
        session.add(agency)
        session.flush()
    elif name and agency.name == agency.company_id:
        agency.name = name
    return agency


# Connections

def get_connection(*, session: Session, connection_id: int, for_update: bool = False) -> Connection | None:
    statement = select(Connection).where(Connection.id == connection_id)
    if for_update:
        statement = statement.with_for_update()
    return session.exec(statement).first()


def get_connection_for_account(*, session: Session, account_id: int) -> Connection | None:
    return session.exec(select(Connection).where(Connection.account_id == account_id)).first()


def get_connection_for_agency(*, session: Session, agency_id: int) -> Connection | None:
    return session.exec(select(Connection).where(Connection.agency_id == agency_id)).first()


def delete_connection(*, session: Session, connection: Connection) -> None:
    session.delete(connection)
    session.flush()


# OAuth states

def create_state(*, session: Session, state: OAuthState) -> OAuthState:
    session.add(state)
    session.flush()
    return state


def get_state_by_hash(*, session: Session, state_hash: str) -> OAuthState | None:
    return session.exec(select(OAuthState).where(OAuthState.state_hash == state_hash)).first()


def claim_state(*, session: Session, state_id: int, code_hash: str, now: datetime) -> bool:
    """Mark a state used, unless another request did first. Return whether this call claimed it."""
    result = session.execute(
        update(OAuthState)
        .where(OAuthState.id == state_id, col(OAuthState.used_at).is_(None))
        .values(used_at=now, code_hash=code_hash)
    )
    return result.rowcount == 1


def release_state(*, session: Session, state_id: int) -> None:
    """Make a claimed state usable again, after a fault that consumed nothing."""
    session.execute(update(OAuthState).where(OAuthState.id == state_id).values(used_at=None, code_hash=None))


def delete_expired_states(*, session: Session, before: datetime) -> int:
    result = session.execute(
        OAuthState.__table__.delete().where(OAuthState.expires_at < before)
    )
    return result.rowcount


# Events

def add_event(
    *,
    session: Session,
    kind: str,
    account_id: int | None = None,
    agency_id: int | None = None,
    reason: str | None = None,
    detail: str | None = None,
    actor_user_id: str | None = None,
) -> Event:
    event = Event(kind=kind, account_id=account_id, agency_id=agency_id, reason=reason,
                  detail=detail, actor_user_id=actor_user_id, created_at=utcnow())
    session.add(event)
    session.flush()
    return event


def list_events(*, session: Session, account_id: int, limit: int = 5) -> Sequence[Event]:
    statement = (
        select(Event)
        .where(Event.account_id == account_id)
        .order_by(col(Event.created_at).desc(), col(Event.id).desc())
        .limit(limit)
    )
    return session.exec(statement).all()


def count_events(*, session: Session, account_id: int, kind: str, since: datetime) -> int:
    statement = select(func.count()).select_from(Event).where(
        Event.account_id == account_id, Event.kind == kind, Event.created_at >= since
    )
    return session.exec(statement).one()
