"""What a validation run hands back: findings per row, the rows to reject, a summary, GX's result.

Plain dataclasses with no pandas or GX imports, so the Airflow side can import them cheaply.
:class:`Finding` and :class:`FlaggedRecord` are also the records of the validate and province stages'
files (``rejected.jsonl``, ``warnings.jsonl`` and the partner's own ``own_*`` copies: msgspec writes and
reads dataclasses as they are) and the findings of the partner's report (``tongban.report_model``,
whose pydantic models take them as fields).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

Severity = Literal["critical", "warning"]
SEVERITIES: tuple[Severity, ...] = ("critical", "warning")


@dataclass(frozen=True, kw_only=True)
class Finding:
    """One failed check on one input row.

    ``row`` is the position in the validated ``records`` list (None in a partner's files for a finding of
    the province check, whose rows index the province's frame); ``element`` an element or attribute key of
    :mod:`tongban.model` (``LABELS``); ``expectation`` the suite's stable check name (``meta.check`` in
    ``expectations/items.json``); ``severity`` critical (rejected) or warning (published, to check);
    ``message`` Chinese text for the partner, naming the element and the offending value. ``label`` (the
    element's Chinese label) and ``fields`` (its fields as the partner's format names them) are filled in
    for the partner's report (``tongban.report``).
    """

    row: int | None
    task_code: str
    element: str
    label: str = ""
    fields: str = ""
    expectation: str
    severity: Severity
    message: str


@dataclass(frozen=True)
class FlaggedRecord:
    """A record with every finding on it: one line of ``rejected.jsonl`` or ``warnings.jsonl``."""

    record: dict[str, Any]
    findings: list[Finding]


@dataclass
class ValidationOutcome:
    rows: int
    findings: list[Finding]
    gx_result: dict[str, Any] = field(repr=False)
    rejected_rows: set[int] = field(init=False)

    def __post_init__(self) -> None:
        self.rejected_rows = {f.row for f in self.findings if f.severity == "critical" and f.row is not None}

    def split(
        self, records: Sequence[dict[str, Any]]
    ) -> tuple[list[dict[str, Any]], list[FlaggedRecord], list[FlaggedRecord]]:
        """``records``, the first rows validated (rows after them, context judged in earlier runs, are left out), as
        accepted, rejected (a critical finding) and warned (accepted with warnings), each flagged record with every
        finding on it."""
        by_row: dict[int, list[Finding]] = {}
        for finding in self.findings:
            if finding.row is not None and finding.row < len(records):
                by_row.setdefault(finding.row, []).append(finding)
        accepted: list[dict[str, Any]] = []
        rejected: list[FlaggedRecord] = []
        warned: list[FlaggedRecord] = []
        for row, record in enumerate(records):
            findings = by_row.get(row, [])
            if row in self.rejected_rows:
                rejected.append(FlaggedRecord(record, findings))
            else:
                accepted.append(record)
                if findings:
                    warned.append(FlaggedRecord(record, findings))
        return accepted, rejected, warned

    @property
    def success(self) -> bool:
        """No critical finding (warnings do not block publishing)."""
        return not self.rejected_rows

    def summary(self) -> dict[str, Any]:
        """A small JSON-safe digest for logs, XCom and the run report."""
        per_severity = Counter(f.severity for f in self.findings)
        per_check: dict[str, dict[str, Any]] = {}
        for f in self.findings:
            entry = per_check.setdefault(f.expectation, {"severity": f.severity, "elements": set(), "rows": set()})
            entry["elements"].add(f.element)
            entry["rows"].add(f.row)
        stats = self.gx_result.get("statistics", {})
        return {
            "success": self.success,
            "gx_success": bool(self.gx_result.get("success", False)),
            "rows": self.rows,
            "rejected_rows": len(self.rejected_rows),
            "critical_rate": round(len(self.rejected_rows) / self.rows, 6) if self.rows else 0.0,
            "findings": {s: per_severity.get(s, 0) for s in SEVERITIES},
            "failures": {
                check: {"severity": e["severity"], "elements": sorted(e["elements"]), "rows": len(e["rows"])}
                for check, e in sorted(per_check.items())
            },
            "expectations": {
                "evaluated": stats.get("evaluated_expectations"),
                "unsuccessful": stats.get("unsuccessful_expectations"),
            },
        }
