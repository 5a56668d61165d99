"""Item trace: what happened to one item, run by run — "why is item X not on the platform?".

``trace(root, store, query)`` takes a 实施编码 (exact) or part of an item name and reads, for the newest
runs, the run files each stage wrote (fetch, normalise/quarantine, validation and the province check,
reconciliation, publish, the report's delivery) and the item store (待整改 list, platform history, current
version). ``python -m tongban.trace <实施编码 or name>`` prints it; the UI plugin shows it at ``/tongban/trace``.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from upath import UPath

from tongban import layout, pipeline
from tongban.files import DeliveryFile, FetchFile, PublishFile
from tongban.layout import DELIVERY, REPORTS, RUNS
from tongban.model import LABELS
from tongban.outstanding import KIND_LABELS, RESOLUTION_LABELS
from tongban.registry import load_registry
from tongban.storage import read_json, read_jsonl
from tongban.store.repo import ItemStore

MAX_MATCHES = 20  # items a name may match
DELIVERY_LABELS = {
    "delivered": "报告已送达合作地区",
    "already_received": "报告已送达合作地区（此前已收到）",
    "skipped": "试运行：报告未投递",
    "failed": "报告投递失败",
}


@dataclass(frozen=True)
class Step:
    stage: str  # 拉取 / 隔离 / 校验 / 暂缓 / 对账 / 推送 / 送达
    outcome: str  # ok | bad | held | info
    text: str  # Chinese


@dataclass
class RunTrace:
    run_id: str
    partner: str
    steps: list[Step] = field(default_factory=list)


@dataclass
class ItemTrace:
    partner: str
    partner_name: str
    task_code: str
    name: str
    on_platform: dict[str, Any] | None  # the item store's current version, or None
    outstanding: dict[str, Any] | None  # its row of the 待整改 list (open or resolved), or None
    history: list[dict[str, Any]]  # platform changes (item_history)
    runs: list[RunTrace]  # newest first


@dataclass
class Trace:
    query: str
    items: list[ItemTrace]
    runs_searched: int
    truncated: bool = False


def _run_ids(root: UPath, limit: int) -> list[str]:
    """The newest ``limit`` run folders, newest first (by modification time)."""
    base = root / RUNS
    if not base.exists():
        return []
    found = sorted(((p.stat().st_mtime, p.name) for p in base.iterdir() if p.is_dir()), reverse=True)
    return [name for _, name in found[:limit]]


def _rows(path: UPath) -> Iterator[dict[str, Any]]:
    return read_jsonl(path) if path.exists() else iter(())


def _code_of(row: dict[str, Any]) -> str | None:
    return (row.get("record") or row).get("task_code")


def _partner_folders(root: UPath, run_id: str) -> list[UPath]:
    """A run's partner folders (six-digit names: a partner since removed from the registry is still traced)."""
    return [p for p in (root / RUNS / run_id).iterdir() if p.name.isdigit() and len(p.name) == 6]


def _matches(root: UPath, run_ids: Sequence[str], query: str) -> dict[tuple[str, str], str]:
    """(division, 实施编码) -> item name, of every item the query names in these runs' pulls."""
    found: dict[tuple[str, str], str] = {}
    for run_id in run_ids:
        for run in _partner_folders(root, run_id):
            for file in (layout.ITEMS, layout.QUARANTINE):
                for row in _rows(run / file):
                    code, name = _code_of(row), row.get("name") or ""
                    if code and (code == query or (query in name and len(query) >= 2)):
                        key = (run.name, code)
                        found[key] = found.get(key) or name
    return found


def _run_steps(root: UPath, run_id: str, division: str, code: str) -> list[Step] | None:
    """What each stage of one run did with the item; None when the partner was not in that run."""
    run = root / RUNS / run_id / division
    if not run.exists():
        return None
    steps: list[Step] = []
    fetch = read_json(run / layout.FETCH, FetchFile) if (run / layout.FETCH).exists() else None
    mode = "增量" if fetch and fetch.mode == "incremental" else "全量"
    if fetch and fetch.status == "failed":
        return [Step("拉取", "bad", f"拉取失败：{fetch.error or ''}；平台保留该地区上次的清单")]
    in_pull = any(_code_of(r) == code for r in _rows(run / layout.ITEMS))
    quarantined = [q for q in _rows(run / layout.QUARANTINE) if q.get("task_code") == code]
    if not in_pull and not quarantined:
        why = "全量拉取中没有该事项（已撤回或改了编码）"
        if mode == "增量":
            why = "增量拉取未包含（该事项自上次拉取以来无变化）"
        return [Step("拉取", "info", f"{mode}拉取：{why}")]
    steps.append(Step("拉取", "ok", f"{mode}拉取：已拉取"))
    for q in quarantined:
        reasons = "；".join(f"{p['wire_field']}：{p['reason']}" for p in q["problems"])
        steps.append(Step("隔离", "bad", f"无法解析或映射（{q['position']}）：{reasons}"))
    rejected = [r for r in _rows(run / layout.REJECTED) if r["record"]["task_code"] == code]
    for r in rejected:
        for f in r["findings"]:
            if f.get("severity") == "critical":
                where = "省内五级N同比对" if f.get("expectation") == "five_level_across_partners" else "关键校验"
                element = LABELS.get(f.get("element") or "", f.get("element") or "")  # 设定依据, not legal_basis
                steps.append(Step("校验", "bad", f"退回（{where}，{element}）：{f['message']}"))
    for w in _rows(run / layout.WARNINGS):
        if w["record"]["task_code"] == code:
            steps.append(Step("校验", "info", "警告（仍推送）：" + "；".join(f["message"] for f in w["findings"])))
    if in_pull and not rejected:
        steps.append(Step("校验", "ok", "通过校验"))
    if (run / layout.VALIDATION).exists() and pipeline.held_back(run):
        steps.append(Step("暂缓", "held", "该地区本次关键校验失败率超过阈值，整体暂缓发布：平台保留其上一版清单"))
    if (run / layout.RECONCILIATION).exists():
        recon = read_json(run / layout.RECONCILIATION)
        steps += _reconciled(recon, code)
    if (run / layout.PUBLISH).exists():
        steps += _published(read_json(run / layout.PUBLISH, PublishFile), code)
    delivery = root / REPORTS / run_id / division / DELIVERY
    if delivery.exists():
        status = read_json(delivery, DeliveryFile).status
        outcome = "ok" if status in ("delivered", "already_received") else "bad"
        steps.append(Step("送达", outcome, DELIVERY_LABELS.get(status, status)))
    return steps


def _reconciled(recon: dict[str, Any], code: str) -> list[Step]:
    kinds = {
        "added": "新增：平台上还没有该事项",
        "changed": "变更：与平台上的版本不同",
        "removed": "删除：全量拉取中已没有该事项",
        "recoded": "编码变更：同一事项换用新实施编码",
    }
    for kind, text in kinds.items():
        if any((e.get("task_code") if isinstance(e, dict) else e) == code for e in recon.get(kind, [])):
            return [Step("对账", "ok", text)]
    if code in recon.get("unchanged", []):
        return [Step("对账", "ok", "未变：平台上已是该版本")]
    if code in recon.get("held", []):
        return [Step("对账", "held", "保留平台原版本（本次未通过或被隔离）")]
    return []


def _published(publish: PublishFile, code: str) -> list[Step]:
    if publish.dry_run:
        return [Step("推送", "info", "试运行：未推送")]
    steps = [
        Step("推送", "ok", f"已推送（{a['op']}），平台已确认接收")
        for a in publish.accepted
        if a.get("task_code") == code
    ]
    steps += [
        Step("推送", "bad", f"平台拒收（{p.get('op')}）：{p.get('reason') or '未说明原因'}")
        for p in publish.rejected
        if p.get("task_code") == code
    ]
    return steps


def trace(root: UPath, store: ItemStore | None, query: str, *, runs: int = 30) -> Trace:
    """The trace of every item ``query`` names (a 实施编码, or part of a name) over the newest ``runs`` runs."""
    registry = load_registry()
    query = query.strip()
    run_ids = _run_ids(root, runs)
    matches = _matches(root, run_ids, query) if query else {}
    if store is not None and query and not matches:  # not pulled lately: the store may still know it
        for row in store.outstanding(task_code=query):
            matches[(row["partner"], query)] = row["name"]
    names = {p.division: p.name for p in registry.partners}
    items = []
    for (division, code), name in sorted(matches.items())[:MAX_MATCHES]:
        run_traces = []
        for run_id in run_ids:
            steps = _run_steps(root, run_id, division, code)
            if steps is not None:
                run_traces.append(RunTrace(run_id, division, steps))
        open_rows = store.outstanding(division, code) if store is not None else []
        items.append(
            ItemTrace(
                partner=division,
                partner_name=names.get(division, ""),
                task_code=code,
                name=name,
                on_platform=store.item(division, code) if store is not None else None,
                outstanding=_outstanding_row(open_rows[0]) if open_rows else None,
                history=store.history(division, code) if store is not None else [],
                runs=run_traces,
            )
        )
    return Trace(query=query, items=items, runs_searched=len(run_ids), truncated=len(matches) > MAX_MATCHES)


def _outstanding_row(row: dict[str, Any]) -> dict[str, Any]:
    label = RESOLUTION_LABELS.get(row.get("resolution") or "", "仍待整改")
    return {**row, "kind_label": KIND_LABELS.get(row["kind"], row["kind"]), "state": label}


def format_text(result: Trace) -> str:
    if not result.items:
        return f"「{result.query}」：最近 {result.runs_searched} 次运行中没有找到该事项（实施编码或名称）"
    lines = []
    for item in result.items:
        lines.append(f"{item.task_code}  {item.name}  （{item.partner} {item.partner_name}）")
        platform = "在平台上" if item.on_platform else "不在平台上（或从未推送）"
        lines.append(f"  平台：{platform}")
        if item.outstanding:
            o = item.outstanding
            lines.append(
                f"  待整改：{o['state']}（{o['kind_label']}：{o['reason']}；首次发现于 {o['first_run']}，"
                f"持续 {o['nights']} 次运行）"
            )
        for run in item.runs:
            lines.append(f"  {run.run_id}")
            lines += [f"    {s.stage}  {s.text}" for s in run.steps]
    if result.truncated:
        lines.append(f"（只显示前 {MAX_MATCHES} 个匹配的事项，请用更完整的名称或实施编码）")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    from tongban.config import storage_url
    from tongban.store import store_url

    parser = argparse.ArgumentParser(prog="python -m tongban.trace", description=__doc__.splitlines()[0])
    parser.add_argument("query", help="实施编码, or part of an item name")
    parser.add_argument("--runs", type=int, default=30, help="how many of the newest runs to read (default 30)")
    args = parser.parse_args(argv)
    result = trace(UPath(storage_url()), ItemStore(store_url()), args.query, runs=args.runs)
    print(format_text(result))
    return 0 if result.items else 1


if __name__ == "__main__":
    sys.exit(main())
