"""Typed settings, read once from the environment.

Nothing else in the bot reads `os.environ`. Each command of the CLI builds one
`Settings` and checks the values that command needs, so that a missing value
stops start-up with a message that names the variable and an example.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import time
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from bot.errors import ConfigError

DEFAULT_SCOPES = (
    "locations.readonly oauth.readonly oauth.write"
)
DAY_NAMES = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
PLACEHOLDER_SECRETS = {"changeme", "change-me", "secret", "xxx", "todo"}


@dataclass(frozen=True)
class Settings:
    slack_bot_token: str | None = None
    slack_signing_secret: str | None = None
    slack_api_url: str = "https://slack.com/api/"
    slack_app_token: str | None = None
    database_url: str = "sqlite:///crm-bot.db"
    public_url: str = "http://localhost:3000"
    port: int = 3000
    crm_client_id: str | None = None
    crm_client_secret: str | None = None
    crm_app_id: str | None = None
    crm_scopes: str = DEFAULT_SCOPES
    crm_authorize_url: str = "https://marketplace.gohighlevel.com/oauth/chooselocation"
    crm_api_url: str = "https://services.leadconnectorhq.com"
    crm_app_url: str = "https://app.gohighlevel.com"
    crm_webhook_public_key: str | None = None
    crm_webhook_rsa_public_key: str | None = None
    transient_failure_window_hours: float = 24.0
    token_encryption_key: str | None = None
    digest_channels: tuple[str, ...] = ()
    digest_time: time = time(9, 0)
    digest_timezone: str = "UTC"
    digest_days: str = "mon-sun"
    digest_when_empty: str = "post"
    scheduler: str = "embedded"
    admin_user_ids: frozenset[str] = field(default_factory=frozenset)
    state_ttl_seconds: int = 30 * 60

    @property
    def redirect_uri(self) -> str:
        return self.public_url.rstrip("/") + "/oauth/callback"

    @property
    def app_id(self) -> str | None:
        """The marketplace app id: CRM_APP_ID, or the client id's prefix before '-'."""
        if self.crm_app_id:
            return self.crm_app_id
        if self.crm_client_id:
            return self.crm_client_id.split("-", 1)[0]
        return None

    def is_admin(self, user_id: str) -> bool:
        """Tell whether a Slack user may reset and sync; everyone may when no admins are set."""
        return not self.admin_user_ids or user_id in self.admin_user_ids

    def require(self, *names: str) -> None:
        """Raise ConfigError naming the first of `names` (environment names) that is unset."""
        for name in names:
            if not getattr(self, _ATTRIBUTE_BY_ENV[name]):
                raise ConfigError(f"{name} is required. Set it, for example {name}={_EXAMPLES[name]}")

    def require_for_serve(self) -> None:
        """Raise ConfigError unless the web process can verify and respond to Slack requests.

        The CRM credentials are checked when a link is made, so that an operator
        can start the process and check /healthz before the app is registered.
        """
        self.require("SLACK_SIGNING_SECRET", "SLACK_BOT_TOKEN", "TOKEN_ENCRYPTION_KEY")
        _reject_placeholder("SLACK_SIGNING_SECRET", self.slack_signing_secret)
        _reject_placeholder("CRM_CLIENT_SECRET", self.crm_client_secret)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        """Build settings from `environ` (default: the process environment).

        Raises ConfigError for a malformed value. Required values are checked
        later by `require`, because each command needs a different set.
        """
        env = dict(os.environ if environ is None else environ)
        values = {}

        for name, attribute in _ATTRIBUTE_BY_ENV.items():
            raw = env.get(name, "").strip()
            if raw and name not in _PARSED:
                values[attribute] = raw

        values["database_url"] = normalise_database_url(env.get("DATABASE_URL", "").strip() or cls.database_url)
        values["port"] = _parse_port(env.get("PORT", "").strip())
        values["slack_api_url"] = _parse_url("SLACK_API_URL", values.get("slack_api_url", cls.slack_api_url), "https://slack.com/api/")
        if not values["slack_api_url"].endswith("/"):
            values["slack_api_url"] += "/"
        for name in ("PUBLIC_URL", "CRM_AUTHORIZE_URL", "CRM_API_URL", "CRM_APP_URL"):
            attribute = _ATTRIBUTE_BY_ENV[name]
            values[attribute] = _parse_url(name, values.get(attribute, getattr(cls, attribute)), _EXAMPLES[name]).rstrip("/")

        values["digest_channels"] = _parse_channels(env.get("DIGEST_CHANNEL", ""))
        values["digest_time"] = _parse_digest_time(env.get("DIGEST_TIME", "").strip())
        values["digest_timezone"] = _parse_timezone(env.get("DIGEST_TIMEZONE", "").strip() or "UTC")
        values["digest_days"] = parse_days(env.get("DIGEST_DAYS", "").strip() or "mon-sun")
        values["digest_when_empty"] = _parse_choice("DIGEST_WHEN_EMPTY", env.get("DIGEST_WHEN_EMPTY", ""), ("post", "skip"), "post")
        values["scheduler"] = _parse_choice("SCHEDULER", env.get("SCHEDULER", ""), ("embedded", "off"), "embedded")
        values["admin_user_ids"] = _parse_user_ids(env.get("ADMIN_USER_IDS", ""))
        values["transient_failure_window_hours"] = _parse_hours("TRANSIENT_FAILURE_WINDOW_HOURS", env.get("TRANSIENT_FAILURE_WINDOW_HOURS", ""), 24.0)

        for name in ("CRM_WEBHOOK_PUBLIC_KEY", "CRM_WEBHOOK_RSA_PUBLIC_KEY"):
            attribute = _ATTRIBUTE_BY_ENV[name]
            if attribute in values:
                values[attribute] = values[attribute].replace("\\n", "\n")
        if "crm_webhook_public_key" in values:
            load_ed25519_public_key(values["crm_webhook_public_key"])
        if "crm_webhook_rsa_public_key" in values:
            load_rsa_public_key(values["crm_webhook_rsa_public_key"])

        if "token_encryption_key" in values:
            _check_encryption_keys(values["token_encryption_key"])

        return cls(**values)


_ATTRIBUTE_BY_ENV = {
    "SLACK_BOT_TOKEN": "slack_bot_token",
    "SLACK_SIGNING_SECRET": "slack_signing_secret",
    "SLACK_API_URL": "slack_api_url",
    "SLACK_APP_TOKEN": "slack_app_token",
    "DATABASE_URL": "database_url",
    "PUBLIC_URL": "public_url",
    "PORT": "port",
    "CRM_CLIENT_ID": "crm_client_id",
    "CRM_CLIENT_SECRET": "crm_client_secret",
    "CRM_APP_ID": "crm_app_id",
    "CRM_SCOPES": "crm_scopes",
    "CRM_AUTHORIZE_URL": "crm_authorize_url",
    "CRM_API_URL": "crm_api_url",
    "CRM_APP_URL": "crm_app_url",
    "CRM_WEBHOOK_PUBLIC_KEY": "crm_webhook_public_key",
    "CRM_WEBHOOK_RSA_PUBLIC_KEY": "crm_webhook_rsa_public_key",
    "TRANSIENT_FAILURE_WINDOW_HOURS": "transient_failure_window_hours",
    "TOKEN_ENCRYPTION_KEY": "token_encryption_key",
    "DIGEST_CHANNEL": "digest_channels",
    "DIGEST_TIME": "digest_time",
    "DIGEST_TIMEZONE": "digest_timezone",
    "DIGEST_DAYS": "digest_days",
    "DIGEST_WHEN_EMPTY": "digest_when_empty",
    "SCHEDULER": "scheduler",
    "ADMIN_USER_IDS": "admin_user_ids",
}

# Variables whose raw string is not stored as is.
_PARSED = {
    "DATABASE_URL", "PORT", "DIGEST_CHANNEL", "DIGEST_TIME", "DIGEST_TIMEZONE",
    "DIGEST_DAYS", "DIGEST_WHEN_EMPTY", "SCHEDULER", "ADMIN_USER_IDS", "TRANSIENT_FAILURE_WINDOW_HOURS",
}

_EXAMPLES = {
    "SLACK_BOT_TOKEN": "xoxb-1234-5678-abcdef",
    "SLACK_SIGNING_SECRET": "8f742231b10e8888abcd99yyyzzz85a5",
    "SLACK_API_URL": "https://slack.com/api/",
    "SLACK_APP_TOKEN": "xapp-1-A0123-4567-abcdef",
    "DATABASE_URL": "postgresql+psycopg://user:password@localhost:5432/crmbot",
    "PUBLIC_URL": "https://crm-bot.example.com",
    "PORT": "3000",
    "CRM_CLIENT_ID": "64f0c0ffee1234567890abcd-lmn0pqr1",
    "CRM_CLIENT_SECRET": "0a1b2c3d-4e5f-6789-abcd-ef0123456789",
    "CRM_AUTHORIZE_URL": "https://marketplace.gohighlevel.com/oauth/chooselocation",
    "CRM_API_URL": "https://services.leadconnectorhq.com",
    "CRM_APP_URL": "https://app.gohighlevel.com",
    "TOKEN_ENCRYPTION_KEY": "(output of: python -c 'from cryptography.fernet import Fernet; print(Fernet.generate_key().decode())')",
}


def normalise_database_url(url: str) -> str:
    """Map `postgres://` and `postgresql://` URLs to the psycopg 3 driver."""
    for prefix in ("postgres://", "postgresql://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix):]
    if not re.match(r"^[a-z][a-z0-9+]*://", url):
        raise ConfigError(f"DATABASE_URL is malformed: {url!r}. Use for example DATABASE_URL={_EXAMPLES['DATABASE_URL']}")
    return url


def parse_days(raw: str) -> str:
    """Validate an APScheduler day-of-week expression built from day names, such as `mon-fri` or `mon,wed`."""
    text = raw.strip().lower()
    for part in text.split(","):
        for day in part.split("-"):
            if day.strip() not in DAY_NAMES:
                raise ConfigError(f"DIGEST_DAYS is malformed: {raw!r}. Use day names, for example DIGEST_DAYS=mon-fri")
    return text


def _parse_port(raw: str) -> int:
    if not raw:
        return 3000
    if not raw.isdigit() or not 0 < int(raw) < 65536:
        raise ConfigError(f"PORT is malformed: {raw!r}. Use a number from 1 to 65535, for example PORT=3000")
    return int(raw)


def _parse_url(name: str, raw: str, example: str) -> str:
    parts = urlsplit(raw)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ConfigError(f"{name} is malformed: {raw!r}. Use an http(s) URL, for example {name}={example}")
    return raw


def _parse_channels(raw: str) -> tuple[str, ...]:
    channels = tuple(part.strip() for part in raw.split(",") if part.strip())
    for channel in channels:
        if not re.fullmatch(r"[CG][A-Z0-9]{2,}", channel):
            raise ConfigError(f"DIGEST_CHANNEL has a malformed channel id: {channel!r}. Use ids, for example DIGEST_CHANNEL=C0123ABCD")
    return channels


def _parse_digest_time(raw: str) -> time:
    if not raw:
        return time(9, 0)
    match = re.fullmatch(r"([01]?\d|2[0-3]):([0-5]\d)", raw)
    if not match:
        raise ConfigError(f"DIGEST_TIME is malformed: {raw!r}. Use 24-hour HH:MM, for example DIGEST_TIME=09:00")
    return time(int(match.group(1)), int(match.group(2)))


def _parse_timezone(raw: str) -> str:
    try:
        ZoneInfo(raw)
    except (ZoneInfoNotFoundError, ValueError) as error:
        raise ConfigError(f"DIGEST_TIMEZONE is not an IANA time zone: {raw!r}. Use for example DIGEST_TIMEZONE=Europe/Berlin") from error
    return raw


def _parse_choice(name: str, raw: str, choices: tuple[str, ...], default: str) -> str:
    value = raw.strip().lower() or default
    if value not in choices:
        raise ConfigError(f"{name} must be one of {', '.join(choices)}, not {raw!r}. Use for example {name}={default}")
    return value


def _parse_user_ids(raw: str) -> frozenset[str]:
    ids = frozenset(part.strip() for part in raw.split(",") if part.strip())
    for user_id in ids:
        if not re.fullmatch(r"[UW][A-Z0-9]{2,}", user_id):
            raise ConfigError(f"ADMIN_USER_IDS has a malformed user id: {user_id!r}. Use ids, for example ADMIN_USER_IDS=U0123ABCD,U0456EFGH")
    return ids


def _parse_hours(name: str, raw: str, default: float) -> float:
    text = raw.strip()
    if not text:
        return default
    try:
        hours = float(text)
    except ValueError:
        hours = 0.0
    if not 0 < hours <= 24 * 365:
        raise ConfigError(f"{name} is malformed: {raw!r}. Use a positive number of hours, for example {name}={default:g}")
    return hours


def load_ed25519_public_key(text: str):
    """Load the CRM's Ed25519 webhook key from PEM or from the base64 of its 32 raw bytes.

    Raises ConfigError naming CRM_WEBHOOK_PUBLIC_KEY when the text is neither.
    """
    import base64
    import binascii

    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
    from cryptography.hazmat.primitives.serialization import load_pem_public_key

    text = text.strip()
    try:
        if text.startswith("-----BEGIN"):
            key = load_pem_public_key(text.encode())
        else:
            key = Ed25519PublicKey.from_public_bytes(base64.b64decode(text, validate=True))
    except (ValueError, TypeError, binascii.Error) as error:
        raise ConfigError("CRM_WEBHOOK_PUBLIC_KEY is malformed: use the PEM public key from the CRM's webhook docs, "
                          "or the base64 of its 32 raw bytes.") from error
    if not isinstance(key, Ed25519PublicKey):
        raise ConfigError("CRM_WEBHOOK_PUBLIC_KEY is not an Ed25519 key. Put the legacy RSA key in CRM_WEBHOOK_RSA_PUBLIC_KEY.")
    return key


def load_rsa_public_key(text: str):
    """Load the CRM's legacy RSA webhook key from PEM. Raises ConfigError naming CRM_WEBHOOK_RSA_PUBLIC_KEY."""
    from cryptography.hazmat.primitives.asymmetric.rsa import RSAPublicKey
    from cryptography.hazmat.primitives.serialization import load_pem_public_key

    try:
        key = load_pem_public_key(text.strip().encode())
    except (ValueError, TypeError) as error:
        raise ConfigError("CRM_WEBHOOK_RSA_PUBLIC_KEY is malformed: use the PEM public key "
                          "(-----BEGIN PUBLIC KEY-----) from the CRM's webhook docs.") from error
    if not isinstance(key, RSAPublicKey):
        raise ConfigError("CRM_WEBHOOK_RSA_PUBLIC_KEY is not an RSA key. Put the Ed25519 key in CRM_WEBHOOK_PUBLIC_KEY.")
    return key


def _check_encryption_keys(raw: str) -> None:
    from cryptography.fernet import Fernet

    for key in raw.split(","):
        try:
            Fernet(key.strip().encode())
        except ValueError as error:
            raise ConfigError(
                "TOKEN_ENCRYPTION_KEY is malformed: each comma-separated key must be a 32-byte url-safe "
                f"base64 Fernet key. Generate one with {_EXAMPLES['TOKEN_ENCRYPTION_KEY']}"
            ) from error


def _reject_placeholder(name: str, value: str | None) -> None:
    if value and value.strip().lower() in PLACEHOLDER_SECRETS:
        raise ConfigError(f"{name} is a placeholder ({value!r}). Set the real value from your app's settings page.")
