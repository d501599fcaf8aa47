"""Slash commands: /crm-connect, /crm-status and /crm-reset."""

from __future__ import annotations

import logging

from slack_bolt import App

from bot import render
from bot.commands import is_help, parse_account_query, parse_connect
from bot.errors import InputError
from bot.services import Services
from handlers.common import foreign_team_text, run_after_ack, to_caller
from handlers.digest import show_red_list

logger = logging.getLogger(__name__)

WORKING = "Working on it…"


def register(app: App, services: Services) -> None:
    connections = services.connections

    @app.command("/crm-connect")
    def crm_connect(ack, body, respond, context):
        text = body.get("text") or ""
        if refusal := foreign_team_text(body, context):
            return ack(refusal)
        if is_help(text):
            return ack(render.USAGE["/crm-connect"])
        try:
            command = parse_connect(text)
        except InputError as error:
            return ack(str(error))
        ack(WORKING)

        caller = to_caller(body)
        recipient = command.recipient_user_id or caller.user_id
        if command.agency:
            run_after_ack(respond, lambda: connections.connect_agency(caller=caller, recipient_user_id=recipient).text)
        else:
            run_after_ack(respond, lambda: connections.connect_account(
                caller=caller, query=command.query, recipient_user_id=recipient, direct=command.direct).text)

    @app.command("/crm-status")
    def crm_status(ack, body, respond, context):
        text = body.get("text") or ""
        if refusal := foreign_team_text(body, context):
            return ack(refusal)
        if text.strip().lower() in ("help", "-h", "--help", "?"):
            return ack(render.USAGE["/crm-status"])
        if text.strip().lower() == "red":
            ack(WORKING)
            return show_red_list(respond, services)
        if text.strip().lower() == "agency":
            ack(WORKING)
            return run_after_ack(respond, lambda: render.agency_status(connections.agency_views()))
        try:
            query = parse_account_query(text) if text.strip() else None
        except InputError as error:
            return ack(str(error))
        ack(WORKING)

        if query is None:
            run_after_ack(respond, lambda: render.overview(connections.overview()))
        else:
            run_after_ack(respond, lambda: render.account_detail(connections.account_view(query)))

    @app.command("/crm-reset")
    def crm_reset(ack, body, respond, context):
        text = body.get("text") or ""
        if refusal := foreign_team_text(body, context):
            return ack(refusal)
        if is_help(text):
            return ack(render.USAGE["/crm-reset"])
        if not services.settings.is_admin(to_caller(body).user_id):
            return ack(render.not_admin())
        if text.strip().lower() == "agency":
            confirm_text, blocks = render.reset_agency_confirm()
            return ack(text=confirm_text, blocks=blocks)
        try:
            query = parse_account_query(text)
        except InputError as error:
            return ack(str(error))
        ack(WORKING)

        def confirm():
            account, resettable = connections.reset_target(query)
            if not resettable:
                return render.nothing_to_reset(account)
            return render.reset_confirm(account)

        run_after_ack(respond, confirm)
