"""Block Kit to HTML in the sandbox console: escaping first, then bold, code and mentions."""

from __future__ import annotations

from bot.sandbox.blockkit import ButtonTarget, blocks_to_html, mrkdwn_to_html

TARGET = ButtonTarget("U0AGENT01", "home", "/sandbox/click")


def name_of(user_id: str) -> str:
    return {"U0DANA": "Dana <admin>"}.get(user_id, user_id)


def test_html_in_text_escaped():
    html = mrkdwn_to_html('<script>alert(1)</script> <img src=x onerror="y">', name_of)

    assert "<script>" not in html
    assert "<img" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert "&quot;y&quot;" in html


def test_bold_code_and_mentions():
    html = mrkdwn_to_html("*Acme* uses `/crm-reset acme` <@U0DANA>", name_of)

    assert "<strong>Acme</strong>" in html
    assert "<code>/crm-reset acme</code>" in html
    assert '<span class="mention">@Dana &lt;admin&gt;</span>' in html


def test_slack_escapes_shown_literally():
    html = mrkdwn_to_html("&lt;!channel&gt; &amp; &lt;@U0DANA&gt;", name_of)

    assert html == "&lt;!channel&gt; &amp; &lt;@U0DANA&gt;"


def test_markup_inside_bold_stays_escaped():
    html = mrkdwn_to_html("*<b>x</b>*", name_of)

    assert html == "<strong>&lt;b&gt;x&lt;/b&gt;</strong>"


def test_url_button_becomes_link():
    blocks = [{"type": "actions", "elements": [
        {"type": "button", "text": {"type": "plain_text", "text": "Open"}, "url": "http://127.0.0.1/x?a=1&b=\"2\""},
        {"type": "button", "text": {"type": "plain_text", "text": "Bad"}, "url": "javascript:alert(1)"},
    ]}]

    html = blocks_to_html(blocks, TARGET, name_of)

    assert '<a class="button default" href="http://127.0.0.1/x?a=1&amp;b=&quot;2&quot;">Open</a>' in html
    assert "javascript:" not in html


def test_value_button_posts_click():
    blocks = [{"type": "section", "text": {"type": "mrkdwn", "text": "x"}, "block_id": "b1",
               "accessory": {"type": "button", "action_id": "home_reset", "value": '7"><script>',
                             "text": {"type": "plain_text", "text": "Reset"},
                             "confirm": {"title": {"type": "plain_text", "text": "Sure?"}, "text": {"type": "plain_text", "text": "Really"}}}}]

    html = blocks_to_html(blocks, TARGET, name_of)

    assert 'action="/sandbox/click"' in html
    assert '<input type="hidden" name="action_id" value="home_reset">' in html
    assert '<input type="hidden" name="value" value="7&quot;&gt;&lt;script&gt;">' in html
    assert 'data-confirm="Sure?\nReally"' in html


def test_code_span_literal():
    html = mrkdwn_to_html("*Run* `/crm-reset *acme* <@U0DANA> &lt;x&gt; <b>` now", name_of)

    assert html == "<strong>Run</strong> <code>/crm-reset *acme* &lt;@U0DANA&gt; &lt;x&gt; &lt;b&gt;</code> now"


def test_bold_around_code():
    html = mrkdwn_to_html("*use `a*b` here*", name_of)

    assert html == "<strong>use <code>a*b</code> here</strong>"
