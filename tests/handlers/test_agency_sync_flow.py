"""Connect Accounts over HTTP: /crm-connect agency, the CRM's page, the callback, the sync's DM and /crm-status."""

from __future__ import annotations

from storage import queries
from storage.db import session_scope
from storage.models import CONNECTED, METHOD_AGENCY, METHOD_DIRECT
from bot.accounts import mark_red
from tests.conftest import AGENCY_COMPANY_ID, AGENT
from tests.handlers.test_connect_flow import link_from_dm

SUMMARY_TEXT = (
    "*Sync of the agency comp-agency-1 finished:* 3 accounts.\n"
    "• 2 Connected through the agency\n"
    "• 1 No Active CRM Connection: app not installed on the sub-account\n"
    "`/crm-status` lists every account that shows No Active CRM Connection, with its next step."
)


def summaries(bot, count: int = 1) -> list[str]:
    """Wait for `count` sync summaries, sent as edits of the progress DM, and return their texts."""
    def finished(sim):
        texts = [call.args["text"] for call in sim.calls_to("chat.update") if call.args["text"].startswith("*Sync of")]
        return texts if len(texts) >= count else None

    return bot.slack.wait_for(finished, timeout=30)


def link_buttons(bot) -> list[str]:
    return [element["url"] for dm in bot.slack.dms_to(AGENT) for block in dm.get("blocks") or []
            for element in block.get("elements", []) if element.get("url")]


def stored(bot, location_id: str):
    with session_scope(bot.services.engine) as session:
        return queries.get_account_by_location_id(session=session, location_id=location_id)


def connect_agency(bot) -> None:
    bot.command("/crm-connect", "agency")
    page = bot.http.get(bot.crm.authorize(link_from_dm(bot, AGENT), f"company:{AGENCY_COMPANY_ID}"))
    assert page.status_code == 200
    summaries(bot)


def test_agency_login_turns_installed_green(bot):
    _, response_url = bot.command("/crm-connect", "agency")
    assert "Sent an agency-level link to you by DM" in bot.last_reply_text(response_url, count=1)

    page = bot.http.get(bot.crm.authorize(link_from_dm(bot, AGENT), f"company:{AGENCY_COMPANY_ID}"))

    assert page.status_code == 200
    assert "Its accounts are syncing now, and the progress is in your Slack DMs." in page.text
    assert summaries(bot) == [SUMMARY_TEXT]
    for location_id in ("loc-acme", "loc-bolt"):
        account = stored(bot, location_id)
        assert account.status == CONNECTED
        assert account.method == METHOD_AGENCY
    assert len(link_buttons(bot)) == 1


def test_agency_sync_progress_dm(bot):
    connect_agency(bot)

    progress = [dm["text"] for dm in bot.slack.dms_to(AGENT) if dm["text"].startswith("Synced")]
    assert progress == ["Synced 0 of 3 accounts of the agency comp-agency-1…"]
    updates = bot.slack.calls_to("chat.update")
    assert len({call.args["ts"] for call in updates}) == 1


def test_status_red_accounts_have_next_step(bot):
    connect_agency(bot)

    _, response_url = bot.command("/crm-status")

    text = bot.last_reply_text(response_url, count=1)
    assert "2 of 3 accounts Connected, 1 show No Active CRM Connection." in text
    assert ("*Nope Bakery* (loc-nope): No Active CRM Connection (app not installed on this sub-account)\n"
            "Next step: The app is not installed on this sub-account. An agency admin can install it") in text
    assert "open the link in an incognito window and log in at https://app.example-crm.test" in text


def test_connect_agency_again_resyncs(bot):
    connect_agency(bot)

    _, response_url = bot.command("/crm-connect", "agency")

    assert bot.last_reply_text(response_url, count=1) == (
        "The agency comp-agency-1 is already connected, so the bot is syncing its accounts now. "
        "The progress and the result are in your DMs.")
    assert summaries(bot, count=2)[-1] == SUMMARY_TEXT
    assert len(link_buttons(bot)) == 1


def test_connect_account_mints_through_agency(bot):
    connect_agency(bot)
    with session_scope(bot.services.engine) as session:
        mark_red(session, queries.get_account_by_location_id(session=session, location_id="loc-acme"), reason="needs_reconnect")

    _, response_url = bot.command("/crm-connect", "Acme Dental")

    assert bot.last_reply_text(response_url, count=1) == (
        "Your account synced through the agency: *Acme Dental* (loc-acme) is Connected. No link was needed.")
    assert stored(bot, "loc-acme").status == CONNECTED
    assert len(link_buttons(bot)) == 1


def test_connect_uninstalled_sends_direct_link(bot):
    connect_agency(bot)

    _, response_url = bot.command("/crm-connect", "Nope Bakery")

    reply = bot.last_reply_text(response_url, count=1)
    assert reply.startswith("Sent a Direct Connection link for *Nope Bakery* (loc-nope) to you by DM.")
    assert reply.endswith("The app is not installed on this sub-account, so it needs a Direct Connection.")
    assert len(link_buttons(bot)) == 2


def test_connect_outside_account_says_why(bot):
    bot.command("/crm-connect", "Outside Gym direct")
    link_from_dm(bot, AGENT)
    connect_agency(bot)

    _, response_url = bot.command("/crm-connect", "Outside Gym")

    reply = bot.last_reply_text(response_url, count=1)
    assert reply.startswith("Sent a Direct Connection link for *Outside Gym* to you by DM.")
    assert reply.endswith("The account is outside the agency, so it needs a Direct Connection.")


def test_callback_other_company_connects_direct(bot):
    connect_agency(bot)
    bot.crm.transfer_location("loc-bolt", "comp-other")
    bot.command("/crm-connect", "loc-bolt direct")
    bot.slack.wait_for(lambda sim: len(link_buttons(bot)) == 2)

    page = bot.http.get(bot.crm.authorize(link_buttons(bot)[-1], "location:loc-bolt"))

    assert "Bolt Plumbing is connected" in page.text
    bolt = stored(bot, "loc-bolt")
    assert bolt.status == CONNECTED
    assert bolt.method == METHOD_DIRECT
    assert bolt.company_id == "comp-other"
    assert bolt.agency_id is None
