"""沅江's own library: read from the platform, validated like a partner's catalogue, turned into the offer.

Validation is the inbound one (the GX suite ``expectations/items.json``, 五级N同 inside the library) with
沅江 as the region: home province 430000, USCCs and division codes inside Hunan. What fails a critical
check goes into the *internal* report for 沅江's data engineers (``reports/<run>/internal/``), never to
a partner. An invalid item is not offered in its new form: the last version that passed (kept in the item
store under 沅江's division) stays offered meanwhile; an item that never passed is not offered at all.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from upath import UPath

from tongban.layout import GX_RESULT, LIBRARY_CHECK, OFFER
from tongban.outbound.wire import MODES, home_region
from tongban.registry import Registry, label
from tongban.results import LibraryChecked
from tongban.storage import read_json, write_json
from tongban.store.repo import ItemStore


def item_record(entry: Mapping[str, Any]) -> dict[str, Any]:
    """A library entry's canonical record (without its ``offer``)."""
    return {k: v for k, v in entry.items() if k != "offer"}


def check_library(
    registry: Registry,
    entries: Sequence[Mapping[str, Any]],
    run: UPath,
    internal: UPath,
    store: ItemStore,
    run_id: str,
) -> LibraryChecked:
    """Validate the library, decide what is offered, record the valid versions; writes ``offer.json`` and
    ``library_check.json`` into ``run`` and the internal report into ``internal``."""
    from tongban.outbound.report import write_internal_report
    from tongban.validation import validate_items  # GX is heavy: imported when validating only

    home = home_region(registry)
    records = [item_record(e) for e in entries]
    outcome = validate_items(records, home)
    findings: dict[int, list[dict[str, Any]]] = {}
    for finding in outcome.findings:
        findings.setdefault(finding.row, []).append(finding.__dict__)
    previous = store.current(home.division)
    offered: list[dict[str, Any]] = []
    flagged: list[dict[str, Any]] = []
    valid: list[dict[str, Any]] = []
    for row, (entry, record) in enumerate(zip(entries, records, strict=True)):
        offer = entry["offer"]
        rejected = row in outcome.rejected_rows
        chosen = previous.get(record["task_code"]) if rejected else record
        if not rejected:
            valid.append(record)
        if offer["offered"] and chosen is not None:
            offered.append({"record": chosen, "modes": offer["modes"], "regions": offer["regions"]})
        if row in findings:
            if not rejected:
                consequence = "warning"
            elif not offer["offered"]:
                consequence = "not_offered_anyway"
            else:
                consequence = "previous_version_offered" if chosen is not None else "not_offered"
            flagged.append(
                {
                    "task_code": record["task_code"],
                    "name": record["name"],
                    "level": record["level"],
                    "level_label": label("level", record["level"]),
                    "version": record["version"],
                    "offered": bool(offer["offered"]),
                    "rejected": rejected,
                    "consequence": consequence,
                    "offered_version": chosen["version"] if chosen is not None and offer["offered"] else None,
                    "findings": findings[row],
                }
            )
    gone = sorted(previous.keys() - {r["task_code"] for r in records})
    store.apply(run_id, home.division, valid, gone)
    write_json(run / OFFER, {"run_id": run_id, "home": home.division, "items": offered})
    summary = LibraryChecked(
        run_id=run_id,
        home=home.division,
        home_name=home.name,
        library=len(records),
        valid=len(valid),
        rejected=len(records) - len(valid),
        offered=len(offered),
        offers=sum(len(o["regions"]) for o in offered),
        previous_version_offered=sum(f["consequence"] == "previous_version_offered" for f in flagged),
        not_offered=sum(f["consequence"] == "not_offered" for f in flagged),
    )
    check = summary.model_dump() | {"flagged": flagged}  # library_check.json: the summary and every flagged item
    write_json(run / LIBRARY_CHECK, check)
    write_internal_report(check, internal)
    write_json(internal / GX_RESULT, outcome.gx_result)  # the UI renders its Data Docs page from it
    return summary


def offer_for(run: UPath, division: str) -> dict[str, dict[str, Any]]:
    """What we offer one partner this run (``offer.json``): task code -> record with ``offer_modes``."""
    items = read_json(run / OFFER)["items"]
    return {
        o["record"]["task_code"]: {**o["record"], MODES: sorted(o["modes"])} for o in items if division in o["regions"]
    }
