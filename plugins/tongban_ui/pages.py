"""HTML of the plugin's pages: Jinja2 templates (``templates/``) with autoescape, no script.

The one stylesheet is inline and allowed by its hash in the Content-Security-Policy; charts are inline
SVG drawn with presentation attributes, so the pages need nothing else from anywhere. Every value from
the data goes through the template's escaping (or ``esc`` in the SVG built here).
"""

from __future__ import annotations

import base64
import hashlib
import html
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime
from functools import cache
from pathlib import Path
from typing import Any
from urllib.parse import quote
from zoneinfo import ZoneInfo

import jinja2
from markupsafe import Markup

from tongban import layout
from tongban.files import SummaryPartner
from tongban.outbound.report import COUNT_LABELS as OURS_LABELS
from tongban.registry import divisions
from tongban.report import COUNT_LABELS
from tongban_ui.data_docs import DATA_DOCS_PAGE
from tongban_ui.store import GxStats, PartnerLatest, RunSummary, TrendPoint, critical_failure_rate

STYLE = """
body { font-family: "Noto Sans CJK SC", "Microsoft YaHei", sans-serif; margin: 1em 1.2em; color: #222; }
body { font-size: 14px; }
h1 { font-size: 1.5em; margin: 0.3em 0; } h2 { font-size: 1.2em; margin: 1.2em 0 0.3em; }
table { border-collapse: collapse; margin: 0.4em 0 1.2em; }
th, td { border: 1px solid #ccc; padding: 3px 6px; text-align: left; vertical-align: middle; }
th { background: #f0f3f7; font-weight: 600; white-space: nowrap; }
td { white-space: nowrap; } td.wrap { white-space: normal; max-width: 36em; }
td.name { white-space: normal; min-width: 7em; max-width: 13em; overflow-wrap: anywhere; }
td.n { text-align: right; font-variant-numeric: tabular-nums; }
td.parts { white-space: normal; } td.parts > * { white-space: nowrap; }
.fit { max-width: 100%; overflow-x: auto; } .fit > table { margin-bottom: 0.4em; }
tfoot td { font-weight: 600; background: #fafafa; }
.ok { color: #1b5e20; } .bad { color: #b71c1c; font-weight: 600; } .held { color: #8a4b00; font-weight: 600; }
.meta, .legend, .muted { color: #555; } .extra { color: #555; font-size: 0.9em; }
.banner { border: 2px solid #b71c1c; padding: 0.5em 0.8em; margin: 0.6em 0; color: #b71c1c; overflow-wrap: anywhere; }
.banner.held { border-color: #e65100; color: #8a4b00; background: #fff8e1; }
.banner.note { border-color: #90a4ae; color: #37474f; }
code { font-size: 0.9em; }
form input[type=text] { width: 28em; padding: 3px; } form button { padding: 3px 10px; }
"""
_STYLE_HASH = base64.b64encode(hashlib.sha256(STYLE.encode()).digest()).decode()
CSP = (
    f"default-src 'none'; style-src 'sha256-{_STYLE_HASH}'; img-src 'self' data:; "
    "base-uri 'none'; form-action 'self'; frame-ancestors 'self'"
)
DASH = "–"

STATUS = {  # summary status -> (label, css class)
    "ok": ("成功", "ok"),
    "held_back": ("暂缓发布", "held"),
    "failed": ("失败：未生成报告", "bad"),
}
# count classes shown as columns (the rest are listed in one cell, non-zero ones only)
OVERVIEW_COUNTS = ("fetched", "quarantined", "rejected", "outstanding", "added", "changed", "removed", "published")
RUN_COUNTS = (*OVERVIEW_COUNTS[:4], "added", "changed", "removed", "unchanged", "published")


def short(key: str) -> str:
    """A count's column head: the report's label before its explanation (隔离（无法解析或映射） -> 隔离)."""
    return COUNT_LABELS.get(key, key).split("（")[0]


def esc(value: object) -> str:
    return html.escape(str(value), quote=True)


def zone(tz: str) -> ZoneInfo:
    try:
        return ZoneInfo(tz)
    except (ValueError, KeyError):  # 'system' and other names zoneinfo does not know
        return ZoneInfo("UTC")


def zone_label(tz: str) -> str:
    """The one time zone every time on the pages is in, named: ``Asia/Shanghai（UTC+08:00）``."""
    z = zone(tz)
    offset = datetime.now(z).strftime("%z")
    return f"{z.key}（UTC{offset[:3]}:{offset[3:]}）"


def when(ts: float | str | datetime | None, tz: str, short_form: bool = False) -> str:
    """POSIX time, ISO 8601 text or a datetime (naive: UTC) in the pages' zone; the zone is named once per
    page (``zone_label``)."""
    if ts is None or ts == "":
        return DASH
    if isinstance(ts, datetime):
        moment = ts
    else:
        moment = datetime.fromisoformat(ts) if isinstance(ts, str) else datetime.fromtimestamp(ts, UTC)
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(zone(tz)).strftime("%m-%d %H:%M" if short_form else "%Y-%m-%d %H:%M")


def rate_of(counts: Mapping[str, int] | None) -> float | None:
    return critical_failure_rate(dict(counts) if counts else None)


def row_rate(row: SummaryPartner) -> float | None:
    """A partner's hold-back rate of a run, over its catalogue as the run counted it (``critical_rate`` of its
    summary row); from the counts (rejected over the parsed records) for summaries written before it."""
    return row.critical_rate if row.critical_rate is not None else rate_of(row.counts)


def above(rate: float | None, limit: float | None) -> bool:
    """Whether a critical-failure rate is over the hold-back threshold (coloured, and held back)."""
    return rate is not None and limit is not None and rate > limit


def extras(counts: Mapping[str, int] | None, shown: Sequence[str]) -> list[tuple[str, str, int]]:
    """The non-zero count classes not shown as columns: (key, label, value)."""
    return [(k, short(k), v) for k, v in (counts or {}).items() if k not in shown and v]


def trend_svg(points: Sequence[TrendPoint]) -> Markup:
    """Bars per run, oldest first: published (green, up) and rejected (red, down) from a mark of the run,
    each to its own scale; the mark is amber when the partner was held back, a failed run a grey block."""
    top = max([(p.counts or {}).get("published", 0) for p in points] + [1])
    low = max([(p.counts or {}).get("rejected", 0) for p in points] + [1])
    bars = []
    for i, point in enumerate(points):
        x = i * 12
        if point.counts is None:
            tip = f"<title>{esc(point.run_id)}：失败</title>"
            bars.append(f'<rect x="{x}" y="24" width="8" height="4" fill="#9e9e9e">{tip}</rect>')
            continue
        published, rejected = point.counts.get("published", 0), point.counts.get("rejected", 0)
        hp, hr = _bar(published, top, 24), _bar(rejected, low, 14)
        held = point.status == "held_back"
        state = "暂缓发布，" if held else ""
        tip = f"<title>{esc(point.run_id)}：{state}已推送 {published}，退回 {rejected}</title>"
        mark = 'y="22" height="6" fill="#ef6c00"' if held else 'y="26" height="2" fill="#cfd8dc"'
        bars.append(f'<rect x="{x}" {mark} width="8" data-status="{esc(point.status)}">{tip}</rect>')
        if hp:
            bars.append(f'<rect x="{x}" y="{24 - hp}" width="8" height="{hp}" fill="#2e7d32">{tip}</rect>')
        if hr:
            bars.append(f'<rect x="{x}" y="30" width="8" height="{hr}" fill="#c62828">{tip}</rect>')
    width = max(12 * len(points), 12)
    label = f"近 {len(points)} 次运行的已推送与退回"
    return Markup(
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="44" viewBox="0 0 {width} 44" '
        f'role="img" aria-label="{esc(label)}">{"".join(bars)}</svg>'
    )


def _bar(value: int, scale: int, height: int) -> int:
    return max(1, round(height * value / scale)) if value > 0 else 0


def run_href(run_id: str) -> str:
    return f"runs/{quote(run_id, safe='')}/"


@cache
def _env() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(Path(__file__).with_name("templates")),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.globals.update(
        style=Markup(STYLE),
        STATUS=STATUS,
        DASH=DASH,
        COUNT_LABELS=COUNT_LABELS,
        OURS_LABELS=OURS_LABELS,  # the ours column's counts, named as the report's 沅江事项 section names them
        layout=layout,  # file names in links (the app serves a file under its own name; URL folders are its routes)
        short=short,
        when=when,
        rate_of=rate_of,
        row_rate=row_rate,
        above=above,
        extras=extras,
        trend_svg=trend_svg,
        run_href=run_href,
        DATA_DOCS_PAGE=DATA_DOCS_PAGE,
        q=lambda value: quote(str(value), safe=""),
    )
    return env


def render(template: str, **context: Any) -> str:
    return _env().get_template(template).render(**context)


def error_page(status: int, message: str, run_home: str | None = None) -> str:
    """The plugin's error page; ``run_home``: the run page (relative), linked back to when the error is a page of
    a run's."""
    return render("error.html.j2", status=status, message=message, run_home=run_home)


def overview_page(
    dag_id: str,
    runs: Sequence[RunSummary],
    partners: Iterable[PartnerLatest],
    gx: dict[tuple[str, str], GxStats | None],
    tz: str,
) -> str:
    """The sync at a glance: each partner's newest run with its trend, then the recent runs."""
    return render(
        "overview.html.j2",
        dag_id=dag_id,
        runs=runs,
        partners=list(partners),
        finished={run.run_id: run.finished for run in runs},
        gx=gx,
        tz=tz,
        zone=zone_label(tz),
        counts=OVERVIEW_COUNTS,
    )


def run_page(
    run: RunSummary,
    gx: dict[tuple[str, str], GxStats | None],
    tz: str,
    reports: Mapping[str, dict[str, Any] | None],
    provinces: Mapping[str, bool],
    library: str | None = None,
) -> str:
    """One run: banners for held-back, failed and undelivered partners, every partner's status, counts,
    rate and files with the totals, the province checks' results (``provinces``: code -> whether its GX
    result was stored), our library check's Data Docs (``library``: the home region's name, when its GX result
    was stored), and the partners' 待整改 lists."""
    return render(
        "run.html.j2",
        run=run,
        gx=gx,
        tz=tz,
        zone=zone_label(tz),
        counts=RUN_COUNTS,
        reports=reports,
        provinces=provinces,
        province_names=divisions()["provinces"],
        library=library,
        outstanding_shown=OUTSTANDING_SHOWN,
    )


OUTSTANDING_SHOWN = 50  # per partner on the run page; the report lists them all


def trace_page(query: str, trace: Any, tz: str) -> str:
    return render("trace.html.j2", query=query, trace=trace, tz=tz, zone=zone_label(tz))
