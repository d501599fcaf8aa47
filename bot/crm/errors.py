"""Classification of the CRM's error responses into reasons that callers act on."""

from __future__ import annotations

import enum

from bot.errors import BotError


class CrmReason(enum.StrEnum):
    INVALID_GRANT = "invalid_grant"            # refresh token reused, revoked or expired
    CODE_NOT_FOUND = "code_not_found"          # authorization code reused or unknown
    LOCATION_NOT_ACTIVE = "location_not_active"  # the sub-account is paused; tokens stay valid
    NO_LOCATION_ACCESS = "no_location_access"  # the token does not cover this location
    AUTH_CLASS = "auth_class"                  # a Company token on a location endpoint
    SCOPE = "scope"                            # a scope is missing from the app
    INVALID_TOKEN = "invalid_token"            # access token expired or revoked: refresh once
    INVALID_CLIENT = "invalid_client"          # CRM_CLIENT_ID or CRM_CLIENT_SECRET is wrong
    NOT_INSTALLED = "not_installed"            # the app is not installed on the location
    VERSION_HEADER = "version_header"          # a bug of this client, never a reason to reconnect
    APP_ID = "app_id"                          # installedLocations without a valid appId
    TRANSIENT = "transient"                    # timeout, connection error, 5xx or 429
    REJECTED = "rejected"                      # any other 4xx


class CrmError(BotError):
    """The CRM returned an error, or did not respond.

    `status` is the HTTP status (None when no response came), `crm_message` the
    CRM's own message, and `reason` the classified CrmReason.
    """

    def __init__(self, reason: CrmReason, crm_message: str, *, status: int | None = None, retry_after: float | None = None) -> None:
        super().__init__(f"CRM error {status or 'without answer'} ({reason}): {crm_message}")
        self.reason = reason
        self.crm_message = crm_message
        self.status = status
        self.retry_after = retry_after

    @property
    def is_transient(self) -> bool:
        return self.reason is CrmReason.TRANSIENT


# Substrings of the CRM's messages, checked in order, lower-case.
_MESSAGE_RULES = (
    ("invalid grant", CrmReason.INVALID_GRANT),
    ("invalid_grant", CrmReason.INVALID_GRANT),
    ("authorization code not found", CrmReason.CODE_NOT_FOUND),
    ("location is not active", CrmReason.LOCATION_NOT_ACTIVE),
    ("does not have access to this location", CrmReason.NO_LOCATION_ACCESS),
    ("authclass type is not allowed", CrmReason.AUTH_CLASS),
    ("not authorized for this scope", CrmReason.SCOPE),
    ("version header was not found", CrmReason.VERSION_HEADER),
    ("invalid token", CrmReason.INVALID_TOKEN),
    ("invalid_client", CrmReason.INVALID_CLIENT),
    ("invalid client", CrmReason.INVALID_CLIENT),
    ("not installed", CrmReason.NOT_INSTALLED),
    ("appid", CrmReason.APP_ID),
)


def message_of(body: object) -> str:
    """Join the message fields of an error body: `message` (a string or, on 422, a list), `error`, `error_description`."""
    if not isinstance(body, dict):
        return str(body or "")[:500]
    parts = []
    for key in ("error", "error_description", "message"):
        value = body.get(key)
        if isinstance(value, list):
            parts.extend(str(item) for item in value)
        elif value:
            parts.append(str(value))
    return "; ".join(parts)[:500]


def classify(status: int, body: object) -> CrmReason:
    """Classify an error response by its status and body."""
    if status == 429 or status >= 500:
        return CrmReason.TRANSIENT

    text = message_of(body).lower()
    for needle, reason in _MESSAGE_RULES:
        if needle in text:
            return reason

    if status == 401:
        return CrmReason.INVALID_TOKEN
    if status == 403:
        return CrmReason.NO_LOCATION_ACCESS
    return CrmReason.REJECTED
