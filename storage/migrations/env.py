"""Alembic environment: runs migrations on the connection or URL that `storage.migrate` passes in."""

from alembic import context
from sqlalchemy import create_engine
from sqlmodel import SQLModel

import storage.digest_models  # noqa: F401  (each import registers its tables on SQLModel.metadata)
import storage.lifecycle_models  # noqa: F401
import storage.models  # noqa: F401
import storage.sync_models  # noqa: F401

target_metadata = SQLModel.metadata
config = context.config


def run_migrations(connection) -> None:
    context.configure(connection=connection, target_metadata=target_metadata, render_as_batch=connection.dialect.name == "sqlite")
    with context.begin_transaction():
        context.run_migrations()


connection = config.attributes.get("connection")
if connection is not None:
    run_migrations(connection)
else:
    engine = create_engine(config.get_main_option("sqlalchemy.url"))
    with engine.connect() as new_connection:
        run_migrations(new_connection)
        new_connection.commit()
