"""Queries of the digest: claiming a (channel, local date) slot and reading what it lists."""

from __future__ import annotations

from collections.abc import Collection, Sequence
from datetime import date, datetime

from sqlalchemy import delete, func, update
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col, select

from storage.digest_models import DIGEST_CLAIMED, DIGEST_PARTIAL, DIGEST_POSTED, DigestPost
from storage.models import CONNECTED, Account

ID_BATCH = 500


def claim_digest(*, session: Session, channel_id: str, local_date: date, sequence: int, claimed_by: str, now: datetime) -> DigestPost | None:
    """Insert the claim row for a slot. Return it, or None when another run owns the slot."""
    post = DigestPost(channel_id=channel_id, local_date=local_date, sequence=sequence, claimed_by=claimed_by, claimed_at=now)
    try:
        # The savepoint keeps the outer transaction usable after a unique violation.
        with session.begin_nested():
            session.add(post)
    except IntegrityError:
        return None
    return post


def get_digest(*, session: Session, channel_id: str, local_date: date, sequence: int = 0) -> DigestPost | None:
    statement = select(DigestPost).where(
        DigestPost.channel_id == channel_id, DigestPost.local_date == local_date, DigestPost.sequence == sequence
    )
    return session.exec(statement).first()


def take_over_stale_claim(*, session: Session, post_id: int, claimed_by: str, now: datetime, stale_before: datetime) -> bool:
    """Move a claim whose owner stopped before posting anything to `claimed_by`. Return whether it moved."""
    result = session.execute(
        update(DigestPost)
        .where(
            DigestPost.id == post_id,
            DigestPost.status == DIGEST_CLAIMED,
            col(DigestPost.message_ts).is_(None),
            DigestPost.claimed_at < stale_before,
        )
        .values(claimed_by=claimed_by, claimed_at=now)
    )
    return result.rowcount == 1


def next_digest_sequence(*, session: Session, channel_id: str, local_date: date) -> int:
    statement = select(func.max(DigestPost.sequence)).where(DigestPost.channel_id == channel_id, DigestPost.local_date == local_date)
    highest = session.exec(statement).one()
    return 0 if highest is None else highest + 1


def record_digest_ts(*, session: Session, post_id: int, message_ts: str) -> None:
    session.execute(update(DigestPost).where(DigestPost.id == post_id).values(message_ts=message_ts))


def finish_digest(
    *, session: Session, post_id: int, status: str, now: datetime, message_count: int, red_count: int, total_count: int,
    red_account_ids: Sequence[int],
) -> None:
    session.execute(
        update(DigestPost).where(DigestPost.id == post_id).values(
            status=status, posted_at=now, message_count=message_count, red_count=red_count, total_count=total_count,
            red_account_ids=",".join(str(account_id) for account_id in red_account_ids),
        )
    )


def release_digest(*, session: Session, post_id: int) -> None:
    """Delete a claim that posted nothing, so a later run can post the slot."""
    session.execute(delete(DigestPost).where(DigestPost.id == post_id, col(DigestPost.message_ts).is_(None)))


def get_previous_digest(*, session: Session, channel_id: str, local_date: date) -> DigestPost | None:
    """Return the newest digest posted in the channel on or before `local_date`, including earlier ones of that date.

    A claim still being posted, a skipped slot and a released claim do not count,
    because none of them showed a list in the channel.
    """
    statement = (
        select(DigestPost)
        .where(
            DigestPost.channel_id == channel_id,
            DigestPost.local_date <= local_date,
            col(DigestPost.status).in_((DIGEST_POSTED, DIGEST_PARTIAL)),
        )
        .order_by(col(DigestPost.local_date).desc(), col(DigestPost.sequence).desc())
        .limit(1)
    )
    return session.exec(statement).first()


def list_connected_accounts(*, session: Session, account_ids: Collection[int]) -> list[Account]:
    """Return the accounts among `account_ids` that are connected now, sorted by name."""
    ids = sorted(account_ids)
    found: list[Account] = []
    # Batches keep each IN list well under the bound-parameter limits of SQLite and PostgreSQL.
    for start in range(0, len(ids), ID_BATCH):
        statement = select(Account).where(Account.status == CONNECTED, col(Account.id).in_(ids[start:start + ID_BATCH]))
        found.extend(session.exec(statement).all())
    found.sort(key=lambda account: (account.name_key, account.id))
    return found
