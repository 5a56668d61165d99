"""The nightly sync's stages for one partner, each reading and writing its own files in the run folder.

The run folder's files, which stage writes each and which read it, are listed in ``tongban.layout``.

Every stage is a transaction keyed by (run, partner): it reads what the stage before wrote, rewrites
its own outputs whole and returns a small typed result (``tongban.results``: what Airflow keeps in
XCom). Stages share no process state, so each may run on a different machine.

A stage is named after its step (``fetch``, ``validate``, ``deliver``), with ``_partner`` where the bare
name is the library's: ``settle_partner`` (``publish.settle``), ``normalise_partner`` (the module
``tongban.normalise``, whose ``normalise_catalogue`` it calls), ``reconcile_partner``, ``publish_partner``.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator, Mapping, Sequence, Set
from datetime import UTC, datetime
from typing import Any

import requests
from upath import UPath

from tongban import guard, watermark
from tongban import outstanding as outstanding_mod
from tongban import report as report_mod
from tongban.archive import Archive
from tongban.config import CHINA_TZ, max_critical_rate
from tongban.delivery import DeliveryError, report_url, send_report
from tongban.files import DeliveryFile, FetchFile, OutboundFile, PublishFile
from tongban.http import HttpSettings
from tongban.ingest import FetchError, FetchSettings, archived_pages, fetch_catalogue
from tongban.layout import (
    ACCEPTED,
    DELIVERY,
    DUPLICATES,
    FETCH,
    GX_RESULT,
    ITEMS,
    MANIFEST,
    NORMALISED,
    OUTBOUND,
    OWN_REJECTED,
    OWN_WARNINGS,
    PROVINCE_CHECK,
    PUBLISH,
    QUARANTINE,
    RAW,
    RECONCILIATION,
    REJECTED,
    REPORT_JSON,
    SETTLE,
    VALIDATION,
    WARNINGS,
    root_of,
)
from tongban.model import Item, content_hash
from tongban.normalise import Quarantined, normalise_catalogue
from tongban.publish import PlatformClient, check_fence, publish, settle
from tongban.reconcile import Reconciliation, reconcile
from tongban.registry import Partner, wire_formats
from tongban.results import (
    Delivered,
    Fetched,
    HoldBackRate,
    Normalised,
    Notice,
    ProvinceCheck,
    Published,
    Reconciled,
    Reported,
    Settled,
    Validated,
)
from tongban.storage import read_json, read_jsonl, write_json, write_jsonl
from tongban.store.repo import ItemStore
from tongban.validation.outcome import Finding, ValidationOutcome

_log = logging.getLogger(__name__)


def settle_partner(partner: Partner, run: UPath, client: PlatformClient, store: ItemStore, run_id: str) -> Settled:
    """The run's first step for a partner: claim its publish sequence (StaleRun if a newer run has started)
    and settle what earlier runs left unsettled in the ledger (``tongban.publish.settle``), so the item
    store holds what the platform applied before anything is validated or reconciled against it."""
    result = settle(client, partner.division, run_id, store)
    write_json(run / SETTLE, result)
    if drifted := {k: v for k, v in result.drift.items() if v}:
        _log.warning("partner %s: item store and platform differ after settling: %s", partner.division, drifted)
    outcomes = [s.now for s in result.settled]
    return Settled(
        partner=partner.division,
        sequence=result.sequence,
        settled={o: outcomes.count(o) for o in sorted(set(outcomes))},
        drift=sum(len(v) for v in result.drift.values()),
    )


def fetch(
    partner: Partner,
    base_url: str,
    run: UPath,
    *,
    secret: str | None = None,
    root: UPath | None = None,
    run_id: str | None = None,
    full_resync: bool = False,
    settings: FetchSettings | None = None,
    session: requests.Session | None = None,
    now: datetime | None = None,
) -> Fetched:
    """Pull the partner's catalogue (full or incremental, ``watermark.plan``) into the archive.

    Writes ``raw/manifest.json`` (every attempt, also when the pull fails) and ``fetch.json`` (mode,
    counts, status); records the pull's watermark only after it succeeded. A failed pull raises
    FetchError saying since when the partner's list on the platform is stale.
    """
    root = root_of(run) if root is None else root
    run_id = run_id or run.parent.name
    fmt = wire_formats()[partner.format]
    started = now or datetime.now(UTC)
    pull = watermark.plan(
        root, partner, run_id, now=started, full_resync=full_resync, incremental=fmt.incremental is not None
    )
    info: dict[str, Any] = {
        "partner": partner.division,
        "run_id": run_id,
        "format": fmt.name,
        **pull.as_dict(),
        "started_at": started.isoformat(),
    }
    _log.info("partner %s: %s pull (%s)", partner.division, pull.mode, pull.reason)
    try:
        result = fetch_catalogue(
            partner,
            fmt,
            base_url,
            Archive(root),
            secret=secret,
            since=pull.since,
            settings=settings,
            session=session,
            not_after=started,
        )
    except FetchError as exc:
        stale = watermark.stale_since(root, partner.division)
        write_json(run / RAW / MANIFEST, exc.exchanges)
        write_json(run / FETCH, {**info, "status": "failed", "error": str(exc), "stale_since": stale})
        since = f"its list on the platform is as of the pull at {stale}" if stale else "it was never pulled before"
        raise FetchError(f"{exc} — partner not refreshed this run; {since}", retryable=exc.retryable) from exc
    write_json(run / RAW / MANIFEST, result.exchanges)
    marks = [m for m in (result.watermark, pull.base and datetime.fromisoformat(pull.base["watermark"])) if m]
    mark = min(max(marks), started.astimezone(CHINA_TZ)).isoformat() if marks else None  # never past the pull
    counts = {
        "pages": result.pages,
        "requests": len(result.exchanges),
        "fetched": result.fetched,
        "declared_total": result.declared_total,
        "duplicates": result.duplicates,
        "unexpected_fields": result.unexpected_fields,
        "future_dated": len(result.future_dated),
    }
    finished = datetime.now(UTC).isoformat()
    write_json(
        run / FETCH,
        {**info, "status": "ok", "finished_at": finished, **counts, "watermark": mark}
        | {"future_dated_records": result.future_dated},
    )
    if result.future_dated:
        _log.warning(
            "partner %s: %d records dated after the pull started (left out of the watermark), first: %s",
            partner.division,
            len(result.future_dated),
            result.future_dated[0],
        )
    watermark.record(
        root,
        partner.division,
        run_id,
        {"mode": pull.mode, "since": info["since"], "pulled_at": info["started_at"], "finished_at": finished}
        | {"watermark": mark, "fetched": result.fetched, "declared_total": result.declared_total},
    )
    return Fetched(partner=partner.division, mode=pull.mode, since=info["since"], **counts)


def normalise_partner(partner: Partner, run: UPath, root: UPath | None = None) -> Normalised:
    """Map the pull onto canonical items, reading the raw answers from the archive only (replayable)."""
    fmt = wire_formats()[partner.format]
    archive = Archive(root_of(run) if root is None else root)
    pages = archived_pages(read_json(run / RAW / MANIFEST), archive, fmt)
    result = normalise_catalogue(pages, fmt, partner)
    items: list[dict[str, Any]] = []
    quarantined: list[Quarantined] = []
    for outcome in result.outcomes:
        if isinstance(outcome, Item):
            items.append(outcome.record())
        else:
            quarantined.append(outcome)
    write_jsonl(run / ITEMS, items)
    write_jsonl(run / QUARANTINE, quarantined)
    write_jsonl(run / DUPLICATES, result.duplicates)
    write_jsonl(run / NORMALISED, result.normalised)
    return Normalised(
        partner=partner.division,
        items=len(items),
        quarantined=len(quarantined),
        duplicates=len(result.duplicates),
        normalised=len(result.normalised),
    )


def not_delivered(
    run: UPath, records: list[dict[str, Any]], published: Mapping[str, dict[str, Any]]
) -> dict[str, dict[str, Any]]:
    """For an incremental pull: the partner's ``published`` items (the item store's, by 实施编码) that the pull did
    not deliver; none for a full pull, which carries the whole catalogue."""
    if is_full_pull(run):
        return {}
    delivered = {r["task_code"] for r in records}
    return {code: r for code, r in sorted(published.items()) if code not in delivered}


OLDER_THAN_PUBLISHED = "older_than_published"  # the check's name in rejected.jsonl (not a GX expectation)


def older_than_published(
    records: list[dict[str, Any]], published: Mapping[str, dict[str, Any]], now: datetime
) -> list[Finding]:
    """A critical finding on each record that differs from the item's published version but is dated before it:
    an older version (a partner serving a restored backup or a lagging copy). Published, it would revert the item
    on the platform; rejected, the platform keeps the newer version. Both dates are the partner's own clock; a
    published date after ``now`` proves nothing (a record dated in the future, ``fetch``) and is not compared."""
    findings = []
    for row, record in enumerate(records):
        held = published.get(record["task_code"])
        if held is None:
            continue
        delivered, newer = datetime.fromisoformat(record["updated_at"]), datetime.fromisoformat(held["updated_at"])
        if delivered < newer <= now and content_hash(held) != content_hash(record):
            shown = (
                f"{delivered.astimezone(CHINA_TZ):%Y-%m-%d %H:%M:%S}",
                f"{newer.astimezone(CHINA_TZ):%Y-%m-%d %H:%M:%S}",
            )
            message = (
                f"本条记录的更新时间 {shown[0]} 早于省一体化平台上已发布版本的更新时间 {shown[1]}，内容却不同："
                "疑为旧版本（如从备份恢复的数据），本次未推送，平台保留已发布的较新版本。"
                "如确需修改，请在贵方系统中重新编辑保存后再提供。"
            )
            findings.append(
                Finding(
                    row=row,
                    task_code=record["task_code"],
                    element="updated_at",
                    label="更新时间",
                    expectation=OLDER_THAN_PUBLISHED,
                    severity="critical",
                    message=message,
                )
            )
    return findings


def five_level_context(
    records: list[dict[str, Any]], undelivered: Mapping[str, dict[str, Any]]
) -> list[dict[str, Any]]:
    """Of the published items an incremental pull did not deliver (:func:`not_delivered`), those that share a
    基本编码 with a delivered one, so that 五级N同 is judged against the whole group, not only the part that
    changed."""
    groups = {r["catalog_code"] for r in records}
    return [r for r in undelivered.values() if r["catalog_code"] in groups]


def validate(partner: Partner, run: UPath, store: ItemStore) -> Validated:
    from tongban.validation import validate_items  # GX is heavy: imported when validating only

    records = list(read_jsonl(run / ITEMS))
    published = store.current(partner.division)
    undelivered = not_delivered(run, records, published)
    context = five_level_context(records, undelivered)
    outcome = validate_items(records + context, partner)
    older = older_than_published(records, published, datetime.now(UTC))
    outcome = ValidationOutcome(outcome.rows, [*outcome.findings, *older], outcome.gx_result)
    accepted, rejected, warned = outcome.split(records)  # context rows were judged in earlier runs
    write_jsonl(run / ACCEPTED, accepted)
    # The partner's own outcome, kept apart for the province check, which rewrites REJECTED and WARNINGS
    # from it; until then (and without it) they are the same. A new validation voids the last province check.
    for own, final, rows in ((OWN_REJECTED, REJECTED, rejected), (OWN_WARNINGS, WARNINGS, warned)):
        write_jsonl(run / own, rows)
        write_jsonl(run / final, rows)
    if (run / PROVINCE_CHECK).exists():
        (run / PROVINCE_CHECK).unlink()
    write_json(run / GX_RESULT, outcome.gx_result)
    # a quarantined record that names no 实施编码 cannot be held (nobody knows which item it is): it fails
    codes = [q.get("task_code") for q in read_jsonl(run / QUARANTINE)] if (run / QUARANTINE).exists() else []
    unidentified, pulled = codes.count(None) + codes.count(""), len(records) + len(codes)
    # the partner's catalogue after the pull: its records, and on an incremental night the published items it did
    # not carry (unchanged; a quarantined record's published version is counted once, as the record)
    catalogue = pulled + len(undelivered.keys() - set(codes))
    summary = Validated(
        partner=partner.division,
        **outcome.summary()
        | {
            "context_rows": len(context),
            "accepted": len(accepted),
            "rejected": len(rejected),
            "records": pulled,
            "catalogue": catalogue,
            "unidentified": unidentified,
        }
        | hold_back_rate(len(rejected) + unidentified, catalogue).model_dump(),
    )
    write_json(run / VALIDATION, summary)
    return summary


def hold_back_rate(failing: int, catalogue: int) -> HoldBackRate:
    """The critical-failure rate of a pull and whether it holds the partner back (above
    ``TONGBAN_MAX_CRITICAL_RATE``): ``failing`` records of the pull (rejected, or unreadable without a 实施编码)
    of the partner's ``catalogue`` (``Validated.catalogue``): the records of a full pull; after an incremental
    one, its records and the published items it did not carry, so that one bad change among a night's few
    does not hold back a whole list."""
    limit = max_critical_rate()
    rate = round(failing / catalogue, 6) if catalogue else 0.0
    return HoldBackRate(failing=failing, critical_rate=rate, max_critical_rate=limit, held_back=rate > limit)


def held_back(run: UPath) -> bool:
    """Whether validation held the whole partner back this run (too many critical failures), counting the
    province check's rejections once it ran (``report.rate_check``: the check file last written)."""
    check = report_mod.rate_check(run)
    if check is None:
        raise FileNotFoundError(f"{run / VALIDATION}: the partner was not validated in this run")
    return bool(check["held_back"])


def province_rejected(run: UPath) -> set[str]:
    """实施编码 of accepted records that the province check rejected (none before it ran)."""
    path = run / PROVINCE_CHECK
    return set(ProvinceCheck.model_validate_json(path.read_bytes()).rejected_codes) if path.exists() else set()


def accepted_records(run: UPath) -> Iterator[dict[str, Any]]:
    """The records that passed the partner's own validation and the province check."""
    rejected = province_rejected(run)
    return (r for r in read_jsonl(run / ACCEPTED) if r["task_code"] not in rejected)


def held_codes(run: UPath) -> set[str]:
    """实施编码 of this run's rejected and quarantined records: the platform keeps its version of them."""
    codes = {r["record"]["task_code"] for r in read_jsonl(run / REJECTED)}
    codes |= {q["task_code"] for q in read_jsonl(run / QUARANTINE) if q.get("task_code")}
    return codes


def is_full_pull(run: UPath) -> bool:
    """Whether this run's pull was a full one (a run folder without fetch.json predates incremental pulls)."""
    path = run / FETCH
    return not path.exists() or read_json(path, FetchFile).mode == "full"


def reconcile_partner(
    partner: Partner,
    run: UPath,
    client: PlatformClient,
    store: ItemStore,
    run_id: str,
    *,
    confirmed_run: str | None = None,
    root: UPath | None = None,
) -> Reconciled:
    """Compare the accepted items with the platform's list; the removal guard (``tongban.guard``) holds
    a mass removal unless ``confirmed_run`` (the run that held it, from the DAG param
    ``confirm_removals``) confirms it."""
    root = root_of(run) if root is None else root
    check_fence(store, partner.division, run_id)  # a superseded run reconciles nothing
    current = list(client.items(partner.division))
    if held_back(run):  # the platform keeps the partner's previous list whole
        recon = reconcile([], current, [r["task_code"] for r in current], full=is_full_pull(run))
        recon.held_back = True
    else:
        recon = reconcile(accepted_records(run), current, held_codes(run), full=is_full_pull(run))
        _guard_removals(recon, len(current), partner.division, run, root, run_id, confirmed_run)
    write_json(run / RECONCILIATION, recon.as_dict())
    store.record_reconciliation(run_id, partner.division, recon.counts())
    held = len((recon.removal_guard or {}).get("held", []))
    return Reconciled(
        partner=partner.division,
        platform_before=len(current),
        full=recon.full,
        **recon.counts(),
        held_back=recon.held_back,
        removals_held=held,
    )


def _guard_removals(
    recon: Reconciliation,
    published: int,
    division: str,
    run: UPath,
    root: UPath,
    run_id: str,
    confirmed_run: str | None,
) -> None:
    """The removal guard (``guard.apply``) on ``recon`` with this pull's catalogue size against the last complete
    full pull's, and the removals ``confirmed_run`` held (confirmed by a person)."""
    size = None  # the catalogue's size: what the partner declared, else the records it delivered
    if (run / FETCH).exists():
        pulled = read_json(run / FETCH, FetchFile)
        size = pulled.declared_total if pulled.declared_total is not None else pulled.fetched
    guard.apply(
        recon,
        published,
        size=size,
        previous_size=watermark.last_full_size(root, division, exclude_run=run_id),
        confirmed=guard.held_removals(root, division, confirmed_run) if confirmed_run else (),
        confirmed_run=confirmed_run,
    )


def removals_to_hold(
    division: str,
    run: UPath,
    published: Mapping[str, Mapping[str, Any]],
    accepted: Sequence[Mapping[str, Any]],
    held: Set[str],
    *,
    confirmed_run: str | None = None,
) -> list[str]:
    """实施编码 of ``published`` items whose removal the removal guard will hold when the partner reconciles, known
    before it does: for the province check, which compares what the platform will hold (the held items stay).

    ``published``: the partner's items on the platform (the item store), by 实施编码; ``accepted`` / ``held``: the
    records that passed the partner's own validation and the codes it held (rejected or quarantined). Only a full
    pull removes. The same ``reconcile`` and ``guard.apply`` as :func:`reconcile_partner`, on the items that
    appear or disappear alone (which decide the removals and re-codes), so it costs little on an ordinary night.
    The province check's own rejections come after it: an item it rejects that would have re-coded a missing one
    leaves that one removed after all (so held, if the guard holds), which this does not foresee.
    """
    if not is_full_pull(run):
        return []
    delivered = {r["task_code"] for r in accepted}
    missing = [published[code] for code in sorted(set(published) - delivered - held)]
    if not missing:
        return []
    appearing = [r for r in accepted if r["task_code"] not in published]
    recon = reconcile(appearing, missing, full=True)
    root = root_of(run)
    _guard_removals(recon, len(published), division, run, root, run.parent.name, confirmed_run)
    return [r["task_code"] for r in (recon.removal_guard or {}).get("held", [])]


def publish_partner(
    partner: Partner, run: UPath, client: PlatformClient, store: ItemStore, run_id: str, dry_run: bool
) -> Published:
    recon = Reconciliation.from_dict(read_json(run / RECONCILIATION))
    result = publish(client, partner.division, run_id, recon, store, dry_run=dry_run)
    held = len((recon.removal_guard or {}).get("held", []))
    # read by tongban.watermark: a held-back pull does not count, one with held removals is no complete full pull
    write_json(run / PUBLISH, result.as_dict() | {"held_back": recon.held_back, "removals_held": held})
    return Published(partner=partner.division, published=result.published, platform_rejected=len(result.rejected))


def write_report(partner: Partner, run: UPath, out: UPath, run_id: str, store: ItemStore) -> Reported:
    """Write the partner's report; the summary carries ``notices`` (event, text) that call for an alert:
    the partner held back whole, 实施编码 sent as another type (recovered, the items held), or removals held
    for confirmation."""
    check_fence(store, partner.division, run_id)  # a superseded run's changes are reported by the newer run
    manifest = read_json(run / RAW / MANIFEST)
    quarantined = list(read_jsonl(run / QUARANTINE))
    rejected = list(read_jsonl(run / REJECTED))
    recon = Reconciliation.from_dict(read_json(run / RECONCILIATION))
    published = read_json(run / PUBLISH, PublishFile)
    # an incremental pull says nothing of the items it did not carry; nor does a full pull whose removals the
    # removal guard holds (its catalogue looks cut short: what it lacks was not withdrawn until confirmed)
    pulled = None
    if recon.full and not (recon.removal_guard or {}).get("held"):
        pulled = {r["task_code"] for r in read_jsonl(run / ITEMS)} | {q["task_code"] for q in quarantined}
    outstanding, resolved = store.track_outstanding(
        run_id,
        partner.division,
        outstanding_mod.problems(rejected, quarantined, published.rejected),
        outstanding_mod.fixed(recon, published),
        pulled,
        persist=not published.dry_run,
    )
    fetch_info = read_json(run / FETCH, FetchFile) if (run / FETCH).exists() else None
    outbound = read_json(run / OUTBOUND, OutboundFile) if (run / OUTBOUND).exists() else None  # this run's offer
    check = report_mod.rate_check(run) if recon.held_back else None  # why it was held back
    report = report_mod.build(
        partner=partner,
        run_id=run_id,
        fetched=sum(p["records"] for p in manifest),
        quarantined=quarantined,
        rejected=rejected,
        warnings=list(read_jsonl(run / WARNINGS)),
        recon=recon,
        publish=published,
        duplicates=list(read_jsonl(run / DUPLICATES)) if (run / DUPLICATES).exists() else [],
        unexpected=report_mod.unexpected_fields(manifest),
        normalised=list(read_jsonl(run / NORMALISED)) if (run / NORMALISED).exists() else [],
        outstanding=outstanding,
        resolved=resolved,
        hold_back=check,
        held_with_partner=list(accepted_records(run)) if recon.held_back else [],
        future_dated=fetch_info.future_dated_records if fetch_info else [],
        outbound=outbound,
        earlier=store.unreported(partner.division, run_id),
    )
    paths = report_mod.write(report, out)
    notices = []
    if report.hold_back:
        notices.append(Notice(event="partner_held_back", text=report.hold_back.text))
    if recovered := sum(1 for q in quarantined if q.get("code_recovered")):
        notices.append(Notice(event="codes_recovered", text=guard.recovered_notice(recovered)))
    if report.removal_guard and report.removal_guard.held:
        confirm = guard.how_to_confirm(partner.division, run_id)
        notices.append(Notice(event="removals_held", text=f"{report.removal_guard.text}\n{confirm}"))
    counts = report.counts
    store.record_pull(
        run_id,
        partner.division,
        fetched=counts.fetched,
        quarantined=counts.quarantined,
        rejected=counts.rejected,
    )
    return Reported(partner=partner.division, counts=counts.model_dump(), **paths, notices=notices)


def deliver(
    partner: Partner,
    run: UPath,
    report_dir: UPath,
    run_id: str,
    base_url: str,
    secret: str | None = None,
    *,
    root: UPath | None = None,
    dry_run: bool | None = None,
    settings: HttpSettings | None = None,
    session: requests.Session | None = None,
    store: ItemStore | None = None,
) -> Delivered:
    """Send the partner its report of this run (``tongban.delivery``) and record the delivery.

    Once the partner holds the report, the item store notes (``store``: the DAG's always) that the changes
    of this run and of the earlier runs the report tells of (``earlier``) are reported: changes of a run
    whose report was never delivered are told in the next report that is.

    The report is read from the run-scoped ``reports/<run id>/<division>/report.json`` and must name
    this run and partner; its bytes are archived (content-addressed, ``tongban.archive``) and sent with
    their SHA-256 and the run id. ``delivery.json`` in the report folder keeps every delivery (status,
    time, checksum, attempts). A dry run (as the publish stage recorded it) delivers nothing.
    """
    where = f"partner {partner.division}, run {run_id}"
    if (report_dir.name, report_dir.parent.name) != (partner.division, run_id) or run.parent.name != run_id:
        raise DeliveryError(f"{where}: report folder {report_dir} is not this run's", retryable=False)
    body = (report_dir / REPORT_JSON).read_bytes()
    report = json.loads(body)
    if (report.get("run_id"), report.get("partner")) != (run_id, partner.division):
        found = f"run {report.get('run_id')}, partner {report.get('partner')}"
        raise DeliveryError(f"{where}: {report_dir / REPORT_JSON} is the report of {found}", retryable=False)
    archive = Archive(root_of(run) if root is None else root)
    digest = archive.put(body)
    if dry_run is None:
        dry_run = read_json(run / PUBLISH, PublishFile).dry_run
    record: dict[str, Any] = {
        "partner": partner.division,
        "run_id": run_id,
        "checksum": digest,
        "bytes": len(body),
        "url": report_url(base_url),
        "archived": str(archive.path(digest)),
        "at": datetime.now(UTC).isoformat(),
    }
    path = report_dir / DELIVERY
    history = read_json(path, DeliveryFile).deliveries if path.exists() else []
    if dry_run:
        record |= {"status": "skipped", "reason": "dry run: nothing was published, nothing is delivered"}
    else:
        try:
            sent = send_report(partner, base_url, body, run_id, secret=secret, settings=settings, session=session)
        except DeliveryError as exc:
            record |= {"status": "failed", "error": str(exc), "attempts": len(exc.attempts), "log": exc.attempts}
            write_json(path, {**record, "deliveries": [*history, record]})
            raise
        status = "delivered" if sent.status == "received" else "already_received"
        record |= {"status": status, "http_status": sent.http_status, "attempts": len(sent.attempts)}
        record |= {"log": sent.attempts, "receipt": sent.answer}
        if store is not None:
            runs = {run_id, *(e["run_id"] for e in report.get("earlier", []))}
            record["changes_reported"] = store.mark_reported(partner.division, sorted(runs), by=run_id)
    write_json(path, {**record, "deliveries": [*history, record]})
    _log.info("partner %s: report of run %s %s (sha256 %s)", partner.division, run_id, record["status"], digest)
    return Delivered.model_validate({k: record[k] for k in Delivered.model_fields if k in record})
