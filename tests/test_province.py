"""The province stage: 五级N同 across the partners of one province, on hand-made items of real partners.

Each partner is validated by the real validate stage first (its own GX suite), then the province
stage compares them, as the DAG runs them.
"""

from __future__ import annotations

from typing import Any

import pytest
from upath import UPath

from tests.validation.item_fixtures import CITY_USCC, SHENZHEN_USCC, make_record
from tongban import layout, pipeline, province
from tongban.codes import make_uscc
from tongban.registry import Partner, load_registry
from tongban.results import ProvinceChecked, Validated
from tongban.storage import read_json, read_jsonl, write_json, write_jsonl
from tongban.store.repo import ItemStore

REGISTRY = load_registry()
GZ, SZ, FS, JN = (REGISTRY.partner(d) for d in ("440100", "440300", "440600", "370100"))
USCC = {
    GZ.division: CITY_USCC,
    SZ.division: SHENZHEN_USCC,
    FS.division: make_uscc("1", "1", "440600", "00090001"),
    JN.division: make_uscc("1", "1", "370100", "00090002"),
}
PROVINCE_USCC = make_uscc("1", "1", "440000", "00090003")  # a Guangdong provincial department
OTHER_RESULT = "失业登记证明（本市版）"


def item(partner: Partner, index: int = 1, **changes: Any) -> dict[str, Any]:
    """Item ``index`` as implemented by a city bureau of ``partner`` (the same everywhere unless changed)."""
    return make_record(index, uscc=USCC[partner.division], partner=partner.division, **changes)


@pytest.fixture
def runs(tmp_path) -> UPath:
    return UPath(tmp_path) / layout.RUNS / "manual__1"


@pytest.fixture
def store(tmp_path) -> ItemStore:
    return ItemStore(f"sqlite:///{tmp_path / 'items.db'}")


def validate(runs: UPath, store: ItemStore, partner: Partner, records: list[dict[str, Any]]) -> Validated:
    run = runs / partner.division
    write_json(run / layout.FETCH, {"mode": "full", "status": "ok"})
    write_jsonl(run / layout.ITEMS, records)
    write_jsonl(run / layout.QUARANTINE, [])
    return pipeline.validate(partner, run, store)


def check(
    runs: UPath, store: ItemStore, validated: dict[str, Validated], planned: list[Partner]
) -> list[ProvinceChecked]:
    return province.check_run(planned, REGISTRY.partners, validated, runs, store)


def rejected(runs: UPath, partner: Partner) -> dict[str, list[dict[str, Any]]]:
    return {r["record"]["task_code"]: r["findings"] for r in read_jsonl(runs / partner.division / layout.REJECTED)}


def test_the_partner_disagreeing_with_the_province_majority_is_rejected_naming_element_and_partners(
    runs: UPath, store: ItemStore
) -> None:
    records = {
        GZ: [item(GZ, 1), item(GZ, 2)],
        SZ: [item(SZ, 1, result=OTHER_RESULT), item(SZ, 2)],
        FS: [item(FS, 1)],
    }
    validated = {p.division: validate(runs, store, p, r) for p, r in records.items()}
    assert all(v.rejected == 0 for v in validated.values())  # each partner is consistent on its own

    summaries = check(runs, store, validated, [GZ, SZ, FS])

    assert [(s.partner, s.province_rejected, s.held_back) for s in summaries] == [
        ("440100", 0, False),
        ("440300", 1, True),  # 1 of 2 records rejected: above the default 0.2
        ("440600", 0, False),
    ]
    bad = records[SZ][0]["task_code"]
    [finding] = rejected(runs, SZ)[bad]
    assert (finding["element"], finding["expectation"], finding["severity"]) == (
        "result",
        "five_level_across_partners",
        "critical",
    )
    reference = records[GZ][0]["task_code"]  # the first partner holding the majority value
    assert f"办理结果在深圳市地市级（实施编码 {bad}）与广州市地市级（实施编码 {reference}）不一致" in finding["message"]
    assert "多数伙伴一致的内容为准（2/3个伙伴）" in finding["message"] and "广东省" in finding["message"]
    assert rejected(runs, GZ) == rejected(runs, FS) == {}
    # the rest of the pipeline sees it: not reconciled, held on the platform, counted in the rate
    sz = runs / SZ.division
    assert [r["task_code"] for r in pipeline.accepted_records(sz)] == [records[SZ][1]["task_code"]]
    assert bad in pipeline.held_codes(sz) and pipeline.held_back(sz) is True
    assert pipeline.held_back(runs / GZ.division) is False
    # the province's own record and GX result, in the run folder
    record = read_json(runs / layout.PROVINCES / "440000" / layout.FIVE_LEVEL)
    assert record["compared"] == {"items": 5, "catalog_codes": 2}  # items 1 and 2 of 广州, 深圳 and 佛山
    assert [(f["partner"], f["task_code"]) for f in record["findings"]] == [("440300", bad)]
    assert {d: p["role"] for d, p in record["partners"].items()} == {
        p.division: "judged" if p in records else "not_validated" for p in REGISTRY.partners if p.province == "440000"
    }
    gx = read_json(runs / layout.PROVINCES / "440000" / layout.GX_RESULT)
    assert gx["success"] is False
    assert gx["results"][0]["expectation_config"]["type"] == "expect_five_level_elements_identical"


def test_two_partners_disagreeing_are_both_held_each_naming_the_other(runs: UPath, store: ItemStore) -> None:
    gz, sz = item(GZ, 1), item(SZ, 1, promised_limit=3)
    validated = {GZ.division: validate(runs, store, GZ, [gz]), SZ.division: validate(runs, store, SZ, [sz])}

    check(runs, store, validated, [GZ, SZ])

    [gz_finding] = rejected(runs, GZ)[gz["task_code"]]
    [sz_finding] = rejected(runs, SZ)[sz["task_code"]]
    assert gz_finding["element"] == sz_finding["element"] == "time_limit"
    assert (
        f"在广州市地市级（实施编码 {gz['task_code']}）与深圳市地市级（实施编码 {sz['task_code']}）"
        in (gz_finding["message"])
    )
    assert (
        f"在深圳市地市级（实施编码 {sz['task_code']}）与广州市地市级（实施编码 {gz['task_code']}）"
        in (sz_finding["message"])
    )
    assert "相持不下" in gz_finding["message"] and "无法判定以哪方为准" in sz_finding["message"]


def test_the_more_senior_level_is_the_reference_whatever_the_count(runs: UPath, store: ItemStore) -> None:
    provincial = make_record(1, uscc=PROVINCE_USCC, level="2", partner=GZ.division)
    gz_city, sz_city = item(GZ, 1), item(SZ, 1, accept_conditions="另需提交本市居住证明。")
    fs_city = item(FS, 1, accept_conditions="另需提交本市居住证明。")
    validated = {
        GZ.division: validate(runs, store, GZ, [provincial, gz_city]),
        SZ.division: validate(runs, store, SZ, [sz_city]),
        FS.division: validate(runs, store, FS, [fs_city]),
    }

    check(runs, store, validated, [GZ, SZ, FS])

    assert rejected(runs, GZ) == {}
    [finding] = rejected(runs, SZ)[sz_city["task_code"]]
    assert finding["element"] == "accept_conditions"
    assert f"与广州市省级（实施编码 {provincial['task_code']}）不一致" in finding["message"]
    assert list(rejected(runs, FS)) == [fs_city["task_code"]]


def test_partners_of_different_provinces_are_not_compared(runs: UPath, store: ItemStore) -> None:
    gz, jn = item(GZ, 1), item(JN, 1, result=OTHER_RESULT, name="失业登记（济南）")
    assert gz["catalog_code"] == jn["catalog_code"]
    validated = {GZ.division: validate(runs, store, GZ, [gz]), JN.division: validate(runs, store, JN, [jn])}

    summaries = check(runs, store, validated, [JN, GZ])

    assert [(s.partner, s.province, s.compared, s.province_rejected) for s in summaries] == [
        ("370100", "370000", 0, 0),
        ("440100", "440000", 0, 0),
    ]
    assert rejected(runs, GZ) == rejected(runs, JN) == {}
    for code in ("370000", "440000"):
        record = read_json(runs / layout.PROVINCES / code / layout.FIVE_LEVEL)
        assert record["compared"]["items"] == 0 and record["findings"] == []


def test_published_items_of_partners_outside_the_run_vote_and_a_failed_partner_blocks_nothing(
    runs: UPath, store: ItemStore
) -> None:
    # 深圳 and 佛山 published another 办理结果 earlier; this run 深圳's pull failed and 佛山 is not in it
    store.apply("run-0", SZ.division, [item(SZ, 1, result=OTHER_RESULT)], [])
    store.apply("run-0", FS.division, [item(FS, 1, result=OTHER_RESULT)], [])
    gz = item(GZ, 1)
    validated = {GZ.division: validate(runs, store, GZ, [gz, item(GZ, 2)])}

    summaries = check(runs, store, validated, [GZ, SZ])

    assert summaries[1].model_dump(exclude_none=True) == {"partner": "440300", "province": "440000", "validated": False}
    assert summaries[0].province_rejected == 1
    [finding] = rejected(runs, GZ)[gz["task_code"]]
    assert "与深圳市地市级" in finding["message"] and "（2/3个伙伴）" in finding["message"]
    roles = read_json(runs / layout.PROVINCES / "440000" / layout.FIVE_LEVEL)["partners"]
    assert (roles["440300"]["role"], roles["440300"]["context"]) == ("not_validated", 1)


def test_items_whose_removal_the_guard_holds_stay_and_vote_as_published(runs: UPath, store: ItemStore) -> None:
    """广州's full pull tonight lacks two of its three published items: too many removals (2/3 > 20%), so the
    removal guard will hold them and the platform keeps them. They vote with their published content, are
    never judged themselves, and make 佛山's version the province's majority: 深圳 alone differs."""
    store.apply("run-0", GZ.division, [item(GZ, 1), item(GZ, 2), item(GZ, 3)], [])
    sz, fs = item(SZ, 1, result=OTHER_RESULT), item(FS, 1)
    records = {GZ: [item(GZ, 2)], SZ: [sz], FS: [fs]}
    validated = {p.division: validate(runs, store, p, r) for p, r in records.items()}

    summaries = check(runs, store, validated, [GZ, SZ, FS])

    assert [(s.partner, s.province_rejected) for s in summaries] == [("440100", 0), ("440300", 1), ("440600", 0)]
    [finding] = rejected(runs, SZ)[sz["task_code"]]
    held = item(GZ, 1)["task_code"]
    assert f"与广州市地市级（实施编码 {held}）不一致" in finding["message"] and "（2/3个伙伴）" in finding["message"]
    assert rejected(runs, GZ) == rejected(runs, FS) == {}
    record = read_json(runs / layout.PROVINCES / "440000" / layout.FIVE_LEVEL)
    assert record["partners"]["440100"] == {"role": "judged", "removals_held": 2, "judged": 1, "context": 2}
    assert [(f["partner"], f["task_code"]) for f in record["findings"]] == [("440300", sz["task_code"])]


@pytest.mark.parametrize("why", ["few removals", "confirmed"])
def test_items_a_full_pull_removes_do_not_vote(runs: UPath, store: ItemStore, why: str) -> None:
    """The same province, but 广州's missing items really go: one of five is within the removal limit, or a person
    confirmed the removals an earlier run held. Gone from the platform, they do not vote: 深圳 and 佛山 tie."""
    published = [item(GZ, i) for i in range(1, 6)]
    store.apply("run-0", GZ.division, published, [])
    delivered, confirmed = published[1:], {}
    if why == "confirmed":
        delivered = published[1:2]
        held = [{"task_code": r["task_code"]} for r in published if r not in delivered]
        write_json(runs.parent / "manual__0" / GZ.division / layout.RECONCILIATION, {"removal_guard": {"held": held}})
        confirmed = {GZ.division: "manual__0"}
    sz, fs = item(SZ, 1, result=OTHER_RESULT), item(FS, 1)
    validated = {p.division: validate(runs, store, p, r) for p, r in ((GZ, delivered), (SZ, [sz]), (FS, [fs]))}

    province.check_run([GZ, SZ, FS], REGISTRY.partners, validated, runs, store, confirmed)

    assert list(rejected(runs, SZ)) == [sz["task_code"]] and list(rejected(runs, FS)) == [fs["task_code"]]
    assert "相持不下" in rejected(runs, FS)[fs["task_code"]][0]["message"]
    roles = read_json(runs / layout.PROVINCES / "440000" / layout.FIVE_LEVEL)["partners"]
    assert (roles["440100"]["removals_held"], roles["440100"]["context"]) == (0, 0)


def test_incremental_pull_is_compared_with_the_partners_published_items_and_rerunning_changes_nothing(
    runs: UPath, store: ItemStore
) -> None:
    store.apply("run-0", GZ.division, [item(GZ, 1), item(GZ, 2)], [])
    store.apply("run-0", SZ.division, [item(SZ, 2)], [])
    run = runs / SZ.division
    write_json(run / layout.FETCH, {"mode": "incremental", "status": "ok"})
    changed = item(SZ, 2, result=OTHER_RESULT)  # 深圳 alone changes an item that 广州 holds unchanged
    write_jsonl(run / layout.ITEMS, [changed])
    validated = {SZ.division: pipeline.validate(SZ, run, store)}

    first = check(runs, store, validated, [SZ])
    files = {name: (run / name).read_bytes() for name in (layout.REJECTED, layout.WARNINGS)}
    again = check(runs, store, validated, [SZ])

    assert first == again and first[0].province_rejected == 1  # 1 against 1 published: a tie, not published
    assert {name: (run / name).read_bytes() for name in files} == files
    assert list(rejected(runs, SZ)) == [changed["task_code"]]
    assert list(pipeline.accepted_records(run)) == []


def test_validating_again_voids_the_last_province_check(runs: UPath, store: ItemStore) -> None:
    records = {GZ: [item(GZ, 1)], SZ: [item(SZ, 1, result=OTHER_RESULT)]}
    validated = {p.division: validate(runs, store, p, r) for p, r in records.items()}
    check(runs, store, validated, [GZ, SZ])
    assert pipeline.held_back(runs / GZ.division) is True

    validate(runs, store, GZ, records[GZ])

    assert not (runs / GZ.division / layout.PROVINCE_CHECK).exists()
    assert pipeline.held_back(runs / GZ.division) is False and rejected(runs, GZ) == {}
