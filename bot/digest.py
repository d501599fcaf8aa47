"""Building the daily digest: which accounts show the red banner, and the Block Kit that lists them.

`collect_digest` reads the accounts and takes each one's next step from the
advice engine. `render_digest` turns that into Slack messages that respect Block
Kit's limits (50 blocks per message, 3,000 characters per section). A list
that does not fit in one message becomes a summary message followed by
thread replies.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta

from sqlmodel import Session

from bot.accounts import history_of
from bot.advice import REASON_LABELS, Action, Advice, advise
from bot.render import SECTION_LIMIT, account_title, escape, mention, section
from storage import digest_queries, queries
from storage.models import DISCONNECTED, NEVER_CONNECTED, REASONS, Account

MAX_BLOCKS = 50
SEND_LINK_ACTION = "digest_send_link"
RESET_ACTION = "digest_reset"
USER_ID = re.compile(r"[UW][A-Z0-9]{2,}")


@dataclass(frozen=True)
class DigestLine:
    """One account that shows No Active CRM Connection, with its next step."""

    account: Account
    advice: Advice

    @property
    def account_id(self) -> int:
        return self.account.id

    @property
    def reason(self) -> str:
        return self.account.reason or NEVER_CONNECTED


@dataclass(frozen=True)
class Digest:
    """The red accounts at one moment, grouped by reason in `REASONS` order."""

    local_date: date
    timezone: str
    generated_at: datetime
    total: int
    lines: tuple[DigestLine, ...]

    @property
    def account_ids(self) -> tuple[int, ...]:
        return tuple(line.account_id for line in self.lines)


@dataclass(frozen=True)
class Changes:
    """The difference between the red list and the previous digest posted in the channel.

    `new_ids` are red now and were not listed in that digest. `recovered` were
    listed in it and are connected now. Without a previous digest,
    `has_previous_digest` is false and both are empty.
    """

    has_previous_digest: bool = False
    new_ids: frozenset[int] = frozenset()
    recovered: tuple[Account, ...] = ()


@dataclass(frozen=True)
class Message:
    text: str
    blocks: list[dict] = field(default_factory=list)


# Collecting

def collect_digest(session: Session, *, app_url: str, local_date: date, timezone: str, now: datetime) -> Digest:
    """Read every red account with its advice. The lines come grouped by reason, then sorted by name."""
    total = sum(queries.count_accounts_by_status(session=session).values())
    red = queries.list_accounts(session=session, status=DISCONNECTED)

    lines = []
    for account in red:
        advice = advise(account, history_of(session, account), app_url=app_url)
        lines.append(DigestLine(account=account, advice=advice))

    order = {reason: index for index, reason in enumerate(REASONS)}
    lines.sort(key=lambda line: order.get(line.reason, len(order)))
    return Digest(local_date=local_date, timezone=timezone, generated_at=now, total=total, lines=tuple(lines))


def collect_changes(session: Session, digest: Digest, *, channel_id: str | None) -> Changes:
    """Compare the digest with the previous digest posted in the channel, which may be an earlier one of the same day."""
    if channel_id is None:
        return Changes()
    previous = digest_queries.get_previous_digest(session=session, channel_id=channel_id, local_date=digest.local_date)
    if previous is None:
        return Changes()

    listed = previous.listed_account_ids
    new_ids = frozenset(account_id for account_id in digest.account_ids if account_id not in listed)
    recovered = digest_queries.list_connected_accounts(session=session, account_ids=listed)
    return Changes(has_previous_digest=True, new_ids=new_ids, recovered=tuple(recovered))


# Rendering

def render_digest(digest: Digest, changes: Changes, *, when_empty: str = "post", max_blocks: int = MAX_BLOCKS,
                  threaded: bool = True) -> list[Message]:
    """Render the digest as Slack messages: the first goes to the channel, the rest into its thread.

    Return no message when no account is red and `when_empty` is "skip". With
    `threaded` false the summary states that the list follows instead.
    """
    if not digest.lines:
        return [] if when_empty == "skip" else [_all_clear(digest, changes)]

    heading = _heading_blocks(digest, changes)
    recovered = _recovered_blocks(changes)
    body = [_group_blocks(reason, lines, changes, digest.generated_at) for reason, lines in _groups(digest.lines)]
    flat_body = [block for group in body for block in group]

    if len(heading) + len(recovered) + len(flat_body) <= max_blocks:
        return [Message(_summary_text(digest), heading + flat_body + recovered)]

    where = "in this message's thread" if threaded else "in the messages below"
    summary = heading + [section(f"{_reason_counts(digest)}\nThe accounts are listed {where}, grouped by reason.")] + recovered
    chunks = _chunk(digest.lines, changes, digest.generated_at, max_blocks)
    replies = [
        Message(f"Digest for {digest.local_date.isoformat()}, part {number} of {len(chunks)}: "
                f"{len(lines)} accounts with No Active CRM Connection.", blocks)
        for number, (lines, blocks) in enumerate(chunks, start=1)
    ]
    return [Message(_summary_text(digest), summary)] + replies


def render_red_list(digest: Digest, changes: Changes, *, max_messages: int) -> list[Message]:
    """Render the digest for one person, in at most `max_messages` messages, none in a thread."""
    messages = render_digest(digest, changes, when_empty="post", max_blocks=MAX_BLOCKS - 1, threaded=False)
    if len(messages) <= max_messages:
        return messages

    kept_messages = messages[:max_messages]
    shown_count = sum(1 for message in kept_messages for block in message.blocks if _is_line(block))
    note = (f"…and {len(digest.lines) - shown_count:,} more. The daily digest lists every account, "
            f"and `/crm-status <account>` shows one.")
    kept_messages[-1] = Message(kept_messages[-1].text, kept_messages[-1].blocks + [_context(note)])
    return kept_messages


def red_for(red_since: datetime | None, now: datetime) -> str:
    """Say how long an account has been red, in the largest whole unit."""
    if red_since is None:
        return "red for an unknown time"
    elapsed = now - red_since
    if elapsed < timedelta(hours=1):
        return "red for less than an hour"
    if elapsed < timedelta(hours=48):
        hours = int(elapsed.total_seconds() // 3600)
        return f"red for {hours} hour{'s' if hours != 1 else ''}"
    return f"red for {elapsed.days} days"


def _summary_text(digest: Digest) -> str:
    return f"{_header(digest)}. Daily digest for {digest.local_date.isoformat()}."


def _header(digest: Digest) -> str:
    return f"{len(digest.lines):,} of {digest.total:,} accounts show No Active CRM Connection"


def _heading_blocks(digest: Digest, changes: Changes) -> list[dict]:
    if changes.has_previous_digest:
        compared = f"{len(changes.new_ids):,} new and {len(changes.recovered):,} recovered since the last digest."
    else:
        compared = "No earlier digest to compare with, so no account is marked new or recovered."
    context = f"Daily digest for {digest.local_date:%A %d %B %Y} ({escape(digest.timezone)}). {compared}"
    return [
        {"type": "header", "text": {"type": "plain_text", "text": _header(digest)}},
        _context(context),
    ]


def _all_clear(digest: Digest, changes: Changes) -> Message:
    if digest.total == 0:
        text = "No accounts yet, so none shows No Active CRM Connection."
    else:
        text = f"All {digest.total:,} accounts connected."
    blocks = [section(f"*{text}*"), _context(f"Daily digest for {digest.local_date:%A %d %B %Y} ({escape(digest.timezone)}).")]
    return Message(text, blocks + _recovered_blocks(changes))


def _recovered_blocks(changes: Changes) -> list[dict]:
    if not changes.recovered:
        return []
    title = f"*Recovered since the last digest* ({len(changes.recovered):,}): "
    return [section(_fit_names(title, [account_title(account) for account in changes.recovered]))]


def _fit_names(title: str, names: list[str]) -> str:
    """Join names after `title`, cutting the list so that the text fits in one section."""
    text = title
    for index, name in enumerate(names):
        rest = f" …and {len(names) - index:,} more."
        piece = name if index == 0 else f", {name}"
        if len(text) + len(piece) + len(rest) > SECTION_LIMIT:
            return text + rest
        text += piece
    return text


def _reason_counts(digest: Digest) -> str:
    counts = [f"• {escape(REASON_LABELS.get(reason, reason))}: {len(lines):,}" for reason, lines in _groups(digest.lines)]
    return "\n".join(counts)


def _groups(lines: tuple[DigestLine, ...]) -> list[tuple[str, list[DigestLine]]]:
    groups: dict[str, list[DigestLine]] = {}
    for line in lines:
        groups.setdefault(line.reason, []).append(line)
    return list(groups.items())


def _group_title(reason: str, count: int, *, continued: bool = False) -> dict:
    label = escape(REASON_LABELS.get(reason, reason))
    label = label[:1].upper() + label[1:]
    suffix = ", continued" if continued else ""
    return section(f"*{label}* ({count:,}{suffix})")


def _group_blocks(reason: str, lines: list[DigestLine], changes: Changes, now: datetime) -> list[dict]:
    blocks = [_group_title(reason, len(lines))]
    for line in lines:
        blocks.extend(_line_blocks(line, changes, now))
    return blocks


def _chunk(lines: tuple[DigestLine, ...], changes: Changes, now: datetime, max_blocks: int) -> list[tuple[list[DigestLine], list[dict]]]:
    """Split the lines into thread replies of at most `max_blocks` blocks, each group under its title."""
    counts = {reason: len(group) for reason, group in _groups(lines)}
    chunks: list[tuple[list[DigestLine], list[dict]]] = []
    chunk_lines: list[DigestLine] = []
    blocks: list[dict] = []
    current_reason = None

    for line in lines:
        line_blocks = _line_blocks(line, changes, now)
        needs_title = line.reason != current_reason or not blocks
        size = len(line_blocks) + (1 if needs_title else 0)

        if blocks and len(blocks) + size > max_blocks:
            chunks.append((chunk_lines, blocks))
            chunk_lines, blocks = [], []
            needs_title = True
        if needs_title:
            blocks.append(_group_title(line.reason, counts[line.reason], continued=line.reason == current_reason))
            current_reason = line.reason
        blocks.extend(line_blocks)
        chunk_lines.append(line)

    if blocks:
        chunks.append((chunk_lines, blocks))
    return chunks


def _line_blocks(line: DigestLine, changes: Changes, now: datetime) -> list[dict]:
    account = line.account
    has_owner = account.owner_user_id and USER_ID.fullmatch(account.owner_user_id)
    owner = f"owner {mention(account.owner_user_id)}" if has_owner else "no owner"
    new = " · *new*" if account.id in changes.new_ids else ""
    text = f"{account_title(account)} · {owner} · {red_for(account.red_since, now)}{new}\nNext step: {escape(line.advice.text)}"

    # A paused account waits for the CRM; a link would not help it.
    if line.advice.action is Action.WAIT:
        return [section(text)]

    send_link = _button("Send connect link", SEND_LINK_ACTION, line.account_id, style="primary")
    if line.advice.action is not Action.RESET:
        block = section(text)
        block["accessory"] = send_link
        return [block]

    # The account still has stored tokens, so a reset (admins only) may recover it without a link.
    reset = _button("Reset", RESET_ACTION, line.account_id)
    return [section(text), {"type": "actions", "block_id": f"digest_account_{line.account_id}", "elements": [send_link, reset]}]


def _button(label: str, action_id: str, account_id: int, *, style: str | None = None) -> dict:
    button = {"type": "button", "action_id": action_id, "value": str(account_id), "text": {"type": "plain_text", "text": label}}
    if style:
        button["style"] = style
    return button


def _context(text: str) -> dict:
    return {"type": "context", "elements": [{"type": "mrkdwn", "text": text}]}


def _is_line(block: dict) -> bool:
    if block.get("accessory", {}).get("action_id") == SEND_LINK_ACTION:
        return True
    return block.get("type") == "actions" and str(block.get("block_id", "")).startswith("digest_account_")
