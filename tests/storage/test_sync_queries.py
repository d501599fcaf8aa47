"""Sync queries: the agency lease and the account upsert, on SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import timedelta

from storage import queries, sync_queries
from storage.db import session_scope, utcnow, write_lock_scope
from storage.models import Connection


def make_agency(engine) -> int:
    with session_scope(engine) as session:
        return queries.get_or_create_agency(session=session, company_id="comp-1", name="Bright Agency").id


def acquire(engine, agency_id: int, holder: str, *, seconds: int = 60) -> bool:
    with write_lock_scope(engine) as session:
        return sync_queries.acquire_sync_lease(session=session, agency_id=agency_id, holder=holder, now=utcnow(),
                                               expires_at=utcnow() + timedelta(seconds=seconds))


def test_lease_held_rejects_other(engine):
    agency_id = make_agency(engine)

    assert acquire(engine, agency_id, "first") is True
    assert acquire(engine, agency_id, "second") is False
    assert acquire(engine, agency_id, "first") is True


def test_lease_expired_taken_over(engine):
    agency_id = make_agency(engine)
    acquire(engine, agency_id, "dead", seconds=-1)

    assert acquire(engine, agency_id, "next") is True
    with session_scope(engine) as session:
        assert sync_queries.renew_sync_lease(session=session, agency_id=agency_id, holder="dead",
                                             expires_at=utcnow()) is False


def test_lease_released_frees_agency(engine):
    agency_id = make_agency(engine)
    acquire(engine, agency_id, "first")

    with session_scope(engine) as session:
        sync_queries.release_sync_lease(session=session, agency_id=agency_id, holder="first")

    assert acquire(engine, agency_id, "second") is True


def test_upsert_matches_location_id(engine):
    agency_id = make_agency(engine)

    with session_scope(engine) as session:
        first, created = sync_queries.upsert_synced_account(session=session, location_id="loc-1", name="Acme Dental",
                                                            agency_id=agency_id, company_id="comp-1")
    with session_scope(engine) as session:
        second, created_again = sync_queries.upsert_synced_account(session=session, location_id="loc-1", name="Acme  Dental Care",
                                                                   agency_id=None, company_id="comp-2")

    assert (created, created_again) == (True, False)
    assert second.id == first.id
    assert (second.name, second.name_key) == ("Acme  Dental Care", "acme dental care")
    assert (second.agency_id, second.company_id) == (None, "comp-2")


def test_last_run_before_given_run(engine):
    agency_id = make_agency(engine)
    with session_scope(engine) as session:
        older = sync_queries.create_sync_run(session=session, agency_id=agency_id, requester_user_id=None, started_at=utcnow())
        newer = sync_queries.create_sync_run(session=session, agency_id=agency_id, requester_user_id="U1", started_at=utcnow())

        assert sync_queries.get_last_sync_run(session=session, agency_id=agency_id).id == newer.id
        assert sync_queries.get_last_sync_run(session=session, agency_id=agency_id, before_run_id=newer.id).id == older.id


def test_location_connection_skips_company_token(engine):
    agency_id = make_agency(engine)
    with session_scope(engine) as session:
        account = queries.create_account(session=session, name="Acme Dental", location_id="loc-1")
        for user_type, owner in (("Company", {"agency_id": agency_id}), ("Location", {"account_id": account.id})):
            session.add(Connection(user_type=user_type, location_id="loc-1", access_token_encrypted="x", expires_at=utcnow(),
                                   method="agency", **owner))

    with session_scope(engine) as session:
        found = sync_queries.get_location_connection(session=session, location_id="loc-1")

        assert found.user_type == "Location"
        assert found.account_id == account.id
        assert sync_queries.get_location_connection(session=session, location_id="loc-2") is None
