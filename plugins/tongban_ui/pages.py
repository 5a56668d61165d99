"""HTML of the plugin's pages: plain server-side markup, every value through ``esc``, no script.

The one stylesheet is inline and allowed by its hash in the Content-Security-Policy; charts are inline
SVG drawn with presentation attributes, so the pages need nothing else from anywhere.
"""

from __future__ import annotations

import base64
import hashlib
import html
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from urllib.parse import quote
from zoneinfo import ZoneInfo

from tongban.report import COUNT_LABELS
from tongban_ui.store import GxStats, PartnerLatest, RunSummary, critical_failure_rate

STYLE = """
body { font-family: "Noto Sans CJK SC", "Microsoft YaHei", sans-serif; margin: 1.5em; color: #222; }
table { border-collapse: collapse; margin: 0.5em 0 1.5em; }
th, td { border: 1px solid #ccc; padding: 3px 7px; text-align: left; vertical-align: middle; }
th { background: #f0f3f7; font-weight: 600; white-space: nowrap; }
td { white-space: nowrap; }
td.n { text-align: right; font-variant-numeric: tabular-nums; }
tfoot td { font-weight: 600; background: #fafafa; }
.ok { color: #1b5e20; } .bad { color: #b71c1c; font-weight: 600; } .meta, .legend { color: #555; }
code { font-size: 0.9em; }
"""
_STYLE_HASH = base64.b64encode(hashlib.sha256(STYLE.encode()).digest()).decode()
CSP = (
    f"default-src 'none'; style-src 'sha256-{_STYLE_HASH}'; img-src 'self' data:; "
    "base-uri 'none'; form-action 'none'; frame-ancestors 'self'"
)
DASH = "–"


def esc(value: object) -> str:
    return html.escape(str(value), quote=True)


def layout(title: str, body: str) -> str:
    return (
        f'<!doctype html>\n<html lang="zh-CN"><head><meta charset="utf-8"><title>{esc(title)}</title>'
        f"<style>{STYLE}</style></head>\n<body>\n{body}\n</body></html>\n"
    )


def error_page(status: int, message: str) -> str:
    return layout(f"{status} · 跨省通办同步", f'<h1>{status}</h1><p class="bad">{esc(message)}</p>')


# Column heads: the report's count labels, shortened to the part before the explanation
# (隔离（无法解析或映射） -> 隔离) with the whole label as the tooltip.
COUNTS = [(full.split("（")[0], full) for full in COUNT_LABELS.values()]
RATE = ("关键校验失败率", "退回 ÷（拉取 − 隔离）")


def _head(columns: Iterable[str | tuple[str, str]]) -> str:
    cells = []
    for column in columns:
        text, tip = column if isinstance(column, tuple) else (column, "")
        cells.append(f'<th title="{esc(tip)}">{esc(text)}</th>' if tip else f"<th>{esc(text)}</th>")
    return f"<thead><tr>{''.join(cells)}</tr></thead>"


def _count_cells(counts: dict[str, int] | None) -> str:
    counts = counts or {}
    return "".join(
        f'<td class="n" data-count="{esc(key)}">{esc(counts[key]) if key in counts else DASH}</td>'
        for key in COUNT_LABELS
    )


def _rate_cell(counts: dict[str, int] | None) -> str:
    rate = critical_failure_rate(counts)
    text = DASH if rate is None else f"{rate:.2%}"
    return f'<td class="n{" bad" if rate else ""}" data-rate>{text}</td>'


def _status_cell(status: object) -> str:
    if status == "ok":
        return '<td class="ok" data-status="ok">成功</td>'
    return f'<td class="bad" data-status="{esc(status)}">失败：未生成报告</td>'


def _files_cells(href: str, ok: bool, gx: GxStats | None, docs: bool) -> str:
    """Report links, and the GX result / Data Docs of the partner in that run; ``href``: its folder."""
    report = (
        f'<a href="{href}report.html" target="_blank" rel="noopener">报告</a> · '
        f'<a href="{href}report.json" target="_blank" rel="noopener">JSON</a>'
        if ok
        else DASH
    )
    checks = []
    if gx:
        verdict = "ok" if gx.success else "bad"
        checks.append(
            f'<a class="{verdict}" href="{href}gx_validation_result.json" target="_blank" rel="noopener">'
            f"{gx.successful}/{gx.evaluated} 通过</a>"
        )
    if docs:
        checks.append(f'<a href="{href}data_docs/index.html" target="_blank" rel="noopener">Data Docs</a>')
    return f"<td>{report}</td><td>{' · '.join(checks) or DASH}</td>"


def trend_svg(points: Sequence[tuple[str, dict[str, int] | None]]) -> str:
    """Bars per run, oldest first: published (green, up) and rejected (red, down) from a grey mark of the run,
    each to its own scale; a failed run is a grey block."""
    top = max([(c or {}).get("published", 0) for _, c in points] + [1])
    low = max([(c or {}).get("rejected", 0) for _, c in points] + [1])
    bars = []
    for i, (run_id, counts) in enumerate(points):
        x = i * 12
        if counts is None:
            tip = f"<title>{esc(run_id)}：失败</title>"
            bars.append(f'<rect x="{x}" y="24" width="8" height="4" fill="#9e9e9e">{tip}</rect>')
            continue
        published, rejected = counts.get("published", 0), counts.get("rejected", 0)
        hp, hr = _bar(published, top, 24), _bar(rejected, low, 14)
        tip = f"<title>{esc(run_id)}：已推送 {published}，退回 {rejected}</title>"
        bars.append(f'<rect x="{x}" y="26" width="8" height="2" fill="#cfd8dc">{tip}</rect>')  # the run, even at 0/0
        if hp:
            bars.append(f'<rect x="{x}" y="{24 - hp}" width="8" height="{hp}" fill="#2e7d32">{tip}</rect>')
        if hr:
            bars.append(f'<rect x="{x}" y="30" width="8" height="{hr}" fill="#c62828">{tip}</rect>')
    width = max(12 * len(points), 12)
    label = f"近 {len(points)} 次运行的已推送与退回"
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="44" viewBox="0 0 {width} 44" '
        f'role="img" aria-label="{esc(label)}">{"".join(bars)}</svg>'
    )


def _bar(value: int, scale: int, height: int) -> int:
    return max(1, round(height * value / scale)) if value > 0 else 0


def _when(ts: float, tz: str, short: bool = False) -> str:
    try:
        zone = ZoneInfo(tz)
    except (ValueError, KeyError):  # 'system' and other names zoneinfo does not know
        zone = ZoneInfo("UTC")
    return datetime.fromtimestamp(ts, UTC).astimezone(zone).strftime("%m-%d %H:%M" if short else "%Y-%m-%d %H:%M:%S %Z")


def _run_href(run_id: str) -> str:
    return f"runs/{quote(run_id, safe='')}/"


def overview_page(
    dag_id: str,
    runs: Sequence[RunSummary],
    partners: Iterable[PartnerLatest],
    gx: dict[tuple[str, str], GxStats | None],
    docs: set[tuple[str, str]],
    tz: str,
) -> str:
    """The sync at a glance: each partner's newest run with its trend, then the recent runs."""
    title = "跨省通办事项同步"
    if not runs:
        return layout(title, f"<h1>{title}</h1><p>尚无运行汇总：DAG <code>{esc(dag_id)}</code> 还没有完成的运行。</p>")
    newest = runs[0]
    finished = {run.run_id: run.finished for run in runs}
    rows = []
    for p in partners:
        href = f"{_run_href(p.run_id)}{quote(p.division, safe='')}/"
        key = (p.run_id, p.division)
        rows.append(
            f'<tr data-partner="{esc(p.division)}"><td>{esc(p.division)} {esc(p.name)}</td>'
            f'<td><a href="{_run_href(p.run_id)}" title="{esc(p.run_id)}" data-run="{esc(p.run_id)}">'
            f"{esc(_when(finished[p.run_id], tz, short=True))}</a></td>"
            f"{_status_cell(p.row.get('status'))}{_count_cells(p.row.get('counts'))}{_rate_cell(p.row.get('counts'))}"
            f"<td>{trend_svg(p.trend)}</td>{_files_cells(href, p.row.get('status') == 'ok', gx.get(key), key in docs)}"
            "</tr>"
        )
    run_rows = "".join(_run_row(run, tz) for run in runs)
    latest = (
        f'<a href="{_run_href(newest.run_id)}">{esc(newest.run_id)}</a>（完成于 {esc(_when(newest.finished, tz))}）'
    )
    partner_head = ["合作地区", "最近运行", "状态", *COUNTS, RATE, "趋势（已推送 / 退回）", "报告", "GX 校验"]
    runs_head = ["运行编号", "完成时间", "成功 / 合作地区", "拉取", "退回", "已推送", "失败地区"]
    body = f"""<h1>{title}</h1>
<p class="meta">DAG <code>{esc(dag_id)}</code> · 最近 {len(runs)} 次运行 · 最新：{latest}</p>
<h2>各合作地区最近一次运行</h2>
<table class="partners">{_head(partner_head)}<tbody>{"".join(rows)}</tbody></table>
<p class="legend">关键校验失败率 = 退回 ÷（拉取 − 隔离）。趋势由旧到新：绿色为已推送，红色为退回，灰色为该次失败；
悬停可见运行编号与数字。</p>
<h2>最近运行</h2>
<table class="runs">{_head(runs_head)}<tbody>{run_rows}</tbody></table>"""
    return layout(title, body)


def _run_row(run: RunSummary, tz: str) -> str:
    ok = sum(1 for p in run.partners if p.get("status") == "ok")
    failed = "、".join(esc(d) for d in run.failed)
    return (
        f'<tr data-run="{esc(run.run_id)}"><td><a href="{_run_href(run.run_id)}">{esc(run.run_id)}</a></td>'
        f'<td>{esc(_when(run.finished, tz))}</td><td class="n">{ok} / {len(run.partners)}</td>'
        + "".join(f'<td class="n">{esc(run.totals.get(k, DASH))}</td>' for k in ("fetched", "rejected", "published"))
        + f'<td class="{"bad" if failed else ""}">{failed or DASH}</td></tr>'
    )


def run_page(run: RunSummary, gx: dict[tuple[str, str], GxStats | None], docs: set[tuple[str, str]], tz: str) -> str:
    """One run: every partner's status, counts, critical-failure rate and files, and the totals."""
    rows = []
    for row in run.partners:
        division = str(row.get("partner"))
        key = (run.run_id, division)
        rows.append(
            f'<tr data-partner="{esc(division)}"><td>{esc(division)} {esc(row.get("name", ""))}</td>'
            f"{_status_cell(row.get('status'))}{_count_cells(row.get('counts'))}{_rate_cell(row.get('counts'))}"
            f"{_files_cells(quote(division, safe='') + '/', row.get('status') == 'ok', gx.get(key), key in docs)}</tr>"
        )
    failed = "、".join(esc(d) for d in run.failed)
    warning = f'<p class="bad">失败（未生成报告，平台上保留其上次的清单）：{failed}</p>' if failed else ""
    totals = f"<td>合计</td><td></td>{_count_cells(run.totals)}{_rate_cell(run.totals)}<td></td><td></td>"
    body = f"""<p><a href="../../">← 同步总览</a></p>
<h1>运行 <code>{esc(run.run_id)}</code></h1>
<p class="meta">完成于 {esc(_when(run.finished, tz))} · {len(run.partners)} 个合作地区</p>
{warning}
<table class="partners">{_head(["合作地区", "状态", *COUNTS, RATE, "报告", "GX 校验"])}<tbody>{"".join(rows)}</tbody>
<tfoot><tr data-partner="total">{totals}</tr></tfoot></table>"""
    return layout(f"运行 {run.run_id} · 跨省通办同步", body)
