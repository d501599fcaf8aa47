"""/crm-reset with its confirmation buttons, and /crm-status."""

from __future__ import annotations

import pytest
from sqlmodel import select

from storage.db import session_scope
from storage.models import Account, Connection
from tests.conftest import AGENT, OTHER_USER
from tests.handlers.test_connect_flow import link_from_dm


def connect(bot, name: str = "Acme Dental", location_id: str = "loc-acme") -> Account:
    bot.command("/crm-connect", f"{name} direct")
    bot.http.get(bot.crm.authorize(link_from_dm(bot, AGENT), f"location:{location_id}"))
    bot.slack.calls.clear()
    with session_scope(bot.services.engine) as session:
        return session.exec(select(Account).where(Account.location_id == location_id)).one()


def stored_account(bot, account_id: int) -> Account:
    with session_scope(bot.services.engine) as session:
        return session.get(Account, account_id)


def confirm_button(bot, response_url: str) -> dict:
    post = bot.replies(response_url, 1)[-1]
    actions = [block for block in post["blocks"] if block["type"] == "actions"][0]
    return {element["action_id"]: element for element in actions["elements"]}


def test_reset_asks_confirmation(bot):
    account = connect(bot)

    _, response_url = bot.command("/crm-reset", "Acme Dental")

    buttons = confirm_button(bot, response_url)
    assert buttons["reset_confirm"]["value"] == str(account.id)
    assert "reset_cancel" in buttons
    assert bot.crm.refresh_successes == 0


def test_reset_confirm_refreshes(bot):
    account = connect(bot)

    _, response_url = bot.click("reset_confirm", str(account.id))

    text = bot.slack.wait_for(lambda sim: [p for p in sim.responses(response_url) if "Reset done" in p.get("text", "")])
    assert "refreshed the tokens" in text[0]["text"]
    assert bot.crm.refresh_successes == 1
    assert stored_account(bot, account.id).status == "connected"


def test_reset_revoked_turns_red_and_relinks(bot):
    account = connect(bot)
    bot.crm.revoke_grants(location_id="loc-acme")

    _, response_url = bot.click("reset_confirm", str(account.id))

    posts = bot.slack.wait_for(lambda sim: [p for p in sim.responses(response_url) if "could not recover" in p.get("text", "")])
    assert "fresh Direct Connection link is in your DMs" in posts[0]["text"]
    fresh = stored_account(bot, account.id)
    assert fresh.status == "disconnected"
    assert fresh.reason == "needs_reconnect"
    with session_scope(bot.services.engine) as session:
        assert session.exec(select(Connection)).all() == []
    assert link_from_dm(bot, AGENT).startswith(bot.crm.url)


def test_reset_paused_keeps_tokens(bot):
    account = connect(bot)
    bot.crm.pause_location("loc-acme")

    _, response_url = bot.click("reset_confirm", str(account.id))

    posts = bot.slack.wait_for(lambda sim: [p for p in sim.responses(response_url) if "paused" in p.get("text", "")])
    assert "kept the tokens" in posts[0]["text"]
    fresh = stored_account(bot, account.id)
    assert fresh.reason == "paused"
    with session_scope(bot.services.engine) as session:
        assert len(session.exec(select(Connection)).all()) == 1


def test_reset_crm_outage_changes_nothing(bot):
    account = connect(bot)
    bot.crm.fail_next("/oauth/token", status=502, count=3)

    _, response_url = bot.click("reset_confirm", str(account.id))

    posts = bot.slack.wait_for(lambda sim: [p for p in sim.responses(response_url) if "did not answer" in p.get("text", "")])
    assert "Nothing was changed" in posts[0]["text"]
    assert stored_account(bot, account.id).status == "connected"


def test_reset_cancel(bot):
    account = connect(bot)

    _, response_url = bot.click("reset_cancel", str(account.id))

    posts = bot.replies(response_url, 1)
    assert posts[0]["text"] == "Reset cancelled. Nothing was changed."
    assert posts[0]["replace_original"] is True
    assert bot.crm.refresh_successes == 0


def test_status_overview_lists_red(bot):
    connect(bot)
    bot.command("/crm-connect", "Outside Gym direct")

    _, response_url = bot.command("/crm-status")

    text = bot.last_reply_text(response_url, count=1)
    assert "1 of 2 accounts Connected, 1 show No Active CRM Connection." in text
    assert "*Outside Gym*: No Active CRM Connection (never connected)" in text
    assert "Next step: This account is outside the agency, so it needs a Direct Connection." in text


def test_status_detail_shows_events(bot):
    connect(bot)

    _, response_url = bot.command("/crm-status", "loc-acme")

    text = bot.last_reply_text(response_url, count=1)
    assert "*Acme Dental* (loc-acme): Connected" in text
    assert "Recent events" in text
    assert "connected: Direct Connection" in text
    assert "link sent" in text


def test_status_unknown_account(bot):
    _, response_url = bot.command("/crm-status", "Ghost")

    assert "No account matches “Ghost”" in bot.last_reply_text(response_url, count=1)


def test_status_empty(bot):
    _, response_url = bot.command("/crm-status")

    assert "No accounts yet" in bot.last_reply_text(response_url, count=1)


class TestAdminOnly:
    @pytest.fixture
    def settings_overrides(self):
        return {"admin_user_ids": frozenset({OTHER_USER})}

    def test_reset_button_rechecks_admin(self, bot):
        account = connect(bot)

        _, response_url = bot.click("reset_confirm", str(account.id), user_id=AGENT)

        posts = bot.replies(response_url, 1)
        assert "Only the admins" in posts[0]["text"]
        assert bot.crm.refresh_successes == 0

    def test_reset_command_needs_admin(self, bot):
        response, _ = bot.command("/crm-reset", "Acme Dental", user_id=AGENT)

        assert "Only the admins" in response.text


def test_status_agency_without_agency(bot):
    _, response_url = bot.command("/crm-status", "agency")

    assert "No agency is connected yet" in bot.last_reply_text(response_url, count=1)


def test_status_agency_shows_counts(bot):
    bot.command("/crm-connect", "agency")
    bot.http.get(bot.crm.authorize(link_from_dm(bot, AGENT), "company:comp-agency-1"))
    bot.slack.wait_for(lambda sim: [call for call in sim.calls_to("chat.update") if "finished" in call.args.get("text", "")], timeout=20)

    _, response_url = bot.command("/crm-status", "agency")

    text = bot.last_reply_text(response_url, count=1)
    assert "(`comp-agency-1`): Connected" in text
    assert "Accounts: 2 Connected, 1 red." in text


def test_failed_reset_advises_connect(bot):
    account = connect(bot)
    bot.crm.revoke_grants(location_id="loc-acme")
    _, reset_url = bot.click("reset_confirm", str(account.id))
    bot.slack.wait_for(lambda sim: [p for p in sim.responses(reset_url) if "could not recover" in p.get("text", "")])

    _, response_url = bot.command("/crm-status", "Acme Dental")

    text = bot.last_reply_text(response_url, count=1)
    assert "Next step: The bot cleared the rejected tokens" in text
    assert "Reset the connection" not in text


def test_formatting_in_name_is_neutralised(bot):
    bot.command("/crm-connect", "*Bold* _Shop_ direct")
    link_from_dm(bot, AGENT)

    _, response_url = bot.command("/crm-status")

    text = bot.last_reply_text(response_url, count=1)
    assert "*\u2217Bold\u2217 \uff3fShop\uff3f*" in text
    _, copied_url = bot.command("/crm-status", "\u2217Bold\u2217 \uff3fShop\uff3f")
    assert "No Active CRM Connection" in bot.last_reply_text(copied_url, count=1)


def test_status_red_agency_without_tokens(bot):
    from storage import queries

    with session_scope(bot.services.engine) as session:
        agency = queries.get_or_create_agency(session=session, company_id="comp-agency-1", name="Bright Agency")
        agency.reason = "needs_reconnect"

    _, response_url = bot.command("/crm-status", "agency")

    text = bot.last_reply_text(response_url, count=1)
    assert "No Active CRM Connection (needs reconnect: the CRM rejected the tokens)" in text
    assert "Next step: Reconnect it with `/crm-connect agency`" in text
    assert "Token valid until" not in text


def test_reset_without_tokens_sends_to_connect(bot):
    bot.command("/crm-connect", "Outside Gym direct")
    link_from_dm(bot, AGENT)

    _, response_url = bot.command("/crm-reset", "Outside Gym")

    post = bot.replies(response_url, 1)[-1]
    assert "has no stored tokens and no connected agency" in post["text"]
    assert "`/crm-connect Outside Gym`" in post["text"]
    assert not post.get("blocks")
