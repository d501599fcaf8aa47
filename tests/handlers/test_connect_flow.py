"""The connect flow over HTTP: /crm-connect, the DM'd link, the CRM's page, the callback, /crm-status."""

from __future__ import annotations

from sqlmodel import select

from storage.db import session_scope
from storage.models import Account, Agency, Connection, OAuthState
from tests.conftest import AGENT, OTHER_USER, reply_text


def link_from_dm(bot, user_id: str) -> str:
    dm = bot.slack.wait_for(lambda sim: sim.dms_to(user_id)[-1] if sim.dms_to(user_id) else None)
    for block in dm["blocks"]:
        for element in block.get("elements", []):
            if element.get("url"):
                return element["url"]
    raise AssertionError(f"No link button in the DM: {dm}")


def accounts(bot) -> list[Account]:
    with session_scope(bot.services.engine) as session:
        return list(session.exec(select(Account)).all())


def test_direct_connect_turns_green(bot):
    response, response_url = bot.command("/crm-connect", "Acme Dental direct")

    assert response.status_code == 200
    assert "Working on it" in response.text
    reply = bot.last_reply_text(response_url, count=1)
    assert "Direct Connection link" in reply
    assert "to you by DM" in reply

    url = link_from_dm(bot, AGENT)
    page = bot.http.get(bot.crm.authorize(url, "location:loc-acme"))
    assert page.status_code == 200
    assert "Acme Dental is connected" in page.text

    _, status_url = bot.command("/crm-status", "Acme Dental")
    status = bot.last_reply_text(status_url, count=1)
    assert "Connected" in status
    assert "No Active CRM Connection" not in status


def test_link_dm_content(bot):
    bot.command("/crm-connect", "Acme Dental direct")

    dm = bot.slack.wait_for(lambda sim: sim.dms_to(AGENT)[-1] if sim.dms_to(AGENT) else None)
    text = reply_text(dm)
    assert "Direct Connection for Acme Dental" in text
    assert "incognito window" in text
    assert "https://app.example-crm.test" in text
    assert "expires at" in text
    assert dm["text"].startswith("Direct Connection for Acme Dental: http")


def test_stored_tokens_are_encrypted(bot):
    bot.command("/crm-connect", "Acme Dental direct")
    bot.http.get(bot.crm.authorize(link_from_dm(bot, AGENT), "location:loc-acme"))

    with session_scope(bot.services.engine) as session:
        connection = session.exec(select(Connection)).one()
    grant_tokens = [request for request in bot.crm.requests_to("/oauth/token")]
    assert grant_tokens
    assert connection.access_token_encrypted.startswith("gAAAAA")
    assert "access_token" not in repr(connection)
    tokens = bot.services.connections.tokens.tokens_of(connection)
    assert tokens.access_token not in connection.access_token_encrypted


def test_state_stored_as_hash_only(bot):
    bot.command("/crm-connect", "Acme Dental direct")
    url = link_from_dm(bot, AGENT)

    state_value = url.split("state=")[1].split("&")[0]
    with session_scope(bot.services.engine) as session:
        state = session.exec(select(OAuthState)).one()
    assert state.state_hash != state_value
    assert len(state.state_hash) == 64
    assert state.team_id == "T0SIM0001"
    assert state.requester_user_id == AGENT
    assert state.method == "direct"


def test_connect_to_other_user(bot):
    bot.slack.add_user(OTHER_USER, "owner")
    _, response_url = bot.command("/crm-connect", f"Acme Dental direct <@{OTHER_USER}|owner>")

    reply = bot.last_reply_text(response_url, count=1)
    assert f"to <@{OTHER_USER}> by DM" in reply
    dm = reply_text(bot.slack.wait_for(lambda sim: sim.dms_to(OTHER_USER)[-1] if sim.dms_to(OTHER_USER) else None))
    assert f"<@{AGENT}> asked you to connect" in dm
    assert bot.slack.dms_to(AGENT) == []


def test_callback_result_goes_to_requester_and_recipient(bot):
    bot.slack.add_user(OTHER_USER, "owner")
    bot.command("/crm-connect", f"Acme Dental direct <@{OTHER_USER}>")
    bot.http.get(bot.crm.authorize(link_from_dm(bot, OTHER_USER), "location:loc-acme"))

    bot.slack.wait_for(lambda sim: sim.dms_to(AGENT))
    assert "Connected" in bot.slack.dms_to(AGENT)[-1]["text"]
    assert any("Connected" in dm["text"] for dm in bot.slack.dms_to(OTHER_USER))


def test_agency_link_connects_agency(bot):
    _, response_url = bot.command("/crm-connect", "agency")
    assert "agency-level link" in bot.last_reply_text(response_url, count=1)

    page = bot.http.get(bot.crm.authorize(link_from_dm(bot, AGENT), "company:comp-agency-1"))
    assert page.status_code == 200
    assert "is connected" in page.text
    with session_scope(bot.services.engine) as session:
        agency = session.exec(select(Agency)).one()
        connection = session.exec(select(Connection)).one()
    assert agency.company_id == "comp-agency-1"
    assert agency.status == "connected"
    assert connection.user_type == "Company"
    assert connection.agency_id == agency.id


def test_unknown_account_writes_nothing(bot):
    _, response_url = bot.command("/crm-connect", "Nobody Inc")

    reply = bot.last_reply_text(response_url, count=1)
    assert "No account matches “Nobody Inc”" in reply
    assert accounts(bot) == []
    assert bot.slack.calls_to("chat.postMessage") == []


def test_unknown_name_with_direct_creates_external_account(bot):
    bot.command("/crm-connect", "Outside Gym direct")
    url = link_from_dm(bot, AGENT)
    created = accounts(bot)
    assert [(account.name, account.location_id) for account in created] == [("Outside Gym", None)]

    bot.http.get(bot.crm.authorize(url, "location:loc-ext"))

    account = accounts(bot)[0]
    assert account.location_id == "loc-ext"
    assert account.company_id == "comp-other"
    assert account.status == "connected"


def test_name_lookup_ignores_case(bot):
    bot.command("/crm-connect", "Acme Dental direct")
    bot.http.get(bot.crm.authorize(link_from_dm(bot, AGENT), "location:loc-acme"))

    _, status_url = bot.command("/crm-status", "  aCmE   dental ")
    assert "*Acme Dental* (loc-acme): Connected" in bot.last_reply_text(status_url, count=1)


def test_several_matches_are_listed(bot):
    with session_scope(bot.services.engine) as session:
        from storage import queries

        queries.create_account(session=session, name="Twin Spa", location_id="loc-t1")
        queries.create_account(session=session, name="twin spa", location_id="loc-t2")

    _, response_url = bot.command("/crm-connect", "Twin Spa")
    reply = bot.last_reply_text(response_url, count=1)
    assert "2 accounts match “Twin Spa”" in reply
    assert "`loc-t1`" in reply
    assert "`loc-t2`" in reply


def test_help_and_empty_show_usage(bot):
    for text in ("", "help"):
        response, _ = bot.command("/crm-connect", text)
        assert "Usage of /crm-connect" in response.text


def test_long_text_is_rejected(bot):
    response, _ = bot.command("/crm-connect", "x" * 3001)

    assert response.status_code == 200
    assert "too long (3,001 characters)" in response.text
    assert accounts(bot) == []


def test_channel_mention_pings_nobody(bot):
    response, _ = bot.command("/crm-connect", "<!channel> direct")

    assert "&lt;!channel&gt;" in response.text
    assert "<!channel>" not in response.text
    assert accounts(bot) == []


def test_mention_in_name_pings_nobody(bot):
    _, response_url = bot.command("/crm-status", "Acme <@U0OTHER02> Dental")

    reply = bot.last_reply_text(response_url, count=1)
    assert "<@U0OTHER02>" not in reply
    assert "&lt;@U0OTHER02&gt;" in reply


def test_malformed_user_is_rejected(bot):
    response, _ = bot.command("/crm-connect", "Acme Dental @jane")

    assert "“@jane” is not a Slack user" in response.text
    assert bot.slack.calls_to("conversations.open") == []


def test_unicode_name_works(bot):
    bot.command("/crm-connect", "Zahnärzte Müller 東京 direct")
    url = link_from_dm(bot, AGENT)

    assert [account.name for account in accounts(bot)] == ["Zahnärzte Müller 東京"]
    assert url.startswith(bot.crm.url)


def test_command_from_other_team_is_refused(bot):
    response, _ = bot.command("/crm-connect", "Acme Dental direct", team_id="T0FOREIGN")

    assert "serves another Slack workspace" in response.text
    assert accounts(bot) == []


def test_bad_signature_gets_401(bot):
    form = {"command": "/crm-status", "text": "", "team_id": "T0SIM0001", "user_id": AGENT}

    assert bot.post_signed(form, secret="wrong-secret").status_code == 401


def test_stale_signature_gets_401(bot):
    import time

    form = {"command": "/crm-status", "text": "", "team_id": "T0SIM0001", "user_id": AGENT}

    assert bot.post_signed(form, timestamp=int(time.time()) - 301).status_code == 401


def test_dm_refused_is_reported(bot):
    bot.slack.fail_next("conversations.open", error="user_not_found")

    _, response_url = bot.command("/crm-connect", "Acme Dental direct")

    assert "Could not DM <@U0AGENT01>" in bot.last_reply_text(response_url, count=1)


def test_dm_retried_after_rate_limit(bot):
    bot.slack.fail_next("chat.postMessage", status=429, retry_after=1)

    _, response_url = bot.command("/crm-connect", "Acme Dental direct")

    assert "by DM" in bot.last_reply_text(response_url, count=1)
    assert len(bot.slack.dms_to(AGENT)) == 1


def test_undelivered_link_not_in_history(bot):
    from storage import queries

    bot.slack.fail_next("conversations.open", error="user_not_found")
    _, response_url = bot.command("/crm-connect", "Acme Dental direct")
    bot.last_reply_text(response_url, count=1)

    with session_scope(bot.services.engine) as session:
        account = session.exec(select(Account)).one()
        kinds = [event.kind for event in queries.list_events(session=session, account_id=account.id)]
    assert "link_sent" not in kinds
