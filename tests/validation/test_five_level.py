"""五级N同: the pandas comparison, the custom GX expectation on its own, several partners of a province."""

from __future__ import annotations

import pandas as pd
import pytest
from item_fixtures import DISTRICT_USCC, SHENZHEN_USCC, make_record

from tongban.registry import Partner
from tongban.validation import validate_items
from tongban.validation.elements import five_level_differences


def _frame(rows: list[tuple[str, str, str, str, str]]) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=["province", "catalog_code", "level", "task_code", "result"])


def _diffs(df: pd.DataFrame) -> list[dict]:
    return five_level_differences(df, {"result": "result"}, ["province", "catalog_code"], "level", "task_code")


def test_identical_groups_and_single_rows_pass() -> None:
    df = _frame([("44", "A", "3", "t1", "x"), ("44", "A", "4", "t2", "x"), ("44", "B", "3", "t3", "y")])
    assert _diffs(df) == []
    assert _diffs(df.iloc[:0]) == []


def test_reference_is_the_majority_at_the_most_senior_level() -> None:
    df = _frame(
        [
            ("44", "A", "4", "county1", "old"),
            ("44", "A", "3", "city1", "new"),
            ("44", "A", "3", "city2", "new"),
            ("44", "A", "3", "city3", "odd"),
            ("44", "A", "5", "town", "new"),
        ]
    )
    [diff] = _diffs(df)
    assert diff["group"] == {"province": "44", "catalog_code": "A"}
    assert diff["element"] == "result" and diff["label"] == "办理结果"
    assert diff["reference"] == {"row": 1, "id": "city1", "level": "3"}
    assert [d["id"] for d in diff["differing"]] == ["county1", "city3"]


def test_tie_goes_to_the_earliest_row_and_provinces_are_not_compared() -> None:
    df = _frame([("44", "A", "3", "gz", "x"), ("44", "A", "3", "sz", "y"), ("37", "A", "3", "jn", "z")])
    [diff] = _diffs(df)
    assert diff["reference"]["id"] == "gz" and [d["id"] for d in diff["differing"]] == ["sz"]


def test_custom_expectation_in_a_plain_gx_suite() -> None:
    """The expectation works in GX like a built-in one, on any frame, and reports in GX's result."""
    import great_expectations as gx

    from tongban.validation.five_level import ExpectFiveLevelElementsIdentical

    df = _frame([("44", "A", "3", "gz", "x"), ("44", "A", "4", "th", "y"), ("44", "B", "3", "gz2", "z")])
    context = gx.get_context(mode="ephemeral")
    batch_definition = (
        context.data_sources.add_pandas("t").add_dataframe_asset("a").add_batch_definition_whole_dataframe("b")
    )
    batch = batch_definition.get_batch(batch_parameters={"dataframe": df})
    expectation = ExpectFiveLevelElementsIdentical(
        element_columns={"result": "result"}, group_columns=["province", "catalog_code"], severity="critical"
    )
    result = batch.validate(expectation, result_format="COMPLETE").to_json_dict()
    assert result["success"] is False
    assert result["expectation_config"]["type"] == "expect_five_level_elements_identical"
    assert result["result"]["unexpected_index_list"] == [1]
    [diff] = result["result"]["details"]["differences"]
    assert (diff["reference"]["id"], diff["differing"][0]["id"]) == ("gz", "th")
    summary = batch.validate(expectation, result_format="SUMMARY").to_json_dict()["result"]
    assert "unexpected_index_list" not in summary and summary["partial_unexpected_list"][0]["differing"] == ["th"]
    same = batch_definition.get_batch(batch_parameters={"dataframe": df.assign(result="x")})
    assert same.validate(expectation).success is True
    with pytest.raises(ValueError, match="at least one element"):
        ExpectFiveLevelElementsIdentical(element_columns={})


def test_several_partners_of_one_province(partner: Partner) -> None:
    records = [
        make_record(1),
        make_record(1, uscc=DISTRICT_USCC, level="4"),
        make_record(1, uscc=SHENZHEN_USCC, partner="440300", result="失业登记证明（深圳版）"),
        make_record(2),
        make_record(2, uscc=SHENZHEN_USCC, partner="440300"),
    ]
    outcome = validate_items(records, partner)
    [finding] = outcome.findings
    assert (finding.row, finding.element, finding.expectation) == (2, "result", "five_level_identical")
    assert f"在地市级（实施编码 {records[2]['task_code']}）与地市级（实施编码 {records[0]['task_code']}）" in (
        finding.message
    )
    assert outcome.rejected_rows == {2}


def _votes(rows: list[tuple[str, str, str, str, bool]]) -> list[dict]:
    """Across partners: rows of (partner, level, task_code, result, judged) of one 基本编码."""
    df = pd.DataFrame(rows, columns=["partner", "level", "task_code", "result", "judged"]).assign(catalog_code="A")
    return five_level_differences(
        df, {"result": "result"}, ["catalog_code"], "level", "task_code", vote_column="partner", judged_column="judged"
    )


def test_across_partners_partners_vote_not_rows() -> None:
    # 广州 has three city-level rows with "x"; 深圳 and 佛山 one each with "y": two partners beat one
    [diff] = _votes(
        [
            ("gz", "3", "gz1", "x", True),
            ("gz", "3", "gz2", "x", True),
            ("gz", "3", "gz3", "x", True),
            ("sz", "3", "sz1", "y", True),
            ("fs", "3", "fs1", "y", True),
        ]
    )
    assert diff["reference"]["id"] == "sz1" and diff["votes"] == {"reference": 2, "senior": 3}
    assert diff["contested"] is False and [d["id"] for d in diff["differing"]] == ["gz1", "gz2", "gz3"]


def test_across_partners_a_tie_is_contested_and_every_judged_row_reported() -> None:
    diffs = _votes([("gz", "3", "gz1", "x", True), ("gz", "4", "gz2", "x", True), ("sz", "3", "sz1", "y", True)])
    assert all(d["contested"] and d["votes"] == {"reference": 1, "senior": 2} for d in diffs)
    reported = {d["reference"]["id"]: [w["id"] for w in d["differing"]] for d in diffs}
    assert reported == {"gz1": ["sz1"], "sz1": ["gz1", "gz2"]}


def test_across_partners_rows_not_judged_vote_but_are_never_reported() -> None:
    # two published partners hold "y": the judged "x" is at fault; a published "z" is not reported
    [diff] = _votes(
        [
            ("gz", "3", "gz1", "x", True),
            ("sz", "3", "sz1", "y", False),
            ("fs", "3", "fs1", "y", False),
            ("zh", "4", "zh1", "z", False),
        ]
    )
    assert diff["reference"]["id"] == "sz1" and [d["id"] for d in diff["differing"]] == ["gz1"]
    assert _votes([("gz", "3", "gz1", "x", False), ("sz", "3", "sz1", "y", False)]) == []
