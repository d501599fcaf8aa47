"""Tables of the agency sync: one row per sync run, and one lease per agency.

The lease keeps two syncs of one agency from running at once, across threads
and processes. A holder renews it while it works. A lease whose `expires_at`
has passed belongs to a sync that died, and the next sync takes it over.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Column, Text
from sqlmodel import Field, SQLModel

from storage.db import utcnow

# Status of a sync run.
RUN_RUNNING = "running"
RUN_FINISHED = "finished"          # every sub-account was processed
RUN_PARTIAL = "partial"            # the CRM kept failing for some accounts; the next run resumes
RUN_INTERRUPTED = "interrupted"    # listing failed, or the process died; the next run resumes
RUN_STOPPED = "stopped"            # the agency was disconnected during the run
RUN_FAILED = "failed"              # a configuration error, such as a missing CRM_APP_ID


class SyncRun(SQLModel, table=True):
    """One Connect Accounts run of an agency, with its progress and counts by outcome."""

    __tablename__ = "sync_run"

    id: int | None = Field(default=None, primary_key=True)
    agency_id: int = Field(foreign_key="agency.id", index=True)
    requester_user_id: str | None = Field(default=None, max_length=32)
    status: str = Field(default=RUN_RUNNING, max_length=16)
    total: int = 0
    processed: int = 0
    connected: int = 0
    already_direct: int = 0
    not_installed: int = 0
    not_owned: int = 0
    paused: int = 0
    failed: int = 0
    deferred: int = 0
    error: str | None = Field(default=None, sa_column=Column(Text))
    started_at: datetime = Field(default_factory=utcnow)
    finished_at: datetime | None = None


class SyncLease(SQLModel, table=True):
    """The right to sync one agency, held by one run until `expires_at`."""

    __tablename__ = "sync_lease"

    agency_id: int = Field(foreign_key="agency.id", primary_key=True)
    run_id: int | None = None
    holder: str = Field(max_length=64)
    expires_at: datetime
