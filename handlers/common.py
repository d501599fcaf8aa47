"""Helpers shared by the Slack handlers."""

from __future__ import annotations

import logging
from collections.abc import Callable

from bot.connections import Caller
from bot.errors import BotError, ConfigError, InputError

logger = logging.getLogger(__name__)

FAILURE_TEXT = "Something failed on the bot's side, and it was logged. Try again in a minute; if it persists, tell the bot's operator."


def to_caller(body: dict) -> Caller:
    user = body.get("user") if isinstance(body.get("user"), dict) else {}
    team = body.get("team") if isinstance(body.get("team"), dict) else {}
    return Caller(
        team_id=body.get("team_id") or team.get("id") or user.get("team_id") or "",
        user_id=body.get("user_id") or user.get("id") or "",
    )


def foreign_team_text(body: dict, context) -> str | None:
    """Return a refusal when the request comes from a workspace other than the bot's own."""
    result = context.get("authorize_result")
    own_team = getattr(result, "team_id", None)
    caller_team = to_caller(body).team_id
    if own_team and caller_team and caller_team != own_team:
        logger.warning("Rejected a request from team %s; the bot serves team %s", caller_team, own_team)
        return "This bot serves another Slack workspace, so it cannot act on this request."
    return None


def run_after_ack(respond, work: Callable[[], str | tuple[str, list]], *, replace_original: bool = False) -> None:
    """Run the slow part of a request after ack() and send its result with respond()."""
    try:
        result = work()
    except InputError as error:
        respond(text=str(error), response_type="ephemeral", replace_original=replace_original)
        return
    except ConfigError as error:
        logger.error("Configuration error: %s", error)
        respond(text=f"The bot is not fully configured: {error}", response_type="ephemeral", replace_original=replace_original)
        return
    except BotError:
        logger.exception("Request failed")
        respond(text=FAILURE_TEXT, response_type="ephemeral", replace_original=replace_original)
        return
    except Exception:
        logger.exception("Unexpected error while handling a request")
        respond(text=FAILURE_TEXT, response_type="ephemeral", replace_original=replace_original)
        return

    if isinstance(result, tuple):
        text, blocks = result
        respond(text=text, blocks=blocks, response_type="ephemeral", replace_original=replace_original)
    else:
        respond(text=result, response_type="ephemeral", replace_original=replace_original)


def to_account_id(body: dict) -> int | None:
    """Return the account id that a button carries in its value, or None."""
    try:
        return int(body["actions"][0]["value"])
    except (KeyError, IndexError, TypeError, ValueError):
        return None


def account_button(body: dict, context, reply, *, no_account_text: str) -> tuple[Caller, int] | None:
    """Return the clicker and the button's account id, or reply why the click cannot be used and return None."""
    if refusal := foreign_team_text(body, context):
        reply(text=refusal)
        return None
    account_id = to_account_id(body)
    if account_id is None:
        reply(text=no_account_text)
        return None
    return to_caller(body), account_id
