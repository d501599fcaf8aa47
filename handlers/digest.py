"""The digest's buttons and `/crm-status red`."""

from __future__ import annotations

import logging

from slack_bolt import App

from bot.digest import RESET_ACTION, SEND_LINK_ACTION
from bot.digest_service import DigestService
from bot.services import Services
from handlers.common import FAILURE_TEXT, account_button, run_after_ack

logger = logging.getLogger(__name__)

NO_ACCOUNT = "This button carries no account. Run `/crm-status red` for the current list."


def show_red_list(respond, services: Services) -> None:
    """Reply to `/crm-status red` with the digest's list, ephemeral, in up to five messages."""
    try:
        messages = DigestService.from_services(services).red_list()
    except Exception:
        logger.exception("Listing the red accounts failed")
        respond(text=FAILURE_TEXT, response_type="ephemeral")
        return
    for message in messages:
        respond(text=message.text, blocks=message.blocks, response_type="ephemeral", replace_original=False)


def register(app: App, services: Services) -> None:
    digest = DigestService.from_services(services)

    # Both buttons sit on a channel message, so every reply is ephemeral and leaves the digest in place.

    def ephemeral(respond):
        return lambda *, text: respond(text=text, response_type="ephemeral", replace_original=False)

    @app.action(SEND_LINK_ACTION)
    def send_link(ack, body, respond, context):
        ack()
        clicked = account_button(body, context, ephemeral(respond), no_account_text=NO_ACCOUNT)
        if clicked is None:
            return
        caller, account_id = clicked

        run_after_ack(respond, lambda: digest.send_link(caller=caller, account_id=account_id))

    @app.action(RESET_ACTION)
    def reset(ack, body, respond, context):
        ack()
        clicked = account_button(body, context, ephemeral(respond), no_account_text=NO_ACCOUNT)
        if clicked is None:
            return
        caller, account_id = clicked

        run_after_ack(respond, lambda: digest.reset_prompt(caller=caller, account_id=account_id))
