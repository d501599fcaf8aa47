"""Parsing of slash command text into domain values."""

from __future__ import annotations

import re
from dataclasses import dataclass

from bot.errors import InputError
from bot.render import escape

MAX_TEXT_LENGTH = 300
MAX_NAME_LENGTH = 255

# With "Escape channels, users, and links" on, Slack sends a mention as <@U123|name>.
MENTION = re.compile(r"^<@([UW][A-Z0-9]{2,})(?:\|[^>]*)?>$")
SPECIAL_MENTION = re.compile(r"<!(channel|here|everyone)[^>]*>|<!subteam\^[^>]*>")


@dataclass(frozen=True)
class ConnectCommand:
    agency: bool = False
    query: str | None = None
    direct: bool = False
    recipient_user_id: str | None = None


def is_help(text: str) -> bool:
    return text.strip().lower() in ("", "help", "-h", "--help", "?")


def check_length(text: str) -> None:
    if len(text) > MAX_TEXT_LENGTH:
        raise InputError(f"The text is too long ({len(text):,} characters). Give one account name or location id, "
                         f"at most {MAX_NAME_LENGTH} characters.")


def parse_account_query(text: str) -> str:
    """Return the account name or id from command text, or raise InputError."""
    check_length(text)
    query = " ".join(text.split())
    if SPECIAL_MENTION.search(query) or query.startswith("<@"):
        raise InputError(f"“{escape(query)}” is not an account. Give an account name or a CRM location id.")
    if len(query) > MAX_NAME_LENGTH:
        raise InputError(f"The account name is too long ({len(query)} characters, at most {MAX_NAME_LENGTH}).")
    return query


def parse_connect(text: str) -> ConnectCommand:
    """Parse `/crm-connect` text: `agency`, or `<account> [direct] [@user]` in any order after the name."""
    check_length(text)
    words = text.split()
    direct = False
    recipient = None

    while words:
        last = words[-1]
        if last.lower() == "direct" and len(words) > 1:
            direct = True
        elif MENTION.match(last):
            if recipient is not None:
                raise InputError("Name one user to send the link to, not several.")
            recipient = MENTION.match(last).group(1)
        elif last.startswith("@") or last.startswith("<@"):
            raise InputError(f"“{escape(last)}” is not a Slack user. Mention the user with @ and pick them from Slack's list, "
                             f"for example `/crm-connect Acme Dental @jane`.")
        else:
            break
        words.pop()

    rest = " ".join(words)
    if rest.lower() == "agency" and direct:
        raise InputError("`direct` applies to one account, as in `/crm-connect Acme Dental direct`. "
                         "To connect the agency, use `/crm-connect agency`.")
    if rest.lower() == "agency":
        return ConnectCommand(agency=True, recipient_user_id=recipient)
    if not rest or rest.lower() == "direct":
        raise InputError("Name the account to connect, for example `/crm-connect Acme Dental`.")
    return ConnectCommand(query=parse_account_query(rest), direct=direct, recipient_user_id=recipient)
