"""Benchmark: build and post a digest of 5,000 red accounts to the Slack simulator, with real pacing.

Each run posts the digest to its own channel through DigestService, the code
path of the clock. The times come from the simulator's record of the
chat.postMessage calls it received:

    build   from the run's start to its first message (claim, read, advice, Block Kit)
    post    from the first message to the last
    floor   (messages - 1) x the pacing interval, the least time that pacing allows

Slack paces each channel on its own, so runs start BUILD_GAP seconds apart and
their posting overlaps; overlap can only slow a run down. Run it with:

    python bench/digest_bench.py [--accounts 5000] [--runs 3] [--database-url URL]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from bot.digest_posting import MESSAGE_INTERVAL, DigestPoster, make_digest_client
from bot.digest_service import POSTED, DigestService
from bot.settings import Settings, normalise_database_url
from bot.simulators.slack import SlackSimulator
from storage import queries
from storage.db import make_engine, session_scope
from storage.migrate import upgrade
from storage.models import REASONS

BUILD_GAP = 15.0


@dataclass(frozen=True)
class RunResult:
    channel: str
    messages: int
    build: float
    post: float

    @property
    def floor(self) -> float:
        return (self.messages - 1) * MESSAGE_INTERVAL


def seed_accounts(engine, count: int) -> None:
    """Add `count` red accounts, spread evenly over the reasons, and 240 green ones."""
    with session_scope(engine) as session:
        for index in range(count):
            account = queries.create_account(session=session, name=f"Client account {index:05d}", location_id=f"loc-{index:05d}",
                                             owner_user_id="U0AGENT01")
            account.reason = REASONS[index % len(REASONS)]
        for index in range(240):
            account = queries.create_account(session=session, name=f"Green account {index:03d}", location_id=f"green-{index:03d}")
            account.status = "connected"
            account.reason = None


def run_once(engine, slack: SlackSimulator, database_url: str, channel: str) -> RunResult:
    settings = Settings(slack_bot_token=slack.bot_token, slack_api_url=slack.api_url, database_url=database_url,
                        digest_channels=(channel,))
    poster = DigestPoster(make_digest_client(token=slack.bot_token, base_url=slack.api_url), interval=MESSAGE_INTERVAL)
    service = DigestService(settings=settings, engine=engine, poster=poster)

    started = time.time()
    outcome = service.post_digest()[0]
    if outcome.status != POSTED:
        raise RuntimeError(f"Run in {channel} did not post: {outcome.describe()}")

    times = [call.time for call in slack.calls_to("chat.postMessage") if call.args.get("channel") == channel]
    return RunResult(channel=channel, messages=len(times), build=times[0] - started, post=times[-1] - times[0])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--accounts", type=int, default=5000, help="red accounts in the digest (default 5000)")
    parser.add_argument("--runs", type=int, default=3, help="runs, each to its own channel (default 3)")
    parser.add_argument("--database-url", help="database to seed (default: a new SQLite file in a temporary directory)")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as directory, SlackSimulator() as slack:
        database_url = normalise_database_url(args.database_url or f"sqlite:///{Path(directory) / 'bench.db'}")
        engine = make_engine(database_url)
        upgrade(engine)
        seed_accounts(engine, args.accounts)

        channels = [f"C0BENCH{number:02d}" for number in range(args.runs)]
        for channel in channels:
            slack.add_channel(channel, channel.lower())

        results: list[RunResult] = []
        threads = []
        for number, channel in enumerate(channels):
            if number:
                time.sleep(BUILD_GAP)
            thread = threading.Thread(target=lambda channel=channel: results.append(run_once(engine, slack, database_url, channel)))
            thread.start()
            threads.append(thread)
        for thread in threads:
            thread.join()

    print(f"{args.accounts} red accounts, {args.runs} runs, pacing {MESSAGE_INTERVAL:.1f} s per message")
    for result in sorted(results, key=lambda result: result.channel):
        print(f"  {result.channel}: {result.messages} messages, build {result.build:.2f} s, post {result.post:.2f} s, "
              f"floor {result.floor:.1f} s, ratio {result.post / result.floor:.3f}")
    build = statistics.median(result.build for result in results)
    post = statistics.median(result.post for result in results)
    floor = statistics.median(result.floor for result in results)
    print(f"median: build {build:.2f} s, post {post:.2f} s, floor {floor:.1f} s, post/floor {post / floor:.3f}")


if __name__ == "__main__":
    main()
