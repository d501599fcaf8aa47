"""Engine and sessions for SQLite and PostgreSQL."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime

from sqlalchemy import Engine, create_engine, event, text
from sqlalchemy.pool import NullPool
from sqlmodel import Session

logger = logging.getLogger(__name__)

SQLITE_BUSY_TIMEOUT_MS = 30_000


def utcnow() -> datetime:
    """Return the current time in UTC; every table stores aware UTC datetimes."""
    return datetime.now(UTC)


def make_engine(url: str) -> Engine:
    """Create an engine; SQLite gets WAL, a busy timeout, foreign keys and explicit BEGIN."""
    if not url.startswith("sqlite"):
        return create_engine(url, pool_pre_ping=True, pool_size=5, max_overflow=10)

    # Each thread opens its own SQLite connection, and WAL lets readers go on
    # while one writer holds the lock.
    engine = create_engine(url, poolclass=NullPool, connect_args={"check_same_thread": False, "timeout": SQLITE_BUSY_TIMEOUT_MS / 1000})

    @event.listens_for(engine, "connect")
    def _configure(dbapi_connection, _record):
        # pysqlite opens transactions lazily and never with IMMEDIATE; turning its
        # handling off lets the "begin" hook below emit BEGIN itself.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _begin(connection):
        if connection.get_execution_options().get("sqlite_immediate"):
            connection.exec_driver_sql("BEGIN IMMEDIATE")
        else:
            connection.exec_driver_sql("BEGIN")

    return engine


def is_sqlite(engine: Engine) -> bool:
    return engine.dialect.name == "sqlite"


@contextmanager
def session_scope(engine: Engine) -> Iterator[Session]:
    """Yield a session that commits on success and rolls back on error."""
    session = Session(engine, expire_on_commit=False)
    try:
        yield session
        session.commit()
    except BaseException:
        session.rollback()
        raise
    finally:
        session.close()


@contextmanager
def write_lock_scope(engine: Engine) -> Iterator[Session]:
    """Yield a session whose transaction serialises with other writers.

    On SQLite the transaction starts with BEGIN IMMEDIATE, which takes the
    database's write lock at once, across threads and processes. On PostgreSQL
    the caller locks its rows with SELECT ... FOR UPDATE (`with_for_update`).
    """
    bound = engine.execution_options(sqlite_immediate=True) if is_sqlite(engine) else engine
    with session_scope(bound) as session:
        yield session


def check_database(engine: Engine) -> bool:
    """Tell whether the database responds to a trivial query."""
    try:
        with engine.connect() as connection:
            connection.execute(text("SELECT 1"))
        return True
    except Exception:
        logger.exception("Database check failed")
        return False
