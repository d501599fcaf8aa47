from __future__ import annotations

from sqlalchemy import inspect

from storage.db import make_engine
from storage.migrate import downgrade, upgrade

TABLES = {"agency", "account", "connection", "oauth_state", "event"}


def test_upgrade_creates_tables(engine):
    names = set(inspect(engine).get_table_names())

    assert TABLES <= names
    assert "alembic_version" in names


def test_upgrade_is_repeatable(engine):
    upgrade(engine)

    assert TABLES <= set(inspect(engine).get_table_names())


def test_downgrade_to_base_and_back(database_url):
    engine = make_engine(database_url)

    downgrade(engine, "base")
    assert not TABLES & set(inspect(engine).get_table_names())

    upgrade(engine)
    assert TABLES <= set(inspect(engine).get_table_names())
    engine.dispose()
