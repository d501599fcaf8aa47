"""Local HTTP simulator of the CRM marketplace: app install, OAuth tokens and sub-account lookups.

The CRM calls an agency a Company and each of its sub-accounts a Location. The simulator serves
the endpoints that the bot uses, with the platform's wire format:

* ``GET /oauth/chooselocation`` shows the install page, where the user picks an agency or a
  sub-account. Its form posts back to the same path, which redirects to ``redirect_uri`` with a
  single-use ``code``.
* ``POST /oauth/token`` exchanges a code or a refresh token. Refresh tokens rotate.
* ``POST /oauth/locationToken``, ``GET /oauth/installedLocations``, ``GET /locations/search`` and
  ``GET /locations/{id}`` require the header ``Version: 2021-07-28`` and a bearer access token.

Every request is recorded in ``CrmSimulator.requests``. Tests change the state with helpers such
as ``pause_location``, inject failures with ``fail_next`` and send signed marketplace webhooks
with ``send_webhook``.
"""

from __future__ import annotations

import base64
import hmac
import html
import json
import logging
import math
import re
import secrets
import threading
import time
import urllib.error
import urllib.request
from collections import deque
from dataclasses import dataclass
from typing import Any, Callable
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, padding, rsa

from bot.simulators.http import (
    Response,
    ServedSimulator,
    SimulatorRequestHandler,
    take_due_fault,
)

logger = logging.getLogger(__name__)

API_VERSION = "2021-07-28"
DEFAULT_TOKEN_LIFETIME = 86399
SIMULATED_PLAN_ID = "sim-plan"

# /locations/search documents a default page size of 10.
DEFAULT_SEARCH_LIMIT = 10
# NOTE: /oauth/installedLocations documents no default page size, so 100 is a guess.
DEFAULT_INSTALLED_LIMIT = 100

USER_TYPE_COMPANY = "Company"
USER_TYPE_LOCATION = "Location"

MESSAGE_VERSION_MISSING = "version header was not found."
MESSAGE_INVALID_TOKEN = "Invalid token: access token is invalid"
MESSAGE_WRONG_AUTH_CLASS = "This authClass type is not allowed to access this scope"
MESSAGE_NO_LOCATION_ACCESS = "The token does not have access to this location."
MESSAGE_NO_COMPANY_ACCESS = "The token does not have access to this company."
MESSAGE_NOT_INSTALLED = "App is not installed for this location"
MESSAGE_LOCATION_INACTIVE = "Location is not active"
MESSAGE_CODE_NOT_FOUND = "Authorization code not found"
MESSAGE_RATE_LIMITED = "Too many requests"

_LOCATION_PATH = re.compile(r"^/locations/([^/]+)$")


@dataclass
class Location:
    """Sub-account of an agency, with the app's install state and the account's pause state."""

    id: str
    name: str
    company_id: str
    installed: bool = True
    active: bool = True
    address: str = ""


@dataclass
class Grant:
    """Authorization that a set of tokens acts under: an agency install or a sub-account install.

    ``company_id`` follows the location when it is transferred to another agency.
    """

    user_type: str
    company_id: str
    location_id: str | None
    scope: str
    user_id: str


@dataclass
class RecordedRequest:
    """HTTP request as the simulator received it. Header names are lower-case."""

    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    form: dict[str, str]
    json: Any
    time: float


class AuthorizationError(ValueError):
    """Invalid install request, such as an unknown client_id or an unknown account choice."""


@dataclass
class _AccessToken:
    grant: Grant
    expires_at: float


@dataclass
class _PendingCode:
    grant: Grant
    redirect_uri: str


@dataclass
class _Fault:
    status: int
    body: Any
    headers: dict[str, str]
    remaining: int
    delay: float
    skip: int = 0


def _json_response(status: int, payload: Any, headers: dict[str, str] | None = None) -> Response:
    body = json.dumps(payload).encode()
    return Response(status, body, "application/json; charset=utf-8", dict(headers or {}))


def _api_error(status: int, message: str | list[str]) -> Response:
    return _json_response(status, {"statusCode": status, "message": message})


def _html_response(status: int, title: str, body_html: str) -> Response:
    page = (
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
        f"<title>{html.escape(title)}</title></head>\n<body>\n{body_html}\n</body></html>\n"
    )
    return Response(status, page.encode(), "text/html; charset=utf-8")


def _error_page(status: int, message: str) -> Response:
    body = f"<h1>Cannot connect the app</h1>\n<p>{html.escape(message)}</p>"
    return _html_response(status, "Cannot connect the app", body)


def _redirect(location: str) -> Response:
    return Response(302, b"", "text/plain; charset=utf-8", {"Location": location})


def _append_query(url: str, params: dict[str, str]) -> str:
    """Add query parameters to a URL and keep the ones that it already has."""
    parts = urlsplit(url)
    query = parse_qsl(parts.query, keep_blank_values=True) + list(params.items())
    return urlunsplit(parts._replace(query=urlencode(query)))


def _body_fields(request: RecordedRequest) -> dict[str, str]:
    """Return the body's fields from a form-encoded body, or from a JSON object body."""
    if request.form:
        return request.form
    if isinstance(request.json, dict):
        return {key: str(value) for key, value in request.json.items()}
    return {}


def _bearer_token(request: RecordedRequest) -> str | None:
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip()


def _parse_page(query: dict[str, str], default_limit: int) -> tuple[int, int, list[str]]:
    """Read ``skip`` and ``limit`` from a query and return them with any validation messages."""
    errors = []
    values = {}
    for name, default in (("skip", 0), ("limit", default_limit)):
        raw = query.get(name, "")
        if raw == "":
            values[name] = default
        elif raw.isdigit():
            values[name] = int(raw)
        else:
            errors.append(f"{name} must be a non-negative integer, got {raw!r}")
            values[name] = default
    return values["skip"], values["limit"], errors


def _public_pem(private_key: Any) -> str:
    return private_key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    ).decode()


def _location_json(location: Location) -> dict[str, Any]:
    return {
        "id": location.id,
        "name": location.name,
        "companyId": location.company_id,
        "address": location.address,
    }


class CrmSimulator(ServedSimulator):
    """Threaded local server that behaves like the CRM's OAuth and sub-account API.

    All state is guarded by one lock, so tests may change it while the bot sends requests.
    Tokens and codes are random strings, and access tokens expire ``token_lifetime`` seconds
    after issue, measured with ``time.time()``.
    """

    label = "CRM simulator"
    thread_name = "crm-simulator"

    def __init__(
        self,
        client_id: str = "sim-app-id-123-abcdef",
        client_secret: str = "sim-secret",
        app_id: str | None = None,
        rate_limit: tuple[int, float] | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        token_lifetime: int = DEFAULT_TOKEN_LIFETIME,
        mint_refresh_tokens: bool = True,
    ) -> None:
        """Create a stopped simulator.

        ``app_id`` defaults to the part of ``client_id`` before its first hyphen.
        ``rate_limit`` is ``(max_requests, interval_seconds)`` per company or location, and None
        turns the limit off. ``mint_refresh_tokens`` controls whether ``/oauth/locationToken``
        also returns a refresh token, as newer platform versions do.
        """
        super().__init__(host, port, _CrmRequestHandler)
        self.client_id = client_id
        self.client_secret = client_secret
        self.app_id = app_id if app_id is not None else client_id.split("-")[0]
        self.rate_limit = rate_limit
        self.token_lifetime = token_lifetime
        self.mint_refresh_tokens = mint_refresh_tokens

        self.companies: dict[str, str] = {}
        self.locations: dict[str, Location] = {}
        # Locations listed twice in a row, as offset pagination does when the list shifts between pages.
        self.repeated_in_listings: set[str] = set()
        self.requests: list[RecordedRequest] = []
        self.refresh_successes = 0
        self._webhook_keys: dict[str, Any] = {}

        self._lock = threading.Lock()
        self._codes: dict[str, _PendingCode] = {}
        self._access_tokens: dict[str, _AccessToken] = {}
        self._refresh_tokens: dict[str, Grant] = {}
        self._faults: dict[str, deque[_Fault]] = {}
        self._request_windows: dict[str, deque[float]] = {}

        self._public_routes: dict[tuple[str, str], Callable[[RecordedRequest], Response]] = {
            ("GET", "/oauth/chooselocation"): self._show_chooser,
            ("POST", "/oauth/chooselocation"): self._submit_chooser,
            ("POST", "/oauth/token"): self._exchange_token,
        }
        self._api_routes: dict[tuple[str, str], Callable[..., Response]] = {
            ("POST", "/oauth/locationToken"): self._mint_location_token,
            ("GET", "/oauth/installedLocations"): self._list_installed_locations,
            ("GET", "/locations/search"): self._search_locations,
        }

    # Account state

    def add_company(self, company_id: str, name: str) -> None:
        """Add an agency, or rename it if it exists."""
        with self._lock:
            self.companies[company_id] = name

    def add_location(
        self,
        location_id: str,
        name: str,
        company_id: str,
        installed: bool = True,
        active: bool = True,
        *,
        address: str = "",
    ) -> Location:
        """Add a sub-account to an existing agency and return it."""
        with self._lock:
            if company_id not in self.companies:
                raise KeyError(f"Unknown company {company_id!r}; call add_company() first")
            location = Location(location_id, name, company_id, installed, active, address)
            self.locations[location_id] = location
            return location

    def add_bulk_locations(
        self,
        company_id: str,
        *,
        installed: int = 0,
        not_installed: int = 0,
        paused: int = 0,
        transferred: int = 0,
        outside: int = 0,
        other_company_id: str = "comp-elsewhere",
        prefix: str = "bulk",
    ) -> dict[str, list[str]]:
        """Add many sub-accounts at once and return their ids by kind.

        ``paused`` ones have the app installed but are inactive. ``transferred`` ones are
        created in ``company_id`` and then moved to ``other_company_id``, and ``outside`` ones
        belong to ``other_company_id`` from the start. That company is added when missing.
        Ids are ``<prefix>-<kind>-<n>`` and names ``<Prefix> <kind> <n>``.
        """
        if other_company_id not in self.companies:
            self.add_company(other_company_id, "Elsewhere Agency")

        kinds = (("installed", installed), ("not-installed", not_installed), ("paused", paused),
                 ("transferred", transferred), ("outside", outside))
        ids: dict[str, list[str]] = {}
        for kind, count in kinds:
            ids[kind] = []
            for number in range(1, count + 1):
                location_id = f"{prefix}-{kind}-{number:04d}"
                name = f"{prefix.capitalize()} {kind} {number:04d}"
                owner = other_company_id if kind == "outside" else company_id
                self.add_location(location_id, name, owner, installed=kind != "not-installed", active=kind != "paused")
                if kind == "transferred":
                    self.transfer_location(location_id, other_company_id)
                ids[kind].append(location_id)
        return ids

    def pause_location(self, location_id: str) -> None:
        """Mark a sub-account inactive. Its tokens are kept, as the platform keeps them."""
        with self._lock:
            self._get_location_locked(location_id).active = False

    def resume_location(self, location_id: str) -> None:
        """Mark a paused sub-account active again."""
        with self._lock:
            self._get_location_locked(location_id).active = True

    def uninstall_location(self, location_id: str) -> None:
        """Uninstall the app from a sub-account and revoke every token issued for it."""
        with self._lock:
            self._get_location_locked(location_id).installed = False
            self._revoke_locked(lambda grant: grant.location_id == location_id)

    def transfer_location(self, location_id: str, new_company_id: str) -> None:
        """Move a sub-account to another agency. Its own tokens keep working."""
        with self._lock:
            if new_company_id not in self.companies:
                raise KeyError(f"Unknown company {new_company_id!r}; call add_company() first")
            self._get_location_locked(location_id).company_id = new_company_id
            for grant in self._all_grants_locked():
                if grant.location_id == location_id:
                    grant.company_id = new_company_id

    def revoke_refresh_token(self, token: str) -> bool:
        """Revoke one refresh token and return whether it existed."""
        with self._lock:
            return self._refresh_tokens.pop(token, None) is not None

    def revoke_grants(self, location_id: str | None = None, company_id: str | None = None) -> int:
        """Revoke all codes and tokens of a sub-account or of an agency, and return their count.

        Revoking an agency also revokes the location tokens minted from its token, because
        their grants carry the agency's id.
        """
        if location_id is None and company_id is None:
            raise ValueError("revoke_grants() needs location_id or company_id")

        def matches(grant: Grant) -> bool:
            if location_id is not None and grant.location_id == location_id:
                return True
            return company_id is not None and grant.company_id == company_id

        with self._lock:
            return self._revoke_locked(matches)

    def expire_access_tokens(
        self, location_id: str | None = None, company_id: str | None = None
    ) -> int:
        """Expire access tokens now and return their count. Refresh tokens keep working.

        Without arguments, every access token expires.
        """
        def matches(grant: Grant) -> bool:
            if location_id is None and company_id is None:
                return True
            if location_id is not None and grant.location_id == location_id:
                return True
            return company_id is not None and grant.company_id == company_id

        with self._lock:
            expired = [token for token in self._access_tokens.values() if matches(token.grant)]
            for token in expired:
                token.expires_at = 0.0
            return len(expired)

    # Saved state

    def export_state(self) -> dict[str, Any]:
        """Return the agencies, sub-accounts and live tokens as JSON-ready data, for ``import_state``.

        Codes, recorded requests, faults and rate-limit windows are left out.
        """
        with self._lock:
            return {
                "companies": dict(self.companies),
                "locations": [vars(location).copy() for location in self.locations.values()],
                "access_tokens": {token: {"grant": vars(access.grant).copy(), "expires_at": access.expires_at}
                                  for token, access in self._access_tokens.items()},
                "refresh_tokens": {token: vars(grant).copy() for token, grant in self._refresh_tokens.items()},
            }

    def import_state(self, state: dict[str, Any]) -> None:
        """Replace the agencies, sub-accounts and tokens with those of ``export_state``."""
        with self._lock:
            self.companies = dict(state["companies"])
            self.locations = {row["id"]: Location(**row) for row in state["locations"]}
            self._access_tokens = {token: _AccessToken(Grant(**row["grant"]), row["expires_at"])
                                   for token, row in state["access_tokens"].items()}
            self._refresh_tokens = {token: Grant(**row) for token, row in state["refresh_tokens"].items()}

    # Recording and fault injection

    def requests_to(self, path: str) -> list[RecordedRequest]:
        """Return the recorded requests whose path, without the query, equals ``path``."""
        with self._lock:
            return [request for request in self.requests if request.path == path]

    def fail_next(
        self,
        path: str,
        *,
        status: int = 500,
        body: Any = None,
        headers: dict[str, str] | None = None,
        count: int = 1,
        delay: float = 0.0,
        after: int = 0,
    ) -> None:
        """Fail the next ``count`` requests to ``path`` with the given response.

        The body defaults to the platform's ``{"statusCode", "message"}`` error. A 429 gets
        ``Retry-After: 1`` unless ``headers`` sets it. ``delay`` is the number of seconds to wait
        before responding, which lets a client's timeout fire first. ``after`` lets that many
        requests to ``path`` through first, so that a fault strikes in the middle of a long job.
        """
        if count < 1:
            raise ValueError(f"count must be at least 1, got {count}")

        if body is None:
            body = {"statusCode": status, "message": "Internal server error"}
        fault_headers = {"Retry-After": "1"} if status == 429 else {}
        fault_headers.update(headers or {})

        with self._lock:
            fault = _Fault(status, body, fault_headers, count, delay, after)
            self._faults.setdefault(path, deque()).append(fault)

    # Webhooks

    @property
    def webhook_public_key_pem(self) -> str:
        """PEM of the Ed25519 key that verifies ``X-GHL-Signature``; the pair is made on first use."""
        return _public_pem(self._webhook_key("ed25519"))

    @property
    def webhook_rsa_public_key_pem(self) -> str:
        """PEM of the RSA key that verifies the legacy ``x-wh-signature``; the pair is made on first use."""
        return _public_pem(self._webhook_key("rsa"))

    def webhook_event(self, event_type: str, **fields: Any) -> dict[str, Any]:
        """Build a marketplace webhook payload such as ``INSTALL`` or ``UNINSTALL``.

        ``appId``, ``timestamp`` (ISO 8601 in UTC, from ``time.time()``) and a random
        ``webhookId`` are filled in; ``fields`` (``companyId``, ``locationId``, ...) override them.
        """
        now = time.time()
        timestamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(now)) + f".{int(now * 1000) % 1000:03d}Z"
        payload = {"type": event_type, "appId": self.app_id, "timestamp": timestamp,
                   "webhookId": secrets.token_hex(12)}
        payload.update(fields)
        return payload

    def sign_webhook(self, body: bytes, scheme: str = "ed25519") -> dict[str, str]:
        """Return the signature header of ``body``: ``X-GHL-Signature`` (Ed25519) or, with ``scheme="rsa"``,
        the legacy ``x-wh-signature`` (RSA-SHA256 with PKCS#1 v1.5). Both are base64."""
        key = self._webhook_key(scheme)
        if scheme == "rsa":
            return {"x-wh-signature": base64.b64encode(key.sign(body, padding.PKCS1v15(), hashes.SHA256())).decode()}
        return {"X-GHL-Signature": base64.b64encode(key.sign(body)).decode()}

    def send_webhook(
        self,
        url: str,
        payload: dict[str, Any],
        *,
        scheme: str | None = "ed25519",
        headers: dict[str, str] | None = None,
    ) -> tuple[int, Any]:
        """POST a webhook to ``url`` as the platform does, signed with ``scheme`` (None sends it unsigned).

        Returns the HTTP status and the decoded JSON response (the raw text when it is not JSON).
        """
        body = json.dumps(payload).encode()
        request_headers = {"Content-Type": "application/json"}
        if scheme is not None:
            request_headers.update(self.sign_webhook(body, scheme))
        request_headers.update(headers or {})

        request = urllib.request.Request(url, data=body, headers=request_headers, method="POST")
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                status, raw = response.status, response.read()
        except urllib.error.HTTPError as error:
            status, raw = error.code, error.read()
        try:
            return status, json.loads(raw)
        except ValueError:
            return status, raw.decode("utf-8", "replace")

    def _webhook_key(self, scheme: str):
        with self._lock:
            if scheme not in self._webhook_keys:
                if scheme == "rsa":
                    self._webhook_keys[scheme] = rsa.generate_private_key(public_exponent=65537, key_size=2048)
                elif scheme == "ed25519":
                    self._webhook_keys[scheme] = ed25519.Ed25519PrivateKey.generate()
                else:
                    raise ValueError(f"scheme must be 'ed25519' or 'rsa', got {scheme!r}")
            return self._webhook_keys[scheme]

    # Install page, without HTTP

    def authorize(self, authorize_url: str, choice: str, *, action: str = "authorize") -> str:
        """Complete the install page as a user would and return the callback URL.

        ``choice`` is ``"company:<id>"`` or ``"location:<id>"``, and ``action="cancel"`` denies
        the request. Raises AuthorizationError when the URL or the choice is invalid.
        """
        params = dict(parse_qsl(urlsplit(authorize_url).query, keep_blank_values=True))
        return self._complete_authorization(params, choice, action)

    # Request handling

    def handle(self, request: RecordedRequest) -> Response:
        """Record a request and produce its response. Called from the server's threads."""
        with self._lock:
            self.requests.append(request)
        logger.debug("CRM simulator received %s %s", request.method, request.path)

        fault = self._take_fault(request.path)
        if fault is not None:
            return fault

        response = self._route(request)
        if response.status >= 400:
            logger.info(
                "CRM simulator returned HTTP %d for %s %s: %s",
                response.status,
                request.method,
                request.path,
                response.body[:200].decode("utf-8", "replace"),
            )
        return response

    def _route(self, request: RecordedRequest) -> Response:
        route = self._public_routes.get((request.method, request.path))
        if route is not None:
            return route(request)

        api_route, path_args = self._find_api_route(request)
        if api_route is None:
            return _api_error(404, f"Cannot {request.method} {request.path}")
        return self._serve_api(request, api_route, path_args)

    def _find_api_route(
        self, request: RecordedRequest
    ) -> tuple[Callable[..., Response] | None, tuple[str, ...]]:
        route = self._api_routes.get((request.method, request.path))
        if route is not None:
            return route, ()

        match = _LOCATION_PATH.match(request.path)
        if request.method == "GET" and match:
            return self._get_location, match.groups()
        return None, ()

    def _take_fault(self, path: str) -> Response | None:
        with self._lock:
            fault = take_due_fault(self._faults.get(path))
        if fault is None:
            return None

        logger.info("CRM simulator injects HTTP %d for %s", fault.status, path)
        response = _json_response(fault.status, fault.body, fault.headers)
        response.delay = fault.delay
        return response

    def _serve_api(
        self, request: RecordedRequest, route: Callable[..., Response], path_args: tuple[str, ...]
    ) -> Response:
        """Apply the rate limit, version check and token check shared by all API endpoints."""
        token = _bearer_token(request)
        grant = self._grant_for_access_token(token) if token else None

        limit_headers, retry_after = self._count_request(self._rate_limit_key(request, grant))
        if retry_after is not None:
            response = _api_error(429, MESSAGE_RATE_LIMITED)
            response.headers.update(limit_headers)
            response.headers["Retry-After"] = str(retry_after)
            return response

        if request.headers.get("version") != API_VERSION:
            response = _api_error(401, MESSAGE_VERSION_MISSING)
        elif grant is None:
            response = _api_error(401, MESSAGE_INVALID_TOKEN)
        else:
            response = route(request, grant, *path_args)

        response.headers.update(limit_headers)
        return response

    def _grant_for_access_token(self, token: str) -> Grant | None:
        with self._lock:
            access = self._access_tokens.get(token)
            if access is None or access.expires_at <= time.time():
                return None
            return access.grant

    # Rate limit

    def _rate_limit_key(self, request: RecordedRequest, grant: Grant | None) -> str | None:
        if grant is not None and grant.location_id is not None:
            return f"location:{grant.location_id}"
        if grant is not None:
            return f"company:{grant.company_id}"

        company_id = _body_fields(request).get("companyId") or request.query.get("companyId")
        return f"company:{company_id}" if company_id else None

    def _count_request(self, key: str | None) -> tuple[dict[str, str], int | None]:
        """Count a request in the sliding window of ``key``.

        Returns the rate-limit headers and, when the request is over the limit, the number of
        seconds until the oldest counted request leaves the window. A rejected request is not
        counted. Without a configured limit or a key, no headers are sent.
        """
        if self.rate_limit is None or key is None:
            return {}, None

        max_requests, interval = self.rate_limit
        now = time.monotonic()
        retry_after = None
        with self._lock:
            window = self._request_windows.setdefault(key, deque())
            while window and window[0] <= now - interval:
                window.popleft()

            if len(window) >= max_requests:
                retry_after = max(1, math.ceil(window[0] + interval - now))
            else:
                window.append(now)
            remaining = max_requests - len(window)

        headers = {
            "X-RateLimit-Remaining": str(remaining),
            "X-RateLimit-Max": str(max_requests),
            "X-RateLimit-Interval-Milliseconds": str(int(interval * 1000)),
        }
        return headers, retry_after

    # Install page

    def _show_chooser(self, request: RecordedRequest) -> Response:
        params = request.query
        try:
            self._validate_authorize_params(params)
            choices = self._choices_for_login(params.get("login"))
        except AuthorizationError as error:
            return _error_page(400, str(error))
        return self._render_chooser(params, choices)

    def _submit_chooser(self, request: RecordedRequest) -> Response:
        form = request.form
        try:
            callback_url = self._complete_authorization(
                form, form.get("choice", ""), form.get("action", "")
            )
        except AuthorizationError as error:
            return _error_page(400, str(error))
        return _redirect(callback_url)

    def _validate_authorize_params(self, params: dict[str, str]) -> None:
        client_id = params.get("client_id", "")
        if not client_id:
            raise AuthorizationError("The request is missing client_id.")
        if client_id != self.client_id:
            raise AuthorizationError(f"No app has the client_id {client_id!r}.")

        if params.get("response_type") != "code":
            raise AuthorizationError("response_type must be 'code'.")

        redirect_uri = urlsplit(params.get("redirect_uri", ""))
        if redirect_uri.scheme not in ("http", "https") or not redirect_uri.netloc:
            raise AuthorizationError("redirect_uri must be an absolute http or https URL.")

    def _choices_for_login(self, login: str | None) -> list[tuple[str, str]]:
        """Return (value, label) pairs of the accounts that the logged-in user may pick.

        Without ``login`` every account is offered. ``company:<id>`` offers that agency and its
        sub-accounts, and ``location:<id>`` offers only that sub-account, as a sub-account user
        sees only their own.
        """
        kind, _, target_id = (login or "").partition(":")
        with self._lock:
            if login and kind == "company" and target_id in self.companies:
                companies = {target_id: self.companies[target_id]}
                locations = [loc for loc in self.locations.values() if loc.company_id == target_id]
            elif login and kind == "location" and target_id in self.locations:
                companies = {}
                locations = [self.locations[target_id]]
            elif login:
                raise AuthorizationError(
                    f"Unknown login {login!r}; use company:<id> or location:<id>."
                )
            else:
                companies = dict(self.companies)
                locations = list(self.locations.values())

        choices = [(f"company:{cid}", f"Agency: {name}") for cid, name in companies.items()]
        choices += [(f"location:{loc.id}", f"Sub-account: {loc.name}") for loc in locations]
        return choices

    def _render_chooser(self, params: dict[str, str], choices: list[tuple[str, str]]) -> Response:
        radios = [
            f'<label><input type="radio" name="choice" value="{html.escape(value)}" required> '
            f"{html.escape(label)}</label><br>"
            for value, label in choices
        ]
        if not radios:
            radios = ["<p>No account is available for this login.</p>"]

        hidden = [
            f'<input type="hidden" name="{html.escape(name)}" value="{html.escape(value)}">'
            for name, value in params.items()
            if name not in ("choice", "action")
        ]
        scope = params.get("scope", "")
        body = "\n".join([
            "<h1>Connect the app to your account</h1>",
            self._render_login_form(params),
            f"<p>Requested scopes: {html.escape(scope) or '(none)'}</p>",
            '<form method="post" action="/oauth/chooselocation">',
            "<fieldset><legend>Choose an account</legend>",
            *radios,
            "</fieldset>",
            *hidden,
            '<button type="submit" name="action" value="authorize">Authorize</button>',
            '<button type="submit" name="action" value="cancel" formnovalidate>Cancel</button>',
            "</form>",
        ])
        return _html_response(200, "Choose an account", body)

    def _render_login_form(self, params: dict[str, str]) -> str:
        """Return a form that reloads the page logged in as the agency or as one sub-account.

        The platform shows what the logged-in user may authorise. Here ``login`` in the query is
        that user: an agency user sees the agency and its sub-accounts, a sub-account user only
        that sub-account.
        """
        login = params.get("login", "")
        with self._lock:
            logins = [(f"company:{cid}", f"Agency user of {name}") for cid, name in self.companies.items()]
            logins += [(f"location:{loc.id}", f"Sub-account user of {loc.name}") for loc in self.locations.values()]
        current = dict(logins).get(login, "any user (every account is offered)")

        options = [
            f'<option value="{html.escape(value)}"{" selected" if value == login else ""}>{html.escape(label)}</option>'
            for value, label in logins
        ]
        hidden = [
            f'<input type="hidden" name="{html.escape(name)}" value="{html.escape(value)}">'
            for name, value in params.items()
            if name != "login"
        ]
        return "\n".join([
            f'<p id="logged-in">Logged in as: {html.escape(current)}</p>',
            '<form method="get" action="/oauth/chooselocation">',
            *hidden,
            '<label>Log in as <select name="login">',
            *options,
            "</select></label>",
            '<button type="submit">Log in</button>',
            "</form>",
        ])

    def _complete_authorization(self, params: dict[str, str], choice: str, action: str) -> str:
        """Validate an install decision and return the callback URL with a code or an error."""
        self._validate_authorize_params(params)

        callback_params = {}
        if action == "cancel":
            callback_params["error"] = "access_denied"
        elif action == "authorize":
            allowed = {value for value, _ in self._choices_for_login(params.get("login"))}
            if choice not in allowed:
                raise AuthorizationError(f"Choose one of the offered accounts; got {choice!r}.")
            callback_params["code"] = self._issue_code(choice, params)
        else:
            raise AuthorizationError(f"action must be 'authorize' or 'cancel', got {action!r}.")

        if params.get("state"):
            callback_params["state"] = params["state"]
        return _append_query(params["redirect_uri"], callback_params)

    def _issue_code(self, choice: str, params: dict[str, str]) -> str:
        """Create a single-use code for the chosen account.

        Choosing a sub-account installs the app there, as an install through the page does.
        """
        kind, _, target_id = choice.partition(":")
        scope = params.get("scope", "")
        with self._lock:
            if kind == "company":
                grant = Grant(USER_TYPE_COMPANY, target_id, None, scope, f"sim-user-{target_id}")
            else:
                location = self._get_location_locked(target_id)
                location.installed = True
                grant = Grant(
                    USER_TYPE_LOCATION, location.company_id, location.id, scope,
                    f"sim-user-{location.company_id}",
                )

            code = secrets.token_urlsafe(24)
            self._codes[code] = _PendingCode(grant, params["redirect_uri"])

        logger.info("CRM simulator issued a code for %s", choice)
        return code

    # Token endpoint

    def _exchange_token(self, request: RecordedRequest) -> Response:
        fields = _body_fields(request)
        if not self._client_matches(fields):
            return _json_response(
                401, {"error": "invalid_client", "error_description": "Invalid client credentials"}
            )

        grant_type = fields.get("grant_type", "")
        if grant_type == "authorization_code":
            return self._redeem_code(fields)
        if grant_type == "refresh_token":
            return self._refresh(fields)
        return _json_response(400, {
            "error": "unsupported_grant_type",
            "error_description": (
                f"grant_type must be authorization_code or refresh_token, got {grant_type!r}"
            ),
        })

    def _client_matches(self, fields: dict[str, str]) -> bool:
        id_ok = hmac.compare_digest(fields.get("client_id", "").encode(), self.client_id.encode())
        secret = fields.get("client_secret", "").encode()
        return id_ok and hmac.compare_digest(secret, self.client_secret.encode())

    def _redeem_code(self, fields: dict[str, str]) -> Response:
        code = fields.get("code", "")
        redirect_uri = fields.get("redirect_uri")
        with self._lock:
            pending = self._codes.get(code)
            if pending is None:
                return _api_error(401, MESSAGE_CODE_NOT_FOUND)

            # NOTE: RFC 6749 requires a matching redirect_uri. The platform's error body for a
            # mismatch is not documented, so this one is modelled on invalid_grant.
            if redirect_uri is not None and redirect_uri != pending.redirect_uri:
                return _json_response(400, {
                    "error": "invalid_grant",
                    "error_description": "redirect_uri does not match the authorization request",
                })

            del self._codes[code]
            payload = self._issue_tokens_locked(pending.grant)
        return _json_response(200, payload)

    def _refresh(self, fields: dict[str, str]) -> Response:
        """Rotate a refresh token and issue a new access token.

        The check and the rotation run under one lock, so of two concurrent refreshes with the
        same token exactly one succeeds.
        """
        token = fields.get("refresh_token", "")
        with self._lock:
            grant = self._refresh_tokens.get(token)
            if grant is None:
                return _json_response(400, {
                    "error": "invalid_grant",
                    "error_description": "Invalid grant: refresh token is invalid",
                })

            # A paused sub-account keeps its refresh token, which works again after resume.
            location = self.locations.get(grant.location_id or "")
            if location is not None and not location.active:
                return _api_error(400, MESSAGE_LOCATION_INACTIVE)

            del self._refresh_tokens[token]
            payload = self._issue_tokens_locked(grant)
            self.refresh_successes += 1
        return _json_response(200, payload)

    def _issue_tokens_locked(self, grant: Grant) -> dict[str, Any]:
        payload = {
            "access_token": self._new_access_token_locked(grant),
            "token_type": "Bearer",
            "expires_in": self.token_lifetime,
            "refresh_token": self._new_refresh_token_locked(grant),
            "scope": grant.scope,
            "userType": grant.user_type,
            "companyId": grant.company_id,
            "userId": grant.user_id,
            "planId": SIMULATED_PLAN_ID,
            "isBulkInstallation": False,
        }
        if grant.user_type == USER_TYPE_LOCATION:
            payload["locationId"] = grant.location_id
        else:
            payload["approvedLocations"] = [
                location.id
                for location in self.locations.values()
                if location.company_id == grant.company_id and location.installed
            ]
        return payload

    def _new_access_token_locked(self, grant: Grant) -> str:
        token = secrets.token_urlsafe(32)
        self._access_tokens[token] = _AccessToken(grant, time.time() + self.token_lifetime)
        return token

    def _new_refresh_token_locked(self, grant: Grant) -> str:
        token = secrets.token_urlsafe(32)
        self._refresh_tokens[token] = grant
        return token

    # API endpoints

    def _mint_location_token(self, request: RecordedRequest, grant: Grant) -> Response:
        if grant.user_type != USER_TYPE_COMPANY:
            return _api_error(401, MESSAGE_WRONG_AUTH_CLASS)

        fields = _body_fields(request)
        company_id = fields.get("companyId", "")
        location_id = fields.get("locationId", "")
        missing = [f"{name} should not be empty" for name, value in
                   (("companyId", company_id), ("locationId", location_id)) if not value]
        if missing:
            return _api_error(422, missing)

        with self._lock:
            location = self.locations.get(location_id)
            owned = location is not None and location.company_id == grant.company_id
            if company_id != grant.company_id or not owned:
                return _api_error(403, MESSAGE_NO_LOCATION_ACCESS)
            if not location.installed:
                return _api_error(400, MESSAGE_NOT_INSTALLED)
            if not location.active:
                return _api_error(400, MESSAGE_LOCATION_INACTIVE)

            location_grant = Grant(
                USER_TYPE_LOCATION, grant.company_id, location_id, grant.scope, grant.user_id
            )
            payload = {
                "access_token": self._new_access_token_locked(location_grant),
                "token_type": "Bearer",
                "expires_in": self.token_lifetime,
                "scope": grant.scope,
                "locationId": location_id,
                "userId": grant.user_id,
            }
            if self.mint_refresh_tokens:
                payload["refresh_token"] = self._new_refresh_token_locked(location_grant)
        return _json_response(200, payload)

    def _list_installed_locations(self, request: RecordedRequest, grant: Grant) -> Response:
        if grant.user_type != USER_TYPE_COMPANY:
            return _api_error(401, MESSAGE_WRONG_AUTH_CLASS)

        query = request.query
        skip, limit, errors = _parse_page(query, DEFAULT_INSTALLED_LIMIT)
        missing = [name for name in ("companyId", "appId") if not query.get(name)]
        errors = [f"{name} should not be empty" for name in missing] + errors
        if errors:
            return _api_error(422, errors)
        if query["companyId"] != grant.company_id:
            return _api_error(403, MESSAGE_NO_COMPANY_ACCESS)

        # Any appId is accepted, but installs are reported only for this app's own id.
        same_app = query["appId"] == self.app_id
        name_filter = query.get("query", "").lower()
        installed_filter = query.get("isInstalled", "").lower()
        with self._lock:
            rows = [
                {"_id": loc.id, "name": loc.name, "address": loc.address,
                 "isInstalled": same_app and loc.installed}
                for loc in self.locations.values()
                if loc.company_id == grant.company_id and name_filter in loc.name.lower()
            ]

        if installed_filter in ("true", "false"):
            rows = [row for row in rows if row["isInstalled"] == (installed_filter == "true")]
        rows = self._with_repeats(rows, "_id")
        return _json_response(200, {"locations": rows[skip:skip + limit], "count": len(rows)})

    def _search_locations(self, request: RecordedRequest, grant: Grant) -> Response:
        if grant.user_type != USER_TYPE_COMPANY:
            return _api_error(401, MESSAGE_WRONG_AUTH_CLASS)

        skip, limit, errors = _parse_page(request.query, DEFAULT_SEARCH_LIMIT)
        if errors:
            return _api_error(422, errors)
        company_id = request.query.get("companyId") or grant.company_id
        if company_id != grant.company_id:
            return _api_error(403, MESSAGE_NO_COMPANY_ACCESS)

        with self._lock:
            rows = [_location_json(loc) for loc in self.locations.values()
                    if loc.company_id == company_id]
        rows = self._with_repeats(rows, "id")
        return _json_response(200, {"locations": rows[skip:skip + limit]})

    def _with_repeats(self, rows: list[dict[str, Any]], id_field: str) -> list[dict[str, Any]]:
        with self._lock:
            repeated = set(self.repeated_in_listings)
        result = []
        for row in rows:
            result.append(row)
            if row[id_field] in repeated:
                result.append(dict(row))
        return result

    def _get_location(self, request: RecordedRequest, grant: Grant, location_id: str) -> Response:
        if grant.user_type != USER_TYPE_LOCATION:
            return _api_error(401, MESSAGE_WRONG_AUTH_CLASS)
        if grant.location_id != location_id:
            return _api_error(403, MESSAGE_NO_LOCATION_ACCESS)

        with self._lock:
            location = self.locations.get(location_id)
            if location is None:
                return _api_error(403, MESSAGE_NO_LOCATION_ACCESS)
            if not location.active:
                return _api_error(400, MESSAGE_LOCATION_INACTIVE)
            payload = {"location": _location_json(location)}
        return _json_response(200, payload)

    # Locked helpers

    def _get_location_locked(self, location_id: str) -> Location:
        location = self.locations.get(location_id)
        if location is None:
            raise KeyError(f"Unknown location {location_id!r}; call add_location() first")
        return location

    def _all_grants_locked(self) -> list[Grant]:
        grants = [access.grant for access in self._access_tokens.values()]
        grants += self._refresh_tokens.values()
        grants += [pending.grant for pending in self._codes.values()]
        return grants

    def _revoke_locked(self, matches: Callable[[Grant], bool]) -> int:
        revoked = 0
        for store in (self._access_tokens, self._codes):
            for key in [key for key, item in store.items() if matches(item.grant)]:
                del store[key]
                revoked += 1
        for key in [key for key, grant in self._refresh_tokens.items() if matches(grant)]:
            del self._refresh_tokens[key]
            revoked += 1
        logger.info("CRM simulator revoked %d codes and tokens", revoked)
        return revoked


class _CrmRequestHandler(SimulatorRequestHandler):
    label = "CRM simulator"

    def _dispatch(self) -> None:
        try:
            request = self._read_request()
        except ValueError as error:
            logger.warning("CRM simulator rejected a malformed request: %s", error)
            # The unread rest of the body would corrupt the next request on this connection.
            self.close_connection = True
            self.write(_api_error(400, str(error)))
            return

        response = self.server.simulator.handle(request)
        if response.delay > 0:
            time.sleep(response.delay)
        self.write(response)

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _dispatch

    def _read_request(self) -> RecordedRequest:
        body = self.read_body()

        parts = urlsplit(self.path)
        content_type = self.headers.get("Content-Type", "").split(";")[0].strip().lower()
        form: dict[str, str] = {}
        json_body = None
        if content_type == "application/x-www-form-urlencoded":
            form = dict(parse_qsl(body.decode("utf-8", "replace"), keep_blank_values=True))
        elif content_type == "application/json" and body:
            try:
                json_body = json.loads(body)
            except ValueError as error:
                raise ValueError(f"Request body is not valid JSON: {error}") from error

        return RecordedRequest(
            method=self.command,
            path=parts.path,
            query=dict(parse_qsl(parts.query, keep_blank_values=True)),
            headers={name.lower(): value for name, value in self.headers.items()},
            form=form,
            json=json_body,
            time=time.time(),
        )
