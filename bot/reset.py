"""Reset Connection: `/crm-reset <account>` and `/crm-reset agency`, after the confirm button.

A reset renews the tokens now: a refresh, or a new mint through the agency
for an account without a refresh token. When the CRM's response is final
(invalid_grant, revoked, not owned), the stored tokens are cleared and the
caller gets a fresh link by DM. A transient fault or a paused location
changes nothing but the failure count. Running a reset twice is harmless.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from bot import render
from bot.accounts import mark_red, record_failure
from bot.connections import Caller
from bot.crm import CrmError, CrmReason
from bot.errors import InputError
from bot.lifecycle import FINAL_REASONS, Lifecycle
from storage import lifecycle_queries, queries
from storage.db import write_lock_scope
from storage.lifecycle_models import OPERATION_REFRESH
from storage.models import METHOD_AGENCY, METHOD_DIRECT, NEEDS_RECONNECT, Account, Agency

logger = logging.getLogger(__name__)

# Runs Connect Accounts for an agency id on behalf of a Slack user, and returns the summary text.
AgencySyncHook = Callable[[int, str], str]


class ResetService:
    def __init__(self, *, lifecycle: Lifecycle, agency_sync: AgencySyncHook | None = None) -> None:
        self.lifecycle = lifecycle
        self.tokens = lifecycle.tokens
        self.connections = lifecycle.connections
        self.engine = lifecycle.engine
        self.agency_sync = agency_sync

    # /crm-reset <account>

    def reset_account(self, *, caller: Caller, account_id: int) -> str:
        """Renew an account's tokens now; when that cannot recover, clear them and DM a fresh link.

        Return the text for the caller.
        """
        with write_lock_scope(self.engine) as session:
            account = queries.get_account(session=session, account_id=account_id)
            if account is None:
                raise InputError("That account no longer exists. Run `/crm-status` to see the current list.")
            connection = queries.get_connection_for_account(session=session, account_id=account_id)
            queries.add_event(session=session, kind="reset", account_id=account_id, actor_user_id=caller.user_id,
                              detail="Reset requested")
        logger.info("Reset of account %s requested by %s", account_id, caller.user_id)

        reason, message = NEEDS_RECONNECT, "The connection has no tokens to reset."
        if connection is not None:
            minted = connection.refresh_token_encrypted is None
            try:
                self.tokens.renew(connection.id, seen_version=connection.version)
            except LookupError:
                pass
            except CrmError as error:
                if error.reason not in FINAL_REASONS:
                    return self._reset_deferred(caller, account, connection.id, error)
                reason, message = FINAL_REASONS[error.reason], error.crm_message
            else:
                detail = "Reset: location token minted again through the agency" if minted else "Reset: tokens refreshed"
                self.lifecycle.record_success(connection.id, refreshed=True, actor_user_id=caller.user_id, detail=detail)
                return render.reset_refreshed(self._account(account_id), through_agency=minted)

        synced, _why = self.connections.try_agency_mint(account, actor_user_id=caller.user_id)
        if synced:
            self._end_failure_streak(account_id)
            return render.reset_refreshed(self._account(account_id), through_agency=True)

        return self._relink_account(caller, account, reason, message)

    def _reset_deferred(self, caller: Caller, account: Account, connection_id: int, error: CrmError) -> str:
        self.lifecycle.record_failure(connection_id, error, operation=OPERATION_REFRESH, actor_user_id=caller.user_id)
        if error.reason is CrmReason.LOCATION_NOT_ACTIVE:
            return render.reset_paused(account)
        return render.reset_transient(account)

    def _relink_account(self, caller: Caller, account: Account, reason: str, message: str) -> str:
        with write_lock_scope(self.engine) as session:
            fresh = lifecycle_queries.lock_account(session=session, account_id=account.id)
            connection = queries.get_connection_for_account(session=session, account_id=account.id)
            if connection is not None:
                queries.delete_connection(session=session, connection=connection)
            change = self._mark_red(session, fresh, reason, message, caller)
        logger.info("Reset of account %s cleared its tokens (%s)", account.id, reason)
        self.connections.notify_change(fresh, False, change.turned_red)

        _link, sent = self.connections.send_link(caller=caller, recipient_user_id=caller.user_id, account=fresh,
                                                 method=METHOD_DIRECT, why="The reset could not refresh the tokens.")
        return render.reset_relinked(fresh, sent)

    def _mark_red(self, session, account: Account, reason: str, message: str, caller: Caller):
        change = mark_red(session, account, reason=reason, error=message, actor_user_id=caller.user_id)
        record_failure(session, account, kind="refresh_failed", reason=reason, error=message, actor_user_id=caller.user_id)
        return change

    # /crm-reset agency

    def reset_agency(self, *, caller: Caller) -> str:
        """Refresh every connected agency's tokens now and re-run Connect Accounts for it.

        When no agency has tokens, or the CRM rejects them for good, the
        caller gets a fresh agency-level link by DM. Return the text for the caller.
        """
        with write_lock_scope(self.engine) as session:
            targets = []
            for agency in queries.list_agencies(session=session):
                connection = queries.get_connection_for_agency(session=session, agency_id=agency.id)
                queries.add_event(session=session, kind="reset", agency_id=agency.id, actor_user_id=caller.user_id,
                                  detail="Reset requested")
                if connection is not None:
                    targets.append((agency, connection.id, connection.version))
        logger.info("Reset of the agency requested by %s", caller.user_id)

        if not targets:
            return self._relink_agency(caller, None, "No agency holds a connection.")
        return "\n".join(self._reset_one_agency(caller, agency, connection_id, version) for agency, connection_id, version in targets)

    def _reset_one_agency(self, caller: Caller, agency: Agency, connection_id: int, version: int) -> str:
        try:
            self.tokens.renew(connection_id, seen_version=version)
        except LookupError:
            return self._relink_agency(caller, agency, "The agency's connection was removed meanwhile.")
        except CrmError as error:
            self.lifecycle.record_failure(connection_id, error, operation=OPERATION_REFRESH, actor_user_id=caller.user_id)
            if error.reason not in FINAL_REASONS:
                return render.reset_agency_transient(agency)
            with write_lock_scope(self.engine) as session:
                connection = queries.get_connection(session=session, connection_id=connection_id)
                if connection is not None:
                    queries.delete_connection(session=session, connection=connection)
            return self._relink_agency(caller, agency, error.crm_message)

        self.lifecycle.record_success(connection_id, refreshed=True, actor_user_id=caller.user_id, detail="Reset: agency tokens refreshed")
        return render.reset_agency_refreshed(agency, self._sync(agency, caller))

    def _sync(self, agency: Agency, caller: Caller) -> str | None:
        if self.agency_sync is None:
            return None
        try:
            return self.agency_sync(agency.id, caller.user_id)
        except Exception:
            logger.exception("Connect Accounts after the reset of agency %s failed", agency.id)
            return "Connect Accounts failed after the reset, and the error was logged. Run `/crm-connect agency` to try again."

    def _relink_agency(self, caller: Caller, agency: Agency | None, why: str) -> str:
        logger.info("Reset of agency %s sends a fresh agency link: %s", agency.id if agency else None, why)
        _link, sent = self.connections.send_link(caller=caller, recipient_user_id=caller.user_id, account=None,
                                                 method=METHOD_AGENCY, why="The reset could not refresh the agency's tokens.")
        return render.reset_agency_relinked(agency, sent)

    # Helpers

    def _account(self, account_id: int) -> Account:
        with write_lock_scope(self.engine) as session:
            return queries.get_account(session=session, account_id=account_id)

    def _end_failure_streak(self, account_id: int) -> None:
        with write_lock_scope(self.engine) as session:
            connection = queries.get_connection_for_account(session=session, account_id=account_id)
            if connection is not None:
                lifecycle_queries.delete_failure(session=session, connection_id=connection.id)
