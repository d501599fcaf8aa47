"""Measure Connect Accounts throughput against the CRM simulator at its rate limit.

Each run starts a fresh CRM simulator that allows `--max-requests` per
`--interval` seconds per company (default: the CRM's 100 per 10 s), a fresh
SQLite database and fresh services, connects an agency of `--accounts`
installed sub-accounts, and times one `run_agency_sync`. Every installed
sub-account costs one mint request, so the best possible rate is the limit
itself, minus the listing pages. The script prints each run and the median
of accounts per second and of its ratio to the limit.

    python bench/sync_bench.py --accounts 1000 --runs 3
"""

from __future__ import annotations

import argparse
import logging
import statistics
import sys
import tempfile
import time
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

from cryptography.fernet import Fernet

from bot.accounts import set_agency_status
from bot.services import build_services
from bot.settings import Settings
from bot.simulators.crm import CrmSimulator
from bot.simulators.slack import SlackSimulator
from bot.sync import run_agency_sync
from storage import queries
from storage.db import make_engine, session_scope
from storage.migrate import upgrade
from storage.models import METHOD_AGENCY

COMPANY_ID = "comp-bench"


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--accounts", type=int, default=1000, help="installed sub-accounts in the agency (default 1000)")
    parser.add_argument("--runs", type=int, default=3, help="number of timed runs (default 3)")
    parser.add_argument("--max-requests", type=int, default=100, help="requests the simulator allows per interval per company (default 100)")
    parser.add_argument("--interval", type=float, default=10.0, help="length of the rate-limit window in seconds (default 10)")
    return parser.parse_args(argv)


def one_run(args: argparse.Namespace, directory: Path, number: int) -> float:
    """Sync a fresh agency once and return the seconds that the sync took."""
    crm = CrmSimulator(rate_limit=(args.max_requests, args.interval))
    crm.add_company(COMPANY_ID, "Bench Agency")
    crm.add_bulk_locations(COMPANY_ID, installed=args.accounts)

    with crm, SlackSimulator() as slack:
        database_url = f"sqlite:///{directory / f'bench-{number}.db'}"
        engine = make_engine(database_url)
        upgrade(engine)
        settings = Settings(
            slack_bot_token=slack.bot_token, slack_api_url=slack.api_url, database_url=database_url,
            crm_client_id=crm.client_id, crm_client_secret=crm.client_secret,
            crm_authorize_url=f"{crm.url}/oauth/chooselocation", crm_api_url=crm.url,
            token_encryption_key=Fernet.generate_key().decode(),
        )
        services = build_services(settings, engine=engine)
        try:
            agency_id = connect_agency(services, crm)
            started = time.perf_counter()
            summary = run_agency_sync(services, agency_id)
            seconds = time.perf_counter() - started
        finally:
            services.close()

    if summary.connected != args.accounts:
        raise RuntimeError(f"Run {number} connected {summary.connected} of {args.accounts} accounts ({summary.status})")
    return seconds


def connect_agency(services, crm: CrmSimulator) -> int:
    callback = crm.authorize(services.crm.build_authorize_url("bench"), f"company:{COMPANY_ID}")
    grant = services.crm.exchange_code(parse_qs(urlsplit(callback).query)["code"][0], user_type="Company")
    with session_scope(services.engine) as session:
        agency = queries.get_or_create_agency(session=session, company_id=grant.company_id, name="Bench Agency")
        services.connections.tokens.save_grant(session, grant, method=METHOD_AGENCY, agency_id=agency.id)
        set_agency_status(session, agency, connected=True)
        return agency.id


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    logging.basicConfig(level=logging.WARNING)
    limit_per_second = args.max_requests / args.interval
    print(f"{args.accounts} installed accounts, limit {args.max_requests} requests per {args.interval:g} s "
          f"({limit_per_second:g} per s), {args.runs} runs")

    rates = []
    with tempfile.TemporaryDirectory() as directory:
        for number in range(1, args.runs + 1):
            seconds = one_run(args, Path(directory), number)
            rate = args.accounts / seconds
            rates.append(rate)
            print(f"run {number}: {seconds:.1f} s, {rate:.2f} accounts/s, ratio {rate / limit_per_second:.3f}")

    median = statistics.median(rates)
    print(f"median: {median:.2f} accounts/s, ratio {median / limit_per_second:.3f} of the limit")
    return 0


if __name__ == "__main__":
    sys.exit(main())
