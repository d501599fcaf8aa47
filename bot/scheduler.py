"""The periodic jobs and the APScheduler that runs them.

`crm-bot clock` runs them in a BlockingScheduler, and `crm-bot serve` in a
BackgroundScheduler when SCHEDULER=embedded. Each job guards its own effect in
the database, so a clock and an embedded scheduler running at once, or two
clocks, still post one digest per channel and day.

APScheduler keeps its jobs in memory here. A missed fire time is not
replayed after a restart, so `start` runs today's digest itself when the
process starts within the grace time after the slot.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.schedulers.base import BaseScheduler
from apscheduler.schedulers.blocking import BlockingScheduler
from apscheduler.triggers.cron import CronTrigger
from apscheduler.triggers.interval import IntervalTrigger

from bot.digest_service import DigestService
from bot.settings import Settings
from storage.db import utcnow

logger = logging.getLogger(__name__)

DIGEST_JOB_ID = "digest"
REFRESH_JOB_ID = "refresh_connections"
HEALTH_JOB_ID = "health_check"

# APScheduler 3's default misfire_grace_time is 1 s, which drops a daily job after any pause.
MISFIRE_GRACE = timedelta(hours=1)
# bot.lifecycle refreshes tokens that expire within 15 minutes, so it must run more often than that.
REFRESH_INTERVAL = timedelta(minutes=5)
# The daily health check runs this long before the digest, so the digest lists what it found.
HEALTH_CHECK_LEAD = timedelta(hours=1)


def digest_trigger(settings: Settings) -> CronTrigger:
    """Return the trigger of DIGEST_TIME in DIGEST_TIMEZONE on DIGEST_DAYS."""
    return CronTrigger(
        day_of_week=settings.digest_days,
        hour=settings.digest_time.hour,
        minute=settings.digest_time.minute,
        timezone=ZoneInfo(settings.digest_timezone),
    )


def health_check_trigger(settings: Settings) -> CronTrigger:
    """Return a daily trigger HEALTH_CHECK_LEAD before DIGEST_TIME, in DIGEST_TIMEZONE."""
    digest_minute = settings.digest_time.hour * 60 + settings.digest_time.minute
    minute = (digest_minute - int(HEALTH_CHECK_LEAD.total_seconds() // 60)) % (24 * 60)
    return CronTrigger(hour=minute // 60, minute=minute % 60, timezone=ZoneInfo(settings.digest_timezone))


def missed_digest_slot(settings: Settings, now: datetime) -> datetime | None:
    """Return the digest fire time that passed within MISFIRE_GRACE before `now`, or None."""
    slot = digest_trigger(settings).get_next_fire_time(None, now - MISFIRE_GRACE)
    if slot is not None and slot <= now:
        return slot
    return None


def run_digest_job(digest: DigestService) -> None:
    """Post the day's digest; every failure is logged, so the scheduler keeps running."""
    try:
        for outcome in digest.post_digest():
            logger.info("Digest job: %s", outcome.describe())
    except Exception:
        logger.exception("Digest job failed")


def add_jobs(scheduler: BaseScheduler, services, *, digest: DigestService | None = None) -> list[str]:
    """Add every periodic job to `scheduler` and return their ids."""
    digest = digest or DigestService.from_services(services)
    settings = digest.settings
    common = {"replace_existing": True, "coalesce": True, "max_instances": 1,
              "misfire_grace_time": int(MISFIRE_GRACE.total_seconds())}

    # Daily digest
    added = []
    if settings.digest_channels:
        scheduler.add_job(run_digest_job, digest_trigger(settings), args=[digest], id=DIGEST_JOB_ID, name="daily digest", **common)
        added.append(DIGEST_JOB_ID)
    else:
        logger.warning("DIGEST_CHANNEL is not set, so no daily digest is scheduled")

    # Token refresh and health checks, written in bot.lifecycle
    lifecycle_jobs = (
        (REFRESH_JOB_ID, "refresh_due_connections", IntervalTrigger(seconds=int(REFRESH_INTERVAL.total_seconds()))),
        (HEALTH_JOB_ID, "run_health_check", health_check_trigger(settings)),
    )
    for job_id, name, trigger in lifecycle_jobs:
        job = _lifecycle_job(name)
        if job is None:
            continue
        scheduler.add_job(_guarded(job, name), trigger, args=[services], id=job_id, name=name, **common)
        added.append(job_id)
    return added


def start(scheduler: BaseScheduler, services, *, digest: DigestService | None = None, now: datetime | None = None) -> None:
    """Add the jobs, post a digest that this start missed, and start the scheduler.

    A BlockingScheduler's start() returns only at shutdown.
    """
    digest = digest or DigestService.from_services(services)
    jobs = add_jobs(scheduler, services, digest=digest)
    logger.info("Scheduler starting with jobs: %s", ", ".join(jobs) or "none")

    slot = missed_digest_slot(digest.settings, now or utcnow()) if DIGEST_JOB_ID in jobs else None
    if slot is not None:
        # The row per (channel, local date) makes this a no-op when the digest already went out.
        logger.info("Today's digest was due at %s; posting it now unless it is already posted", slot.isoformat())
        scheduler.add_job(run_digest_job, args=[digest], id=f"{DIGEST_JOB_ID}_catch_up", name="missed daily digest",
                          replace_existing=True, misfire_grace_time=int(MISFIRE_GRACE.total_seconds()))
    scheduler.start()


def run_clock(services) -> None:
    """Run every job in this process until it is stopped (the `clock` process)."""
    scheduler = BlockingScheduler(timezone="UTC")
    try:
        start(scheduler, services)
    except (KeyboardInterrupt, SystemExit):
        logger.info("Clock stopped")


def start_embedded(services) -> BackgroundScheduler | None:
    """Start the jobs in a background thread of the web process when SCHEDULER=embedded."""
    if services.settings.scheduler != "embedded":
        logger.info("SCHEDULER=%s: the jobs run in the clock process", services.settings.scheduler)
        return None
    scheduler = BackgroundScheduler(timezone="UTC", daemon=True)
    start(scheduler, services)
    return scheduler


def _lifecycle_job(name: str) -> Callable | None:
    # NOTE: the lifecycle jobs are looked up by name at start-up. A build without them logs a
    # warning and still runs the digest, so a renamed job shows only in that warning.
    try:
        from bot import lifecycle
    except ImportError:
        logger.warning("bot.lifecycle is missing, so the %s job is not scheduled", name)
        return None
    job = getattr(lifecycle, name, None)
    if job is None:
        logger.warning("bot.lifecycle has no %s(services), so that job is not scheduled", name)
    return job


def _guarded(job: Callable, name: str) -> Callable:
    def run(services) -> None:
        try:
            summary = job(services)
        except Exception:
            logger.exception("Job %s failed", name)
        else:
            logger.info("Job %s finished: %s", name, summary)

    run.__name__ = name
    return run
