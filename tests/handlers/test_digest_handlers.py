"""The digest's buttons (Send connect link, Reset) and `/crm-status red`, over HTTP."""

from __future__ import annotations

import pytest

from bot.digest import RESET_ACTION, SEND_LINK_ACTION
from storage import queries
from storage.db import session_scope
from storage.models import NEEDS_RECONNECT
from tests.conftest import AGENT, OTHER_USER, reply_text

ADMIN = "U0ADMIN01"


def add_account(bot, name: str, *, owner: str | None = OTHER_USER, reason: str | None = None) -> int:
    with session_scope(bot.services.engine) as session:
        account = queries.create_account(session=session, name=name, location_id=f"loc-{name.lower().replace(' ', '-')}",
                                         owner_user_id=owner)
        if reason:
            account.reason = reason
        return account.id


@pytest.fixture
def owner(slack):
    slack.add_user(OTHER_USER, "owner", real_name="Account Owner")
    return OTHER_USER


def test_send_link_dms_owner(bot, owner):
    account_id = add_account(bot, "Acme Dental")

    response, response_url = bot.click(SEND_LINK_ACTION, str(account_id))

    assert response.status_code == 200
    reply = bot.replies(response_url, 1)[-1]
    assert "Direct Connection link" in reply["text"]
    assert f"<@{OTHER_USER}>" in reply["text"]
    assert reply.get("replace_original") is not True
    dm = bot.slack.wait_for(lambda sim: sim.dms_to(OTHER_USER))
    assert "Acme Dental" in reply_text(dm[-1])


def test_send_link_without_owner_dms_clicker(bot):
    account_id = add_account(bot, "Bolt Plumbing", owner=None)

    _, response_url = bot.click(SEND_LINK_ACTION, str(account_id))

    assert "to you by DM" in bot.replies(response_url, 1)[-1]["text"]
    assert bot.slack.wait_for(lambda sim: sim.dms_to(AGENT))


def test_send_link_missing_account(bot):
    _, response_url = bot.click(SEND_LINK_ACTION, "999999")

    assert "no longer exists" in bot.replies(response_url, 1)[-1]["text"]


def test_send_link_malformed_value(bot):
    _, response_url = bot.click(SEND_LINK_ACTION, "not-a-number")

    assert "carries no account" in bot.replies(response_url, 1)[-1]["text"]


class TestWithAdmins:
    @pytest.fixture
    def settings_overrides(self):
        return {"admin_user_ids": frozenset({ADMIN})}

    def test_send_link_rejects_other_users(self, bot, owner):
        account_id = add_account(bot, "Acme Dental")

        _, response_url = bot.click(SEND_LINK_ACTION, str(account_id))

        assert "Only the owner" in bot.replies(response_url, 1)[-1]["text"]
        assert bot.slack.dms_to(OTHER_USER) == []

    def test_send_link_allowed_for_owner(self, bot, owner):
        account_id = add_account(bot, "Acme Dental")

        _, response_url = bot.click(SEND_LINK_ACTION, str(account_id), user_id=OTHER_USER)

        assert "to you by DM" in bot.replies(response_url, 1)[-1]["text"]

    def test_reset_rejects_non_admin(self, bot):
        account_id = add_account(bot, "Acme Dental", reason=NEEDS_RECONNECT)

        _, response_url = bot.click(RESET_ACTION, str(account_id))

        assert "ADMIN_USER_IDS" in bot.replies(response_url, 1)[-1]["text"]

    def test_reset_asks_admin_to_confirm(self, bot):
        bot.slack.add_user(ADMIN, "admin")
        account_id = add_account(bot, "Acme Dental", reason=NEEDS_RECONNECT)

        _, response_url = bot.click(RESET_ACTION, str(account_id), user_id=ADMIN)

        reply = bot.replies(response_url, 1)[-1]
        buttons = [element for block in reply["blocks"] if block["type"] == "actions" for element in block["elements"]]
        assert [button["action_id"] for button in buttons] == ["reset_confirm", "reset_cancel"]
        assert buttons[0]["value"] == str(account_id)
        assert reply.get("replace_original") is not True


def test_status_red_lists_accounts(bot):
    add_account(bot, "Acme Dental")
    add_account(bot, "<!channel> Bakery")

    response, response_url = bot.command("/crm-status", "red")

    assert response.status_code == 200
    reply = bot.replies(response_url, 1)[-1]
    assert reply["response_type"] == "ephemeral"
    text = reply_text(reply)
    assert "2 of 2 accounts show No Active CRM Connection" in text
    assert "Acme Dental" in text
    assert "&lt;!channel&gt; Bakery" in text
    assert "<!channel>" not in text


def test_status_red_empty(bot):
    _, response_url = bot.command("/crm-status", "red")

    assert "No accounts yet" in bot.replies(response_url, 1)[-1]["text"]
