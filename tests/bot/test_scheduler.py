"""The scheduler: digest fire times across DST, the missed-slot catch-up, job options and job bodies."""

from __future__ import annotations

import os
import subprocess
import sys
import time as clock
from dataclasses import replace
from datetime import UTC, datetime, time, timedelta

import pytest
from apscheduler.schedulers.background import BackgroundScheduler
from cryptography.fernet import Fernet
from freezegun import freeze_time

from bot.digest_posting import DigestPoster, make_digest_client
from bot.digest_service import ALREADY_POSTED, POSTED, DigestService
from bot.scheduler import (
    DIGEST_JOB_ID, HEALTH_JOB_ID, MISFIRE_GRACE, REFRESH_JOB_ID, add_jobs, digest_trigger, health_check_trigger,
    missed_digest_slot, run_digest_job, start, start_embedded,
)
from bot.services import build_services
from bot.settings import Settings
from storage import queries
from storage.db import session_scope

CHANNEL = "C0DIGEST1"


def fire_times(settings: Settings, start_at: datetime, count: int = 3) -> list[datetime]:
    trigger = digest_trigger(settings)
    times, previous, now = [], None, start_at
    for _ in range(count):
        fire = trigger.get_next_fire_time(previous, now)
        times.append(fire.astimezone(UTC))
        previous = now = fire
    return times


def utc(*args) -> datetime:
    return datetime(*args, tzinfo=UTC)


# Fire times across DST changes

@pytest.mark.parametrize(("zone", "start_at", "expected"), [
    # New York moves from UTC-5 to UTC-4 on Sunday 8 March 2026.
    ("America/New_York", utc(2026, 3, 6, 15), [utc(2026, 3, 7, 14), utc(2026, 3, 8, 13), utc(2026, 3, 9, 13)]),
    # ... and back on Sunday 1 November 2026.
    ("America/New_York", utc(2026, 10, 30, 14), [utc(2026, 10, 31, 13), utc(2026, 11, 1, 14), utc(2026, 11, 2, 14)]),
    # Berlin moves from UTC+1 to UTC+2 on Sunday 29 March 2026.
    ("Europe/Berlin", utc(2026, 3, 27, 9), [utc(2026, 3, 28, 8), utc(2026, 3, 29, 7), utc(2026, 3, 30, 7)]),
    # ... and back on Sunday 25 October 2026.
    ("Europe/Berlin", utc(2026, 10, 23, 8), [utc(2026, 10, 24, 7), utc(2026, 10, 25, 8), utc(2026, 10, 26, 8)]),
])
def test_digest_trigger_keeps_local_time_across_dst(zone, start_at, expected):
    settings = Settings(digest_time=time(9, 0), digest_timezone=zone)

    assert fire_times(settings, start_at) == expected


def test_digest_trigger_skipped_hour_fires_once():
    # 02:30 does not exist in New York on 8 March 2026; APScheduler 3.11 fires at 03:30 EDT instead.
    settings = Settings(digest_time=time(2, 30), digest_timezone="America/New_York")

    times = fire_times(settings, utc(2026, 3, 7, 12))

    assert times == [utc(2026, 3, 8, 7, 30), utc(2026, 3, 9, 6, 30), utc(2026, 3, 10, 6, 30)]


def test_digest_trigger_repeated_hour_fires_twice():
    # 01:30 happens twice in New York on 1 November 2026, and APScheduler 3.11 fires at both.
    settings = Settings(digest_time=time(1, 30), digest_timezone="America/New_York")

    times = fire_times(settings, utc(2026, 10, 31, 12))

    assert times == [utc(2026, 11, 1, 5, 30), utc(2026, 11, 1, 6, 30), utc(2026, 11, 2, 6, 30)]


def test_digest_trigger_weekdays_only():
    settings = Settings(digest_time=time(9, 0), digest_timezone="Europe/Berlin", digest_days="mon-fri")

    # Friday 27 March 2026, after the slot.
    times = fire_times(settings, utc(2026, 3, 27, 12))

    assert times[0] == utc(2026, 3, 30, 7)
    assert [moment.weekday() for moment in times] == [0, 1, 2]


def test_health_check_trigger_before_digest():
    settings = Settings(digest_time=time(0, 30), digest_timezone="Europe/Berlin")

    fire = health_check_trigger(settings).get_next_fire_time(None, utc(2026, 6, 1, 12))

    assert fire.astimezone(UTC) == utc(2026, 6, 1, 21, 30)


# Missed slots

@pytest.mark.parametrize(("now", "expected"), [
    (utc(2026, 3, 9, 8, 20), utc(2026, 3, 9, 8, 0)),   # 09:20 in Berlin, 20 minutes late
    (utc(2026, 3, 9, 8, 59), utc(2026, 3, 9, 8, 0)),
    (utc(2026, 3, 9, 9, 1), None),                      # later than the grace time
    (utc(2026, 3, 9, 7, 50), None),                     # before the slot
    (utc(2026, 3, 8, 8, 20), None),                     # Sunday, not a digest day
])
def test_missed_digest_slot(now, expected):
    settings = Settings(digest_time=time(9, 0), digest_timezone="Europe/Berlin", digest_days="mon-fri")

    assert missed_digest_slot(settings, now) == expected


# Jobs

@pytest.fixture
def services(engine, slack, database_url):
    slack.add_channel(CHANNEL, "support", member=True)
    settings = Settings(slack_bot_token=slack.bot_token, slack_api_url=slack.api_url, database_url=database_url,
                        token_encryption_key=Fernet.generate_key().decode(), digest_channels=(CHANNEL,),
                        digest_timezone="Europe/Berlin")
    services = build_services(settings, engine=engine)
    yield services
    services.crm.close()


def make_digest_service(services, **overrides) -> DigestService:
    settings = replace(services.settings, **overrides)
    client = make_digest_client(token=settings.slack_bot_token, base_url=settings.slack_api_url, backoff=0.01)
    return DigestService(settings=settings, engine=services.engine, poster=DigestPoster(client, interval=0.0))


def add_red_account(engine, name: str = "Acme Dental") -> None:
    with session_scope(engine) as session:
        queries.create_account(session=session, name=name, location_id=f"loc-{name.lower().replace(' ', '-')}")


def test_add_jobs_options(services):
    scheduler = BackgroundScheduler(timezone="UTC")
    scheduler.start(paused=True)

    add_jobs(scheduler, services)
    ids = add_jobs(scheduler, services)
    jobs = scheduler.get_jobs()
    scheduler.shutdown()

    assert ids == [DIGEST_JOB_ID, REFRESH_JOB_ID, HEALTH_JOB_ID]
    assert sorted(job.id for job in jobs) == sorted(ids)
    for job in jobs:
        assert job.misfire_grace_time >= MISFIRE_GRACE.total_seconds()
        assert job.coalesce
        assert job.max_instances == 1


def test_add_jobs_without_channel(services):
    scheduler = BackgroundScheduler(timezone="UTC")
    services.settings = replace(services.settings, digest_channels=())

    ids = add_jobs(scheduler, services)

    assert DIGEST_JOB_ID not in ids


def test_digest_job_under_freezegun(services, slack):
    add_red_account(services.engine)
    digest = make_digest_service(services)

    with freeze_time("2026-03-09 08:00:00"):
        run_digest_job(digest)
        run_digest_job(digest)
    with freeze_time("2026-03-10 08:00:00"):
        run_digest_job(digest)

    messages = slack.messages(CHANNEL)
    assert len(messages) == 2
    assert "for 2026-03-09" in messages[0]["text"]
    assert "for 2026-03-10" in messages[1]["text"]


def test_digest_job_repeated_hour_posts_once(services, slack):
    add_red_account(services.engine)
    digest = make_digest_service(services, digest_time=time(1, 30), digest_timezone="America/New_York")
    first, second = fire_times(digest.settings, utc(2026, 10, 31, 12), count=2)

    with freeze_time(first):
        run_digest_job(digest)
    with freeze_time(second):
        outcomes = digest.post_digest()

    assert outcomes[0].status == ALREADY_POSTED
    assert len(slack.messages(CHANNEL)) == 1


def test_digest_job_survives_slack_outage(services, slack):
    add_red_account(services.engine)
    slack.fail_next("chat.postMessage", status=503, count=20)

    run_digest_job(make_digest_service(services))

    assert slack.messages(CHANNEL) == []


def test_two_schedulers_post_once(services, slack):
    add_red_account(services.engine)
    now = datetime.now(UTC)
    # A slot five minutes ago makes each scheduler's start post the missed digest at once.
    slot = (now - timedelta(minutes=5)).astimezone(UTC)
    schedulers = []
    for _ in range(2):
        digest = make_digest_service(services, digest_time=time(slot.hour, slot.minute), digest_timezone="UTC")
        scheduler = BackgroundScheduler(timezone="UTC")
        start(scheduler, services, digest=digest, now=now)
        schedulers.append(scheduler)

    slack.wait_for(lambda sim: sim.messages(CHANNEL), timeout=10)
    clock.sleep(1.0)
    for scheduler in schedulers:
        scheduler.shutdown(wait=True)

    assert len(slack.messages(CHANNEL)) == 1


def test_start_without_missed_slot_posts_nothing(services, slack):
    add_red_account(services.engine)
    now = datetime.now(UTC)
    later = (now + timedelta(hours=2)).astimezone(UTC)
    digest = make_digest_service(services, digest_time=time(later.hour, later.minute), digest_timezone="UTC")
    scheduler = BackgroundScheduler(timezone="UTC")

    start(scheduler, services, digest=digest, now=now)
    clock.sleep(0.5)
    jobs = [job.id for job in scheduler.get_jobs()]
    scheduler.shutdown(wait=True)

    assert slack.messages(CHANNEL) == []
    assert f"{DIGEST_JOB_ID}_catch_up" not in jobs


def test_digest_posted_status_in_outcome(services, slack):
    add_red_account(services.engine)

    outcomes = make_digest_service(services).post_digest()

    assert outcomes[0].status == POSTED


def test_start_embedded_off(services):
    services.settings = replace(services.settings, scheduler="off")

    assert start_embedded(services) is None


def test_start_embedded_runs_jobs(services):
    scheduler = start_embedded(services)
    jobs = [job.id for job in scheduler.get_jobs()]
    scheduler.shutdown(wait=True)

    assert DIGEST_JOB_ID in jobs
    assert REFRESH_JOB_ID in jobs


def test_clock_posts_missed_digest(services, slack, database_url):
    add_red_account(services.engine)
    slot = datetime.now(UTC) - timedelta(minutes=5)
    env = {**os.environ, "SLACK_BOT_TOKEN": slack.bot_token, "SLACK_API_URL": slack.api_url, "DATABASE_URL": database_url,
           "DIGEST_CHANNEL": CHANNEL, "DIGEST_TIME": f"{slot:%H:%M}", "TOKEN_ENCRYPTION_KEY": Fernet.generate_key().decode(),
           "CRM_API_URL": "http://127.0.0.1:9"}

    process = subprocess.Popen([sys.executable, "-m", "bot", "clock"], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                               text=True)
    try:
        slack.wait_for(lambda sim: sim.messages(CHANNEL), timeout=30)
    finally:
        process.terminate()
        output, _ = process.communicate(timeout=10)

    assert len(slack.messages(CHANNEL)) == 1
    assert "Scheduler starting with jobs: digest" in output
