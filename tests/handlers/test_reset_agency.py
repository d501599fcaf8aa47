"""/crm-reset agency, and /crm-reset of an account connected through the agency."""

from __future__ import annotations

import pytest

from storage import queries
from storage.db import session_scope
from tests.bot.lifecycle_helpers import account_of, connect_agency, connect_minted, connection_of
from tests.conftest import AGENCY_COMPANY_ID, AGENT, OTHER_USER
from tests.handlers.test_connect_flow import link_from_dm


def reply_containing(bot, response_url: str, text: str) -> str:
    posts = bot.slack.wait_for(lambda sim: [post for post in sim.responses(response_url) if text in post.get("text", "")], timeout=15)
    return posts[0]["text"]


def test_reset_agency_asks_confirmation(bot):
    response, _ = bot.command("/crm-reset", "agency")

    assert response.status_code == 200
    assert "reset_agency_confirm" in response.text
    assert bot.crm.refresh_successes == 0


def test_reset_agency_refreshes_and_syncs(bot):
    connect_agency(bot.services, bot.crm)

    _, response_url = bot.click("reset_agency_confirm", "agency")

    text = reply_containing(bot, response_url, "Reset done")
    assert "refreshed the tokens of the agency Bright Agency" in text
    assert "Sync of the agency Bright Agency" in text
    assert bot.crm.refresh_successes == 1
    with session_scope(bot.services.engine) as session:
        assert queries.get_account_by_location_id(session=session, location_id="loc-acme").status == "connected"


def test_reset_agency_twice_is_harmless(bot):
    connect_agency(bot.services, bot.crm)

    for _ in range(2):
        _, response_url = bot.click("reset_agency_confirm", "agency")
        reply_containing(bot, response_url, "Reset done")

    assert bot.crm.refresh_successes == 2


def test_reset_agency_revoked_relinks(bot):
    agency_id, connection_id = connect_agency(bot.services, bot.crm)
    bot.crm.revoke_grants(company_id=AGENCY_COMPANY_ID)

    _, response_url = bot.click("reset_agency_confirm", "agency")

    text = reply_containing(bot, response_url, "could not recover")
    assert "fresh agency-level link is in your DMs" in text
    assert connection_of(bot.services, connection_id) is None
    with session_scope(bot.services.engine) as session:
        assert queries.get_agency(session=session, agency_id=agency_id).reason == "needs_reconnect"
    assert link_from_dm(bot, AGENT).startswith(bot.crm.url)


def test_reset_minted_account_mints_again(bot):
    bot.crm.mint_refresh_tokens = False
    agency_id, _ = connect_agency(bot.services, bot.crm)
    account_id, connection_id = connect_minted(bot.services, agency_id, "loc-acme", "Acme Dental")

    _, response_url = bot.click("reset_confirm", str(account_id))

    text = reply_containing(bot, response_url, "Reset done")
    assert "minted a new token through the agency" in text
    assert connection_of(bot.services, connection_id).version == 2
    assert account_of(bot.services, account_id).status == "connected"


class TestAdminOnly:
    @pytest.fixture
    def settings_overrides(self):
        return {"admin_user_ids": frozenset({OTHER_USER})}

    def test_reset_agency_button_rechecks_admin(self, bot):
        connect_agency(bot.services, bot.crm)

        _, response_url = bot.click("reset_agency_confirm", "agency", user_id=AGENT)

        assert "Only the admins" in bot.replies(response_url, 1)[0]["text"]
        assert bot.crm.refresh_successes == 0
