from __future__ import annotations

from datetime import time

import pytest
from cryptography.fernet import Fernet

from bot.errors import ConfigError
from bot.settings import Settings, normalise_database_url

KEY = Fernet.generate_key().decode()


def test_defaults_match_contract():
    settings = Settings.from_env({})

    assert settings.database_url == "sqlite:///crm-bot.db"
    assert settings.public_url == "http://localhost:3000"
    assert settings.redirect_uri == "http://localhost:3000/oauth/callback"
    assert settings.port == 3000
    assert settings.slack_api_url == "https://slack.com/api/"
    assert settings.crm_api_url == "https://services.leadconnectorhq.com"
    assert settings.crm_app_url == "https://app.gohighlevel.com"
    assert settings.digest_time == time(9, 0)
    assert settings.digest_timezone == "UTC"
    assert settings.scheduler == "embedded"
    assert settings.digest_when_empty == "post"


def test_missing_signing_secret_names_variable():
    settings = Settings.from_env({"SLACK_BOT_TOKEN": "xoxb-1", "TOKEN_ENCRYPTION_KEY": KEY})

    with pytest.raises(ConfigError) as error:
        settings.require_for_serve()

    assert "SLACK_SIGNING_SECRET is required" in str(error.value)
    assert "SLACK_SIGNING_SECRET=8f742231b10e8888abcd99yyyzzz85a5" in str(error.value)


def test_missing_encryption_key_names_variable():
    settings = Settings.from_env({"SLACK_BOT_TOKEN": "xoxb-1", "SLACK_SIGNING_SECRET": "abc123def456"})

    with pytest.raises(ConfigError, match="TOKEN_ENCRYPTION_KEY is required"):
        settings.require_for_serve()


def test_placeholder_secret_rejected():
    settings = Settings.from_env({"SLACK_BOT_TOKEN": "xoxb-1", "SLACK_SIGNING_SECRET": "changeme", "TOKEN_ENCRYPTION_KEY": KEY})

    with pytest.raises(ConfigError, match="placeholder"):
        settings.require_for_serve()


@pytest.mark.parametrize("url, expected", [
    ("postgres://u:p@db:5432/bot", "postgresql+psycopg://u:p@db:5432/bot"),
    ("postgresql://u@db/bot", "postgresql+psycopg://u@db/bot"),
    ("postgresql+psycopg://u@db/bot", "postgresql+psycopg://u@db/bot"),
    ("sqlite:///x.db", "sqlite:///x.db"),
])
def test_database_url_normalised(url, expected):
    assert normalise_database_url(url) == expected
    assert Settings.from_env({"DATABASE_URL": url}).database_url == expected


@pytest.mark.parametrize("name, value, fragment", [
    ("PORT", "eighty", "PORT is malformed"),
    ("PORT", "70000", "PORT is malformed"),
    ("DATABASE_URL", "not a url", "DATABASE_URL is malformed"),
    ("PUBLIC_URL", "crm-bot.example.com", "PUBLIC_URL is malformed"),
    ("DIGEST_TIME", "9am", "DIGEST_TIME is malformed"),
    ("DIGEST_TIMEZONE", "Mars/Olympus", "DIGEST_TIMEZONE is not an IANA time zone"),
    ("DIGEST_DAYS", "weekdays", "DIGEST_DAYS is malformed"),
    ("DIGEST_CHANNEL", "#support", "DIGEST_CHANNEL has a malformed channel id"),
    ("SCHEDULER", "sometimes", "SCHEDULER must be one of embedded, off"),
    ("ADMIN_USER_IDS", "jane", "ADMIN_USER_IDS has a malformed user id"),
    ("TOKEN_ENCRYPTION_KEY", "short", "TOKEN_ENCRYPTION_KEY is malformed"),
])
def test_malformed_value_names_variable(name, value, fragment):
    with pytest.raises(ConfigError) as error:
        Settings.from_env({name: value})

    assert fragment in str(error.value)
    assert f"{name}=" in str(error.value) or "Generate one" in str(error.value)


def test_app_id_from_client_id_prefix():
    assert Settings.from_env({"CRM_CLIENT_ID": "64f0abc-lmn0pqr1"}).app_id == "64f0abc"
    assert Settings.from_env({"CRM_CLIENT_ID": "64f0abc-lmn0pqr1", "CRM_APP_ID": "other"}).app_id == "other"


def test_lists_parsed():
    settings = Settings.from_env({"DIGEST_CHANNEL": "C01, C02ABC", "ADMIN_USER_IDS": "U01AB,U02CD", "DIGEST_DAYS": "Mon-Fri"})

    assert settings.digest_channels == ("C01", "C02ABC")
    assert settings.admin_user_ids == frozenset({"U01AB", "U02CD"})
    assert settings.digest_days == "mon-fri"
    assert settings.is_admin("U01AB")
    assert not settings.is_admin("U99")
    assert Settings.from_env({}).is_admin("U99")
