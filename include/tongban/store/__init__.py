"""The item store: runs, pulls, current items and their history, reconciliations and the publish ledger.

SQLite under ``$TONGBAN_HOME`` by default; PostgreSQL (or any SQLAlchemy URL) through the Airflow
Connection ``tongban_db``, else ``TONGBAN_DB_URL`` (:func:`store_url`). The schema is managed by Alembic.

On SQLite every connection runs in WAL mode with ``synchronous=NORMAL`` and a busy timeout
(:func:`sqlite_pragmas`): readers and the one writer do not block each other, and a commit appends to the
write-ahead log without an fsync (the log is synced at checkpoints). A commit is durable once it returns
as far as the application is concerned (a process killed at any moment loses nothing committed), but an
operating-system crash or a power loss may roll back the last commits before the checkpoint; the
database stays consistent. WAL needs every process on the one machine holding the file (its index is
shared memory): the SQLite store is the embedded default for one machine, on a local disk, never on a
network filesystem; several hosts share PostgreSQL.
"""

from __future__ import annotations

import fcntl
import json
import os
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from functools import cache
from importlib import resources
from typing import Any
from urllib.parse import parse_qsl, quote, unquote, urlencode

import msgspec
from alembic import command
from alembic.config import Config
from sqlalchemy import Engine, create_engine, event, text

from tongban.config import home

DB_CONN_ID = "tongban_db"
DB_CONN_VAR = f"AIRFLOW_CONN_{DB_CONN_ID.upper()}"  # the Connection as an environment variable


def store_url(connection: Callable[[str], str | None] | None = None, env: Mapping[str, str] | None = None) -> str:
    """The item store's SQLAlchemy URL. One precedence, for the DAG's tasks, the UI, ``python -m tongban.trace``
    and `make run`'s check alike, so that each reads the store the DAG writes:

    1. the Airflow Connection ``tongban_db``: asked of Airflow through ``connection`` (conn id -> the Connection's
       URI, ``None`` when it is not defined) by a caller running inside Airflow, so whatever secrets backend
       Airflow uses answers (its environment variables first); otherwise read from ``AIRFLOW_CONN_TONGBAN_DB``
       in ``env``, in URI or JSON form, as Airflow reads that variable;
    2. ``TONGBAN_DB_URL`` in ``env``, a SQLAlchemy URL (the store of a process that names no Connection);
    3. SQLite: ``tongban.db`` under ``TONGBAN_HOME`` in ``env``.

    ``env`` defaults to this process's environment; a caller starting Airflow passes the environment it gives it.
    Without ``connection``, a Connection defined only in a secrets backend other than the environment (the
    metadata database, Vault, …) is not seen.
    """
    env = os.environ if env is None else env
    if connection is not None:
        uri = connection(DB_CONN_ID)
    else:
        uri = _variable_uri(env[DB_CONN_VAR]) if env.get(DB_CONN_VAR) else None
    if uri:
        return url_from_uri(uri)
    return env.get("TONGBAN_DB_URL") or f"sqlite:///{home(env) / 'tongban.db'}"


def _variable_uri(value: str) -> str:
    """The URI Airflow's ``Connection.get_uri()`` gives for an ``AIRFLOW_CONN_<ID>`` value: a URI as it is (the
    same store), the JSON form's fields assembled as Airflow assembles them."""
    if not value.strip().startswith("{"):
        return value.strip()
    fields = json.loads(value)
    conn_type = str(fields.get("conn_type") or "")
    conn_type = "postgres" if conn_type == "postgresql" else conn_type.lower().replace("_", "-")
    login, password = fields.get("login"), fields.get("password")
    auth = "" if login is None else quote(login, safe="")
    auth += "" if password is None else ":" + quote(password, safe="")
    uri = f"{conn_type}://{auth}@" if auth else f"{conn_type}://"
    uri += quote(fields.get("host") or "", safe="")
    uri += f":{int(fields['port'])}" if fields.get("port") else ""
    uri += f"/{quote(fields['schema'], safe='')}" if fields.get("schema") else ""
    extra = fields.get("extra")
    if extra:
        as_text = extra if isinstance(extra, str) else json.dumps(extra)
        values = json.loads(as_text)
        query = urlencode(values)
        if values != dict(parse_qsl(query, keep_blank_values=True)):
            query = urlencode({"__extra__": as_text})
        uri += ("?" if fields.get("schema") else "/?") + query
    return uri


def url_from_uri(uri: str) -> str:
    """A SQLAlchemy URL from an Airflow Connection URI (``postgres://`` names no driver there; a SQLite file's
    path comes back percent-encoded, as the Connection's schema from a URI, ``sqlite:///%2Fvar%2Ftongban.db``,
    or as its host from the JSON form, ``sqlite://%2Fvar%2Ftongban.db``)."""
    for scheme in ("postgres://", "postgresql://"):
        if uri.startswith(scheme):
            return "postgresql+psycopg2://" + uri[len(scheme) :]
    if uri.startswith("sqlite://"):
        return "sqlite:///" + unquote(uri.removeprefix("sqlite://").removeprefix("/"))
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


SQLITE_BUSY_TIMEOUT_MS = 30_000  # how long a connection waits for another's write lock before it fails


def _set_sqlite_pragmas(dbapi_connection: Any, _: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")  # first: switching to WAL may wait for a lock
    cursor.execute("PRAGMA journal_mode=WAL")  # kept in the file; every connection asks (a no-op once set)
    cursor.execute("PRAGMA synchronous=NORMAL")  # per connection: in WAL mode, no fsync per commit
    cursor.close()


def sqlite_pragmas(made: Engine) -> Engine:
    """WAL, ``synchronous=NORMAL`` and a busy timeout on every connection of a SQLite engine (see the module's
    docstring for what that means for durability); other databases' engines are left as they are."""
    if made.dialect.name == "sqlite" and not event.contains(made, "connect", _set_sqlite_pragmas):
        event.listen(made, "connect", _set_sqlite_pragmas)
    return made


@cache
def engine(url: str) -> Engine:
    """One engine per URL and process, schema migrated on first use."""
    migrate(url)
    return sqlite_pragmas(
        create_engine(
            url,
            pool_pre_ping=True,
            json_serializer=lambda v: msgspec.json.encode(v, enc_hook=str).decode(),  # item records are large
            json_deserializer=msgspec.json.decode,
        )
    )
