"""Slack messages and Block Kit. Every untrusted string goes through `escape`."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import TYPE_CHECKING

from bot.advice import REASON_LABELS, Advice, incognito_tip
from bot.crm import CrmReason
from storage.models import CONNECTED, METHOD_AGENCY, NEVER_CONNECTED, Account

if TYPE_CHECKING:
    from bot.connections import AccountView, AgencyView, Link, Overview

SECTION_LIMIT = 3000
MAX_RED_LISTED = 40


def escape(text: str | None) -> str:
    """Escape &, < and > so that text from users or the CRM cannot ping or link in mrkdwn."""
    return (text or "").replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


# mrkdwn has no escape for its formatting characters, so names show look-alikes.
NAME_LOOKALIKES = str.maketrans({"*": "\u2217", "_": "\uff3f", "~": "\u223c", "`": "\u02cb"})


def escape_name(text: str | None) -> str:
    """Escape a name for mrkdwn, and show its *, _, ~ and ` as look-alike characters.

    Those characters would otherwise make a name bold, italic, struck or code,
    and could unbalance the formatting around it. Lookups fold the look-alikes
    back (`storage.queries.name_key`), so a name copied from a message still
    matches. Only names get this, never ids or URLs.
    """
    return escape(text).translate(NAME_LOOKALIKES)


def mention(user_id: str) -> str:
    return f"<@{user_id}>"


def when(moment: datetime | None) -> str:
    return moment.strftime("%Y-%m-%d %H:%M UTC") if moment else "unknown"


def section(text: str) -> dict:
    if len(text) > SECTION_LIMIT:
        text = text[: SECTION_LIMIT - 1] + "…"
    return {"type": "section", "text": {"type": "mrkdwn", "text": text}}


def account_title(account: Account) -> str:
    suffix = f" ({escape(account.location_id)})" if account.location_id else ""
    return f"*{escape_name(account.name)}*{suffix}"


# Usage and input errors

USAGE = {
    "/crm-connect": (
        "*Usage of /crm-connect*\n"
        "• `/crm-connect <account>`: connect through the agency when it can, else DM you a Direct Connection link\n"
        "• `/crm-connect <account> direct`: always DM a Direct Connection link\n"
        "• `/crm-connect <account> @user`: DM the link to that user instead of you\n"
        "• `/crm-connect agency`: DM an agency-level link\n"
        "The account is a CRM location id or a name (case-insensitive)."
    ),
    "/crm-status": (
        "*Usage of /crm-status*\n"
        "• `/crm-status`: counts and every account that shows No Active CRM Connection\n"
        "• `/crm-status red`: the daily digest's list, with the next step and buttons for each account\n"
        "• `/crm-status agency`: the agency's connection, its account counts and the last sync\n"
        "• `/crm-status <account>`: details, recent events and the next step"
    ),
    "/crm-reset": (
        "*Usage of /crm-reset*\n"
        "• `/crm-reset <account>`: refresh the account's tokens; when that fails, DM a fresh link\n"
        "• `/crm-reset agency`: refresh the agency's tokens and run Connect Accounts again\n"
        "Asks for confirmation first."
    ),
}


def account_not_found(query: str) -> str:
    return (f"No account matches “{escape_name(query)}”. Use a CRM location id or the account's name, "
            f"see `/crm-status` for the list, or add `direct` to send a Direct Connection link for an account outside the agency.")


def several_accounts(query: str, matches: Sequence[Account], agencies: dict[int, str], total: int) -> str:
    lines = [f"{total} accounts match “{escape_name(query)}”. Use the location id of the one you mean:"]
    for account in matches:
        agency = escape_name(agencies.get(account.agency_id, "no agency")) if account.agency_id else "outside the agency"
        lines.append(f"• {escape_name(account.name)}: `{escape(account.location_id or 'no location id yet')}`, {agency}")
    if total > len(matches):
        lines.append(f"…and {total - len(matches)} more.")
    return "\n".join(lines)


# Links

def link_dm(*, account: Account | None, method: str, link: Link, requester_user_id: str, recipient_user_id: str, app_url: str, why: str | None) -> tuple[str, list]:
    if method == METHOD_AGENCY:
        title = "Connect the agency to the CRM"
        steps = ("Log in as an agency admin, choose the agency (not a sub-account) and click Authorize. "
                 "The accounts of the agency then connect through it.")
    else:
        title = f"Direct Connection for {escape_name(account.name)}" if account else "Direct Connection"
        steps = ("Log in to that sub-account, pick it on the CRM page and click Authorize. "
                 "This makes a Direct Connection that does not depend on the agency.")

    lines = [f"*{title}*"]
    if requester_user_id != recipient_user_id:
        lines.append(f"{mention(requester_user_id)} asked you to connect this account.")
    if why:
        lines.append(escape(why))
    lines.append(steps)
    lines.append(escape(incognito_tip(app_url)))
    lines.append(f"The link works once and expires at {when(link.expires_at)}.")

    text = f"{title}: {link.url}\nThe link expires at {when(link.expires_at)}."
    blocks = [
        section("\n".join(lines)),
        {"type": "actions", "block_id": "connect_link", "elements": [
            {"type": "button", "action_id": "open_connect_link", "text": {"type": "plain_text", "text": "Connect in the CRM"},
             "url": link.url, "style": "primary"},
        ]},
    ]
    return text, blocks


def link_sent_reply(account: Account | None, method: str, caller_id: str, recipient_id: str, link: Link, sent: bool, *, why: str | None = None) -> str:
    what = "an agency-level link" if method == METHOD_AGENCY else f"a Direct Connection link for {account_title(account)}"
    if not sent:
        return (f"Could not DM {mention(recipient_id)}: Slack refused the message. Check that the user exists and "
                f"that the bot may open DMs (scope im:write), then try again.")
    who = "you" if caller_id == recipient_id else mention(recipient_id)
    lines = [f"Sent {what} to {who} by DM. It expires at {when(link.expires_at)}."]
    if why:
        lines.append(escape(why))
    return "\n".join(lines)


def already_connected_reply(account: Account) -> str:
    return (f"{account_title(account)} is already Connected. To connect it again anyway, use "
            f"`/crm-connect {escape(account.location_id or account.name)} direct`.")


def synced_reply(account: Account) -> str:
    return f"Your account synced through the agency: {account_title(account)} is Connected. No link was needed."


def mint_failure_why(reason: CrmReason) -> str:
    texts = {
        CrmReason.NO_LOCATION_ACCESS: "The agency does not have access to this account (You don't own this account), so it needs a Direct Connection.",
        CrmReason.NOT_INSTALLED: "The app is not installed on this sub-account, so it needs a Direct Connection.",
        CrmReason.LOCATION_NOT_ACTIVE: "The CRM reports the sub-account as paused (Location is not active).",
        CrmReason.TRANSIENT: "The CRM did not answer the agency sync in time, so this is a Direct Connection link.",
    }
    return texts.get(reason, "The agency could not sync this account, so it needs a Direct Connection.")


def exchange_failure_text(reason: CrmReason) -> str:
    texts = {
        CrmReason.CODE_NOT_FOUND: "The CRM no longer knows this authorization code: it was already used or it expired.",
        CrmReason.INVALID_CLIENT: "The CRM rejected the app's credentials. An operator must check CRM_CLIENT_ID and CRM_CLIENT_SECRET.",
        CrmReason.LOCATION_NOT_ACTIVE: "The CRM reports the chosen sub-account as paused (Location is not active).",
        CrmReason.NO_LOCATION_ACCESS: "The CRM reports that this login has no access to the chosen sub-account.",
    }
    return texts.get(reason, "The CRM rejected the authorization.")


def callback_dm(title: str, message: str, next_step: str | None) -> str:
    text = f"*{escape(title)}*\n{escape(message)}"
    if next_step:
        text += f"\nNext step: {escape(next_step)}"
    return text


# Status

def overview(view: Overview) -> tuple[str, list]:
    header = f"{view.green} of {view.total} accounts Connected, {len(view.red)} show No Active CRM Connection."
    blocks = [section(f"*{header}*")]
    for agency in view.agencies:
        state = "Connected" if agency.status == CONNECTED else "No Active CRM Connection"
        blocks.append({"type": "context", "elements": [{"type": "mrkdwn", "text": f"Agency {escape_name(agency.name)}: {state}"}]})

    for item in view.red[:MAX_RED_LISTED]:
        blocks.append(section(f"{account_title(item.account)}: {escape(item.label)}\nNext step: {escape(item.advice.text)}"))
    if len(view.red) > MAX_RED_LISTED:
        blocks.append(section(f"…and {len(view.red) - MAX_RED_LISTED} more. Use `/crm-status <account>` for one of them."))
    if view.total == 0:
        blocks.append(section("No accounts yet. Connect the agency with `/crm-connect agency`, or one account with `/crm-connect <name> direct`."))
    return header, blocks


def agency_status(views: Sequence[AgencyView]) -> tuple[str, list]:
    if not views:
        text = "No agency is connected yet. Connect one with `/crm-connect agency`."
        return text, [section(text)]

    lines = []
    for view in views:
        agency = view.agency
        counts = f"Accounts: {view.green} Connected, {view.red} red. Last sync: {when(agency.last_sync_at)}."
        if agency.status == CONNECTED:
            lines.append(f"*{escape_name(agency.name)}* (`{escape(agency.company_id)}`): Connected\n{counts} "
                         f"Token valid until {when(view.expires_at)}.")
            continue

        reason = REASON_LABELS.get(agency.reason or NEVER_CONNECTED, agency.reason or NEVER_CONNECTED)
        if view.expires_at is not None:
            next_step = "Reset it with `/crm-reset agency`; when that fails, reconnect it with `/crm-connect agency`."
        else:
            next_step = "Reconnect it with `/crm-connect agency`: no stored token is left to reset."
        lines.append(f"*{escape_name(agency.name)}* (`{escape(agency.company_id)}`): No Active CRM Connection "
                     f"({escape(reason)})\n{counts}\nNext step: {next_step}")
    return f"{len(views)} agenc{'y' if len(views) == 1 else 'ies'}", [section("\n\n".join(lines))]


def account_detail(view: AccountView) -> tuple[str, list]:
    account = view.account
    lines = [f"{account_title(account)}: {escape(view.label)}"]
    lines.append(f"Agency: {escape_name(view.agency_name) if view.agency_name else 'outside the agency'}")
    if account.owner_user_id:
        lines.append(f"Owner: {mention(account.owner_user_id)}")
    if account.status == CONNECTED:
        lines.append(f"Connected since {when(account.connected_at)} ({escape(account.method or 'unknown')}), token valid until {when(view.expires_at)}")
    else:
        lines.append(f"Red since {when(account.red_since)}")
        if account.last_error:
            lines.append(f"Last error: {escape(account.last_error[:300])}")
    lines.append(f"Next step: {escape(view.advice.text)}")

    blocks = [section("\n".join(lines))]
    if view.events:
        history = "\n".join(f"• {when(event.created_at)}: {escape(event_text(event))}" for event in view.events)
        blocks.append(section(f"*Recent events*\n{history}"))
    return lines[0], blocks


def event_text(event) -> str:
    text = event.kind.replace("_", " ")
    if event.reason:
        text += f" ({event.reason})"
    if event.detail:
        text += f": {event.detail[:200]}"
    return text


# Reset

def reset_confirm(account: Account) -> tuple[str, list]:
    text = f"Reset the connection of {account_title(account)}? The bot refreshes its tokens now; when that fails, it DMs you a fresh link."
    blocks = [
        section(text),
        {"type": "actions", "block_id": "reset_confirm", "elements": [
            {"type": "button", "action_id": "reset_confirm", "style": "danger", "value": str(account.id),
             "text": {"type": "plain_text", "text": "Reset connection"}},
            {"type": "button", "action_id": "reset_cancel", "value": str(account.id),
             "text": {"type": "plain_text", "text": "Cancel"}},
        ]},
    ]
    return text, blocks


def nothing_to_reset(account: Account) -> str:
    return (f"{account_title(account)} has no stored tokens and no connected agency, so a reset has nothing to refresh. "
            f"Send a link with `/crm-connect {escape(account.location_id or account.name)}`.")


def reset_refreshed(account: Account, *, through_agency: bool = False) -> str:
    how = "minted a new token through the agency" if through_agency else "refreshed the tokens"
    return f"Reset done: the bot {how}. {account_title(account)} is Connected."


def reset_transient(account: Account) -> str:
    return (f"The CRM did not answer while resetting {account_title(account)}. Nothing was changed; "
            f"the account keeps its status. Try again in a few minutes.")


def reset_paused(account: Account) -> str:
    return (f"The CRM reports {account_title(account)} as paused (Location is not active). The bot kept the tokens; "
            f"reactivate the sub-account in the CRM and the next refresh recovers it.")


def reset_relinked(account: Account, sent: bool) -> str:
    dm = "A fresh Direct Connection link is in your DMs." if sent else "Slack refused the DM with a fresh link; try `/crm-connect` again."
    return f"The reset could not recover {account_title(account)}: it now shows No Active CRM Connection. {dm}"


def reset_agency_confirm() -> tuple[str, list]:
    text = ("Reset the agency's connection? The bot refreshes the agency's tokens now and runs Connect Accounts again; "
            "when the refresh fails, it DMs you a fresh agency-level link.")
    blocks = [
        section(text),
        {"type": "actions", "block_id": "reset_agency_confirm", "elements": [
            {"type": "button", "action_id": "reset_agency_confirm", "style": "danger", "value": "agency",
             "text": {"type": "plain_text", "text": "Reset agency"}},
            {"type": "button", "action_id": "reset_cancel", "value": "agency",
             "text": {"type": "plain_text", "text": "Cancel"}},
        ]},
    ]
    return text, blocks


def reset_agency_refreshed(agency, sync_text: str | None) -> str:
    text = f"Reset done: the bot refreshed the tokens of the agency {escape_name(agency.name)}."
    if sync_text:
        # The sync's summary is already escaped mrkdwn.
        text += f"\n{sync_text}"
    return text


def reset_agency_transient(agency) -> str:
    return (f"The CRM did not answer while resetting the agency {escape_name(agency.name)}. Nothing was changed; "
            f"the bot retries the refresh on its own. Try again in a few minutes.")


def reset_agency_relinked(agency, sent: bool) -> str:
    what = f"the agency {escape_name(agency.name)}" if agency is not None else "the agency"
    dm = "A fresh agency-level link is in your DMs." if sent else "Slack refused the DM with a fresh link; try `/crm-connect agency`."
    return f"The reset could not recover {what}: it needs a new agency-level connection. {dm}"


def not_admin() -> str:
    return "Only the admins named in ADMIN_USER_IDS may reset connections. Ask one of them."


# Owner notifications

def owner_change_dm(account: Account, label: str, advice: Advice, turned_green: bool, *, again: bool = True) -> str:
    if turned_green:
        return f"{account_title(account)} is Connected{' again' if again else ''}."
    return f"{account_title(account)} now shows {escape(label)}.\nNext step: {escape(advice.text)}"
