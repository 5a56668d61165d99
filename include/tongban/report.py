"""Per-partner reconciliation reports (JSON for machines, HTML for people) and the run summary.

The report is one plain dict built here; the JSON file is that dict and the HTML page is rendered
from the same dict by a Jinja2 template, so both always say the same.
"""

from __future__ import annotations

import io
import json
from collections.abc import Mapping, Sequence
from functools import cache
from typing import Any

import jinja2
from upath import UPath

from tongban import watermark
from tongban.model import LABELS
from tongban.reconcile import Reconciliation
from tongban.registry import Partner, label
from tongban.storage import read_json, write_json

REPORT_JSON = "report.json"
DELIVERY = "delivery.json"  # beside the report: every delivery attempt of it to the partner
COUNT_KEYS = ("fetched", "quarantined", "rejected", "added", "changed", "removed", "unchanged", "published")
COUNT_LABELS = {
    "fetched": "拉取",
    "quarantined": "隔离（无法解析或映射）",
    "rejected": "退回（未通过关键校验）",
    "added": "新增",
    "changed": "变更",
    "removed": "删除",
    "unchanged": "未变",
    "published": "已推送",
    "warnings": "待核（警告）",
    "held": "保留平台原版本",
    "recoded": "编码变更（同一事项换用新实施编码）",
    "platform_rejected": "平台拒收",
}


def _brief(record: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "task_code": record["task_code"],
        "name": record["name"],
        "level": record["level"],
        "level_label": label("level", record["level"]),
    }


def _finding(f: Mapping[str, Any]) -> dict[str, Any]:
    return {**f, "label": LABELS.get(f["element"], f["element"])}


def build(
    *,
    partner: Partner,
    run_id: str,
    fetched: int,
    quarantined: Sequence[Mapping[str, Any]],
    rejected: Sequence[Mapping[str, Any]],
    warnings: Sequence[Mapping[str, Any]],
    recon: Reconciliation,
    publish: Mapping[str, Any],
) -> dict[str, Any]:
    """Everything a partner needs to know about one run, as one JSON-safe dict."""
    report: dict[str, Any] = {
        "partner": partner.division,
        "partner_name": partner.name,
        "run_id": run_id,
        "dry_run": bool(publish.get("dry_run")),
        "quarantined": [
            {"position": q["position"], "task_code": q.get("task_code"), "problems": q["problems"]} for q in quarantined
        ],
        "rejected": [{**_brief(r["record"]), "findings": [_finding(f) for f in r["findings"]]} for r in rejected],
        "warnings": [{**_brief(w["record"]), "findings": [_finding(f) for f in w["findings"]]} for w in warnings],
        "added": [_brief(r) for r in recon.added],
        "changed": [
            {
                "task_code": c.task_code,
                "name": c.name,
                "changes": [{"element": e.element, "label": e.label, "old": e.old, "new": e.new} for e in c.changes],
            }
            for c in recon.changed
        ],
        "removed": [_brief(r) for r in recon.removed],
        "recoded": [
            {
                "old_code": r.old_code,
                "task_code": r.task_code,
                "name": r.name,
                "changes": [{"element": e.element, "label": e.label, "old": e.old, "new": e.new} for e in r.changes],
            }
            for r in recon.recoded
        ],
        "full_pull": recon.full,
        "held_back": recon.held_back,
        "unchanged": list(recon.unchanged),
        "held": list(recon.held),
        "published": [{"task_code": a["task_code"], "op": a["op"]} for a in publish.get("accepted", [])],
        "platform_rejected": list(publish.get("rejected", [])),
    }
    report["counts"] = {"fetched": fetched} | {
        key: len(report[key]) for key in (*COUNT_KEYS[1:], "warnings", "held", "platform_rejected")
    }
    return report


@cache
def _templates() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("tongban", "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
    )
    return env


def render_html(report: Mapping[str, Any]) -> str:
    return _templates().get_template("report.html.j2").render(r=report, count_labels=COUNT_LABELS)


FORMULA_PREFIXES = ("=", "+", "-", "@", "\t", "\r")


def spreadsheet_safe(value: Any) -> Any:
    """Text a spreadsheet would run as a formula (=, +, -, @ …) made inert with a leading apostrophe."""
    if isinstance(value, str) and value.startswith(FORMULA_PREFIXES):
        return "'" + value
    if isinstance(value, dict | list):
        return spreadsheet_safe(json.dumps(value, ensure_ascii=False))
    return value


def _sheets(report: Mapping[str, Any]) -> dict[str, tuple[list[str], list[list[Any]]]]:
    """Sheet name -> (headings, rows): the workbook's content, taken from the report dict only."""
    counts = report["counts"]
    return {
        "汇总": (
            ["类别", "数量"],
            [["合作地区", f"{report['partner_name']}（{report['partner']}）"], ["运行编号", report["run_id"]]]
            + [[COUNT_LABELS.get(k, k), v] for k, v in counts.items()],
        ),
        "新增": (
            ["实施编码", "事项名称", "行使层级"],
            [[i["task_code"], i["name"], i["level_label"]] for i in report["added"]],
        ),
        "变更": (
            ["实施编码", "事项名称", "要素", "原值", "新值"],
            [
                [c["task_code"], c["name"], e["label"], e["old"], e["new"]]
                for c in report["changed"]
                for e in c["changes"]
            ],
        ),
        "编码变更": (
            ["原实施编码", "新实施编码", "事项名称"],
            [[c["old_code"], c["task_code"], c["name"]] for c in report["recoded"]],
        ),
        "删除": (
            ["实施编码", "事项名称", "行使层级"],
            [[i["task_code"], i["name"], i["level_label"]] for i in report["removed"]],
        ),
        "退回": (
            ["实施编码", "事项名称", "要素", "校验规则", "原因"],
            [
                [i["task_code"], i["name"], f["label"], f["expectation"], f["message"]]
                for i in report["rejected"]
                for f in i["findings"]
                if f["severity"] == "critical"
            ],
        ),
        "隔离": (
            ["位置", "实施编码", "字段", "原因"],
            [
                [q["position"], q["task_code"] or "", p["wire_field"], p["reason"]]
                for q in report["quarantined"]
                for p in q["problems"]
            ],
        ),
        "待核": (
            ["实施编码", "事项名称", "要素", "说明"],
            [[i["task_code"], i["name"], f["label"], f["message"]] for i in report["warnings"] for f in i["findings"]],
        ),
    }


def write_xlsx(report: Mapping[str, Any], path: UPath) -> UPath:
    from openpyxl import Workbook
    from openpyxl.styles import Font

    workbook = Workbook()
    workbook.remove(workbook.active)
    for title, (headings, rows) in _sheets(report).items():
        sheet = workbook.create_sheet(title)
        sheet.append(headings)
        for cell in sheet[1]:
            cell.font = Font(bold=True)
        for row in rows:
            sheet.append([spreadsheet_safe(v) for v in row])
            for cell in sheet[sheet.max_row]:
                if isinstance(cell.value, str):
                    cell.data_type = "s"  # never a formula, whatever the text
    buffer = io.BytesIO()
    workbook.save(buffer)
    path.write_bytes(buffer.getvalue())
    return path


def write(report: Mapping[str, Any], out: UPath) -> dict[str, str]:
    """Write report.json, report.html and report.xlsx into ``out``; returns their paths."""
    json_path = write_json(out / REPORT_JSON, report)
    html_path = out / "report.html"
    html_path.write_bytes(render_html(report).encode())
    xlsx_path = write_xlsx(report, out / "report.xlsx")
    return {"report_json": str(json_path), "report_html": str(html_path), "report_xlsx": str(xlsx_path)}


DELIVERED = ("delivered", "already_received", "skipped")


def _delivery_status(folder: UPath) -> str:
    """The last delivery status of a report (``delivery.json`` beside it), or ``not_delivered``."""
    path = folder / DELIVERY
    return str(read_json(path)["status"]) if path.exists() else "not_delivered"


def summarise(reports_root: UPath, run_id: str, partners: Sequence[Partner]) -> dict[str, Any]:
    """The run summary over all partners: their counts, or that no report was written (failed)."""
    rows = []
    for partner in partners:
        path = reports_root / run_id / partner.division / REPORT_JSON
        if path.exists():
            report = read_json(path)
            rows.append(
                {
                    "partner": partner.division,
                    "name": partner.name,
                    "status": "held_back" if report.get("held_back") else "ok",
                    "counts": report["counts"],
                    "report": str(path),
                    "delivery": _delivery_status(path.parent),
                }
            )
        else:
            rows.append(
                {"partner": partner.division, "name": partner.name, "status": "failed", "counts": None, "report": None}
            )
            # stale: the platform's list of this partner is as of its last published pull (None: never)
            rows[-1]["stale_since"] = watermark.stale_since(reports_root.parent, partner.division)
    totals = {k: sum(r["counts"][k] for r in rows if r["counts"]) for k in COUNT_KEYS}
    summary = {
        "run_id": run_id,
        "partners": rows,
        "totals": totals,
        "failed": [r["partner"] for r in rows if r["status"] == "failed"],
        "held_back": [r["partner"] for r in rows if r["status"] == "held_back"],
        "undelivered": [r["partner"] for r in rows if r["counts"] and r["delivery"] not in DELIVERED],
        "stale": {r["partner"]: r["stale_since"] for r in rows if r["status"] == "failed"},
    }
    write_json(reports_root / run_id / "summary.json", summary)
    return summary


def summary_table(summary: Mapping[str, Any], extra: Sequence[str] = ()) -> str:
    """A plain-text table of the run summary (for logs and the terminal); ``extra``: more row keys to show."""
    head = ["partner", "name", "status", *COUNT_KEYS, *extra]
    lines = [head]
    for row in summary["partners"]:
        counts = row["counts"] or {}
        cells = [str(counts.get(k, "-")) for k in COUNT_KEYS] + [str(row.get(k, "-")) for k in extra]
        lines.append([row["partner"], row["name"], row["status"], *cells])
    totals = [str(summary["totals"][k]) for k in COUNT_KEYS]
    lines.append(["total", "", "", *totals, *(str(sum(r.get(k) or 0 for r in summary["partners"])) for k in extra)])
    widths = [max(_width(line[i]) for line in lines) for i in range(len(head))]
    return "\n".join(
        "  ".join(cell + " " * (w - _width(cell)) for cell, w in zip(line, widths, strict=True)) for line in lines
    )


def _width(text: str) -> int:
    """Display width: CJK characters take two columns."""
    return sum(2 if ord(ch) > 0x2E80 else 1 for ch in text)
