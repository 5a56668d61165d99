"""The outbound pipeline stages: the library check (once per run) and the offer to each partner.

Like the inbound stages, each reads and writes its own files in the run folder and returns a small
typed result (``tongban.results``). ``offer_partner`` never raises for the partner's endpoint: what failed is written to
``outbound.json`` (the report and the summary show it) and the caller decides; the next run starts from
what the partner holds then, so nothing is lost by a failed run.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Any

import requests
from upath import UPath

from tongban.archive import Archive
from tongban.batches import Sent, readback_problems, send_batches
from tongban.files import OutboundFile
from tongban.http import HttpSettings
from tongban.ingest import FetchSettings
from tongban.layout import INTERNAL, OUTBOUND, REPORTS, RUNS, run_dir
from tongban.outbound.client import LibraryClient, OfferClient, OfferError
from tongban.outbound.diff import OfferDiff, compare, digest
from tongban.outbound.library import check_library, offer_for
from tongban.outbound.wire import home_region
from tongban.publish import PlatformClient, check_fence
from tongban.registry import Partner, Registry
from tongban.results import LibraryChecked, Offered
from tongban.storage import read_json, write_json
from tongban.store.repo import ItemStore
from tongban.store.schema import OFFER, PENDING, SUPERSEDED, UNSENT

KEY_PREFIX = "offer-"  # ledger keys of offer batches (publish batches have none)
log = logging.getLogger(__name__)


def home_run(root: UPath, run_id: str, registry: Registry) -> UPath:
    """The run folder of 沅江's own library: ``runs/<run>/<home division>/``."""
    return run_dir(root, run_id, registry.home["division"])


def library(registry: Registry, platform: PlatformClient, root: UPath, run_id: str, store: ItemStore) -> LibraryChecked:
    """Read 沅江's library from the platform (whole), check it and write the run's offer."""
    entries = LibraryClient(platform).entries()
    internal = root / REPORTS / run_id / INTERNAL
    return check_library(registry, entries, home_run(root, run_id, registry), internal, store, run_id)


def offer_partner(
    partner: Partner,
    registry: Registry,
    root: UPath,
    run_id: str,
    base_url: str,
    store: ItemStore,
    *,
    secret: str | None = None,
    fetch_settings: FetchSettings | None = None,
    write_settings: HttpSettings | None = None,
    session: requests.Session | None = None,
    dry_run: bool = False,
) -> Offered:
    """Bring the partner's configured list in line with our offer: read it back, compare, send the
    difference in idempotent batches, read it back again (``dry_run``, or nothing to send: compare only). Writes
    ``outbound.json``; returns its counts. A run superseded for the partner by a newer one offers nothing
    (StaleRun: its library is older than the newer run's)."""
    check_fence(store, partner.division, run_id)
    settled = settle_offers(store, partner.division, run_id)
    offer = offer_for(home_run(root, run_id, registry), partner.division)
    client = OfferClient(
        partner,
        base_url,
        Archive(root),
        home_region(registry),
        secret=secret,
        fetch_settings=fetch_settings,
        write_settings=write_settings,
        session=session,
    )
    started = datetime.now(UTC).isoformat()
    diff, sent, status, error, retryable = OfferDiff(offered=sorted(offer)), Sent(), "ok", None, False
    after: list[dict[str, Any]] | None = None
    read_before = False
    try:
        before, _ = client.configured()
        read_before = True
        diff = compare(offer.values(), before)
        after = before  # dry run, or a list already in line: nothing is sent, so it is not read a second time
        if not (dry_run or diff.in_line()):
            after = _send(client, store, run_id, partner.division, offer, diff, sent)
        if not dry_run and (problems := _readback(offer, before, after, sent)):
            status, error = "failed", "回读结果与发送内容不一致：" + "; ".join(problems)
    except OfferError as exc:
        status, error, retryable = "failed", str(exc), exc.retryable
        log.error("partner %s: offer not completed this run: %s", partner.division, exc)
        if sent.batches:  # something was written: what does the partner hold now?
            try:
                after, _ = client.configured()
            except OfferError:
                after = None
    held = {r["task_code"]: digest(r) for r in after} if after is not None else None
    configured: set[str] | None = None  # unknown when the partner's list could not be read at all
    if held is not None:
        configured = {code for code, r in offer.items() if held.get(code) == digest(r)}
    elif read_before:  # no read-back after the run: what was current before it
        configured = set(diff.current)
    record = {
        "partner": partner.division,
        "run_id": run_id,
        "status": status,
        "error": error,
        "dry_run": dry_run,
        "started_at": started,
        "finished_at": datetime.now(UTC).isoformat(),
        "counts": {
            **diff.counts(),
            "offered": len(offer),
            "configured": len(configured) if configured is not None else None,
            "sent": len(sent.accepted),
        },
        "configured_before": len(diff.current) if read_before else None,  # as found at the start of this run
        "diff": diff.as_dict(),
        "results": [*sent.accepted, *sent.rejected],
        "batches": sent.batches,
        "not_configured": sorted(offer.keys() - configured) if configured is not None else sorted(offer),
        "readback": sorted(held) if held is not None else None,
        "settled": settled,
    }
    write_json(run_dir(root, run_id, partner.division) / OUTBOUND, record)
    return Offered(partner=partner.division, status=status, error=error, retryable=retryable, **record["counts"])


def settle_offers(store: ItemStore, division: str, run_id: str) -> list[dict[str, Any]]:
    """Close the offer batches earlier, dead runs left unsettled for the partner: ``pending`` ones ``unsent``,
    ``sent`` ones ``superseded`` — nothing is sent again, this run reads back what the partner has configured
    and sends what is still to change. Partners cannot be asked by key, so unlike :func:`tongban.publish.settle`
    nothing is asked: a ``pending`` row whose ``sent`` mark a power loss rolled back is closed ``unsent`` all
    the same, which is harmless, as no item or history is derived from offer rows."""
    settled = []
    for row in store.unsettled(division, direction=OFFER):
        if row["run_id"] == run_id:
            continue  # this run's own batches: its offer sends them again under the same keys
        if row["status"] == PENDING:
            now, note = UNSENT, "not marked sent: its run stopped before sending it"
        else:
            now, note = SUPERSEDED, f"outcome not asked: run {run_id} read back what the partner has configured"
        store.ledger_close(row["key"], now, settled_by=run_id, note=note)
        settled.append({"key": row["key"], "run_id": row["run_id"], "was": row["status"], "now": now})
    return settled


def _send(
    client: OfferClient,
    store: ItemStore,
    run_id: str,
    division: str,
    offer: dict[str, dict[str, Any]],
    diff: OfferDiff,
    sent: Sent,
) -> list[dict[str, Any]]:
    """Send the difference (ledgered batches, ``sent`` filled as they are answered); the list read back."""
    digests = {code: digest(r) for code, r in offer.items()}
    send_batches(
        store, run_id, division, diff.upserts(offer), diff.deletes(), digests, client.push, prefix=KEY_PREFIX, sent=sent
    )
    return client.configured()[0]


def _readback(
    offer: dict[str, dict[str, Any]], before: list[dict[str, Any]], after: list[dict[str, Any]], sent: Sent
) -> list[str]:
    """How the list read back differs from the one before with the accepted operations applied."""
    accepted = {(a["op"], a["task_code"]) for a in sent.accepted}
    expected = {r["task_code"] for r in before} - {c for op, c in accepted if op == "delete"}
    expected |= {c for op, c in accepted if op == "upsert"}
    intended = {c: digest(offer[c]) for op, c in accepted if op == "upsert"}
    return readback_problems(expected, after, intended, digest)


def outbound_of(root: UPath, run_id: str, division: str) -> OutboundFile | None:
    """A partner's ``outbound.json`` of a run, or None when the offer did not run."""
    path = root / RUNS / run_id / division / OUTBOUND
    return read_json(path, OutboundFile) if path.exists() else None
