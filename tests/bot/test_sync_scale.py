"""One sync of an agency with 1,000 sub-accounts against a rate-limited CRM simulator.

The simulator allows 100 requests per 1 s per company here, ten times the real
100 per 10 s, to keep the test short. The bot's client learns that limit from
the X-RateLimit-* headers of the first response.
"""

from __future__ import annotations

import bisect

import pytest

from bot.simulators.crm import CrmSimulator
from bot.sync import SlackProgress, run_agency_sync
from storage import queries
from storage.db import session_scope
from storage.models import CONNECTED
from tests.bot.test_sync import connect_agency
from tests.conftest import AGENCY_COMPANY_ID, AGENT

MAX_REQUESTS, INTERVAL = 100, 1.0
COMPANY_PATHS = ("/oauth/locationToken", "/locations/search", "/oauth/installedLocations")


@pytest.fixture
def crm():
    simulator = CrmSimulator(rate_limit=(MAX_REQUESTS, INTERVAL))
    simulator.add_company(AGENCY_COMPANY_ID, "Bright Agency")
    simulator.add_bulk_locations(AGENCY_COMPANY_ID, installed=800, not_installed=150, paused=50, transferred=25, outside=25)
    with simulator:
        yield simulator


def max_requests_in_window(times: list[float]) -> int:
    times = sorted(times)
    return max(bisect.bisect_left(times, start + INTERVAL) - index for index, start in enumerate(times))


def test_sync_thousand_accounts_rate_limited(bot):
    agency_id = connect_agency(bot.services, bot.crm)
    # Another client's burst: one 429 with Retry-After in the middle of the mints.
    bot.crm.fail_next("/oauth/locationToken", status=429, headers={"Retry-After": "1"}, after=400)

    summary = run_agency_sync(bot.services, agency_id, progress=SlackProgress(bot.services.slack, AGENT))

    assert summary.status == "finished"
    assert summary.total == 1000
    assert (summary.connected, summary.not_installed, summary.paused) == (800, 150, 50)
    assert (summary.deferred, summary.failed, summary.not_owned) == (0, 0, 0)
    with session_scope(bot.services.engine) as session:
        assert queries.count_accounts_by_status(session=session)[CONNECTED] == 800
    company_times = [request.time for request in bot.crm.requests if request.path in COMPANY_PATHS]
    assert max_requests_in_window(company_times) <= MAX_REQUESTS
    assert bot.slack.dms_to(AGENT)[0]["text"] == "Synced 0 of 1,000 accounts of the agency Bright Agency…"
    assert bot.slack.calls_to("chat.update")[-1].args["text"].startswith("*Sync of the agency Bright Agency finished:* 1,000 accounts.")
