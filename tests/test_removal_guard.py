"""Nothing lost, nothing stale (issue 16 pull side, issue 12): bad partner answers never take items off the
platform, a held-back pull does not advance the watermark, future dates do not freeze a partner.

Each night runs the pipeline's stages (fetch, normalise, validate, reconcile, publish, report) against the
real partner simulator (its fault kinds) and the real platform simulator, with a SQLite item store.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import requests
from markupsafe import escape
from upath import UPath

from tests.ingest.conftest import FAST, Partners
from tests.partner_texts import internal_in, report_texts
from tests.simulators.conftest import serving
from tongban import guard, layout, pipeline, province, watermark
from tongban.codes import make_task_code, make_uscc
from tongban.guard import check_confirmations, parse_confirmations, percent
from tongban.layout import report_dir, run_dir
from tongban.model import content_hash
from tongban.publish import PlatformClient, drift
from tongban.reconcile import Reconciliation
from tongban.registry import Registry, load_registry, wire_formats
from tongban.results import Fetched, Notice
from tongban.simulators.credentials import platform_credentials
from tongban.simulators.partners import create_partner_app
from tongban.simulators.platform import create_platform_app
from tongban.storage import read_json, read_jsonl, write_json
from tongban.store.repo import ItemStore

PAGED, CURSOR, CSV = "442000", "370300", "370700"  # national_json (200), pinyin_json (100), csv_gbk (100)


@dataclass
class World:
    partners: Partners
    platform: PlatformClient
    store: ItemStore
    root: UPath
    nights: int = 0

    def night(self, division: str, *, full: bool = False, confirmed_run: str | None = None, **kw: Any) -> Night:
        """One run of every stage, as the DAG chains them; the province stage compares the partner with the item
        store alone, and must foresee exactly the removals the guard holds when the partner reconciles."""
        self.nights += 1
        run_id = f"night-{self.nights}"
        partner = self.partners.registry.partner(division)
        run = run_dir(self.root, run_id, division)
        secret = self.partners.secret(division)
        now = datetime.now(UTC) + timedelta(hours=self.nights)  # nights apart, in the order they ran
        kw.setdefault("settings", FAST)
        fetched = pipeline.fetch(
            partner, self.partners.base(division), run, secret=secret, root=self.root, run_id=run_id,
            full_resync=full, now=now, **kw,
        )  # fmt: skip
        pipeline.normalise_partner(partner, run)
        validated = pipeline.validate(partner, run, self.store)
        confirmed = {division: confirmed_run} if confirmed_run else {}
        runs = self.root / layout.RUNS / run_id
        province.check_run(
            [partner], self.partners.registry.partners, {division: validated}, runs, self.store, confirmed
        )
        reconciled = pipeline.reconcile_partner(
            partner, run, self.platform, self.store, run_id, confirmed_run=confirmed_run
        )
        if not reconciled.held_back:
            roles = read_json(runs / layout.PROVINCES / partner.province / layout.FIVE_LEVEL)["partners"]
            assert roles[division]["removals_held"] == reconciled.removals_held
        pipeline.publish_partner(partner, run, self.platform, self.store, run_id, dry_run=False)
        out = report_dir(self.root, run_id, division)
        written = pipeline.write_report(partner, run, out, run_id, self.store)
        return Night(run_id, run, fetched, read_json(out / layout.REPORT_JSON), written.notices)

    def alone(self, division: str) -> list[dict[str, Any]]:
        """The partner's published items alone in their 基本编码: a change to one keeps 五级N同."""
        items = list(self.platform.items(division))
        groups = [r["catalog_code"] for r in items]
        return [r for r in items if groups.count(r["catalog_code"]) == 1]

    def on_platform(self, division: str) -> dict[str, str]:
        return {r["task_code"]: content_hash(r) for r in self.platform.items(division)}


def assert_partner_texts_clean(world: World, night: Night, division: str) -> None:
    """The notices a partner reads name no internal identifier (tests/partner_texts.py)."""
    fmt = wire_formats()[world.partners.registry.partner(division).format]
    folder = Path(str(report_dir(world.root, night.run_id, division)))
    found = {where: internal_in(text, fmt) for where, text in report_texts(folder) if internal_in(text, fmt)}
    assert not found, found


@dataclass
class Night:
    run_id: str
    run: UPath
    fetched: Fetched
    report: dict[str, Any]
    notices: list[Notice]


@pytest.fixture(scope="module")
def registry() -> Registry:
    return load_registry()


@pytest.fixture(scope="module")
def partners(registry: Registry, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Partners]:
    state = tmp_path_factory.mktemp("partner-sim")
    with serving(create_partner_app(registry, state)) as url:
        yield Partners(url, state, registry)


@pytest.fixture
def world(partners: Partners, tmp_path: Path) -> Iterator[World]:
    """A fresh deployment: its own platform (simulator), item store and home; the partners as generated."""
    requests.post(f"{partners.url}/admin/reset", timeout=10).raise_for_status()
    with serving(create_platform_app(tmp_path / "platform")) as platform_url:
        store = ItemStore(f"sqlite:///{tmp_path / 'items.db'}")
        client = PlatformClient(platform_url, **platform_credentials(tmp_path / "platform"))
        yield World(partners, client, store, UPath(tmp_path / "home"))
    requests.post(f"{partners.url}/admin/reset", timeout=10).raise_for_status()


def published_first(world: World, division: str) -> dict[str, str]:
    """A clean first night; returns what the platform then holds of the partner."""
    first = world.night(division)
    assert first.report["counts"]["published"] > 0 and not first.notices
    return world.on_platform(division)


# --- bad answers leave the platform's list unchanged ----------------------------------------------


def test_an_empty_catalogue_removes_nothing_and_says_why(world: World) -> None:
    before = published_first(world, PAGED)
    world.partners.faults(PAGED, {"kind": "empty_catalogue"})
    bad = world.night(PAGED, full=True)
    assert world.on_platform(PAGED) == before
    guard = bad.report["removal_guard"]
    assert guard["removals"] == len(before) and len(guard["held"]) == len(before)
    assert f"{len(before)}/{len(before)} = 100% > 20%" in guard["text"] and f"{PAGED}@{bad.run_id}" in guard["text"]
    assert bad.report["counts"]["removed"] == 0 and bad.report["counts"]["removals_held"] == len(before)
    assert [n.event for n in bad.notices] == ["removals_held"]
    assert f'"confirm_removals": ["{PAGED}@{bad.run_id}"]' in bad.notices[0].text  # for the operators
    html = (report_dir(world.root, bad.run_id, PAGED) / layout.REPORT_HTML).read_text(encoding="utf-8")
    assert "暂缓删除" in html and str(escape(guard["text"])) in html
    assert_partner_texts_clean(world, bad, PAGED)
    # the held full pull is not the weekly full pull: the next night pulls in full again
    plan = watermark.plan(world.root, world.partners.registry.partner(PAGED), "next", now=datetime.now(UTC))
    assert plan.mode == "full" and bad.run_id in plan.reason


def test_records_that_are_not_objects_hold_the_partner_back(world: World) -> None:
    before = published_first(world, CURSOR)
    world.partners.faults(CURSOR, {"kind": "non_objects"})
    bad = world.night(CURSOR, full=True)
    assert world.on_platform(CURSOR) == before
    report = bad.report
    fetched = report["counts"]["fetched"]
    assert report["held_back"] and report["counts"]["quarantined"] == fetched == len(world.partners.served(CURSOR))
    assert f"{fetched}/{fetched} = 100% > 20%" in report["hold_back"]["text"]
    assert [n.event for n in bad.notices] == ["partner_held_back"]


@pytest.mark.parametrize(
    ("division", "fault"),
    [
        (PAGED, {"kind": "total_shrinks", "total": 50}),
        (CURSOR, {"kind": "total_shrinks", "total": 25}),
        (CURSOR, {"kind": "total_shrinks", "total": 25, "omit_total": True}),  # a cursor page without total
        (CSV, {"kind": "total_shrinks", "total": 25}),
    ],
)
def test_a_catalogue_cut_short_removes_nothing(world: World, division: str, fault: dict[str, Any]) -> None:
    before = published_first(world, division)
    world.partners.faults(division, fault)
    bad = world.night(division, full=True)
    assert world.on_platform(division) == before
    guard = bad.report["removal_guard"]
    assert guard["size"] == fault["total"] and guard["previous_size"] == len(world.partners.served(division))
    assert len(guard["reasons"]) == 2 and "减少" in guard["reasons"][1]  # the rate and the shrink, with numbers
    assert bad.notices and bad.notices[0].event == "removals_held"


def test_removals_are_held_while_the_partners_other_changes_are_published(world: World) -> None:
    """A catalogue a quarter short (removal rate and shrink both over the limit) holds its removals; the one real
    change the partner made that night is published all the same."""
    before = published_first(world, PAGED)
    kept = sorted(r["task_code"] for r in world.partners.served(PAGED))[:150]
    changed = next(r["task_code"] for r in world.alone(PAGED) if r["task_code"] in kept)
    world.partners.patch(PAGED, changed, result="本次更新的办理结果")
    world.partners.faults(PAGED, {"kind": "total_shrinks", "total": 150})  # 25% fewer: 50 removals of 200
    bad = world.night(PAGED, full=True)
    guard = bad.report["removal_guard"]
    assert guard["held"] and guard["reasons"] and "150" in guard["reasons"][-1] and "25% > 20%" in guard["reasons"][-1]
    # the partner's other changes are published all the same
    assert [c["task_code"] for c in bad.report["changed"]] == [changed]
    after = world.on_platform(PAGED)
    assert after.keys() == before.keys() and {c for c in after if after[c] != before[c]} == {changed}


def test_numeric_task_codes_are_recovered_and_held(world: World) -> None:
    before = published_first(world, PAGED)
    world.partners.faults(PAGED, {"kind": "wrong_types", "count": 7, "page": 1})
    bad = world.night(PAGED, full=True)
    assert world.on_platform(PAGED) == before
    recovered = [q for q in bad.report["quarantined"] if any("可识别为" in p["reason"] for p in q["problems"])]
    codes = {q["task_code"] for q in recovered}
    assert len(codes) == 7 and codes & set(before) and codes & set(before) <= set(bad.report["held"])
    assert bad.report["counts"]["removed"] == 0
    assert bad.report["removal_guard"] is None
    [notice] = bad.notices
    assert notice.event == "codes_recovered" and "有 7 条记录的实施编码不是文本" in notice.text
    assert_partner_texts_clean(world, bad, PAGED)


def test_a_confirmed_mass_withdrawal_removes_exactly_the_withdrawn_items(world: World) -> None:
    before = published_first(world, PAGED)
    withdrawn = sorted(before)[:60]  # 30% of the catalogue really withdrawn by the partner
    for code in withdrawn:
        world.partners.delete(PAGED, code)
    held = world.night(PAGED, full=True)
    assert world.on_platform(PAGED) == before
    assert [r["task_code"] for r in held.report["removal_guard"]["held"]] == withdrawn

    with pytest.raises(ValueError, match="not <division>@<run id>"):
        parse_confirmations([f"{PAGED}:{held.run_id}"])
    with pytest.raises(ValueError, match="held no removals"):
        check_confirmations(world.root, [f"{PAGED}@night-1"], [PAGED])
    with pytest.raises(ValueError, match="not in this run"):
        check_confirmations(world.root, [f"{PAGED}@{held.run_id}"], [CURSOR])
    assert check_confirmations(world.root, [f"{PAGED}@{held.run_id}"], [PAGED]) == {PAGED: held.run_id}

    also_gone = sorted(before)[100]  # withdrawn after the confirmation was given: not confirmed by it
    world.partners.delete(PAGED, also_gone)
    confirmed = world.night(PAGED, full=True, confirmed_run=held.run_id)
    after = world.on_platform(PAGED)
    assert set(before) - set(after) == {*withdrawn, also_gone}  # one more removal of 140 is below the rate
    assert confirmed.report["removal_guard"]["confirmed"] == withdrawn
    assert sorted(r["task_code"] for r in confirmed.report["removed"]) == sorted([*withdrawn, also_gone])
    assert "已经人工确认" in confirmed.report["removal_guard"]["text"] and not confirmed.notices
    assert_partner_texts_clean(world, confirmed, PAGED)


def test_removals_a_later_full_pull_published_whole_can_no_longer_be_confirmed(world: World) -> None:
    """An empty answer held every removal; the next full pull was whole again and published. Weeks later an operator
    acts on the old alert: had the confirmation been taken, a night whose answer is cut short again would remove
    every item the old run held, unguarded. It is refused, naming the later pull (plan fails with it)."""
    before = published_first(world, PAGED)
    world.partners.faults(PAGED, {"kind": "empty_catalogue"})
    bad = world.night(PAGED, full=True)
    world.partners.faults(PAGED)
    assert len(bad.report["removal_guard"]["held"]) == len(before)
    assert check_confirmations(world.root, [f"{PAGED}@{bad.run_id}"], [PAGED]) == {PAGED: bad.run_id}  # pending
    whole = world.night(PAGED, full=True)
    assert whole.report["removal_guard"] is None and world.on_platform(PAGED) == before
    with pytest.raises(ValueError, match=f"run {whole.run_id} pulled partner {PAGED} in full after run {bad.run_id}"):
        check_confirmations(world.root, [f"{PAGED}@{bad.run_id}"], [PAGED])


# --- held back: the watermark stays, the next night re-pulls ----------------------------------------


def test_a_held_back_night_does_not_advance_the_watermark(world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    before = published_first(world, PAGED)
    clean = world.night(PAGED)  # an incremental night that published: the base of the next pull
    assert clean.fetched.mode == "incremental"
    alone = world.alone(PAGED)
    broken, fine = [r["task_code"] for r in alone[:10]], alone[10]["task_code"]
    for code in broken:
        world.partners.patch(PAGED, code, legal_basis="")
    world.partners.patch(PAGED, fine, result="新的办理结果")
    # 10 of 11 changed records fail: 10 of the 200 items of the catalogue (an incremental night's denominator)
    monkeypatch.setenv("TONGBAN_MAX_CRITICAL_RATE", "0.04")
    held = world.night(PAGED)
    assert held.fetched.mode == "incremental" and held.report["held_back"]
    assert world.on_platform(PAGED) == before
    notice, pulled = held.report["hold_back"], held.fetched.fetched  # the 11 changed, and the overlap
    assert notice["failing"] == 10 and notice["records"] == pulled and notice["catalogue"] == len(before)
    rate = f"10/{len(before)} = {percent(10 / len(before))} > 4%"
    assert f"{rate}（分母为贵方事项目录 {len(before)} 条：本次增量拉取 {pulled} 条" in notice["text"]
    assert "请按" in notice["text"]
    passed = {i["task_code"] for i in held.report["held_with_partner"]}
    assert fine in passed and not passed & set(broken) and len(passed) == pulled - 10
    assert [n.event for n in held.notices] == ["partner_held_back"]
    assert not watermark.committed(world.root, held.run_id, PAGED)
    assert_partner_texts_clean(world, held, PAGED)

    for record in alone[:10]:  # the partner fixes its records (and says what the result is now)
        world.partners.patch(PAGED, record["task_code"], legal_basis=record["legal_basis"], result="更正后的办理结果")
    fixed = world.night(PAGED)
    assert fixed.fetched.mode == "incremental" and fixed.fetched.since == clean_since(world, clean)
    assert not fixed.report["held_back"]
    assert sorted(c["task_code"] for c in fixed.report["changed"]) == sorted([*broken, fine])
    served = {r["task_code"]: content_hash(r) for r in world.partners.served(PAGED)}
    after = world.on_platform(PAGED)
    assert all(after[code] == served[code] for code in [*broken, fine])


def clean_since(world: World, clean: Night) -> str:
    """The ``since`` an incremental pull based on ``clean``'s watermark asks for."""
    mark = read_json(clean.run / layout.FETCH)["watermark"]
    return (datetime.fromisoformat(mark) - watermark.OVERLAP).isoformat()


# --- future dates -----------------------------------------------------------------------------------


def test_a_future_timestamp_is_flagged_and_does_not_freeze_the_partner(world: World) -> None:
    published_first(world, CURSOR)
    world.partners.faults(CURSOR, {"kind": "future_timestamp", "count": 1, "page": 1})
    flagged = world.night(CURSOR)
    mark = datetime.fromisoformat(read_json(flagged.run / layout.FETCH)["watermark"])
    assert mark.year < 2099
    [future] = flagged.report["future_dated"]
    assert_partner_texts_clean(world, flagged, CURSOR)
    assert future["updated_at"].startswith("2099-12-31") and "晚于本次拉取时间" in future["reason"]
    world.partners.faults(CURSOR)
    target = world.alone(CURSOR)[-1]["task_code"]
    world.partners.patch(CURSOR, target, result="又一个办理结果")
    later = world.night(CURSOR)
    assert later.fetched.mode == "incremental" and later.fetched.fetched >= 1
    assert [c["task_code"] for c in later.report["changed"]] == [target]


def test_a_frozen_watermark_from_before_is_taken_as_now(world: World) -> None:
    partner = world.partners.registry.partner(CURSOR)
    now = datetime.now(UTC)
    watermark.record(world.root, CURSOR, "old", {"mode": "full", "pulled_at": (now - timedelta(days=1)).isoformat()}
                     | {"watermark": "2099-12-31T00:00:00+08:00", "fetched": 1})  # fmt: skip
    write_json(run_dir(world.root, "old", CURSOR) / layout.PUBLISH, {"dry_run": False, "accepted": [], "rejected": []})
    plan = watermark.plan(world.root, partner, "new", now=now)
    assert plan.mode == "incremental" and plan.since == now - watermark.OVERLAP


# --- quarantine without a code counts against the hold-back rate ------------------------------------


def test_unreadable_records_without_a_code_count_against_the_rate(world: World) -> None:
    world.partners.faults(CURSOR, {"kind": "non_objects", "page": 1})  # page 1 of 4: 25% unreadable
    night = world.night(CURSOR, settings=replace(FAST, page_size=25))
    validation = read_json(night.run / layout.VALIDATION)
    assert validation["unidentified"] == 25 and validation["records"] == 100
    assert validation["held_back"] and night.report["hold_back"]["failing"] >= 25
    assert [q["task_code"] for q in read_jsonl(night.run / layout.QUARANTINE)].count(None) == 25


def test_a_sharp_shrink_alone_holds_the_removals() -> None:
    """Few removals (10 of 100 published), but the catalogue shrank by 30% against the last complete full pull
    (the rest of the missing records were never on the platform): held, for the shrink alone."""
    removed = [{"task_code": f"T{i:03d}", "name": "事项", "level": "3"} for i in range(10)]
    recon = Reconciliation(removed=list(removed), unchanged=[f"K{i:03d}" for i in range(90)])
    guard.apply(recon, 100, size=70, previous_size=100, limit=0.2)
    assert recon.removed == [] and recon.held == [r["task_code"] for r in removed]
    assert recon.removal_guard and recon.removal_guard["reasons"] == [
        "贵方接口给出的事项总数 70 较上次已发布的全量拉取（100）减少 30% > 20%"
    ]
    fine = Reconciliation(removed=list(removed))
    guard.apply(fine, 100, size=90, previous_size=100, limit=0.2)  # 10% fewer, 10% removed: ordinary
    assert fine.removed == removed and fine.removal_guard is None
    incremental = Reconciliation(removed=list(removed), full=False)
    guard.apply(incremental, 10, size=1, previous_size=100, limit=0.2)
    assert incremental.removal_guard is None


def test_the_removal_notice_of_a_dry_run_does_not_say_the_other_changes_were_pushed() -> None:
    held = {"held": [{"task_code": "x"}], "reasons": ["本次全量拉取将删除 1/1 项（100%），超过 20% 的删除阈值"]}
    published = guard.removal_notice(held, "440100", "r1")
    dry = guard.removal_notice(held, "440100", "r1", dry_run=True)
    assert published and "已正常推送" in published
    assert dry and "已正常推送" not in dry and "试运行" in dry
    assert guard.removal_notice({"held": [], "reasons": []}, "440100", "r1") is None


# --- a re-coded item the platform refuses under its new code ------------------------------------------


def test_a_recode_the_platform_refuses_keeps_the_item_under_its_old_code(world: World) -> None:
    """A department gets a new USCC, so the partner sends an item under a new 实施编码 (a re-code: same 基本编码, name
    and department); the platform refuses the new code. The move is not half made: the item stays on the platform
    under its old code, item store alike; the next nights add the new code and a full pull removes the old one."""
    before = published_first(world, PAGED)
    old = next(r for r in world.partners.served(PAGED) if r["task_code"] == world.alone(PAGED)[0]["task_code"])
    uscc = old["dept_uscc"]
    body = next(b for b in ("99" + uscc[10:16], "98" + uscc[10:16]) if b != uscc[8:16])
    new_uscc = make_uscc(uscc[0], uscc[1], uscc[2:8], body)
    moved = {k: v for k, v in old.items() if k not in ("updated_at", "version")}
    moved |= {"dept_uscc": new_uscc, "task_code": make_task_code(new_uscc, old["level"], old["catalog_code"])}
    world.partners.delete(PAGED, old["task_code"])
    requests.post(f"{world.partners.url}/admin/partners/{PAGED}/items", json=moved, timeout=10).raise_for_status()
    faults = f"{world.platform.base_url}/admin/faults"
    requests.put(faults, json={"reject": {moved["task_code"]: "实施主体统一社会信用代码未在省平台登记"}}, timeout=10)
    try:
        refused = world.night(PAGED, full=True)
    finally:
        requests.put(faults, json={}, timeout=10).raise_for_status()
    [recode] = refused.report["recoded"]
    assert (recode["old_code"], recode["task_code"]) == (old["task_code"], moved["task_code"])
    assert [r["task_code"] for r in refused.report["platform_rejected"]] == [moved["task_code"]]
    assert world.on_platform(PAGED) == before  # the old code kept, as it was
    assert drift(world.platform, PAGED, world.store) == {"only_on_platform": [], "only_in_store": [], "different": []}

    quiet = world.night(PAGED)  # the next night's changes since the last pull carry the new code: it is taken
    assert quiet.fetched.mode == "incremental" and [r["task_code"] for r in quiet.report["added"]] == [
        moved["task_code"]
    ]
    assert world.on_platform(PAGED).keys() == before.keys() | {moved["task_code"]}  # nothing removed on such a night

    whole = world.night(PAGED, full=True)  # a full pull finds the old code withdrawn
    assert [r["task_code"] for r in whole.report["removed"]] == [old["task_code"]]
    after = world.on_platform(PAGED)
    assert after.keys() == before.keys() - {old["task_code"]} | {moved["task_code"]}
    assert drift(world.platform, PAGED, world.store) == {"only_on_platform": [], "only_in_store": [], "different": []}


# --- an older version of an item, served again --------------------------------------------------------


def test_a_restored_backup_does_not_revert_published_items(world: World) -> None:
    """The partner restores last week's backup: its full answer is whole and well formed, but an item changed since
    comes in its older version, with its older update time. It is rejected, the platform keeps the newer version;
    a change the partner makes after the restore is published as usual."""
    published_first(world, PAGED)
    alone = [r["task_code"] for r in world.alone(PAGED)[:2]]
    was = {r["task_code"]: r for r in world.partners.served(PAGED) if r["task_code"] in alone}
    restored, edited = alone
    world.partners.patch(PAGED, restored, result="一周内更新的办理结果")
    assert [c["task_code"] for c in world.night(PAGED).report["changed"]] == [restored]
    newer = world.on_platform(PAGED)

    old = was[restored]
    world.partners.patch(PAGED, restored, result=old["result"], updated_at=old["updated_at"], version=old["version"])
    world.partners.patch(PAGED, edited, result="恢复备份之后更新的办理结果")
    night = world.night(PAGED, full=True)
    after = world.on_platform(PAGED)
    assert after[restored] == newer[restored]  # not reverted
    older = [r for r in night.report["rejected"] if r["findings"][0]["expectation"] == pipeline.OLDER_THAN_PUBLISHED]
    [rejected] = older
    [finding] = rejected["findings"]
    assert rejected["task_code"] == restored
    assert "早于省一体化平台上已发布版本的更新时间" in finding["message"] and finding["label"] == "更新时间"
    assert [c["task_code"] for c in night.report["changed"]] == [edited] and after[edited] != newer[edited]
    assert restored in {o["task_code"] for o in night.report["outstanding"]}  # 待整改 until the partner edits it
    assert_partner_texts_clean(world, night, PAGED)
