"""Normalisation from hand-written wire records of each format (independent of the simulator)."""

from __future__ import annotations

from typing import Any

import pytest

from tests.conftest import make_record
from tongban.model import Item
from tongban.normalise import Quarantined, RecordMapper, normalise_catalogue
from tongban.registry import load_registry, wire_formats

GOOD = make_record()
PARTNER = load_registry().partner("440100")
SHENZHEN = load_registry().partner("440300")
HUIZHOU = load_registry().partner("441300")  # csv_gbk


def national(**overrides: Any) -> dict[str, Any]:
    record = {
        "task_code": GOOD["task_code"],
        "catalog_code": GOOD["catalog_code"],
        "task_name": GOOD["name"],
        "by_law": GOOD["legal_basis"],
        "task_type": "20",
        "accept_condition": GOOD["accept_conditions"],
        "server_type": "1",
        "handle_flow": GOOD["procedure"],
        "materials": [
            {
                "material_name": "居民身份证",
                "is_need": "1",
                "material_form": "1",
                "page_num": 1,
                "source_type": "申请人自备",
            }
        ],
        "anticipate_day": 15,
        "anticipate_type": "1",
        "promise_day": 5,
        "promise_type": "1",
        "result_name": GOOD["result"],
        "use_level": "3",
        "dept_name": GOOD["dept_name"],
        "dept_code": GOOD["dept_uscc"],
        "handle_mode": "1",
        "project_type": "2",
        "task_version": 3,
        "update_time": "2026-11-01 08:00:00",
    }
    record.update(overrides)
    return record


def pinyin(**overrides: Any) -> dict[str, Any]:
    record = {
        "SSBM": GOOD["task_code"],
        "JBBM": GOOD["catalog_code"],
        "SXMC": GOOD["name"],
        "SDYJ": GOOD["legal_basis"],
        "SXLX": "GG",
        "SLTJ": GOOD["accept_conditions"],
        "FWDX": "1",
        "BLLC": GOOD["procedure"],
        "SQCL": [{"CLMC": "居民身份证", "SFBX": "是", "CLXS": "纸质", "FS": "1", "LY": "申请人自备"}],
        "FDBJSX": "15",
        "FDBJSXDW": "2",  # 2 = 工作日 in this format
        "CNBJSX": "5",
        "CNBJSXDW": "2",
        "BLJG": GOOD["result"],
        "XSCJ": "2",  # 2 = 市 in this format's numbering
        "SSZT": GOOD["dept_name"],
        "SSZTBM": GOOD["dept_uscc"],
        "TBMS": "全程网办",
        "BJLX": "1",  # 1 = 承诺件 here (reversed)
        "BBH": "3",
        "GXSJ": "20261101080000",
    }
    record.update(overrides)
    return record


def csv_row(**overrides: Any) -> dict[str, Any]:
    """A CSV export row as the reader gives it: every value text, empty for none."""
    record = {
        "unifyId": GOOD["task_code"],
        "rightsCode": GOOD["catalog_code"],
        "unifyName": GOOD["name"],
        "setBasis": GOOD["legal_basis"],
        "typeName": "公共服务",
        "acceptCondition": GOOD["accept_conditions"],
        "serveObject": "1",
        "handleFlow": GOOD["procedure"],
        "materialList": "居民身份证|Y|纸质|1|申请人自备",
        "approveLimit": "15",
        "approveLimitUnit": "G",  # G = 工作日 here
        "commitmentLimit": "5",
        "commitmentLimitUnit": "G",
        "resultName": GOOD["result"],
        "exerciseLevel": "市级",
        "orgName": GOOD["dept_name"],
        "orgCode": GOOD["dept_uscc"],
        "handleMode": "01",
        "projectType": "承诺件",
        "version": "3",
        "updateTime": "2026/11/01 08:00:00",
    }
    record.update(overrides)
    return record


def run(fmt: str, *records: Any, partner=PARTNER) -> list[Item | Quarantined]:
    """Each record mapped on its own (no dedupe), as the first page of a pull."""
    mapper = RecordMapper(wire_formats()[fmt], partner)
    return [mapper.map(raw, f"第1页第{index}条") for index, raw in enumerate(records, start=1)]


def canonical(item: Item) -> dict[str, Any]:
    return {k: v for k, v in item.record().items() if k not in ("source_ref",)}


def test_every_format_gives_the_same_canonical_item() -> None:
    [a] = run("national_json", national())
    [b] = run("pinyin_json", pinyin())
    [c] = run("csv_gbk", csv_row())
    assert isinstance(a, Item) and isinstance(b, Item) and isinstance(c, Item)
    expected = {k: v for k, v in Item(**GOOD).record().items() if k != "source_ref"}
    assert canonical(a) == expected
    assert canonical(b) == expected
    assert canonical(c) == expected
    assert a.source_ref == "第1页第1条"


def test_format_dictionaries_really_differ() -> None:
    # the same wire code means opposite things in the two formats
    [a] = run("national_json", national(project_type="1", anticipate_type="2"))
    [b] = run("pinyin_json", pinyin(BJLX="1", FDBJSXDW="1"))
    assert (a.handle_type, a.legal_limit_unit) == ("1", "ND")  # type: ignore[union-attr]
    assert (b.handle_type, b.legal_limit_unit) == ("2", "ND")  # type: ignore[union-attr]


def test_multi_valued_service_objects() -> None:
    [a] = run("national_json", national(server_type="6,1"))
    [b] = run("pinyin_json", pinyin(FWDX="2|3"))
    assert a.service_objects == ["1", "6"]  # type: ignore[union-attr]
    assert b.service_objects == ["2", "3"]  # type: ignore[union-attr]


def test_unmappable_code_is_quarantined_naming_partner_position_and_field() -> None:
    [q] = run("pinyin_json", pinyin(), pinyin(SXLX="ZZ"), partner=SHENZHEN)[1:]
    assert isinstance(q, Quarantined)
    assert (q.partner, q.position, q.task_code) == ("440300", "第1页第2条", GOOD["task_code"])
    [problem] = q.problems
    assert (problem.field, problem.wire_field) == ("item_type", "SXLX")
    assert "'ZZ'" in problem.reason
    assert q.raw["SXLX"] == "ZZ"  # the raw record is kept


def test_every_problem_of_a_record_is_reported() -> None:
    raw = national(anticipate_day="十五", update_time="yesterday")
    del raw["task_name"]
    [q] = run("national_json", raw)
    assert isinstance(q, Quarantined)
    assert {p.wire_field for p in q.problems} == {"anticipate_day", "update_time", "task_name"}


def test_non_object_record_and_bad_materials_are_quarantined() -> None:
    q1, q2 = run("national_json", "not a record", national(materials="身份证"))
    assert isinstance(q1, Quarantined) and q1.task_code is None
    assert isinstance(q2, Quarantined) and q2.problems[0].field == "materials"


def test_empty_text_passes_through_for_validation_to_judge() -> None:
    # an empty legal basis is well-formed wire data; rejecting it is the validation stage's job
    [item] = run("national_json", national(by_law=""))
    assert isinstance(item, Item) and item.legal_basis == ""


def test_csv_cells_empty_values_and_packed_materials() -> None:
    [item] = run(
        "csv_gbk",
        csv_row(
            approveLimit="",
            approveLimitUnit="",
            projectType="",
            serveObject="2,3",
            materialList="申请表|Y|电子||申请人自备;营业执照|N|纸质及电子|2|政府部门核发",
        ),
    )
    assert isinstance(item, Item)
    assert (item.legal_limit, item.legal_limit_unit, item.handle_type) == (None, None, None)
    assert item.service_objects == ["2", "3"]
    assert [(m.name, m.required, m.form, m.copies) for m in item.materials] == [
        ("申请表", True, "electronic", None),
        ("营业执照", False, "both", 2),
    ]
    [empty] = run("csv_gbk", csv_row(materialList=""))
    assert isinstance(empty, Item) and empty.materials == []


def test_a_malformed_materials_cell_is_quarantined_naming_the_entry() -> None:
    [q] = run("csv_gbk", csv_row(materialList="居民身份证|Y|纸质|1|申请人自备;户口簿|Y"), partner=HUIZHOU)
    assert isinstance(q, Quarantined) and q.partner == "441300"
    [problem] = q.problems
    assert problem.wire_field == "materialList" and "第 2 项应有 5 段" in problem.reason


def test_a_missing_optional_field_is_a_problem_not_a_silent_null() -> None:
    raw = pinyin()
    del raw["BJLX"]
    [q] = run("pinyin_json", raw)
    assert isinstance(q, Quarantined) and q.problems[0].reason == "缺少字段 BJLX（办件类型）"


def test_exact_repeats_count_once_and_conflicting_copies_are_all_quarantined() -> None:
    other = national(task_code=GOOD["task_code"][:-3] + "999")
    changed = national(result_name="另一个办理结果")
    pages = [(1, [national(), other]), (2, [national(), changed])]
    result = normalise_catalogue(pages, wire_formats()["national_json"], PARTNER)
    [dup] = result.duplicates
    assert (dup.position, dup.first_position, dup.task_code) == ("第2页第1条", "第1页第1条", GOOD["task_code"])
    items = [o for o in result.outcomes if isinstance(o, Item)]
    held = [o for o in result.outcomes if isinstance(o, Quarantined)]
    assert [i.task_code for i in items] == [other["task_code"]]
    assert [(q.position, q.task_code) for q in held] == [
        ("第1页第1条", GOOD["task_code"]),
        ("第2页第2条", GOOD["task_code"]),
    ]
    assert "出现 2 次且内容不同" in held[0].problems[0].reason


@pytest.mark.parametrize(
    ("text", "layout"),
    [
        ("2026-11-01 08:00:00", "%Y-%m-%d %H:%M:%S"),
        ("2026-11-01T08:00:00", "%Y-%m-%d %H:%M:%S"),
        ("2026-11-01 8:00:00", "%Y-%m-%d %H:%M:%S"),
        ("2026-11-01", "%Y-%m-%d"),
        ("20261101083000", "%Y%m%d%H%M%S"),
        ("2026/11/01 08:00", "%Y/%m/%d %H:%M"),
        ("2026-11-01 08:00:00+08:00", "%Y-%m-%d %H:%M:%S"),
        ("2026-02-30 08:00:00", "%Y-%m-%d %H:%M:%S"),
    ],
)
def test_fast_time_parsing_agrees_with_strptime(text: str, layout: str) -> None:
    from datetime import datetime

    from tongban.normalise import parse_time

    try:
        expected = datetime.strptime(text, layout)
    except ValueError:
        with pytest.raises(ValueError):
            parse_time(text, layout)
    else:
        assert parse_time(text, layout) == expected
