"""Tests of the local CRM and Slack simulators, through real HTTP on 127.0.0.1."""

import json
import re
import threading
import time
from urllib.parse import parse_qs, urlencode, urlsplit

import httpx
import pytest
from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError
from slack_sdk.signature import SignatureVerifier

from bot.simulators.crm import API_VERSION, AuthorizationError, CrmSimulator
from bot.simulators.slack import (
    SlackSimulator,
    dm_channel_id,
    make_block_action,
    make_command,
    sign_request,
)

REDIRECT_URI = "http://127.0.0.1:9/oauth/callback"


@pytest.fixture
def crm():
    simulator = CrmSimulator()
    simulator.add_company("comp1", "Acme Agency")
    simulator.add_location("loc1", "Acme Dental", "comp1")
    simulator.add_location("loc2", "Acme Plumbing", "comp1")
    simulator.add_company("comp2", "Other Agency")
    simulator.add_location("loc9", "Other Bakery", "comp2")
    with simulator:
        yield simulator


@pytest.fixture
def http():
    with httpx.Client(timeout=5.0) as client:
        yield client


@pytest.fixture
def slack():
    with SlackSimulator() as simulator:
        yield simulator


def authorize_url(crm, **overrides):
    params = {
        "response_type": "code",
        "client_id": crm.client_id,
        "redirect_uri": REDIRECT_URI,
        "scope": "oauth.readonly oauth.write locations.readonly",
        "state": "state-123",
    }
    params.update(overrides)
    return f"{crm.url}/oauth/chooselocation?{urlencode(params)}"


def callback_params(callback_url):
    return {name: values[0] for name, values in parse_qs(urlsplit(callback_url).query).items()}


def token_request(http, crm, **fields):
    form = {"client_id": crm.client_id, "client_secret": crm.client_secret, **fields}
    return http.post(f"{crm.url}/oauth/token", data=form)


def connect(http, crm, choice):
    code = callback_params(crm.authorize(authorize_url(crm), choice))["code"]
    response = token_request(http, crm, grant_type="authorization_code", code=code)
    assert response.status_code == 200, response.text
    return response.json()


def api_headers(access_token):
    return {"Authorization": f"Bearer {access_token}", "Version": API_VERSION}


# CRM: install page


def test_chooser_page_escapes_names(crm, http):
    crm.add_company("comp3", "<b>Evil & Co</b>")

    response = http.get(authorize_url(crm))

    assert response.status_code == 200
    assert "Agency: &lt;b&gt;Evil &amp; Co&lt;/b&gt;" in response.text
    assert "Sub-account: Acme Dental" in response.text
    assert "<b>Evil" not in response.text
    assert 'name="state" value="state-123"' in response.text


def test_chooser_page_unknown_client_id(crm, http):
    response = http.get(authorize_url(crm, client_id="someone-else"))

    assert response.status_code == 400
    assert "client_id" in response.text


def test_chooser_login_restricts_choices(crm, http):
    response = http.get(authorize_url(crm, login="location:loc2"))

    # The login selector names every user; the radio buttons are what may be authorized.
    assert re.findall(r'name="choice" value="([^"]+)"', response.text) == ["location:loc2"]
    assert "Sub-account: Acme Plumbing" in response.text
    assert "Sub-account: Acme Dental" not in response.text
    assert "Agency:" not in response.text
    with pytest.raises(AuthorizationError):
        crm.authorize(authorize_url(crm, login="location:loc2"), "location:loc1")


def test_chooser_offers_login_selector(crm, http):
    response = http.get(authorize_url(crm, login="company:comp1"))

    assert "Logged in as: Agency user of Acme Agency" in response.text
    assert '<option value="location:loc1">Sub-account user of Acme Dental</option>' in response.text
    assert '<input type="hidden" name="state" value="state-123">' in response.text


def test_exported_state_keeps_tokens(crm):
    callback = crm.authorize(authorize_url(crm), "location:loc1")
    code = parse_qs(urlsplit(callback).query)["code"][0]
    tokens = httpx.post(f"{crm.url}/oauth/token", data={
        "client_id": crm.client_id, "client_secret": crm.client_secret, "grant_type": "authorization_code",
        "code": code, "redirect_uri": REDIRECT_URI}).json()
    state = json.loads(json.dumps(crm.export_state()))

    with CrmSimulator() as restored:
        restored.import_state(state)
        refreshed = httpx.post(f"{restored.url}/oauth/token", data={
            "client_id": restored.client_id, "client_secret": restored.client_secret,
            "grant_type": "refresh_token", "refresh_token": tokens["refresh_token"]})
        location = httpx.get(f"{restored.url}/locations/loc1", headers={
            "Authorization": f"Bearer {tokens['access_token']}", "Version": API_VERSION})

    assert refreshed.status_code == 200
    assert refreshed.json()["locationId"] == "loc1"
    assert location.status_code == 200
    assert restored.locations["loc1"].name == "Acme Dental"


def test_chooser_form_redirects_with_code(crm, http):
    form = callback_params(authorize_url(crm))
    form.update(choice="location:loc1", action="authorize")

    response = http.post(f"{crm.url}/oauth/chooselocation", data=form)

    assert response.status_code == 302
    location = response.headers["location"]
    assert location.startswith(REDIRECT_URI + "?")
    params = callback_params(location)
    assert params["state"] == "state-123"
    assert params["code"]


def test_chooser_cancel_and_missing_state(crm):
    cancelled = crm.authorize(authorize_url(crm), "", action="cancel")
    assert callback_params(cancelled) == {"error": "access_denied", "state": "state-123"}

    callback = crm.authorize(authorize_url(crm, state=""), "company:comp1")
    assert "state" not in callback_params(callback)
    assert "code" in callback_params(callback)


# CRM: token endpoint


def test_code_exchange_location_token(crm, http):
    crm.add_location("loc3", "New Clinic", "comp1", installed=False)

    tokens = connect(http, crm, "location:loc3")

    assert tokens["token_type"] == "Bearer"
    assert tokens["expires_in"] == 86399
    assert tokens["userType"] == "Location"
    assert tokens["locationId"] == "loc3"
    assert tokens["companyId"] == "comp1"
    assert tokens["isBulkInstallation"] is False
    assert tokens["access_token"] and tokens["refresh_token"]
    assert crm.locations["loc3"].installed is True


def test_code_exchange_company_token(crm, http):
    tokens = connect(http, crm, "company:comp1")

    assert tokens["userType"] == "Company"
    assert "locationId" not in tokens
    assert tokens["approvedLocations"] == ["loc1", "loc2"]


def test_code_reuse_rejected(crm, http):
    code = callback_params(crm.authorize(authorize_url(crm), "location:loc1"))["code"]
    first = token_request(http, crm, grant_type="authorization_code", code=code)

    second = token_request(http, crm, grant_type="authorization_code", code=code)

    assert first.status_code == 200
    assert second.status_code == 401
    assert second.json() == {"statusCode": 401, "message": "Authorization code not found"}


def test_token_bad_client_and_grant_type(crm, http):
    bad_client = http.post(f"{crm.url}/oauth/token", data={
        "client_id": crm.client_id, "client_secret": "wrong", "grant_type": "refresh_token",
    })
    bad_grant = token_request(http, crm, grant_type="password")

    assert bad_client.status_code == 401
    assert bad_client.json()["error"] == "invalid_client"
    assert bad_grant.status_code == 400
    assert bad_grant.json()["error"] == "unsupported_grant_type"


def test_refresh_rotates_token(crm, http):
    tokens = connect(http, crm, "location:loc1")

    refreshed = token_request(
        http, crm, grant_type="refresh_token", refresh_token=tokens["refresh_token"]
    )
    reused = token_request(
        http, crm, grant_type="refresh_token", refresh_token=tokens["refresh_token"]
    )
    next_refresh = token_request(
        http, crm, grant_type="refresh_token", refresh_token=refreshed.json()["refresh_token"]
    )

    assert refreshed.status_code == 200
    assert refreshed.json()["refresh_token"] != tokens["refresh_token"]
    assert refreshed.json()["locationId"] == "loc1"
    assert reused.status_code == 400
    assert reused.json() == {
        "error": "invalid_grant",
        "error_description": "Invalid grant: refresh token is invalid",
    }
    assert next_refresh.status_code == 200
    assert crm.refresh_successes == 2


def test_concurrent_refresh_one_success(crm, http):
    refresh_token = connect(http, crm, "location:loc1")["refresh_token"]
    barrier = threading.Barrier(20)
    statuses = []
    statuses_lock = threading.Lock()

    def refresh():
        with httpx.Client(timeout=10.0) as client:
            barrier.wait()
            response = token_request(
                client, crm, grant_type="refresh_token", refresh_token=refresh_token
            )
        with statuses_lock:
            statuses.append(response.status_code)

    threads = [threading.Thread(target=refresh) for _ in range(20)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=15)

    assert sorted(statuses) == [200] + [400] * 19
    assert crm.refresh_successes == 1


def test_paused_location_keeps_refresh_token(crm, http):
    tokens = connect(http, crm, "location:loc1")
    crm.pause_location("loc1")

    paused = token_request(
        http, crm, grant_type="refresh_token", refresh_token=tokens["refresh_token"]
    )
    lookup = http.get(f"{crm.url}/locations/loc1", headers=api_headers(tokens["access_token"]))
    crm.resume_location("loc1")
    resumed = token_request(
        http, crm, grant_type="refresh_token", refresh_token=tokens["refresh_token"]
    )

    assert paused.status_code == 400
    assert paused.json() == {"statusCode": 400, "message": "Location is not active"}
    assert lookup.status_code == 400
    assert resumed.status_code == 200


# CRM: API endpoints


def test_version_header_missing(crm, http):
    tokens = connect(http, crm, "location:loc1")

    response = http.get(
        f"{crm.url}/locations/loc1", headers={"Authorization": f"Bearer {tokens['access_token']}"}
    )

    assert response.status_code == 401
    assert response.json() == {"statusCode": 401, "message": "version header was not found."}


def test_expired_and_unknown_access_token(crm, http):
    tokens = connect(http, crm, "location:loc1")
    valid = http.get(f"{crm.url}/locations/loc1", headers=api_headers(tokens["access_token"]))
    crm.expire_access_tokens(location_id="loc1")

    expired = http.get(f"{crm.url}/locations/loc1", headers=api_headers(tokens["access_token"]))
    unknown = http.get(f"{crm.url}/locations/loc1", headers=api_headers("not-a-token"))

    assert valid.status_code == 200
    assert valid.json()["location"]["companyId"] == "comp1"
    assert expired.status_code == 401
    assert expired.json()["message"] == "Invalid token: access token is invalid"
    assert unknown.status_code == 401


def test_location_token_auth_class_error(crm, http):
    location_tokens = connect(http, crm, "location:loc1")

    response = http.post(
        f"{crm.url}/oauth/locationToken",
        data={"companyId": "comp1", "locationId": "loc1"},
        headers=api_headers(location_tokens["access_token"]),
    )

    assert response.status_code == 401
    assert response.json()["message"] == "This authClass type is not allowed to access this scope"


def test_location_token_minting(crm, http):
    company = connect(http, crm, "company:comp1")
    crm.add_location("loc4", "Not Installed", "comp1", installed=False)
    headers = api_headers(company["access_token"])
    url = f"{crm.url}/oauth/locationToken"

    minted = http.post(url, data={"companyId": "comp1", "locationId": "loc2"}, headers=headers)
    foreign = http.post(url, data={"companyId": "comp1", "locationId": "loc9"}, headers=headers)
    missing = http.post(url, data={"companyId": "comp1", "locationId": "loc4"}, headers=headers)
    lookup = http.get(
        f"{crm.url}/locations/loc2", headers=api_headers(minted.json()["access_token"])
    )
    with_company_token = http.get(f"{crm.url}/locations/loc2", headers=headers)

    assert minted.status_code == 200
    assert minted.json()["locationId"] == "loc2"
    assert minted.json()["refresh_token"]
    assert foreign.status_code == 403
    assert foreign.json()["message"] == "The token does not have access to this location."
    assert missing.status_code == 400
    assert lookup.status_code == 200
    assert with_company_token.status_code == 401


def test_location_lookup_other_location(crm, http):
    tokens = connect(http, crm, "location:loc1")

    response = http.get(f"{crm.url}/locations/loc2", headers=api_headers(tokens["access_token"]))

    assert response.status_code == 403


def test_revoke_company_grants(crm, http):
    company = connect(http, crm, "company:comp1")
    minted = http.post(
        f"{crm.url}/oauth/locationToken",
        data={"companyId": "comp1", "locationId": "loc1"},
        headers=api_headers(company["access_token"]),
    ).json()

    revoked = crm.revoke_grants(company_id="comp1")

    lookup = http.get(f"{crm.url}/locations/loc1", headers=api_headers(minted["access_token"]))
    refresh = token_request(
        http, crm, grant_type="refresh_token", refresh_token=company["refresh_token"]
    )
    assert revoked == 4
    assert lookup.status_code == 401
    assert refresh.status_code == 400


def test_installed_locations_requires_app_id(crm, http):
    company = connect(http, crm, "company:comp1")

    response = http.get(
        f"{crm.url}/oauth/installedLocations",
        params={"companyId": "comp1", "isInstalled": "true"},
        headers=api_headers(company["access_token"]),
    )

    assert response.status_code == 422
    assert response.json() == {"statusCode": 422, "message": ["appId should not be empty"]}


def test_installed_locations_pagination(crm, http):
    crm.add_location("loc3", "Acme Roofing", "comp1")
    crm.add_location("loc4", "Acme Storage", "comp1", installed=False)
    company = connect(http, crm, "company:comp1")
    assert crm.app_id == "sim"

    pages = []
    for skip in (0, 2):
        response = http.get(
            f"{crm.url}/oauth/installedLocations",
            params={"companyId": "comp1", "appId": crm.app_id, "isInstalled": "true",
                    "skip": skip, "limit": 2},
            headers=api_headers(company["access_token"]),
        )
        assert response.status_code == 200
        pages.append(response.json())

    assert [row["_id"] for row in pages[0]["locations"]] == ["loc1", "loc2"]
    assert [row["_id"] for row in pages[1]["locations"]] == ["loc3"]
    assert pages[0]["count"] == 3
    assert set(pages[0]["locations"][0]) == {"_id", "name", "address", "isInstalled"}


def test_locations_search_pagination(crm, http):
    company = connect(http, crm, "company:comp1")

    response = http.get(
        f"{crm.url}/locations/search",
        params={"companyId": "comp1", "skip": 1, "limit": 5},
        headers=api_headers(company["access_token"]),
    )

    assert response.status_code == 200
    assert response.json()["locations"] == [
        {"id": "loc2", "name": "Acme Plumbing", "companyId": "comp1", "address": ""}
    ]


def test_transfer_location(crm, http):
    company = connect(http, crm, "company:comp1")
    crm.transfer_location("loc1", "comp2")

    response = http.post(
        f"{crm.url}/oauth/locationToken",
        data={"companyId": "comp1", "locationId": "loc1"},
        headers=api_headers(company["access_token"]),
    )

    assert response.status_code == 403


def test_fail_next_injects_errors(crm, http):
    crm.fail_next("/oauth/token", status=429)
    crm.fail_next("/oauth/token", status=503, count=2)

    first = token_request(http, crm, grant_type="refresh_token", refresh_token="x")
    second = token_request(http, crm, grant_type="refresh_token", refresh_token="x")
    third = token_request(http, crm, grant_type="refresh_token", refresh_token="x")
    fourth = token_request(http, crm, grant_type="refresh_token", refresh_token="x")

    assert first.status_code == 429
    assert first.headers["retry-after"] == "1"
    assert second.status_code == 503
    assert second.json() == {"statusCode": 503, "message": "Internal server error"}
    assert third.status_code == 503
    assert fourth.status_code == 400
    assert len(crm.requests_to("/oauth/token")) == 4


def test_fail_next_delay_times_out(crm):
    crm.fail_next("/locations/search", status=200, body={"locations": []}, delay=0.5)

    with httpx.Client(timeout=0.1) as client, pytest.raises(httpx.ReadTimeout):
        client.get(f"{crm.url}/locations/search")


def test_rate_limit_per_company(http):
    with CrmSimulator(rate_limit=(2, 10.0)) as crm:
        crm.add_company("comp1", "Acme Agency")
        crm.add_location("loc1", "Acme Dental", "comp1")
        company = connect(http, crm, "company:comp1")
        url = f"{crm.url}/locations/search"
        headers = api_headers(company["access_token"])

        responses = [http.get(url, headers=headers) for _ in range(3)]

    assert [response.status_code for response in responses] == [200, 200, 429]
    assert responses[0].headers["x-ratelimit-remaining"] == "1"
    assert responses[0].headers["x-ratelimit-max"] == "2"
    assert responses[0].headers["x-ratelimit-interval-milliseconds"] == "10000"
    assert responses[2].json() == {"statusCode": 429, "message": "Too many requests"}
    assert int(responses[2].headers["retry-after"]) >= 1


def test_requests_are_recorded(crm, http):
    connect(http, crm, "location:loc1")

    recorded = crm.requests_to("/oauth/token")[0]

    assert recorded.method == "POST"
    assert recorded.form["grant_type"] == "authorization_code"
    assert recorded.headers["content-type"] == "application/x-www-form-urlencoded"


def test_unknown_crm_path(crm, http):
    response = http.get(f"{crm.url}/contacts/")

    assert response.status_code == 404
    assert response.json()["statusCode"] == 404


# Slack: Web API


def test_auth_test_and_invalid_auth(slack):
    good = WebClient(token=slack.bot_token, base_url=slack.api_url)
    bad = WebClient(token="xoxb-wrong", base_url=slack.api_url)

    identity = good.auth_test()

    assert identity["user_id"] == "U0SIMBOT"
    assert identity["team_id"] == "T0SIM0001"
    with pytest.raises(SlackApiError) as raised:
        bad.auth_test()
    assert raised.value.response["error"] == "invalid_auth"


def test_dm_through_webclient(slack):
    client = WebClient(token=slack.bot_token, base_url=slack.api_url)
    blocks = [{"type": "section", "text": {"type": "mrkdwn", "text": "Connect Acme"}}]

    channel = client.conversations_open(users="U0AGENT01")["channel"]["id"]
    first = client.chat_postMessage(channel=channel, text="Connect Acme", blocks=blocks)
    second = client.chat_postMessage(channel=channel, text="Again", thread_ts=first["ts"])

    assert channel == dm_channel_id("U0AGENT01") == "D0AGENT01"
    assert float(second["ts"]) > float(first["ts"])
    assert [message["text"] for message in slack.dms_to("U0AGENT01")] == ["Connect Acme", "Again"]
    assert slack.messages(channel)[0]["blocks"] == blocks
    assert slack.messages(channel)[1]["thread_ts"] == first["ts"]
    assert slack.calls_to("chat.postMessage")[0].headers["authorization"] == "Bearer xoxb-sim-token"


def test_form_blocks_are_decoded(slack, http):
    blocks = [{"type": "divider"}]

    response = http.post(
        f"{slack.api_url}chat.postMessage",
        data={"channel": "D0AGENT01", "text": "hi", "blocks": json.dumps(blocks)},
        headers={"Authorization": f"Bearer {slack.bot_token}"},
    )

    assert response.json()["ok"] is True
    assert slack.messages()[0]["blocks"] == blocks


def test_channel_membership_errors(slack):
    client = WebClient(token=slack.bot_token, base_url=slack.api_url)
    slack.add_channel("C0SUPPORT", "support", member=True)
    slack.add_channel("C0PRIVATE", "private", member=False)

    posted = client.chat_postMessage(channel="C0SUPPORT", text="ok")
    with pytest.raises(SlackApiError) as not_member:
        client.chat_postMessage(channel="C0PRIVATE", text="hello")
    with pytest.raises(SlackApiError) as unknown:
        client.chat_postMessage(channel="C0UNKNOWN", text="hello")

    assert posted["channel"] == "C0SUPPORT"
    assert not_member.value.response["error"] == "not_in_channel"
    assert unknown.value.response["error"] == "channel_not_found"
    assert len(slack.calls_to("chat.postMessage")) == 3
    assert [message["channel"] for message in slack.messages()] == ["C0SUPPORT"]


def test_chat_update_and_unknown_user(slack):
    client = WebClient(token=slack.bot_token, base_url=slack.api_url)
    posted = client.chat_postMessage(channel="U0AGENT01", text="Link sent")

    updated = client.chat_update(channel=posted["channel"], ts=posted["ts"], text="Connected")
    with pytest.raises(SlackApiError) as unknown:
        client.users_info(user="U0NOBODY")

    assert posted["channel"] == "D0AGENT01"
    assert updated["message"]["text"] == "Connected"
    assert unknown.value.response["error"] == "user_not_found"
    assert client.users_info(user="U0AGENT01")["user"]["tz"] == "America/New_York"


def test_views_publish_records_home(slack):
    client = WebClient(token=slack.bot_token, base_url=slack.api_url)
    view = {"type": "home", "blocks": [{"type": "divider"}]}

    client.views_publish(user_id="U0AGENT01", view=view)

    assert slack.home_view("U0AGENT01")["blocks"] == view["blocks"]
    assert slack.calls_to("views.publish")[0].args["view"] == view


def test_rate_limit_fault(slack, http):
    slack.fail_next("chat.postMessage", status=429, retry_after=3)
    url = f"{slack.api_url}chat.postMessage"
    headers = {"Authorization": f"Bearer {slack.bot_token}"}

    limited = http.post(url, json={"channel": "D0AGENT01", "text": "hi"}, headers=headers)
    accepted = http.post(url, json={"channel": "D0AGENT01", "text": "hi"}, headers=headers)

    assert limited.status_code == 429
    assert limited.headers["retry-after"] == "3"
    assert limited.json() == {"ok": False, "error": "ratelimited"}
    assert accepted.json()["ok"] is True
    assert len(slack.messages("D0AGENT01")) == 1
    assert slack.calls_to("chat.postMessage")[0].status == 429


def test_error_fault_and_unknown_method(slack):
    client = WebClient(token=slack.bot_token, base_url=slack.api_url)
    slack.fail_next("conversations.open", error="missing_scope")

    with pytest.raises(SlackApiError) as injected:
        client.conversations_open(users="U0AGENT01")
    with pytest.raises(SlackApiError) as unknown:
        client.api_call("chat.unknownThing")

    assert injected.value.response["error"] == "missing_scope"
    assert unknown.value.response["error"] == "unknown_method"


def test_fault_after_served_calls(slack):
    client = WebClient(token=slack.bot_token, base_url=slack.api_url)
    slack.fail_next("chat.postMessage", error="invalid_blocks", after=2)

    first = client.chat_postMessage(channel="U0AGENT01", text="one")
    second = client.chat_postMessage(channel="U0AGENT01", text="two")
    with pytest.raises(SlackApiError) as injected:
        client.chat_postMessage(channel="U0AGENT01", text="three")
    fourth = client.chat_postMessage(channel="U0AGENT01", text="four")

    assert first["ok"]
    assert second["ok"]
    assert fourth["ok"]
    assert injected.value.response["error"] == "invalid_blocks"
    assert [message["text"] for message in slack.dms_to("U0AGENT01")] == ["one", "two", "four"]


def test_response_url_recording(slack, http):
    response_url = slack.new_response_url()
    other_url = slack.new_response_url()

    statuses = [
        http.post(response_url, json={"text": f"reply {number}"}).status_code
        for number in range(6)
    ]
    http.post(other_url, json={"text": "elsewhere"})

    assert statuses == [200] * 5 + [404]
    assert [body["text"] for body in slack.responses(response_url)] == [
        f"reply {number}" for number in range(5)
    ]
    assert len(slack.responses()) == 6


def test_wait_for(slack):
    client = WebClient(token=slack.bot_token, base_url=slack.api_url)
    timer = threading.Timer(0.1, client.chat_postMessage, kwargs={
        "channel": "D0AGENT01", "text": "late"
    })
    timer.start()

    messages = slack.wait_for(lambda sim: sim.dms_to("U0AGENT01"), timeout=3.0)
    with pytest.raises(AssertionError) as timeout:
        slack.wait_for(lambda sim: sim.dms_to("U0NOBODY"), timeout=0.1)

    assert messages[0]["text"] == "late"
    assert "chat.postMessage D0AGENT01 text='late' -> ok" in str(timeout.value)


# Slack: signing and request builders


def test_sign_request_matches_slack_example():
    body = (
        "token=xyzz0WbapA4vBCDEFasx0q6G&team_id=T1DC2JH3J&team_domain=testteamnow"
        "&channel_id=G8PSS9T3V&channel_name=foobar&user_id=U2CERLKJA&user_name=roadrunner"
        "&command=%2Fwebhook-collect&text=&response_url=https%3A%2F%2Fhooks.slack.com"
        "%2Fcommands%2FT1DC2JH3J%2F397700885554%2F96rGlfmibIGlgcZRskXaIFfN"
        "&trigger_id=398738663015.47445629121.803a0bc887a14d10d2c447fce8b6703c"
    ).encode()

    headers = sign_request("8f742231b10e8888abcd99yyyzzz85a5", body, timestamp=1531420618)

    assert headers["X-Slack-Request-Timestamp"] == "1531420618"
    assert headers["X-Slack-Signature"] == (
        "v0=a2114d57b48eac39b9ad189dd8316235a7b4a8d21a10bd27519666489c69b503"
    )


def test_signed_command_passes_sdk_verifier():
    fields = make_command("/crm", "connect Acme", response_url="http://127.0.0.1:9/response/x")
    body = urlencode(fields)

    headers = sign_request("secret", body)

    verifier = SignatureVerifier("secret")
    assert verifier.is_valid_request(body, headers)
    assert fields["channel_name"] == "support"
    assert fields["trigger_id"].count(".") == 2
    for name in ("team_id", "team_domain", "channel_id", "user_id", "user_name", "command",
                 "text", "response_url", "api_app_id", "token"):
        assert fields[name], name


def test_make_block_action_shape():
    message = {"ts": "1700000000.000100", "text": "Connect Acme"}

    fields = make_block_action(
        "connect_location", "loc1", user_id="U0AGENT01", team_id="T0SIM0001",
        response_url="http://127.0.0.1:9/response/y", channel_id="D0AGENT01", message=message,
    )
    payload = json.loads(fields["payload"])

    assert payload["type"] == "block_actions"
    assert payload["user"]["id"] == "U0AGENT01"
    assert payload["team"]["id"] == "T0SIM0001"
    assert payload["container"]["message_ts"] == "1700000000.000100"
    assert payload["channel"]["id"] == "D0AGENT01"
    assert payload["actions"][0]["action_id"] == "connect_location"
    assert payload["actions"][0]["value"] == "loc1"
    assert payload["actions"][0]["type"] == "button"


def test_simulators_stop_cleanly():
    crm = CrmSimulator().start()
    url = crm.url
    crm.stop()
    crm.stop()

    with pytest.raises(httpx.ConnectError):
        httpx.get(f"{url}/oauth/chooselocation", timeout=1.0)
    with pytest.raises(RuntimeError):
        crm.url
    started = time.monotonic()
    with SlackSimulator():
        pass
    assert time.monotonic() - started < 2.0
