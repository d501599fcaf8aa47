"""The OAuth callback: validate the state, exchange the code, store tokens, set the status."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from sqlmodel import Session

from bot import render
from bot.accounts import mark_connected, mark_red, set_agency_status
from bot.advice import incognito_tip
from bot.connections import ConnectionService, hash_secret
from bot.crm import CrmError, CrmReason, TokenGrant
from bot.errors import StateError
from bot.sync import start_agency_sync
from storage import queries
from storage.db import session_scope, utcnow
from storage.models import COMPANY, CONNECTED, METHOD_AGENCY, METHOD_DIRECT, PAUSED, Account, OAuthState

logger = logging.getLogger(__name__)

MAX_PARAM_LENGTH = 2048


@dataclass(frozen=True)
class CallbackPage:
    """The page shown in the browser; all text is plain and escaped when rendered."""

    title: str
    message: str
    next_step: str | None = None
    ok: bool = False
    status: int = 200


class CallbackHandler:
    def __init__(self, service: ConnectionService) -> None:
        self.service = service
        self.settings = service.settings

    def handle(self, params: dict[str, str]) -> CallbackPage:
        state_value = (params.get("state") or "")[:MAX_PARAM_LENGTH]
        code = (params.get("code") or "")[:MAX_PARAM_LENGTH]
        error = (params.get("error") or "")[:100]

        try:
            state = self._load_state(state_value)
        except StateError as failure:
            return self._state_failure_page(failure)

        if error:
            return self._authorization_denied(state, error)
        if not code:
            return CallbackPage("Link not completed", "The CRM sent no authorization code.",
                                "Open the link from Slack again, or ask for a fresh one with /crm-connect.", status=400)

        code_hash = hash_secret(code)
        with session_scope(self.service.engine) as session:
            claimed = queries.claim_state(session=session, state_id=state.id, code_hash=code_hash, now=utcnow())
        if not claimed:
            return self._reused_state(state, code_hash)

        try:
            grant = self.service.crm.exchange_code(code, user_type=None if state.method == METHOD_DIRECT else COMPANY)
        except CrmError as failure:
            return self._exchange_failed(state, failure)

        return self._store(state, grant)

    # State

    def _load_state(self, value: str) -> OAuthState:
        if not value:
            raise StateError("missing", "The link carries no state.")
        with session_scope(self.service.engine) as session:
            state = queries.get_state_by_hash(session=session, state_hash=hash_secret(value))
        if state is None:
            raise StateError("unknown", "This link is not one the bot made.")
        if state.used_at is None and state.expires_at <= utcnow():
            raise StateError("expired", "This link expired: links work for 30 minutes.")
        return state

    def _state_failure_page(self, failure: StateError) -> CallbackPage:
        logger.info("OAuth callback rejected: %s state", failure.kind)
        return CallbackPage("Link not valid", str(failure),
                            "Ask for a fresh link in Slack with /crm-connect <account>, and open it within 30 minutes.",
                            status=400)

    def _reused_state(self, state: OAuthState, code_hash: str) -> CallbackPage:
        # A reloaded callback page repeats the same state and code.
        with session_scope(self.service.engine) as session:
            current = queries.get_state_by_hash(session=session, state_hash=state.state_hash)
            account = self._result_account(session, current)
        if current.code_hash == code_hash and current.outcome == "connected":
            name = account.name if account else "The agency"
            return CallbackPage("Already connected", f"{name} is already connected.", ok=True)
        logger.info("OAuth callback rejected: reused state %s", state.id)
        return CallbackPage("Link already used", "This link was already used. Each link works once.",
                            "Ask for a fresh link in Slack with /crm-connect <account>.", status=400)

    def _result_account(self, session: Session, state: OAuthState) -> Account | None:
        account_id = state.result_account_id or state.account_id
        return queries.get_account(session=session, account_id=account_id) if account_id else None

    # Failures

    def _authorization_denied(self, state: OAuthState, error: str) -> CallbackPage:
        with session_scope(self.service.engine) as session:
            first = queries.claim_state(session=session, state_id=state.id, code_hash="denied", now=utcnow())
            account = self._result_account(session, state)
            if first:
                self._set_outcome(session, state.id, "denied")
            if first and account is not None:
                # A cancel is the user's choice, so it does not count as a failed attempt.
                queries.add_event(session=session, kind="connect_cancelled", account_id=account.id, reason=error[:32],
                                  detail="Authorization was cancelled in the CRM")
        page = CallbackPage(
            "Connection cancelled",
            "The CRM reports that the authorization was cancelled (access_denied)." if error == "access_denied"
            else f"The CRM returned the error {error!r}.",
            "Ask for a fresh link with /crm-connect and choose Authorize. " + incognito_tip(self.settings.crm_app_url),
            status=400,
        )
        # A reloaded page repeats the same error; only the first one is news.
        if first:
            self._dm_result(state, page)
        return page

    def _exchange_failed(self, state: OAuthState, failure: CrmError) -> CallbackPage:
        with session_scope(self.service.engine) as session:
            account = self._result_account(session, state)
            if failure.is_transient:
                # Nothing was consumed for sure, so the same link may be retried.
                queries.release_state(session=session, state_id=state.id)
            else:
                self._set_outcome(session, state.id, "failed")
            if account is not None:
                queries.add_event(session=session, kind="connect_failed", account_id=account.id, reason=failure.reason.value,
                                  detail=failure.crm_message)
            already = account is not None and account.status == CONNECTED

        logger.warning("Code exchange for state %s failed: %s", state.id, failure.reason)
        if failure.reason is CrmReason.CODE_NOT_FOUND and already:
            return CallbackPage("Already connected", f"{account.name} is already connected.", ok=True)
        if failure.is_transient:
            return CallbackPage("The CRM did not answer", "The CRM timed out or returned a server error.",
                                "Reload this page in a minute to try again. If it keeps failing, ask for a fresh link with /crm-connect.",
                                status=502)

        page = CallbackPage("Connection failed", render.exchange_failure_text(failure.reason),
                            "Ask for a fresh link with /crm-connect <account>. " + incognito_tip(self.settings.crm_app_url), status=400)
        self._dm_result(state, page)
        return page

    # Success

    def _store(self, state: OAuthState, grant: TokenGrant) -> CallbackPage:
        if grant.user_type == COMPANY:
            page = self._store_agency(state, grant)
            self._dm_result(state, page)
            self._start_sync(state, grant)
            return page
        page = self._store_location(state, grant)
        self._dm_result(state, page)
        return page

    def _start_sync(self, state: OAuthState, grant: TokenGrant) -> None:
        # Connect Accounts runs in a background thread, so the browser gets its page at once.
        with session_scope(self.service.engine) as session:
            agency = queries.get_agency_by_company_id(session=session, company_id=grant.company_id)
        start_agency_sync(self.service, [agency.id], requester_user_id=state.requester_user_id)

    def _store_agency(self, state: OAuthState, grant: TokenGrant) -> CallbackPage:
        with session_scope(self.service.engine) as session:
            agency = queries.get_or_create_agency(session=session, company_id=grant.company_id)
            self.service.tokens.save_grant(session, grant, method=METHOD_AGENCY, agency_id=agency.id)
            set_agency_status(session, agency, connected=True)
            self._set_outcome(session, state.id, "connected")
            target = self._result_account(session, state)
        logger.info("Agency %s connected", agency.id)

        if state.method == METHOD_AGENCY or target is None:
            return CallbackPage("Agency connected", f"The agency {agency.name} is connected. Its accounts are syncing now, "
                                f"and the progress is in your Slack DMs.", ok=True)
        return CallbackPage(
            "Agency connected, account still red",
            f"The login authorized the agency {agency.name}, not the sub-account {target.name}. "
            f"The agency is now connected and its accounts are syncing; until then {target.name} shows No Active CRM Connection.",
            f"If {target.name} stays red after the sync, ask for a Direct Connection link and log in to that sub-account directly.",
            ok=True,
        )

    def _store_location(self, state: OAuthState, grant: TokenGrant) -> CallbackPage:
        location_name, paused = self._read_location(grant)
        with session_scope(self.service.engine) as session:
            target = self._result_account(session, state)
            picked = queries.get_account_by_location_id(session=session, location_id=grant.location_id)

            if picked is None and target is not None and target.location_id is None:
                # An external account created by name learns its location id now.
                target.location_id = grant.location_id
                picked = target
            elif picked is None:
                picked = queries.create_account(session=session, name=location_name or grant.location_id,
                                                location_id=grant.location_id, owner_user_id=state.recipient_user_id)

            if grant.company_id:
                # The token's company is the owner now, even when the account moved out of the agency.
                if picked.company_id and picked.company_id != grant.company_id:
                    logger.info("Account %s now belongs to company %s", picked.id, grant.company_id)
                picked.company_id = grant.company_id
                agency = queries.get_agency_by_company_id(session=session, company_id=grant.company_id)
                picked.agency_id = agency.id if agency is not None else None
            if picked.owner_user_id is None:
                picked.owner_user_id = state.recipient_user_id

            self.service.tokens.save_grant(session, grant, method=METHOD_DIRECT, account_id=picked.id)
            if paused:
                change = mark_red(session, picked, reason=PAUSED, error="Location is not active",
                                  actor_user_id=state.recipient_user_id)
            else:
                change = mark_connected(session, picked, method=METHOD_DIRECT, actor_user_id=state.recipient_user_id,
                                        detail="Direct Connection through the OAuth link")
            self._set_outcome(session, state.id, "connected", result_account_id=picked.id)
        if picked.owner_user_id not in (state.recipient_user_id, state.requester_user_id):
            self.service.notify_change(picked, change.turned_green, change.turned_red)

        if paused:
            return CallbackPage(
                "Authorized, but the sub-account is paused",
                f"{picked.name} authorized the app, but the CRM reports it as paused (Location is not active), "
                f"so it still shows No Active CRM Connection. The bot keeps the tokens.",
                f"Reactivate {picked.name} in the CRM; the bot retries and turns it green by itself.",
            )

        if target is not None and target.id != picked.id:
            return CallbackPage(
                "A different account was connected",
                f"The login picked {picked.name} ({picked.location_id}), not {target.name}. {picked.name} is now connected; "
                f"{target.name} still shows No Active CRM Connection.",
                f"To connect {target.name}, ask for a fresh link and pick {target.name} on the CRM page. "
                + incognito_tip(self.settings.crm_app_url),
                ok=True,
            )
        return CallbackPage("Connected", f"{picked.name} is connected.", ok=True)

    def _read_location(self, grant: TokenGrant) -> tuple[str | None, bool]:
        """Return the location's name (None when unreadable) and whether the CRM reports it as paused."""
        try:
            return self.service.crm.get_location(grant.access_token, grant.location_id).get("name"), False
        except CrmError as error:
            logger.warning("Could not read location %s with its new token: %s", grant.location_id, error.reason)
            return None, error.reason is CrmReason.LOCATION_NOT_ACTIVE

    # Helpers

    def _set_outcome(self, session: Session, state_id: int, outcome: str, *, result_account_id: int | None = None) -> None:
        state = session.get(OAuthState, state_id)
        state.outcome = outcome
        if result_account_id is not None:
            state.result_account_id = result_account_id
        session.add(state)

    def _dm_result(self, state: OAuthState, page: CallbackPage) -> None:
        text = render.callback_dm(page.title, page.message, page.next_step)
        self.service.slack.send_dm(state.recipient_user_id, text=text)
        if state.requester_user_id != state.recipient_user_id:
            # The requester did not open the link, so the DM names whose result it is.
            intro = f"Result of the link you sent to {render.mention(state.recipient_user_id)}:\n"
            self.service.slack.send_dm(state.requester_user_id, text=intro + text)
