"""Building the digest: collecting red accounts, new and recovered marks, Block Kit chunking and escaping."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime, timedelta

import pytest

from bot.accounts import mark_connected
from bot.advice import Action, Advice
from bot.digest import (
    MAX_BLOCKS, RESET_ACTION, SEND_LINK_ACTION, Changes, Digest, DigestLine, collect_changes, collect_digest, red_for,
    render_digest, render_red_list,
)
from storage import queries
from storage.db import session_scope
from storage.digest_models import DIGEST_CLAIMED, DIGEST_POSTED, DIGEST_SKIPPED, DigestPost
from storage.models import CONNECTED, NEEDS_RECONNECT, NEVER_CONNECTED, NOT_OWNED, REASONS, Account, Connection

NOW = datetime(2026, 3, 9, 14, 0, tzinfo=UTC)
APP_URL = "https://app.example-crm.test"


def make_line(index: int, *, name: str | None = None, reason: str = NEVER_CONNECTED, owner: str | None = "U0OWNER01",
              action: Action | None = None) -> DigestLine:
    account = Account(id=index, name=name or f"Account {index:05d}", name_key="", location_id=f"loc-{index}",
                      owner_user_id=owner, reason=reason, red_since=NOW - timedelta(days=3))
    # As advise does for an account that still stores tokens.
    action = action or (Action.RESET if reason == NEEDS_RECONNECT else Action.CONNECT)
    return DigestLine(account=account, advice=Advice(f"Next step for loc-{index}.", action))


def make_digest(count: int, *, total: int = 240, reasons: tuple[str, ...] = (NEVER_CONNECTED,)) -> Digest:
    lines = tuple(make_line(index, reason=reasons[index % len(reasons)]) for index in range(1, count + 1))
    lines = tuple(sorted(lines, key=lambda line: REASONS.index(line.reason)))
    return Digest(local_date=date(2026, 3, 9), timezone="Europe/Berlin", generated_at=NOW, total=max(total, count), lines=lines)


def no_changes() -> Changes:
    return Changes()


def listed_ids(messages) -> list[int]:
    ids = []
    for message in messages:
        for block in message.blocks:
            if block.get("accessory", {}).get("action_id") == SEND_LINK_ACTION:
                ids.append(int(block["accessory"]["value"]))
            if block["type"] == "actions":
                ids.extend(int(element["value"]) for element in block["elements"] if element["action_id"] == SEND_LINK_ACTION)
    return ids


def all_text(messages) -> str:
    return json.dumps([message.blocks for message in messages], ensure_ascii=False) + "".join(message.text for message in messages)


def assert_within_limits(messages) -> None:
    for message in messages:
        assert message.text
        assert len(message.blocks) <= MAX_BLOCKS
        for block in message.blocks:
            if block["type"] == "section":
                assert len(block["text"]["text"]) <= 3000


# Chunking

@pytest.mark.parametrize("count", [1, 49, 50, 51, 5000])
def test_render_lists_every_account_once(count):
    digest = make_digest(count, reasons=REASONS)

    messages = render_digest(digest, no_changes())

    assert_within_limits(messages)
    assert sorted(listed_ids(messages)) == list(range(1, count + 1))


def test_render_one_account_one_message():
    messages = render_digest(make_digest(1), no_changes())

    assert len(messages) == 1
    assert messages[0].blocks[0]["type"] == "header"
    assert messages[0].blocks[0]["text"]["text"] == "1 of 240 accounts show No Active CRM Connection"


# One title block and 49 one-block lines fill a 50-block reply.
@pytest.mark.parametrize(("count", "reply_count"), [(49, 1), (50, 2), (51, 2)])
def test_render_long_list_summary_then_thread(count, reply_count):
    messages = render_digest(make_digest(count), no_changes())

    summary, *replies = messages
    assert listed_ids([summary]) == []
    assert f"{count} of 240 accounts show No Active CRM Connection" in summary.text
    assert "thread" in all_text([summary])
    assert len(replies) == reply_count
    assert len(replies[0].blocks) == MAX_BLOCKS


def test_render_5000_accounts_fill_replies():
    messages = render_digest(make_digest(5000, total=5200, reasons=REASONS), no_changes())

    replies = messages[1:]
    # 4,000 one-block lines, 1,000 two-block needs_reconnect lines, and a title atop each reply.
    assert len(replies) == 124
    assert all(len(reply.blocks) >= MAX_BLOCKS - 1 for reply in replies[:-1])
    assert "5,000 of 5,200 accounts" in messages[0].text
    assert "part 1 of" in replies[0].text


def test_render_group_titles_repeat_when_continued():
    messages = render_digest(make_digest(120), no_changes())

    titles = [block["text"]["text"] for message in messages[1:] for block in message.blocks
              if block["type"] == "section" and "accessory" not in block]
    assert titles[0] == "*Never connected* (120)"
    assert titles[1] == "*Never connected* (120, continued)"


def test_render_needs_reconnect_has_reset():
    line = make_line(7, reason=NEEDS_RECONNECT)
    digest = Digest(local_date=date(2026, 3, 9), timezone="UTC", generated_at=NOW, total=10, lines=(line,))

    blocks = render_digest(digest, no_changes())[0].blocks

    actions = [block for block in blocks if block["type"] == "actions"]
    assert len(actions) == 1
    assert [element["action_id"] for element in actions[0]["elements"]] == [SEND_LINK_ACTION, RESET_ACTION]
    assert actions[0]["elements"][1]["value"] == "7"


def test_render_paused_has_no_buttons():
    line = make_line(7, reason="paused", action=Action.WAIT)
    digest = Digest(local_date=date(2026, 3, 9), timezone="UTC", generated_at=NOW, total=10, lines=(line,))

    blocks = render_digest(digest, no_changes())[0].blocks

    assert [block for block in blocks if block["type"] == "actions" or "accessory" in block] == []


def test_render_cleared_tokens_no_reset():
    line = make_line(7, reason=NEEDS_RECONNECT, action=Action.CONNECT)
    digest = Digest(local_date=date(2026, 3, 9), timezone="UTC", generated_at=NOW, total=10, lines=(line,))

    blocks = render_digest(digest, no_changes())[0].blocks

    assert [block for block in blocks if block["type"] == "actions"] == []
    assert [block["accessory"]["action_id"] for block in blocks if "accessory" in block] == [SEND_LINK_ACTION]


def test_render_empty_posts_all_clear():
    messages = render_digest(make_digest(0), no_changes())

    assert len(messages) == 1
    assert messages[0].text == "All 240 accounts connected."


def test_render_empty_skip_posts_nothing():
    assert render_digest(make_digest(0), no_changes(), when_empty="skip") == []


def test_red_list_cut_to_five_messages():
    digest = make_digest(400)

    messages = render_red_list(digest, no_changes(), max_messages=5)

    assert len(messages) == 5
    assert_within_limits(messages)
    assert "listed in the messages below" in all_text(messages[:1])
    shown = len(listed_ids(messages))
    assert f"…and {400 - shown} more" in all_text(messages[-1:])


# Escaping

def test_render_escapes_account_names():
    line = make_line(1, name="<!channel> Tom & Jerry <b>")
    digest = Digest(local_date=date(2026, 3, 9), timezone="UTC", generated_at=NOW, total=5, lines=(line,))

    text = all_text(render_digest(digest, no_changes()))

    assert "<!channel>" not in text
    assert "&lt;!channel&gt; Tom &amp; Jerry &lt;b&gt;" in text


def test_render_malformed_owner_not_mentioned():
    line = make_line(1, owner="!channel")
    digest = Digest(local_date=date(2026, 3, 9), timezone="UTC", generated_at=NOW, total=5, lines=(line,))

    text = all_text(render_digest(digest, no_changes()))

    assert "<!channel>" not in text
    assert "no owner" in text


def test_render_owner_as_mention():
    text = all_text(render_digest(make_digest(1), no_changes()))

    assert "owner <@U0OWNER01>" in text


# Durations

@pytest.mark.parametrize(("elapsed", "expected"), [
    (timedelta(minutes=5), "red for less than an hour"),
    (timedelta(hours=1), "red for 1 hour"),
    (timedelta(hours=47), "red for 47 hours"),
    (timedelta(days=3, hours=2), "red for 3 days"),
])
def test_red_for_units(elapsed, expected):
    assert red_for(NOW - elapsed, NOW) == expected


def test_red_for_unknown():
    assert red_for(None, NOW) == "red for an unknown time"


# Collecting from the database

def add_account(session, name: str, *, reason: str = NEVER_CONNECTED, red_since: datetime | None = None, owner: str | None = None) -> Account:
    account = queries.create_account(session=session, name=name, location_id=f"loc-{name.lower().replace(' ', '-')}",
                                     owner_user_id=owner)
    account.reason = reason
    account.red_since = red_since or NOW - timedelta(days=10)
    session.add(account)
    session.flush()
    return account


def test_collect_groups_by_reason(engine):
    with session_scope(engine) as session:
        add_account(session, "Zeta", reason=NOT_OWNED)
        alpha = add_account(session, "Alpha", reason=NEEDS_RECONNECT)
        # Stored tokens are what a reset refreshes, so the advice for Alpha is a reset.
        session.add(Connection(account_id=alpha.id, user_type="Location", location_id=alpha.location_id,
                               access_token_encrypted="not-a-token", expires_at=NOW, method="direct"))
        add_account(session, "Beta")
        green = add_account(session, "Green")
        green.status = CONNECTED

    with session_scope(engine) as session:
        digest = collect_digest(session, app_url=APP_URL, local_date=date(2026, 3, 9), timezone="UTC", now=NOW)

    assert digest.total == 4
    assert [line.account.name for line in digest.lines] == ["Beta", "Alpha", "Zeta"]
    assert "/crm-reset" in digest.lines[1].advice.text
    assert "direct" in digest.lines[2].advice.text


def add_digest(session, *accounts: Account, local_date: date = date(2026, 3, 8), sequence: int = 0,
               status: str = DIGEST_POSTED, channel: str = "C0DIGEST1") -> None:
    session.add(DigestPost(channel_id=channel, local_date=local_date, sequence=sequence, status=status, claimed_by="test",
                           claimed_at=NOW - timedelta(days=1), red_account_ids=",".join(str(account.id) for account in accounts)))
    session.flush()


def changes_now(engine, channel: str | None = "C0DIGEST1"):
    with session_scope(engine) as session:
        digest = collect_digest(session, app_url=APP_URL, local_date=date(2026, 3, 9), timezone="UTC", now=NOW)
        changes = collect_changes(session, digest, channel_id=channel)
    return digest, changes


def test_changes_none_without_previous_digest(engine):
    with session_scope(engine) as session:
        add_account(session, "Old", red_since=NOW - timedelta(days=3))
        add_account(session, "Fresh", red_since=NOW - timedelta(hours=5))
        green = add_account(session, "Green Again")
        mark_connected(session, green, method="direct")

    digest, changes = changes_now(engine)

    assert not changes.has_previous_digest
    assert changes.new_ids == frozenset()
    assert changes.recovered == ()
    text = all_text(render_digest(digest, changes))
    assert "*new*" not in text
    assert "Recovered" not in text
    assert "yesterday" not in text
    assert "No earlier digest to compare with, so no account is marked new or recovered." in text


def test_changes_new_not_listed_before(engine):
    with session_scope(engine) as session:
        listed = add_account(session, "Listed", red_since=NOW - timedelta(hours=1))
        unlisted = add_account(session, "Unlisted", red_since=NOW - timedelta(days=30))
        add_digest(session, listed)
        unlisted_id = unlisted.id

    digest, changes = changes_now(engine)

    assert changes.has_previous_digest
    assert changes.new_ids == {unlisted_id}
    text = all_text(render_digest(digest, changes))
    assert text.count("*new*") == 1
    assert "1 new and 0 recovered since the last digest." in text


def test_changes_recovered_listed_and_connected(engine):
    with session_scope(engine) as session:
        was_red = add_account(session, "Was Red")
        never_listed = add_account(session, "Never Listed")
        still = add_account(session, "Still Red")
        add_digest(session, was_red, still)
        for account in (was_red, never_listed):
            mark_connected(session, account, method="direct")

    digest, changes = changes_now(engine)

    assert [account.name for account in changes.recovered] == ["Was Red"]
    assert changes.new_ids == frozenset()
    text = all_text(render_digest(digest, changes))
    assert "*Recovered since the last digest* (1): *Was Red*" in text
    assert "0 new and 1 recovered since the last digest." in text


def test_changes_recovered_without_connected_event(engine):
    with session_scope(engine) as session:
        green = add_account(session, "Green")
        add_digest(session, green)
        green.status = CONNECTED

    _digest, changes = changes_now(engine)

    assert [account.name for account in changes.recovered] == ["Green"]


def test_changes_against_same_day_digest(engine):
    with session_scope(engine) as session:
        first = add_account(session, "First")
        second = add_account(session, "Second")
        add_digest(session, first, local_date=date(2026, 3, 9), sequence=0)
        add_digest(session, first, second, local_date=date(2026, 3, 9), sequence=1)
        add_digest(session, local_date=date(2026, 3, 9), sequence=2, status=DIGEST_CLAIMED)
        add_digest(session, local_date=date(2026, 3, 9), sequence=3, status=DIGEST_SKIPPED)

    _digest, changes = changes_now(engine)

    assert changes.has_previous_digest
    assert changes.new_ids == frozenset()


def test_changes_other_channel_ignored(engine):
    with session_scope(engine) as session:
        red = add_account(session, "Red")
        add_digest(session, red, channel="C0OTHER01")

    _digest, changes = changes_now(engine)

    assert not changes.has_previous_digest
    assert changes.new_ids == frozenset()


def test_changes_none_without_channel(engine):
    with session_scope(engine) as session:
        add_digest(session)
        add_account(session, "Red")

    _digest, changes = changes_now(engine, channel=None)

    assert not changes.has_previous_digest
    assert changes.new_ids == frozenset()
