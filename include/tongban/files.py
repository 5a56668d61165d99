"""The JSON files one stage writes and others read back, as the readers see them (``storage.read_json(path, Type)``).

Each class names the fields its readers use, with their types; a field the file does not have and the class
requires fails the read, naming the file (``storage.read_json``), instead of reading as None further on. Fields the
class does not name stay in the file and are ignored when it is read: the files' JSON is what the writers make it
(``tongban.pipeline``, ``tongban.outbound.stages``, ``tongban.report``). A default marks a field that a file of
that name may lack (a failed pull has no counts; files written before the field was added).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal


@dataclass(frozen=True)
class FetchFile:
    """``fetch.json`` (``pipeline.fetch``): the pull, ``ok`` with its counts or ``failed`` with the error."""

    mode: Literal["full", "incremental"]
    status: Literal["ok", "failed"]
    started_at: str | None = None  # when the pull began (ISO); read by a later run's confirm_removals (guard)
    error: str | None = None  # a failed pull's
    fetched: int | None = None  # distinct records (an ok pull's)
    declared_total: int | None = None  # what the partner said it holds (None: its format does not say)
    future_dated_records: list[dict[str, Any]] = field(default_factory=list)  # dated after the pull started


@dataclass(frozen=True)
class PublishFile:
    """``publish.json`` (``pipeline.publish_partner``): what was sent to the platform and what it answered."""

    dry_run: bool
    accepted: list[dict[str, Any]]  # operations the platform applied: op, task_code, …
    rejected: list[dict[str, Any]]  # operations it refused: op, task_code, reason, name (files before it: none), …
    held_back: bool = False  # the whole partner held back: nothing was published
    removals_held: int = 0  # removals the removal guard held for a person to confirm


@dataclass(frozen=True)
class DeliveryFile:
    """``delivery.json`` (``pipeline.deliver``): the last delivery of the report, and every one before it."""

    status: Literal["delivered", "already_received", "skipped", "failed"]
    deliveries: list[dict[str, Any]] = field(default_factory=list)


@dataclass(frozen=True)
class OutboundFile:
    """``outbound.json`` (``outbound.stages.offer_partner``): our items offered to the partner this run."""

    status: Literal["ok", "failed"]
    error: str | None
    dry_run: bool
    counts: dict[str, int | None]  # outbound.diff.COUNT_KEYS -> number (configured: None when unknown)
    configured_before: int | None  # configured as offered when the run started (None: not read)
    diff: dict[str, Any]  # outbound.diff.OfferDiff.as_dict(): missing, outdated, withdrawn, mode_mismatch, …
    results: list[dict[str, Any]]  # every operation sent and the partner's answer
    not_configured: list[str]  # offered, not (correctly) configured after the run


@dataclass(frozen=True)
class ReportFile:
    """A partner's ``report.json`` (``report.write``, the whole of it: ``report_model.PartnerReport``) as the run
    summary reads it."""

    counts: dict[str, int]  # report_model.Counts
    held_back: bool = False


@dataclass(frozen=True)
class SummaryOutbound:
    """A summary row's ``outbound`` (``outbound.report.summary_outbound``): our items at the partner after the run.
    The counts are ``outbound.diff.COUNT_KEYS`` (None: not run, or, for ``configured``, not read); ``trend``: the
    change of ``configured`` since the previous run (None: nothing to compare with)."""

    status: Literal["ok", "failed", "not_run"]
    offered: int | None = None
    configured: int | None = None
    missing: int | None = None
    outdated: int | None = None
    withdrawn: int | None = None
    mode_mismatch: int | None = None
    sent: int | None = None
    trend: int | None = None
    error: str | None = None
    dry_run: bool = False


@dataclass(frozen=True)
class SummaryPartner:
    """A partner's row of ``summary.json`` (``report.summarise`` writes it; the UI, the next run's summary (its
    outbound trend), ``make run`` and the Celery end-to-end run read it)."""

    partner: str
    name: str = ""
    status: Literal["ok", "held_back", "failed"] = "failed"  # failed: the partner wrote no report
    counts: dict[str, int] | None = None  # report_model.Counts; None: no report
    report: str | None = None  # the path (URL on object storage) of its report.json; None: no report
    delivery: str | None = None  # DeliveryFile.status or not_delivered; None: no report
    stale_since: str | None = None  # failed: when the platform's list was last refreshed from a pull (ISO)
    outbound: SummaryOutbound | None = None  # absent before the outbound side existed
    ours: str = "-"  # outbound.report.ours_cell of ``outbound``: 92/92 +4
    # the hold-back rate (pipeline.hold_back_rate) and its denominator; None: no report, or summaries before them
    critical_rate: float | None = None
    catalogue: int | None = None


@dataclass(frozen=True, kw_only=True)
class SummaryFile:
    """``summary.json`` (``report.summarise``): the run over all partners. The lists name divisions; a default marks
    what summaries written before the field was added lack."""

    run_id: str
    max_critical_rate: float | None = None  # the hold-back threshold (summaries before it was recorded: None)
    partners: list[SummaryPartner]
    totals: dict[str, int] = field(default_factory=dict)  # summaries before every count class: some missing
    failed: list[str] = field(default_factory=list)  # no report written
    held_back: list[str] = field(default_factory=list)  # held back whole (critical-failure rate over the limit)
    removals_held: list[str] = field(default_factory=list)  # removals the removal guard held for confirmation
    undelivered: list[str] = field(default_factory=list)  # a report written and not delivered
    stale: dict[str, str | None] = field(default_factory=dict)  # failed partner -> its stale_since
    outbound_failed: list[str] = field(default_factory=list)  # our items not brought in line there
    outbound_totals: dict[str, int] = field(default_factory=dict)  # outbound.diff.COUNT_KEYS summed over partners
