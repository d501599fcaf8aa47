"""Query functions of the connection lifecycle. Each takes the session and keyword-only values."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import delete, or_, update
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col, select

from storage.lifecycle_models import DELIVERY_DONE, ConnectionFailure, WebhookDelivery
from storage.models import CONNECTED, METHOD_AGENCY, Account, Agency, Connection


# Accounts and connections

def lock_account(*, session: Session, account_id: int) -> Account | None:
    """Read an account with a row lock (SELECT ... FOR UPDATE) so that status changes serialise."""
    return session.exec(select(Account).where(Account.id == account_id).with_for_update()).first()


def lock_agency(*, session: Session, agency_id: int) -> Agency | None:
    return session.exec(select(Agency).where(Agency.id == agency_id).with_for_update()).first()


def list_due_connection_ids(*, session: Session, expiring_before: datetime, now: datetime) -> list[int]:
    """Return the ids of connections that the refresh job must handle now.

    These are connections of green accounts and connected agencies whose
    access token expires before `expiring_before` and that are not failing,
    and failing connections whose next retry is due.
    """
    expiring = (
        select(Connection.id)
        .outerjoin(Account, col(Account.id) == col(Connection.account_id))
        .outerjoin(Agency, col(Agency.id) == col(Connection.agency_id))
        .outerjoin(ConnectionFailure, col(ConnectionFailure.connection_id) == col(Connection.id))
        .where(
            col(ConnectionFailure.id).is_(None),
            col(Connection.expires_at) <= expiring_before,
            or_(col(Account.status) == CONNECTED, col(Agency.status) == CONNECTED),
        )
    )
    retrying = select(ConnectionFailure.connection_id).where(col(ConnectionFailure.next_attempt_at) <= now)
    ids = set(session.exec(expiring).all()) | set(session.exec(retrying).all())
    return sorted(ids)


def list_green_location_connections(*, session: Session) -> Sequence[tuple[Connection, Account]]:
    """Return every green account with its location connection, for the health check."""
    statement = (
        select(Connection, Account)
        .join(Account, col(Account.id) == col(Connection.account_id))
        .where(Account.status == CONNECTED, col(Connection.location_id).is_not(None))
        .order_by(Account.id)
    )
    return session.exec(statement).all()


def list_agency_minted_connections(*, session: Session, agency_id: int, company_id: str) -> Sequence[Connection]:
    """Return the account connections minted from an agency's token: of its accounts, or carrying its company id."""
    statement = (
        select(Connection)
        .join(Account, col(Account.id) == col(Connection.account_id))
        .where(Connection.method == METHOD_AGENCY, or_(Account.agency_id == agency_id, Connection.company_id == company_id))
    )
    return session.exec(statement).all()


# Failures

def get_failure(*, session: Session, connection_id: int) -> ConnectionFailure | None:
    return session.exec(select(ConnectionFailure).where(ConnectionFailure.connection_id == connection_id)).first()


def save_failure(*, session: Session, failure: ConnectionFailure) -> ConnectionFailure:
    session.add(failure)
    session.flush()
    return failure


def delete_failure(*, session: Session, connection_id: int) -> bool:
    """Delete a connection's failure row. Return whether there was one."""
    result = session.execute(delete(ConnectionFailure).where(col(ConnectionFailure.connection_id) == connection_id))
    return result.rowcount > 0


# Webhook deliveries

def claim_delivery(*, session: Session, delivery: WebhookDelivery) -> bool:
    """Insert a delivery unless its webhook id is known. Return whether this call inserted it.

    The unique constraint on `webhook_id` decides between two processes that
    receive the same delivery at once. The insert runs in a savepoint, so a
    duplicate leaves the session usable.
    """
    try:
        with session.begin_nested():
            session.add(delivery)
    except IntegrityError:
        return False
    return True


def finish_delivery(*, session: Session, webhook_id: str) -> None:
    session.execute(update(WebhookDelivery).where(col(WebhookDelivery.webhook_id) == webhook_id).values(status=DELIVERY_DONE))


def release_delivery(*, session: Session, webhook_id: str) -> None:
    """Forget a delivery whose processing failed, so that a retry of the CRM is accepted."""
    session.execute(delete(WebhookDelivery).where(col(WebhookDelivery.webhook_id) == webhook_id))


def delete_old_deliveries(*, session: Session, before: datetime) -> int:
    result = session.execute(delete(WebhookDelivery).where(col(WebhookDelivery.received_at) < before))
    return result.rowcount
