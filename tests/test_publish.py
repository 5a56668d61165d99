"""Exactly-once publishing against the real platform simulator, with the item store on SQLite and PostgreSQL."""

from __future__ import annotations

import itertools
import os
from collections.abc import Iterator
from typing import Any

import pytest
import requests
import sqlalchemy as sa

from tests.conftest import make_record
from tongban.http import HttpSettings
from tongban.model import content_hash
from tongban.publish import PlatformClient, PublishError, idempotency_key, publish
from tongban.reconcile import reconcile
from tongban.simulators.credentials import platform_credentials
from tongban.store import migrate
from tongban.store.repo import ItemStore

PG_URL = os.environ.get("TONGBAN_TEST_PG_URL", "postgresql+psycopg2://postgres@127.0.0.1:5432/test")
_regions = itertools.count(1)


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def store(request: pytest.FixtureRequest, tmp_path) -> Iterator[ItemStore]:
    if request.param == "sqlite":
        yield ItemStore(f"sqlite:///{tmp_path / 'items.db'}")
        return
    schema = f"tongban_test_{os.getpid()}_{next(_regions)}"
    admin = sa.create_engine(PG_URL)
    with admin.begin() as conn:
        conn.execute(sa.text(f"CREATE SCHEMA {schema}"))
    try:
        yield ItemStore(f"{PG_URL}?options=-csearch_path%3D{schema}")
    finally:
        with admin.begin() as conn:
            conn.execute(sa.text(f"DROP SCHEMA {schema} CASCADE"))
        admin.dispose()


@pytest.fixture
def region() -> str:
    """A region of its own for each test, so tests share the simulator without sharing data."""
    return f"49{os.getpid() % 100:02d}{next(_regions) % 100:02d}"


@pytest.fixture
def client(simulators: Any) -> Iterator[PlatformClient]:
    settings = HttpSettings(retries=3, backoff=0.01, jitter=0.01, read_timeout=1.0)
    yield PlatformClient(simulators.platform, **platform_credentials(simulators.state_dir), settings=settings)
    requests.put(f"{simulators.platform}/admin/faults", json={}, timeout=5).raise_for_status()


def faults(simulators: Any, **values: Any) -> None:
    requests.put(f"{simulators.platform}/admin/faults", json=values, timeout=5).raise_for_status()


def items(region: str, n: int, start: int = 0, **overrides: Any) -> list[dict[str, Any]]:
    return [make_record(partner=region, catalog_code=f"0001{start + i:05d}000", **overrides) for i in range(n)]


def assert_holds_exactly(client: PlatformClient, region: str, records: list[dict[str, Any]]) -> None:
    held = client.items(region)
    assert len(held) == len({r["task_code"] for r in held}), "duplicates on the platform"
    assert {r["task_code"]: content_hash(r) for r in held} == {r["task_code"]: content_hash(r) for r in records}


def test_batches_land_once_and_rerun_sends_nothing(client, store, region) -> None:
    wanted = items(region, 7)
    recon = reconcile(wanted, client.items(region))
    first = publish(client, region, "run-1", recon, store, batch_size=3)
    assert first.published == 7 and len(first.batches) == 3
    assert_holds_exactly(client, region, wanted)
    again = publish(client, region, "run-1", recon, store, batch_size=3)  # a re-run of the same task
    assert [b["key"] for b in again.batches] == [b["key"] for b in first.batches]
    assert all(b["replayed"] for b in again.batches)
    assert_holds_exactly(client, region, wanted)
    assert [e["status"] for e in store.ledger("run-1", region)] == ["acked"] * 3


def test_changes_and_removals_are_recorded_in_history(client, store, region) -> None:
    old = items(region, 3)
    publish(client, region, "run-1", reconcile(old, []), store)
    new = [{**old[0], "result": "新的办理结果"}, old[1]]
    recon = reconcile(new, client.items(region))
    assert recon.counts()["changed"] == 1 and recon.counts()["removed"] == 1
    publish(client, region, "run-2", recon, store)
    assert_holds_exactly(client, region, new)
    [added, changed] = store.history(region, old[0]["task_code"])
    assert (added["kind"], changed["kind"], changed["element"]) == ("added", "changed", "result")
    assert (changed["old"], changed["new"], changed["run_id"]) == (old[0]["result"], "新的办理结果", "run-2")
    assert [h["kind"] for h in store.history(region, old[2]["task_code"])] == ["added", "removed"]
    assert set(store.current(region)) == {r["task_code"] for r in new}


def test_failure_in_the_middle_of_a_batch_is_retried_to_the_exact_list(client, store, region, simulators) -> None:
    wanted = items(region, 10)
    faults(simulators, fail_mid_batch=1)
    result = publish(client, region, "run-1", reconcile(wanted, []), store)
    assert result.published == 10
    assert_holds_exactly(client, region, wanted)


def test_timeout_after_apply_is_answered_by_a_replay(client, store, region, simulators) -> None:
    wanted = items(region, 4)
    faults(simulators, timeout_after_apply=1, timeout_seconds=2.5)
    result = publish(client, region, "run-1", reconcile(wanted, []), store)
    assert [b["replayed"] for b in result.batches] == [True]
    assert result.published == 4
    assert_holds_exactly(client, region, wanted)


def test_rejected_items_are_reported_with_the_platform_reason(client, store, region, simulators) -> None:
    wanted = items(region, 3)
    faults(simulators, reject={wanted[1]["task_code"]: "该事项未在省级目录中登记"})
    result = publish(client, region, "run-1", reconcile(wanted, []), store)
    [rejected] = result.rejected
    assert rejected["task_code"] == wanted[1]["task_code"] and rejected["reason"] == "该事项未在省级目录中登记"
    assert_holds_exactly(client, region, [wanted[0], wanted[2]])
    assert set(store.current(region)) == {wanted[0]["task_code"], wanted[2]["task_code"]}


def test_crash_between_push_and_acknowledgement(client, store, region) -> None:
    wanted = items(region, 2)
    recon = reconcile(wanted, [])
    key = idempotency_key("run-1", region, recon.upserts(), [])
    store.ledger_pending(key, "run-1", region, 1, 2)
    client.push(region, key, recon.upserts(), [])  # pushed, then the worker died before recording the answer
    result = publish(client, region, "run-1", recon, store)
    assert result.batches[0]["replayed"] is True and result.published == 2
    assert store.ledger_entry(key)["status"] == "acked"  # type: ignore[index]
    assert_holds_exactly(client, region, wanted)


def test_persistent_failure_fails_loudly_then_a_rerun_completes(client, store, region, simulators) -> None:
    wanted = items(region, 6)
    recon = reconcile(wanted, [])
    faults(simulators, fail_mid_batch=10)
    with pytest.raises(PublishError, match="500"):
        publish(client, region, "run-1", recon, store)
    assert store.ledger("run-1", region)[0]["status"] == "pending"
    faults(simulators)
    publish(client, region, "run-1", recon, store)
    assert_holds_exactly(client, region, wanted)


def test_recode_is_published_as_one_move(client, store, region) -> None:
    [old] = items(region, 1)
    publish(client, region, "run-1", reconcile([old], []), store)
    moved = make_record(partner=region, catalog_code=old["catalog_code"], level="4")  # new level -> new 实施编码
    recon = reconcile([moved], client.items(region))
    assert recon.counts() | {"unchanged": 0} == {
        "added": 0,
        "changed": 0,
        "removed": 0,
        "unchanged": 0,
        "held": 0,
        "recoded": 1,
    }
    assert [c.element for c in recon.recoded[0].changes] == ["level"]
    publish(client, region, "run-2", recon, store)
    assert_holds_exactly(client, region, [moved])
    assert [h["kind"] for h in store.history(region, moved["task_code"])] == ["recoded", "added"]


def test_dry_run_pushes_nothing(client, store, region) -> None:
    result = publish(client, region, "run-1", reconcile(items(region, 2), []), store, dry_run=True)
    assert result.dry_run and result.published == 0
    assert client.items(region) == []


def test_schema_is_created_by_alembic_and_migration_is_idempotent(tmp_path) -> None:
    url = f"sqlite:///{tmp_path / 'm.db'}"
    migrate(url)
    migrate(url)
    tables = set(sa.inspect(sa.create_engine(url)).get_table_names())
    assert {"alembic_version", "runs", "pulls", "items", "item_history", "reconciliations", "publish_ledger"} <= tables


def _first_task(url: str) -> int:
    """What the first task of a run does on a worker: open the store (migrating it) and note the run."""
    store = ItemStore(url)
    store.ensure_run("run-1")
    with store.engine.connect() as conn:
        return int(conn.execute(sa.text("SELECT count(*) FROM runs")).scalar_one())


@pytest.mark.parametrize("backend", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def test_first_tasks_on_several_workers_share_a_fresh_store(backend: str, tmp_path) -> None:
    """Workers starting together on a database nobody migrated yet: one migration, one run row, no error."""
    from concurrent.futures import ProcessPoolExecutor

    if backend == "sqlite":
        url, cleanup = f"sqlite:///{tmp_path / 'fresh.db'}", None
    else:
        schema = f"tongban_race_{os.getpid()}"
        admin = sa.create_engine(PG_URL)
        with admin.begin() as conn:
            conn.execute(sa.text(f"CREATE SCHEMA {schema}"))
        url, cleanup = f"{PG_URL}?options=-csearch_path%3D{schema}", (admin, schema)
    try:
        with ProcessPoolExecutor(4) as pool:
            assert list(pool.map(_first_task, [url] * 8)) == [1] * 8
    finally:
        if cleanup:
            admin, schema = cleanup
            with admin.begin() as conn:
                conn.execute(sa.text(f"DROP SCHEMA {schema} CASCADE"))
            admin.dispose()
