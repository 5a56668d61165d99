from __future__ import annotations

import dataclasses
import json
from datetime import datetime

from upath import UPath

from tests.conftest import make_record
from tongban import report
from tongban.files import PublishFile, SummaryFile
from tongban.reconcile import Reconciliation, reconcile
from tongban.registry import load_registry
from tongban.report_model import PartnerReport
from tongban.storage import read_json


def rec(catalog: str, **overrides):
    return make_record(catalog_code=catalog, **overrides)


A, B, C, D = (rec(f"00010400{i}000") for i in range(1, 5))


def test_classifies_added_changed_removed_unchanged() -> None:
    b2 = {**B, "promised_limit": 3, "version": "4"}
    result = reconcile([A, b2, D], [A, B, C])
    assert [r["task_code"] for r in result.added] == [D["task_code"]]
    assert [r["task_code"] for r in result.removed] == [C["task_code"]]
    assert result.unchanged == [A["task_code"]]
    [changed] = result.changed
    [change] = changed.changes
    assert change.element == "time_limit" and change.label == "办结时限"
    assert change.old["promised_limit"] == 5 and change.new["promised_limit"] == 3


def test_bookkeeping_only_differences_are_not_changes() -> None:
    result = reconcile([{**A, "version": "99", "source_ref": "x", "updated_at": "2026-11-20T00:00:00+08:00"}], [A])
    assert result.unchanged == [A["task_code"]] and not result.changed


def test_held_items_are_not_removed() -> None:
    result = reconcile([A], [A, B], held_codes=[B["task_code"]])
    assert result.held == [B["task_code"]] and not result.removed


def test_attribute_changes_are_reported_too() -> None:
    moved = {**A, "dept_name": "广州市政务服务数据管理局"}
    [changed] = reconcile([moved], [A]).changed
    assert [c.element for c in changed.changes] == ["department"]


def test_deterministic_and_serialisable() -> None:
    one = reconcile([D, A, {**B, "name": "失业登记（变更）"}], [C, B, A])
    two = reconcile([A, {**B, "name": "失业登记（变更）"}, D], [A, B, C])
    assert one.as_dict() == two.as_dict()
    again = Reconciliation.from_dict(json.loads(json.dumps(one.as_dict(), ensure_ascii=False)))
    assert again.as_dict() == one.as_dict()
    recoded = reconcile([{**A, "task_code": A["task_code"][:-1] + "9"}], [A])
    for recon in (one, recoded):  # the hand-written as_dict says what dataclasses.asdict says, field for field
        assert recon.as_dict() == dataclasses.asdict(recon)


def _report(tmp_path, recon, **kw):
    partner = load_registry().partner("440100")
    built = report.build(
        partner=partner,
        run_id="manual__2026-11-28T02:00:00+08:00",
        fetched=kw.get("fetched", 4),
        quarantined=kw.get("quarantined", []),
        rejected=kw.get("rejected", []),
        warnings=kw.get("warnings", []),
        recon=recon,
        publish=kw.get("publish", PublishFile(dry_run=False, accepted=[], rejected=[])),
        unexpected=report.unexpected_fields(kw.get("manifest", [])),
        outstanding=kw.get("outstanding", []),
        earlier=kw.get("earlier", []),
    )
    paths = report.write(built, UPath(tmp_path))
    return built, paths


def test_report_counts_match_its_lists_and_html_says_the_same(tmp_path) -> None:
    recon = reconcile([A, {**B, "name": "失业登记（新）"}, D], [A, B, C])
    publish = PublishFile(
        dry_run=False,
        accepted=[
            {"task_code": D["task_code"], "op": "upsert"},
            {"task_code": B["task_code"], "op": "upsert"},
            {"task_code": C["task_code"], "op": "delete"},
        ],
        rejected=[],
    )
    rejected = [
        {
            "record": rec("000104009000"),
            "findings": [
                {
                    "row": 4,
                    "task_code": "x",
                    "element": "legal_basis",
                    "expectation": "e",
                    "severity": "critical",
                    "message": "设定依据为空",
                }
            ],
        }
    ]
    built, paths = _report(tmp_path, recon, publish=publish, rejected=rejected)
    counts = built.counts.model_dump()
    assert {k: counts[k] for k in report.COUNT_KEYS} == {
        "fetched": 4,
        "quarantined": 0,
        "rejected": 1,
        "added": 1,
        "changed": 1,
        "removed": 1,
        "unchanged": 1,
        "published": 3,
    }
    on_disk = json.loads((tmp_path / "report.json").read_text(encoding="utf-8"))
    assert on_disk == built.model_dump(mode="json") and on_disk["counts"] == counts
    assert PartnerReport.load((tmp_path / "report.json").read_bytes()) == built  # reads back whole
    [changed] = on_disk["changed"]
    assert changed["task_code"] == B["task_code"]
    assert changed["changes"] == [{"element": "name", "label": "事项名称", "old": "失业登记", "new": "失业登记（新）"}]
    [finding] = on_disk["rejected"][0]["findings"]
    assert finding["label"] == "设定依据" and finding["severity"] == "critical"
    html = (tmp_path / "report.html").read_text(encoding="utf-8")
    assert "失业登记（新）" in html and "设定依据为空" in html and "变更（1）" in html
    assert paths["report_json"].endswith("report.json")


def test_html_escapes_partner_text(tmp_path) -> None:
    evil = rec("000104005000", name='<script>alert(1)</script>=HYPERLINK("http://x","y")')
    _, _ = _report(tmp_path, reconcile([evil], []))
    html = (tmp_path / "report.html").read_text(encoding="utf-8")
    assert "<script>alert(1)</script>" not in html and "&lt;script&gt;" in html


def test_summary_marks_partners_without_report_failed(tmp_path) -> None:
    registry = load_registry()
    recon = reconcile([A], [])
    partner = registry.partner("440100")
    built = report.build(
        partner=partner,
        run_id="r1",
        fetched=1,
        quarantined=[],
        rejected=[],
        warnings=[],
        recon=recon,
        publish=PublishFile(dry_run=False, accepted=[{"task_code": A["task_code"], "op": "upsert"}], rejected=[]),
    )
    report.write(built, UPath(tmp_path) / "r1" / "440100")
    summary = report.summarise(UPath(tmp_path), "r1", [partner, registry.partner("440300")])
    assert summary.failed == ["440300"]
    assert summary.totals["published"] == 1 and summary.totals["added"] == 1
    assert read_json(UPath(tmp_path) / "r1" / "summary.json", SummaryFile) == summary  # the file is the model
    table = report.summary_table(summary)
    assert "440300" in table and "failed" in table and "platform" not in table
    # make run's column: the items the platform holds, per partner checked, and their total
    [head, ok, failed, total] = report.summary_table(summary, platform={"440100": 7}).splitlines()
    assert head.split()[-2:] == ["platform", "ours"]
    assert ok.split()[-2:] == ["7", "-"] and failed.split()[-2:] == ["-", "-"] and total.split()[-1] == "7"


def test_recode_is_matched_by_catalog_code_name_and_department() -> None:
    moved = make_record(catalog_code=A["catalog_code"], level="4", name=" 失业登记 ")  # new 实施编码, same item
    result = reconcile([moved, D], [A, C])
    assert [(r.old_code, r.task_code) for r in result.recoded] == [(A["task_code"], moved["task_code"])]
    assert [r["task_code"] for r in result.added] == [D["task_code"]]
    assert [r["task_code"] for r in result.removed] == [C["task_code"]]
    assert result.upserts()[-1] == moved


def test_a_different_department_is_not_a_recode() -> None:
    other = make_record(catalog_code=A["catalog_code"], level="4", dept_name="深圳市人力资源和社会保障局")
    result = reconcile([other], [A])
    assert not result.recoded and len(result.added) == 1 and len(result.removed) == 1


def test_incremental_pull_never_removes() -> None:
    result = reconcile([{**B, "result": "新证明"}], [A, B, C], full=False)
    assert not result.removed and sorted(result.unchanged) == sorted([A["task_code"], C["task_code"]])
    assert [c.task_code for c in result.changed] == [B["task_code"]]


def test_an_incremental_report_says_its_unchanged_items_include_those_not_pulled(tmp_path) -> None:
    """拉取 1 beside 未变 2 on an incremental night: the label says the 2 include items the pull did not carry."""
    from openpyxl import load_workbook

    for full in (False, True):
        built, _ = _report(tmp_path / str(full), reconcile([{**B, "result": "新证明"}], [A, B, C], full=full))
        html = (tmp_path / str(full) / "report.html").read_text(encoding="utf-8")
        sheet = load_workbook(tmp_path / str(full) / "report.xlsx")["汇总"]
        labels = [row[0] for row in sheet.iter_rows(values_only=True)]
        said = report.INCREMENTAL_UNCHANGED in html and report.INCREMENTAL_UNCHANGED in labels
        assert said is not full and built.full_pull is full
        assert ("未变（与平台上的版本相同）" in labels) is full


def test_xlsx_holds_the_json_numbers_and_formulas_come_out_inert(tmp_path) -> None:
    from openpyxl import load_workbook

    evil = rec("000104006000", name='=HYPERLINK("http://x","y")')
    field = '@SUM(1+1)*cmd|" /C calc"!A0'  # a field name the partner's API chose
    manifest = [{"page": 1, "records": 2, "unexpected_fields": [field]}]
    built, paths = _report(tmp_path, reconcile([evil, A], [C]), manifest=manifest)
    book = load_workbook(tmp_path / "report.xlsx")
    assert book.sheetnames == [
        "汇总",
        "新增",
        "变更",
        "编码变更",
        "删除",
        "退回",
        "隔离",
        "待核",
        "待整改",
        "随同暂缓",
        "暂缓删除",
        "平台拒收",
        "此前未报告的变更",
        "重复与多余字段",
    ]
    summary = {row[0]: row[1] for row in book["汇总"].iter_rows(min_row=2, values_only=True)}
    on_disk = json.loads((tmp_path / "report.json").read_bytes())
    assert on_disk["counts"] == built.counts.model_dump() and len(on_disk["counts"]) == len(report.COUNT_LABELS)
    for key, value in on_disk["counts"].items():
        assert summary[report.COUNT_LABELS[key]] == value
    added = {row[0].value: row[1] for row in book["新增"].iter_rows(min_row=2)}
    cell = added[evil["task_code"]]
    assert cell.data_type == "s" and cell.value == "'" + evil["name"]
    assert book["删除"].max_row == 2  # heading + C
    for sheet in book:  # each column at least as wide as its heading (待整改's 已持续（次运行） was cut off)
        for heading in next(sheet.iter_rows(max_row=1)):
            width = sheet.column_dimensions[heading.column_letter].width
            if report.heading_width(heading.value) > report.XLSX_COLUMN_WIDTH:
                assert width >= report.heading_width(heading.value), (sheet.title, heading.value)
            if "实施编码" in heading.value:  # a whole 实施编码 (31 characters) and the margins: was cut at 10
                assert width == 31 + 2, (sheet.title, heading.value)
    assert book["待整改"].column_dimensions["G"].width == 2 + 2 * 8  # 已持续（次运行）: eight CJK characters
    assert len(evil["task_code"]) == 31
    [(kind, where, name, reason)] = book["重复与多余字段"].iter_rows(min_row=2)
    assert (kind.value, where.value) == ("多余字段", "第1页") and name.data_type == reason.data_type == "s"
    assert name.value == "'" + field and reason.value.startswith("接口返回了格式约定之外的字段 @SUM")
    html = (tmp_path / "report.html").read_text(encoding="utf-8")
    assert "=HYPERLINK(&#34;http://x&#34;,&#34;y&#34;)" in html
    assert "<code>@SUM(1+1)*cmd|&#34; /C calc&#34;!A0</code>" in html
    assert paths["report_xlsx"].endswith("report.xlsx")


def test_key_order_of_read_back_records_does_not_make_a_change() -> None:
    reordered = {**A, "materials": [dict(reversed(list(m.items()))) for m in A["materials"]]}
    assert reconcile([A], [reordered]).unchanged == [A["task_code"]]


def test_a_missing_limit_elsewhere_does_not_make_numbers_differ() -> None:
    no_limit = {**B, "legal_limit": None, "legal_limit_unit": None}
    # on one side a None in the column, on the other none: 15 must still equal 15
    assert reconcile([A, no_limit], [A]).unchanged == [A["task_code"]]
    assert reconcile([A], [A, no_limit]).unchanged == [A["task_code"]]


def test_summary_lists_reports_that_were_not_delivered(tmp_path) -> None:
    registry = load_registry()
    partners = [registry.partner("440100"), registry.partner("440300")]
    for partner, status in zip(partners, ("delivered", "failed"), strict=True):
        built = report.build(
            partner=partner,
            run_id="r2",
            fetched=0,
            quarantined=[],
            rejected=[],
            warnings=[],
            recon=reconcile([], []),
            publish=PublishFile(dry_run=False, accepted=[], rejected=[]),
        )
        folder = UPath(tmp_path) / "r2" / partner.division
        report.write(built, folder)
        (folder / "delivery.json").write_text(json.dumps({"status": status}), encoding="utf-8")
    summary = report.summarise(UPath(tmp_path), "r2", partners)
    assert summary.undelivered == ["440300"] and summary.failed == []
    assert [r.delivery for r in summary.partners] == ["delivered", "failed"]


def test_first_seen_is_beijing_time_and_run_id_columns_fit_a_run_id(tmp_path) -> None:
    """待整改's 首次发现: found at 18:14 UTC is 02:14 the next day in Beijing (it showed the UTC date alone); the
    xlsx columns of run ids (首次发现的运行, 运行编号) fit a whole one (they were cut at the heading's width)."""
    from openpyxl import load_workbook

    first_run = "asset_triggered__2026-11-29T18:14:00.123456+00:00"
    outstanding = {
        "task_code": A["task_code"],
        "name": A["name"],
        "kind": "rejected",
        "reason": "设定依据为空",
        "first_run": first_run,
        "first_seen": datetime(2026, 11, 29, 18, 14, 5),
        "nights": 2,
    }  # fmt: skip  (naive, as SQLite gives it back: UTC)
    earlier = {"run_id": first_run, "task_code": A["task_code"], "name": A["name"], "kind": "added", "element": ""}
    earlier |= {"old": None, "new": None}
    _report(tmp_path, Reconciliation(), outstanding=[outstanding], earlier=[earlier])
    html = (tmp_path / "report.html").read_text(encoding="utf-8")
    assert "<th>首次发现（北京时间）</th>" in html and f"<td>2026-11-30 02:14（<code>{first_run}</code>）</td>" in html
    book = load_workbook(tmp_path / "report.xlsx")
    sheet = book["待整改"]
    [row] = sheet.iter_rows(min_row=2, values_only=True)
    assert [c.value for c in sheet[1]][4:6] == ["首次发现（北京时间）", "首次发现的运行"]
    assert row[4:6] == ("2026-11-30 02:14", first_run)
    assert sheet.column_dimensions["F"].width >= len(first_run)
    assert book["此前未报告的变更"].column_dimensions["A"].width >= len(first_run)  # 运行编号


def test_changed_materials_and_time_limits_read_in_chinese_in_html_and_xlsx(tmp_path) -> None:
    """A changed 申请材料 or 办结时限 is told as the partner wrote it, in Chinese: no Python or JSON structure with
    English keys and codes (``{'legal_limit': …, 'promised_limit_unit': 'WD'}``, ``'form': 'paper'``)."""
    from openpyxl import load_workbook

    paper = {"name": "居民户口簿", "required": False, "form": "paper", "copies": 1, "source": "申请人自备"}
    online = {"name": "居民身份证", "required": True, "form": "electronic", "copies": None, "source": "政府部门核发"}
    was = {**B, "materials": [online, paper], "legal_limit": None, "legal_limit_unit": None, "promised_limit": 2}
    now = {**was, "materials": [online], "promised_limit": 3, "item_type": "01", "version": "4"}
    built, _ = _report(tmp_path, reconcile([now], [was]))
    [changed] = built.changed
    assert {c.element for c in changed.changes} == {"materials", "time_limit", "item_type"}
    shown = {
        "居民身份证（必要，电子，政府部门核发）；居民户口簿（非必要，纸质，1 份，申请人自备）",
        "居民身份证（必要，电子，政府部门核发）",
        "法定办结时限 无；承诺办结时限 2 个工作日",
        "法定办结时限 无；承诺办结时限 3 个工作日",
        "公共服务",
        "行政许可",
    }
    html = (tmp_path / "report.html").read_text(encoding="utf-8")
    rows = list(load_workbook(tmp_path / "report.xlsx")["变更"].iter_rows(min_row=2, values_only=True))
    assert {v for row in rows for v in row[3:]} == shown
    for text in shown:
        assert text in html
    for raw in ("legal_limit", "promised_limit_unit", "electronic", "&#39;form&#39;", "&#34;form&#34;"):
        assert raw not in html
    on_disk = {c["element"]: c for c in json.loads((tmp_path / "report.json").read_bytes())["changed"][0]["changes"]}
    assert on_disk["materials"]["new"] == [online] and on_disk["time_limit"]["new"]["promised_limit"] == 3  # data
