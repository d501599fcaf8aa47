"""GET /oauth/callback: every failure case, and the pages it shows."""

from __future__ import annotations

from datetime import timedelta
from urllib.parse import parse_qs, urlencode, urlsplit

from freezegun import freeze_time
from sqlmodel import select

from storage import queries
from storage.db import session_scope, utcnow
from storage.models import Account, Agency, Connection
from tests.conftest import AGENT
from tests.handlers.test_connect_flow import link_from_dm


def add_account(bot, name: str, location_id: str | None) -> int:
    with session_scope(bot.services.engine) as session:
        return queries.create_account(session=session, name=name, location_id=location_id).id


def get_account(bot, account_id: int) -> Account:
    with session_scope(bot.services.engine) as session:
        return session.get(Account, account_id)


def state_of(url: str) -> str:
    return parse_qs(urlsplit(url).query)["state"][0]


def callback(bot, **params):
    return bot.http.get(f"{bot.url}/oauth/callback?{urlencode(params)}")


def test_different_subaccount_connects_picked(bot):
    target_id = add_account(bot, "Acme Dental", "loc-acme")
    bot.command("/crm-connect", "Acme Dental direct")

    page = bot.http.get(bot.crm.authorize(link_from_dm(bot, AGENT), "location:loc-bolt"))

    assert page.status_code == 200
    assert "The login picked Bolt Plumbing (loc-bolt), not Acme Dental" in page.text
    assert get_account(bot, target_id).status == "disconnected"
    with session_scope(bot.services.engine) as session:
        picked = queries.get_account_by_location_id(session=session, location_id="loc-bolt")
    assert picked.name == "Bolt Plumbing"
    assert picked.status == "connected"


def test_access_denied_page(bot):
    account_id = add_account(bot, "Acme Dental", "loc-acme")
    bot.command("/crm-connect", "Acme Dental direct")

    page = bot.http.get(bot.crm.authorize(link_from_dm(bot, AGENT), "location:loc-acme", action="cancel"))

    assert page.status_code == 400
    assert "cancelled (access_denied)" in page.text
    assert "Next step:" in page.text
    assert "incognito window" in page.text
    assert get_account(bot, account_id).status == "disconnected"
    dm = bot.slack.wait_for(lambda sim: [m for m in sim.dms_to(AGENT) if "Connection cancelled" in m["text"]])
    assert dm


def test_forged_state_rejected(bot):
    page = callback(bot, code="abc", state="forged-state-value")

    assert page.status_code == 400
    assert "not one the bot made" in page.text


def test_missing_state_rejected(bot):
    page = callback(bot, code="abc")

    assert page.status_code == 400
    assert "carries no state" in page.text


def test_expired_state_rejected(bot):
    add_account(bot, "Acme Dental", "loc-acme")
    bot.command("/crm-connect", "Acme Dental direct")
    callback_url = bot.crm.authorize(link_from_dm(bot, AGENT), "location:loc-acme")
    params = {key: values[0] for key, values in parse_qs(urlsplit(callback_url).query).items()}

    with freeze_time(utcnow() + timedelta(minutes=31)):
        page = bot.services.callback.handle(params)

    assert page.status == 400
    assert "expired" in page.message
    assert bot.crm.requests_to("/oauth/token") == []


def test_state_valid_before_expiry(bot):
    add_account(bot, "Acme Dental", "loc-acme")
    bot.command("/crm-connect", "Acme Dental direct")
    callback_url = bot.crm.authorize(link_from_dm(bot, AGENT), "location:loc-acme")
    params = {key: values[0] for key, values in parse_qs(urlsplit(callback_url).query).items()}

    with freeze_time(utcnow() + timedelta(minutes=29)):
        page = bot.services.callback.handle(params)

    assert page.ok


def test_reused_state_rejected(bot):
    add_account(bot, "Acme Dental", "loc-acme")
    bot.command("/crm-connect", "Acme Dental direct")
    url = link_from_dm(bot, AGENT)
    bot.http.get(bot.crm.authorize(url, "location:loc-acme"))

    page = bot.http.get(bot.crm.authorize(url, "location:loc-acme"))

    assert page.status_code == 400
    assert "already used" in page.text


def test_reload_says_already_connected(bot):
    account_id = add_account(bot, "Acme Dental", "loc-acme")
    bot.command("/crm-connect", "Acme Dental direct")
    callback_url = bot.crm.authorize(link_from_dm(bot, AGENT), "location:loc-acme")
    bot.http.get(callback_url)
    with session_scope(bot.services.engine) as session:
        version = session.exec(select(Connection)).one().version

    page = bot.http.get(callback_url)

    assert page.status_code == 200
    assert "already connected" in page.text
    assert get_account(bot, account_id).status == "connected"
    with session_scope(bot.services.engine) as session:
        assert session.exec(select(Connection)).one().version == version
    assert len(bot.crm.requests_to("/oauth/token")) == 1


def test_crm_rejection_page(bot):
    add_account(bot, "Acme Dental", "loc-acme")
    bot.command("/crm-connect", "Acme Dental direct")
    callback_url = bot.crm.authorize(link_from_dm(bot, AGENT), "location:loc-acme")
    bot.crm.fail_next("/oauth/token", status=401, body={"error": "invalid_client", "error_description": "Invalid client credentials"})

    page = bot.http.get(callback_url)

    assert page.status_code == 400
    assert "CRM_CLIENT_ID and CRM_CLIENT_SECRET" in page.text
    assert "Next step:" in page.text


def test_crm_outage_lets_link_retry(bot):
    account_id = add_account(bot, "Acme Dental", "loc-acme")
    bot.command("/crm-connect", "Acme Dental direct")
    callback_url = bot.crm.authorize(link_from_dm(bot, AGENT), "location:loc-acme")
    bot.crm.fail_next("/oauth/token", status=503, count=3)

    page = bot.http.get(callback_url)

    assert page.status_code == 502
    assert "did not answer" in page.text
    assert get_account(bot, account_id).status == "disconnected"

    retry = bot.http.get(callback_url)
    assert retry.status_code == 200
    assert get_account(bot, account_id).status == "connected"


def test_crm_timeout_page(bot):
    from dataclasses import replace

    import httpx

    add_account(bot, "Acme Dental", "loc-acme")
    bot.services.crm._http.timeout = httpx.Timeout(0.3)
    bot.services.crm.retry = replace(bot.services.crm.retry, attempts=2)
    bot.command("/crm-connect", "Acme Dental direct")
    callback_url = bot.crm.authorize(link_from_dm(bot, AGENT), "location:loc-acme")
    bot.crm.fail_next("/oauth/token", status=500, delay=1.0, count=2)

    page = bot.http.get(callback_url)

    assert page.status_code == 502
    assert "timed out" in page.text


def test_company_token_for_subaccount_link(bot):
    account_id = add_account(bot, "Acme Dental", "loc-acme")
    bot.command("/crm-connect", "Acme Dental direct")

    page = bot.http.get(bot.crm.authorize(link_from_dm(bot, AGENT), "company:comp-agency-1"))

    assert page.status_code == 200
    assert "The login authorized the agency" in page.text
    assert get_account(bot, account_id).status == "disconnected"
    with session_scope(bot.services.engine) as session:
        assert session.exec(select(Agency)).one().status == "connected"


def test_code_missing_page(bot):
    bot.command("/crm-connect", "Acme Dental direct")
    state = state_of(link_from_dm(bot, AGENT))

    page = callback(bot, state=state)

    assert page.status_code == 400
    assert "no authorization code" in page.text


def test_page_escapes_account_name(bot):
    bot.command("/crm-connect", "<b>Evil</b> & Co direct")
    callback_url = bot.crm.authorize(link_from_dm(bot, AGENT), "location:loc-ext")

    page = bot.http.get(callback_url)

    assert "&lt;b&gt;Evil&lt;/b&gt; &amp; Co" in page.text
    assert "<b>Evil</b>" not in page.text


def test_cancel_reload_dms_once(bot):
    add_account(bot, "Acme Dental", "loc-acme")
    bot.command("/crm-connect", "Acme Dental direct")
    callback_url = bot.crm.authorize(link_from_dm(bot, AGENT), "location:loc-acme", action="cancel")

    first = bot.http.get(callback_url)
    reload = bot.http.get(callback_url)

    assert first.status_code == reload.status_code == 400
    assert "cancelled" in reload.text
    cancelled = [dm for dm in bot.slack.dms_to(AGENT) if "Connection cancelled" in dm["text"]]
    assert len(cancelled) == 1


def test_paused_pick_stays_red(bot):
    account_id = add_account(bot, "Acme Dental", "loc-acme")
    bot.crm.pause_location("loc-acme")
    bot.command("/crm-connect", "Acme Dental direct")

    page = bot.http.get(bot.crm.authorize(link_from_dm(bot, AGENT), "location:loc-acme"))

    assert "the sub-account is paused" in page.text
    account = get_account(bot, account_id)
    assert account.status == "disconnected"
    assert account.reason == "paused"
    with session_scope(bot.services.engine) as session:
        assert session.exec(select(Connection)).one().account_id == account_id


def test_result_dm_omits_window_advice(bot):
    add_account(bot, "Acme Dental", "loc-acme")
    bot.command("/crm-connect", "Acme Dental direct")

    page = bot.http.get(bot.crm.authorize(link_from_dm(bot, AGENT), "location:loc-acme"))

    assert "You can close this window." in page.text
    result = bot.slack.wait_for(lambda sim: [dm for dm in sim.dms_to(AGENT) if "*Connected*" in dm["text"]])
    assert "close this window" not in result[0]["text"]


def test_owner_gets_one_dm_per_connect(bot):
    add_account(bot, "Acme Dental", "loc-acme")
    bot.command("/crm-connect", "Acme Dental direct")
    link = link_from_dm(bot, AGENT)
    before = len(bot.slack.dms_to(AGENT))

    bot.http.get(bot.crm.authorize(link, "location:loc-acme"))

    bot.slack.wait_for(lambda sim: len(sim.dms_to(AGENT)) > before)
    assert len(bot.slack.dms_to(AGENT)) == before + 1


def test_cancel_is_not_a_failed_attempt(bot):
    from bot.accounts import history_of

    account_id = add_account(bot, "Acme Dental", "loc-acme")
    bot.command("/crm-connect", "Acme Dental direct")
    bot.http.get(bot.crm.authorize(link_from_dm(bot, AGENT), "location:loc-acme", action="cancel"))

    with session_scope(bot.services.engine) as session:
        account = session.get(Account, account_id)
        assert history_of(session, account).failed_attempts == 0
        kinds = [event.kind for event in queries.list_events(session=session, account_id=account_id)]
    assert "connect_cancelled" in kinds


def test_requester_dm_names_recipient(bot):
    from tests.conftest import OTHER_USER

    bot.slack.add_user(OTHER_USER, "owner")
    add_account(bot, "Acme Dental", "loc-acme")
    bot.command("/crm-connect", f"Acme Dental direct <@{OTHER_USER}>")

    bot.http.get(bot.crm.authorize(link_from_dm(bot, OTHER_USER), "location:loc-bolt"))

    requester = bot.slack.wait_for(lambda sim: [dm for dm in sim.dms_to(AGENT) if "Result of the link" in dm["text"]])
    assert requester[0]["text"].startswith(f"Result of the link you sent to <@{OTHER_USER}>:")
    assert "The login picked Bolt Plumbing" in requester[0]["text"]
    recipient = [dm for dm in bot.slack.dms_to(OTHER_USER) if "The login picked" in dm["text"]]
    assert not recipient[0]["text"].startswith("Result of the link")
