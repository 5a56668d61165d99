"""Per-partner reconciliation reports (JSON for machines, HTML and xlsx for people) and the run summary.

:func:`build` makes one typed :class:`~tongban.report_model.PartnerReport`; ``report.json`` is that
model's JSON, and ``report.html`` (Jinja2 template) and ``report.xlsx`` (openpyxl) are rendered from the
same model, so all three always say the same.
"""

from __future__ import annotations

import io
import json
import unicodedata
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import replace
from datetime import UTC, datetime
from functools import cache
from typing import Any, TypeVar

import jinja2
import msgspec
from upath import UPath

from tongban import guard, watermark
from tongban.codes import TASK_CODE_LENGTH
from tongban.config import CHINA_TZ, max_critical_rate
from tongban.files import DeliveryFile, OutboundFile, PublishFile, ReportFile, SummaryFile, SummaryPartner
from tongban.layout import (
    DELIVERY,
    PROVINCE_CHECK,
    REPORT_HTML,
    REPORT_JSON,
    REPORT_XLSX,
    SUMMARY,
    VALIDATION,
    run_dir,
)
from tongban.model import COMPARED, LABELS, element_text
from tongban.normalise import WIDTH_ONLY, Duplicate, NormalisedValue, Quarantined, width_only_difference
from tongban.outbound import report as outbound_texts
from tongban.outbound.diff import COUNT_KEYS as OUTBOUND_KEYS
from tongban.outbound.report import SECTION_TITLE, SHEET_HEADINGS, ours_cell, sheet_rows, summary_outbound
from tongban.outbound.report import section as outbound_section
from tongban.outstanding import KIND_LABELS, RESOLUTION_LABELS
from tongban.reconcile import ElementChange, Reconciliation
from tongban.registry import Partner, WireFormat, label, load_registry, wire_formats
from tongban.report_model import (
    Brief,
    ChangedItem,
    EarlierChange,
    Flagged,
    FutureDated,
    HoldBack,
    OutstandingItem,
    PartnerReport,
    PlatformRejection,
    PublishedOp,
    QuarantinedRecord,
    RecodedItem,
    RemovalHold,
    ResolvedItem,
    UnexpectedField,
)
from tongban.storage import read_json, write_json
from tongban.validation.outcome import FlaggedRecord

T = TypeVar("T")

FUTURE_DATED = "已按内容处理，但不作为增量同步的起点，请核对"
COUNT_KEYS = ("fetched", "quarantined", "rejected", "added", "changed", "removed", "unchanged", "published")
COUNT_LABELS = {
    "fetched": "拉取",
    "quarantined": "隔离（无法解析或映射）",
    "rejected": "退回（未通过关键校验）",
    "added": "新增",
    "changed": "变更",
    "removed": "删除",
    "unchanged": "未变（与平台上的版本相同）",
    "published": "已推送",
    "warnings": "待核（警告）",
    "held": "保留平台原版本",
    "recoded": "编码变更（同一事项换用新实施编码）",
    "platform_rejected": "平台拒收",
    "duplicates": "重复记录（只计一次）",
    "unexpected_fields": "多余字段（已忽略）",
    "outstanding": "待整改（历次退回、隔离或拒收，至今未改）",
    "resolved": "本次整改完成（已更正、平台上已是贵方提供的版本，或已撤回）",
    "held_with_partner": "随同暂缓（已通过校验，随整体暂缓未推送）",
    "removals_held": "暂缓删除（待人工确认，平台保留原版本）",
    "future_dated": "更新时间晚于拉取时间（待核）",
    "normalised": "规范化的编码值（全角或不可见字符）",
    "earlier_unreported": "此前运行已推送、未曾报告的变更",
}
CHANGE_LABELS = {"added": "新增", "changed": "变更", "removed": "删除", "recoded": "编码变更"}
# an incremental pull carries only what changed: the items it did not carry count as unchanged too
INCREMENTAL_UNCHANGED = "未变（平台上保持原样，含本次增量未拉取的事项）"


def count_labels(report: PartnerReport) -> dict[str, str]:
    """How the report's counts are named for this report's kind of pull (HTML and xlsx alike)."""
    return COUNT_LABELS if report.full_pull else COUNT_LABELS | {"unchanged": INCREMENTAL_UNCHANGED}


OP_LABELS = {"upsert": "新增或更新", "delete": "删除"}  # the platform's operations, as partners read them


def _brief(record: Mapping[str, Any]) -> Brief:
    return Brief(
        task_code=record["task_code"],
        name=record["name"],
        level=record["level"],
        level_label=label("level", record["level"]),
    )


def element_fields(fmt: WireFormat, element: str) -> str:
    """An element's fields as the partner's format names them (``SXMC``; ``FDBJSX、FDBJSXDW、…``)."""
    fields = next((e.fields for e in COMPARED if e.key == element), (element,))  # else a field of its own
    return "、".join(fmt.fields[f] for f in fields if f in fmt.fields)


def _typed(row_type: type[T], row: T | Mapping[str, Any]) -> T:
    """A stage file's record as its type: as read from the file (a dict, converted and checked), or typed."""
    return row if isinstance(row, row_type) else msgspec.convert(row, row_type)


def flagged(entry: FlaggedRecord | Mapping[str, Any], fmt: WireFormat) -> Flagged:
    """A line of rejected.jsonl or warnings.jsonl (typed, or as read) as the report shows it: the findings
    with their element's label and fields."""
    record = _typed(FlaggedRecord, entry)
    findings = [
        replace(f, label=LABELS.get(f.element, f.label or f.element), fields=element_fields(fmt, f.element))
        for f in record.findings
    ]
    return Flagged(**_brief(record.record).model_dump(), findings=findings)


def quarantined_record(entry: Quarantined | Mapping[str, Any]) -> QuarantinedRecord:
    """A line of quarantine.jsonl (typed, or as read) as the report shows it."""
    q = entry if isinstance(entry, Mapping) else vars(entry)
    return QuarantinedRecord(
        position=q["position"], task_code=q.get("task_code"), name=q.get("name"), problems=q["problems"]
    )


def rejected_rows(rejected: Iterable[Flagged]) -> list[list[str]]:
    """The report's 退回 rows: one per critical finding, 实施编码, 事项名称, the element (its label and the partner's
    own fields) and why."""
    return [
        [i.task_code, i.name, shown_label(f.label, f.fields), f.message]
        for i in rejected
        for f in i.findings
        if f.severity == "critical"
    ]


def quarantined_rows(quarantined: Iterable[QuarantinedRecord]) -> list[list[str]]:
    """The report's 隔离 rows: one per problem, 位置, 实施编码, 事项名称, the partner's own field and why."""
    return [
        [q.position, q.task_code or "", q.name or "", p.wire_field, p.reason] for q in quarantined for p in q.problems
    ]


def change_label(change: ElementChange, fmt: WireFormat | None) -> str:
    """A changed element as the partner reads it: its label, its own field names, and whether the old and new
    values differ only in width or invisible characters."""
    shown = shown_label(change.label, element_fields(fmt, change.element) if fmt else "")
    return shown + (WIDTH_ONLY if width_only_difference(change.old, change.new) else "")


def _wire_format(division: str) -> WireFormat | None:
    try:
        return wire_formats()[load_registry().partner(division).format]
    except KeyError:  # a report of a partner no longer in the registry
        return None


def shown_label(label: str, fields: str) -> str:
    """``事项名称（SXMC）``: the Chinese label with the partner's own field names."""
    return f"{label}（{fields}）" if fields else label


def notices(report: PartnerReport) -> list[str]:
    """The report's notices in Chinese (hold-back, held or confirmed removals), most serious first."""
    texts = [report.hold_back.text if report.hold_back else None]
    texts.append(report.removal_guard.text if report.removal_guard else None)
    return [t for t in texts if t]


def page_span(pages: Iterable[int]) -> str:
    """``[1, 2, 3, 5]`` -> ``第1–3、5页``."""
    runs: list[list[int]] = []
    for page in sorted(set(pages)):
        if runs and page == runs[-1][-1] + 1:
            runs[-1].append(page)
        else:
            runs.append([page])
    return "第" + "、".join(f"{r[0]}–{r[-1]}" if len(r) > 1 else str(r[0]) for r in runs) + "页"


def unexpected_fields(manifest: Sequence[Mapping[str, Any]]) -> list[UnexpectedField]:
    """Fields the pull's accepted pages carried beyond the agreed wire format (the fetch manifest notes
    them per page), each with its pages and a reason in Chinese."""
    pages: dict[str, set[int]] = {}
    for entry in manifest:
        for name in entry.get("unexpected_fields", ()):
            pages.setdefault(name, set()).add(int(entry["page"]))
    return [
        UnexpectedField(
            field=name,
            pages=sorted(found),
            reason=f"接口返回了格式约定之外的字段 {name}（{page_span(found)}），本次已忽略，不影响同步",
        )
        for name, found in sorted(pages.items())
    ]


def build(
    *,
    partner: Partner,
    run_id: str,
    fetched: int,
    quarantined: Sequence[Mapping[str, Any]],
    rejected: Sequence[FlaggedRecord | Mapping[str, Any]],
    warnings: Sequence[FlaggedRecord | Mapping[str, Any]],
    recon: Reconciliation,
    publish: PublishFile,
    duplicates: Sequence[Duplicate | Mapping[str, Any]] = (),
    unexpected: Sequence[UnexpectedField] = (),
    outstanding: Sequence[Mapping[str, Any]] = (),
    resolved: Sequence[Mapping[str, Any]] = (),
    hold_back: Mapping[str, Any] | None = None,
    held_with_partner: Sequence[Mapping[str, Any]] = (),
    future_dated: Sequence[Mapping[str, Any]] = (),
    normalised: Sequence[NormalisedValue | Mapping[str, Any]] = (),
    outbound: OutboundFile | None = None,
    earlier: Sequence[Mapping[str, Any]] = (),
) -> PartnerReport:
    """Everything a partner needs to know about one run, from the stages' files (see pipeline.write_report).

    ``hold_back``: the validation (or province check) summary when the partner was held back whole;
    ``held_with_partner``: its records that passed and were held with it; ``future_dated``: records of
    the pull dated after it (``fetch.json``); ``earlier``: item-history rows (``ItemStore.unreported``) that
    earlier runs published and no delivered report told of."""
    fmt = wire_formats()[partner.format]
    return PartnerReport(
        partner=partner.division,
        partner_name=partner.name,
        run_id=run_id,
        dry_run=publish.dry_run,
        full_pull=recon.full,
        held_back=recon.held_back,
        fetched=fetched,
        quarantined=[quarantined_record(q) for q in quarantined],
        rejected=[flagged(r, fmt) for r in rejected],
        warnings=[flagged(w, fmt) for w in warnings],
        added=[_brief(r) for r in recon.added],
        changed=[ChangedItem(task_code=c.task_code, name=c.name, changes=c.changes) for c in recon.changed],
        removed=[_brief(r) for r in recon.removed],
        recoded=[
            RecodedItem(old_code=r.old_code, task_code=r.task_code, name=r.name, changes=r.changes)
            for r in recon.recoded
        ],
        unchanged=list(recon.unchanged),
        held=list(recon.held),
        published=[PublishedOp(task_code=a["task_code"], op=a["op"]) for a in publish.accepted],
        platform_rejected=[PlatformRejection(**p) for p in publish.rejected],
        duplicates=[_typed(Duplicate, d) for d in duplicates],
        unexpected_fields=list(unexpected),
        normalised=[_typed(NormalisedValue, n) for n in normalised],
        outstanding=[_outstanding(o) for o in sorted(outstanding, key=lambda o: (-o["nights"], o["task_code"]))],
        resolved=[
            ResolvedItem(
                task_code=o["task_code"],
                name=o["name"],
                resolution=o["resolution"],
                resolution_label=RESOLUTION_LABELS[o["resolution"]],
                first_run=o["first_run"],
                nights=o["nights"],
            )
            for o in resolved
        ],
        hold_back=(
            _hold_back(hold_back, len(held_with_partner), full=recon.full) if recon.held_back and hold_back else None
        ),
        held_with_partner=[_brief(r) for r in held_with_partner] if recon.held_back else [],
        removal_guard=(
            _removal_hold(recon.removal_guard, partner.division, run_id, publish.dry_run)
            if recon.removal_guard
            else None
        ),
        future_dated=[
            FutureDated(**f, reason=f"更新时间 {f['updated_at']} 晚于本次拉取时间：{FUTURE_DATED}")
            for f in future_dated
        ],
        outbound=outbound_section(outbound) if outbound is not None else None,
        earlier=[
            EarlierChange(
                run_id=h["run_id"],
                task_code=h["task_code"],
                name=h["name"],
                kind=h["kind"],
                kind_label=CHANGE_LABELS[h["kind"]],
                element=h["element"] if h["kind"] == "changed" else "",
                label=LABELS.get(h["element"], "") if h["kind"] == "changed" else "",
                old=h["old"],
                new=h["new"],
            )
            for h in earlier
        ],
    )


FIRST_SEEN = "首次发现（北京时间）"  # the heading of china_time's column, in HTML and xlsx alike


def china_time(moment: str) -> str:
    """An ISO 8601 time of ours (UTC) as a partner reads times: Beijing time (Asia/Shanghai), to the minute."""
    at = datetime.fromisoformat(moment)
    return (at if at.tzinfo else at.replace(tzinfo=UTC)).astimezone(CHINA_TZ).strftime("%Y-%m-%d %H:%M")


def _outstanding(row: Mapping[str, Any]) -> OutstandingItem:
    """One row of the item store's 待整改 list (ItemStore.track_outstanding) as the report shows it."""
    seen = row["first_seen"]
    if isinstance(seen, datetime) and seen.tzinfo is None:  # SQLite keeps no zone: the store writes UTC
        seen = seen.replace(tzinfo=UTC)
    return OutstandingItem(
        task_code=row["task_code"],
        name=row["name"],
        kind=row["kind"],
        kind_label=KIND_LABELS[row["kind"]],
        reason=row["reason"],
        first_run=row["first_run"],
        first_seen=seen.isoformat() if hasattr(seen, "isoformat") else str(seen),
        nights=row["nights"],
    )


def _hold_back(check: Mapping[str, Any], passed: int, *, full: bool) -> HoldBack:
    records = int(check.get("records", int(check.get("accepted", 0)) + int(check["rejected"])))
    failing = int(check.get("failing", check["rejected"]))
    catalogue = int(check.get("catalogue", records))  # files before it: the rate was over the pull's records
    numbers = {"failing": failing, "records": records, "catalogue": catalogue}
    return HoldBack(
        failing=failing,
        records=records,
        catalogue=catalogue,
        rate=check["critical_rate"],
        limit=check["max_critical_rate"],
        text=guard.hold_back_notice(numbers | {"max_critical_rate": check["max_critical_rate"]}, passed, full=full),
    )


def _removal_hold(info: Mapping[str, Any], division: str, run_id: str, dry_run: bool) -> RemovalHold:
    keys = ("published", "removals", "rate", "limit", "size", "previous_size", "reasons", "confirmed_run", "confirmed")
    return RemovalHold(
        **{k: info.get(k) for k in keys},
        held=[_brief(r) for r in info.get("held", [])],
        text=guard.removal_notice(info, division, run_id, dry_run=dry_run) or guard.confirmed_notice(info),
    )


@cache
def templates() -> jinja2.Environment:
    """The report templates (``tongban/templates``), compiled on first use and kept for the process."""
    return jinja2.Environment(
        loader=jinja2.PackageLoader("tongban", "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
    )


def compile_templates() -> None:
    """Compile every report template now (``tongban.preload``: once per worker instead of once per task)."""
    env = templates()
    for name in env.list_templates():
        env.get_template(name)


def render_html(report: PartnerReport) -> str:
    return (
        templates()
        .get_template("report.html.j2")
        .render(
            r=report,
            counts=report.counts.model_dump(),
            count_labels=count_labels(report),
            page_span=page_span,
            shown_label=shown_label,
            change_label=lambda e: change_label(e, _wire_format(report.partner)),
            op_labels=OP_LABELS,
            china_time=china_time,
            first_seen=FIRST_SEEN,
            value_text=element_text,
            outbound_count_labels=outbound_texts.COUNT_LABELS,
            outbound_op_labels=outbound_texts.OP_LABELS,
            outbound_sent_labels=outbound_texts.SENT_LABELS,
        )
    )


FORMULA_PREFIXES = ("=", "+", "-", "@", "\t", "\r")


def spreadsheet_safe(value: Any) -> Any:
    """Text a spreadsheet would run as a formula (=, +, -, @ …) made inert with a leading apostrophe."""
    if isinstance(value, str) and value.startswith(FORMULA_PREFIXES):
        return "'" + value
    if isinstance(value, dict | list):
        return spreadsheet_safe(json.dumps(value, ensure_ascii=False))
    return value


def _sheets(report: PartnerReport) -> dict[str, tuple[list[str], list[list[Any]]]]:
    """Sheet name -> (headings, rows): the workbook's content, taken from the report model only."""
    fmt = _wire_format(report.partner)
    return {
        "汇总": (
            ["类别", "数量"],
            [["合作地区", f"{report.partner_name}（{report.partner}）"], ["运行编号", report.run_id]]
            + [["提示", notice] for notice in notices(report)]
            + [[count_labels(report)[k], v] for k, v in report.counts.model_dump().items()],
        ),
        "新增": (
            ["实施编码", "事项名称", "行使层级"],
            [[i.task_code, i.name, i.level_label] for i in report.added],
        ),
        "变更": (
            ["实施编码", "事项名称", "要素", "原值", "新值"],
            [
                [
                    c.task_code,
                    c.name,
                    change_label(e, fmt),
                    element_text(e.element, e.old),
                    element_text(e.element, e.new),
                ]
                for c in report.changed
                for e in c.changes
            ],
        ),
        "编码变更": (
            ["原实施编码", "新实施编码", "事项名称"],
            [[c.old_code, c.task_code, c.name] for c in report.recoded],
        ),
        "删除": (
            ["实施编码", "事项名称", "行使层级"],
            [[i.task_code, i.name, i.level_label] for i in report.removed],
        ),
        "退回": (
            ["实施编码", "事项名称", "要素", "原因"],
            rejected_rows(report.rejected),
        ),
        "隔离": (
            ["位置", "实施编码", "事项名称", "字段", "原因"],
            quarantined_rows(report.quarantined),
        ),
        "待核": (
            ["实施编码", "事项名称", "要素", "说明"],
            [
                [i.task_code, i.name, shown_label(f.label, f.fields), f.message]
                for i in report.warnings
                for f in i.findings
            ],
        ),
        "待整改": (
            ["实施编码", "事项名称", "类别", "原因", FIRST_SEEN, "首次发现的运行", "已持续（次运行）"],
            [
                [o.task_code, o.name, o.kind_label, o.reason, china_time(o.first_seen), o.first_run, o.nights]
                for o in report.outstanding
            ]
            + [
                [o.task_code, o.name, f"本次整改完成：{o.resolution_label}", "", "", o.first_run, o.nights]
                for o in report.resolved
            ],
        ),
        "随同暂缓": (
            ["实施编码", "事项名称", "行使层级"],
            [[i.task_code, i.name, i.level_label] for i in report.held_with_partner],
        ),
        "暂缓删除": (
            ["实施编码", "事项名称", "行使层级", "原因"],
            [
                [i.task_code, i.name, i.level_label, "；".join(report.removal_guard.reasons)]
                for i in (report.removal_guard.held if report.removal_guard else [])
            ],
        ),
        "平台拒收": (
            ["实施编码", "事项名称", "操作", "原因"],
            [[p.task_code or "", p.name, OP_LABELS.get(p.op, p.op), p.reason or ""] for p in report.platform_rejected],
        ),
        "此前未报告的变更": (
            ["运行编号", "实施编码", "事项名称", "类别", "要素", "原值", "新值"],
            [
                [
                    e.run_id,
                    e.task_code,
                    e.name,
                    e.kind_label,
                    e.label,
                    element_text(e.element, e.old),
                    element_text(e.element, e.new),
                ]
                for e in report.earlier
            ],
        ),
        "重复与多余字段": (
            ["类别", "位置", "实施编码或字段名", "说明"],
            [["重复记录", d.position, d.task_code or "", d.reason] for d in report.duplicates]
            + [["多余字段", page_span(u.pages), u.field, u.reason] for u in report.unexpected_fields]
            + [["更新时间晚于拉取时间", f.position, str(f.task_code), f.reason] for f in report.future_dated]
            + [
                ["编码规范化", n.position, f"{n.task_code or ''} {n.field}".strip(), n.reason]
                for n in report.normalised
            ],
        ),
        **({SECTION_TITLE: (SHEET_HEADINGS, sheet_rows(report.outbound))} if report.outbound else {}),
    }


def _xlsx_cell(sheet: Any, value: Any, font: Any = None) -> Any:
    from openpyxl.cell import WriteOnlyCell

    cell = WriteOnlyCell(sheet, value=value)
    if isinstance(cell.value, str):
        cell.data_type = "s"  # never a formula, whatever the text
    if font is not None:
        cell.font = font
    return cell


XLSX_COLUMN_WIDTH = 8.43  # a spreadsheet column's default width, in widths of the digit 0


# columns of 实施编码 (31 characters each, with or without a field name after it): as wide as one code
CODE_HEADINGS = frozenset({"实施编码", "原实施编码", "新实施编码", "实施编码或字段名"})
RUN_HEADINGS = frozenset({"运行编号", "首次发现的运行"})  # columns of run ids: as wide as the longest


def heading_width(heading: str) -> int:
    """The column width (in widths of the digit 0) that shows ``heading`` whole: a CJK character takes two,
    and two more for the cell's margins and the bold font."""
    return 2 + sum(2 if unicodedata.east_asian_width(c) in "WF" else 1 for c in heading)


def column_width(heading: str, values: Iterable[Any] = ()) -> int:
    """The fixed width of the column under ``heading``: a code column shows a whole 实施编码, a run-id column the
    longest run id of its ``values`` (an Airflow run id is ASCII, 30 to 50 characters), any other its heading
    (the values wrap or spill over as the spreadsheet program likes)."""
    if heading in RUN_HEADINGS:
        return max([heading_width(heading), *(len(str(v)) + 2 for v in values)])
    return max(heading_width(heading), TASK_CODE_LENGTH + 2 if heading in CODE_HEADINGS else 0)


def write_xlsx(report: PartnerReport, path: UPath) -> UPath:
    """The workbook, streamed (openpyxl's write-only mode: rows are written as they come, so a
    partner's report of tens of thousands of items costs neither quadratic time nor the whole sheet
    in memory). Each column is at least as wide as its heading, a column of 实施编码 as a code."""
    from openpyxl import Workbook
    from openpyxl.styles import Font
    from openpyxl.utils import get_column_letter

    workbook = Workbook(write_only=True)
    bold = Font(bold=True)
    for title, (headings, rows) in _sheets(report).items():
        sheet = workbook.create_sheet(title)
        for number, heading in enumerate(headings, start=1):  # before the first row, as write-only sheets need
            if (width := column_width(heading, (row[number - 1] for row in rows))) > XLSX_COLUMN_WIDTH:
                sheet.column_dimensions[get_column_letter(number)].width = width
        sheet.append([_xlsx_cell(sheet, h, bold) for h in headings])
        for row in rows:
            sheet.append([_xlsx_cell(sheet, spreadsheet_safe(v)) for v in row])
    buffer = io.BytesIO()
    workbook.save(buffer)
    path.write_bytes(buffer.getvalue())
    return path


def write(report: PartnerReport, out: UPath) -> dict[str, str]:
    """Write report.json, report.html and report.xlsx into ``out``; returns their paths."""
    out.mkdir(parents=True, exist_ok=True)
    json_path = out / REPORT_JSON
    json_path.write_bytes(report.to_json())
    html_path = out / REPORT_HTML
    html_path.write_bytes(render_html(report).encode())
    xlsx_path = write_xlsx(report, out / REPORT_XLSX)
    return {"report_json": str(json_path), "report_html": str(html_path), "report_xlsx": str(xlsx_path)}


DELIVERED = ("delivered", "already_received", "skipped")


def _delivery_status(folder: UPath) -> str:
    """The last delivery status of a report (``delivery.json`` beside it), or ``not_delivered``."""
    path = folder / DELIVERY
    return read_json(path, DeliveryFile).status if path.exists() else "not_delivered"


def rate_check(run: UPath) -> dict[str, Any] | None:
    """The partner's hold-back rate of a run as last counted: ``province_check.json`` once the province check ran,
    else ``validation.json`` (``results.ProvinceCheck``, ``results.Validated``); None before validation."""
    for name in (PROVINCE_CHECK, VALIDATION):
        if (run / name).exists():
            return read_json(run / name)
    return None


def summarise(reports_root: UPath, run_id: str, partners: Sequence[Partner]) -> SummaryFile:
    """The run summary over all partners, written to ``summary.json``: their counts, or that no report was written
    (failed)."""
    divisions = [p.division for p in partners]
    outbound = summary_outbound(reports_root.parent, reports_root, run_id, divisions)  # our items, there
    rows = []
    for partner in partners:
        path = reports_root / run_id / partner.division / REPORT_JSON
        found = outbound[partner.division]
        row = SummaryPartner(partner=partner.division, name=partner.name, outbound=found, ours=ours_cell(found))
        if path.exists():
            written = read_json(path, ReportFile)
            status = "held_back" if written.held_back else "ok"
            delivery = _delivery_status(path.parent)
            # the hold-back rate and its denominator (pipeline.hold_back_rate), as the UI shows it
            check = rate_check(run_dir(reports_root.parent, run_id, partner.division)) or {}
            rate = {"critical_rate": check.get("critical_rate"), "catalogue": check.get("catalogue")}
            rows.append(replace(row, status=status, counts=written.counts, report=str(path), delivery=delivery, **rate))
        else:
            # stale: the platform's list of this partner is as of its last published pull (None: never)
            rows.append(replace(row, stale_since=watermark.stale_since(reports_root.parent, partner.division)))
    # every count class of the reports (older reports lack the newer ones: 0), the main ones first
    keys = [*COUNT_KEYS, *(k for k in COUNT_LABELS if k not in COUNT_KEYS)]
    keys += sorted({k for r in rows if r.counts for k in r.counts} - set(keys))
    summary = SummaryFile(
        run_id=run_id,
        max_critical_rate=max_critical_rate(),  # the hold-back threshold the run's validation used
        partners=rows,
        totals={k: sum(r.counts.get(k, 0) for r in rows if r.counts) for k in keys},
        failed=[r.partner for r in rows if r.status == "failed"],
        held_back=[r.partner for r in rows if r.status == "held_back"],
        # partners whose removals the removal guard held for confirmation (param confirm_removals)
        removals_held=[r.partner for r in rows if r.counts and r.counts.get("removals_held")],
        undelivered=[r.partner for r in rows if r.counts and r.delivery not in DELIVERED],
        stale={r.partner: r.stale_since for r in rows if r.status == "failed"},
        outbound_failed=[d for d, o in outbound.items() if o.status != "ok"],
        outbound_totals={k: sum(getattr(o, k) or 0 for o in outbound.values()) for k in OUTBOUND_KEYS},
    )
    write_json(reports_root / run_id / SUMMARY, summary)
    return summary


def summary_table(summary: SummaryFile, platform: Mapping[str, int] | None = None) -> str:
    """A plain-text table of the run summary (for logs and the terminal): counts per partner, ``platform`` when
    given (the items the platform holds per partner: ``make run``'s check) and ``ours`` (our items there)."""
    shown = platform is not None
    head = ["partner", "name", "status", *COUNT_KEYS, *(["platform"] if shown else []), "ours"]
    lines = [head]
    held = [(platform or {}).get(r.partner) for r in summary.partners]
    for row, on_platform in zip(summary.partners, held, strict=True):
        counts = row.counts or {}
        cells = [str(counts.get(k, "-")) for k in COUNT_KEYS] + (
            ["-" if on_platform is None else str(on_platform)] if shown else []
        )
        lines.append([row.partner, row.name, row.status, *cells, row.ours])
    totals = [str(summary.totals.get(k, 0)) for k in COUNT_KEYS] + ([str(sum(v or 0 for v in held))] if shown else [])
    lines.append(["total", "", "", *totals, ""])  # ours (92/92 +4) is text: no total
    widths = [max(_width(line[i]) for line in lines) for i in range(len(head))]
    return "\n".join(
        "  ".join(cell + " " * (w - _width(cell)) for cell, w in zip(line, widths, strict=True)) for line in lines
    )


def _width(text: str) -> int:
    """Display width: CJK characters take two columns."""
    return sum(2 if ord(ch) > 0x2E80 else 1 for ch in text)
