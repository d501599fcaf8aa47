"""The troubleshooting advice: one next step for every account state.

`/crm-status`, DMs, callback pages and the digest all take their wording
from `advise`, so the procedure reads the same everywhere. Advice is plain
text; each surface escapes it for mrkdwn or HTML.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from storage.models import (
    CONNECTED, METHOD_AGENCY, NEEDS_RECONNECT, NEVER_CONNECTED, NOT_INSTALLED, NOT_OWNED, PAUSED, Account,
)

REPEATED_FAILURES = 3
REPEATED_FAILURE_DAYS = 7

REASON_LABELS = {
    NEVER_CONNECTED: "never connected",
    NEEDS_RECONNECT: "needs reconnect: the CRM rejected the tokens",
    NOT_OWNED: "not owned by the agency",
    NOT_INSTALLED: "app not installed on this sub-account",
    PAUSED: "sub-account paused in the CRM",
}


class Action(enum.StrEnum):
    NONE = "none"
    CONNECT = "connect"            # /crm-connect <account>: through the agency when it can
    CONNECT_DIRECT = "connect_direct"
    RESET = "reset"
    WAIT = "wait"                  # nothing to do in Slack; the bot retries


@dataclass(frozen=True)
class History:
    """The facts from an account's events and connection that the advice depends on."""

    failed_attempts: int = 0          # failed connects, refreshes and syncs within REPEATED_FAILURE_DAYS
    agency_link_used: bool = False    # an agency login happened, yet this account has no connection
    agency_connected: bool = False    # the account's agency has a Company connection
    sync_failed: bool = False         # the agency sync could not mint a token for it within REPEATED_FAILURE_DAYS
    has_tokens: bool = True           # a connection row still stores tokens that a reset could refresh


@dataclass(frozen=True)
class Advice:
    text: str
    action: Action


def status_label(account: Account) -> str:
    """Return the shared wording: Connected, or No Active CRM Connection with the reason."""
    if account.status == CONNECTED:
        return "Connected"
    return f"No Active CRM Connection ({REASON_LABELS.get(account.reason or NEVER_CONNECTED, account.reason)})"


def incognito_tip(app_url: str) -> str:
    return (f"If the CRM page does not show the account, open the link in an incognito window "
            f"and log in at {app_url}, not at a white-label domain.")


def advise(account: Account, history: History, *, app_url: str) -> Advice:
    """Pick the next step for an account."""
    ref = command_ref(account)

    if account.status == CONNECTED:
        return Advice("No action needed.", Action.NONE)

    if history.failed_attempts >= REPEATED_FAILURES and account.reason != PAUSED:
        return Advice(
            f"Connecting failed {history.failed_attempts} times in {REPEATED_FAILURE_DAYS} days. "
            f"Send a Direct Connection link with `/crm-connect {ref} direct`, have the account's own user log in "
            f"to that sub-account, and check in the CRM that the agency still owns it.",
            Action.CONNECT_DIRECT,
        )

    reason = account.reason or NEVER_CONNECTED
    if reason == NOT_OWNED:
        return Advice(
            f"You don't own this account through the agency. Send a Direct Connection link with "
            f"`/crm-connect {ref} direct` and log in to that account directly.",
            Action.CONNECT_DIRECT,
        )
    if reason == NOT_INSTALLED:
        tip = f" {incognito_tip(app_url)}" if history.agency_link_used else ""
        return Advice(
            f"The app is not installed on this sub-account. An agency admin can install it from the app's page "
            f"in the CRM marketplace (Install, then pick this sub-account) and run `/crm-connect agency` to sync it. "
            f"Or send a Direct Connection link with `/crm-connect {ref} direct`.{tip}",
            Action.CONNECT_DIRECT,
        )
    if reason == PAUSED and not history.has_tokens:
        return Advice(
            f"The CRM reports this sub-account as paused (Location is not active), and it was never connected. "
            f"Reactivate it in the CRM, then connect it with `/crm-connect {ref}`.",
            Action.WAIT,
        )
    if reason == PAUSED:
        return Advice(
            "The CRM reports this sub-account as paused (Location is not active). Reactivate it in the CRM; "
            "the bot keeps the tokens and retries with backoff, or `/crm-reset` retries at once.",
            Action.WAIT,
        )
    if reason == NEEDS_RECONNECT and not history.has_tokens:
        return Advice(
            f"The bot cleared the rejected tokens, so a reset has nothing left to refresh. Connect it again with "
            f"`/crm-connect {ref}`: through the agency when it can, else with a Direct Connection link.",
            Action.CONNECT,
        )
    if reason == NEEDS_RECONNECT:
        return Advice(
            f"Reset the connection with `/crm-reset {ref}`. When the reset cannot recover it, the bot DMs a fresh link.",
            Action.RESET,
        )
    if history.sync_failed:
        return Advice(
            f"The agency sync could not connect this account. Send a Direct Connection link with "
            f"`/crm-connect {ref} direct` and have the account's own user log in to that sub-account.",
            Action.CONNECT_DIRECT,
        )
    if history.agency_link_used:
        return Advice(
            f"The agency login did not connect this account. Send a Direct Connection link with "
            f"`/crm-connect {ref} direct`. {incognito_tip(app_url)}",
            Action.CONNECT_DIRECT,
        )
    if account.agency_id is None:
        return Advice(
            f"This account is outside the agency, so it needs a Direct Connection. Send a link with "
            f"`/crm-connect {ref} direct`. {incognito_tip(app_url)}",
            Action.CONNECT_DIRECT,
        )
    if history.agency_connected and account.method != METHOD_AGENCY:
        return Advice(f"Connect it through the agency with `/crm-connect {ref}`.", Action.CONNECT)
    return Advice(
        f"Send a connect link with `/crm-connect {ref}`. {incognito_tip(app_url)}",
        Action.CONNECT,
    )


def command_ref(account: Account) -> str:
    """Return how to name the account in a command: its location id, else its name."""
    return account.location_id or account.name
