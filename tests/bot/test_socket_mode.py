"""Socket Mode: slash commands and events arrive over the Slack simulator's WebSocket."""

from __future__ import annotations

import subprocess
import sys

import pytest

from bot.app import create_bolt_app
from bot.services import build_services
from bot.simulators.slack import make_app_home_opened, make_command
from bot.socket_mode import start_socket_mode
from tests.conftest import AGENT, make_settings, reply_text
from tests.test_end_to_end import free_port, serve_env, wait_healthy


@pytest.fixture
def socket_bot(slack, crm, database_url, engine):
    settings = make_settings(slack=slack, crm=crm, database_url=database_url, public_url="http://127.0.0.1:9",
                             slack_app_token=slack.app_token)
    services = build_services(settings, engine=engine)
    handler = start_socket_mode(create_bolt_app(services), settings.slack_app_token)
    slack.socket_mode.wait_for_connection()
    yield services
    handler.close()
    services.crm.close()


def test_slash_command_acked_and_answered(socket_bot, slack):
    response_url = slack.new_response_url()
    command = make_command("/crm-status", "", user_id=AGENT, response_url=response_url)

    envelope_id = slack.socket_mode.send_envelope("slash_commands", command)

    ack = slack.socket_mode.wait_for_ack(envelope_id)
    assert ack.payload == {"text": "Working on it…"}
    reply = slack.wait_for(lambda sim: sim.responses(response_url), timeout=10)[-1]
    assert "0 of 0 accounts Connected" in reply_text(reply)


def test_help_comes_back_in_ack(socket_bot, slack):
    command = make_command("/crm-connect", "help", user_id=AGENT, response_url=slack.new_response_url())

    ack = slack.socket_mode.wait_for_ack(slack.socket_mode.send_envelope("slash_commands", command))

    assert "Usage of /crm-connect" in ack.payload["text"]


def test_app_home_event_publishes_view(socket_bot, slack):
    envelope_id = slack.socket_mode.send_envelope("events_api", make_app_home_opened(AGENT), accepts_response_payload=False)

    slack.socket_mode.wait_for_ack(envelope_id)
    view = slack.wait_for(lambda sim: sim.home_view(AGENT), timeout=10)
    assert view["type"] == "home"


def test_connections_open_rejects_bot_token(slack):
    from slack_sdk import WebClient
    from slack_sdk.errors import SlackApiError

    client = WebClient(token=slack.bot_token, base_url=slack.api_url)

    with pytest.raises(SlackApiError) as raised:
        client.apps_connections_open(app_token=slack.bot_token)
    assert raised.value.response["error"] == "not_allowed_token_type"


def test_serve_takes_commands_over_socket(slack, crm, tmp_path):
    port = free_port()
    env = serve_env(slack=slack, crm=crm, database_url=f"sqlite:///{tmp_path / 'bot.db'}", port=port)
    env["SLACK_APP_TOKEN"] = slack.app_token
    process = subprocess.Popen([sys.executable, "-m", "bot", "serve", "--host", "127.0.0.1"], env=env,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_healthy(f"http://127.0.0.1:{port}", process)
        slack.socket_mode.wait_for_connection(timeout=20)
        response_url = slack.new_response_url()
        command = make_command("/crm-connect", "Acme Dental direct", user_id=AGENT, response_url=response_url)

        ack = slack.socket_mode.wait_for_ack(slack.socket_mode.send_envelope("slash_commands", command))

        assert ack.payload == {"text": "Working on it…"}
        dm = slack.wait_for(lambda sim: sim.dms_to(AGENT), timeout=10)[-1]
        assert "Direct Connection for Acme Dental" in reply_text(dm)
    finally:
        process.terminate()
        _, stderr = process.communicate(timeout=15)
    assert slack.app_token not in stderr

