"""The item store on SQLite: WAL, synchronous=NORMAL and a busy timeout on every connection, so tasks in
other processes keep reading while one writes (and a writer commits while they read)."""

from __future__ import annotations

import multiprocessing
import threading
from multiprocessing.synchronize import Event
from typing import Any

import pytest
import sqlalchemy as sa

from tests.test_publish import PG_URL
from tongban.store import SQLITE_BUSY_TIMEOUT_MS, sqlite_pragmas
from tongban.store.repo import ItemStore

NORMAL = 1  # PRAGMA synchronous: 0 OFF, 1 NORMAL, 2 FULL


def _pragmas(conn: Any) -> tuple[str, int, int]:
    cursor = conn.cursor()
    names = ("journal_mode", "synchronous", "busy_timeout")
    found = tuple(cursor.execute(f"PRAGMA {name}").fetchone()[0] for name in names)
    cursor.close()
    return found  # type: ignore[return-value]


def test_every_store_connection_runs_in_wal_mode_with_synchronous_normal(tmp_path) -> None:
    store = ItemStore(f"sqlite:///{tmp_path / 'items.db'}")
    store.ensure_run("run-1")
    connections = [store.engine.raw_connection() for _ in range(2)]  # two pooled connections, both set up
    try:
        assert [_pragmas(c) for c in connections] == [("wal", NORMAL, SQLITE_BUSY_TIMEOUT_MS)] * 2
    finally:
        for c in connections:
            c.close()
    # the mode is the file's from its creation on (the migration's connection set it too)
    with sa.create_engine(f"sqlite:///{tmp_path / 'items.db'}").connect() as plain:
        assert plain.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert plain.exec_driver_sql("PRAGMA synchronous").scalar() != NORMAL  # per connection: not ours


@pytest.mark.postgres
def test_postgresql_engines_are_left_as_they_are() -> None:
    postgres = sqlite_pragmas(sa.create_engine(PG_URL))  # a SQLite PRAGMA on connecting would fail there
    try:
        with postgres.connect() as conn:
            assert conn.execute(sa.text("SELECT 1")).scalar() == 1
    finally:
        postgres.dispose()


def _reader(url: str, ready: Any, go: Event, out: Any) -> None:
    """Hold a read transaction open across the writer's commit, then read again after it."""
    raw = ItemStore(url).engine.raw_connection()
    try:
        cursor = raw.cursor()
        mode = _pragmas(raw)[0]
        cursor.execute("BEGIN")
        before = cursor.execute("SELECT count(*) FROM runs").fetchone()[0]
        ready.put(before)
        go.wait(60)
        during = cursor.execute("SELECT count(*) FROM runs").fetchone()[0]  # the same snapshot
        raw.commit()
        after = cursor.execute("SELECT count(*) FROM runs").fetchone()[0]
        out.put((mode, before, during, after))
    finally:
        raw.close()


def test_two_processes_read_while_one_writes(tmp_path) -> None:
    url = f"sqlite:///{tmp_path / 'items.db'}"
    store = ItemStore(url)
    store.ensure_run("run-1")
    spawn = multiprocessing.get_context("spawn")  # no SQLite connection crosses a fork
    ready, out, go = spawn.Queue(), spawn.Queue(), spawn.Event()
    readers = [spawn.Process(target=_reader, args=(url, ready, go, out)) for _ in range(2)]
    for reader in readers:
        reader.start()
    try:
        assert [ready.get(timeout=60) for _ in readers] == [1, 1]  # both inside a read transaction now
        # while they read, this process writes and commits: with a rollback journal the commit would wait
        # for both readers to finish (they wait for ``go``, so it would not finish at all)
        writer = threading.Thread(target=store.ensure_run, args=("run-2",))
        writer.start()
        writer.join(20)
        committed = not writer.is_alive()
        go.set()
        writer.join(SQLITE_BUSY_TIMEOUT_MS / 1000 + 5)
        assert committed, "the writer waited for the readers"
        results = sorted(out.get(timeout=60) for _ in readers)
    finally:
        go.set()
        for reader in readers:
            reader.join(60)
    assert results == [("wal", 1, 1, 2)] * 2  # read on its snapshot during the commit, the new row after it
    assert all(reader.exitcode == 0 for reader in readers)
