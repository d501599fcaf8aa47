"""App Home: the dashboard tab, its page buttons and its account buttons."""

from __future__ import annotations

import logging
import re

from slack_bolt import App

from bot.home import ACTION_CONNECT, ACTION_PAGE, ACTION_RESET, HomeService
from bot.services import Services
from handlers.common import account_button, foreign_team_text, run_after_ack, to_caller

logger = logging.getLogger(__name__)

NO_ACCOUNT = "That button carries no account. Open the Home tab again."


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
        clicked = account_button(body, context, dm_to(to_caller(body).user_id), no_account_text=NO_ACCOUNT)
        if clicked is None:
            return
        caller, account_id = clicked

        run_after_ack(dm_to(caller.user_id), lambda: home.connect(caller, account_id))
        home.publish(caller.user_id)

    @app.action(ACTION_RESET)
    def home_reset(ack, body, context):
        ack()
        clicked = account_button(body, context, dm_to(to_caller(body).user_id), no_account_text=NO_ACCOUNT)
        if clicked is None:
            return
        caller, account_id = clicked

        # HomeService.reset checks ADMIN_USER_IDS again: the view may be older than the setting.
        run_after_ack(dm_to(caller.user_id), lambda: home.reset(caller, account_id))
        home.publish(caller.user_id)
