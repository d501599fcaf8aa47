"""App Home over HTTP: app_home_opened publishes the dashboard, its buttons page and act."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime

import pytest

from bot.home import RED_PER_PAGE
from bot.simulators.slack import MAX_VIEW_BLOCKS, make_app_home_opened, sign_request
from storage import queries
from storage.db import session_scope
from storage.digest_models import DIGEST_POSTED, DigestPost
from storage.models import CONNECTED, METHOD_DIRECT
from tests.conftest import AGENCY_COMPANY_ID, AGENT, OTHER_USER, SIGNING_SECRET, TEAM_ID


def open_home(bot, user_id: str = AGENT) -> None:
    body = json.dumps(make_app_home_opened(user_id, team_id=TEAM_ID)).encode()
    headers = sign_request(SIGNING_SECRET, body)
    headers["Content-Type"] = "application/json"
    response = bot.http.post(f"{bot.url}/slack/events", content=body, headers=headers)
    assert response.status_code == 200


def view_text(view: dict) -> str:
    parts = []
    for block in view["blocks"]:
        if isinstance(block.get("text"), dict):
            parts.append(block["text"]["text"])
        for element in block.get("elements") or []:
            text = element.get("text")
            parts.append(text["text"] if isinstance(text, dict) else str(text or ""))
    return "\n".join(parts)


def buttons(view: dict) -> list[dict]:
    found = []
    for block in view["blocks"]:
        if isinstance(block.get("accessory"), dict):
            found.append(block["accessory"])
        found += [element for element in block.get("elements") or [] if element.get("type") == "button"]
    return found


def wait_for_publish(slack, count: int) -> dict:
    slack.wait_for(lambda sim: len(sim.calls_to("views.publish")) >= count, timeout=10)
    return slack.calls_to("views.publish")[count - 1].args["view"]


@pytest.fixture
def accounts(engine):
    """An agency with one green and two red accounts, and an external account owned by the agent."""
    with session_scope(engine) as session:
        agency = queries.get_or_create_agency(session=session, company_id=AGENCY_COMPANY_ID, name="Bright Agency")
        agency.last_sync_at = datetime(2025, 3, 4, 8, 30, tzinfo=UTC)
        green = queries.create_account(session=session, name="Acme Dental", location_id="loc-acme", agency_id=agency.id)
        green.status, green.reason, green.method = CONNECTED, None, METHOD_DIRECT
        queries.create_account(session=session, name="Bolt Plumbing", location_id="loc-bolt", agency_id=agency.id)
        queries.create_account(session=session, name="Outside Gym", location_id="loc-ext", owner_user_id=AGENT)


def test_opened_publishes_dashboard(bot, accounts):
    open_home(bot)

    view = wait_for_publish(bot.slack, 1)
    text = view_text(view)
    assert view["type"] == "home"
    assert "*1* Connected · *2* No Active CRM Connection" in text
    assert "*Bolt Plumbing* (loc-bolt): No Active CRM Connection (never connected)" in text
    assert "Agency *Bright Agency*: No Active CRM Connection (never connected). Last sync: 2025-03-04 08:30 UTC." in text
    assert "Last digest: none posted yet." in text
    assert "*Your accounts* (1)\n• *Outside Gym* (loc-ext)" in text
    assert bot.slack.home_view(AGENT) is not None


def test_red_accounts_carry_buttons(bot, accounts):
    open_home(bot)

    view = wait_for_publish(bot.slack, 1)
    actions = {button["action_id"] for button in buttons(view)}
    assert actions == {"home_connect"}
    assert "Acme Dental" not in " ".join(block["text"]["text"] for block in view["blocks"] if block.get("accessory"))


def test_opened_twice_publishes_once(bot, accounts):
    open_home(bot)
    wait_for_publish(bot.slack, 1)

    open_home(bot)
    open_home(bot, OTHER_USER)

    wait_for_publish(bot.slack, 2)
    publishes = bot.slack.calls_to("views.publish")
    assert [call.args["user_id"] for call in publishes] == [AGENT, OTHER_USER]


def test_messages_tab_ignored(bot, accounts):
    body = make_app_home_opened(AGENT, team_id=TEAM_ID, tab="messages")
    raw = json.dumps(body).encode()
    headers = {**sign_request(SIGNING_SECRET, raw), "Content-Type": "application/json"}

    bot.http.post(f"{bot.url}/slack/events", content=raw, headers=headers)
    open_home(bot, OTHER_USER)

    wait_for_publish(bot.slack, 1)
    assert [call.args["user_id"] for call in bot.slack.calls_to("views.publish")] == [OTHER_USER]


def test_many_red_accounts_paged(bot, engine):
    with session_scope(engine) as session:
        for number in range(RED_PER_PAGE * 2 + 10):
            queries.create_account(session=session, name=f"Client {number:03d}", location_id=f"loc-{number:03d}")

    open_home(bot)
    first = wait_for_publish(bot.slack, 1)
    assert len(first["blocks"]) <= MAX_VIEW_BLOCKS
    assert "(page 1 of 3)" in view_text(first)
    assert "Client 000" in view_text(first)
    assert [button["text"]["text"] for button in buttons(first) if button["action_id"].startswith("home_page")] == ["Next page"]

    response, _ = bot.click("home_page_next", "1")
    assert response.status_code == 200
    second = wait_for_publish(bot.slack, 2)
    assert "(page 2 of 3)" in view_text(second)
    assert f"Client {RED_PER_PAGE:03d}" in view_text(second)
    assert "Client 000" not in view_text(second)
    assert [button["text"]["text"] for button in buttons(second) if button["action_id"].startswith("home_page")] == ["Previous page", "Next page"]


def test_untrusted_names_escaped(bot, engine):
    with session_scope(engine) as session:
        queries.create_account(session=session, name="<!channel> & <@U0BOSS>", location_id="loc-evil", owner_user_id=AGENT)

    open_home(bot)

    text = view_text(wait_for_publish(bot.slack, 1))
    assert "&lt;!channel&gt; &amp; &lt;@U0BOSS&gt;" in text
    assert "<!channel>" not in text
    assert "<@U0BOSS>" not in text


def test_last_digest_shown(bot, accounts, engine):
    with session_scope(engine) as session:
        session.add(DigestPost(channel_id="C0DIGEST", local_date=date(2025, 3, 5), claimed_by="test", status=DIGEST_POSTED,
                               posted_at=datetime(2025, 3, 5, 9, 0, tzinfo=UTC)))

    open_home(bot)

    assert "Last digest: 2025-03-05 09:00 UTC." in view_text(wait_for_publish(bot.slack, 1))


def test_connect_button_dms_link(bot, accounts, engine):
    with session_scope(engine) as session:
        account_id = queries.get_account_by_location_id(session=session, location_id="loc-ext").id

    response, _ = bot.click("home_connect", str(account_id))

    assert response.status_code == 200
    dms = bot.slack.wait_for(lambda sim: (lambda got: got if len(got) >= 2 else None)(sim.dms_to(AGENT)), timeout=10)
    assert "Direct Connection for Outside Gym" in dms[0]["blocks"][0]["text"]["text"]
    assert "Sent a Direct Connection link for *Outside Gym* (loc-ext) to you by DM" in dms[1]["text"]
    republished = wait_for_publish(bot.slack, 1)
    assert republished["type"] == "home"


@pytest.mark.parametrize("settings_overrides", [{"admin_user_ids": frozenset({OTHER_USER})}])
def test_reset_button_checks_admin(bot, accounts, engine):
    with session_scope(engine) as session:
        account_id = queries.get_account_by_location_id(session=session, location_id="loc-bolt").id

    bot.click("home_reset", str(account_id))

    dm = bot.slack.wait_for(lambda sim: sim.dms_to(AGENT), timeout=10)[-1]
    assert "Only the admins named in ADMIN_USER_IDS may reset connections" in dm["text"]
    assert bot.crm.requests_to("/oauth/token") == []
