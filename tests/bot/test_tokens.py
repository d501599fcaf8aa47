"""TokenStore: saving grants and refreshing under the row lock, against the CRM simulator."""

from __future__ import annotations

from datetime import timedelta
from urllib.parse import parse_qs, urlsplit

import pytest
from cryptography.fernet import Fernet

from bot.crm import CrmClient, CrmError, CrmReason
from bot.crypto import TokenCipher
from bot.tokens import TokenStore
from storage import queries
from storage.db import session_scope, utcnow


@pytest.fixture
def store(engine, crm):
    client = CrmClient(api_url=crm.url, authorize_url=f"{crm.url}/oauth/chooselocation", client_id=crm.client_id,
                       client_secret=crm.client_secret, scopes="", redirect_uri="http://127.0.0.1:9/oauth/callback")
    yield TokenStore(engine=engine, cipher=TokenCipher(Fernet.generate_key().decode()), crm=client)
    client.close()


def connected(store, crm) -> int:
    callback = crm.authorize(store.crm.build_authorize_url("s"), "location:loc-acme")
    grant = store.crm.exchange_code(parse_qs(urlsplit(callback).query)["code"][0])
    with session_scope(store.engine) as session:
        account = queries.create_account(session=session, name="Acme Dental", location_id="loc-acme")
        return store.save_grant(session, grant, method="direct", account_id=account.id).id


def test_refresh_skipped_when_fresh(store, crm):
    connection_id = connected(store, crm)

    tokens = store.refresh(connection_id)

    assert tokens.version == 1
    assert crm.refresh_successes == 0


def test_forced_refresh_stores_rotated_token(store, crm):
    connection_id = connected(store, crm)
    before = store.refresh(connection_id)

    after = store.refresh(connection_id, seen_version=before.version)

    assert after.version == before.version + 1
    assert after.refresh_token != before.refresh_token
    assert crm.refresh_successes == 1
    with session_scope(store.engine) as session:
        stored = store.tokens_of(queries.get_connection(session=session, connection_id=connection_id))
    assert stored.refresh_token == after.refresh_token


def test_stale_version_uses_newer_tokens(store, crm):
    connection_id = connected(store, crm)
    first = store.refresh(connection_id, seen_version=1)

    again = store.refresh(connection_id, seen_version=1)

    assert again.refresh_token == first.refresh_token
    assert crm.refresh_successes == 1


def test_refresh_due_within_margin(store, crm):
    connection_id = connected(store, crm)
    with session_scope(store.engine) as session:
        connection = queries.get_connection(session=session, connection_id=connection_id)
        connection.expires_at = utcnow() + timedelta(minutes=10)

    tokens = store.refresh(connection_id)

    assert tokens.version == 2
    assert crm.refresh_successes == 1


def test_revoked_refresh_raises_invalid_grant(store, crm):
    connection_id = connected(store, crm)
    crm.revoke_grants(location_id="loc-acme")

    with pytest.raises(CrmError) as error:
        store.refresh(connection_id, seen_version=1)

    assert error.value.reason is CrmReason.INVALID_GRANT
