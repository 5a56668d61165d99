"""Exactly-once publishing against the real platform simulator, with the item store on SQLite and PostgreSQL."""

from __future__ import annotations

import hashlib
import itertools
import json
import os
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import requests
import sqlalchemy as sa

import tongban.model
from tests.conftest import make_record
from tongban.http import HttpSettings
from tongban.model import content_digests, content_hash
from tongban.publish import (
    PlatformClient,
    PublishError,
    PublishResult,
    StaleRun,
    drift,
    idempotency_key,
    publish,
    settle,
    verify,
)
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
    held = list(client.items(region))
    assert len(held) == len({r["task_code"] for r in held}), "duplicates on the platform"
    assert {r["task_code"]: content_hash(r) for r in held} == {r["task_code"]: content_hash(r) for r in records}


def test_batches_land_once_and_rerun_sends_nothing(client, store, region, monkeypatch) -> None:
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
    # the next night, nothing changed: nothing is sent and the list is not read back a second time
    unchanged = reconcile(wanted, client.items(region))
    reads = []
    read = client.items
    monkeypatch.setattr(client, "items", lambda division: reads.append(division) or read(division))
    nothing = publish(client, region, "run-2", unchanged, store, batch_size=3)
    assert nothing.published == 0 and nothing.batches == [] and reads == []
    assert store.ledger("run-2", region) == []


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
    sequence = store.claim_sequence(region, "run-1")
    store.ledger_plan("run-1", region, [(key, 2, {"upserts": wanted, "deletes": [], "recoded": []})], sequence=sequence)
    store.ledger_sent(key)
    client.push(region, key, recon.upserts(), [], sequence)  # pushed, then the worker died before the answer
    assert store.current(region) == {}
    result = publish(client, region, "run-1", recon, store)  # the task retried: same key, replayed
    assert result.batches[0]["replayed"] is True and result.published == 2
    assert store.ledger_entry(key)["status"] == "acked"  # type: ignore[index]
    assert_holds_exactly(client, region, wanted)
    assert set(store.current(region)) == {r["task_code"] for r in wanted}


def test_persistent_failure_fails_loudly_then_a_rerun_completes(client, store, region, simulators) -> None:
    wanted = items(region, 6)
    recon = reconcile(wanted, [])
    faults(simulators, fail_mid_batch=10)
    with pytest.raises(PublishError, match="500"):
        publish(client, region, "run-1", recon, store)
    assert store.ledger("run-1", region)[0]["status"] == "sent"
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
    # the old code goes in a batch of its own, once the platform has taken the new one; numbered after it
    ledger = [(r["batch_no"], r["size"], r["status"]) for r in store.ledger("run-2", region)]
    assert ledger == [(1, 1, "acked"), (2, 1, "acked")]


def count_content_hashes(monkeypatch: pytest.MonkeyPatch) -> Callable[[], int]:
    """How many content hashes (``tongban.model.content_hash``, a 16-byte BLAKE2b) are computed from now on."""
    calls = []

    class Counting:
        def __getattr__(self, name: str) -> Any:
            return getattr(hashlib, name)

        @staticmethod
        def blake2b(data: bytes, *, digest_size: int) -> Any:
            calls.append(digest_size)
            return hashlib.blake2b(data, digest_size=digest_size)

    monkeypatch.setattr(tongban.model, "hashlib", Counting())
    return lambda: calls.count(16)


def test_each_published_item_is_hashed_once_and_its_copy_read_back_once(client, store, region, monkeypatch) -> None:
    wanted = items(region, 30)
    publish(client, region, "run-1", reconcile(wanted, []), store)
    changed = {**wanted[0], "name": wanted[0]["name"] + "（新）"}
    recon = reconcile([changed, *wanted[1:]], list(client.items(region)))
    hashed = count_content_hashes(monkeypatch)
    result = publish(client, region, "run-2", recon, store)
    # its digest (batch key, item store, intended content) and the platform's copy; none of the 29 unchanged
    assert result.published == 1 and hashed() == 2
    assert store.current_hashes(region)[changed["task_code"]] == content_hash(changed)
    assert [h["element"] for h in store.history(region, changed["task_code"])] == ["", "name"]


def test_the_read_back_checks_every_code_and_the_content_of_what_was_written(client, store, region) -> None:
    wanted = items(region, 3)
    publish(client, region, "run-1", reconcile(wanted, []), store)
    claimed = {**wanted[1], "name": "平台上并无此名称"}  # as if this had been accepted: the platform holds another
    recon = reconcile([wanted[0], claimed, *items(region, 1, start=7)], list(client.items(region)))
    accepted = PublishResult(accepted=[{"op": "upsert", "task_code": r["task_code"]} for r in recon.upserts()])
    with pytest.raises(PublishError) as failed:
        verify(client, region, recon, accepted, content_digests(recon.upserts()))
    assert f"missing 1: {recon.added[0]['task_code']}" in str(failed.value)  # never sent
    assert f"different content 1: {claimed['task_code']}" in str(failed.value)
    assert "unexpected" not in str(failed.value)


def test_a_region_list_longer_than_a_page_is_read_page_by_page_whole_and_in_order(simulators, region, tmp_path) -> None:
    store = ItemStore(f"sqlite:///{tmp_path / 'items.db'}")
    wanted = items(region, 1001)
    pages: list[str] = []
    session = requests.Session()
    session.hooks["response"].append(lambda r, *_, **__: pages.append(r.url) if "/items" in r.url else None)
    client = PlatformClient(simulators.platform, **platform_credentials(simulators.state_dir), session=session)
    publish(client, region, "run-1", reconcile(wanted, []), store)  # its read-back reads the list paged too
    pages.clear()
    reading = client.items(region)
    first = next(reading)
    assert len(pages) == 1  # the records come as their page does, not after the whole list
    held = [first, *reading]
    assert len(pages) == 3  # 500 + 500 + 1
    assert [r["task_code"] for r in held] == sorted(r["task_code"] for r in wanted)
    assert {r["task_code"]: content_hash(r) for r in held} == content_digests(wanted)
    # an item removed behind the reader while it reads: the count no longer matches, the read fails
    reading = client.items(region)
    gone = next(reading)["task_code"]
    client.push(region, "remove-behind-the-reader", [], [gone], store.claim_sequence(region, "run-1"))
    with pytest.raises(PublishError, match=f"read 1001 items of region {region}, the platform declares 1000"):
        list(reading)


def test_dry_run_pushes_nothing(client, store, region) -> None:
    result = publish(client, region, "run-1", reconcile(items(region, 2), []), store, dry_run=True)
    assert result.dry_run and result.published == 0
    assert list(client.items(region)) == []


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


# -- recovery by the next run and fencing -------------------------------------------------------------


def impatient(simulators: Any, url: str | None = None) -> PlatformClient:
    """A client that neither waits long nor retries: a crashed worker, as far as the platform can tell."""
    settings = HttpSettings(retries=0, read_timeout=1.0, connect_timeout=1.0)
    credentials = platform_credentials(simulators.state_dir)
    return PlatformClient(url or simulators.platform, **credentials, settings=settings)


def assert_store_agrees(client: PlatformClient, store: ItemStore, region: str) -> None:
    """Item by item on content: the store's current items are what the platform holds, no row unsettled."""
    assert drift(client, region, store) == {"only_on_platform": [], "only_in_store": [], "different": []}
    assert {c: content_hash(r) for c, r in store.current(region).items()} == {
        r["task_code"]: content_hash(r) for r in client.items(region)
    }
    assert store.unsettled(region) == []


def test_batches_wait_pending_and_the_one_sent_is_marked_sent(store, region, simulators) -> None:
    """The platform unreachable: the batch whose request went out is ``sent``, the others ``pending``."""
    gone = impatient(simulators, "http://127.0.0.1:9")
    with pytest.raises(PublishError, match=r"ConnectionError|still failing"):
        publish(gone, region, "run-1", reconcile(items(region, 5), []), store, batch_size=2)
    ledger = store.ledger("run-1", region)
    assert [e["status"] for e in ledger] == ["sent", "pending", "pending"]
    assert ledger[0]["sent_at"] is not None and ledger[1]["sent_at"] is None
    assert all(e["body"]["upserts"] for e in ledger)  # what a later run needs to apply them


def test_next_run_settles_what_a_dead_run_left_and_resends_nothing(client, store, region, simulators) -> None:
    wanted = items(region, 5)
    gone = impatient(simulators, "http://127.0.0.1:9")
    with pytest.raises(PublishError):
        publish(gone, region, "run-1", reconcile(wanted, []), store, batch_size=2)
    settled = settle(client, region, "run-2", store)
    outcomes = [(s.was, s.now) for s in settled.settled]
    assert outcomes == [("sent", "unapplied"), ("pending", "unsent"), ("pending", "unsent")]
    assert list(client.items(region)) == []  # nothing of the dead run was sent again
    assert [e["settled_by"] for e in store.ledger("run-1", region)] == ["run-2"] * 3
    assert all(e["body"] is None for e in store.ledger("run-1", region))
    assert_store_agrees(client, store, region)
    publish(client, region, "run-2", reconcile(wanted, client.items(region)), store)  # the newer run publishes
    assert_holds_exactly(client, region, wanted)
    assert_store_agrees(client, store, region)


def test_batch_applied_then_unanswered_is_acked_and_recorded_by_the_next_run(client, store, region, simulators) -> None:
    """Issue 16 item 3: the platform applied the batch and hung; the worker died. The next run asks the
    platform by idempotency key and brings the item store and history in line before reconciling."""
    old = items(region, 4)
    publish(client, region, "run-1", reconcile(old, []), store)
    new = [{**old[0], "result": "新的办理结果"}, *old[1:3], *items(region, 2, start=10)]  # 1 changed, 1 gone, 2 new
    faults(simulators, hang_after_apply=1, hang_seconds=30)
    with pytest.raises(PublishError, match=r"Timeout|timed out"):  # read timeout: the answer never came
        publish(impatient(simulators), region, "run-2", reconcile(new, client.items(region)), store)
    assert_holds_exactly(client, region, new)  # the platform applied it
    assert [e["status"] for e in store.ledger("run-2", region)] == ["sent"]
    assert set(store.current(region)) == {r["task_code"] for r in old}  # the store did not hear of it
    faults(simulators)  # ends the hang

    settled = settle(client, region, "run-3", store)
    assert [(s.run_id, s.was, s.now, s.applied) for s in settled.settled] == [("run-2", "sent", "acked", 4)]
    assert_store_agrees(client, store, region)
    [_, changed] = store.history(region, old[0]["task_code"])
    assert (changed["run_id"], changed["kind"], changed["element"], changed["new"]) == (
        "run-2",
        "changed",
        "result",
        "新的办理结果",
    )
    assert [(h["run_id"], h["kind"]) for h in store.history(region, old[3]["task_code"])] == [
        ("run-1", "added"),
        ("run-2", "removed"),
    ]
    assert reconcile(new, client.items(region)).upserts() == []  # so run-3 finds nothing left to publish
    assert settle(client, region, "run-3", store).settled == []  # settling again changes nothing


def test_batch_half_applied_and_unrecorded_is_read_back_by_the_next_run(client, store, region, simulators) -> None:
    wanted = items(region, 6)
    faults(simulators, fail_mid_batch=1)
    with pytest.raises(PublishError, match="500"):
        publish(impatient(simulators), region, "run-1", reconcile(wanted, []), store)
    assert len(list(client.items(region))) == 3
    [row] = settle(client, region, "run-2", store).settled
    assert (row.was, row.now, row.applied) == ("sent", "unapplied", 3)
    assert_store_agrees(client, store, region)
    assert {h["run_id"] for r in client.items(region) for h in store.history(region, r["task_code"])} == {"run-1"}


def test_batch_applied_whose_sent_mark_was_lost_is_acked_and_recorded_by_the_next_run(
    client, store, region, simulators, monkeypatch
) -> None:
    """A power loss on the SQLite store (WAL, synchronous=NORMAL) rolls back the batch's ``sent`` mark although
    its request went out and the platform applied it: the next run asks about the ``pending`` row by key too."""
    old = items(region, 4)
    publish(client, region, "run-1", reconcile(old, []), store)
    new = [{**old[0], "result": "新的办理结果"}, *old[1:3], *items(region, 2, start=10)]  # 1 changed, 1 gone, 2 new
    monkeypatch.setattr(store, "ledger_sent", lambda key: None)  # the mark's commit lost with the machine
    faults(simulators, hang_after_apply=1, hang_seconds=30)
    with pytest.raises(PublishError, match=r"Timeout|timed out"):
        publish(impatient(simulators), region, "run-2", reconcile(new, client.items(region)), store)
    monkeypatch.undo()
    faults(simulators)  # ends the hang
    assert_holds_exactly(client, region, new)  # the platform applied it
    assert [e["status"] for e in store.ledger("run-2", region)] == ["pending"]

    settled = settle(client, region, "run-3", store)
    assert [(s.run_id, s.was, s.now, s.applied) for s in settled.settled] == [("run-2", "pending", "acked", 4)]
    assert_store_agrees(client, store, region)
    assert [(h["run_id"], h["kind"], h["new"]) for h in store.history(region, old[0]["task_code"])][1:] == [
        ("run-2", "changed", "新的办理结果")
    ]
    assert [(h["run_id"], h["kind"]) for h in store.history(region, old[3]["task_code"])] == [
        ("run-1", "added"),
        ("run-2", "removed"),
    ]
    assert reconcile(new, client.items(region)).upserts() == []


def test_pending_batches_are_closed_unsent_only_when_the_platform_shows_nothing_of_them(
    client, store, region, simulators, monkeypatch
) -> None:
    """The first batch went out (its ``sent`` mark lost) and the platform applied half of it without recording
    it; the other two never left. Each is asked about by key; only those of which nothing is found are unsent."""
    wanted = items(region, 6)
    monkeypatch.setattr(store, "ledger_sent", lambda key: None)
    faults(simulators, fail_mid_batch=1)
    with pytest.raises(PublishError, match="500"):
        publish(impatient(simulators), region, "run-1", reconcile(wanted, []), store, batch_size=2)
    monkeypatch.undo()
    [half] = list(client.items(region))
    keys = [e["key"] for e in store.ledger("run-1", region)]
    asked: list[str] = []
    ask = client.batch
    monkeypatch.setattr(client, "batch", lambda division, key: asked.append(key) or ask(division, key))

    settled = settle(client, region, "run-2", store)
    assert [(s.key, s.was, s.now, s.applied) for s in settled.settled] == [
        (keys[0], "pending", "unapplied", 1),
        (keys[1], "pending", "unsent", 0),
        (keys[2], "pending", "unsent", 0),
    ]
    assert asked == keys
    notes = [e["note"] for e in store.ledger("run-1", region)]
    assert "1 of its operations found applied" in notes[0] and all("no record" in n for n in notes)
    assert_store_agrees(client, store, region)
    assert [(h["run_id"], h["kind"]) for h in store.history(region, half["task_code"])] == [("run-1", "added")]
    assert list(client.items(region)) == [half]  # nothing of the dead run was sent again


def test_a_superseded_run_can_neither_settle_nor_publish(client, store, region) -> None:
    wanted = items(region, 3)
    assert store.claim_sequence(region, "run-old") == 1
    assert store.claim_sequence(region, "run-new") == 2
    assert store.claim_sequence(region, "run-old") == 1  # a run keeps its sequence
    with pytest.raises(StaleRun, match="run run-new started after it"):
        settle(client, region, "run-old", store)
    with pytest.raises(StaleRun, match="run run-new started after it"):
        publish(client, region, "run-old", reconcile(wanted, []), store)
    assert list(client.items(region)) == [] and store.ledger("run-old", region) == []
    publish(client, region, "run-new", reconcile(wanted, []), store)
    assert_holds_exactly(client, region, wanted)


def test_platform_refuses_a_lower_publish_sequence(client, region) -> None:
    first, second = items(region, 1), items(region, 1, start=1)
    client.push(region, f"{region}-a", first, [], 5)
    with pytest.raises(StaleRun, match=r"发布序号 4 低于地区 \d+ 已接受的发布序号 5"):
        client.push(region, f"{region}-b", second, [], 4)
    with pytest.raises(PublishError, match=r"428 .*须带请求头 X-Publish-Sequence"):
        client.push(region, f"{region}-c", second, [])
    assert client.push(region, f"{region}-a", first, [], 1)["replayed"] is True  # a replay changes nothing
    client.push(region, f"{region}-d", second, [], 5)  # the same sequence: the same run's next batch
    assert_holds_exactly(client, region, first + second)
    assert client.batch(region, f"{region}-d")["idempotency_key"] == f"{region}-d"  # type: ignore[index]
    assert client.batch(region, f"{region}-b") is None


def test_make_run_checks_content_against_the_item_store_and_survives_a_dead_platform(
    client, store, region, tmp_path, simulators
) -> None:
    from scripts.run_local import PlatformCheck, check_against_platform
    from tongban.files import SummaryFile, SummaryPartner

    wanted = items(region, 3)
    publish(client, region, "run-1", reconcile(wanted, []), store)
    report = {"dry_run": False, "added": [{"task_code": r["task_code"]} for r in wanted], "platform_rejected": []}
    report |= {"removed": [], "unchanged": [], "held": [], "changed": [], "recoded": []}
    (tmp_path / "run-1" / region).mkdir(parents=True)
    (tmp_path / "run-1" / region / "report.json").write_text(json.dumps(report), encoding="utf-8")
    summary = SummaryFile(run_id="run-1", partners=[SummaryPartner(partner=region, status="ok")])
    assert check_against_platform(summary, client, tmp_path, store) == PlatformCheck([], {region: 3})
    # the same codes, other content: changed on the platform behind our back
    client.push(region, f"{region}-edit", [{**wanted[0], "result": "在平台上被改动"}], [], 99)
    assert check_against_platform(summary, client, tmp_path, store).problems == [
        f"{region}: platform and item store differ in content (different 1: {wanted[0]['task_code']})"
    ]
    [problem] = check_against_platform(summary, impatient(simulators, "http://127.0.0.1:9"), tmp_path, store).problems
    assert problem.startswith("platform check not done: the platform at http://127.0.0.1:9 did not answer: ")
