from __future__ import annotations

import pytest

from bot.commands import ConnectCommand, parse_account_query, parse_connect
from bot.errors import InputError


@pytest.mark.parametrize("text, expected", [
    ("agency", ConnectCommand(agency=True)),
    ("Agency", ConnectCommand(agency=True)),
    ("agency <@U0ABC|jane>", ConnectCommand(agency=True, recipient_user_id="U0ABC")),
    ("Acme Dental", ConnectCommand(query="Acme Dental")),
    ("  Acme   Dental  ", ConnectCommand(query="Acme Dental")),
    ("Acme Dental direct", ConnectCommand(query="Acme Dental", direct=True)),
    ("Acme Dental DIRECT <@U0ABC|jane>", ConnectCommand(query="Acme Dental", direct=True, recipient_user_id="U0ABC")),
    ("Acme Dental <@U0ABC> direct", ConnectCommand(query="Acme Dental", direct=True, recipient_user_id="U0ABC")),
    ("loc-123", ConnectCommand(query="loc-123")),
])
def test_parse_connect(text, expected):
    assert parse_connect(text) == expected


@pytest.mark.parametrize("text, fragment", [
    ("Acme @jane", "is not a Slack user"),
    ("Acme <@jane>", "is not a Slack user"),
    ("<@U0ABC>", "Name the account"),
    ("Acme <@U0ABC> <@U0DEF>", "Name one user"),
    ("x" * 301, "too long (301 characters)"),
    ("<!channel>", "is not an account"),
    ("direct", "Name the account"),
    ("agency direct", "`direct` applies to one account"),
    ("Acme <!here> Dental", "is not an account"),
])
def test_parse_connect_rejects(text, fragment):
    with pytest.raises(InputError) as error:
        parse_connect(text)

    assert fragment in str(error.value)


def test_rejection_escapes_text():
    with pytest.raises(InputError) as error:
        parse_connect("<!channel>")

    assert "<!channel>" not in str(error.value)
    assert "&lt;!channel&gt;" in str(error.value)


def test_account_query_keeps_unicode():
    assert parse_account_query(" Zahnärzte  Müller ") == "Zahnärzte Müller"
