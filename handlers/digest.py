"""The digest's buttons and `/crm-status red`."""

from __future__ import annotations

import logging

from slack_bolt import App

from bot.digest import RESET_ACTION, SEND_LINK_ACTION
from bot.digest_service import DigestService
from bot.services import Services
from handlers.actions import to_account_id
from handlers.common import FAILURE_TEXT, foreign_team_text, run_after_ack, to_caller

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

    @app.action(SEND_LINK_ACTION)
    def send_link(ack, body, respond, context):
        ack()
        if refusal := foreign_team_text(body, context):
            return respond(text=refusal, response_type="ephemeral", replace_original=False)
        account_id = to_account_id(body)
        if account_id is None:
            return respond(text=NO_ACCOUNT, response_type="ephemeral", replace_original=False)

        caller = to_caller(body)
        run_after_ack(respond, lambda: digest.send_link(caller=caller, account_id=account_id))

    @app.action(RESET_ACTION)
    def reset(ack, body, respond, context):
        ack()
        if refusal := foreign_team_text(body, context):
            return respond(text=refusal, response_type="ephemeral", replace_original=False)
        account_id = to_account_id(body)
        if account_id is None:
            return respond(text=NO_ACCOUNT, response_type="ephemeral", replace_original=False)

        caller = to_caller(body)
        run_after_ack(respond, lambda: digest.reset_prompt(caller=caller, account_id=account_id))
