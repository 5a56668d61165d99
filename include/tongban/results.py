"""What each stage hands the next: the typed result of every task of the nightly sync, in one place.

Every stage (``tongban.pipeline``, ``tongban.province``, ``tongban.outbound.stages``, ``tongban.report``)
returns one of these small models; the DAG's tasks return them as they are, and Airflow keeps them in
XCom (its serde stores a pydantic model as ``model_dump(mode="json")`` under the class name, the UI's
XCom tab shows it as ``Fetched@version=1(partner='440100', mode='full', …)``, and the next task gets the
model back; the DAG allows these classes for deserialisation). Where a stage also writes the same data
to its run folder (``validation.json``, ``province_check.json``), the file is that model's JSON.

They are facts about a finished stage: frozen, and no field the model does not name (``extra="forbid"``:
a misspelt key fails where it is made, not in the task that reads it). Counts are numbers of records;
a division is the partner's six-digit 行政区划代码. Imports nothing but pydantic and the validation stage's
plain dataclasses: the DAG file imports this module at parse time.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, model_validator

from tongban.validation.outcome import Finding


class _Result(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


# -- partner.settle -------------------------------------------------------------------------------------------


class Settled(_Result):
    """The run's claim on the partner's publish sequence and what it settled of earlier runs' ledger rows
    (``pipeline.settle_partner``; the full account is ``settle.json``)."""

    partner: str
    sequence: int  # this run's publish sequence for the partner (a newer run's is higher: this one is stale)
    settled: dict[str, int]  # outcome (acked, unapplied, unsent) -> batches of earlier runs closed so
    drift: int  # 实施编码 on which the item store and the platform still differ after settling (should be 0)


class SettledBatch(_Result):
    """One ledger row an earlier run left unsettled, and how this run closed it."""

    key: str  # the batch's idempotency key
    run_id: str  # the run that planned it
    batch_no: int
    was: Literal["pending", "sent"]
    now: Literal["acked", "unapplied", "unsent"]
    applied: int  # its operations found applied on the platform (and applied to the item store)


class Settlement(_Result):
    """``settle.json``: everything ``publish.settle`` found and did for the partner at the start of a run."""

    partner: str
    run_id: str
    sequence: int
    settled: list[SettledBatch]
    drift: dict[str, list[str]]  # only_on_platform, only_in_store, different -> 实施编码 (empty: none)


# -- partner.fetch, partner.normalise -------------------------------------------------------------------------


class Fetched(_Result):
    """One pull of the partner's catalogue (``pipeline.fetch``); ``fetch.json`` keeps it with its times and
    watermark. ``mode``/``since``: full or incremental, and from when (``tongban.watermark.plan``)."""

    partner: str
    mode: Literal["full", "incremental"]
    since: str | None  # ISO time an incremental pull starts from; None for a full pull
    pages: int
    requests: int  # every request, retries included
    fetched: int  # distinct records
    declared_total: int | None  # what the partner said it holds (None: its format does not say)
    duplicates: int
    unexpected_fields: list[str]  # field names the partner sent that its format does not map (ignored)
    future_dated: int  # records dated after the pull started (left out of the watermark)


class Normalised(_Result):
    """The pull mapped onto canonical items (``pipeline.normalise``): ``items.jsonl`` and the quarantine."""

    partner: str
    items: int
    quarantined: int  # records that could not be parsed or mapped
    duplicates: int
    normalised: int  # code values that arrived with full-width or invisible characters


# -- partner.validate, province_five_level --------------------------------------------------------------------


def _catalogue_of_records(data: Any) -> Any:
    """A result written before ``catalogue`` was recorded counted the rate over the pull's ``records``."""
    if isinstance(data, dict) and "catalogue" not in data and "records" in data:
        return {**data, "catalogue": data["records"]}
    return data


class HoldBackRate(_Result):
    """The critical-failure rate of a pull and whether it holds the whole partner back this run
    (``pipeline.hold_back_rate``): ``failing`` records (rejected, or unreadable without a 实施编码) of the
    partner's ``catalogue`` (see ``Validated``), against ``TONGBAN_MAX_CRITICAL_RATE``."""

    failing: int
    critical_rate: float
    max_critical_rate: float
    held_back: bool


class Validated(_Result):
    """The partner's own validation (``pipeline.validate``; the GX suite ``expectations/items.json``), also
    written as ``validation.json``. The first group is the GX outcome's digest
    (``ValidationOutcome.summary``); then what the stage made of it, and the hold-back rate."""

    partner: str
    success: bool
    gx_success: bool
    rows: int  # rows validated: the pull's records plus the published context of an incremental pull
    rejected_rows: int
    findings: dict[str, int]  # severity -> findings
    failures: dict[str, dict[str, Any]]  # expectation -> severity, elements, rows
    expectations: dict[str, int | None]  # evaluated, unsuccessful
    context_rows: int  # published items validated beside an incremental pull (never judged again)
    accepted: int
    rejected: int
    records: int  # records the pull delivered (items and quarantined)
    # the hold-back rate's denominator, the partner's catalogue after the pull: a full pull's records; an
    # incremental pull's records plus the published items it did not carry (results before it: records)
    catalogue: int
    unidentified: int  # quarantined records without a 实施编码
    failing: int
    critical_rate: float
    max_critical_rate: float
    held_back: bool

    _catalogue = model_validator(mode="before")(_catalogue_of_records)


class ProvinceCheck(_Result):
    """The province check's findings on one validated partner (``province.apply_findings``), written as
    ``province_check.json``: the rate is counted again with the province's rejections, which can hold the
    partner back; ``by_code`` holds every finding per 实施编码."""

    partner: str
    validated_held_back: bool  # held back by its own validation already
    findings: int
    rejected_codes: list[str]  # accepted by the partner's own checks, rejected by the province's
    warned_codes: list[str]
    rejected: int
    records: int
    catalogue: int  # the rate's denominator (Validated.catalogue; files before it: records)
    failing: int
    critical_rate: float
    max_critical_rate: float
    held_back: bool
    by_code: dict[str, list[Finding]]

    _catalogue = model_validator(mode="before")(_catalogue_of_records)


class ProvinceChecked(_Result):
    """What ``province_five_level`` hands each planned partner's publishing group (``province.check_run``).
    A partner whose validation did not succeed this run has ``validated`` false and nothing else: its
    publishing tasks skip, its offer of our items still runs."""

    partner: str
    province: str  # province code (六位, ending 0000)
    validated: bool
    province_rejected: int | None = None
    province_warned: int | None = None
    critical_rate: float | None = None
    held_back: bool | None = None
    compared: int | None = None  # its items in the province's shared 基本编码


# -- partner_publish.reconcile, publish ------------------------------------------------------------------------


class Reconciled(_Result):
    """The accepted items against the platform's list (``pipeline.reconcile_partner``); the changes
    themselves are ``reconciliation.json`` (``tongban.reconcile.Reconciliation``)."""

    partner: str
    platform_before: int  # items the platform held for the partner before the run
    full: bool  # a full pull (one that can remove items)
    added: int
    changed: int
    removed: int
    unchanged: int
    held: int  # 实施编码 whose platform version is kept (rejected or quarantined this run)
    recoded: int
    held_back: bool  # the whole partner held back: nothing is published
    removals_held: int  # removals the removal guard held for a person to confirm


class Published(_Result):
    """The changes sent to the platform (``pipeline.publish_partner``; batches in ``publish.json``)."""

    partner: str
    published: int  # operations the platform accepted
    platform_rejected: int


# -- outbound_library, partner_publish.offer --------------------------------------------------------------------


class LibraryChecked(_Result):
    """沅江's own library read from the platform and validated (``outbound.stages.library``);
    ``library_check.json`` adds every flagged item."""

    run_id: str
    home: str  # 沅江's division
    home_name: str
    library: int  # items in the library
    valid: int
    rejected: int
    offered: int  # items offered to at least one partner
    offers: int  # (item, partner) pairs offered
    previous_version_offered: int  # rejected items whose previous valid version is offered instead
    not_offered: int  # rejected items never valid before: offered to nobody


class Offered(_Result):
    """Our items brought in line at one partner (``outbound.stages.offer_partner``); ``outbound.json``
    keeps the difference, the batches and the read-back. ``status`` failed: ``error`` says why and
    ``retryable`` whether Airflow should try again (the partner's endpoint was unavailable)."""

    partner: str
    status: Literal["ok", "failed"]
    error: str | None
    retryable: bool
    offered: int
    missing: int  # offered, not configured at the partner before the run
    outdated: int
    withdrawn: int  # configured there, no longer offered
    mode_mismatch: int
    configured: int | None  # configured as offered after the run (None: the partner's list could not be read)
    sent: int  # operations the partner accepted


# -- partner_publish.report, deliver ---------------------------------------------------------------------------


class Notice(_Result):
    """Something a person must know though nothing failed; the report task sends it as an alert."""

    event: Literal["partner_held_back", "codes_recovered", "removals_held"]
    text: str  # Chinese, as the alert says it


class Reported(_Result):
    """The partner's report written (``pipeline.write_report``): its count table and where it is."""

    partner: str
    counts: dict[str, int]  # the report's 汇总 (``report_model.Counts``)
    report_json: str
    report_html: str
    report_xlsx: str
    notices: list[Notice]


class Delivered(_Result):
    """The report sent to the partner (``pipeline.deliver``); ``delivery.json`` keeps every attempt."""

    partner: str
    run_id: str
    status: Literal["delivered", "already_received", "skipped"]
    checksum: str  # SHA-256 of the report's bytes (also its name in the archive)
    attempts: int | None = None  # None when nothing was sent (a dry run)


# -- summarise ---------------------------------------------------------------------------------------------------


class Summarised(_Result):
    """The run over all partners (``summary.json`` holds the rest: ``tongban.report.summarise``)."""

    run_id: str
    totals: dict[str, int]  # count class -> sum over the partners with a report
    failed: list[str]  # divisions without a report this run


XCOM_RESULTS: tuple[type[BaseModel], ...] = (
    Settled,
    Fetched,
    Normalised,
    Validated,
    ProvinceChecked,
    Reconciled,
    Published,
    LibraryChecked,
    Offered,
    Reported,
    Delivered,
    Summarised,
)
"""The models the DAG's tasks return to XCom (allowed for deserialisation by the DAG; a model nested in one, such as
``Notice``, is stored as plain JSON inside it and needs no allowing)."""
