"""Posting the daily digest once per channel and local date, and acting on its buttons.

Whatever triggers a digest (the clock, an embedded scheduler, a restart or
`crm-bot digest --now`), the run first inserts the unique digest_post row for
(channel, local date). Only the run whose insert succeeds posts; the others
report that the digest is already posted. A run that cannot post anything
deletes its row again, so a later run can post that day.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from zoneinfo import ZoneInfo

from sqlalchemy import Engine

from bot import render
from bot.connections import Caller, ConnectionService
from bot.digest import USER_ID, Digest, Message, collect_changes, collect_digest, render_digest, render_red_list
from bot.digest_posting import MESSAGE_INTERVAL, DigestPoster, DigestPostError, make_digest_client
from bot.errors import InputError
from bot.settings import Settings
from storage import digest_queries, queries
from storage.db import session_scope, utcnow, write_lock_scope
from storage.digest_models import DIGEST_PARTIAL, DIGEST_POSTED, DIGEST_SKIPPED, DigestPost

logger = logging.getLogger(__name__)

# A claim that has posted nothing after this long belongs to a run that died; another run may take it.
# NOTE: building a digest of 5,000 accounts takes seconds, so 15 minutes leaves a wide margin,
# but a run stalled that long before its first message would be overtaken and both would post.
CLAIM_LEASE = timedelta(minutes=15)
FORCE_ATTEMPTS = 5
MAX_RED_LIST_MESSAGES = 5  # a response_url takes 5 posts

POSTED = "posted"
ALREADY_POSTED = "already_posted"
SKIPPED = "skipped"
FAILED = "failed"
PARTIAL = "partial"


@dataclass(frozen=True)
class ChannelOutcome:
    """The result of one run in one channel."""

    channel: str
    local_date: date
    status: str
    forced: bool = False
    message_ts: str | None = None
    messages: int = 0
    red: int = 0
    error: str | None = None

    def describe(self) -> str:
        where = f"{self.channel} for {self.local_date.isoformat()}"
        if self.status == POSTED and self.forced:
            return f"Posted another digest to {where} because of --force ({self.red} red accounts, {self.messages} messages)."
        if self.status == POSTED:
            return f"Posted the digest to {where} ({self.red} red accounts, {self.messages} messages)."
        if self.status == ALREADY_POSTED:
            return f"The digest for {where} was already posted (ts {self.message_ts or 'not yet recorded'}). Add --force to post another."
        if self.status == SKIPPED:
            return f"No account is red, and DIGEST_WHEN_EMPTY=skip, so nothing was posted to {where}."
        if self.status == PARTIAL:
            return f"Posted the digest to {where}, but some thread replies failed: {self.error}. See the log."
        return f"Posting the digest to {where} failed: {self.error}. See the log."


class DigestService:
    def __init__(self, *, settings: Settings, engine: Engine, poster: DigestPoster, connections: ConnectionService | None = None) -> None:
        self.settings = settings
        self.engine = engine
        self.poster = poster
        self.connections = connections

    @classmethod
    def from_services(cls, services, *, interval: float = MESSAGE_INTERVAL) -> DigestService:
        client = make_digest_client(token=services.settings.slack_bot_token, base_url=services.settings.slack_api_url)
        return cls(settings=services.settings, engine=services.engine, poster=DigestPoster(client, interval=interval),
                   connections=services.connections)

    def local_date(self, now: datetime) -> date:
        return now.astimezone(ZoneInfo(self.settings.digest_timezone)).date()

    # Posting

    def post_digest(self, *, channels: Sequence[str] | None = None, force: bool = False, now: datetime | None = None) -> list[ChannelOutcome]:
        """Post the digest to each channel that has none for today's local date (another one with `force`).

        Never raises: a failure in one channel is logged and reported in its outcome,
        and the other channels still get their digest.
        """
        now = now or utcnow()
        channels = tuple(channels or self.settings.digest_channels)
        if not channels:
            logger.warning("No digest channel: set DIGEST_CHANNEL, for example DIGEST_CHANNEL=C0123ABCD")
            return []

        local_date = self.local_date(now)
        built: list[Digest] = []
        outcomes = []
        for channel in channels:
            try:
                outcome = self._post_channel(channel, local_date, now, force, built)
            except Exception as error:
                logger.exception("Digest for %s on %s failed", channel, local_date)
                outcome = ChannelOutcome(channel, local_date, FAILED, forced=force, error=type(error).__name__)
            outcomes.append(outcome)
        return outcomes

    def _post_channel(self, channel: str, local_date: date, now: datetime, force: bool, built: list[Digest]) -> ChannelOutcome:
        post, existing = self._claim(channel, local_date, now, force)
        if post is None:
            logger.info("Digest for %s on %s is already posted (by %s, ts %s)", channel, local_date,
                        existing.claimed_by if existing else "?", existing.message_ts if existing else None)
            return ChannelOutcome(channel, local_date, ALREADY_POSTED, message_ts=existing.message_ts if existing else None)

        first_ts: list[str] = []
        try:
            with session_scope(self.engine) as session:
                if not built:
                    built.append(collect_digest(session, app_url=self.settings.crm_app_url, local_date=local_date,
                                                timezone=self.settings.digest_timezone, now=now))
                digest = built[0]
                changes = collect_changes(session, digest, channel_id=channel)
            when_empty = "post" if force else self.settings.digest_when_empty
            messages = render_digest(digest, changes, when_empty=when_empty)

            if not messages:
                self._finish(post, DIGEST_SKIPPED, digest, messages=0)
                logger.info("No red account; DIGEST_WHEN_EMPTY=skip, so no digest in %s on %s", channel, local_date)
                return ChannelOutcome(channel, local_date, SKIPPED, forced=force)

            def record(ts: str) -> None:
                first_ts.append(ts)
                with session_scope(self.engine) as session:
                    digest_queries.record_digest_ts(session=session, post_id=post.id, message_ts=ts)

            result = self.poster.post_digest(channel, messages, on_first_posted=record)
        except DigestPostError as error:
            return self._failed(post, channel, local_date, force, error.error, digest=built[0] if first_ts else None, fix=_fix_for(error))
        except Exception as error:
            logger.exception("Digest for %s on %s failed", channel, local_date)
            return self._failed(post, channel, local_date, force, type(error).__name__, digest=built[0] if first_ts else None)

        status = DIGEST_PARTIAL if result.failed else DIGEST_POSTED
        self._finish(post, status, digest, messages=result.posted)
        if result.failed:
            return ChannelOutcome(channel, local_date, PARTIAL, forced=force, message_ts=result.message_ts, messages=result.posted,
                                  red=len(digest.lines), error=f"{result.failed} replies failed")
        logger.info("Digest for %s on %s posted: %d red accounts in %d messages%s", channel, local_date, len(digest.lines),
                    result.posted, " (forced)" if force else "")
        return ChannelOutcome(channel, local_date, POSTED, forced=force, message_ts=result.message_ts, messages=result.posted,
                              red=len(digest.lines))

    def _claim(self, channel: str, local_date: date, now: datetime, force: bool) -> tuple[DigestPost | None, DigestPost | None]:
        """Insert this run's row for the slot. Return (claimed row, None), or (None, the row that owns the slot)."""
        claimed_by = _run_id()
        for _attempt in range(FORCE_ATTEMPTS if force else 1):
            with write_lock_scope(self.engine) as session:
                sequence = digest_queries.next_digest_sequence(session=session, channel_id=channel, local_date=local_date) if force else 0
                post = digest_queries.claim_digest(session=session, channel_id=channel, local_date=local_date, sequence=sequence,
                                                   claimed_by=claimed_by, now=now)
                if post is not None:
                    return post, None
                existing = digest_queries.get_digest(session=session, channel_id=channel, local_date=local_date, sequence=sequence)
                if existing is not None and digest_queries.take_over_stale_claim(
                        session=session, post_id=existing.id, claimed_by=claimed_by, now=now, stale_before=now - CLAIM_LEASE):
                    logger.warning("Took over the digest claim for %s on %s from %s, which posted nothing within %s",
                                   channel, local_date, existing.claimed_by, CLAIM_LEASE)
                    return existing, None
            if not force:
                return None, existing
        raise RuntimeError(f"Could not claim a forced digest for {channel} on {local_date} after {FORCE_ATTEMPTS} attempts")

    def _finish(self, post: DigestPost, status: str, digest: Digest, *, messages: int) -> None:
        with session_scope(self.engine) as session:
            digest_queries.finish_digest(session=session, post_id=post.id, status=status, now=utcnow(), message_count=messages,
                                         red_count=len(digest.lines), total_count=digest.total, red_account_ids=digest.account_ids)

    def _failed(self, post: DigestPost, channel: str, local_date: date, force: bool, error: str, *, digest: Digest | None,
                fix: str | None = None) -> ChannelOutcome:
        """Record a failed run. `digest` is the posted digest when its first message went out, else None."""
        if digest is not None:
            # The summary is in the channel, so posting again would show it twice: keep the claim.
            self._finish(post, DIGEST_PARTIAL, digest, messages=1)
            logger.error("Digest for %s on %s stopped after its first message: %s", channel, local_date, error)
            return ChannelOutcome(channel, local_date, PARTIAL, forced=force, error=error)

        with session_scope(self.engine) as session:
            digest_queries.release_digest(session=session, post_id=post.id)
        logger.error("Digest for %s on %s was not posted: %s. %sThe claim is released, so a later run can post it.",
                     channel, local_date, error, f"{fix} " if fix else "")
        return ChannelOutcome(channel, local_date, FAILED, forced=force, error=error)

    # /crm-status red and the digest's buttons

    def red_list(self, *, max_messages: int = MAX_RED_LIST_MESSAGES) -> list[Message]:
        """Render the current digest for one person, as `/crm-status red` shows it."""
        now = utcnow()
        channel = self.settings.digest_channels[0] if self.settings.digest_channels else None
        with session_scope(self.engine) as session:
            digest = collect_digest(session, app_url=self.settings.crm_app_url, local_date=self.local_date(now),
                                    timezone=self.settings.digest_timezone, now=now)
            changes = collect_changes(session, digest, channel_id=channel)
        return render_red_list(digest, changes, max_messages=max_messages)

    def send_link(self, *, caller: Caller, account_id: int) -> str:
        """DM the account's owner (or the clicker, when it has none) the link that fits the account."""
        account = self._account(account_id)
        # The digest is in a shared channel, so only the owner and the admins may send links from it.
        if not (self.settings.is_admin(caller.user_id) or account.owner_user_id == caller.user_id):
            return (f"Only the owner of {render.account_title(account)} or the admins named in ADMIN_USER_IDS may send "
                    f"its link from the digest. To get a link yourself, use `/crm-connect {render.escape(account.location_id or account.name)}`.")

        owner = account.owner_user_id
        recipient = owner if owner and USER_ID.fullmatch(owner) else caller.user_id
        reply = self.connections.connect_account(caller=caller, query=account.location_id or account.name,
                                                 recipient_user_id=recipient, direct=False)
        return reply.text

    def reset_prompt(self, *, caller: Caller, account_id: int) -> str | tuple[str, list]:
        """Return the reset confirmation for an admin, whose button runs the reset."""
        if not self.settings.is_admin(caller.user_id):
            return render.not_admin()
        return render.reset_confirm(self._account(account_id))

    def _account(self, account_id: int):
        with session_scope(self.engine) as session:
            account = queries.get_account(session=session, account_id=account_id)
        if account is None:
            raise InputError("That account no longer exists. Run `/crm-status red` to see the current list.")
        return account


def _fix_for(error: DigestPostError) -> str | None:
    if error.error in ("not_in_channel", "channel_not_found"):
        return (f"Invite the bot to channel {error.channel} (/invite in that channel), "
                f"or correct DIGEST_CHANNEL if the id is wrong.")
    if error.error == "is_archived":
        return f"Channel {error.channel} is archived: unarchive it or remove it from DIGEST_CHANNEL."
    if error.error in ("invalid_auth", "not_authed", "account_inactive", "missing_scope"):
        return "Check SLACK_BOT_TOKEN and that the app has the chat:write scope."
    return None


def _run_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{threading.get_ident()}"[:128]
