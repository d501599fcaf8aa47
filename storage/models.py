"""SQLModel tables.

Times are aware UTC datetimes: SQLModel's datetime column type rejects naive
values and returns UTC on both SQLite and PostgreSQL.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Column, Text
from sqlmodel import Field, SQLModel

# Account status. Every status other than CONNECTED is red and has a reason.
CONNECTED = "connected"
DISCONNECTED = "disconnected"

# Reasons of a red account.
NEVER_CONNECTED = "never_connected"
NEEDS_RECONNECT = "needs_reconnect"
NOT_OWNED = "not_owned"
NOT_INSTALLED = "not_installed"
PAUSED = "paused"
REASONS = (NEVER_CONNECTED, NEEDS_RECONNECT, NOT_OWNED, NOT_INSTALLED, PAUSED)

# Methods by which a connection was made.
METHOD_AGENCY = "agency"
METHOD_DIRECT = "direct"

# CRM token classes.
COMPANY = "Company"
LOCATION = "Location"


def _now() -> datetime:
    from storage.db import utcnow

    return utcnow()


class Agency(SQLModel, table=True):
    """A CRM company that runs many accounts."""

    id: int | None = Field(default=None, primary_key=True)
    company_id: str = Field(index=True, unique=True, max_length=64)
    name: str = Field(max_length=255)
    status: str = Field(default=DISCONNECTED, max_length=32)
    reason: str | None = Field(default=NEVER_CONNECTED, max_length=32)
    last_sync_at: datetime | None = None
    created_at: datetime = Field(default_factory=_now)
    updated_at: datetime = Field(default_factory=_now)


class Account(SQLModel, table=True):
    """A CRM sub-account (location) that must hold a connection to stay green."""

    id: int | None = Field(default=None, primary_key=True)
    location_id: str | None = Field(default=None, index=True, unique=True, max_length=64)
    name: str = Field(max_length=255)
    name_key: str = Field(index=True, max_length=255)
    agency_id: int | None = Field(default=None, foreign_key="agency.id", index=True)
    company_id: str | None = Field(default=None, max_length=64)
    owner_user_id: str | None = Field(default=None, max_length=32)
    status: str = Field(default=DISCONNECTED, index=True, max_length=32)
    reason: str | None = Field(default=NEVER_CONNECTED, max_length=32)
    method: str | None = Field(default=None, max_length=16)
    last_error: str | None = Field(default=None, sa_column=Column(Text))
    red_since: datetime | None = Field(default_factory=_now)
    connected_at: datetime | None = None
    created_at: datetime = Field(default_factory=_now)
    updated_at: datetime = Field(default_factory=_now)

    @property
    def is_green(self) -> bool:
        return self.status == CONNECTED


class Connection(SQLModel, table=True):
    """Encrypted OAuth tokens of one account or one agency.

    `version` grows by one on every write of the tokens, so a writer that
    read an older row can tell that another process refreshed meanwhile.
    """

    id: int | None = Field(default=None, primary_key=True)
    account_id: int | None = Field(default=None, foreign_key="account.id", unique=True)
    agency_id: int | None = Field(default=None, foreign_key="agency.id", unique=True)
    user_type: str = Field(max_length=16)
    company_id: str | None = Field(default=None, max_length=64)
    location_id: str | None = Field(default=None, index=True, max_length=64)
    access_token_encrypted: str = Field(sa_column=Column(Text, nullable=False), repr=False)
    refresh_token_encrypted: str | None = Field(default=None, sa_column=Column(Text), repr=False)
    expires_at: datetime
    scopes: str = Field(default="", sa_column=Column(Text, nullable=False, server_default=""))
    method: str = Field(max_length=16)
    crm_user_id: str | None = Field(default=None, max_length=64)
    version: int = Field(default=1)
    refreshed_at: datetime | None = None
    created_at: datetime = Field(default_factory=_now)
    updated_at: datetime = Field(default_factory=_now)


class OAuthState(SQLModel, table=True):
    """One OAuth link. Only the SHA-256 of the state value is stored."""

    __tablename__ = "oauth_state"

    id: int | None = Field(default=None, primary_key=True)
    state_hash: str = Field(index=True, unique=True, max_length=64)
    team_id: str = Field(max_length=32)
    requester_user_id: str = Field(max_length=32)
    recipient_user_id: str = Field(max_length=32)
    account_id: int | None = Field(default=None, foreign_key="account.id")
    method: str = Field(max_length=16)
    expires_at: datetime
    used_at: datetime | None = None
    code_hash: str | None = Field(default=None, max_length=64)
    outcome: str | None = Field(default=None, max_length=32)
    result_account_id: int | None = None
    created_at: datetime = Field(default_factory=_now)


class Event(SQLModel, table=True):
    """One entry of an account's or agency's history."""

    id: int | None = Field(default=None, primary_key=True)
    account_id: int | None = Field(default=None, foreign_key="account.id", index=True)
    agency_id: int | None = Field(default=None, foreign_key="agency.id", index=True)
    kind: str = Field(max_length=32)
    reason: str | None = Field(default=None, max_length=32)
    detail: str | None = Field(default=None, sa_column=Column(Text))
    actor_user_id: str | None = Field(default=None, max_length=32)
    created_at: datetime = Field(default_factory=_now, index=True)

