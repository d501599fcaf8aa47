"""Tables of the connection lifecycle: failing connections and received CRM webhooks."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Column, ForeignKey, Integer, Text
from sqlmodel import Field, SQLModel

from storage.db import utcnow

# Operations that a failing connection retries.
OPERATION_REFRESH = "refresh"
OPERATION_CHECK = "check"

# Progress of one webhook delivery.
DELIVERY_PROCESSING = "processing"
DELIVERY_DONE = "done"


class ConnectionFailure(SQLModel, table=True):
    """A connection whose refresh or health check keeps failing without a final response.

    One row per connection, deleted when the connection recovers or when a
    final response (such as invalid_grant) turns its account red for good.
    `first_failed_at` starts the failure window, and the refresh job retries
    the connection at `next_attempt_at`.
    """

    __tablename__ = "connection_failure"

    id: int | None = Field(default=None, primary_key=True)
    connection_id: int = Field(sa_column=Column(Integer, ForeignKey("connection.id", ondelete="CASCADE"), nullable=False, unique=True))
    operation: str = Field(max_length=16)
    reason: str = Field(max_length=32)
    attempts: int = Field(default=1)
    last_error: str | None = Field(default=None, sa_column=Column(Text))
    first_failed_at: datetime
    last_failed_at: datetime
    next_attempt_at: datetime = Field(index=True)


class WebhookDelivery(SQLModel, table=True):
    """One accepted CRM webhook. The unique `webhook_id` lets only one process accept a delivery."""

    __tablename__ = "webhook_delivery"

    id: int | None = Field(default=None, primary_key=True)
    webhook_id: str = Field(unique=True, max_length=128)
    event_type: str = Field(max_length=32)
    company_id: str | None = Field(default=None, max_length=64)
    location_id: str | None = Field(default=None, max_length=64)
    status: str = Field(default=DELIVERY_PROCESSING, max_length=16)
    received_at: datetime = Field(default_factory=utcnow, index=True)
