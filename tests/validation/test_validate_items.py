"""validate_items against hand-made bad items: each defect caught with its severity and message.

All cases run in one validation call (GX costs about a second per call after a ~10 s import);
each case has its own 基本编码 so that cases do not meet in the 五级N同 comparison.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import pytest
from item_fixtures import (
    CITY_USCC,
    DISTRICT_USCC,
    HUNAN_USCC,
    MATERIAL,
    catalog_code,
    make_record,
)

from tongban.codes import make_task_code, make_uscc, uscc_check_char
from tongban.registry import Partner, load_registry
from tongban.validation import Finding, ValidationOutcome, validate_items
from tongban.validation.suite import load_suite

TOWNSHIP_USCC = make_uscc("1", "1", "440106", "00090003")
OTHER_CITY_USCC = make_uscc("1", "1", "440100", "00061235")
BAD_CHECK_USCC = CITY_USCC[:17] + ("0" if CITY_USCC[17] != "0" else "1")
_ORG_WRONG = CITY_USCC[:16] + ("0" if CITY_USCC[16] != "0" else "1")
BAD_ORG_USCC = _ORG_WRONG + (uscc_check_char(_ORG_WRONG) or "")
DISTRICT_CODE_35 = make_task_code(DISTRICT_USCC, "4", catalog_code(35))
CITY_CODE_35 = make_task_code(CITY_USCC, "3", catalog_code(35))
WARNINGS = {"catalog_code_item_type", "promised_within_legal_converted"}

Expected = tuple[str, str, tuple[str, ...]]  # (check, element, message fragments)


@dataclass
class Case:
    id: str
    records: list[dict[str, Any]]
    expected: dict[int, list[Expected]] = field(default_factory=dict)  # row offset -> findings


def one(index: int, check: str, element: str, *fragments: str, **changes: Any) -> Case:
    return Case(
        check if "id" not in changes else changes.pop("id"),
        [make_record(index, **changes)],
        {0: [(check, element, fragments)]},
    )


def _cases() -> list[Case]:
    c = catalog_code
    return [
        one(1, "name_length", "name", "事项名称「证」长度为 1 个字", name="证"),
        one(2, "name_length", "name", "长度为 101 个字", name="办" * 101, id="name_too_long"),
        one(3, "catalog_code_format", "code", "基本编码「00010000300A」不是 12 位数字", catalog="00010000300A"),
        one(4, "task_code_length", "code", "长度为 30 位", task_code=make_task_code(CITY_USCC, "3", c(4))[:30]),
        one(
            5,
            "task_code_uscc",
            "code",
            f"前 18 位「{OTHER_CITY_USCC}」",
            f"「{CITY_USCC}」",
            task_code=make_task_code(OTHER_CITY_USCC, "3", c(5)),
        ),
        one(
            6,
            "task_code_level",
            "code",
            "第 19 位行使层级「3（地市级）」与事项的行使层级「4（区县级）」不一致",
            task_code=make_task_code(CITY_USCC, "3", c(6)),
            level="4",
        ),
        one(
            7,
            "task_code_catalog",
            "code",
            f"后 12 位「{c(99)}」与基本编码「{c(7)}」不一致",
            task_code=make_task_code(CITY_USCC, "3", c(99)),
        ),
        Case(
            "task_code_unique",
            [make_record(8), make_record(8)],
            {i: [("task_code_unique", "code", (make_task_code(CITY_USCC, "3", c(8)), "重复出现"))] for i in (0, 1)},
        ),
        one(
            9,
            "catalog_code_item_type",
            "code",
            "第 3–4 位「07（行政确认）」与事项类型「01（行政许可）」不一致",
            catalog=c(9, "07"),
        ),
        one(10, "legal_basis_present", "legal_basis", "设定依据为空", legal_basis="  "),
        one(11, "item_type_known", "item_type", "事项类型「99」不在", item_type="99"),
        one(12, "accept_conditions_present", "accept_conditions", "受理条件为空", accept_conditions=""),
        one(13, "service_objects_present", "service_objects", "服务对象为空", service_objects=[]),
        one(14, "service_objects_known", "service_objects", "服务对象「1,8」中的代码「8」", service_objects=["8", "1"]),
        one(15, "procedure_present", "procedure", "办理流程为空", procedure=""),
        one(16, "materials_present", "materials", "申请材料为空", materials=[]),
        one(
            17,
            "materials_named",
            "materials",
            "共 2 项，其中 1 项没有材料名称",
            materials=[MATERIAL, {**MATERIAL, "name": " "}],
        ),
        one(
            18,
            "time_limit_present",
            "time_limit",
            "均为空",
            legal_limit=None,
            legal_limit_unit=None,
            promised_limit=None,
            promised_limit_unit=None,
        ),
        one(19, "legal_limit_value", "time_limit", "法定办结时限「-1」不是非负整数", legal_limit=-1),
        one(20, "legal_limit_unit", "time_limit", "法定办结时限单位「XD」", legal_limit_unit="XD"),
        one(21, "promised_limit_value", "time_limit", "承诺办结时限「-5」不是非负整数", promised_limit=-5),
        one(22, "promised_limit_unit", "time_limit", "承诺办结时限单位「（空）」", promised_limit_unit=None),
        one(
            23,
            "promised_within_legal",
            "time_limit",
            "承诺办结时限 30 个工作日超过法定办结时限 20 个工作日",
            promised_limit=30,
        ),
        one(
            24,
            "promised_within_legal_converted",
            "time_limit",
            "承诺办结时限 20 个工作日",
            "法定办结时限 20 个自然日",
            promised_limit=20,
            legal_limit_unit="ND",
        ),
        one(25, "result_present", "result", "办理结果为空", result=""),
        one(26, "level_known", "level", "行使层级「7」不在", level="7"),
        one(27, "handling_mode_known", "handling_mode", "通办模式「9」不在", handling_mode="9"),
        one(28, "handle_type_known", "handle_type", "办件类型「3」不在", handle_type="3"),
        one(29, "dept_name_present", "department", "实施主体名称为空", dept_name=""),
        one(
            30,
            "dept_uscc_format",
            "department",
            "「1144010000061234I3」格式错误",
            uscc="1144010000061234I3",
            id="uscc_letter_I",
        ),
        Case(
            "uscc_truncated_17",
            [make_record(31, uscc=CITY_USCC[:17])],
            {
                0: [
                    ("task_code_length", "code", ("长度为 30 位",)),
                    ("dept_uscc_format", "department", (f"「{CITY_USCC[:17]}」格式错误：长度为 17 位",)),
                ]
            },
        ),
        one(
            32,
            "dept_uscc_check_char",
            "department",
            f"「{BAD_CHECK_USCC}」校验码错误：第 18 位应为「{CITY_USCC[17]}」",
            uscc=BAD_CHECK_USCC,
        ),
        one(
            33,
            "dept_uscc_org_code_check",
            "department",
            f"组织机构代码「{BAD_ORG_USCC[8:17]}」校验码错误：第 17 位应为「{CITY_USCC[16]}」",
            uscc=BAD_ORG_USCC,
        ),
        one(
            34,
            "dept_uscc_province",
            "department",
            f"「{HUNAN_USCC}」",
            "行政区划「430981」不在广东省（440000）",
            uscc=HUNAN_USCC,
        ),
        Case(
            "five_level",
            [
                make_record(35),
                make_record(35, uscc=DISTRICT_USCC, level="4", legal_basis="《失业保险条例》（地方修订版）"),
                make_record(35, uscc=TOWNSHIP_USCC, level="5", materials=[{**MATERIAL, "copies": 2}]),
            ],
            {
                1: [
                    (
                        "five_level_identical",
                        "legal_basis",
                        (
                            f"基本编码 {c(35)}）的设定依据在区县级（实施编码 {DISTRICT_CODE_35}）"
                            f"与地市级（实施编码 {CITY_CODE_35}）不一致",
                        ),
                    )
                ],
                2: [("five_level_identical", "materials", ("的申请材料在乡镇级", "与地市级"))],
            },
        ),
    ]


CASES = _cases()
GOOD = [
    make_record(100),
    make_record(100, uscc=DISTRICT_USCC, level="4"),  # same item at the district level
    make_record(101, handle_type=None, legal_limit=None, legal_limit_unit=None),
    make_record(102, promised_limit=10, legal_limit_unit="ND"),  # 10 WD ≈ 14 ND ≤ 20 ND
    make_record(103, catalog=catalog_code(103, "20"), item_type="20", service_objects=["2", "1"]),
]


@pytest.fixture(scope="module")
def run(partner: Partner) -> tuple[ValidationOutcome, dict[str, int]]:
    records, offsets = list(GOOD), {}
    for case in CASES:
        offsets[case.id] = len(records)
        records.extend(case.records)
    return validate_items(records, partner), offsets


def _by_row(outcome: ValidationOutcome) -> dict[int, list[Finding]]:
    rows: dict[int, list[Finding]] = {}
    for f in outcome.findings:
        rows.setdefault(f.row, []).append(f)
    return rows


def test_good_items_have_no_findings(run: tuple[ValidationOutcome, dict[str, int]], partner: Partner) -> None:
    outcome, _ = run
    assert not [f for f in outcome.findings if f.row < len(GOOD)]
    alone = validate_items(GOOD, partner)
    assert alone.findings == [] and alone.rejected_rows == set()
    summary = alone.summary()
    assert summary["success"] and summary["gx_success"] and summary["critical_rate"] == 0
    assert summary["findings"] == {"critical": 0, "warning": 0} and summary["failures"] == {}


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_item_is_caught(case: Case, run: tuple[ValidationOutcome, dict[str, int]]) -> None:
    outcome, offsets = run
    rows = _by_row(outcome)
    start = offsets[case.id]
    for offset in range(len(case.records)):
        got = rows.get(start + offset, [])
        want = case.expected.get(offset, [])
        assert sorted((f.expectation, f.element) for f in got) == sorted((w[0], w[1]) for w in want)
        for f in got:
            assert f.severity == ("warning" if f.expectation in WARNINGS else "critical")
            assert f.task_code == case.records[offset]["task_code"]
            fragments = next(w[2] for w in want if (w[0], w[1]) == (f.expectation, f.element))
            for fragment in fragments:
                assert fragment in f.message, f.message
        critical = any(f.severity == "critical" for f in got)
        assert ((start + offset) in outcome.rejected_rows) == critical


def test_every_check_of_the_suite_is_exercised() -> None:
    exercised = {w[0] for case in CASES for found in case.expected.values() for w in found}
    assert exercised == set(load_suite().checks)


def test_summary_and_gx_result(run: tuple[ValidationOutcome, dict[str, int]]) -> None:
    outcome, offsets = run
    summary = outcome.summary()
    json.dumps(summary)
    assert not summary["success"] and not summary["gx_success"]
    assert summary["rows"] == outcome.rows == len(GOOD) + sum(len(c.records) for c in CASES)
    assert summary["rejected_rows"] == len(outcome.rejected_rows)
    assert summary["critical_rate"] == pytest.approx(len(outcome.rejected_rows) / outcome.rows, abs=1e-6)
    assert summary["failures"]["task_code_unique"] == {"severity": "critical", "elements": ["code"], "rows": 2}
    assert summary["failures"]["catalog_code_item_type"]["severity"] == "warning"
    assert summary["findings"]["warning"] == 2
    assert offsets["catalog_code_item_type"] not in outcome.rejected_rows  # a warning does not reject

    text = json.dumps(outcome.gx_result, ensure_ascii=False)
    assert json.loads(text)["statistics"]["evaluated_expectations"] == len(load_suite().checks)
    five = next(
        r
        for r in outcome.gx_result["results"]
        if r["expectation_config"]["type"] == "expect_five_level_elements_identical"
    )
    assert not five["success"]
    differences = five["result"]["details"]["differences"]
    assert [(d["element"], d["reference"]["level"], [w["level"] for w in d["differing"]]) for d in differences] == [
        ("legal_basis", "3", ["4"]),
        ("materials", "3", ["5"]),
    ]
    assert five["result"]["unexpected_index_list"] == [offsets["five_level"] + 1, offsets["five_level"] + 2]


def test_rows_are_positions_even_with_duplicate_task_codes(run: tuple[ValidationOutcome, dict[str, int]]) -> None:
    outcome, offsets = run
    start = offsets["task_code_unique"]
    assert {f.row for f in outcome.findings if f.expectation == "task_code_unique"} == {start, start + 1}


def test_empty_and_malformed_input(partner: Partner) -> None:
    empty = validate_items([], partner)
    assert empty.findings == [] and empty.summary()["critical_rate"] == 0
    junk = {**make_record(1), "service_objects": "1,3", "materials": ["身份证"], "legal_limit": "二十", "extra": 1}
    del junk["result"]
    messages = {f.expectation: f.message for f in validate_items([junk], partner).findings}
    assert messages == {
        "service_objects_known": "服务对象「1,3」中的代码「1,3」不在标准服务对象字典中",
        "materials_named": "申请材料共 1 项，其中 1 项没有材料名称",
        "legal_limit_value": "法定办结时限「二十」不是非负整数",
        "result_present": "办理结果为空",
    }


@pytest.mark.parametrize(
    ("division", "level"),
    [
        ("440100", "4（区县级）"),  # national_json: the national codes
        ("440300", "3（区县级）"),  # pinyin_json numbers 1 省, 2 市, 3 县
        ("441300", "县级（区县级）"),  # csv_gbk names its levels
    ],
)
def test_messages_quote_a_coded_element_in_the_partners_own_code_with_its_name(division: str, level: str) -> None:
    """A partner finds the value in its own system: pinyin_json's 区县级 is 3, national_json's 4. The 19th digit is
    quoted, and asked for, in the national code whatever the format (pinyin_json's message read 「3（地市级）」 against
    「3（区县级）」, as if 3 differed from 3)."""
    partner = load_registry().partner(division)
    record = make_record(1, partner=division, task_code=make_task_code(CITY_USCC, "3", catalog_code(1)), level="4")
    [finding] = [f for f in validate_items([record], partner).findings if f.expectation == "task_code_level"]
    # the 19th digit of a national code stays the national code; the item's level is the partner's
    assert f"第 19 位行使层级「3（地市级）」与事项的行使层级「{level}」不一致" in finding.message
    assert finding.message.endswith("第 19 位为国家标准行使层级代码，应为「4（区县级）」")
