"""Block Kit to HTML, for the sandbox's Slack console.

Every string from a message is HTML-escaped first. Only then are three mrkdwn forms
turned into markup: *bold*, `code` and <@U…> mentions, and the text inside `code` is
left as it is. So message text can never inject HTML, whatever the bot or the CRM put into it.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from html import escape
from urllib.parse import urlsplit

# After html.escape, Slack's own escapes (&amp; &lt; &gt;) read as &amp;amp; and so on.
_SLACK_ENTITIES = (("&amp;lt;", "&lt;"), ("&amp;gt;", "&gt;"), ("&amp;amp;", "&amp;"))
_MENTION = re.compile(r"&lt;@([UW][A-Z0-9]+)&gt;")
_BOLD = re.compile(r"\*([^*\n]+)\*")
_CODE = re.compile(r"`([^`\n]+)`")
_PLACEHOLDER = re.compile(r"\0(\d+)\0")


@dataclass(frozen=True)
class ButtonTarget:
    """The target of a value button's click: the user, the message it came from and the console's click URL."""

    user_id: str
    source: str
    action_url: str


def mrkdwn_to_html(text: str, user_name: Callable[[str], str]) -> str:
    """Render mrkdwn as HTML: escape everything, then format code, bold and mentions.

    Like Slack, the text of a `code` span is shown as it is: no bold and no mentions inside it.
    """
    safe = escape((text or "").replace("\0", ""), quote=True)
    # Code spans are set aside behind NUL-delimited placeholders while the rest is formatted.
    spans: list[str] = []

    def set_aside(match: re.Match) -> str:
        spans.append(_unescape_slack(match.group(1)))
        return f"\0{len(spans) - 1}\0"

    safe = _CODE.sub(set_aside, safe)
    safe = _MENTION.sub(lambda match: f'<span class="mention">@{escape(user_name(match.group(1)))}</span>', safe)
    safe = _unescape_slack(safe)
    safe = _BOLD.sub(r"<strong>\1</strong>", safe)
    safe = _PLACEHOLDER.sub(lambda match: f"<code>{spans[int(match.group(1))]}</code>", safe)
    return safe.replace("\n", "<br>")


def _unescape_slack(safe: str) -> str:
    for doubled, single in _SLACK_ENTITIES:
        safe = safe.replace(doubled, single)
    return safe


def text_object_to_html(text: dict | None, user_name: Callable[[str], str]) -> str:
    if not isinstance(text, dict):
        return ""
    if text.get("type") == "mrkdwn":
        return mrkdwn_to_html(str(text.get("text", "")), user_name)
    return escape(str(text.get("text", "")))


def message_to_html(message: dict, target: ButtonTarget, user_name: Callable[[str], str]) -> str:
    """Render a message's blocks, or its text when it has none."""
    blocks = message.get("blocks")
    if not blocks:
        return f'<div class="block">{mrkdwn_to_html(str(message.get("text", "")), user_name)}</div>'
    return blocks_to_html(blocks, target, user_name)


def blocks_to_html(blocks: list, target: ButtonTarget, user_name: Callable[[str], str]) -> str:
    parts = []
    for block in blocks:
        if not isinstance(block, dict):
            continue
        kind = block.get("type")
        block_id = str(block.get("block_id", ""))
        if kind == "header":
            parts.append(f'<h3 class="block">{text_object_to_html(block.get("text"), user_name)}</h3>')
        elif kind == "section":
            accessory = block.get("accessory")
            button = button_to_html(accessory, block_id, target) if isinstance(accessory, dict) else ""
            parts.append(f'<div class="block section"><div>{text_object_to_html(block.get("text"), user_name)}</div>{button}</div>')
        elif kind == "context":
            texts = [text_object_to_html(element, user_name) for element in block.get("elements") or []]
            parts.append(f'<div class="block context">{" ".join(texts)}</div>')
        elif kind == "actions":
            buttons = [button_to_html(element, block_id, target) for element in block.get("elements") or []]
            parts.append(f'<div class="block actions">{"".join(buttons)}</div>')
        elif kind == "divider":
            parts.append("<hr>")
        else:
            parts.append(f'<div class="block context">(a {escape(str(kind))} block, which the console does not draw)</div>')
    return "\n".join(parts)


def button_to_html(element: dict, block_id: str, target: ButtonTarget) -> str:
    """Render a URL button as a link, and a value button as a form that posts the click to the console."""
    if element.get("type") != "button":
        return ""
    label = escape(str((element.get("text") or {}).get("text", "")))
    style = escape(str(element.get("style", "default")))

    url = str(element.get("url") or "")
    if url:
        if urlsplit(url).scheme not in ("http", "https"):
            return f'<span class="button {style}">{label} (link not shown: not http)</span>'
        return f'<a class="button {style}" href="{escape(url)}">{label}</a>'

    confirm = element.get("confirm")
    confirm_text = ""
    if isinstance(confirm, dict):
        title = (confirm.get("title") or {}).get("text", "")
        body = (confirm.get("text") or {}).get("text", "")
        confirm_text = f'{title}\n{body}'.strip()
    on_submit = ' onsubmit="return confirm(this.dataset.confirm)"' if confirm_text else ""
    fields = {
        "user": target.user_id,
        "source": target.source,
        "action_id": str(element.get("action_id", "")),
        "value": str(element.get("value", "")),
        "block_id": block_id,
    }
    hidden = "".join(f'<input type="hidden" name="{name}" value="{escape(value)}">' for name, value in fields.items())
    return (f'<form class="inline" method="post" action="{escape(target.action_url)}" data-confirm="{escape(confirm_text)}"{on_submit}>'
            f'{hidden}<button class="button {style}" type="submit">{label}</button></form>')
