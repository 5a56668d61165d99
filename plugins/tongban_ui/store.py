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
from collections.abc import Collection, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, TypeVar

from upath import UPath

from tongban.files import SummaryFile, SummaryPartner
from tongban.layout import (
    FIVE_LEVEL,
    GX_RESULT,
    INTERNAL,
    PROVINCES,
    REPORT_JSON,
    REPORTS,
    RUNS,
    SUMMARY,
)
from tongban.report import DELIVERED
from tongban.storage import read_json

T = TypeVar("T")

# Airflow's own run ids (manual__2026-11-28T13:35:01.915496+00:00) and its allowed_run_id_pattern
# characters, minus anything that could name a parent folder.
# Used with fullmatch only ('$' would let a trailing newline through).
RUN_ID = re.compile(r"(?!.*\.\.)[A-Za-z0-9_~:+-][A-Za-z0-9_.~:+-]{0,249}")
DIVISION = re.compile(r"[0-9]{6}")
NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}")  # one file or folder name, never . or ..
MAX_DEPTH = 12
LOCAL = ("file", "local", "")


class NotFound(LookupError):
    """A path that is malformed, outside its area or missing: all answer 404 alike."""


@dataclass(frozen=True)
class RunSummary:
    """One run's summary.json, and when it was written (the run's end)."""

    run_id: str
    finished: float  # POSIX time
    partners: list[SummaryPartner]
    totals: dict[str, int]
    failed: list[str]
    max_critical_rate: float | None = None  # the hold-back threshold (summaries before it was recorded: None)

    def status_count(self, status: str) -> int:
        return sum(1 for p in self.partners if p.status == status)

    def with_status(self, status: str) -> list[SummaryPartner]:
        return [p for p in self.partners if p.status == status]

    @property
    def undelivered(self) -> list[SummaryPartner]:
        """Partners whose report was written but is not delivered (summary.json's ``undelivered``)."""
        return [p for p in self.partners if p.counts and p.delivery not in DELIVERED]


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
    row: SummaryPartner  # that run's summary row: status, counts, report
    trend: list[TrendPoint]  # oldest first
    max_critical_rate: float | None = None  # the threshold of that run


@dataclass(frozen=True)
class TrendPoint:
    run_id: str
    status: str  # ok | held_back | failed
    counts: dict[str, int] | None  # None: failed, no report


def latest_by_partner(runs: Sequence[RunSummary]) -> list[PartnerLatest]:
    """Per partner seen in ``runs`` (newest first), in the order of the newest run that has it."""
    latest: dict[str, PartnerLatest] = {}
    for run in runs:
        for row in run.partners:
            division = row.partner
            if division not in latest:
                latest[division] = PartnerLatest(division, row.name, run.run_id, row, [], run.max_critical_rate)
            point = TrendPoint(run.run_id, row.status, row.counts)
            latest[division].trend.insert(0, point)
    return list(latest.values())


def critical_failure_rate(counts: dict[str, int] | None) -> float | None:
    """Share of the parseable records (fetched - quarantined) that failed a critical check (rejected)."""
    if not counts:
        return None
    parsed = counts.get("fetched", 0) - counts.get("quarantined", 0)
    return counts.get("rejected", 0) / parsed if parsed > 0 else None


class ReportStore:
    """``divisions``/``provinces``: the codes a path may name (the registry's); others are 404 even when a
    folder of that name exists (None: any six digits, for tests of the path rules alone)."""

    def __init__(
        self, root: UPath, divisions: Collection[str] | None = None, provinces: Collection[str] | None = None
    ) -> None:
        self.root = root
        self.divisions = divisions
        self.provinces = provinces

    def path(self, area: str, run_id: str, division: str | None = None, names: Sequence[str] = ()) -> UPath:
        """``root/area/run_id[/division]/names…``, or NotFound when any part is not allowed."""
        if area not in (REPORTS, RUNS) or not RUN_ID.fullmatch(run_id):
            raise NotFound(run_id)
        parts = [run_id]
        if division is not None:
            if not DIVISION.fullmatch(division):
                raise NotFound(division)
            if self.divisions is not None and division not in self.divisions:
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
        with _found(path):
            return path.read_bytes()

    def read_typed(self, path: UPath, file_type: type[T]) -> T:
        """A file of the pipeline's as its ``tongban.files`` type (``storage.read_json``); NotFound when missing."""
        with _found(path):
            return read_json(path, file_type)

    def name(self, path: UPath) -> str:
        """A path of this store as the operator names it: relative to the root (``runs/<run>/<division>/…``)."""
        return posixpath.relpath(path.path, self.root.path)

    def exists(self, path: UPath) -> bool:
        try:
            return path.is_file()
        except OSError:
            return False

    def province_path(self, run_id: str, province: str, names: Sequence[str]) -> UPath:
        """``runs/<run>/provinces/<province>/names…`` (the province check's files), same rules as ``path``."""
        if not DIVISION.fullmatch(province) or (self.provinces is not None and province not in self.provinces):
            raise NotFound(province)
        return self.path(RUNS, run_id, names=[PROVINCES, province, *names])

    def province_results(self, run_id: str) -> dict[str, bool]:
        """Province codes whose 五级N同 check wrote its results in this run, each with whether it stored a GX
        result (only when it had items to judge)."""
        return {
            p: self.exists(self.province_path(run_id, p, [GX_RESULT]))
            for p in sorted(self.provinces or ())
            if self.exists(self.province_path(run_id, p, [FIVE_LEVEL]))
        }

    def library_result(self, run_id: str) -> UPath:
        """The GX result of 沅江's library check of a run (``reports/<run>/internal/``, never delivered)."""
        return self.path(REPORTS, run_id, names=[INTERNAL, GX_RESULT])

    def report(self, run_id: str, division: str) -> dict[str, Any] | None:
        """A partner's report.json of a run, or None when it wrote none."""
        try:
            return dict(json.loads(self.read(self.path(REPORTS, run_id, division, [REPORT_JSON]))))
        except (NotFound, ValueError):
            return None

    def summary(self, run_id: str) -> RunSummary:
        path = self.path(REPORTS, run_id, names=[SUMMARY])
        data = self.read_typed(path, SummaryFile)
        totals = dict(data.totals)
        for row in data.partners:  # summaries written before every count class was totalled
            for key in row.counts or {}:
                if key not in totals:
                    totals[key] = sum((r.counts or {}).get(key, 0) for r in data.partners)
        return RunSummary(
            run_id=run_id,
            finished=path.stat().st_mtime,
            partners=data.partners,
            totals=totals,
            failed=data.failed,
            max_critical_rate=data.max_critical_rate,
        )

    def recent_runs(self, limit: int) -> list[RunSummary]:
        """The ``limit`` most recently finished runs that wrote a summary, newest first."""
        base = self.root / REPORTS
        # object stores' filesystems cache listings per process: the api-server would never see a new run
        base.fs.invalidate_cache()
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


@contextmanager
def _found(path: UPath) -> Iterator[None]:
    """A missing file (or a folder where a file should be) is NotFound, like a path that is not allowed."""
    try:
        yield
    except (FileNotFoundError, IsADirectoryError, NotADirectoryError) as exc:
        raise NotFound(str(path)) from exc


def _inside(path: UPath, base: UPath) -> bool:
    """Whether ``path`` still lies under ``base`` once ``..`` and (locally) symlinks are resolved."""
    if path.protocol in LOCAL:
        real, root = os.path.realpath(path.path), os.path.realpath(base.path)
        return os.path.commonpath([real, root]) == root and real != root
    root = posixpath.normpath(base.path)
    return posixpath.normpath(path.path).startswith(root + "/")
