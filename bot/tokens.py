"""Storing and refreshing tokens without ever losing a rotated refresh token.

The CRM rotates refresh tokens: each refresh returns a new one and kills the
old one. So refreshes of one connection are serialised across threads and
processes (SELECT ... FOR UPDATE on PostgreSQL, BEGIN IMMEDIATE on SQLite),
the row is re-read after the lock is taken, and the new tokens are committed
before anyone uses them.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import timedelta
from typing import TypeVar

from sqlalchemy import Engine
from sqlalchemy.exc import SQLAlchemyError
from sqlmodel import Session

from bot.crm import CrmClient, CrmError, CrmReason, TokenGrant
from bot.crypto import TokenCipher
from storage import lifecycle_queries, queries
from storage.db import session_scope, utcnow, write_lock_scope
from storage.models import Connection

logger = logging.getLogger(__name__)

REFRESH_MARGIN = timedelta(minutes=15)

T = TypeVar("T")


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
    # True when this call stored the tokens, False when it returned stored ones.
    renewed: bool = field(default=False, compare=False)


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
        # New tokens end any failing streak of the old ones.
        lifecycle_queries.delete_failure(session=session, connection_id=connection.id)
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

    def renew(self, connection_id: int, *, seen_version: int | None = None, margin: timedelta = REFRESH_MARGIN) -> Tokens:
        """Return usable tokens of a connection, renewing them first when they are due.

        Tokens are due when the access token expires within `margin`, or, with
        `seen_version`, when the stored version is still the one the caller saw
        rejected. A connection with a refresh token is refreshed
        (grant_type=refresh_token). A location token without one is minted
        again from its agency's token. Raises CrmError when the CRM rejects
        the renewal, and LookupError when the connection is gone.
        """
        with session_scope(self.engine) as session:
            connection = queries.get_connection(session=session, connection_id=connection_id)
            if connection is None:
                raise LookupError(f"Connection {connection_id} no longer exists")
            if not _is_due(connection, seen_version, margin):
                return self.tokens_of(connection)
            has_refresh_token = connection.refresh_token_encrypted is not None

        if has_refresh_token:
            return self.refresh(connection_id, seen_version=seen_version, margin=margin)
        return self.mint_again(connection_id, seen_version=seen_version, margin=margin)

    def call_with_token(self, connection_id: int, call: Callable[[str], T]) -> T:
        """Run `call(access_token)` with a connection's token, renewed first when it is due.

        When the CRM returns 401 "Invalid token", the tokens are renewed once
        and the call is retried once. A second rejection is raised.
        """
        tokens = self.renew(connection_id)
        try:
            return call(tokens.access_token)
        except CrmError as error:
            if error.reason is not CrmReason.INVALID_TOKEN:
                raise
            logger.info("The CRM rejected the access token of connection %s; renewing it once", connection_id)

        tokens = self.renew(connection_id, seen_version=tokens.version)
        return call(tokens.access_token)

    def refresh(self, connection_id: int, *, seen_version: int | None = None, margin: timedelta = REFRESH_MARGIN) -> Tokens:
        """Refresh a connection's tokens, or return newer ones that another process stored.

        With `seen_version`, the refresh is forced unless the stored version
        has moved past it. Without it, the refresh happens only when the access
        token expires within `margin`. Raises CrmError when the CRM rejects the
        refresh, and LookupError when the connection is gone.

        The row stays locked from the read to the commit of the rotated
        tokens, so processes sharing this database send each refresh token
        to the CRM at most once.
        """
        rejection = None
        rotated = False
        try:
            with write_lock_scope(self.engine) as session:
                connection = queries.get_connection(session=session, connection_id=connection_id, for_update=True)
                if connection is None:
                    raise LookupError(f"Connection {connection_id} no longer exists")
                read_version = connection.version

                # Another process refreshed while this one waited for the lock.
                if not _is_due(connection, seen_version, margin):
                    logger.info("Connection %s needs no refresh (version %s)", connection_id, connection.version)
                    return self.tokens_of(connection)

                current = self.tokens_of(connection)
                if current.refresh_token is None:
                    raise CrmError(CrmReason.INVALID_GRANT, "The connection holds no refresh token")

                try:
                    grant = self.crm.refresh(current.refresh_token, user_type=connection.user_type)
                except CrmError as error:
                    if error.reason is not CrmReason.INVALID_GRANT:
                        raise
                    rejection = error
                else:
                    rotated = True
                    self._write_grant(connection, grant, keep_refresh_token=True)
                    connection.refreshed_at = utcnow()
                    session.flush()
                    tokens = replace(self.tokens_of(connection), renewed=True)
        except SQLAlchemyError:
            if rotated:
                logger.exception("The CRM rotated the tokens of connection %s, but storing them failed; "
                                 "the next refresh of it gets invalid_grant", connection_id)
            raise

        if rejection is None:
            logger.info("Refreshed connection %s to version %s", connection_id, tokens.version)
            return tokens

        # A refresh token that another writer already rotated gets invalid_grant.
        # A newer version in storage means that refresh succeeded elsewhere.
        newer = self._newer_tokens(connection_id, read_version)
        if newer is not None:
            logger.info("Connection %s got invalid_grant, but version %s was stored meanwhile", connection_id, newer.version)
            return newer
        raise rejection

    def mint_again(self, connection_id: int, *, seen_version: int | None = None, margin: timedelta = REFRESH_MARGIN) -> Tokens:
        """Mint a new location token from the agency's token for a connection that has no refresh token."""
        with session_scope(self.engine) as session:
            connection = queries.get_connection(session=session, connection_id=connection_id)
            if connection is None:
                raise LookupError(f"Connection {connection_id} no longer exists")
            if not _is_due(connection, seen_version, margin):
                return self.tokens_of(connection)
            read_version = connection.version
            location_id = connection.location_id
            agency = self._minting_agency(session, connection)
            company_id = agency.company_id if agency else None
            agency_connection = queries.get_connection_for_agency(session=session, agency_id=agency.id) if agency else None
            if location_id is None or agency_connection is None:
                raise CrmError(CrmReason.INVALID_GRANT, "The connection has no refresh token, and no connected agency can mint a new one")
            agency_connection_id = agency_connection.id

        grant = self.call_with_token(agency_connection_id, lambda token: self.crm.mint_location_token(
            token, company_id=company_id, location_id=location_id))

        with write_lock_scope(self.engine) as session:
            connection = queries.get_connection(session=session, connection_id=connection_id, for_update=True)
            if connection is None:
                raise LookupError(f"Connection {connection_id} no longer exists")
            if connection.version != read_version:
                # Another process renewed meanwhile; the token minted here is left unused.
                return self.tokens_of(connection)
            self._write_grant(connection, grant)
            connection.refreshed_at = utcnow()
            session.flush()
            tokens = replace(self.tokens_of(connection), renewed=True)
        logger.info("Minted a new location token for connection %s (version %s)", connection_id, tokens.version)
        return tokens

    def _minting_agency(self, session: Session, connection: Connection):
        """Return the agency that can mint the connection's location token: the account's agency, else the token's company."""
        account = queries.get_account(session=session, account_id=connection.account_id) if connection.account_id else None
        if account is not None and account.agency_id is not None:
            return queries.get_agency(session=session, agency_id=account.agency_id)
        if connection.company_id:
            return queries.get_agency_by_company_id(session=session, company_id=connection.company_id)
        return None

    def _newer_tokens(self, connection_id: int, version: int) -> Tokens | None:
        with session_scope(self.engine) as session:
            connection = queries.get_connection(session=session, connection_id=connection_id)
            if connection is None or connection.version == version:
                return None
            return self.tokens_of(connection)

    def _write_grant(self, connection: Connection, grant: TokenGrant, *, keep_refresh_token: bool = False) -> None:
        connection.access_token_encrypted = self.cipher.encrypt(grant.access_token)
        # A minted location token may come without a refresh token, and then the
        # connection keeps none. A refresh response should carry the rotated one;
        # when it does not, the old one is kept, because it may still be valid.
        if grant.refresh_token:
            connection.refresh_token_encrypted = self.cipher.encrypt(grant.refresh_token)
        elif keep_refresh_token and connection.refresh_token_encrypted:
            logger.warning("The refresh response for connection %s carried no refresh token; keeping the old one", connection.id)
        else:
            connection.refresh_token_encrypted = None
        connection.expires_at = grant.expires_at
        connection.scopes = grant.scopes
        connection.user_type = grant.user_type
        connection.company_id = grant.company_id
        connection.location_id = grant.location_id
        connection.crm_user_id = grant.crm_user_id
        connection.version = (connection.version or 0) + 1
        connection.updated_at = utcnow()


def _is_due(connection: Connection, seen_version: int | None, margin: timedelta) -> bool:
    if seen_version is not None:
        return connection.version == seen_version
    return connection.expires_at <= utcnow() + margin
