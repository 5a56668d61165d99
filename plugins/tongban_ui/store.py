"""Read-only access to what the pipeline wrote under the object-store root, with strict path checks.

Every path the web app opens is built here from a run id, a division code and names that each match a
strict pattern, and must still lie under its area (``reports/`` or ``runs/``) once resolved, so no
request can reach a file outside them (``..``, ``%2e%2e``, symlinks).
"""

from __future__ import annotations

import json
import os
import posixpath
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from upath import UPath

# File and folder names as the pipeline writes them. tongban.report is already imported by the pages
# (COUNT_LABELS) and tongban.storage imports upath only; the run folder's names stay spelled here, as
# tongban.pipeline (their home) imports the HTTP client, the ingest and the item store (SQLAlchemy).
from tongban.report import REPORT_HTML as REPORT_HTML  # re-exported for the app
from tongban.report import REPORT_JSON as REPORT_JSON
from tongban.report import SUMMARY_JSON as SUMMARY
from tongban.storage import REPORTS, RUNS

# Airflow's own run ids (manual__2026-11-28T13:35:01.915496+00:00) and its allowed_run_id_pattern
# characters, minus anything that could name a parent folder.
# Used with fullmatch only ('$' would let a trailing newline through).
RUN_ID = re.compile(r"(?!.*\.\.)[A-Za-z0-9_~:+-][A-Za-z0-9_.~:+-]{0,249}")
DIVISION = re.compile(r"[0-9]{6}")
NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}")  # one file or folder name, never . or ..
MAX_DEPTH = 12
LOCAL = ("file", "local", "")

GX_RESULT, DATA_DOCS = "gx_validation_result.json", "data_docs"  # tongban.pipeline.GX_RESULT, .DATA_DOCS


class NotFound(LookupError):
    """A path that is malformed, outside its area or missing: all answer 404 alike."""


@dataclass(frozen=True)
class RunSummary:
    """One run's summary.json, and when it was written (the run's end)."""

    run_id: str
    finished: float  # POSIX time
    partners: list[dict[str, Any]]
    totals: dict[str, int]
    failed: list[str]


@dataclass(frozen=True)
class GxStats:
    evaluated: int
    successful: int
    success: bool


@dataclass(frozen=True)
class PartnerLatest:
    """A partner's newest run among the recent ones, and its trend over all of them."""

    division: str
    name: str
    run_id: str
    row: dict[str, Any]  # that run's summary row: status, counts, report
    trend: list[tuple[str, dict[str, int] | None]]  # oldest first: (run id, counts; None = failed)


def latest_by_partner(runs: Sequence[RunSummary]) -> list[PartnerLatest]:
    """Per partner seen in ``runs`` (newest first), in the order of the newest run that has it."""
    latest: dict[str, PartnerLatest] = {}
    for run in runs:
        for row in run.partners:
            division = str(row.get("partner"))
            if division not in latest:
                latest[division] = PartnerLatest(division, str(row.get("name", "")), run.run_id, row, [])
            latest[division].trend.insert(0, (run.run_id, row.get("counts")))
    return list(latest.values())


def critical_failure_rate(counts: dict[str, int] | None) -> float | None:
    """Share of the parseable records (fetched - quarantined) that failed a critical check (rejected)."""
    if not counts:
        return None
    parsed = counts.get("fetched", 0) - counts.get("quarantined", 0)
    return counts.get("rejected", 0) / parsed if parsed > 0 else None


class ReportStore:
    def __init__(self, root: UPath) -> None:
        self.root = root

    def path(self, area: str, run_id: str, division: str | None = None, names: Sequence[str] = ()) -> UPath:
        """``root/area/run_id[/division]/names…``, or NotFound when any part is not allowed."""
        if area not in (REPORTS, RUNS) or not RUN_ID.fullmatch(run_id):
            raise NotFound(run_id)
        parts = [run_id]
        if division is not None:
            if not DIVISION.fullmatch(division):
                raise NotFound(division)
            parts.append(division)
        if len(names) > MAX_DEPTH or not all(NAME.fullmatch(n) for n in names):
            raise NotFound("/".join(names))
        base = self.root / area
        path = base.joinpath(*parts, *names)
        if not _inside(path, base):
            raise NotFound(str(path))
        return path

    def read(self, path: UPath) -> bytes:
        try:
            return path.read_bytes()
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError) as exc:
            raise NotFound(str(path)) from exc

    def exists(self, path: UPath) -> bool:
        try:
            return path.is_file()
        except OSError:
            return False

    def summary(self, run_id: str) -> RunSummary:
        path = self.path(REPORTS, run_id, names=[SUMMARY])
        data = json.loads(self.read(path))
        return RunSummary(
            run_id=run_id,
            finished=path.stat().st_mtime,
            partners=list(data.get("partners", [])),
            totals=dict(data.get("totals", {})),
            failed=list(data.get("failed", [])),
        )

    def recent_runs(self, limit: int) -> list[RunSummary]:
        """The ``limit`` most recently finished runs that wrote a summary, newest first."""
        base = self.root / REPORTS
        if not base.exists():
            return []
        summaries = [p for p in base.glob(f"*/{SUMMARY}") if RUN_ID.fullmatch(p.parent.name)]
        newest = sorted(((p.stat().st_mtime, p.parent.name) for p in summaries), reverse=True)[:limit]
        return [self.summary(run_id) for _, run_id in newest]

    def gx_stats(self, run_id: str, division: str) -> GxStats | None:
        try:
            result = json.loads(self.read(self.path(RUNS, run_id, division, [GX_RESULT])))
        except (NotFound, ValueError):
            return None
        stats = result.get("statistics") or {}
        return GxStats(
            evaluated=int(stats.get("evaluated_expectations", 0)),
            successful=int(stats.get("successful_expectations", 0)),
            success=bool(result.get("success")),
        )

    def has_data_docs(self, run_id: str, division: str) -> bool:
        try:
            return self.exists(self.path(RUNS, run_id, division, [DATA_DOCS, "index.html"]))
        except NotFound:
            return False


def _inside(path: UPath, base: UPath) -> bool:
    """Whether ``path`` still lies under ``base`` once ``..`` and (locally) symlinks are resolved."""
    if path.protocol in LOCAL:
        real, root = os.path.realpath(path.path), os.path.realpath(base.path)
        return os.path.commonpath([real, root]) == root and real != root
    root = posixpath.normpath(base.path)
    return posixpath.normpath(path.path).startswith(root + "/")
