"""Setup helpers of the lifecycle tests: connections made through the CRM simulator's install page."""

from __future__ import annotations

from datetime import timedelta
from urllib.parse import parse_qs, urlsplit

from bot.accounts import mark_connected, set_agency_status
from storage import queries
from storage.db import session_scope, utcnow
from storage.models import Account, Connection, Event, METHOD_AGENCY, METHOD_DIRECT
from tests.conftest import AGENCY_COMPANY_ID, AGENT


def code_for(services, crm, choice: str) -> str:
    callback = crm.authorize(services.crm.build_authorize_url("state"), choice)
    return parse_qs(urlsplit(callback).query)["code"][0]


def connect_direct(services, crm, location_id: str = "loc-acme", name: str = "Acme Dental", owner: str | None = AGENT) -> tuple[int, int]:
    """Store a Direct Connection of a new account; return (account id, connection id)."""
    grant = services.crm.exchange_code(code_for(services, crm, f"location:{location_id}"))
    with session_scope(services.engine) as session:
        account = queries.create_account(session=session, name=name, location_id=location_id, company_id=grant.company_id,
                                         owner_user_id=owner)
        connection = services.connections.tokens.save_grant(session, grant, method=METHOD_DIRECT, account_id=account.id)
        mark_connected(session, account, method=METHOD_DIRECT)
        return account.id, connection.id


def connect_agency(services, crm, company_id: str = AGENCY_COMPANY_ID, name: str = "Bright Agency") -> tuple[int, int]:
    """Store an agency connection; return (agency id, connection id)."""
    grant = services.crm.exchange_code(code_for(services, crm, f"company:{company_id}"), user_type="Company")
    with session_scope(services.engine) as session:
        agency = queries.get_or_create_agency(session=session, company_id=grant.company_id, name=name)
        connection = services.connections.tokens.save_grant(session, grant, method=METHOD_AGENCY, agency_id=agency.id)
        set_agency_status(session, agency, connected=True)
        return agency.id, connection.id


def connect_minted(services, agency_id: int, location_id: str, name: str, owner: str | None = AGENT) -> tuple[int, int]:
    """Connect an account of the agency through a minted location token; return (account id, connection id)."""
    with session_scope(services.engine) as session:
        account = queries.create_account(session=session, name=name, location_id=location_id, agency_id=agency_id,
                                         company_id=AGENCY_COMPANY_ID, owner_user_id=owner)
    synced, why = services.connections.try_agency_mint(account, actor_user_id=None)
    assert synced, why
    with session_scope(services.engine) as session:
        return account.id, queries.get_connection_for_account(session=session, account_id=account.id).id


def expire_soon(services, connection_id: int, minutes: int = 10) -> None:
    with session_scope(services.engine) as session:
        connection = queries.get_connection(session=session, connection_id=connection_id)
        connection.expires_at = utcnow() + timedelta(minutes=minutes)


def account_of(services, account_id: int) -> Account:
    with session_scope(services.engine) as session:
        return queries.get_account(session=session, account_id=account_id)


def connection_of(services, connection_id: int) -> Connection | None:
    with session_scope(services.engine) as session:
        return queries.get_connection(session=session, connection_id=connection_id)


def events_of(services, account_id: int) -> list[Event]:
    with session_scope(services.engine) as session:
        return list(queries.list_events(session=session, account_id=account_id, limit=50))
