"""App Home: the dashboard tab, its page buttons and its account buttons."""

from __future__ import annotations

import logging
import re

from slack_bolt import App

from bot.home import ACTION_CONNECT, ACTION_PAGE, ACTION_RESET, HomeService
from bot.services import Services
from handlers.actions import to_account_id
from handlers.common import foreign_team_text, run_after_ack, to_caller

logger = logging.getLogger(__name__)


def to_page(body: dict) -> int:
    try:
        return max(0, int(body["actions"][0]["value"]))
    except (KeyError, IndexError, TypeError, ValueError):
        return 0


def register(app: App, services: Services) -> None:
    home = HomeService(services)

    def dm_to(user_id: str):
        """Return a respond()-like callable that DMs, because Home buttons carry no response_url."""
        def send(*, text: str, blocks: list | None = None, **_options) -> None:
            services.slack.send_dm(user_id, text=text, blocks=blocks)
        return send

    @app.event("app_home_opened")
    def app_home_opened(event, body, context):
        # Bolt acknowledges events before running the listener.
        if event.get("tab", "home") != "home" or foreign_team_text(body, context):
            return
        home.publish_if_stale(event["user"])

    @app.action(re.compile(rf"^{ACTION_PAGE}_(previous|next)$"))
    def home_page(ack, body, context):
        ack()
        if foreign_team_text(body, context):
            return
        home.publish(to_caller(body).user_id, to_page(body))

    @app.action(ACTION_CONNECT)
    def home_connect(ack, body, context):
        ack()
        caller = to_caller(body)
        if refusal := foreign_team_text(body, context):
            return dm_to(caller.user_id)(text=refusal)
        account_id = to_account_id(body)
        if account_id is None:
            return dm_to(caller.user_id)(text="That button carries no account. Open the Home tab again.")

        run_after_ack(dm_to(caller.user_id), lambda: home.connect(caller, account_id))
        home.publish(caller.user_id)

    @app.action(ACTION_RESET)
    def home_reset(ack, body, context):
        ack()
        caller = to_caller(body)
        if refusal := foreign_team_text(body, context):
            return dm_to(caller.user_id)(text=refusal)
        account_id = to_account_id(body)
        if account_id is None:
            return dm_to(caller.user_id)(text="That button carries no account. Open the Home tab again.")

        # HomeService.reset checks ADMIN_USER_IDS again: the view may be older than the setting.
        run_after_ack(dm_to(caller.user_id), lambda: home.reset(caller, account_id))
        home.publish(caller.user_id)
