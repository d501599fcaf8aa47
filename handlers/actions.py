"""Buttons: reset confirmation and the connect link."""

from __future__ import annotations

import logging

from slack_bolt import App

from bot import render
from bot.services import Services
from handlers.common import foreign_team_text, run_after_ack, to_account_id, to_caller

logger = logging.getLogger(__name__)


def register(app: App, services: Services) -> None:
    @app.action("reset_confirm")
    def reset_confirm(ack, body, respond, context):
        ack()
        caller = to_caller(body)
        if refusal := foreign_team_text(body, context):
            return respond(text=refusal, response_type="ephemeral", replace_original=False)
        # The button may outlive a change of ADMIN_USER_IDS, so rights are checked again.
        if not services.settings.is_admin(caller.user_id):
            return respond(text=render.not_admin(), response_type="ephemeral", replace_original=False)
        account_id = to_account_id(body)
        if account_id is None:
            return respond(text="This button carries no account. Run `/crm-reset <account>` again.", response_type="ephemeral")

        respond(text="Resetting the connection…", response_type="ephemeral", replace_original=True)
        run_after_ack(respond, lambda: services.resets.reset_account(caller=caller, account_id=account_id), replace_original=True)

    @app.action("reset_agency_confirm")
    def reset_agency_confirm(ack, body, respond, context):
        ack()
        caller = to_caller(body)
        if refusal := foreign_team_text(body, context):
            return respond(text=refusal, response_type="ephemeral", replace_original=False)
        # The button may outlive a change of ADMIN_USER_IDS, so rights are checked again.
        if not services.settings.is_admin(caller.user_id):
            return respond(text=render.not_admin(), response_type="ephemeral", replace_original=False)

        respond(text="Resetting the agency's connection…", response_type="ephemeral", replace_original=True)
        run_after_ack(respond, lambda: services.resets.reset_agency(caller=caller), replace_original=True)

    @app.action("reset_cancel")
    def reset_cancel(ack, respond):
        ack()
        respond(text="Reset cancelled. Nothing was changed.", response_type="ephemeral", replace_original=True)

    @app.action("open_connect_link")
    def open_connect_link(ack):
        # A URL button still sends an action; the browser opens the link by itself.
        ack()
