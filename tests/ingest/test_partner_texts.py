"""Texts partners read carry no internal names: every quarantine reason of every format, every message
template of the suites, and every text of a real report (JSON, HTML, xlsx) built from a faulty pull."""

from __future__ import annotations

import json
import re
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from upath import UPath

from tests.partner_texts import EXPECTATIONS, internal_in, report_texts
from tests.validation.item_fixtures import make_record
from tongban import layout, pipeline
from tongban.layout import report_dir
from tongban.normalise import Quarantined, normalise_catalogue
from tongban.reconcile import reconcile
from tongban.registry import wire_formats
from tongban.simulators.wire import WireEncoder
from tongban.storage import read_jsonl, write_json
from tongban.store.repo import ItemStore

from .conftest import CSV, FAST, NATIONAL, PINYIN, Partners, pull

FORMATS = {NATIONAL: "national_json", PINYIN: "pinyin_json", CSV: "csv_gbk"}


def test_the_scan_finds_what_it_must() -> None:
    national, pinyin = wire_formats()["national_json"], wire_formats()["pinyin_json"]
    leaked = "字段 task_type 的值 'ZZ' 不在national_json代码表（item_type）中"
    assert internal_in(leaked, national) == ["national_json", "item_type"]  # task_type is its own field
    assert internal_in(leaked, pinyin) == ["task_type", "national_json", "item_type"]
    assert internal_in("校验规则 legal_basis_present 未通过；操作 upsert", pinyin) == ["legal_basis_present", "upsert"]
    assert internal_in("字段 SXLX（事项类型）的值 'ZZ' 不是约定的事项类型代码", pinyin) == []


def _message_templates() -> list[str]:
    out = []
    for suite in EXPECTATIONS.glob("*.json"):
        for expectation in json.loads(suite.read_text(encoding="utf-8")).get("expectations", []):
            meta = expectation.get("meta", {})
            out += [meta.get("message_zh", ""), *meta.get("texts_zh", {}).values()]
    return [t for t in out if t]


def test_no_message_template_of_the_suites_names_an_internal_field() -> None:
    templates = _message_templates()
    assert len(templates) > 20
    for fmt in wire_formats().values():
        for template in templates:
            assert internal_in(re.sub(r"\{[^}]*\}", "", template), fmt) == [], template


def _broken_rows(fmt_name: str) -> list[Any]:
    """One wire record per way normalisation can refuse one, in the format's own shape."""
    fmt = wire_formats()[fmt_name]
    good = WireEncoder(fmt).encode(make_record(1))
    f, m = fmt.fields, fmt.material_fields
    rows: list[Any] = ["not an object"]
    for field, value in [
        ("item_type", "ZZ"),
        ("level", "9"),
        ("handling_mode", "x"),
        ("legal_limit_unit", "Q"),
        ("service_objects", "1,8|8"),
        ("promised_limit", "soon"),
        ("updated_at", "yesterday"),
        ("name", ""),
        ("materials", "one|two" if fmt.media == "csv" else "not a list"),
        ("version", None),
    ]:
        rows.append({**good, f[field]: value})
    rows.append({k: v for k, v in good.items() if k != f["handle_type"]})
    if fmt.media == "json":
        material = dict(good[f["materials"]][0])
        for key, value in [("required", "maybe"), ("form", "stone"), ("copies", "many")]:
            rows.append({**good, f["materials"]: [{**material, m[key]: value}]})
        rows.append({**good, f["materials"]: ["not an object"]})
    rows.append({**good, f["task_code"]: good[f["task_code"]]})  # same code, same content: a duplicate
    rows.append({**good, f["name"]: "另一个名称"})  # same code, other content: both quarantined
    return rows


@pytest.mark.parametrize("fmt_name", ["national_json", "pinyin_json", "csv_gbk"])
def test_every_quarantine_reason_names_only_the_partners_fields(fmt_name: str, registry: Any) -> None:
    fmt = wire_formats()[fmt_name]
    partner = next(p for p in registry.partners if p.format == fmt_name)
    result = normalise_catalogue([(1, _broken_rows(fmt_name))], fmt, partner)
    reasons = [p.reason for q in result.outcomes if isinstance(q, Quarantined) for p in q.problems]
    reasons += [d.reason for d in result.duplicates] + [n.reason for n in result.normalised]
    assert len(reasons) >= 12
    for reason in reasons:
        assert internal_in(reason, fmt) == [], reason


@pytest.mark.parametrize("division", list(FORMATS), ids=list(FORMATS.values()))
def test_no_text_of_a_real_report_names_an_internal_field(
    partners: Partners, store: UPath, tmp_path: Path, division: str
) -> None:
    """A pull with repeated pages and extra fields, the catalogue's defects (unmappable codes, failed checks)
    through real validation, a platform refusal: every text of the report the partner gets is scanned."""
    partners.faults(division, {"kind": "duplicate_page", "page": 2}, {"kind": "schema_drift", "add": {"isCharge": "0"}})
    _, run = pull(partners, store, division, settings=replace(FAST, page_size=50))
    partner = partners.registry.partner(division)
    items = ItemStore(f"sqlite:///{tmp_path / 'items.db'}")
    pipeline.validate(partner, run, items)
    accepted = list(read_jsonl(run / layout.ACCEPTED))
    write_json(run / layout.RECONCILIATION, reconcile(accepted, []).as_dict())
    refused = {"task_code": accepted[0]["task_code"], "op": "upsert", "status": "rejected", "reason": "事项名称为空"}
    write_json(run / layout.PUBLISH, {"dry_run": False, "accepted": [], "rejected": [refused]})
    out = report_dir(store, "run-1", division)
    pipeline.write_report(partner, run, out, "run-1", items)

    report = json.loads((out / layout.REPORT_JSON).read_bytes())
    counts = report["counts"]
    assert counts["quarantined"] and counts["rejected"] and counts["duplicates"] and counts["platform_rejected"]
    fmt = wire_formats()[partner.format]
    own = set(fmt.fields.values())
    findings = [f for r in report["rejected"] for f in r["findings"]]
    assert findings and all(f["fields"] and set(f["fields"].split("、")) <= own for f in findings)
    page = (Path(str(out)) / "report.html").read_text(encoding="utf-8")
    assert f"<td>{findings[0]['label']}（{findings[0]['fields']}）</td>" in page  # the label with the partner's field
    texts = list(report_texts(Path(str(out))))
    assert len(texts) > 50
    for where, text in texts:
        assert internal_in(text, fmt) == [], (where, text[:300])
