"""The partner report as typed data: one model per run and partner, from which all renderings come.

``report.json`` is :meth:`PartnerReport.model_dump_json`; ``report.html`` (a Jinja2 template) and
``report.xlsx`` (openpyxl) are rendered from the same model by :mod:`tongban.report`, so the three
always say the same. Field names are the JSON keys partners and our own readers use.

``counts`` is computed from the lists (and the number of records fetched), so it can never disagree
with them. Reading a report back (:meth:`PartnerReport.load`) takes ``fetched`` from ``counts``.

The records a stage writes and the report shows as they are (a finding, a changed element, a problem
of a quarantined record, a duplicate, a normalised value) are defined once, by the stage that makes
them: ``Finding`` (``tongban.validation.outcome``), ``ElementChange`` (``tongban.reconcile``),
``Problem``, ``Duplicate`` and ``NormalisedValue`` (``tongban.normalise``); they are dataclasses, which
these models take as fields.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, JsonValue, computed_field, model_validator

from tongban.normalise import Duplicate, NormalisedValue, Problem
from tongban.outbound.report import OutboundSection
from tongban.reconcile import ElementChange
from tongban.validation.outcome import Finding


class _Part(BaseModel):
    # extra="ignore": a report written by a newer version still reads; frozen: a report is a record
    model_config = ConfigDict(frozen=True, extra="ignore")


class Brief(_Part):
    """An item as the report names it."""

    task_code: str = Field(description="实施编码")
    name: str = Field(description="事项名称")
    level: str = Field(description="行使层级 (canonical code)")
    level_label: str = Field(description="行使层级 (Chinese label)")


class Flagged(Brief):
    """A rejected or warned item with every finding on it."""

    findings: list[Finding]


class ChangedItem(_Part):
    task_code: str
    name: str
    changes: list[ElementChange]


class RecodedItem(_Part):
    """An item that now comes under another 实施编码 (old_code -> task_code)."""

    old_code: str
    task_code: str
    name: str
    changes: list[ElementChange]


class QuarantinedRecord(_Part):
    """A record that could not be parsed or mapped, with where it was in the pull."""

    position: str = Field(description="第N页第M条")
    task_code: str | None = None
    name: str | None = Field(default=None, description="事项名称 as the partner sent it (None: none sent)")
    problems: list[Problem]


class UnexpectedField(_Part):
    """A field the partner's answers carry that its agreed wire format does not declare (ignored)."""

    field: str
    pages: list[int] = Field(description="pages of the pull that carried it")
    reason: str


class PublishedOp(_Part):
    task_code: str
    op: str = Field(description="upsert or delete")


class PlatformRejection(_Part):
    """An operation the provincial platform refused, with its reason."""

    task_code: str | None = None
    name: str = Field("", description="事项名称 of the item sent (publish files of earlier versions: empty)")
    op: str
    status: str = "rejected"
    reason: str | None = None


class OutstandingItem(_Part):
    """待整改: an item kept off the platform by a problem the partner has not fixed yet, from whichever run
    found it (incremental nights included, which do not carry it again)."""

    task_code: str = Field(description="实施编码")
    name: str = Field(description="事项名称 ('' when the record could not be read)")
    kind: str = Field(description="rejected | quarantined | platform_rejected")
    kind_label: str = Field(description="退回 / 隔离 / 平台拒收")
    reason: str = Field(description="Chinese, as the partner was told when it was last found")
    first_run: str = Field(description="the run that first found it")
    first_seen: str = Field(description="when (ISO 8601, UTC)")
    nights: int = Field(ge=1, description="runs of the partner that found it still open, this one included")


class ResolvedItem(_Part):
    """An item of the 待整改 list that this run resolved: published as delivered, or withdrawn."""

    task_code: str
    name: str
    resolution: str = Field(description="fixed | withdrawn")
    resolution_label: str
    first_run: str
    nights: int


class HoldBack(_Part):
    """Why the whole list was held back: the critical-failure rate against the limit, and what to do."""

    failing: int = Field(description="records rejected, or unreadable without a 实施编码")
    records: int = Field(description="records of the pull")
    catalogue: int | None = Field(
        default=None,
        description="the rate's denominator: a full pull's records; after an incremental pull, its records and "
        "the published items it did not carry (None: reports before it was recorded, the rate was over records)",
    )
    rate: float
    limit: float = Field(description="TONGBAN_MAX_CRITICAL_RATE")
    text: str = Field(description="the notice in Chinese, with the numbers")


class RemovalHold(_Part):
    """Removals the removal guard held for a person to confirm (tongban.guard), or a confirmation applied."""

    published: int = Field(description="the partner's items on the platform before the run")
    removals: int = Field(description="removals the pull would have made (not confirmed)")
    rate: float
    limit: float = Field(description="TONGBAN_MAX_REMOVAL_RATE")
    size: int | None = Field(default=None, description="catalogue size of this pull (declared total, else records)")
    previous_size: int | None = Field(default=None, description="the same of the last complete full pull")
    reasons: list[str] = []
    held: list[Brief] = Field(default=[], description="items whose removal is held; the platform keeps them")
    confirmed_run: str | None = Field(default=None, description="the run whose held removals were confirmed")
    confirmed: list[str] = Field(default=[], description="实施编码 removed on that confirmation")
    text: str | None = Field(default=None, description="the notice in Chinese")


class FutureDated(_Part):
    """A record whose update time lies after the pull: published if valid, never taken as the watermark."""

    position: str
    task_code: JsonValue = None
    updated_at: str
    reason: str


class EarlierChange(_Part):
    """A change an earlier run published that no report delivered to the partner has told of yet (that run
    stopped before its report was delivered): told in the next report that is delivered."""

    run_id: str = Field(description="the run that published it")
    task_code: str
    name: str
    kind: str = Field(description="added, changed, removed or recoded")
    kind_label: str = Field(description="新增, 变更, 删除 or 编码变更")
    element: str = ""
    label: str = Field(default="", description="the changed element's Chinese label")
    old: JsonValue = None
    new: JsonValue = None


class Counts(_Part):
    """How many of each: the 汇总 of every rendering (keys in the order shown)."""

    fetched: int = Field(description="distinct records fetched (duplicates counted once)")
    quarantined: int
    rejected: int
    added: int
    changed: int
    removed: int
    unchanged: int
    published: int
    warnings: int
    held: int
    recoded: int
    platform_rejected: int
    duplicates: int
    unexpected_fields: int
    outstanding: int = 0
    resolved: int = 0
    held_with_partner: int = 0
    removals_held: int = 0
    future_dated: int = 0
    normalised: int = 0
    earlier_unreported: int = 0


class PartnerReport(_Part):
    """Everything a partner is told about one run."""

    partner: str = Field(description="division code")
    partner_name: str
    run_id: str
    dry_run: bool = False
    full_pull: bool = True
    held_back: bool = Field(default=False, description="the whole list held back: too many critical failures")
    fetched: int = Field(ge=0, exclude=True)  # shown as counts.fetched
    quarantined: list[QuarantinedRecord] = []
    rejected: list[Flagged] = []
    warnings: list[Flagged] = []
    added: list[Brief] = []
    changed: list[ChangedItem] = []
    removed: list[Brief] = []
    recoded: list[RecodedItem] = []
    unchanged: list[str] = Field(default=[], description="实施编码 of items the platform already held as delivered")
    held: list[str] = Field(default=[], description="实施编码 whose platform version is kept (rejected or quarantined)")
    published: list[PublishedOp] = []
    platform_rejected: list[PlatformRejection] = []
    duplicates: list[Duplicate] = []
    unexpected_fields: list[UnexpectedField] = []
    outstanding: list[OutstandingItem] = Field(default=[], description="待整改 after this run, oldest first")
    resolved: list[ResolvedItem] = Field(default=[], description="待整改 items this run resolved")
    hold_back: HoldBack | None = Field(default=None, description="set when the whole list was held back")
    held_with_partner: list[Brief] = Field(default=[], description="items that passed but were held back with it")
    removal_guard: RemovalHold | None = None
    future_dated: list[FutureDated] = []
    normalised: list[NormalisedValue] = Field(default=[], description="values with full-width or invisible characters")
    outbound: OutboundSection | None = Field(
        default=None, description="沅江事项在贵地配置情况: our items offered to the partner (None: not this run)"
    )
    earlier: list[EarlierChange] = Field(
        default=[], description="changes published by earlier runs whose reports were never delivered"
    )

    @model_validator(mode="before")
    @classmethod
    def _fetched_from_counts(cls, data: Any) -> Any:
        """A report read back from JSON has ``fetched`` in ``counts`` only."""
        if isinstance(data, dict) and "fetched" not in data and isinstance(data.get("counts"), dict):
            return {**data, "fetched": data["counts"].get("fetched")}
        return data

    @computed_field  # type: ignore[prop-decorator]
    @property
    def counts(self) -> Counts:
        return Counts(
            fetched=self.fetched,
            quarantined=len(self.quarantined),
            rejected=len(self.rejected),
            added=len(self.added),
            changed=len(self.changed),
            removed=len(self.removed),
            unchanged=len(self.unchanged),
            published=len(self.published),
            warnings=len(self.warnings),
            held=len(self.held),
            recoded=len(self.recoded),
            platform_rejected=len(self.platform_rejected),
            duplicates=len(self.duplicates),
            unexpected_fields=len(self.unexpected_fields),
            outstanding=len(self.outstanding),
            resolved=len(self.resolved),
            held_with_partner=len(self.held_with_partner),
            removals_held=len(self.removal_guard.held) if self.removal_guard else 0,
            future_dated=len(self.future_dated),
            normalised=len(self.normalised),
            earlier_unreported=len(self.earlier),
        )

    def to_json(self) -> bytes:
        """The bytes of ``report.json`` (UTF-8, Chinese as is)."""
        return self.model_dump_json(indent=1).encode()

    @classmethod
    def load(cls, data: bytes | str) -> PartnerReport:
        return cls.model_validate_json(data)
