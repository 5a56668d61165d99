"""The item store: runs, pulls, current items and their history, reconciliations and the publish ledger.

SQLite under ``$TONGBAN_HOME`` by default; PostgreSQL (or any SQLAlchemy URL) through
``TONGBAN_DB_URL`` or the Airflow Connection ``tongban_db``. The schema is managed by Alembic.
"""

from __future__ import annotations

import fcntl
import os
from collections.abc import Iterator
from contextlib import contextmanager
from functools import cache
from importlib import resources
from pathlib import Path

import msgspec
from alembic import command
from alembic.config import Config
from sqlalchemy import Engine, create_engine, text

from tongban.config import home

DB_CONN_ID = "tongban_db"


def default_url(under: Path | None = None) -> str:
    """TONGBAN_DB_URL, else SQLite in ``under`` (default: ``$TONGBAN_HOME``)."""
    return os.environ.get("TONGBAN_DB_URL") or f"sqlite:///{(under or home()) / 'tongban.db'}"


def url_from_uri(uri: str) -> str:
    """A SQLAlchemy URL from an Airflow Connection URI (``postgres://`` names no driver there)."""
    for scheme in ("postgres://", "postgresql://"):
        if uri.startswith(scheme):
            return "postgresql+psycopg2://" + uri[len(scheme) :]
    return uri


def alembic_config(url: str) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(resources.files("tongban.store").joinpath("migrations")))
    cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return cfg


_MIGRATION_LOCK = 0x746F6E6762616E  # PostgreSQL advisory lock key ("tongban")


@contextmanager
def _migration_lock(url: str) -> Iterator[None]:
    """One migration at a time: the first tasks of a run start together on several workers, and two
    Alembic upgrades of a fresh database would both create its tables. PostgreSQL: a session advisory
    lock; SQLite: an exclusive lock on a file beside the database (SQLite is single-machine anyway)."""
    if url.startswith("sqlite:///"):
        with open(url.removeprefix("sqlite:///") + ".migrate.lock", "a") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)  # released when the file is closed
            yield
        return
    locker = create_engine(url)
    try:
        with locker.connect() as conn:
            if conn.dialect.name != "postgresql":
                yield
                return
            conn.execute(text("SELECT pg_advisory_lock(:key)"), {"key": _MIGRATION_LOCK})
            try:
                yield
            finally:
                conn.execute(text("SELECT pg_advisory_unlock(:key)"), {"key": _MIGRATION_LOCK})
    finally:
        locker.dispose()


def migrate(url: str) -> None:
    """Bring the store's schema at ``url`` up to the newest revision (idempotent, one caller at a time)."""
    if url.startswith("sqlite:///"):
        home().mkdir(parents=True, exist_ok=True)
    with _migration_lock(url):
        command.upgrade(alembic_config(url), "head")


@cache
def engine(url: str) -> Engine:
    """One engine per URL and process, schema migrated on first use."""
    migrate(url)
    return create_engine(
        url,
        pool_pre_ping=True,
        json_serializer=lambda v: msgspec.json.encode(v, enc_hook=str).decode(),  # item records are large
        json_deserializer=msgspec.json.decode,
    )
