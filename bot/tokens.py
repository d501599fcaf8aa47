"""Storing and refreshing tokens without ever losing a rotated refresh token.

The CRM rotates refresh tokens: each refresh returns a new one and kills the
old one. So refreshes of one connection are serialised across threads and
processes (SELECT ... FOR UPDATE on PostgreSQL, BEGIN IMMEDIATE on SQLite),
the row is re-read after the lock is taken, and the new tokens are committed
before anyone uses them.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import timedelta

from sqlalchemy import Engine
from sqlmodel import Session

from bot.crm import CrmClient, CrmError, CrmReason, TokenGrant
from bot.crypto import TokenCipher
from storage import queries
from storage.db import utcnow, write_lock_scope
from storage.models import Connection

logger = logging.getLogger(__name__)

REFRESH_MARGIN = timedelta(minutes=15)


@dataclass(frozen=True)
class Tokens:
    """Decrypted tokens of one connection, hidden from repr."""

    connection_id: int
    version: int
    access_token: str = field(repr=False)
    refresh_token: str | None = field(repr=False)
    user_type: str
    company_id: str | None
    location_id: str | None


class TokenStore:
    def __init__(self, *, engine: Engine, cipher: TokenCipher, crm: CrmClient) -> None:
        self.engine = engine
        self.cipher = cipher
        self.crm = crm

    def save_grant(self, session: Session, grant: TokenGrant, *, method: str, account_id: int | None = None, agency_id: int | None = None) -> Connection:
        """Insert or update the connection of an account or agency with a new grant."""
        if account_id is not None:
            connection = queries.get_connection_for_account(session=session, account_id=account_id)
        else:
            connection = queries.get_connection_for_agency(session=session, agency_id=agency_id)

        if connection is None:
            connection = Connection(account_id=account_id, agency_id=agency_id, user_type=grant.user_type,
                                    method=method, access_token_encrypted="", expires_at=grant.expires_at, version=0)
            session.add(connection)

        self._write_grant(connection, grant)
        connection.method = method
        session.flush()
        logger.info("Stored tokens of connection %s (account %s, agency %s)", connection.id, account_id, agency_id)
        return connection

    def tokens_of(self, connection: Connection) -> Tokens:
        return Tokens(
            connection_id=connection.id,
            version=connection.version,
            access_token=self.cipher.decrypt(connection.access_token_encrypted),
            refresh_token=self.cipher.decrypt(connection.refresh_token_encrypted) if connection.refresh_token_encrypted else None,
            user_type=connection.user_type,
            company_id=connection.company_id,
            location_id=connection.location_id,
        )

    def refresh(self, connection_id: int, *, seen_version: int | None = None, margin: timedelta = REFRESH_MARGIN) -> Tokens:
        """Refresh a connection's tokens, or return newer ones that another process stored.

        With `seen_version`, the refresh is forced unless the stored version
        has moved past it. Without it, the refresh happens only when the access
        token expires within `margin`. Raises CrmError when the CRM rejects the
        refresh, and LookupError when the connection is gone.
        """
        with write_lock_scope(self.engine) as session:
            connection = queries.get_connection(session=session, connection_id=connection_id, for_update=True)
            if connection is None:
                raise LookupError(f"Connection {connection_id} no longer exists")

            # Another process refreshed while this one waited for the lock.
            if seen_version is not None and connection.version != seen_version:
                logger.info("Connection %s was refreshed elsewhere (version %s)", connection_id, connection.version)
                return self.tokens_of(connection)
            if seen_version is None and connection.expires_at > utcnow() + margin:
                return self.tokens_of(connection)

            current = self.tokens_of(connection)
            if current.refresh_token is None:
                raise CrmError(CrmReason.INVALID_GRANT, "The connection holds no refresh token")

            grant = self.crm.refresh(current.refresh_token, user_type=connection.user_type)
            self._write_grant(connection, grant)
            connection.refreshed_at = utcnow()
            session.flush()
            logger.info("Refreshed connection %s to version %s", connection_id, connection.version)
            return self.tokens_of(connection)

    def _write_grant(self, connection: Connection, grant: TokenGrant) -> None:
        connection.access_token_encrypted = self.cipher.encrypt(grant.access_token)
        # A grant without a refresh token (a minted location token) keeps none;
        # a refresh answer always carries the rotated one.
        connection.refresh_token_encrypted = self.cipher.encrypt(grant.refresh_token) if grant.refresh_token else None
        connection.expires_at = grant.expires_at
        connection.scopes = grant.scopes
        connection.user_type = grant.user_type
        connection.company_id = grant.company_id
        connection.location_id = grant.location_id
        connection.crm_user_id = grant.crm_user_id
        connection.version = (connection.version or 0) + 1
        connection.updated_at = utcnow()
