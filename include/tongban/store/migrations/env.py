"""Alembic environment of the item store; the URL comes from the caller (tongban.store.migrate)."""

from __future__ import annotations

from alembic import context
from sqlalchemy import create_engine

from tongban.store import sqlite_pragmas
from tongban.store.schema import Base

config = context.config
url = config.get_main_option("sqlalchemy.url")


def run() -> None:
    if context.is_offline_mode():
        context.configure(url=url, target_metadata=Base.metadata, literal_binds=True)
        with context.begin_transaction():
            context.run_migrations()
        return
    connectable = config.attributes.get("connection") or sqlite_pragmas(create_engine(url))  # WAL from the start
    with connectable.connect() if hasattr(connectable, "connect") else connectable as connection:
        context.configure(connection=connection, target_metadata=Base.metadata, render_as_batch=True)
        with context.begin_transaction():
            context.run_migrations()


run()
