"""Columnar item tables, per-element content hashes and the hash comparison reconciliation runs on."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from tests.conftest import make_record
from tongban.hashing import element_hash_frame, element_hash_table, keyed_hashes
from tongban.model import COMPARED, ITEM_FIELDS, LABELS
from tongban.reconcile import compare_hashes
from tongban.table import ITEM_SCHEMA, element_values, items_table, take_rows


def hashes_of(*records: dict) -> dict[str, np.ndarray]:
    return element_hash_table(items_table(records))


def differing(a: dict, b: dict) -> set[str]:
    h = hashes_of(a, b)
    return {key for key, values in h.items() if values[0] != values[1]}


def test_schema_has_exactly_the_item_fields() -> None:
    assert tuple(ITEM_SCHEMA.names) == ITEM_FIELDS


def test_a_change_shows_in_its_element_only() -> None:
    base = make_record()
    assert differing(base, dict(base)) == set()
    assert differing(base, {**base, "name": base["name"] + "（修订）"}) == {"name"}
    assert differing(base, {**base, "promised_limit": base["promised_limit"] + 1}) == {"time_limit"}
    assert differing(base, {**base, "dept_name": "另一部门"}) == {"department"}
    assert differing(base, {**base, "version": "99", "source_ref": "elsewhere"}) == set()  # bookkeeping only


def test_list_values_hash_by_content_and_order_not_key_order() -> None:
    two = [
        {"name": "居民身份证", "required": True, "form": "paper", "copies": 1, "source": None},
        {"name": "营业执照", "required": False, "form": "electronic", "copies": None, "source": "申请人自备"},
    ]
    base = make_record(materials=two)
    reordered_keys = [dict(reversed(list(m.items()))) for m in two]
    assert differing(base, {**base, "materials": reordered_keys}) == set()
    assert differing(base, {**base, "materials": list(reversed(two))}) == {"materials"}
    assert differing(base, {**base, "materials": [two[0], {**two[1], "required": True}]}) == {"materials"}
    assert differing(base, {**base, "materials": two[:1]}) == {"materials"}
    more = {**base, "service_objects": [*base["service_objects"], "9"]}
    assert differing(base, more) == {"service_objects"}


def test_missing_empty_and_zero_are_told_apart() -> None:
    base = make_record()
    assert differing({**base, "legal_limit": None}, {**base, "legal_limit": 0}) == {"time_limit"}
    assert differing({**base, "handle_type": None}, {**base, "handle_type": ""}) == {"handle_type"}
    assert differing({**base, "materials": []}, {**base, "materials": None}) == {"materials"}


def test_frame_and_table_hash_alike_and_the_same_in_another_process() -> None:
    records = [make_record(), make_record(name="另一个事项", legal_limit=None, materials=[])]
    table = hashes_of(*records)
    frame = element_hash_frame(pd.DataFrame.from_records(records, columns=list(ITEM_FIELDS)))
    for key, values in table.items():
        assert frame[key].tolist() == values.tolist()
    script = (
        "import json, sys; from tongban.hashing import element_hash_table; from tongban.table import items_table;"
        "h = element_hash_table(items_table(json.load(sys.stdin)));"
        "print(json.dumps({k: [int(x) for x in v] for k, v in h.items()}))"
    )
    other = subprocess.run(
        [sys.executable, "-c", script], input=json.dumps(records), capture_output=True, text=True, check=True
    )
    assert json.loads(other.stdout) == {k: [int(x) for x in v] for k, v in table.items()}


def test_validation_compares_elements_through_the_same_hashes() -> None:
    """The validation frame's ``_h_*`` columns (五级N同 inside a partner) are this module's hashes, lists
    included: no per-process ``hash()`` of their own, so the same in every process as the test above shows."""
    from tongban.validation.derived import HASH_PREFIX, items_frame, validation_frame

    records = [make_record(), make_record(name="另一个事项", materials=[], service_objects=["1", "2"])]
    frame = items_frame(records)
    derived, hashes = validation_frame(frame), element_hash_frame(frame)
    for key in ("name", "service_objects", "materials", "time_limit"):
        assert derived[HASH_PREFIX + key].tolist() == hashes[key].tolist(), key


def test_compare_hashes_classifies_and_points_at_the_rows() -> None:
    kept = [make_record(catalog_code=f"00010400{i}000") for i in range(4)]
    gone = make_record(catalog_code="000104009000")
    new_item = make_record(catalog_code="000104008000")
    edited = {**kept[2], "procedure": "新流程", "result": "新结果"}
    old = items_table([gone, *kept])
    new = items_table([new_item, kept[3], edited, kept[0], kept[1]])
    result = compare_hashes(keyed_hashes(new), keyed_hashes(old))
    assert result.added == [new_item["task_code"]]
    assert result.removed == [gone["task_code"]]
    assert result.unchanged == sorted(r["task_code"] for r in (kept[0], kept[1], kept[3]))
    assert result.changed == {edited["task_code"]: ["procedure", "result"]}
    assert (result.new_rows.tolist(), result.old_rows.tolist()) == ([2], [3])
    procedure = next(e for e in COMPARED if e.key == "procedure")
    assert element_values(old, result.old_rows, procedure) == [kept[2]["procedure"]]
    assert element_values(new, result.new_rows, procedure) == ["新流程"]
    assert LABELS["procedure"] == "办理流程"


def test_compare_hashes_refuses_a_code_twice() -> None:
    record = make_record()
    with pytest.raises(ValueError, match=record["task_code"]):
        compare_hashes(keyed_hashes(items_table([record, record])), keyed_hashes(items_table([])))


def test_empty_sides() -> None:
    record = make_record()
    empty = keyed_hashes(items_table([]))
    assert compare_hashes(empty, empty).changed == {}
    assert compare_hashes(keyed_hashes(items_table([record])), empty).added == [record["task_code"]]
    assert compare_hashes(empty, keyed_hashes(items_table([record]))).removed == [record["task_code"]]


def test_take_rows_keeps_the_asked_order_across_chunks() -> None:
    column = pa.chunked_array([pa.array(["a", "b"]), pa.array(["c"]), pa.array(["d", "e", "f"])])
    assert take_rows(column, np.array([5, 0, 3, 2, 3])).to_pylist() == ["f", "a", "d", "c", "d"]
    assert take_rows(column, np.array([], np.int64)).to_pylist() == []
