"""POST /webhooks/crm over HTTP: signatures, replays, and what INSTALL and UNINSTALL change."""

from __future__ import annotations

import base64
import json
import threading
import time

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from bot.errors import ConfigError
from bot.settings import Settings
from storage.db import session_scope
from storage import queries
from tests.bot.lifecycle_helpers import account_of, connect_agency, connect_direct, connect_minted, events_of
from tests.conftest import AGENCY_COMPANY_ID, AGENT


@pytest.fixture
def settings_overrides(crm):
    return {"crm_webhook_public_key": crm.webhook_public_key_pem, "crm_webhook_rsa_public_key": crm.webhook_rsa_public_key_pem}


def webhook_url(bot) -> str:
    return f"{bot.url}/webhooks/crm"


def send(bot, payload: dict, **options):
    return bot.crm.send_webhook(webhook_url(bot), payload, **options)


def account_by_location(bot, location_id: str):
    with session_scope(bot.services.engine) as session:
        return queries.get_account_by_location_id(session=session, location_id=location_id)


# Verification

def test_webhook_ed25519_accepted(bot):
    status, body = send(bot, bot.crm.webhook_event("INSTALL", companyId=AGENCY_COMPANY_ID, companyName="Bright Agency"))

    assert status == 200
    assert "Recorded the install" in body["message"]


def test_webhook_legacy_rsa_accepted(bot):
    status, _ = send(bot, bot.crm.webhook_event("INSTALL", companyId=AGENCY_COMPANY_ID), scheme="rsa")

    assert status == 200


def test_webhook_missing_signature_rejected(bot):
    status, body = send(bot, bot.crm.webhook_event("UNINSTALL", locationId="loc-acme"), scheme=None)

    assert status == 401
    assert "signature" in body["message"]


def test_webhook_forged_signature_rejected(bot):
    connect_direct(bot.services, bot.crm)
    payload = bot.crm.webhook_event("UNINSTALL", locationId="loc-acme")
    signed_for_other_body = bot.crm.sign_webhook(b'{"type": "INSTALL"}')

    status, _ = send(bot, payload, scheme=None, headers=signed_for_other_body)

    assert status == 401
    assert account_by_location(bot, "loc-acme").status == "connected"


def test_webhook_foreign_key_rejected(bot):
    payload = bot.crm.webhook_event("INSTALL", companyId=AGENCY_COMPANY_ID)
    body = json.dumps(payload).encode()
    forged = base64.b64encode(Ed25519PrivateKey.generate().sign(body)).decode()

    status, _ = send(bot, payload, scheme=None, headers={"X-GHL-Signature": forged})

    assert status == 401


def test_webhook_stale_timestamp_rejected(bot):
    six_minutes_ago = time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime(time.time() - 360))
    payload = bot.crm.webhook_event("INSTALL", companyId=AGENCY_COMPANY_ID, timestamp=six_minutes_ago)

    status, body = send(bot, payload)

    assert status == 400
    assert "5 minutes" in body["message"]


def test_webhook_malformed_timestamp_rejected(bot):
    payload = bot.crm.webhook_event("INSTALL", companyId=AGENCY_COMPANY_ID, timestamp="yesterday")

    status, _ = send(bot, payload)

    assert status == 400


def test_webhook_documented_uninstall_shape_accepted(bot):
    connect_direct(bot.services, bot.crm, "loc-acme")
    payload = {"type": "UNINSTALL", "appId": bot.crm.app_id, "locationId": "loc-acme"}

    first, _ = send(bot, payload)
    replay, body = send(bot, payload)

    assert first == 200
    assert account_by_location(bot, "loc-acme").reason == "needs_reconnect"
    assert replay == 409
    assert "already received" in body["message"]


def test_webhook_repeat_rejected(bot):
    payload = bot.crm.webhook_event("INSTALL", companyId=AGENCY_COMPANY_ID)

    first, _ = send(bot, payload)
    second, body = send(bot, payload)

    assert first == 200
    assert second == 409
    assert "already received" in body["message"]


def test_webhook_repeat_at_once_accepted_once(bot):
    payload = bot.crm.webhook_event("INSTALL", companyId=AGENCY_COMPANY_ID)
    statuses = []
    start = threading.Barrier(8)

    def deliver():
        start.wait()
        statuses.append(send(bot, payload)[0])

    threads = [threading.Thread(target=deliver) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)

    assert sorted(statuses) == [200] + [409] * 7


def test_webhook_other_app_rejected(bot):
    status, body = send(bot, bot.crm.webhook_event("UNINSTALL", locationId="loc-acme", appId="another-app"))

    assert status == 403
    assert "another app" in body["message"]


class TestWithoutKey:
    @pytest.fixture
    def settings_overrides(self):
        return {}

    def test_webhook_rejected_without_key(self, bot):
        status, body = send(bot, bot.crm.webhook_event("INSTALL", companyId=AGENCY_COMPANY_ID))

        assert status == 401
        assert "CRM_WEBHOOK_PUBLIC_KEY" in body["message"]


# Keys in settings

def test_settings_accept_raw_base64_key():
    raw = Ed25519PrivateKey.generate().public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)

    settings = Settings.from_env({"CRM_WEBHOOK_PUBLIC_KEY": base64.b64encode(raw).decode()})

    assert settings.crm_webhook_public_key


def test_settings_accept_escaped_pem_key(crm):
    escaped = crm.webhook_public_key_pem.strip().replace("\n", "\\n")

    settings = Settings.from_env({"CRM_WEBHOOK_PUBLIC_KEY": escaped})

    assert settings.crm_webhook_public_key.startswith("-----BEGIN PUBLIC KEY-----\n")


@pytest.mark.parametrize("name, value", [
    ("CRM_WEBHOOK_PUBLIC_KEY", "not-a-key"),
    ("CRM_WEBHOOK_RSA_PUBLIC_KEY", "-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----"),
])
def test_settings_reject_malformed_key(name, value):
    with pytest.raises(ConfigError) as error:
        Settings.from_env({name: value})

    assert name in str(error.value)


def test_settings_reject_rsa_as_ed25519_key(crm):
    with pytest.raises(ConfigError) as error:
        Settings.from_env({"CRM_WEBHOOK_PUBLIC_KEY": crm.webhook_rsa_public_key_pem})

    assert "not an Ed25519 key" in str(error.value)


# Events

def test_uninstall_location_needs_reconnect(bot):
    account_id, _ = connect_direct(bot.services, bot.crm)
    bot.crm.uninstall_location("loc-acme")

    status, _ = send(bot, bot.crm.webhook_event("UNINSTALL", locationId="loc-acme"))

    account = account_of(bot.services, account_id)
    assert status == 200
    assert account.reason == "needs_reconnect"
    assert events_of(bot.services, account_id)[0].kind == "uninstalled"
    with session_scope(bot.services.engine) as session:
        assert queries.get_connection_for_account(session=session, account_id=account_id) is None
    assert any("now shows" in message.get("text", "") for message in bot.slack.dms_to(AGENT))


def test_uninstall_company_reds_minted_accounts(bot):
    services, crm = bot.services, bot.crm
    agency_id, _ = connect_agency(services, crm)
    minted_id, _ = connect_minted(services, agency_id, "loc-acme", "Acme Dental")
    direct_id, _ = connect_direct(services, crm, "loc-bolt", "Bolt Plumbing")

    status, body = send(bot, crm.webhook_event("UNINSTALL", companyId=AGENCY_COMPANY_ID))

    assert status == 200
    assert "1 accounts" in body["message"]
    assert account_of(services, minted_id).reason == "needs_reconnect"
    assert account_of(services, direct_id).status == "connected"
    with session_scope(services.engine) as session:
        agency = queries.get_agency(session=session, agency_id=agency_id)
        assert agency.status != "connected"
        assert agency.reason == "needs_reconnect"
        assert queries.get_connection_for_agency(session=session, agency_id=agency_id) is None


def test_install_location_mints_through_agency(bot):
    connect_agency(bot.services, bot.crm)

    status, body = send(bot, bot.crm.webhook_event("INSTALL", companyId=AGENCY_COMPANY_ID, locationId="loc-bolt",
                                                   installType="Location"))

    account = account_by_location(bot, "loc-bolt")
    assert status == 200
    assert "through the agency" in body["message"]
    assert account.status == "connected"
    assert account.method == "agency"
    assert account.name == "Bolt Plumbing"


def test_install_location_recorded_without_agency(bot):
    status, _ = send(bot, bot.crm.webhook_event("INSTALL", companyId="comp-other", locationId="loc-ext"))

    account = account_by_location(bot, "loc-ext")
    assert status == 200
    assert account.status != "connected"
    assert account.reason == "never_connected"
    assert [event.kind for event in events_of(bot.services, account.id)] == ["installed"]


def test_install_repeat_is_harmless(bot):
    connect_agency(bot.services, bot.crm)
    for _ in range(2):
        send(bot, bot.crm.webhook_event("INSTALL", companyId=AGENCY_COMPANY_ID, locationId="loc-bolt"))

    account = account_by_location(bot, "loc-bolt")
    assert account.status == "connected"
    assert [event.kind for event in events_of(bot.services, account.id)].count("connected") == 1
