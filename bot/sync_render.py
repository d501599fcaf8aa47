"""Slack texts of the agency sync: the progress message, the final summary and the replies that start a sync.

Agency names come from the CRM, so every one goes through `escape`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from bot.render import escape

if TYPE_CHECKING:
    from bot.sync import SyncSummary

# Outcome counts of a summary, in the order they are listed, with their wording.
OUTCOME_LINES = (
    ("connected", "Connected through the agency"),
    ("already_direct", "already Connected by a Direct Connection"),
    ("not_installed", "No Active CRM Connection: app not installed on the sub-account"),
    ("not_owned", "No Active CRM Connection: not owned by the agency"),
    ("paused", "No Active CRM Connection: sub-account paused in the CRM"),
    ("failed", "No Active CRM Connection: the CRM rejected the sync"),
    ("deferred", "not reached: the CRM did not answer, so they keep their status"),
    ("left_agency", "no longer in the agency: moved to another agency or removed"),
)


def progress_text(agency_name: str, processed: int, total: int) -> str:
    return f"Synced {processed:,} of {total:,} accounts of the agency {escape(agency_name)}…"


def summary_text(summary: SyncSummary) -> str:
    """Return the final message of a run: its result, then the counts by outcome."""
    name = escape(summary.agency_name)
    if summary.status == "already_running":
        return f"A sync of the agency {name} is already running, so this request did not start another one."
    if summary.status == "stopped":
        return (f"The sync of the agency {name} stopped after {summary.processed:,} of {summary.total:,} accounts: "
                f"{escape(summary.error or 'the agency was disconnected')}. "
                f"Connect the agency again with `/crm-connect agency`.")
    if summary.status == "failed":
        return f"The sync of the agency {name} failed: {escape(summary.error or 'see the bot log')}"
    if summary.status == "interrupted":
        return (f"The sync of the agency {name} was interrupted: {escape(summary.error or 'the CRM did not answer')}. "
                f"No account was marked red. Run `/crm-connect agency` again to resume.")

    # The bullets count every account once: the listed ones by outcome, plus those that left the agency.
    lines = [f"*Sync of the agency {name} finished:* {summary.total + summary.left_agency:,} accounts."]
    for field, label in OUTCOME_LINES:
        count = getattr(summary, field)
        if count:
            lines.append(f"• {count:,} {label}")
    if summary.deferred:
        lines.append("Run `/crm-connect agency` again to retry the accounts that were not reached.")
    if summary.red:
        lines.append("`/crm-status` lists every account that shows No Active CRM Connection, with its next step.")
    return "\n".join(lines)


def sync_started_reply(agency_names: list[str]) -> str:
    names = ", ".join(escape(name) for name in agency_names)
    return (f"The agency {names} is already connected, so the bot is syncing its accounts now. "
            f"The progress and the result are in your DMs.")


def sync_not_admin_reply() -> str:
    return "The agency is already connected. Only the admins named in ADMIN_USER_IDS may sync its accounts again. Ask one of them."


def outside_agency_why() -> str:
    return "The account is outside the agency, so it needs a Direct Connection."


def agency_not_connected_why(agency_name: str) -> str:
    # The caller escapes this text for mrkdwn, as it does every reason it shows.
    return (f"The agency {agency_name} is not connected, so this account needs a Direct Connection. "
            f"To connect all of the agency's accounts at once, use `/crm-connect agency`.")
