"""tongban.validation.gx_memo: a validation's result is the same with and without the memo, and the memo still
takes effect with the GX version installed (a GX upgrade that moves the patched code fails here, not silently)."""

from __future__ import annotations

import copy
import enum
from collections.abc import Iterator
from datetime import date
from typing import Any

import numpy as np
import pytest
from item_fixtures import DISTRICT_USCC, comparable_result, make_record

from tongban.registry import Partner
from tongban.validation.derived import items_frame, validation_frame
from tongban.validation.runner import run_gx
from tongban.validation.suite import Suite, expectation_parameters, load_suite


@pytest.fixture(scope="module")
def suite() -> Suite:
    return load_suite()


def _records() -> list[dict[str, Any]]:
    """Passing items, one broken element-wise, and a 五级N同 difference between two levels of one item."""
    return [
        make_record(1),
        make_record(2, name="失"),  # name too short
        make_record(3, legal_basis=""),
        make_record(4, uscc=DISTRICT_USCC, level="4"),
        make_record(4, result="另一种证明"),  # the city level of item 4 differs from its district level
    ]


def _validate(suite: Suite, partner: Partner) -> dict[str, Any]:
    frame = validation_frame(items_frame(_records()))[suite.columns()]
    return run_gx(frame, suite, expectation_parameters(partner))


@pytest.fixture
def counted_builds(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[int]]:
    """Counts the ExpectationConfigurations GX builds from an Expectation's fields."""
    from great_expectations.expectations.expectation import Expectation

    counter = [0]
    original = Expectation.dict

    def counting(self: Any, *args: Any, **kwargs: Any) -> Any:
        counter[0] += 1
        return original(self, *args, **kwargs)

    monkeypatch.setattr(Expectation, "dict", counting)
    yield counter


def test_results_are_the_same_with_and_without_the_memo(
    suite: Suite, partner: Partner, monkeypatch: pytest.MonkeyPatch
) -> None:
    from great_expectations.validator.validator import Validator

    with_memo = _validate(suite, partner)
    assert not with_memo["success"]  # the records above fail checks, so the comparison covers failures
    failed = {r["expectation_config"]["meta"]["check"] for r in with_memo["results"] if not r["success"]}
    assert {"name_length", "legal_basis_present", "five_level_identical"} <= failed
    monkeypatch.setattr(Validator, "graph_validate", Validator.graph_validate.__wrapped__)
    without = _validate(suite, partner)
    assert comparable_result(with_memo) == comparable_result(without)


def test_the_memo_builds_each_configuration_once_per_validation(
    suite: Suite, partner: Partner, counted_builds: list[int], monkeypatch: pytest.MonkeyPatch
) -> None:
    from great_expectations.validator.validator import Validator

    _validate(suite, partner)  # the first run in the process installs the memo
    counted_builds[0] = 0
    _validate(suite, partner)
    with_memo, counted_builds[0] = counted_builds[0], 0
    monkeypatch.setattr(Validator, "graph_validate", Validator.graph_validate.__wrapped__)
    _validate(suite, partner)
    without = counted_builds[0]
    # without the memo GX builds a configuration about 120 times per expectation; with it, a few times
    assert without > 20 * len(suite.checks)
    assert with_memo < without / 5, (with_memo, without)


class Color(enum.Enum):
    RED = "red"


IDS = [
    {"column": "_name_ok", "value_set": [True], "mostly": 1.0, "parse_strings_as_datetimes": None},
    {"column_list": ("partner", "task_code"), "nested": {"a": [1, 2.5, "三"]}, "flag": False},
    {"value_set": {"b", "a"}, "n": 3},  # a set: GX's conversion (a list), not the fast path
    {"mostly": float("nan"), "column": "x"},  # NaN: GX writes None
    {"when": date(2026, 11, 30), "code": Color.RED},  # a date and an Enum: GX's conversion
    {"count": np.int64(7), "share": np.float64(0.5), "ok": np.bool_(True)},
]


@pytest.mark.parametrize("kwargs", IDS, ids=range(len(IDS)))
def test_metric_ids_are_the_same_with_the_fast_conversion(suite: Suite, partner: Partner, kwargs: dict) -> None:
    from great_expectations.core import id_dict

    from tongban.validation import gx_memo

    _validate(suite, partner)  # installs the patches
    without = id_dict.IDDict(copy.deepcopy(kwargs)).to_id()
    token = gx_memo._MEMO.set({})  # as inside graph_validate
    try:
        assert id_dict.IDDict(copy.deepcopy(kwargs)).to_id() == without
        fast = id_dict.convert_to_json_serializable(kwargs) is kwargs
    finally:
        gx_memo._MEMO.reset(token)
    assert fast is gx_memo._plain(kwargs)
    assert fast is (kwargs in IDS[:2])  # the fast path is taken for plain JSON, and only for it
