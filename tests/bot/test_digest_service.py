"""Posting the digest: once per channel and local date, --force, thread pacing and every Slack fault."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from datetime import UTC, date, datetime, timedelta

import pytest
from cryptography.fernet import Fernet

from bot.digest_posting import DigestPoster, make_digest_client
from bot.digest_service import ALREADY_POSTED, FAILED, PARTIAL, POSTED, SKIPPED, DigestService
from bot.settings import Settings
from storage import digest_queries, queries
from storage.db import session_scope
from storage.digest_models import DIGEST_CLAIMED, DIGEST_PARTIAL, DIGEST_POSTED, DIGEST_SKIPPED, DigestPost
from storage.models import CONNECTED, NEEDS_RECONNECT

CHANNEL = "C0DIGEST1"
OTHER_CHANNEL = "C0DIGEST2"


def make_service(engine, slack, database_url, *, interval: float = 0.0, **overrides) -> DigestService:
    values = {"slack_bot_token": slack.bot_token, "slack_api_url": slack.api_url, "database_url": database_url,
              "digest_channels": (CHANNEL,), "digest_timezone": "Europe/Berlin", **overrides}
    client = make_digest_client(token=slack.bot_token, base_url=slack.api_url, backoff=0.01)
    return DigestService(settings=Settings(**values), engine=engine, poster=DigestPoster(client, interval=interval))


def add_red_accounts(engine, count: int, *, reason: str | None = None) -> None:
    with session_scope(engine) as session:
        for index in range(count):
            account = queries.create_account(session=session, name=f"Account {index:04d}", location_id=f"loc-{index}",
                                             owner_user_id="U0AGENT01")
            if reason:
                account.reason = reason


def digest_rows(engine, channel: str = CHANNEL) -> list[DigestPost]:
    with session_scope(engine) as session:
        return [row for row in session.exec(digest_queries.select(DigestPost)).all() if row.channel_id == channel]


@pytest.fixture
def channel(slack):
    slack.add_channel(CHANNEL, "support", member=True)
    slack.add_channel(OTHER_CHANNEL, "support-eu", member=True)
    return CHANNEL


# Once per channel and day

def test_post_digest_posts_once(engine, slack, database_url, channel):
    add_red_accounts(engine, 3)
    service = make_service(engine, slack, database_url)

    first = service.post_digest()
    second = service.post_digest()

    assert [outcome.status for outcome in first] == [POSTED]
    assert [outcome.status for outcome in second] == [ALREADY_POSTED]
    assert len(slack.messages(CHANNEL)) == 1
    assert second[0].message_ts == first[0].message_ts
    assert "already posted" in second[0].describe()
    rows = digest_rows(engine)
    assert len(rows) == 1
    assert rows[0].status == DIGEST_POSTED
    assert rows[0].message_ts == first[0].message_ts
    assert rows[0].red_count == 3


def test_post_digest_local_date_in_timezone(engine, slack, database_url, channel):
    add_red_accounts(engine, 1)
    service = make_service(engine, slack, database_url)

    # 23:30 UTC on 9 March is already 10 March in Berlin.
    outcomes = service.post_digest(now=datetime(2026, 3, 9, 23, 30, tzinfo=UTC))

    assert outcomes[0].local_date == date(2026, 3, 10)
    assert digest_rows(engine)[0].local_date == date(2026, 3, 10)


def test_post_digest_next_day_posts_again(engine, slack, database_url, channel):
    add_red_accounts(engine, 1)
    service = make_service(engine, slack, database_url)
    today = datetime(2026, 3, 9, 8, 0, tzinfo=UTC)

    service.post_digest(now=today)
    outcomes = service.post_digest(now=today + timedelta(days=1))

    assert outcomes[0].status == POSTED
    assert len(slack.messages(CHANNEL)) == 2


def test_post_digest_force_posts_another(engine, slack, database_url, channel):
    add_red_accounts(engine, 2)
    service = make_service(engine, slack, database_url)

    service.post_digest()
    forced = service.post_digest(force=True)

    assert forced[0].status == POSTED
    assert forced[0].forced
    assert "Posted another digest" in forced[0].describe()
    assert "--force" in forced[0].describe()
    assert len(slack.messages(CHANNEL)) == 2
    assert sorted(row.sequence for row in digest_rows(engine)) == [0, 1]


def test_post_digest_stale_claim_taken_over(engine, slack, database_url, channel):
    add_red_accounts(engine, 1)
    service = make_service(engine, slack, database_url)
    now = datetime(2026, 3, 9, 8, 20, tzinfo=UTC)
    with session_scope(engine) as session:
        session.add(DigestPost(channel_id=CHANNEL, local_date=date(2026, 3, 9), claimed_by="crashed:1",
                               claimed_at=now - timedelta(minutes=20)))

    outcomes = service.post_digest(now=now)

    assert outcomes[0].status == POSTED
    assert len(slack.messages(CHANNEL)) == 1


def test_post_digest_fresh_claim_respected(engine, slack, database_url, channel):
    add_red_accounts(engine, 1)
    service = make_service(engine, slack, database_url)
    now = datetime(2026, 3, 9, 8, 1, tzinfo=UTC)
    with session_scope(engine) as session:
        session.add(DigestPost(channel_id=CHANNEL, local_date=date(2026, 3, 9), claimed_by="busy:1",
                               claimed_at=now - timedelta(minutes=1)))

    outcomes = service.post_digest(now=now)

    assert outcomes[0].status == ALREADY_POSTED
    assert slack.messages(CHANNEL) == []
    assert digest_rows(engine)[0].status == DIGEST_CLAIMED


def test_post_digest_two_processes(engine, slack, database_url, channel):
    add_red_accounts(engine, 2)
    env = {**os.environ, "SLACK_BOT_TOKEN": slack.bot_token, "SLACK_API_URL": slack.api_url, "DATABASE_URL": database_url,
           "DIGEST_CHANNEL": CHANNEL, "TOKEN_ENCRYPTION_KEY": Fernet.generate_key().decode()}
    command = [sys.executable, "-m", "bot", "digest", "--now"]

    processes = [subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    results = [process.communicate(timeout=60) for process in processes]

    assert [process.returncode for process in processes] == [0, 0], results
    outputs = [stdout for stdout, _stderr in results]
    assert sum("Posted the digest" in output for output in outputs) == 1
    assert sum("already posted" in output for output in outputs) == 1
    assert len(slack.messages(CHANNEL)) == 1


# Content and threads

def digest_context(message: dict) -> str:
    """Return the text of the digest's context line, which carries the new and recovered counts."""
    return next(block["elements"][0]["text"] for block in message["blocks"] if block["type"] == "context")


def line_text(message: dict, name: str) -> str:
    """Return the text of the digest line that lists the account `name`."""
    return next(block["text"]["text"] for block in message["blocks"]
                if block["type"] == "section" and block["text"]["text"].startswith(f"*{name}*"))


def test_post_digest_first_marks_nothing(engine, slack, database_url, channel):
    add_red_accounts(engine, 2)

    make_service(engine, slack, database_url).post_digest()

    message = slack.messages(CHANNEL)[0]
    assert "No earlier digest to compare with, so no account is marked new or recovered." in digest_context(message)
    assert "*new*" not in json.dumps(message["blocks"])


def test_post_digest_compares_with_last_digest(engine, slack, database_url, channel):
    add_red_accounts(engine, 3)
    service = make_service(engine, slack, database_url)
    service.post_digest()
    with session_scope(engine) as session:
        queries.get_account_by_location_id(session=session, location_id="loc-0").status = CONNECTED
        queries.create_account(session=session, name="Turned Red", location_id="loc-turned-red")

    service.post_digest(force=True)
    unchanged = service.post_digest(force=True)

    second, third = slack.messages(CHANNEL)[1:]
    assert "1 new and 1 recovered since the last digest." in digest_context(second)
    assert json.dumps(second["blocks"]).count("*new*") == 1
    assert "*new*" in line_text(second, "Turned Red")
    assert "*Recovered since the last digest* (1): *Account 0000*" in json.dumps(second["blocks"])
    assert unchanged[0].status == POSTED
    assert "0 new and 0 recovered since the last digest." in digest_context(third)
    assert "*new*" not in json.dumps(third["blocks"])
    assert "Recovered" not in json.dumps(third["blocks"])


def test_post_digest_long_list_in_thread(engine, slack, database_url, channel):
    add_red_accounts(engine, 120)
    service = make_service(engine, slack, database_url, interval=0.1)

    outcome = service.post_digest()[0]

    posts = slack.calls_to("chat.postMessage")
    assert outcome.status == POSTED
    assert outcome.messages == len(posts) == 4
    assert "thread_ts" not in posts[0].args
    assert all(post.args["thread_ts"] == outcome.message_ts for post in posts[1:])
    gaps = [later.time - earlier.time for earlier, later in zip(posts, posts[1:])]
    assert min(gaps) >= 0.09


def test_post_digest_empty_posts_all_clear(engine, slack, database_url, channel):
    with session_scope(engine) as session:
        account = queries.create_account(session=session, name="Green One", location_id="loc-green")
        account.status = CONNECTED

    outcomes = make_service(engine, slack, database_url).post_digest()

    assert outcomes[0].status == POSTED
    assert slack.messages(CHANNEL)[0]["text"] == "All 1 accounts connected."


def test_post_digest_empty_skip(engine, slack, database_url, channel):
    service = make_service(engine, slack, database_url, digest_when_empty="skip")

    outcomes = service.post_digest()
    again = service.post_digest()

    assert outcomes[0].status == SKIPPED
    assert again[0].status == ALREADY_POSTED
    assert slack.messages(CHANNEL) == []
    assert digest_rows(engine)[0].status == DIGEST_SKIPPED


def test_post_digest_empty_skip_forced_posts(engine, slack, database_url, channel):
    service = make_service(engine, slack, database_url, digest_when_empty="skip")

    outcomes = service.post_digest(force=True)

    assert outcomes[0].status == POSTED
    assert len(slack.messages(CHANNEL)) == 1


# Slack faults

def test_post_digest_not_in_channel_released(engine, slack, database_url, caplog):
    slack.add_channel(CHANNEL, "support", member=False)
    add_red_accounts(engine, 1)
    service = make_service(engine, slack, database_url)

    with caplog.at_level(logging.ERROR, logger="bot.digest_service"):
        outcomes = service.post_digest()

    assert outcomes[0].status == FAILED
    assert outcomes[0].error == "not_in_channel"
    assert digest_rows(engine) == []
    errors = [record.getMessage() for record in caplog.records if record.levelno == logging.ERROR]
    assert any(CHANNEL in message and "Invite the bot" in message for message in errors)

    slack.add_channel(CHANNEL, "support", member=True)
    retried = service.post_digest()
    assert retried[0].status == POSTED
    assert len(slack.messages(CHANNEL)) == 1


def test_post_digest_channel_not_found_others_post(engine, slack, database_url, caplog):
    slack.add_channel(OTHER_CHANNEL, "support-eu", member=True)
    add_red_accounts(engine, 1)
    service = make_service(engine, slack, database_url, digest_channels=("C0UNKNOWN", OTHER_CHANNEL))

    with caplog.at_level(logging.ERROR, logger="bot.digest_service"):
        outcomes = service.post_digest()

    assert [outcome.status for outcome in outcomes] == [FAILED, POSTED]
    assert outcomes[0].error == "channel_not_found"
    assert digest_rows(engine, "C0UNKNOWN") == []
    assert len(slack.messages(OTHER_CHANNEL)) == 1
    assert any("C0UNKNOWN" in record.getMessage() for record in caplog.records if record.levelno == logging.ERROR)


def test_post_digest_rate_limit_honours_retry_after(engine, slack, database_url, channel):
    add_red_accounts(engine, 1)
    slack.fail_next("chat.postMessage", status=429, retry_after=1)

    outcomes = make_service(engine, slack, database_url).post_digest()

    calls = slack.calls_to("chat.postMessage")
    assert outcomes[0].status == POSTED
    assert len(calls) == 2
    assert calls[1].time - calls[0].time >= 1.0


@pytest.mark.parametrize("status", [500, 502, 503])
def test_post_digest_server_error_retried(engine, slack, database_url, channel, status):
    add_red_accounts(engine, 1)
    slack.fail_next("chat.postMessage", status=status, count=2)

    outcomes = make_service(engine, slack, database_url).post_digest()

    assert outcomes[0].status == POSTED
    assert len(slack.calls_to("chat.postMessage")) == 3
    assert len(digest_rows(engine)) == 1


def test_post_digest_server_error_outlasting_released(engine, slack, database_url, channel):
    add_red_accounts(engine, 1)
    slack.fail_next("chat.postMessage", status=500, count=20)

    outcomes = make_service(engine, slack, database_url).post_digest()

    assert outcomes[0].status == FAILED
    assert digest_rows(engine) == []
    assert len(slack.calls_to("chat.postMessage")) == 5


def test_post_digest_reply_fault_partial(engine, slack, database_url, channel):
    add_red_accounts(engine, 120)
    slack.fail_next("chat.postMessage", error="invalid_blocks", after=2)

    outcomes = make_service(engine, slack, database_url).post_digest()

    assert outcomes[0].status == PARTIAL
    assert outcomes[0].messages == 3
    row = digest_rows(engine)[0]
    assert row.status == DIGEST_PARTIAL
    assert row.message_ts == outcomes[0].message_ts
    assert make_service(engine, slack, database_url).post_digest()[0].status == ALREADY_POSTED


def test_post_digest_channel_lost_midway_keeps_claim(engine, slack, database_url, channel):
    add_red_accounts(engine, 120, reason=NEEDS_RECONNECT)
    slack.fail_next("chat.postMessage", error="not_in_channel", after=1, count=20)

    outcomes = make_service(engine, slack, database_url).post_digest()

    assert outcomes[0].status == PARTIAL
    # The summary is in the channel, so a later run must not post it again.
    assert digest_rows(engine)[0].message_ts is not None
    assert len(slack.calls_to("chat.postMessage")) == 2


def run_cli(slack, database_url, *arguments: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "SLACK_BOT_TOKEN": slack.bot_token, "SLACK_API_URL": slack.api_url, "DATABASE_URL": database_url,
           "DIGEST_CHANNEL": CHANNEL, "TOKEN_ENCRYPTION_KEY": Fernet.generate_key().decode()}
    return subprocess.run([sys.executable, "-m", "bot", "digest", *arguments], env=env, capture_output=True, text=True, timeout=60)


def test_cli_force_says_so(engine, slack, database_url, channel):
    add_red_accounts(engine, 1)

    first = run_cli(slack, database_url, "--now")
    forced = run_cli(slack, database_url, "--now", "--force")

    assert first.returncode == 0
    assert forced.returncode == 0
    assert "Posted another digest" in forced.stdout
    assert "--force" in forced.stdout
    assert len(slack.messages(CHANNEL)) == 2


def test_cli_channel_option(engine, slack, database_url, channel):
    add_red_accounts(engine, 1)

    result = run_cli(slack, database_url, "--now", "--channel", OTHER_CHANNEL)

    assert result.returncode == 0
    assert len(slack.messages(OTHER_CHANNEL)) == 1
    assert slack.messages(CHANNEL) == []


def test_cli_malformed_channel(engine, slack, database_url):
    result = run_cli(slack, database_url, "--now", "--channel", "general")

    assert result.returncode == 2
    assert "--channel has a malformed channel id" in result.stderr


def test_cli_failed_channel_exit_code(engine, slack, database_url):
    add_red_accounts(engine, 1)

    result = run_cli(slack, database_url, "--now", "--channel", "C0UNKNOWN")

    assert result.returncode == 1
    assert "channel_not_found" in result.stdout
