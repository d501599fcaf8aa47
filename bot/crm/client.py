"""HTTP client of the CRM's OAuth and location API. The only code that speaks to the CRM."""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from urllib.parse import urlencode

import httpx

from bot.crm.errors import CrmError, CrmReason, classify, message_of
from bot.crm.ratelimit import RateLimiter
from bot.errors import ConfigError
from storage.db import utcnow

logger = logging.getLogger(__name__)

API_VERSION = "2021-07-28"
DEFAULT_TIMEOUT = httpx.Timeout(10.0, connect=5.0)


@dataclass(frozen=True)
class TokenGrant:
    """One token response of the CRM, with the secrets hidden from repr."""

    access_token: str = field(repr=False)
    refresh_token: str | None = field(repr=False)
    expires_at: datetime
    scopes: str
    user_type: str
    company_id: str | None
    location_id: str | None
    crm_user_id: str | None

    @classmethod
    def from_body(cls, body: dict, *, now: datetime, default_user_type: str | None = None) -> TokenGrant:
        if not isinstance(body, dict) or not body.get("access_token"):
            raise CrmError(CrmReason.REJECTED, "The token response has no access_token", status=200)
        expires_in = int(body.get("expires_in") or 86399)
        return cls(
            access_token=body["access_token"],
            refresh_token=body.get("refresh_token"),
            expires_at=now + timedelta(seconds=expires_in),
            scopes=str(body.get("scope") or ""),
            user_type=str(body.get("userType") or default_user_type or ("Location" if body.get("locationId") else "Company")),
            company_id=body.get("companyId"),
            location_id=body.get("locationId"),
            crm_user_id=body.get("userId"),
        )


@dataclass(frozen=True)
class RetryPolicy:
    """Bounded retries for timeouts, connection errors, 5xx and 429."""

    attempts: int = 3
    base_delay: float = 0.5
    max_delay: float = 8.0
    max_retry_after: float = 30.0

    def delay(self, attempt: int, retry_after: float | None) -> float:
        if retry_after is not None:
            return min(retry_after, self.max_retry_after)
        backoff = min(self.max_delay, self.base_delay * 2 ** (attempt - 1))
        return backoff * (0.5 + random.random() / 2)


class CrmClient:
    """Client of the CRM API for one marketplace app.

    Every call sends the `Version` header and a timeout. A timeout, a
    connection error, a 5xx or a 429 is retried with backoff (honouring
    `Retry-After`) up to `retry.attempts` times. After that, or for any other
    error response, the call raises CrmError with a classified reason.

    Calls with an agency token count against the company's rate limit, and
    calls with a location token against the location's. `rate_limiter` makes
    them wait for a free slot, and a 429 pauses that company or location.
    """

    def __init__(
        self,
        *,
        api_url: str,
        authorize_url: str,
        client_id: str | None,
        client_secret: str | None,
        scopes: str,
        redirect_uri: str,
        retry: RetryPolicy | None = None,
        timeout: httpx.Timeout = DEFAULT_TIMEOUT,
        sleep: Callable[[float], None] = time.sleep,
        rate_limiter: RateLimiter | None = None,
    ) -> None:
        self.authorize_url = authorize_url
        self.client_id = client_id
        self._client_secret = client_secret
        self.scopes = scopes
        self.redirect_uri = redirect_uri
        self.retry = retry or RetryPolicy()
        self.rate_limiter = rate_limiter or RateLimiter()
        self._sleep = sleep
        self._http = httpx.Client(base_url=api_url, timeout=timeout, headers={"Version": API_VERSION, "Accept": "application/json"})

    def __repr__(self) -> str:
        return f"CrmClient(api_url={str(self._http.base_url)!r}, client_id={self.client_id!r})"

    def close(self) -> None:
        self._http.close()

    # OAuth

    def build_authorize_url(self, state: str) -> str:
        query = {
            "response_type": "code",
            "client_id": self.client_id,
            "redirect_uri": self.redirect_uri,
            "scope": self.scopes,
            "state": state,
        }
        return f"{self.authorize_url}?{urlencode(query)}"

    def exchange_code(self, code: str, *, user_type: str | None = None) -> TokenGrant:
        """Trade an authorization code for tokens (grant_type=authorization_code)."""
        form = {"grant_type": "authorization_code", "code": code, "redirect_uri": self.redirect_uri}
        if user_type:
            form["user_type"] = user_type
        return self._token_request(form, default_user_type=user_type)

    def refresh(self, refresh_token: str, *, user_type: str | None = None) -> TokenGrant:
        """Trade a refresh token for new tokens. The CRM rotates it: the old one dies."""
        form = {"grant_type": "refresh_token", "refresh_token": refresh_token}
        if user_type:
            form["user_type"] = user_type
        return self._token_request(form, default_user_type=user_type)

    def mint_location_token(self, agency_access_token: str, *, company_id: str, location_id: str) -> TokenGrant:
        """Mint a Location token from a Company token (POST /oauth/locationToken)."""
        body = self._request(
            "POST", "/oauth/locationToken",
            token=agency_access_token,
            data={"companyId": company_id, "locationId": location_id},
            rate_key=company_key(company_id),
        )
        grant = TokenGrant.from_body(body, now=utcnow(), default_user_type="Location")
        # The mint response may omit locationId or companyId, but the request names both.
        if grant.location_id is None or grant.company_id is None:
            grant = _with_location(grant, grant.location_id or location_id, company_id)
        return grant

    # API

    def get_location(self, access_token: str, location_id: str) -> dict:
        """Fetch one location with its own Location token; a cheap health check."""
        body = self._request("GET", f"/locations/{location_id}", token=access_token, rate_key=location_key(location_id))
        return body.get("location", body) if isinstance(body, dict) else {}

    def search_locations(self, agency_access_token: str, *, company_id: str, skip: int = 0, limit: int = 100) -> list[dict]:
        body = self._request("GET", "/locations/search", token=agency_access_token, rate_key=company_key(company_id),
                             params={"companyId": company_id, "skip": skip, "limit": limit})
        return list(body.get("locations") or [])

    def installed_locations(self, agency_access_token: str, *, company_id: str, app_id: str, skip: int = 0, limit: int = 100) -> tuple[list[dict], int]:
        body = self._request("GET", "/oauth/installedLocations", token=agency_access_token, rate_key=company_key(company_id),
                             params={"companyId": company_id, "appId": app_id, "isInstalled": "true", "skip": skip, "limit": limit})
        locations = list(body.get("locations") or [])
        return locations, int(body.get("count") or len(locations))

    # Transport

    def _token_request(self, form: dict, *, default_user_type: str | None) -> TokenGrant:
        if not self.client_id or not self._client_secret:
            raise ConfigError("CRM_CLIENT_ID and CRM_CLIENT_SECRET are required to connect accounts. "
                              "Copy them from the app's settings in the CRM marketplace.")
        form = {"client_id": self.client_id, "client_secret": self._client_secret, **form}
        body = self._request("POST", "/oauth/token", data=form)
        return TokenGrant.from_body(body, now=utcnow(), default_user_type=default_user_type)

    def _request(self, method: str, path: str, *, token: str | None = None, data: dict | None = None,
                 params: dict | None = None, rate_key: str | None = None) -> dict:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        attempt = 0

        while True:
            attempt += 1
            logger.info("CRM %s %s (attempt %s)", method, path, attempt)
            try:
                with self.rate_limiter.slot(rate_key):
                    response = self._http.request(method, path, data=data, params=params, headers=headers)
            except httpx.TransportError as error:
                failure = CrmError(CrmReason.TRANSIENT, f"{type(error).__name__}: the CRM did not respond")
                failure.__cause__ = error
            else:
                self.rate_limiter.observe(rate_key, response.headers)
                if response.is_success:
                    return _json(response)
                failure = _error_from(response)

            if not failure.is_transient or attempt >= self.retry.attempts:
                raise failure

            delay = self.retry.delay(attempt, failure.retry_after)
            if failure.retry_after is not None and failure.retry_after > self.retry.max_retry_after:
                raise failure
            logger.warning("CRM %s %s failed (%s); retrying in %.1f s", method, path, failure.crm_message, delay)
            if failure.status == 429 and rate_key is not None:
                # The pause delays every thread's requests for this company or location, not only this retry.
                self.rate_limiter.pause(rate_key, delay)
            else:
                self._sleep(delay)


def company_key(company_id: str) -> str:
    """Return the rate-limit key of calls made with a company's agency token."""
    return f"company:{company_id}"


def location_key(location_id: str) -> str:
    """Return the rate-limit key of calls made with a location's token."""
    return f"location:{location_id}"


def _json(response: httpx.Response) -> dict:
    try:
        body = response.json()
    except ValueError as error:
        raise CrmError(CrmReason.TRANSIENT, "The CRM responded with a body that is not JSON", status=response.status_code) from error
    return body if isinstance(body, dict) else {"items": body}


def _error_from(response: httpx.Response) -> CrmError:
    try:
        body = response.json()
    except ValueError:
        body = response.text
    retry_after = _retry_after(response)
    reason = classify(response.status_code, body)
    return CrmError(reason, message_of(body) or response.reason_phrase, status=response.status_code, retry_after=retry_after)


def _retry_after(response: httpx.Response) -> float | None:
    raw = response.headers.get("Retry-After")
    if raw is None:
        return None
    try:
        return max(0.0, float(raw))
    except ValueError:
        return None


def _with_location(grant: TokenGrant, location_id: str, company_id: str) -> TokenGrant:
    return replace(grant, location_id=location_id, company_id=grant.company_id or company_id)
