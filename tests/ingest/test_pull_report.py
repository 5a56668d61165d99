"""A pull's duplicates and unexpected fields reach the partner's report: JSON, HTML and xlsx alike.

The real pull (fetch + normalise against the partner simulator with faults) writes the run folder;
the later stages' files are written here as a dry run leaves them (everything accepted and added,
nothing pushed), and ``pipeline.write_report`` renders the report from the folder.
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest
from openpyxl import load_workbook
from upath import UPath

from tongban import layout, pipeline
from tongban.layout import report_dir
from tongban.reconcile import reconcile
from tongban.report import COUNT_LABELS
from tongban.storage import read_jsonl, write_json, write_jsonl
from tongban.store.repo import ItemStore

from .conftest import CSV, FAST, NATIONAL, PINYIN, Partners, pull

PAGE = 50


@pytest.mark.parametrize("division", [NATIONAL, PINYIN, CSV], ids=["national_json", "pinyin_json", "csv_gbk"])
def test_duplicates_and_unexpected_fields_are_in_every_rendering(
    partners: Partners, store: UPath, tmp_path: Path, division: str
) -> None:
    partners.faults(division, {"kind": "duplicate_page", "page": 2}, {"kind": "schema_drift", "add": {"isCharge": "0"}})
    summary, run = pull(partners, store, division, settings=replace(FAST, page_size=PAGE))
    assert summary["duplicates"] == PAGE and summary["unexpected_fields"] == ["isCharge"]
    items = list(read_jsonl(run / layout.ITEMS))
    write_jsonl(run / layout.ACCEPTED, items)
    write_jsonl(run / layout.REJECTED, [])
    write_jsonl(run / layout.WARNINGS, [])
    write_json(run / layout.RECONCILIATION, reconcile(items, []).as_dict())
    write_json(run / layout.PUBLISH, {"dry_run": True, "accepted": [], "rejected": []})
    partner = partners.registry.partner(division)
    out = report_dir(store, "run-1", division)

    written = pipeline.write_report(partner, run, out, "run-1", ItemStore(f"sqlite:///{tmp_path / 'items.db'}"))

    pages = summary["pages"]
    span = f"第1–{pages}页"
    # JSON
    data = json.loads((out / layout.REPORT_JSON).read_bytes())
    assert data["counts"]["duplicates"] == PAGE == written.counts["duplicates"]
    assert data["counts"]["unexpected_fields"] == 1 and data["counts"]["fetched"] == summary["fetched"]
    duplicates = data["duplicates"]
    assert [d["position"] for d in duplicates] == [f"第2页第{i}条" for i in range(1, PAGE + 1)]
    first = duplicates[0]
    assert first["first_position"] == "第1页第1条" and first["task_code"] and "只计一次" in first["reason"]
    [field] = data["unexpected_fields"]
    assert field["field"] == "isCharge" and field["pages"] == list(range(1, pages + 1))
    assert span in field["reason"] and "已忽略" in field["reason"]
    # HTML
    html = (out / "report.html").read_text(encoding="utf-8")
    assert f"重复与多余字段（重复记录 {PAGE} 条，多余字段 1 个）" in html
    assert f"<td>第2页第1条</td><td><code>{first['task_code']}</code></td><td>第1页第1条</td>" in html
    assert f"<td><code>isCharge</code></td><td>{span}</td>" in html
    # xlsx
    book = load_workbook(out / "report.xlsx")
    totals = {row[0]: row[1] for row in book["汇总"].iter_rows(min_row=2, values_only=True)}
    assert totals[COUNT_LABELS["duplicates"]] == PAGE and totals[COUNT_LABELS["unexpected_fields"]] == 1
    rows = list(book["重复与多余字段"].iter_rows(min_row=2, values_only=True))
    copies = [r for r in rows if r[0] == "重复记录"]
    assert len(copies) == PAGE and copies[0] == ("重复记录", "第2页第1条", first["task_code"], first["reason"])
    assert [r for r in rows if r[0] == "多余字段"] == [("多余字段", span, "isCharge", field["reason"])]


def test_quarantined_items_carry_the_name_the_partner_sent(partners: Partners, store: UPath, tmp_path: Path) -> None:
    """深圳 (pinyin_json) sends 事项名称 as SXMC: a record set aside still shows its name in the 待整改 list (the
    run page and every report read it) and in the report's 隔离 section, read through the partner's field."""
    _, run = pull(partners, store, PINYIN)
    quarantined = list(read_jsonl(run / layout.QUARANTINE))
    served = {r["task_code"]: r["name"] for r in partners.served(PINYIN)}
    named = [q for q in quarantined if q.get("task_code") in served and served[q["task_code"]]]
    assert named, "the simulator's catalogue sets no named record aside"
    assert all(q["name"] == served[q["task_code"]].strip() for q in named)
    write_jsonl(run / layout.REJECTED, [])
    write_jsonl(run / layout.WARNINGS, [])
    write_json(run / layout.RECONCILIATION, reconcile([], []).as_dict())
    write_json(run / layout.PUBLISH, {"dry_run": True, "accepted": [], "rejected": []})
    out = report_dir(store, "run-1", PINYIN)
    pipeline.write_report(
        partners.registry.partner(PINYIN), run, out, "run-1", ItemStore(f"sqlite:///{tmp_path / 'i.db'}")
    )
    data = json.loads((out / layout.REPORT_JSON).read_bytes())
    listed = {o["task_code"]: o["name"] for o in data["outstanding"] if o["kind"] == "quarantined"}
    assert listed and all(listed[q["task_code"]] == q["name"] for q in named)
    shown = {q["task_code"]: q["name"] for q in data["quarantined"] if q["task_code"]}
    assert all(shown[q["task_code"]] == q["name"] for q in named)
    sheet = {r[1]: r[2] for r in load_workbook(out / "report.xlsx")["隔离"].iter_rows(min_row=2, values_only=True)}
    assert all(sheet[q["task_code"]] == q["name"] for q in named)
