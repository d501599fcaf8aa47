"""HTML pages of the OAuth callback."""

from __future__ import annotations

from html import escape

from bot.callback import CallbackPage

TEMPLATE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title} · CRM Connect</title>
<style>
body {{ font-family: system-ui, sans-serif; max-width: 36rem; margin: 4rem auto; padding: 0 1rem; color: #1d1c1d; }}
.card {{ border-left: 6px solid {colour}; padding: 1rem 1.5rem; background: #f8f8f8; border-radius: 4px; }}
h1 {{ font-size: 1.4rem; margin-top: 0; }}
.next {{ margin-top: 1rem; font-weight: 600; }}
</style>
</head>
<body>
<div class="card" data-ok="{ok}">
<h1>{title}</h1>
<p>{message}</p>
{next_step}
</div>
</body>
</html>
"""


def render_callback_page(page: CallbackPage) -> str:
    next_step = f'<p class="next">Next step: {escape(page.next_step)}</p>' if page.next_step else ""
    # Only the browser page gets this sentence; the same message also goes to Slack by DM.
    message = f"{page.message} You can close this window." if page.ok and not page.next_step else page.message
    return TEMPLATE.format(
        title=escape(page.title),
        message=escape(message),
        next_step=next_step,
        colour="#2eb67d" if page.ok else "#e01e5a",
        ok="true" if page.ok else "false",
    )
