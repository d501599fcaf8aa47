"""The sandbox's seeded world: one agency of 18 sub-accounts in the CRM, a sub-account
transferred to another agency, two accounts outside the agency, and three Slack users.

Each kind of account shows one step of the connection procedure:

* installed sub-accounts connect through the agency sync;
* sub-accounts without the app stay red until a Direct Connection (the stubborn ones);
* a paused sub-account reports "Location is not active";
* the transferred sub-account fails with "You don't own this account";
* the external accounts need a Direct Connection from the start.
"""

from __future__ import annotations

from sqlalchemy import Engine

from bot.simulators.crm import CrmSimulator
from bot.simulators.slack import SlackSimulator
from storage import queries
from storage.db import session_scope

AGENCY_COMPANY_ID = "comp-bright-smile"
AGENCY_NAME = "Bright Smile Agency"

AGENT = "U0AGENT01"
OWNER = "U0OWNER01"
ADMIN = "U0ADMIN01"
USERS = (
    (AGENT, "agent", "Alex (support agent)"),
    (OWNER, "dana", "Dana (account owner)"),
    (ADMIN, "sam", "Sam (agency admin)"),
)
DIGEST_CHANNEL = "C0DIGEST1"
DIGEST_CHANNEL_NAME = "crm-digest"

INSTALLED = (
    "Acme Dental", "Bolt Plumbing", "Cedar Law", "Dune Surf School", "Elm Street Bakery", "Fern Yoga",
    "Granite Roofing", "Harbor Vets", "Iris Florist", "Juniper Spa", "Kite Coffee", "Lumen Optics",
    "Maple Tutors", "Nova Fitness",
)
NOT_INSTALLED = ("Oak Hardware", "Pine Pediatrics", "Quartz Jewelers")
PAUSED = ("Ridge Auto",)

# (location id, name, company id, company name, owner); recorded in the bot but outside the agency in the CRM.
TRANSFERRED = ("loc-summit-realty", "Summit Realty", "comp-peak-holdings", "Peak Holdings", OWNER)
EXTERNAL = (
    ("loc-tidal-marina", "Tidal Marina", "comp-coastline", "Coastline Partners", OWNER),
    ("loc-union-barbers", "Union Barbers", "comp-independent", "Independent Shops", AGENT),
)


def location_id(name: str) -> str:
    """Return the sandbox's location id of a sub-account name, such as "loc-acme-dental"."""
    return "loc-" + name.lower().replace(" ", "-")


def seed_crm(crm: CrmSimulator) -> None:
    """Add the agency, its sub-accounts and the companies outside it to the CRM simulator."""
    crm.add_company(AGENCY_COMPANY_ID, AGENCY_NAME)
    for name in INSTALLED:
        crm.add_location(location_id(name), name, AGENCY_COMPANY_ID)
    for name in NOT_INSTALLED:
        crm.add_location(location_id(name), name, AGENCY_COMPANY_ID, installed=False)
    for name in PAUSED:
        crm.add_location(location_id(name), name, AGENCY_COMPANY_ID, active=False)

    for loc_id, name, company_id, company_name, _owner in (TRANSFERRED, *EXTERNAL):
        crm.add_company(company_id, company_name)
        crm.add_location(loc_id, name, company_id)


def seed_slack(slack: SlackSimulator) -> None:
    for user_id, name, real_name in USERS:
        slack.add_user(user_id, name, real_name=real_name, tz="UTC")
    slack.add_channel(DIGEST_CHANNEL, DIGEST_CHANNEL_NAME, member=True)


def seed_bot(engine: Engine) -> bool:
    """Record the transferred and external accounts in the bot, once. Return whether it seeded.

    The transferred account still points at the agency, as it did before the CRM moved it.
    """
    with session_scope(engine) as session:
        if queries.get_agency_by_company_id(session=session, company_id=AGENCY_COMPANY_ID) is not None:
            return False
        agency = queries.get_or_create_agency(session=session, company_id=AGENCY_COMPANY_ID, name=AGENCY_NAME)

        loc_id, name, _company_id, _company_name, owner = TRANSFERRED
        account = queries.create_account(session=session, name=name, location_id=loc_id, agency_id=agency.id,
                                         company_id=AGENCY_COMPANY_ID, owner_user_id=owner)
        queries.add_event(session=session, kind="created", account_id=account.id, detail="Seeded by the sandbox")

        for loc_id, name, company_id, _company_name, owner in EXTERNAL:
            account = queries.create_account(session=session, name=name, location_id=loc_id, company_id=company_id,
                                             owner_user_id=owner)
            queries.add_event(session=session, kind="created", account_id=account.id, detail="Seeded by the sandbox")
    return True
