"""Full-width digits and letters, non-breaking and zero-width spaces: codes are cleaned before any check,
the report says what was cleaned, and a message comparing values that differ only so says it."""

from __future__ import annotations

import json
from typing import Any

import pytest
import requests
from upath import UPath

from tests.validation.item_fixtures import CITY_USCC, DISTRICT_USCC, make_record
from tongban import layout, pipeline
from tongban.files import PublishFile
from tongban.layout import report_dir, run_dir
from tongban.normalise import WIDTH_ONLY, clean_code, normalise_catalogue, width_only_difference
from tongban.publish import PlatformClient
from tongban.registry import load_registry, wire_formats
from tongban.simulators.credentials import partner_secrets, platform_credentials
from tongban.simulators.wire import WireEncoder
from tongban.storage import read_jsonl, write_json, write_jsonl
from tongban.store.repo import ItemStore

REGISTRY = load_registry()
ZWSP, NBSP = "\u200b", "\u00a0"


def wide(text: str) -> str:
    """ASCII digits and letters as their full-width forms (what some catalogue exports carry)."""
    return "".join(chr(ord(c) + 0xFEE0) if c.isascii() and c.isalnum() else c for c in text)


def test_clean_code_folds_width_and_drops_invisible_characters() -> None:
    assert clean_code(wide("11440100MB2C") + ZWSP) == "11440100MB2C"
    assert clean_code(NBSP + "3" + "\ufeff") == "3" and clean_code("\u3000０１") == "01"
    assert width_only_difference("３", "3") and width_only_difference("失业登记", "失业" + ZWSP + "登记")
    assert not width_only_difference("3", "3") and not width_only_difference("3", "4")


@pytest.mark.parametrize("division", ["440100", "440300", "441300"], ids=["national", "pinyin", "csv"])
def test_full_width_and_invisible_codes_are_cleaned_and_noted_in_every_format(division: str) -> None:
    partner = REGISTRY.partner(division)
    fmt = wire_formats()[partner.format]
    record = make_record(1)
    row = WireEncoder(fmt).encode(record)
    f = fmt.fields
    row[f["task_code"]] = wide(record["task_code"]) + ZWSP
    row[f["catalog_code"]] = NBSP + record["catalog_code"]
    row[f["dept_uscc"]] = wide(record["dept_uscc"])
    row[f["promised_limit"]] = wide(str(row[f["promised_limit"]]))
    row[f["level"]] = str(row[f["level"]]) + ZWSP
    result = normalise_catalogue([(1, [row])], fmt, partner)
    [item] = result.outcomes
    assert not hasattr(item, "problems"), item
    assert item.task_code == record["task_code"] and item.catalog_code == record["catalog_code"]  # type: ignore[union-attr]
    assert item.dept_uscc == record["dept_uscc"] and item.promised_limit == record["promised_limit"]  # type: ignore[union-attr]
    assert item.level == record["level"]  # type: ignore[union-attr]
    noted = {n.field: n for n in result.normalised}
    wanted = [f[k] for k in ("task_code", "catalog_code", "dept_uscc", "promised_limit", "level")]
    assert sorted(noted) == sorted(wanted)
    note = noted[f["task_code"]]
    assert note.label == "实施编码" and note.normalised == record["task_code"]
    assert note.task_code == record["task_code"] and note.position == "第1页第1条"
    assert f"字段 {f['task_code']}（实施编码）" in note.reason and "全角" in note.reason and "零宽" in note.reason
    assert "不换行空格" in noted[f["catalog_code"]].reason


def test_a_code_no_format_knows_names_the_partners_field_and_label_only() -> None:
    partner = REGISTRY.partner("440300")
    fmt = wire_formats()[partner.format]
    row = WireEncoder(fmt).encode(make_record(1)) | {fmt.fields["item_type"]: "ZZ"}
    [quarantined] = normalise_catalogue([(1, [row])], fmt, partner).outcomes
    [problem] = quarantined.problems  # type: ignore[union-attr]
    assert problem.reason.startswith("字段 SXLX（事项类型）的值 'ZZ' 不是约定的事项类型代码（XK、CF")
    assert "pinyin_json" not in problem.reason and "item_type" not in problem.reason


def test_a_five_level_difference_only_in_invisible_characters_says_so(tmp_path: Any) -> None:
    partner = REGISTRY.partner("440100")
    store = ItemStore(f"sqlite:///{tmp_path / 'items.db'}")
    run = UPath(tmp_path) / "run"
    city = make_record(1, uscc=CITY_USCC, level="3")
    district = make_record(1, uscc=DISTRICT_USCC, level="4", result=city["result"][:2] + ZWSP + city["result"][2:])
    other = make_record(2, uscc=DISTRICT_USCC, level="4")
    write_json(run / layout.FETCH, {"mode": "full", "status": "ok"})
    write_jsonl(
        run / layout.ITEMS, [city, district, other, make_record(2, uscc=CITY_USCC, level="3", result="别的结果")]
    )
    pipeline.validate(partner, run, store)
    messages = [f["message"] for r in read_jsonl(run / layout.REJECTED) for f in r["findings"]]
    width = [m for m in messages if m.endswith(WIDTH_ONLY)]
    assert len(width) == 1 and "办理结果" in width[0]
    assert any("五级N同" in m and not m.endswith(WIDTH_ONLY) for m in messages)  # a real difference stays as is


def test_a_catalogue_with_full_width_codes_publishes_its_good_items_and_says_what_it_normalised(
    simulators: Any, tmp_path: Any
) -> None:
    """Through the real simulators: the partner serves two items with full-width and invisible characters in
    their codes; they are published under their clean codes, and the report lists what was normalised."""
    division = "442000"
    partner = REGISTRY.partner(division)
    admin = f"{simulators.partners}/admin/partners/{division}/items"
    served = requests.get(admin, timeout=30).json()["items"]
    dirty = {}
    for record in served[:2]:
        requests.delete(f"{admin}/{record['task_code']}", timeout=10).raise_for_status()
        changed = {
            **record,
            "task_code": wide(record["task_code"]) + ZWSP,
            "catalog_code": record["catalog_code"][:6] + "\ufeff" + record["catalog_code"][6:],
            "dept_uscc": wide(record["dept_uscc"]),
        }
        requests.post(admin, json=changed, timeout=10).raise_for_status()
        dirty[record["task_code"]] = changed["task_code"]
    root = UPath(tmp_path)
    run_id = "manual__width"
    run = run_dir(root, run_id, division)
    store = ItemStore(f"sqlite:///{tmp_path / 'items.db'}")
    client = PlatformClient(simulators.platform, **platform_credentials(simulators.state_dir))
    secret = partner_secrets(simulators.state_dir, REGISTRY)[division]
    try:
        pipeline.fetch(
            partner, f"{simulators.partners}/partners/{division}", run, secret=secret, root=root, run_id=run_id
        )
        normalised = pipeline.normalise_partner(partner, run)
        pipeline.validate(partner, run, store)
        pipeline.reconcile_partner(partner, run, client, store, run_id)
        pipeline.publish_partner(partner, run, client, store, run_id, dry_run=False)
        out = report_dir(root, run_id, division)
        pipeline.write_report(partner, run, out, run_id, store)
    finally:
        requests.post(f"{simulators.partners}/admin/reset", timeout=10).raise_for_status()
    held = {r["task_code"] for r in client.items(division)}
    assert set(dirty) <= held and not set(dirty.values()) & held  # published under the clean codes
    report = json.loads((out / layout.REPORT_JSON).read_bytes())
    assert normalised.normalised == 6 == report["counts"]["normalised"]
    by_code: dict[str, set[str]] = {}
    for note in report["normalised"]:
        by_code.setdefault(note["task_code"], set()).add(note["field"])
    assert by_code == {code: {"task_code", "catalog_code", "dept_code"} for code in dirty}
    assert report["counts"]["published"] == report["counts"]["added"] >= len(dirty)
    html = (out / "report.html").read_text(encoding="utf-8")
    assert "编码规范化（6）" in html and "（实施编码）" in html


def test_a_change_only_in_invisible_characters_says_so_in_the_report(tmp_path: Any) -> None:
    from tongban import report as reports
    from tongban.reconcile import reconcile

    partner = REGISTRY.partner("440300")
    before = make_record(1, partner=partner.division)
    after = {**before, "name": before["name"][:1] + ZWSP + before["name"][1:], "result": "另一个结果"}
    built = reports.build(
        partner=partner,
        run_id="r",
        fetched=1,
        quarantined=[],
        rejected=[],
        warnings=[],
        recon=reconcile([after], [before]),
        publish=PublishFile(dry_run=True, accepted=[], rejected=[]),
    )
    [changed] = built.changed
    shown = {c.label: reports.change_label(c, wire_formats()[partner.format]) for c in changed.changes}
    assert shown == {"事项名称": "事项名称（SXMC）" + WIDTH_ONLY, "办理结果": "办理结果（BLJG）"}
    html = reports.render_html(built)
    assert "事项名称（SXMC）" + WIDTH_ONLY in html and "办理结果（BLJG）" in html
