"""tongban.validation.runner.run_gx: one GX form of each suite document per process, no validation's result
depends on what the process validated before (parameters, suite edits), and none keeps its frame alive."""

from __future__ import annotations

import gc
import json
import weakref
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from item_fixtures import comparable_result, make_record

from tongban.registry import Partner, load_registry
from tongban.validation import runner
from tongban.validation.derived import items_frame, validation_frame
from tongban.validation.suite import Suite, expectation_parameters, load_suite

JINAN = "370100"


@pytest.fixture
def fresh_process() -> Iterator[None]:
    """As if the process had validated nothing yet."""
    runner._gx_suite.cache_clear()
    yield
    runner._gx_suite.cache_clear()


def _validate(suite: Suite, partner: Partner) -> dict[str, Any]:
    records = [make_record(i) for i in range(1, 4)]  # 广州 items: their departments' codes are registered in 44
    frame = validation_frame(items_frame(records))[suite.columns()]
    return runner.run_gx(frame, suite, expectation_parameters(partner))


def _failed(result: dict[str, Any]) -> set[str]:
    return {r["expectation_config"]["meta"]["check"] for r in result["results"] if not r["success"]}


def test_the_suite_is_built_once_and_a_result_does_not_depend_on_the_validation_before(
    fresh_process: None, partner: Partner
) -> None:
    suite = load_suite()
    jinan = load_registry().partner(JINAN)
    as_guangzhou = _validate(suite, partner)
    as_jinan = _validate(suite, jinan)  # the same context and GX suite, another province as the parameter
    # the whole suite once, then (for 济南) the one check that failed: each built once
    assert runner._gx_suite.cache_info().misses == 2 and runner._gx_suite.cache_info().hits == 1
    assert _failed(as_guangzhou) == set()
    assert as_guangzhou["meta"]["run_id"]["run_time"] == as_guangzhou["meta"]["validation_time"]  # when it ran
    assert _failed(as_jinan) == {"dept_uscc_province"}  # 广州's codes are not 济南's province

    runner._gx_suite.cache_clear()
    assert comparable_result(_validate(suite, jinan)) == comparable_result(as_jinan)


def test_an_edited_suite_is_used_at_once(fresh_process: None, partner: Partner, tmp_path: Path) -> None:
    default = load_suite()
    _validate(default, partner)
    document = json.loads(default.path.read_text(encoding="utf-8"))
    document["expectations"] = [e for e in document["expectations"] if e["meta"]["check"] != "dept_uscc_province"]
    edited = tmp_path / "items.json"
    edited.write_text(json.dumps(document, ensure_ascii=False), encoding="utf-8")

    result = _validate(load_suite(edited), partner)

    assert result["statistics"]["evaluated_expectations"] == len(default.checks) - 1
    assert "dept_uscc_province" not in {r["expectation_config"]["meta"]["check"] for r in result["results"]}


def test_a_validation_keeps_no_frame_alive(partner: Partner) -> None:
    suite = load_suite()
    frame = validation_frame(items_frame([make_record(i) for i in range(1, 4)]))[suite.columns()]
    alive = weakref.ref(frame)
    runner.run_gx(frame, suite, expectation_parameters(partner))
    del frame
    gc.collect()
    assert alive() is None  # a night validates 19 frames in one process under `airflow dags test`


def _by_check(result: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {r["config"]["meta"]["check"]: r for r in json.loads(comparable_result(result))["results"]}


def test_only_the_failed_expectations_are_run_in_detail(monkeypatch: pytest.MonkeyPatch, partner: Partner) -> None:
    """Pass or fail for every expectation, then COMPLETE for those that failed: the same outcome as one COMPLETE
    pass over the suite (findings, statistics, each expectation's success), for half GX's cost."""
    suite = load_suite()
    records = [make_record(i) for i in range(1, 4)]
    records[1] |= {"level": "9", "time_limit_days": -3}  # a level outside the dictionary, and more
    frame = validation_frame(items_frame(records))[suite.columns()]
    parameters = expectation_parameters(load_registry().partner(JINAN))  # and 广州's codes are not 济南's
    two_passes = runner.run_gx(frame, suite, parameters)
    monkeypatch.setattr(runner, "FIRST_PASS_FORMAT", runner.RESULT_FORMAT)  # one COMPLETE pass, as before
    one_pass = runner.run_gx(frame, suite, parameters)

    failed = {c for c, r in _by_check(one_pass).items() if not r["success"]}
    assert {"dept_uscc_province", "level_known"} <= failed
    assert {c: r["success"] for c, r in _by_check(two_passes).items()} == {
        c: r["success"] for c, r in _by_check(one_pass).items()
    }
    assert {c: _by_check(two_passes)[c] for c in failed} == {c: _by_check(one_pass)[c] for c in failed}
    assert two_passes["statistics"] == one_pass["statistics"] and two_passes["success"] is one_pass["success"] is False
    passed = set(_by_check(one_pass)) - failed
    assert all(_by_check(one_pass)[c]["result"] for c in passed)  # observed values: only in one COMPLETE pass
    assert not any(_by_check(two_passes)[c]["result"] for c in passed)
    assert [r["expectation_config"]["meta"]["check"] for r in two_passes["results"]] == [
        r["expectation_config"]["meta"]["check"] for r in one_pass["results"]
    ]


def test_the_throwaway_context_writes_no_configuration(monkeypatch: pytest.MonkeyPatch, partner: Partner) -> None:
    """Adding the datasource, asset and batch definition would serialise the context's configuration to YAML
    for an in-memory store nobody reads: a tenth of a small validation's CPU."""
    from great_expectations.data_context.types.base import DataContextConfig

    def refuse(self: object) -> str:
        raise AssertionError("a validation serialised the context's configuration")

    monkeypatch.setattr(DataContextConfig, "to_yaml_str", refuse)
    assert _failed(_validate(load_suite(), partner)) == set()
