"""The CRM client against the CRM simulator over HTTP."""

from __future__ import annotations

from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

from bot.crm import CrmClient, CrmError, CrmReason, RetryPolicy
from bot.crm.errors import classify


@pytest.fixture
def sleeps() -> list[float]:
    return []


@pytest.fixture
def client(crm, sleeps) -> CrmClient:
    client = CrmClient(
        api_url=crm.url,
        authorize_url=f"{crm.url}/oauth/chooselocation",
        client_id=crm.client_id,
        client_secret=crm.client_secret,
        scopes="locations.readonly oauth.write",
        redirect_uri="http://127.0.0.1:9/oauth/callback",
        retry=RetryPolicy(attempts=3, base_delay=0.01),
        sleep=sleeps.append,
    )
    yield client
    client.close()


def code_for(crm, client, choice: str) -> str:
    callback = crm.authorize(client.build_authorize_url("state-1"), choice)
    return parse_qs(urlsplit(callback).query)["code"][0]


def test_authorize_url_fields(client):
    query = parse_qs(urlsplit(client.build_authorize_url("abc")).query)

    assert query == {
        "response_type": ["code"],
        "client_id": [client.client_id],
        "redirect_uri": ["http://127.0.0.1:9/oauth/callback"],
        "scope": ["locations.readonly oauth.write"],
        "state": ["abc"],
    }


def test_exchange_location_code(crm, client):
    grant = client.exchange_code(code_for(crm, client, "location:loc-acme"))

    assert grant.user_type == "Location"
    assert grant.location_id == "loc-acme"
    assert grant.company_id == "comp-agency-1"
    assert grant.refresh_token
    assert grant.access_token not in repr(grant)
    sent = crm.requests_to("/oauth/token")[-1]
    assert sent.form["grant_type"] == "authorization_code"
    assert sent.headers["version"] == "2021-07-28"


def test_reused_code_is_code_not_found(crm, client):
    code = code_for(crm, client, "location:loc-acme")
    client.exchange_code(code)

    with pytest.raises(CrmError) as error:
        client.exchange_code(code)

    assert error.value.reason is CrmReason.CODE_NOT_FOUND
    assert error.value.status == 401


def test_refresh_rotates_and_reuse_is_invalid_grant(crm, client):
    first = client.exchange_code(code_for(crm, client, "location:loc-acme"))
    second = client.refresh(first.refresh_token)

    assert second.refresh_token != first.refresh_token
    with pytest.raises(CrmError) as error:
        client.refresh(first.refresh_token)
    assert error.value.reason is CrmReason.INVALID_GRANT


def test_paused_location_is_not_active(crm, client):
    grant = client.exchange_code(code_for(crm, client, "location:loc-acme"))
    crm.pause_location("loc-acme")

    with pytest.raises(CrmError) as error:
        client.refresh(grant.refresh_token)

    assert error.value.reason is CrmReason.LOCATION_NOT_ACTIVE


def test_company_token_on_location_is_auth_class(crm, client):
    agency = client.exchange_code(code_for(crm, client, "company:comp-agency-1"))

    with pytest.raises(CrmError) as error:
        client.get_location(agency.access_token, "loc-acme")

    assert error.value.reason is CrmReason.AUTH_CLASS


def test_other_location_is_no_access(crm, client):
    grant = client.exchange_code(code_for(crm, client, "location:loc-acme"))

    with pytest.raises(CrmError) as error:
        client.get_location(grant.access_token, "loc-bolt")

    assert error.value.reason is CrmReason.NO_LOCATION_ACCESS


def test_mint_location_token(crm, client):
    agency = client.exchange_code(code_for(crm, client, "company:comp-agency-1"))

    grant = client.mint_location_token(agency.access_token, company_id="comp-agency-1", location_id="loc-bolt")

    assert grant.location_id == "loc-bolt"
    assert client.get_location(grant.access_token, "loc-bolt")["name"] == "Bolt Plumbing"


def test_server_error_retried_then_succeeds(crm, client, sleeps):
    grant = client.exchange_code(code_for(crm, client, "location:loc-acme"))
    crm.fail_next("/locations/loc-acme", status=503, count=2)

    location = client.get_location(grant.access_token, "loc-acme")

    assert location["id"] == "loc-acme"
    assert len(sleeps) == 2
    assert len(crm.requests_to("/locations/loc-acme")) == 3


def test_rate_limit_honours_retry_after(crm, client, sleeps):
    grant = client.exchange_code(code_for(crm, client, "location:loc-acme"))
    crm.fail_next("/locations/loc-acme", status=429, headers={"Retry-After": "2"})

    client.get_location(grant.access_token, "loc-acme")

    # The wait is either an injected sleep or a pause of the rate limiter.
    first, second = crm.requests_to("/locations/loc-acme")
    assert sum(sleeps) + (second.time - first.time) >= 1.9


def test_retries_are_bounded(crm, client, sleeps):
    grant = client.exchange_code(code_for(crm, client, "location:loc-acme"))
    crm.fail_next("/locations/loc-acme", status=500, count=5)

    with pytest.raises(CrmError) as error:
        client.get_location(grant.access_token, "loc-acme")

    assert error.value.reason is CrmReason.TRANSIENT
    assert len(crm.requests_to("/locations/loc-acme")) == 3


def test_timeout_is_transient(crm, client):
    grant = client.exchange_code(code_for(crm, client, "location:loc-acme"))
    client._http.timeout = httpx.Timeout(0.2)
    crm.fail_next("/locations/loc-acme", status=200, delay=0.6, count=3)

    with pytest.raises(CrmError) as error:
        client.get_location(grant.access_token, "loc-acme")

    assert error.value.reason is CrmReason.TRANSIENT
    assert error.value.status is None


def test_invalid_client(crm, client):
    client._client_secret = "wrong"

    with pytest.raises(CrmError) as error:
        client.exchange_code(code_for(crm, client, "location:loc-acme"))

    assert error.value.reason is CrmReason.INVALID_CLIENT


def test_installed_locations_missing_app_id(crm, client):
    agency = client.exchange_code(code_for(crm, client, "company:comp-agency-1"))

    with pytest.raises(CrmError) as error:
        client.installed_locations(agency.access_token, company_id="comp-agency-1", app_id="")

    assert error.value.status == 422
    assert error.value.reason is CrmReason.APP_ID


@pytest.mark.parametrize("status, body, reason", [
    (400, {"error": "invalid_grant", "error_description": "Invalid grant: refresh token is invalid"}, CrmReason.INVALID_GRANT),
    (401, {"statusCode": 401, "message": "Authorization code not found"}, CrmReason.CODE_NOT_FOUND),
    (400, {"statusCode": 400, "message": "Location is not active"}, CrmReason.LOCATION_NOT_ACTIVE),
    (403, {"statusCode": 403, "message": "The token does not have access to this location."}, CrmReason.NO_LOCATION_ACCESS),
    (401, {"statusCode": 401, "message": "This authClass type is not allowed to access this scope"}, CrmReason.AUTH_CLASS),
    (401, {"statusCode": 401, "message": "The token is not authorized for this scope."}, CrmReason.SCOPE),
    (401, {"statusCode": 401, "message": "Invalid token: access token is invalid"}, CrmReason.INVALID_TOKEN),
    (401, {"statusCode": 401, "message": "version header was not found."}, CrmReason.VERSION_HEADER),
    (422, {"statusCode": 422, "message": ["appId should not be empty"]}, CrmReason.APP_ID),
    (429, {"statusCode": 429, "message": "Too many requests"}, CrmReason.TRANSIENT),
    (502, "<html>Bad gateway</html>", CrmReason.TRANSIENT),
    (400, {"statusCode": 400, "message": "Something else"}, CrmReason.REJECTED),
])
def test_classify(status, body, reason):
    assert classify(status, body) is reason
