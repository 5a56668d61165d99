"""The nightly sync's stages for one partner, each reading and writing its own files in the run folder.

Every stage is a transaction keyed by (run, partner): it reads what the stage before wrote, rewrites
its own outputs whole and returns a small JSON-safe summary (what Airflow keeps in XCom). Stages
share no process state, so each may run on a different machine.
"""

from __future__ import annotations

from typing import Any

from upath import UPath

from tongban import report as report_mod
from tongban.ingest import fetch_catalogue
from tongban.model import Item
from tongban.normalise import normalise_records
from tongban.publish import PlatformClient, publish
from tongban.reconcile import Reconciliation, reconcile
from tongban.registry import Partner, wire_formats
from tongban.storage import read_json, read_jsonl, write_json, write_jsonl
from tongban.store.repo import ItemStore

RAW = "raw"
ITEMS = "items.jsonl"
QUARANTINE = "quarantine.jsonl"
ACCEPTED = "accepted.jsonl"
REJECTED = "rejected.jsonl"
WARNINGS = "warnings.jsonl"
GX_RESULT = "gx_validation_result.json"
RECONCILIATION = "reconciliation.json"
PUBLISH = "publish.json"
FETCH = "fetch.json"


def fetch(partner: Partner, base_url: str, run: UPath) -> dict[str, Any]:
    pages = fetch_catalogue(partner, wire_formats()[partner.format], base_url, run / RAW)
    return {"partner": partner.division, "pages": len(pages), "fetched": sum(p.records for p in pages)}


def normalise(partner: Partner, run: UPath) -> dict[str, Any]:
    fmt = wire_formats()[partner.format]
    manifest = read_json(run / RAW / "manifest.json")
    pages = ((p["number"], read_json(UPath(p["path"]))[fmt.paging.items_field]) for p in manifest)
    items: list[dict[str, Any]] = []
    quarantined: list[dict[str, Any]] = []
    for outcome in normalise_records(pages, fmt, partner):
        if isinstance(outcome, Item):
            items.append(outcome.record())
        else:
            quarantined.append(outcome.record())
    write_jsonl(run / ITEMS, items)
    write_jsonl(run / QUARANTINE, quarantined)
    return {"partner": partner.division, "items": len(items), "quarantined": len(quarantined)}


def validate(partner: Partner, run: UPath) -> dict[str, Any]:
    from tongban.validation import validate_items  # GX is heavy: imported when validating only

    records = list(read_jsonl(run / ITEMS))
    outcome = validate_items(records, partner)
    by_row: dict[int, list[dict[str, Any]]] = {}
    for finding in outcome.findings:
        by_row.setdefault(finding.row, []).append(finding.__dict__)
    accepted, rejected, warned = [], [], []
    for row, record in enumerate(records):
        findings = by_row.get(row, [])
        if row in outcome.rejected_rows:
            rejected.append({"record": record, "findings": findings})
        else:
            accepted.append(record)
            if findings:
                warned.append({"record": record, "findings": findings})
    write_jsonl(run / ACCEPTED, accepted)
    write_jsonl(run / REJECTED, rejected)
    write_jsonl(run / WARNINGS, warned)
    write_json(run / GX_RESULT, outcome.gx_result)
    return {"partner": partner.division, **outcome.summary(), "accepted": len(accepted), "rejected": len(rejected)}


def held_codes(run: UPath) -> set[str]:
    """实施编码 of this run's rejected and quarantined records: the platform keeps its version of them."""
    codes = {r["record"]["task_code"] for r in read_jsonl(run / REJECTED)}
    codes |= {q["task_code"] for q in read_jsonl(run / QUARANTINE) if q.get("task_code")}
    return codes


def is_full_pull(run: UPath) -> bool:
    """Whether this run's pull was a full one (a run folder without fetch.json predates incremental pulls)."""
    path = run / FETCH
    return not path.exists() or read_json(path).get("mode", "full") == "full"


def reconcile_partner(
    partner: Partner, run: UPath, client: PlatformClient, store: ItemStore, run_id: str
) -> dict[str, Any]:
    current = client.items(partner.division)
    recon = reconcile(read_jsonl(run / ACCEPTED), current, held_codes(run), full=is_full_pull(run))
    write_json(run / RECONCILIATION, recon.as_dict())
    store.record_reconciliation(run_id, partner.division, recon.counts())
    return {"partner": partner.division, "platform_before": len(current), "full": recon.full, **recon.counts()}


def publish_partner(
    partner: Partner, run: UPath, client: PlatformClient, store: ItemStore, run_id: str, dry_run: bool
) -> dict[str, Any]:
    recon = Reconciliation.from_dict(read_json(run / RECONCILIATION))
    result = publish(client, partner.division, run_id, recon, store, dry_run=dry_run)
    write_json(run / PUBLISH, result.as_dict())
    return {"partner": partner.division, "published": result.published, "platform_rejected": len(result.rejected)}


def write_report(partner: Partner, run: UPath, out: UPath, run_id: str, store: ItemStore) -> dict[str, Any]:
    report = report_mod.build(
        partner=partner,
        run_id=run_id,
        fetched=sum(p["records"] for p in read_json(run / RAW / "manifest.json")),
        quarantined=list(read_jsonl(run / QUARANTINE)),
        rejected=list(read_jsonl(run / REJECTED)),
        warnings=list(read_jsonl(run / WARNINGS)),
        recon=Reconciliation.from_dict(read_json(run / RECONCILIATION)),
        publish=read_json(run / PUBLISH),
    )
    paths = report_mod.write(report, out)
    counts = report["counts"]
    store.record_pull(
        run_id,
        partner.division,
        fetched=counts["fetched"],
        quarantined=counts["quarantined"],
        rejected=counts["rejected"],
    )
    return {"partner": partner.division, "counts": report["counts"], **paths}
