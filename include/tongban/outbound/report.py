"""What people see of the outbound direction.

- Each partner's report gains the section and sheet 「沅江事项在贵地配置情况」 (:class:`OutboundSection`,
  built from the run's ``outbound.json`` of that partner): what we offer it, what it had configured
  (missing, outdated with old and new values, still configured after withdrawal, mode mismatches), what
  was sent and what it holds now, read back from it.
- The internal report of 沅江's own library check (``reports/<run>/internal/library_check.{json,html}``),
  for 沅江's data engineers only: it is never delivered to a partner.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from pydantic import BaseModel, ConfigDict, Field
from upath import UPath

from tongban.files import OutboundFile, SummaryFile, SummaryOutbound
from tongban.layout import LIBRARY_CHECK, LIBRARY_CHECK_HTML, SUMMARY
from tongban.model import LABELS, element_text
from tongban.reconcile import ElementChange
from tongban.registry import label
from tongban.storage import write_json

SECTION_TITLE = "沅江事项在贵地配置情况"
STATUS_LABELS = {"ok": "已完成", "failed": "未完成（将于下次同步重试）"}


def modes_label(codes: list[str]) -> str:
    return "、".join(label("handling_mode", c) for c in codes) or "（无）"


class _Part(BaseModel):
    model_config = ConfigDict(frozen=True, extra="ignore")


class OfferedItem(_Part):
    task_code: str
    name: str
    modes: list[str] = Field(description="handling modes (canonical codes)")
    modes_label: str


class OutdatedItem(_Part):
    task_code: str
    name: str
    changes: list[ElementChange]  # old: as configured at the partner, new: as we offer it


class ModeMismatch(_Part):
    task_code: str
    name: str
    offered: str = Field(description="modes we offer (labels)")
    configured: str = Field(description="modes configured at the partner (labels)")
    extra: str = Field(description="configured but not offered")
    lacking: str = Field(description="offered but not configured")


class SentOp(_Part):
    task_code: str | None
    op: str
    status: str
    reason: str | None = None


class OutboundCounts(_Part):
    offered: int
    configured: int | None = Field(
        description="offered items the partner holds as offered, read back after the run (None: not readable)"
    )
    missing: int
    outdated: int
    withdrawn: int
    mode_mismatch: int
    sent: int


class OutboundSection(_Part):
    """「沅江事项在贵地配置情况」: our items offered to the partner, and what it has configured of them."""

    status: str = Field(description="ok, or failed (the partner's offer endpoint; retried next run)")
    error: str | None = None
    counts: OutboundCounts
    missing: list[OfferedItem] = []
    outdated: list[OutdatedItem] = []
    withdrawn: list[OfferedItem] = Field(default=[], description="still configured after we withdrew them")
    mode_mismatch: list[ModeMismatch] = []
    sent: list[SentOp] = []
    not_configured: list[str] = Field(default=[], description="offered items not (correctly) configured after the run")


def section(outbound: OutboundFile) -> OutboundSection:
    """The report section from a partner's ``outbound.json`` (``tongban.outbound.stages``)."""
    from tongban.outbound.wire import MODES

    diff = outbound.diff

    def item(record: Mapping[str, Any]) -> OfferedItem:
        modes = list(record.get(MODES) or [])
        return OfferedItem(
            task_code=record["task_code"], name=record["name"], modes=modes, modes_label=modes_label(modes)
        )

    return OutboundSection(
        status=outbound.status,
        error=outbound.error,
        counts=OutboundCounts(**outbound.counts),
        missing=[item(r) for r in diff.get("missing", [])],
        outdated=[
            OutdatedItem(task_code=c["task_code"], name=c["name"], changes=[ElementChange(**e) for e in c["changes"]])
            for c in diff.get("outdated", [])
        ],
        withdrawn=[item(r) for r in diff.get("withdrawn", [])],
        mode_mismatch=[
            ModeMismatch(
                task_code=m["task_code"],
                name=m["name"],
                offered=modes_label(m["offered"]),
                configured=modes_label(m["configured"]),
                extra=modes_label(m["extra"]),
                lacking=modes_label(m["lacking"]),
            )
            for m in diff.get("mode_mismatch", [])
        ],
        sent=[SentOp(**{k: r.get(k) for k in ("task_code", "op", "status", "reason")}) for r in outbound.results],
        not_configured=outbound.not_configured,
    )


OP_LABELS = {"upsert": "配置或更新", "delete": "撤销"}
SENT_LABELS = {"accepted": "已接受", "rejected": "被拒绝"}
# the counts of the section as its HTML table heads them (OutboundCounts, in its order)
COUNT_LABELS = {
    "offered": "提供",
    "configured": "已正确配置",
    "missing": "未配置",
    "outdated": "版本落后",
    "withdrawn": "已撤销仍在配置",
    "mode_mismatch": "办理模式不一致",
    "sent": "本次发送",
}


def sheet_rows(s: OutboundSection) -> list[list[Any]]:
    """The rows of the xlsx sheet 「沅江事项在贵地配置情况」 (headings: :data:`SHEET_HEADINGS`)."""
    rows: list[list[Any]] = [
        ["汇总", "", "", "状态", STATUS_LABELS.get(s.status, s.status), s.error or ""],
        *[["汇总", "", "", COUNT_LABELS[key], value, ""] for key, value in s.counts.model_dump().items()],
    ]
    rows += [["未配置", i.task_code, i.name, "办理模式", "", i.modes_label] for i in s.missing]
    rows += [
        ["版本落后", c.task_code, c.name, e.label, element_text(e.element, e.old), element_text(e.element, e.new)]
        for c in s.outdated
        for e in c.changes
    ]
    rows += [["已撤销仍在配置", i.task_code, i.name, "办理模式", i.modes_label, ""] for i in s.withdrawn]
    rows += [["办理模式不一致", m.task_code, m.name, "办理模式", m.configured, m.offered] for m in s.mode_mismatch]
    rows += [
        [
            "本次发送",
            o.task_code or "",
            "",
            OP_LABELS.get(o.op, o.op),
            SENT_LABELS.get(o.status, o.status),
            o.reason or "",
        ]
        for o in s.sent
    ]
    return rows


SHEET_HEADINGS = ["类别", "实施编码", "事项名称", "要素", "贵地现值", "沅江提供值"]


def write_internal_report(check: Mapping[str, Any], out: UPath) -> dict[str, str]:
    """The library check for 沅江's data engineers: JSON and a small HTML page (Chinese)."""
    from tongban.report import templates

    out.mkdir(parents=True, exist_ok=True)
    json_path = write_json(out / LIBRARY_CHECK, dict(check))
    html = templates().get_template("library_check.html.j2").render(c=check, labels=LABELS)
    (out / LIBRARY_CHECK_HTML).write_bytes(html.encode())
    return {"json": str(json_path), "html": str(out / LIBRARY_CHECK_HTML)}


def _previous_summary(reports_root: UPath, run_id: str) -> SummaryFile | None:
    """The summary of the run that finished last before this one (by its summary file's time), if any."""
    from tongban.storage import read_json

    found = [p for p in reports_root.glob(f"*/{SUMMARY}") if p.parent.name != run_id]
    if not found:
        return None
    return read_json(max(found, key=lambda p: (p.stat().st_mtime, p.parent.name)), SummaryFile)


def summary_outbound(
    root: UPath, reports_root: UPath, run_id: str, divisions: Sequence[str]
) -> dict[str, SummaryOutbound]:
    """Each partner's ``outbound`` of a run summary: status, error, the counts of ``COUNT_KEYS``, ``trend``
    (configured now minus at the end of the previous run, or, without one, minus as found at the start of this
    run); status ``not_run`` without an offer this run."""
    from tongban.outbound.diff import COUNT_KEYS
    from tongban.outbound.stages import outbound_of

    previous = _previous_summary(reports_root, run_id)
    before = {
        r.partner: r.outbound.configured
        for r in (previous.partners if previous else [])
        if r.outbound and r.outbound.configured is not None
    }
    found_by_partner: dict[str, SummaryOutbound] = {}
    for division in divisions:
        found = outbound_of(root, run_id, division)
        if found is None:
            found_by_partner[division] = SummaryOutbound(status="not_run")
            continue
        counts = {k: found.counts[k] for k in COUNT_KEYS}
        was = before.get(division, found.configured_before)
        configured = counts["configured"]
        trend = configured - was if was is not None and configured is not None else None
        found_by_partner[division] = SummaryOutbound(
            status=found.status, error=found.error, trend=trend, dry_run=found.dry_run, **counts
        )
    return found_by_partner


def ours_cell(outbound: SummaryOutbound | None) -> str:
    """``92/92 +4``: our items the partner holds as offered, of those offered to it, and the change since the
    previous run; ``-`` when the offer did not run, ``!`` after the numbers when it failed."""
    if not outbound or outbound.configured is None:
        return "-"
    shown = f"{outbound.configured}/{outbound.offered}"
    if outbound.trend is not None:
        shown += f" {outbound.trend:+d}" if outbound.trend else " ±0"
    return shown + ("" if outbound.status == "ok" else " !")
