"""Queries of the App Home dashboard."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import func, inspect
from sqlmodel import Session, select

from storage.models import CONNECTED, Account

DIGEST_TABLE = "digest_post"


def count_red_accounts(*, session: Session) -> int:
    return session.exec(select(func.count()).select_from(Account).where(Account.status != CONNECTED)).one()


def list_red_accounts(*, session: Session, offset: int, limit: int) -> Sequence[Account]:
    """Return one page of the accounts that are not connected, ordered by name."""
    statement = (select(Account).where(Account.status != CONNECTED)
                 .order_by(Account.name_key, Account.id).offset(offset).limit(limit))
    return session.exec(statement).all()


def list_accounts_owned_by(*, session: Session, user_id: str, limit: int) -> Sequence[Account]:
    statement = (select(Account).where(Account.owner_user_id == user_id)
                 .order_by(Account.name_key, Account.id).limit(limit))
    return session.exec(statement).all()


def count_accounts_owned_by(*, session: Session, user_id: str) -> int:
    return session.exec(select(func.count()).select_from(Account).where(Account.owner_user_id == user_id)).one()


def get_last_digest_at(*, session: Session) -> datetime | None:
    """Return when the newest digest went out, or None when none did or the digest tables are absent."""
    if not inspect(session.connection()).has_table(DIGEST_TABLE):
        return None

    from storage.digest_models import DIGEST_PARTIAL, DIGEST_POSTED, DigestPost

    statement = select(func.max(DigestPost.posted_at)).where(DigestPost.status.in_((DIGEST_POSTED, DIGEST_PARTIAL)))
    return session.exec(statement).one()
