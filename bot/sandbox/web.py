"""The sandbox's own pages, mounted at /sandbox beside the bot's routes: the Slack
console and the CRM control panel."""

from __future__ import annotations

import logging
from html import escape
from urllib.parse import urlencode

from flask import Flask, jsonify, redirect, request

from bot.sandbox.blockkit import ButtonTarget, blocks_to_html, message_to_html
from bot.sandbox.console import COMMANDS, SlackConsole
from bot.sandbox.panel import apply_action, render_panel
from bot.simulators.crm import CrmSimulator
from bot.simulators.slack import dm_channel_id

logger = logging.getLogger(__name__)

PREFIX = "/sandbox"
PANELS = ("replies", "dms", "home", "digest")

STYLE = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; margin: 0; color: #1d1c1d; background: #f4ede4; }
header { background: #3f0e40; color: #fff; padding: .7rem 1.2rem; display: flex; gap: 1.5rem; align-items: center; flex-wrap: wrap; }
header h1 { font-size: 1.15rem; margin: 0; }
header a { color: #fff; }
header form { margin: 0; }
main { display: grid; grid-template-columns: repeat(auto-fit, minmax(30rem, 1fr)); gap: 1rem; padding: 1rem; }
main.single { grid-template-columns: 1fr; max-width: 56rem; margin: 0 auto; }
section.card { background: #fff; border-radius: 8px; padding: .8rem 1rem; box-shadow: 0 1px 3px rgba(0,0,0,.15); }
section.card h2 { font-size: 1rem; margin: .2rem 0 .6rem; }
.message { border-left: 3px solid #ddd; padding: .3rem .6rem; margin: .5rem 0; }
.message .who { font-weight: 700; font-size: .85rem; }
.message .who span { font-weight: 400; color: #616061; }
.command-line { font-family: ui-monospace, monospace; color: #1264a3; margin-top: .8rem; }
.block { margin: .3rem 0; line-height: 1.4; }
.section { display: flex; justify-content: space-between; gap: .8rem; align-items: flex-start; }
.context { color: #616061; font-size: .85rem; }
.actions { display: flex; gap: .4rem; flex-wrap: wrap; }
.mention { background: #e8f5fa; color: #1264a3; border-radius: 3px; padding: 0 2px; }
code { background: #f6f6f6; border: 1px solid #e0e0e0; border-radius: 3px; padding: 0 3px; color: #c01343; font-size: .85em; }
.button { display: inline-block; border: 1px solid #bbb; border-radius: 4px; background: #fff; padding: .25rem .7rem;
  font-size: .85rem; font-weight: 600; color: #1d1c1d; text-decoration: none; cursor: pointer; white-space: nowrap; }
.button.primary { background: #007a5a; color: #fff; border-color: #007a5a; }
.button.danger { background: #e01e5a; color: #fff; border-color: #e01e5a; }
form.inline { display: inline; margin: 0; }
.compose { display: flex; gap: .4rem; }
.compose input[type=text] { flex: 1; padding: .35rem; font-size: .95rem; }
.note { color: #616061; font-size: .85rem; }
.flash { background: #fff8d6; border: 1px solid #e8d57a; padding: .5rem .8rem; margin: 1rem 1rem 0; border-radius: 4px; }
table.panel { border-collapse: collapse; width: 100%; font-size: .9rem; }
table.panel td, table.panel th { border-bottom: 1px solid #eee; padding: .3rem .4rem; text-align: left; }
tr.company th { background: #f8f4fa; }
"""


def create_console_app(console: SlackConsole, crm: CrmSimulator) -> Flask:
    """Build the Flask app of the sandbox pages; mount it at PREFIX."""
    web = Flask(__name__)

    @web.get("/")
    def page():
        user_id = _user(console, request.args.get("user"))
        panel = request.args.get("panel", "")
        return _page(console, user_id, panel if panel in PANELS else "", request.args.get("flash", ""))

    @web.post("/command")
    def command():
        user_id = _user(console, request.form.get("user"))
        try:
            console.send_command(user_id, request.form.get("command", ""), request.form.get("text", ""))
        except ValueError as error:
            return _back(user_id, flash=str(error))
        return _back(user_id, anchor="replies")

    @web.post("/click")
    def click():
        user_id = _user(console, request.form.get("user"))
        source = request.form.get("source", "")
        try:
            console.click(user_id, source=source, action_id=request.form.get("action_id", ""),
                          value=request.form.get("value", ""), block_id=request.form.get("block_id", ""))
        except ValueError as error:
            return _back(user_id, flash=str(error))
        anchor = "dms"
        if source == "home":
            anchor = "home"
        elif source.startswith("reply:"):
            anchor = "replies"
        return _back(user_id, anchor=anchor)

    @web.post("/home")
    def home():
        user_id = _user(console, request.form.get("user"))
        console.open_home(user_id)
        return _back(user_id, anchor="home")

    @web.post("/digest")
    def digest():
        user_id = _user(console, request.form.get("user"))
        return _back(user_id, flash=console.post_digest(), anchor="digest")

    @web.get("/api/state")
    def state():
        return jsonify(console.state(_user(console, request.args.get("user"))))

    @web.get("/crm")
    def crm_panel():
        # The panel keeps the console's selected user, so that the link back opens the same user.
        user_id = _user(console, request.args.get("user"))
        flash = request.args.get("flash", "")
        body = render_panel(crm, action_url=f"{PREFIX}/crm?{urlencode({'user': user_id})}")
        return _layout("Simulated CRM", _header(console, user_id), f"<main class=\"single\"><section class=\"card\">{body}</section></main>", flash)

    @web.post("/crm")
    def crm_action():
        try:
            flash = apply_action(crm, request.form.get("action", ""), request.form.get("target", ""),
                                 webhook_url=f"{console.bot_url}/webhooks/crm")
        except ValueError as error:
            flash = str(error)
        user_id = _user(console, request.args.get("user"))
        return redirect(f"{PREFIX}/crm?{urlencode({'user': user_id, 'flash': flash})}", code=303)

    return web


def _user(console: SlackConsole, requested: str | None) -> str:
    users = [user_id for user_id in console.slack.users if user_id != console.slack.bot_user_id]
    return requested if requested in users else users[0]


def _back(user_id: str, *, flash: str = "", anchor: str = ""):
    query = {"user": user_id}
    if flash:
        query["flash"] = flash
    return redirect(f"{PREFIX}/?{urlencode(query)}" + (f"#{anchor}" if anchor else ""), code=303)


# Pages

def _layout(title: str, header: str, body: str, flash: str = "") -> str:
    flash_html = f'<div class="flash" id="flash">{escape(flash)}</div>' if flash else ""
    return (f'<!doctype html><html lang="en"><head><meta charset="utf-8"><title>{escape(title)} · CRM Connect sandbox</title>'
            f'<meta name="viewport" content="width=device-width, initial-scale=1"><style>{STYLE}</style></head>'
            f"<body>{header}{flash_html}{body}</body></html>")


def _header(console: SlackConsole, user_id: str | None) -> str:
    users = [user for user_id_, user in console.slack.users.items() if user_id_ != console.slack.bot_user_id]
    options = "".join(f'<option value="{escape(user.id)}"{" selected" if user.id == user_id else ""}>{escape(user.real_name)}</option>'
                      for user in users)
    query = urlencode({"user": user_id or ""})
    return ('<header><h1>CRM Connect sandbox</h1>'
            f'<form method="get" action="{PREFIX}/"><label>Slack user <select name="user" id="user">{options}</select></label> '
            '<button class="button" type="submit">Switch</button></form>'
            f'<a href="{PREFIX}/?{escape(query)}">Slack console</a><a href="{PREFIX}/crm?{escape(query)}">CRM control panel</a></header>')


def _page(console: SlackConsole, user_id: str, panel: str, flash: str) -> str:
    cards = {
        "replies": _replies_card(console, user_id),
        "dms": _dms_card(console, user_id),
        "home": _home_card(console, user_id),
        "digest": _digest_card(console, user_id),
    }
    body = cards[panel] if panel else "".join(cards.values())
    main_class = ' class="single"' if panel else ""
    return _layout("Slack console", _header(console, user_id), f"<main{main_class}>{body}</main>", flash)


def _replies_card(console: SlackConsole, user_id: str) -> str:
    options = "".join(f'<option value="{command}">{command}</option>' for command in COMMANDS)
    compose = (f'<form class="compose" method="post" action="{PREFIX}/command" id="compose">'
               f'<input type="hidden" name="user" value="{escape(user_id)}">'
               f'<select name="command" id="command">{options}</select>'
               '<input type="text" name="text" id="text" placeholder="agency, an account name or location id, help" autocomplete="off">'
               '<button class="button primary" type="submit" id="send">Send</button></form>')

    history = []
    for entry, messages in console.replies(user_id):
        target = ButtonTarget(user_id, f"reply:{entry.id}", f"{PREFIX}/click")
        rendered = "".join(_message(console, message, target, "Only visible to you") for message in messages)
        history.append(f'<div class="command-line">{escape(entry.line)}</div>{rendered}')
    if not history:
        history.append('<p class="note">Type a command, for example <code>/crm-connect agency</code>, '
                       "<code>/crm-status</code> or <code>/crm-connect Oak Hardware</code>.</p>")
    return f'<section class="card" id="replies"><h2>Slash commands and ephemeral replies</h2>{compose}{"".join(history)}</section>'


def _dms_card(console: SlackConsole, user_id: str) -> str:
    messages = console.dms(user_id)
    rendered = []
    for message in reversed(messages):
        target = ButtonTarget(user_id, f"message:{dm_channel_id(user_id)}:{message['ts']}", f"{PREFIX}/click")
        rendered.append(_message(console, message, target, "DM"))
    if not rendered:
        rendered.append('<p class="note">No direct messages from the bot yet.</p>')
    name = escape(console.user_name(user_id))
    return f'<section class="card" id="dms"><h2>Direct messages with CRM Connect ({name}), newest first</h2>{"".join(rendered)}</section>'


def _home_card(console: SlackConsole, user_id: str) -> str:
    button = (f'<form method="post" action="{PREFIX}/home"><input type="hidden" name="user" value="{escape(user_id)}">'
              '<button class="button primary" type="submit" id="open-home">Open the Home tab</button></form>')
    view = console.home(user_id)
    if view is None:
        content = '<p class="note">Not opened yet. Slack sends app_home_opened when the user opens the tab.</p>'
    else:
        content = blocks_to_html(view.get("blocks", []), ButtonTarget(user_id, "home", f"{PREFIX}/click"), console.user_name)
    return f'<section class="card" id="home"><h2>App Home</h2>{button}{content}</section>'


def _digest_card(console: SlackConsole, user_id: str) -> str:
    button = (f'<form method="post" action="{PREFIX}/digest"><input type="hidden" name="user" value="{escape(user_id)}">'
              '<button class="button primary" type="submit" id="post-digest">Post the digest now</button></form>')
    rendered = []
    for message in reversed(console.digest_messages()):
        target = ButtonTarget(user_id, f"message:{console.digest_channel}:{message['ts']}", f"{PREFIX}/click")
        rendered.append(_message(console, message, target, f"#{console.digest_channel_name}"))
    if not rendered:
        rendered.append('<p class="note">No digest posted yet.</p>')
    return f'<section class="card" id="digest"><h2>Digest channel, newest first</h2>{button}{"".join(rendered)}</section>'


def _message(console: SlackConsole, message: dict, target: ButtonTarget, where: str) -> str:
    body = message_to_html(message, target, console.user_name)
    replies = ""
    if message.get("thread_ts") and message.get("thread_ts") != message.get("ts"):
        replies = '<div class="context">(reply in thread)</div>'
    return f'<div class="message"><div class="who">CRM Connect <span>{escape(where)}</span></div>{replies}{body}</div>'

