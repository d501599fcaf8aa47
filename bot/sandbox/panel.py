"""The CRM control panel of the sandbox: change the simulated CRM the way a client or
the platform would, and watch the bot notice at its next refresh, reset or sync."""

from __future__ import annotations

import logging
from html import escape

from bot.simulators.crm import CrmSimulator

logger = logging.getLogger(__name__)

# Panel action: (button label, what it does in the CRM).
ACTIONS = {
    "uninstall": ("Uninstall app", "uninstalls the app from the sub-account and revokes its tokens"),
    "pause": ("Pause", "pauses the sub-account: calls get \"Location is not active\""),
    "resume": ("Resume", "reactivates a paused sub-account"),
    "revoke": ("Revoke tokens", "revokes every token of the sub-account, as a revoked refresh token"),
    "revoke_agency": ("Revoke agency tokens", "revokes the agency's tokens and every token minted from them"),
}


def apply_action(crm: CrmSimulator, action: str, target: str, *, webhook_url: str | None = None) -> str:
    """Apply a panel action to a location id (or a company id for revoke_agency) and return a status line.

    An uninstall also sends the signed UNINSTALL webhook to `webhook_url`, as the platform does.
    """
    if action == "revoke_agency":
        if target not in crm.companies:
            raise ValueError(f"Unknown agency {target!r}")
        count = crm.revoke_grants(company_id=target)
        return f"Revoked {count} codes and tokens of the agency {crm.companies[target]}."

    location = crm.locations.get(target)
    if location is None:
        raise ValueError(f"Unknown sub-account {target!r}")
    if action == "uninstall":
        crm.uninstall_location(target)
    elif action == "pause":
        crm.pause_location(target)
    elif action == "resume":
        crm.resume_location(target)
    elif action == "revoke":
        crm.revoke_grants(location_id=target)
    else:
        raise ValueError(f"Unknown action {action!r}; use one of {', '.join(ACTIONS)}")
    logger.info("Sandbox CRM panel: %s on %s", action, target)
    done = f"{ACTIONS[action][0]}: done for {location.name}."

    if action == "uninstall" and webhook_url:
        payload = crm.webhook_event("UNINSTALL", locationId=location.id, companyId=location.company_id)
        status, _body = crm.send_webhook(webhook_url, payload)
        done += f" The CRM sent the UNINSTALL webhook to the bot (HTTP {status})."
    return done


def render_panel(crm: CrmSimulator, *, action_url: str) -> str:
    """Return the panel's HTML body: one row per sub-account, grouped by agency, with action buttons."""
    rows = []
    for company_id, company_name in sorted(crm.companies.items(), key=lambda item: item[1]):
        revoke_agency = _action_form(action_url, "revoke_agency", company_id)
        rows.append(f'<tr class="company"><th colspan="4">{escape(company_name)} <code>{escape(company_id)}</code></th>'
                    f"<td>{revoke_agency}</td></tr>")
        for location in sorted((loc for loc in crm.locations.values() if loc.company_id == company_id), key=lambda loc: loc.name):
            buttons = []
            if location.installed:
                buttons.append(_action_form(action_url, "uninstall", location.id))
            buttons.append(_action_form(action_url, "resume" if not location.active else "pause", location.id))
            buttons.append(_action_form(action_url, "revoke", location.id))
            rows.append(
                f'<tr data-location="{escape(location.id)}"><td>{escape(location.name)}</td><td><code>{escape(location.id)}</code></td>'
                f"<td>{'installed' if location.installed else 'not installed'}</td>"
                f"<td>{'active' if location.active else 'paused'}</td><td>{''.join(buttons)}</td></tr>"
            )

    legend = "".join(f"<li><strong>{escape(label)}</strong> {escape(text)}</li>" for label, text in ACTIONS.values())
    return (
        "<h2>Simulated CRM</h2>"
        "<p>Every agency and sub-account the simulated CRM knows. The bot finds out about a change "
        "the next time it calls the CRM: a refresh, a reset, a sync or <code>/crm-connect</code>.</p>"
        f"<ul>{legend}</ul>"
        '<table class="panel"><tr><th>Sub-account</th><th>Location id</th><th>App</th><th>State</th><th></th></tr>'
        f"{''.join(rows)}</table>"
    )


def _action_form(action_url: str, action: str, target: str) -> str:
    label = ACTIONS[action][0]
    return (f'<form class="inline" method="post" action="{escape(action_url)}">'
            f'<input type="hidden" name="action" value="{escape(action)}">'
            f'<input type="hidden" name="target" value="{escape(target)}">'
            f'<button class="button" type="submit">{escape(label)}</button></form>')
