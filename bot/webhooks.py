"""CRM marketplace webhooks: verification, deduplication, and what INSTALL and UNINSTALL change.

A delivery is accepted only when all of these hold, checked in this order:

1. It is signed. `X-GHL-Signature` is an Ed25519 signature over the raw body,
   checked with CRM_WEBHOOK_PUBLIC_KEY. The legacy `x-wh-signature` is an
   RSA-SHA256 (PKCS#1 v1.5) signature, checked with CRM_WEBHOOK_RSA_PUBLIC_KEY
   when that is set. Both are base64. With no key configured, every delivery
   is rejected.
2. Its `timestamp`, when it has one, is within 5 minutes of now.
3. Its `appId` is this app's id.
4. Its `webhookId` was not accepted before. The unique webhook id in the
   webhook_delivery table decides between processes that receive it at once.
   The CRM's documented INSTALL and UNINSTALL examples carry neither
   `timestamp` nor `webhookId`, so a delivery without an id is deduplicated
   on the SHA-256 of its body: a replayed copy is still rejected.
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding

from bot.accounts import mark_red, set_agency_status
from bot.crm import CrmError
from bot.lifecycle import Lifecycle
from bot.settings import Settings, load_ed25519_public_key, load_rsa_public_key
from storage import lifecycle_queries, queries
from storage.db import utcnow, write_lock_scope
from storage.lifecycle_models import WebhookDelivery
from storage.models import CONNECTED, NEEDS_RECONNECT, Account

logger = logging.getLogger(__name__)

SIGNATURE_HEADER = "X-GHL-Signature"
LEGACY_SIGNATURE_HEADER = "x-wh-signature"
MAX_AGE = timedelta(minutes=5)
UNINSTALLED_DETAIL = "The app was uninstalled in the CRM"


@dataclass(frozen=True)
class WebhookResult:
    """The HTTP status and a short message for the CRM."""

    status: int
    message: str


class WebhookRejected(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


class WebhookService:
    def __init__(self, *, settings: Settings, lifecycle: Lifecycle) -> None:
        self.settings = settings
        self.lifecycle = lifecycle
        self.connections = lifecycle.connections
        self.engine = lifecycle.engine
        self._ed25519_key = load_ed25519_public_key(settings.crm_webhook_public_key) if settings.crm_webhook_public_key else None
        self._rsa_key = load_rsa_public_key(settings.crm_webhook_rsa_public_key) if settings.crm_webhook_rsa_public_key else None

    def handle(self, body: bytes, headers: Mapping[str, str]) -> WebhookResult:
        """Verify one delivery and apply it. A rejection or a failure while applying becomes a status."""
        try:
            self.verify_signature(body, headers)
            payload = parse_payload(body)
            check_timestamp(payload, now=utcnow())
            self.check_app(payload)
        except WebhookRejected as rejection:
            logger.warning("Rejected a CRM webhook (HTTP %s): %s", rejection.status, rejection)
            return WebhookResult(rejection.status, str(rejection))

        webhook_id = delivery_id(payload, body)
        event_type = str(payload.get("type") or "")
        delivery = WebhookDelivery(webhook_id=webhook_id[:128], event_type=event_type[:32],
                                   company_id=payload.get("companyId"), location_id=payload.get("locationId"))
        # Transactions here read, then write. On SQLite such a transaction fails at once with
        # "database is locked" when another writer went first, so each one takes the write lock up front.
        with write_lock_scope(self.engine) as session:
            claimed = lifecycle_queries.claim_delivery(session=session, delivery=delivery)
        if not claimed:
            logger.info("Rejected a repeated CRM webhook %s", webhook_id)
            return WebhookResult(409, "This webhookId was already received.")

        logger.info("CRM webhook %s: %s (company %s, location %s)", webhook_id, event_type,
                    payload.get("companyId"), payload.get("locationId"))
        try:
            message = self.apply(payload)
        except Exception:
            logger.exception("CRM webhook %s (%s) failed", webhook_id, event_type)
            with write_lock_scope(self.engine) as session:
                lifecycle_queries.release_delivery(session=session, webhook_id=delivery.webhook_id)
            return WebhookResult(500, "The bot failed to process this webhook; it was logged.")

        with write_lock_scope(self.engine) as session:
            lifecycle_queries.finish_delivery(session=session, webhook_id=delivery.webhook_id)
        return WebhookResult(200, message)

    # Checks

    def verify_signature(self, body: bytes, headers: Mapping[str, str]) -> None:
        """Raise WebhookRejected (401) unless a configured key verifies the body's signature."""
        if self._ed25519_key is None and self._rsa_key is None:
            raise WebhookRejected(401, "No webhook key is configured: set CRM_WEBHOOK_PUBLIC_KEY to accept CRM webhooks.")

        signature = headers.get(SIGNATURE_HEADER)
        legacy = headers.get(LEGACY_SIGNATURE_HEADER)
        if signature and self._ed25519_key is not None:
            self._verify(lambda raw: self._ed25519_key.verify(raw, body), signature, SIGNATURE_HEADER)
        elif legacy and self._rsa_key is not None:
            self._verify(lambda raw: self._rsa_key.verify(raw, body, padding.PKCS1v15(), hashes.SHA256()), legacy, LEGACY_SIGNATURE_HEADER)
        else:
            raise WebhookRejected(401, f"The request carries no {SIGNATURE_HEADER} signature that a configured key can check.")

    def _verify(self, check, signature: str, header: str) -> None:
        try:
            check(base64.b64decode(signature.strip(), validate=True))
        except (ValueError, InvalidSignature) as error:
            raise WebhookRejected(401, f"The {header} signature does not match the body.") from error

    def check_app(self, payload: dict) -> None:
        app_id = self.settings.app_id
        if not app_id or payload.get("appId") != app_id:
            raise WebhookRejected(403, "The webhook is for another app (appId does not match).")

    # Events

    def apply(self, payload: dict) -> str:
        """Apply an INSTALL or UNINSTALL event; other event types are acknowledged and ignored."""
        event_type = payload.get("type")
        company_id = payload.get("companyId") or None
        location_id = payload.get("locationId") or None

        if event_type == "INSTALL" and location_id:
            return self.install_location(location_id, company_id)
        if event_type == "INSTALL" and company_id:
            return self.install_company(company_id, payload.get("companyName"))
        if event_type == "UNINSTALL" and location_id:
            return self.uninstall_location(location_id)
        if event_type == "UNINSTALL" and company_id:
            return self.uninstall_company(company_id)
        return f"Ignored the event type {str(event_type)[:32]!r}."

    def install_location(self, location_id: str, company_id: str | None) -> str:
        """Record an installed sub-account, and connect it through its agency when the agency is connected."""
        with write_lock_scope(self.engine) as session:
            agency = queries.get_agency_by_company_id(session=session, company_id=company_id) if company_id else None
            account = queries.get_account_by_location_id(session=session, location_id=location_id)
            if account is None:
                # The name is unknown until a token can read it, so the location id is used meanwhile.
                account = queries.create_account(session=session, name=location_id, location_id=location_id,
                                                 agency_id=agency.id if agency else None, company_id=company_id)
            elif account.agency_id is None and agency is not None:
                account.agency_id = agency.id
                account.company_id = company_id
            queries.add_event(session=session, kind="installed", account_id=account.id, detail="The app was installed in the CRM")
            agency_connected = agency is not None and agency.status == CONNECTED

        if account.status == CONNECTED or not agency_connected:
            return f"Recorded the install on location {location_id}."

        synced, why = self.connections.try_agency_mint(account, actor_user_id=None)
        if not synced:
            logger.info("Install webhook: location %s not connected through the agency: %s", location_id, why)
            return f"Recorded the install on location {location_id}; connecting it through the agency failed."
        self._learn_name(account)
        return f"Connected location {location_id} through the agency."

    def install_company(self, company_id: str, company_name: str | None) -> str:
        with write_lock_scope(self.engine) as session:
            agency = queries.get_or_create_agency(session=session, company_id=company_id, name=company_name)
            queries.add_event(session=session, kind="installed", agency_id=agency.id, detail="The app was installed on the agency in the CRM")
        return f"Recorded the install on company {company_id}."

    def uninstall_location(self, location_id: str) -> str:
        """Clear the tokens of an uninstalled sub-account and turn it red (needs_reconnect)."""
        with write_lock_scope(self.engine) as session:
            account = queries.get_account_by_location_id(session=session, location_id=location_id)
            account_id = account.id if account else None
        if account_id is None:
            return f"No account has the location id {location_id}; nothing to do."
        self._uninstall_account(account_id)
        return f"Location {location_id} needs a reconnect."

    def uninstall_company(self, company_id: str) -> str:
        """Turn the agency and every account minted from its token red (needs_reconnect)."""
        with write_lock_scope(self.engine) as session:
            agency = queries.get_agency_by_company_id(session=session, company_id=company_id)
            minted = lifecycle_queries.list_agency_minted_connections(session=session, agency_id=agency.id if agency else -1,
                                                                      company_id=company_id)
            minted_account_ids = [connection.account_id for connection in minted]
            if agency is not None:
                connection = queries.get_connection_for_agency(session=session, agency_id=agency.id)
                if connection is not None:
                    queries.delete_connection(session=session, connection=connection)
                set_agency_status(session, agency, connected=False, reason=NEEDS_RECONNECT)
                queries.add_event(session=session, kind="uninstalled", agency_id=agency.id, reason=NEEDS_RECONNECT,
                                  detail=UNINSTALLED_DETAIL)
                logger.info("Agency %s shows No Active CRM Connection (uninstalled)", agency.id)

        for account_id in minted_account_ids:
            self._uninstall_account(account_id)
        return f"Company {company_id} and {len(minted_account_ids)} accounts connected through it need a reconnect."

    def _uninstall_account(self, account_id: int) -> None:
        with write_lock_scope(self.engine) as session:
            account = lifecycle_queries.lock_account(session=session, account_id=account_id)
            connection = queries.get_connection_for_account(session=session, account_id=account_id)
            if connection is not None:
                queries.delete_connection(session=session, connection=connection)
            change = mark_red(session, account, reason=NEEDS_RECONNECT, error=UNINSTALLED_DETAIL, event_kind="uninstalled")
        self.connections.notify_change(account, False, change.turned_red)

    def _learn_name(self, account: Account) -> None:
        """Replace a stand-in name (the location id) with the name that the CRM returns."""
        with write_lock_scope(self.engine) as session:
            connection = queries.get_connection_for_account(session=session, account_id=account.id)
        if connection is None:
            return
        try:
            location = self.lifecycle.tokens.call_with_token(
                connection.id, lambda token: self.lifecycle.crm.get_location(token, account.location_id))
        except CrmError as error:
            logger.warning("Could not read the name of location %s: %s", account.location_id, error.reason)
            return
        name = str(location.get("name") or "").strip()
        if not name:
            return
        with write_lock_scope(self.engine) as session:
            fresh = queries.get_account(session=session, account_id=account.id)
            if fresh.name == fresh.location_id:
                fresh.name = name[:255]
                fresh.name_key = queries.name_key(name[:255])


def parse_payload(body: bytes) -> dict:
    try:
        payload = json.loads(body)
    except ValueError as error:
        raise WebhookRejected(400, "The body is not JSON.") from error
    if not isinstance(payload, dict):
        raise WebhookRejected(400, "The body is not a JSON object.")
    return payload


def delivery_id(payload: dict, body: bytes) -> str:
    """Return the key that deduplicates a delivery: its `webhookId`, else a hash of its body."""
    if payload.get("webhookId"):
        return str(payload["webhookId"])
    return "sha256:" + hashlib.sha256(body).hexdigest()


def check_timestamp(payload: dict, *, now: datetime) -> None:
    """Raise WebhookRejected (400) when a `timestamp` is present and not within MAX_AGE of `now`."""
    raw = payload.get("timestamp")
    if raw is None:
        return
    try:
        sent_at = datetime.fromisoformat(str(raw).replace("Z", "+00:00"))
    except ValueError as error:
        raise WebhookRejected(400, "The webhook has no valid timestamp, so a replay cannot be detected.") from error
    if sent_at.tzinfo is None:
        raise WebhookRejected(400, "The webhook's timestamp has no time zone.")
    if abs(now - sent_at) > MAX_AGE:
        raise WebhookRejected(400, "The webhook's timestamp is more than 5 minutes from now (stale or replayed).")
