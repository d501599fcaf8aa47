"""Tables of the digest."""

from __future__ import annotations

from datetime import date, datetime

from sqlalchemy import Column, Text, UniqueConstraint
from sqlmodel import Field, SQLModel

from storage.db import utcnow

# Progress of one digest post.
DIGEST_CLAIMED = "claimed"      # a process owns the slot and is building or posting
DIGEST_POSTED = "posted"        # every message went out
DIGEST_PARTIAL = "partial"      # the first message went out, but some thread replies failed
DIGEST_SKIPPED = "skipped"      # nothing to post: no red account and DIGEST_WHEN_EMPTY=skip


class DigestPost(SQLModel, table=True):
    """One digest in one channel on one local date.

    The unique (channel_id, local_date, sequence) row is inserted before
    anything is posted, so only one process posts the day's digest
    (sequence 0). `crm-bot digest --now --force` adds sequence 1, 2, ...
    `message_ts` is the first message, which the thread replies hang from.
    """

    __tablename__ = "digest_post"
    __table_args__ = (UniqueConstraint("channel_id", "local_date", "sequence", name="uq_digest_post_channel_date_sequence"),)

    id: int | None = Field(default=None, primary_key=True)
    channel_id: str = Field(max_length=32)
    local_date: date
    sequence: int = Field(default=0)
    status: str = Field(default=DIGEST_CLAIMED, max_length=16)
    claimed_by: str = Field(max_length=128)
    claimed_at: datetime = Field(default_factory=utcnow)
    posted_at: datetime | None = None
    message_ts: str | None = Field(default=None, max_length=32)
    message_count: int = Field(default=0)
    red_count: int = Field(default=0)
    total_count: int = Field(default=0)
    # Comma-separated ids of the listed accounts, so the next digest can tell which are new and which recovered.
    red_account_ids: str = Field(default="", sa_column=Column(Text, nullable=False, server_default=""))

    @property
    def listed_account_ids(self) -> frozenset[int]:
        """The ids of the accounts that this digest listed as red."""
        return frozenset(int(part) for part in self.red_account_ids.split(",") if part)
