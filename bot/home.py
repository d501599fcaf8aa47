"""The App Home dashboard: counts, the red accounts with their next step, the caller's
accounts, the agency's connection, and when the last sync and digest ran.

Slack allows 100 blocks in a Home view, so the red accounts come in pages of
RED_PER_PAGE, with buttons that publish the previous or next page.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from dataclasses import dataclass
from datetime import datetime

from slack_sdk.errors import SlackApiError

from bot import render
from bot.accounts import history_of
from bot.advice import Action, Advice, advise, command_ref, status_label
from bot.connections import Caller
from bot.errors import InputError
from bot.render import account_title, escape, section, when
from bot.services import Services
from storage import home_queries, queries
from storage.db import session_scope, utcnow
from storage.models import CONNECTED, Account, Agency

logger = logging.getLogger(__name__)

# Each red account takes one block, and the rest of the view at most 20.
RED_PER_PAGE = 25
MAX_OWNED_LISTED = 15
DEBOUNCE_SECONDS = 5.0

ACTION_PAGE = "home_page"
ACTION_CONNECT = "home_connect"
ACTION_RESET = "home_reset"


@dataclass(frozen=True)
class RedItem:
    account: Account
    label: str
    advice: Advice


@dataclass(frozen=True)
class Dashboard:
    """The content of one user's App Home, read from the database at one moment."""

    user_id: str
    green: int
    red: int
    page: int
    pages: int
    red_items: tuple[RedItem, ...]
    owned: tuple[Account, ...]
    owned_total: int
    agencies: tuple[Agency, ...]
    last_digest_at: datetime | None
    built_at: datetime


class HomeService:
    """Builds and publishes App Home views, and acts on the buttons they carry."""

    def __init__(self, services: Services) -> None:
        self.services = services
        # NOTE: the debounce state is per process. It only saves views.publish calls, so
        # a second process publishing again is harmless.
        self._published_at: dict[str, float] = {}
        self._lock = threading.Lock()

    # Publishing

    def publish_if_stale(self, user_id: str) -> bool:
        """Publish page 1 unless this process published for the user in the last DEBOUNCE_SECONDS."""
        now = time.monotonic()
        with self._lock:
            last = self._published_at.get(user_id)
            if last is not None and now - last < DEBOUNCE_SECONDS:
                logger.info("Skipped publishing App Home for %s: published %.1f s ago", user_id, now - last)
                return False
            self._published_at[user_id] = now
        return self.publish(user_id)

    def publish(self, user_id: str, page: int = 0) -> bool:
        """Build the user's dashboard and publish it with views.publish. Return whether Slack accepted it."""
        view = render_home(self.build(user_id, page))
        try:
            self.services.slack.client.views_publish(user_id=user_id, view=view)
        except SlackApiError as error:
            logger.error("Publishing App Home for %s failed: %s", user_id, error.response.get("error"))
            return False
        with self._lock:
            self._published_at[user_id] = time.monotonic()
        logger.info("Published App Home for %s (page %d)", user_id, page + 1)
        return True

    def build(self, user_id: str, page: int = 0) -> Dashboard:
        settings = self.services.settings
        with session_scope(self.services.engine) as session:
            counts = queries.count_accounts_by_status(session=session)
            red = home_queries.count_red_accounts(session=session)
            pages = max(1, math.ceil(red / RED_PER_PAGE))
            page = min(max(page, 0), pages - 1)

            red_items = []
            for account in home_queries.list_red_accounts(session=session, offset=page * RED_PER_PAGE, limit=RED_PER_PAGE):
                advice = advise(account, history_of(session, account), app_url=settings.crm_app_url)
                red_items.append(RedItem(account, status_label(account), advice))

            return Dashboard(
                user_id=user_id,
                green=counts.get(CONNECTED, 0),
                red=red,
                page=page,
                pages=pages,
                red_items=tuple(red_items),
                owned=tuple(home_queries.list_accounts_owned_by(session=session, user_id=user_id, limit=MAX_OWNED_LISTED)),
                owned_total=home_queries.count_accounts_owned_by(session=session, user_id=user_id),
                agencies=tuple(queries.list_agencies(session=session)),
                last_digest_at=home_queries.get_last_digest_at(session=session),
                built_at=utcnow(),
            )

    # Buttons

    def connect(self, caller: Caller, account_id: int) -> str:
        """Connect an account as /crm-connect does, with the link going to the caller. Return the reply text."""
        account, advice = self._account_with_advice(account_id)
        direct = advice.action is Action.CONNECT_DIRECT
        reply = self.services.connections.connect_account(caller=caller, query=command_ref(account),
                                                          recipient_user_id=caller.user_id, direct=direct)
        return reply.text

    def reset(self, caller: Caller, account_id: int) -> str:
        """Reset an account as the /crm-reset confirmation does. Return the reply text."""
        if not self.services.settings.is_admin(caller.user_id):
            return render.not_admin()
        return self.services.connections.reset_account(caller=caller, account_id=account_id)

    def _account_with_advice(self, account_id: int) -> tuple[Account, Advice]:
        with session_scope(self.services.engine) as session:
            account = queries.get_account(session=session, account_id=account_id)
            if account is None:
                raise InputError("That account no longer exists. Open the Home tab again to see the current list.")
            return account, advise(account, history_of(session, account), app_url=self.services.settings.crm_app_url)


# Rendering

def render_home(dashboard: Dashboard) -> dict:
    """Return the Home view (type "home") for a dashboard. Every name from users or the CRM is escaped."""
    total = dashboard.green + dashboard.red
    blocks: list[dict] = [
        {"type": "header", "text": {"type": "plain_text", "text": "CRM connections"}},
        section(f"*{dashboard.green}* Connected · *{dashboard.red}* No Active CRM Connection · {total} accounts in all"),
    ]
    blocks += agency_blocks(dashboard)

    blocks.append({"type": "divider"})
    blocks += owned_blocks(dashboard)

    blocks.append({"type": "divider"})
    blocks += red_blocks(dashboard)

    blocks.append({"type": "context", "elements": [
        {"type": "mrkdwn", "text": f"Updated {when(dashboard.built_at)}. The tab refreshes each time you open it."}]})
    return {"type": "home", "callback_id": "crm_home", "blocks": blocks}


def agency_blocks(dashboard: Dashboard) -> list[dict]:
    lines = []
    for agency in dashboard.agencies:
        state = "Connected" if agency.status == CONNECTED else status_label(agency)
        synced = when(agency.last_sync_at) if agency.last_sync_at else "never"
        lines.append(f"Agency *{render.escape_name(agency.name)}*: {escape(state)}. Last sync: {synced}.")
    if not lines:
        lines.append("No agency is connected yet. Run `/crm-connect agency` to connect one.")

    digest = when(dashboard.last_digest_at) if dashboard.last_digest_at else "none posted yet"
    lines.append(f"Last digest: {digest}.")
    return [section("\n".join(lines))]


def owned_blocks(dashboard: Dashboard) -> list[dict]:
    if not dashboard.owned:
        return [section("*Your accounts*\nYou own no accounts. An account's owner gets a DM when it turns green or red.")]

    lines = [f"*Your accounts* ({dashboard.owned_total})"]
    for account in dashboard.owned:
        lines.append(f"• {account_title(account)}: {escape(status_label(account))}")
    if dashboard.owned_total > len(dashboard.owned):
        lines.append(f"…and {dashboard.owned_total - len(dashboard.owned)} more. Use `/crm-status <account>` for one of them.")
    return [section("\n".join(lines))]


def red_blocks(dashboard: Dashboard) -> list[dict]:
    if dashboard.red == 0:
        return [section("*Every account is Connected.* Nothing to fix.")]

    title = "*Accounts with No Active CRM Connection*"
    if dashboard.pages > 1:
        title += f" (page {dashboard.page + 1} of {dashboard.pages})"
    blocks = [section(title)]
    for item in dashboard.red_items:
        block = section(f"{account_title(item.account)}: {escape(item.label)}\nNext step: {escape(item.advice.text)}")
        button = account_button(item)
        if button is not None:
            block["accessory"] = button
        blocks.append(block)

    paging = page_buttons(dashboard)
    if paging:
        blocks.append({"type": "actions", "block_id": "home_paging", "elements": paging})
    return blocks


def account_button(item: RedItem) -> dict | None:
    value = str(item.account.id)
    if item.advice.action in (Action.CONNECT, Action.CONNECT_DIRECT):
        label = "Send Direct Connection link" if item.advice.action is Action.CONNECT_DIRECT else "Connect"
        return {"type": "button", "action_id": ACTION_CONNECT, "value": value, "text": {"type": "plain_text", "text": label}}
    if item.advice.action is Action.RESET:
        return {
            "type": "button", "action_id": ACTION_RESET, "value": value, "style": "danger",
            "text": {"type": "plain_text", "text": "Reset connection"},
            "confirm": {
                "title": {"type": "plain_text", "text": "Reset the connection?"},
                "text": {"type": "plain_text", "text": "The bot refreshes the tokens now. When that fails, it DMs you a fresh link."},
                "confirm": {"type": "plain_text", "text": "Reset"},
                "deny": {"type": "plain_text", "text": "Cancel"},
            },
        }
    return None


def page_buttons(dashboard: Dashboard) -> list[dict]:
    buttons = []
    if dashboard.page > 0:
        buttons.append({"type": "button", "action_id": f"{ACTION_PAGE}_previous", "value": str(dashboard.page - 1),
                        "text": {"type": "plain_text", "text": "Previous page"}})
    if dashboard.page + 1 < dashboard.pages:
        buttons.append({"type": "button", "action_id": f"{ACTION_PAGE}_next", "value": str(dashboard.page + 1),
                        "text": {"type": "plain_text", "text": "Next page"}})
    return buttons
