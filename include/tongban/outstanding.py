"""待整改: the items a partner still has to fix, kept across runs in the item store until fixed or withdrawn.

An incremental night only carries what changed, so an item rejected on an earlier night and still wrong
is not in it: its rejection would vanish from the report although the item is still not on the platform.
The report stage therefore folds each run's problems into the store's list (``ItemStore.track_outstanding``)
and every report, the run summary and the UI show the list. This module turns a run's stage outputs into
the store's inputs.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from tongban.files import PublishFile
from tongban.reconcile import Reconciliation

KIND_LABELS = {"rejected": "退回", "quarantined": "隔离", "platform_rejected": "平台拒收"}
RESOLUTION_LABELS = {"fixed": "已更正（平台上已是贵方提供的版本）", "withdrawn": "已撤回（全量拉取中不再出现）"}


def problems(
    rejected: Iterable[Mapping[str, Any]],
    quarantined: Iterable[Mapping[str, Any]],
    platform_rejected: Iterable[Mapping[str, Any]],
) -> dict[str, dict[str, str]]:
    """实施编码 -> {name, kind, reason} of this run's problems the partner must fix (quarantined records without
    a 实施编码 cannot be followed across runs: they are in the run's report only)."""
    found: dict[str, dict[str, str]] = {}
    for q in quarantined:
        if q.get("task_code"):
            reason = "；".join(p["reason"] for p in q["problems"])
            found[str(q["task_code"])] = {"name": q.get("name") or "", "kind": "quarantined", "reason": reason}
    for r in rejected:
        critical = [f["message"] for f in r["findings"] if f.get("severity", "critical") == "critical"]
        record = r["record"]
        found[record["task_code"]] = {"name": record.get("name", ""), "kind": "rejected", "reason": "；".join(critical)}
    for p in platform_rejected:
        if p.get("task_code") and p.get("op") == "upsert":
            reason = f"平台拒收：{p.get('reason') or '未说明原因'}"
            found[str(p["task_code"])] = {"name": p.get("name") or "", "kind": "platform_rejected", "reason": reason}
    return found


def fixed(recon: Reconciliation, publish: PublishFile) -> set[str]:
    """实施编码 that are on the platform as delivered after this run (none when held back or dry)."""
    if recon.held_back or publish.dry_run:
        return set()
    refused = {p.get("task_code") for p in publish.rejected if p.get("op") == "upsert"}
    codes = {r["task_code"] for r in recon.added} | {c.task_code for c in recon.changed}
    codes |= set(recon.unchanged) | {r.task_code for r in recon.recoded}
    return codes - refused
