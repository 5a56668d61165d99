"""Guards between a partner's pull and the platform: the removal guard and the hold-back notice.

**Removal guard.** A full pull removes from the platform the partner's items it no longer delivers. A
bad answer (an empty catalogue, a total cut short, records nobody can read) would then withdraw items
that were never withdrawn. So a run that would remove more than ``TONGBAN_MAX_REMOVAL_RATE`` of the
partner's published items, or whose catalogue size (its declared total, or the records delivered where
the format declares none) shrinks by more than that share against the last full pull published without
held removals, *holds* those removals: the platform keeps the items, the partner's other changes are
published, and the report and an alert say so with the numbers. A person confirms a real mass
withdrawal with the DAG param ``confirm_removals`` (``["<division>@<run id that held them>"]``); the
confirming run then removes exactly the held items that are still missing from the partner's
catalogue (anything else it would remove is guarded again). The province check, which runs before the
partner reconciles, foresees the held removals (``pipeline.removals_to_hold``, the same decision): the held
items stay on the platform, so they take part in 五级N同 across the partners as published, never judged.

**Hold-back notice.** A partner held back whole (critical-failure rate above
``TONGBAN_MAX_CRITICAL_RATE``) is told the rate against the limit, which of its items passed and
were held with it, and what to do.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any

from upath import UPath

from tongban import watermark
from tongban.config import max_removal_rate
from tongban.files import FetchFile
from tongban.layout import FETCH, RECONCILIATION, run_dir
from tongban.reconcile import Reconciliation
from tongban.storage import read_json

CONFIRMATION = re.compile(r"^(?P<division>\d{6})@(?P<run_id>\S+)$")


def percent(rate: float) -> str:
    """0.28125 -> ``28.1%``; 0.2 -> ``20%``."""
    return f"{rate * 100:.1f}".removesuffix(".0") + "%"


def ratio(part: int, whole: int, limit: float) -> str:
    """「9/32 = 28.1% > 20%」."""
    return f"{part}/{whole} = {percent(part / whole if whole else 0.0)} > {percent(limit)}"


# --- confirmations --------------------------------------------------------------------------------


def parse_confirmations(values: Iterable[str]) -> dict[str, str]:
    """``["440100@<run id>", …]`` -> {division: run id}; ValueError naming a malformed or repeated entry."""
    confirmed: dict[str, str] = {}
    for value in values:
        match = CONFIRMATION.match(str(value).strip())
        if not match:
            raise ValueError(f"confirm_removals entry {value!r} is not <division>@<run id> (e.g. 440100@manual__…)")
        division, run_id = match["division"], match["run_id"]
        if division in confirmed and confirmed[division] != run_id:
            raise ValueError(f"confirm_removals names partner {division} twice ({confirmed[division]}, {run_id})")
        confirmed[division] = run_id
    return confirmed


def held_removals(root: UPath, division: str, run_id: str) -> list[str]:
    """实施编码 whose removal run ``run_id`` held for ``division``; ValueError if it held none."""
    path = run_dir(root, run_id, division) / RECONCILIATION
    if not path.exists():
        raise ValueError(f"confirm_removals: run {run_id} did not reconcile partner {division} (no {path})")
    guard = read_json(path).get("removal_guard") or {}
    codes = [r["task_code"] for r in guard.get("held", [])]
    if not codes:
        raise ValueError(f"confirm_removals: run {run_id} held no removals of partner {division}: nothing to confirm")
    return codes


def check_confirmations(root: UPath, values: Sequence[str], divisions: Sequence[str]) -> dict[str, str]:
    """The DAG param ``confirm_removals`` checked against the run's partners and the runs it names: each must have
    held removals of the partner that are still pending, i.e. no full pull of the partner published whole since
    (that pull held every item it delivered: the old list is void, and confirming it would let a later answer cut
    short remove what it held without the guard)."""
    confirmed = parse_confirmations(values)
    for division, run_id in confirmed.items():
        if division not in divisions:
            raise ValueError(f"confirm_removals names partner {division}, which is not in this run")
        held_removals(root, division, run_id)
        started = read_json(run_dir(root, run_id, division) / FETCH, FetchFile).started_at
        pulled = datetime.fromisoformat(started) if started else None
        if pulled and (
            later := [
                p for p in watermark.complete_fulls(root, division) if datetime.fromisoformat(p["pulled_at"]) > pulled
            ]
        ):
            raise ValueError(
                f"confirm_removals: run {later[-1]['run_id']} pulled partner {division} in full after run {run_id} "
                f"and published it without held removals: what {run_id} held is no longer pending, nothing to confirm"
            )
    return confirmed


# --- the guard ------------------------------------------------------------------------------------


def apply(
    recon: Reconciliation,
    published: int,
    *,
    size: int | None,
    previous_size: int | None,
    confirmed: Sequence[str] = (),
    confirmed_run: str | None = None,
    limit: float | None = None,
) -> None:
    """Hold ``recon``'s removals (in place) when there are too many, or the catalogue shrank too much.

    ``published``: the partner's items on the platform; ``size`` / ``previous_size``: the catalogue size of
    this pull and of the last full pull published without held removals (declared total, else records
    delivered); ``confirmed``: 实施编码 a person confirmed as withdrawn (from run ``confirmed_run``). Held
    removals join ``recon.held`` (the platform keeps them) and ``recon.removal_guard`` says why.
    """
    if not recon.full:
        return
    limit = max_removal_rate() if limit is None else limit
    sure = set(confirmed)
    doubtful = [r for r in recon.removed if r["task_code"] not in sure]
    reasons = []
    if doubtful and published and len(doubtful) / published > limit:
        reasons.append(f"本次全量拉取将删除贵方在省一体化平台上已发布的事项 {ratio(len(doubtful), published, limit)}")
    shrink = 1 - size / previous_size if size is not None and previous_size else 0.0
    if doubtful and not sure and shrink > limit:
        reasons.append(
            f"贵方接口给出的事项总数 {size} 较上次已发布的全量拉取（{previous_size}）减少 "
            f"{percent(shrink)} > {percent(limit)}"
        )
    guard: dict[str, Any] = {
        "published": published,
        "removals": len(doubtful),
        "rate": round(len(doubtful) / published, 6) if published else 0.0,
        "limit": limit,
        "size": size,
        "previous_size": previous_size,
        "shrink": round(shrink, 6),
        "confirmed_run": confirmed_run,
        "confirmed": sorted(r["task_code"] for r in recon.removed if r["task_code"] in sure),
        "reasons": reasons,
        "held": [],
    }
    if reasons:
        guard["held"] = sorted(doubtful, key=lambda r: r["task_code"])
        recon.removed = [r for r in recon.removed if r["task_code"] in sure]
        recon.held = sorted({*recon.held, *(r["task_code"] for r in doubtful)})
    if reasons or confirmed_run:
        recon.removal_guard = guard


def removal_notice(guard: Mapping[str, Any], division: str, run_id: str, *, dry_run: bool = False) -> str | None:
    """What the partner is told about held removals, in Chinese; None if none were held. The alert adds how
    to confirm (:func:`how_to_confirm`). ``dry_run``: nothing was pushed this run, so the notice says so."""
    if not guard.get("held"):
        return None
    others = "本次为试运行，其他变更均未推送" if dry_run else "贵方其他变更已正常推送"
    return (
        "；".join(guard["reasons"])
        + f"。为防止接口异常导致误删，这 {len(guard['held'])} 项删除本次暂缓执行，省一体化平台保留其原版本，"
        f"待人工确认；{others}。如确系撤销这些事项，请联系省平台运维人员确认删除"
        f"（确认编号 {division}@{run_id}）；如并非有意撤销，请检查接口返回的事项清单是否完整。"
    )


def how_to_confirm(division: str, run_id: str) -> str:
    """For the operators (the alert): the DAG param that confirms the removals run ``run_id`` held."""
    return (
        f'If the partner confirms the withdrawal: trigger cross_province_sync with {{"partners": ["{division}"], '
        f'"confirm_removals": ["{division}@{run_id}"]}} (docs/runbook.md, Removals held for confirmation).'
    )


def confirmed_notice(guard: Mapping[str, Any]) -> str | None:
    if not guard.get("confirmed_run"):
        return None
    return (
        f"运行 {guard['confirmed_run']} 暂缓的删除已经人工确认：本次删除其中仍未出现在贵方清单中的 "
        f"{len(guard['confirmed'])} 项。"
    )


def recovered_notice(count: int) -> str:
    """Records whose 实施编码 came as a number (or another non-text type) and was recovered: the items were held,
    nothing removed, but the partner's interface sends the wrong type."""
    return (
        f"本次拉取有 {count} 条记录的实施编码不是文本（例如以数字发送），已识别出编码：这些事项未作更新也未删除，"
        "省一体化平台保留其原版本。请按约定以文本发送实施编码，明细见报告“隔离”。"
    )


def hold_back_notice(check: Mapping[str, Any], passed: int, *, full: bool) -> str:
    """The hold-back notice: the rate against the limit and what it is counted over (a full pull's records, or
    the catalogue after an incremental pull), what was held with the partner, what to do."""
    failing, records, catalogue = int(check["failing"]), int(check["records"]), int(check["catalogue"])
    if full:
        over = f"分母为本次全量拉取的 {records} 条记录"
    else:
        over = (
            f"分母为贵方事项目录 {catalogue} 条：本次增量拉取 {records} 条，"
            f"加上本次未变更、平台上已发布的 {catalogue - records} 项"
        )
    return (
        f"本次整体暂缓推送：未通过关键校验或无法识别的记录 {ratio(failing, catalogue, check['max_critical_rate'])}"
        f"（{over}；超过暂缓阈值），省一体化平台保留贵方上一版事项清单；"
        f"已通过校验的 {passed} 项也随之暂缓，见“随同暂缓”。请按“退回”和“隔离”所列原因更正后重新提供，"
        "下一次同步将重新拉取并推送更正后的事项。"
    )
