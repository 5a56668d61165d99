"""Incremental pulls by watermark, periodic and requested full resyncs, stale partners."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from upath import UPath

from tongban import layout, watermark
from tongban.ingest import FetchError
from tongban.layout import REPORTS, run_dir
from tongban.report import COUNT_KEYS, summarise
from tongban.storage import read_json, read_jsonl, write_json

from .conftest import CSV, NATIONAL, PINYIN, Partners, assert_nothing_lost, publish_marker, pull

NOW = datetime(2026, 11, 10, 2, 0, tzinfo=UTC)


def codes(run: UPath) -> list[str]:
    items = [i["task_code"] for i in read_jsonl(run / layout.ITEMS)]
    return sorted(items + [q["task_code"] for q in read_jsonl(run / layout.QUARANTINE)])


@pytest.mark.parametrize("division", [NATIONAL, PINYIN, CSV])
def test_after_a_published_full_pull_only_changes_come(partners: Partners, store: UPath, division: str) -> None:
    first, run1 = pull(partners, store, division, "run-1", now=NOW)
    assert first["mode"] == "full" and read_json(run1 / layout.FETCH)["mode"] == "full"
    served = partners.served(division)
    target = served[7]
    publish_marker(store, "run-1", division)

    quiet, run2 = pull(partners, store, division, "run-2", now=NOW + timedelta(days=1))
    info = read_json(run2 / layout.FETCH)
    assert info["mode"] == quiet["mode"] == "incremental" and info["base_run"] == "run-1"
    latest = max(datetime.fromisoformat(r["updated_at"]) for r in served)
    since = datetime.fromisoformat(info["since"])
    assert since == latest - watermark.OVERLAP
    assert codes(run2) == sorted(r["task_code"] for r in served if datetime.fromisoformat(r["updated_at"]) >= since)
    publish_marker(store, "run-2", division)

    changed = partners.patch(division, target["task_code"], result="新的办理结果（已更新）")
    third, run3 = pull(partners, store, division, "run-3", now=NOW + timedelta(days=2))
    # the change, plus what sits inside the overlap before the previous watermark (idempotent downstream)
    since = datetime.fromisoformat(read_json(run3 / layout.FETCH)["since"])
    expected = {r["task_code"] for r in partners.served(division) if datetime.fromisoformat(r["updated_at"]) >= since}
    assert third["mode"] == "incremental" and set(codes(run3)) == expected and target["task_code"] in expected
    assert len(expected) < len(served) / 10
    [item] = [i for i in read_jsonl(run3 / layout.ITEMS) if i["task_code"] == target["task_code"]]
    assert item["result"] == "新的办理结果（已更新）" and item["version"] == changed["version"]
    state = watermark.load(store, division)["pulls"]
    assert datetime.fromisoformat(state["run-3"]["watermark"]) == datetime.fromisoformat(changed["updated_at"])


def test_a_rerun_of_the_same_run_plans_the_same_pull(partners: Partners, store: UPath) -> None:
    pull(partners, store, NATIONAL, "run-1", now=NOW)
    publish_marker(store, "run-1", NATIONAL)
    first, _ = pull(partners, store, NATIONAL, "run-2", now=NOW + timedelta(hours=1))
    publish_marker(store, "run-2", NATIONAL)  # even published, run-2 never builds on itself
    again, _ = pull(partners, store, NATIONAL, "run-2", now=NOW + timedelta(hours=2))
    assert (first["mode"], first["since"]) == (again["mode"], again["since"]) == ("incremental", first["since"])
    assert list(watermark.load(store, NATIONAL)["pulls"]) == ["run-1", "run-2"]


def test_unpublished_and_dry_runs_do_not_move_the_next_pull(partners: Partners, store: UPath) -> None:
    pull(partners, store, PINYIN, "run-1", now=NOW)
    second, _ = pull(partners, store, PINYIN, "run-2", now=NOW + timedelta(hours=1))
    assert second["mode"] == "full"  # run-1 fetched but never published
    publish_marker(store, "run-2", PINYIN, dry_run=True)
    third, _ = pull(partners, store, PINYIN, "run-3", now=NOW + timedelta(hours=2))
    assert third["mode"] == "full"  # a dry run publishes nothing
    publish_marker(store, "run-3", PINYIN)
    fourth, _ = pull(partners, store, PINYIN, "run-4", now=NOW + timedelta(hours=3))
    assert fourth["mode"] == "incremental"


def test_full_resync_weekly_and_on_request_and_only_it_sees_removals(partners: Partners, store: UPath) -> None:
    pull(partners, store, CSV, "run-1", now=NOW)
    publish_marker(store, "run-1", CSV)
    gone = partners.served(CSV)[3]["task_code"]
    partners.delete(CSV, gone)

    incremental, run2 = pull(partners, store, CSV, "run-2", now=NOW + timedelta(days=6))
    assert incremental["mode"] == "incremental" and gone not in codes(run2)  # a removal is invisible here
    publish_marker(store, "run-2", CSV)

    requested, run3 = pull(partners, store, CSV, "run-3", now=NOW + timedelta(days=6, hours=1), full_resync=True)
    assert requested["mode"] == "full" and "requested" in read_json(run3 / layout.FETCH)["reason"]
    assert gone not in codes(run3) and len(codes(run3)) == 169
    assert_nothing_lost(run3, partners.served(CSV), partners.registry.partner(CSV))

    weekly, run4 = pull(partners, store, CSV, "run-4", now=NOW + timedelta(days=7))
    assert weekly["mode"] == "full" and "periodic full resync" in read_json(run4 / layout.FETCH)["reason"]
    publish_marker(store, "run-4", CSV)
    after, _ = pull(partners, store, CSV, "run-5", now=NOW + timedelta(days=8))
    assert after["mode"] == "incremental"  # the requested full pull run-3 was never published; run-4 was


def test_a_partner_down_is_reported_stale_since_its_last_published_pull(partners: Partners, store: UPath) -> None:
    pull(partners, store, NATIONAL, "run-1", now=NOW)
    publish_marker(store, "run-1", NATIONAL)
    pulled_at = watermark.load(store, NATIONAL)["pulls"]["run-1"]["pulled_at"]
    partners.faults(NATIONAL, {"kind": "server_error"})
    with pytest.raises(FetchError) as caught:
        pull(partners, store, NATIONAL, "run-2", now=NOW + timedelta(days=1))
    assert f"its list on the platform is as of the pull at {pulled_at}" in str(caught.value)
    assert read_json(run_dir(store, "run-2", NATIONAL) / layout.FETCH)["stale_since"] == pulled_at

    ok = partners.registry.partner(PINYIN)
    write_json(store / REPORTS / "run-2" / PINYIN / "report.json", {"counts": dict.fromkeys(COUNT_KEYS, 1)})
    summary = summarise(store / REPORTS, "run-2", [partners.registry.partner(NATIONAL), ok])
    rows = {r.partner: r for r in summary.partners}
    assert rows[NATIONAL].status == "failed" and rows[NATIONAL].stale_since == pulled_at
    assert rows[PINYIN].stale_since is None and summary.stale == {NATIONAL: pulled_at}
    assert read_json(store / REPORTS / "run-2" / "summary.json")["stale"] == {NATIONAL: pulled_at}


def test_a_partner_never_pulled_is_stale_since_never(store: UPath, partners: Partners) -> None:
    summary = summarise(store / REPORTS, "run-9", [partners.registry.partner(CSV)])
    assert summary.stale == {CSV: None}
