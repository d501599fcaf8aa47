"""/crm-connect agency re-runs Connect Accounts only for the admins in ADMIN_USER_IDS."""

from __future__ import annotations

import pytest

from tests.conftest import AGENCY_COMPANY_ID, AGENT, OTHER_USER
from tests.handlers.test_agency_sync_flow import summaries
from tests.handlers.test_connect_flow import link_from_dm


@pytest.fixture
def settings_overrides() -> dict:
    return {"admin_user_ids": frozenset({AGENT})}


def test_resync_rejects_non_admin(bot):
    bot.slack.add_user(OTHER_USER, "other")
    bot.command("/crm-connect", "agency")
    bot.http.get(bot.crm.authorize(link_from_dm(bot, AGENT), f"company:{AGENCY_COMPANY_ID}"))
    summaries(bot)

    _, response_url = bot.command("/crm-connect", "agency", user_id=OTHER_USER)

    assert bot.last_reply_text(response_url, count=1) == (
        "The agency is already connected. Only the admins named in ADMIN_USER_IDS may sync its accounts again. Ask one of them.")
    assert len(bot.crm.requests_to("/locations/search")) == 1
