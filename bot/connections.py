"""The connection service: links, connect through the agency, status and reset."""

from __future__ import annotations

import hashlib
import logging
import secrets
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from sqlalchemy import Engine
from sqlmodel import Session

from bot import render, sync_render
from bot.accounts import history_of, mark_connected, mark_red, record_failure
from bot.advice import Advice, advise, status_label
from bot.crm import CrmClient, CrmError, CrmReason
from bot.crypto import TokenCipher
from bot.errors import InputError
from bot.settings import Settings
from bot.slack_gateway import SlackGateway
from bot.sync import start_agency_sync
from bot.tokens import TokenStore
from storage import queries
from storage.db import session_scope, utcnow
from storage.models import (
    CONNECTED, METHOD_AGENCY, METHOD_DIRECT, NEEDS_RECONNECT, NOT_INSTALLED, NOT_OWNED, PAUSED, Account, Agency,
    Event, OAuthState,
)

logger = logging.getLogger(__name__)

MAX_MATCHES_SHOWN = 10
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

# Classified CRM reasons that turn an account red, and the reason they set.
RED_REASON_BY_CRM_REASON = {
    CrmReason.INVALID_GRANT: NEEDS_RECONNECT,
    CrmReason.INVALID_TOKEN: NEEDS_RECONNECT,
    CrmReason.NO_LOCATION_ACCESS: NOT_OWNED,
    CrmReason.NOT_INSTALLED: NOT_INSTALLED,
    CrmReason.LOCATION_NOT_ACTIVE: PAUSED,
}


def hash_secret(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()


@dataclass(frozen=True)
class Caller:
    """The Slack workspace and user behind a request."""

    team_id: str
    user_id: str


@dataclass(frozen=True)
class Link:
    url: str = field(repr=False)
    expires_at: datetime


@dataclass(frozen=True)
class ConnectReply:
    """The reply to the caller of /crm-connect."""

    text: str
    dm_sent: bool = True


@dataclass(frozen=True)
class AccountView:
    """An account with its status wording and next step, ready to render."""

    account: Account
    label: str
    advice: Advice
    agency_name: str | None = None
    events: tuple[Event, ...] = ()
    expires_at: datetime | None = None


@dataclass(frozen=True)
class AgencyView:
    """An agency with its connection and the counts of its accounts."""

    agency: Agency
    green: int
    red: int
    expires_at: datetime | None


@dataclass(frozen=True)
class Overview:
    green: int
    red: tuple[AccountView, ...]
    agencies: tuple[Agency, ...]

    @property
    def total(self) -> int:
        return self.green + len(self.red)


class ConnectionService:
    def __init__(self, *, settings: Settings, engine: Engine, cipher: TokenCipher, crm: CrmClient, slack: SlackGateway) -> None:
        self.settings = settings
        self.engine = engine
        self.crm = crm
        self.slack = slack
        self.tokens = TokenStore(engine=engine, cipher=cipher, crm=crm)

    # Finding accounts

    def find_account(self, session: Session, query: str) -> Account:
        """Find exactly one account by location id or name, or raise InputError saying why not."""
        matches = queries.find_accounts(session=session, query=query)
        if not matches:
            raise InputError(render.account_not_found(query))
        if len(matches) > 1:
            agencies = {agency.id: agency.name for agency in queries.list_agencies(session=session)}
            raise InputError(render.several_accounts(query, matches[:MAX_MATCHES_SHOWN], agencies, len(matches)))
        return matches[0]

    # Links

    def create_link(self, session: Session, *, caller: Caller, recipient_user_id: str, account_id: int | None, method: str) -> Link:
        """Store a new single-use state and return the authorize URL that carries it."""
        state = secrets.token_urlsafe(32)
        expires_at = utcnow() + timedelta(seconds=self.settings.state_ttl_seconds)
        queries.create_state(session=session, state=OAuthState(
            state_hash=hash_secret(state),
            team_id=caller.team_id,
            requester_user_id=caller.user_id,
            recipient_user_id=recipient_user_id,
            account_id=account_id,
            method=method,
            expires_at=expires_at,
        ))
        return Link(url=self.crm.build_authorize_url(state), expires_at=expires_at)

    def send_link(self, *, caller: Caller, recipient_user_id: str, account: Account | None, method: str, why: str | None = None) -> tuple[Link, bool]:
        """Create a link and DM it to the recipient. Return the link and whether the DM went out."""
        with session_scope(self.engine) as session:
            link = self.create_link(session, caller=caller, recipient_user_id=recipient_user_id,
                                    account_id=account.id if account else None, method=method)

        text, blocks = render.link_dm(account=account, method=method, link=link, requester_user_id=caller.user_id,
                                      recipient_user_id=recipient_user_id, app_url=self.settings.crm_app_url, why=why)
        sent = self.slack.send_dm(recipient_user_id, text=text, blocks=blocks) is not None

        # The history records only a link that reached someone.
        if sent and account is not None:
            with session_scope(self.engine) as session:
                queries.add_event(session=session, kind="link_sent", account_id=account.id, actor_user_id=caller.user_id,
                                  detail=f"{method} link to {recipient_user_id}")
        return link, sent

    # /crm-connect

    def connect_agency(self, *, caller: Caller, recipient_user_id: str) -> ConnectReply:
        """DM an agency-level link, or, when an agency is already connected, re-run Connect Accounts for it."""
        with session_scope(self.engine) as session:
            connected = [agency for agency in queries.list_agencies(session=session) if agency.status == CONNECTED]
        if connected:
            if not self.settings.is_admin(caller.user_id):
                return ConnectReply(sync_render.sync_not_admin_reply(), dm_sent=False)
            # The reply goes out at once; the sync reports its progress and result by DM.
            start_agency_sync(self, [agency.id for agency in connected], requester_user_id=caller.user_id)
            return ConnectReply(sync_render.sync_started_reply([agency.name for agency in connected]), dm_sent=False)

        link, sent = self.send_link(caller=caller, recipient_user_id=recipient_user_id, account=None, method=METHOD_AGENCY)
        return ConnectReply(render.link_sent_reply(None, METHOD_AGENCY, caller.user_id, recipient_user_id, link, sent), dm_sent=sent)

    def connect_account(self, *, caller: Caller, query: str, recipient_user_id: str, direct: bool) -> ConnectReply:
        """Connect an account through the agency when possible, otherwise DM a Direct Connection link."""
        with session_scope(self.engine) as session:
            matches = queries.find_accounts(session=session, query=query)
            if not matches and direct:
                account = queries.create_account(session=session, name=query, owner_user_id=recipient_user_id)
                queries.add_event(session=session, kind="created", account_id=account.id, actor_user_id=caller.user_id,
                                  detail="External account added for a Direct Connection")
                logger.info("Created external account %s", account.id)
            else:
                account = self.find_account(session, query)

        if account.status == CONNECTED and not direct:
            return ConnectReply(render.already_connected_reply(account))

        why = None
        if not direct:
            synced, why = self.try_agency_mint(account, actor_user_id=caller.user_id)
            if synced:
                return ConnectReply(render.synced_reply(account))

        link, sent = self.send_link(caller=caller, recipient_user_id=recipient_user_id, account=account, method=METHOD_DIRECT, why=why)
        return ConnectReply(render.link_sent_reply(account, METHOD_DIRECT, caller.user_id, recipient_user_id, link, sent, why=why), dm_sent=sent)

    def try_agency_mint(self, account: Account, *, actor_user_id: str | None) -> tuple[bool, str | None]:
        """Mint a location token through the account's agency. Return (synced, why not)."""
        with session_scope(self.engine) as session:
            agency = queries.get_agency(session=session, agency_id=account.agency_id) if account.agency_id else None
            if agency is None or not account.location_id:
                return False, sync_render.outside_agency_why()
            agency_connection = queries.get_connection_for_agency(session=session, agency_id=agency.id)
            if agency.status != CONNECTED or agency_connection is None:
                return False, sync_render.agency_not_connected_why(agency.name)

        try:
            grant = self._mint_through_agency(agency_connection.id, company_id=agency.company_id, location_id=account.location_id)
        except CrmError as error:
            return False, self._record_mint_failure(account.id, error, actor_user_id)

        with session_scope(self.engine) as session:
            fresh = queries.get_account(session=session, account_id=account.id)
            self.tokens.save_grant(session, grant, method=METHOD_AGENCY, account_id=fresh.id)
            change = mark_connected(session, fresh, method=METHOD_AGENCY, actor_user_id=actor_user_id, detail="Synced through the agency")
        self.notify_change(fresh, change.turned_green, change.turned_red)
        return True, None

    def _mint_through_agency(self, connection_id: int, *, company_id: str, location_id: str):
        """Mint a location token with the agency's Company token, refreshing that token when it expires soon or is rejected once."""
        agency_tokens = self.tokens.refresh(connection_id)
        try:
            return self.crm.mint_location_token(agency_tokens.access_token, company_id=company_id, location_id=location_id)
        except CrmError as error:
            if error.reason is not CrmReason.INVALID_TOKEN:
                raise
        agency_tokens = self.tokens.refresh(connection_id, seen_version=agency_tokens.version)
        return self.crm.mint_location_token(agency_tokens.access_token, company_id=company_id, location_id=location_id)

    def _record_mint_failure(self, account_id: int, error: CrmError, actor_user_id: str | None) -> str:
        with session_scope(self.engine) as session:
            account = queries.get_account(session=session, account_id=account_id)
            red_reason = RED_REASON_BY_CRM_REASON.get(error.reason)
            if red_reason in (NOT_OWNED, NOT_INSTALLED, PAUSED) and account.status != CONNECTED:
                mark_red(session, account, reason=red_reason, error=error.crm_message, actor_user_id=actor_user_id)
            # A sub-account without the app or a paused one is an expected outcome, not a failed attempt.
            kind = "mint_refused" if red_reason in (NOT_INSTALLED, PAUSED) else "connect_failed"
            record_failure(session, account, kind=kind, reason=error.reason.value, error=error.crm_message, actor_user_id=actor_user_id)
        logger.info("Agency mint for account %s failed: %s", account_id, error.reason)
        return render.mint_failure_why(error.reason)

    # /crm-status

    def overview(self) -> Overview:
        with session_scope(self.engine) as session:
            counts = queries.count_accounts_by_status(session=session)
            red = tuple(self._view(session, account) for account in queries.list_accounts(session=session, status="disconnected"))
            agencies = tuple(queries.list_agencies(session=session))
        return Overview(green=counts.get(CONNECTED, 0), red=red, agencies=agencies)

    def reset_target(self, query: str) -> tuple[Account, bool]:
        """Find the account to reset, and tell whether a reset can do anything for it.

        A reset refreshes stored tokens, or mints through a connected agency. An
        account with neither has nothing to reset and needs a link instead.
        """
        with session_scope(self.engine) as session:
            account = self.find_account(session, query)
            if queries.get_connection_for_account(session=session, account_id=account.id) is not None:
                return account, True
            agency = queries.get_agency(session=session, agency_id=account.agency_id) if account.agency_id else None
            return account, agency is not None and agency.status == CONNECTED

    def agency_views(self) -> tuple[AgencyView, ...]:
        with session_scope(self.engine) as session:
            counts = queries.count_accounts_by_agency(session=session)
            views = []
            for agency in queries.list_agencies(session=session):
                connection = queries.get_connection_for_agency(session=session, agency_id=agency.id)
                views.append(AgencyView(agency=agency, green=counts.get((agency.id, True), 0), red=counts.get((agency.id, False), 0),
                                        expires_at=connection.expires_at if connection else None))
        return tuple(views)

    def account_view(self, query: str) -> AccountView:
        with session_scope(self.engine) as session:
            account = self.find_account(session, query)
            return self._view(session, account, with_details=True)

    def _view(self, session: Session, account: Account, *, with_details: bool = False) -> AccountView:
        advice = advise(account, history_of(session, account), app_url=self.settings.crm_app_url)
        agency = queries.get_agency(session=session, agency_id=account.agency_id) if account.agency_id else None
        events: tuple[Event, ...] = ()
        expires_at = None
        if with_details:
            events = tuple(queries.list_events(session=session, account_id=account.id, limit=5))
            connection = queries.get_connection_for_account(session=session, account_id=account.id)
            expires_at = connection.expires_at if connection else None
        return AccountView(account=account, label=status_label(account), advice=advice,
                           agency_name=agency.name if agency else None, events=events, expires_at=expires_at)

    # Notifications

    def notify_change(self, account: Account, turned_green: bool, turned_red: bool) -> None:
        """DM the account's owner once when it turns green or red."""
        if not account.owner_user_id or not (turned_green or turned_red):
            return
        with session_scope(self.engine) as session:
            advice = advise(account, history_of(session, account), app_url=self.settings.crm_app_url)
            # The event of this change is stored already, so "again" needs an earlier one.
            again = queries.count_events(session=session, account_id=account.id, kind="connected", since=EPOCH) > 1
        text = render.owner_change_dm(account, status_label(account), advice, turned_green, again=again)
        self.slack.send_dm(account.owner_user_id, text=text)
