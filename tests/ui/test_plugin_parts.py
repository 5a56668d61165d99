"""The plugin's parts on their own, without a server: path rules, the rate, the trend, the task link, and GX's
Data Docs page rendered from a stored result.

``tongban_ui`` is importable because tests/ui/conftest.py puts plugins/ on sys.path, as Airflow does.
"""

from __future__ import annotations

import html
import json
import re
from pathlib import Path
from typing import Any

import pytest
from upath import UPath

from tests.conftest import make_record
from tongban.registry import load_registry
from tongban_ui import links
from tongban_ui.data_docs import gx_page, localise
from tongban_ui.pages import trend_svg
from tongban_ui.store import RUN_ID, NotFound, ReportStore, TrendPoint, critical_failure_rate


@pytest.mark.parametrize(
    "run_id",
    [
        "manual__2026-11-28T13:35:01.915496+00:00",
        "scheduled__2026-11-26T18:00:00+00:00",
        "asset_triggered__2026-11-26T18:00:00+00:00",
        "backfill__2026-11-26T18:00:00+00:00",
        "replay-2026_11_26~b",
    ],
)
def test_airflow_run_ids_are_accepted(run_id: str) -> None:
    assert RUN_ID.fullmatch(run_id)


@pytest.mark.parametrize(
    "run_id",
    [
        "",
        ".",
        "..",
        "../x",
        "a/../b",
        "a/b",
        ".hidden",
        "x..y",
        "%2e%2e",
        "a b",
        "x\n",
        "x\n\n",
        "٣٣",
        "a\\b",
        "r" * 251,
    ],
)
def test_anything_else_is_not(run_id: str) -> None:
    assert not RUN_ID.fullmatch(run_id)


def test_paths_stay_in_their_area(tmp_path: Path) -> None:
    store = ReportStore(UPath(tmp_path.as_uri()))
    run = "manual__2026-11-28T13:35:01.915496+00:00"
    assert store.path("reports", run, "440100", ["report.json"]).path == f"{tmp_path}/reports/{run}/440100/report.json"
    for area, division, names in [
        ("reports", "44010", ["report.json"]),
        ("reports", "../../x", ["report.json"]),
        ("secrets", "440100", ["report.json"]),
        ("runs", "440100", ["raw", "..", "items.jsonl"]),
        ("runs", "440100", ["raw", ".hidden"]),
        ("runs", "440100", ["raw", "a/b"]),
        ("runs", "440100", ["d"] * 13),
    ]:
        with pytest.raises(NotFound):
            store.path(area, run, division, names)
    raw = tmp_path / "runs" / run / "440100" / "raw"
    raw.mkdir(parents=True)
    (tmp_path / "outside.txt").write_text("x")
    (raw / "link.json").symlink_to(tmp_path / "outside.txt")
    with pytest.raises(NotFound):
        store.path("runs", run, "440100", ["raw", "link.json"])


def text_of(page: str) -> str:
    """What a reader sees of an HTML page: its text without tags, styles or scripts, spaces collapsed."""
    page = re.sub(r"<(style|script)\b.*?</\1>", " ", page, flags=re.S)
    return " ".join(html.unescape(re.sub(r"<[^>]+>", " ", page)).split())


def test_data_docs_page_is_rendered_from_the_stored_result_with_local_assets_only() -> None:
    """GX's validation page, from the JSON a validation stores (real GX, no Data Docs built), served with no
    script and nothing from elsewhere; rendered once per result."""
    from tongban.validation import validate_items

    records = [make_record(catalog_code=f"{9000 + i:012d}") for i in range(3)]
    records[1]["legal_basis"] = ""
    result = validate_items(records, load_registry().partner("440100")).gx_result
    stored = json.dumps(result, ensure_ascii=False).encode()

    page = gx_page(stored)
    assert gx_page(json.dumps(result, ensure_ascii=False).encode()) is page  # the same result: the cached page
    text = text_of(page)
    assert "tongban_items" in text and "expect_five_level_elements_identical" in text  # the suite, an expectation
    [legal_basis] = re.findall(r"_legal_basis_ok Status Expectation Observed Value (.*?)% unexpected", text)
    assert "1 unexpected values found" in legal_basis and re.search(r"Index False 1 1\b", legal_basis)  # row 1
    served = localise(page, "广州市（440100） · 运行 r1", "../").decode()
    assert not re.search(r"<(link|script)\b", served, re.I)  # GX's CDN stylesheets and scripts, its favicon
    assert not re.search(r"\ssrc=", served) and "index.html" not in served  # its logo on S3, its site's index
    assert "← 返回运行 · GX 校验结果（Data Docs） ：广州市（440100） · 运行 r1" in text_of(served)
    assert '<a href="../">← 返回运行</a>' in served and ".fa-times::before" in served
    assert "<script" not in localise(page, "<script>x</script>", "../").decode()  # the title is text


def test_the_api_server_builds_the_app_without_importing_gx(tmp_path: Path) -> None:
    """GX takes seconds to import: only the first Data Docs page asked for may pay for it, not the API server's
    start (``create_app``, in a fresh interpreter)."""
    import subprocess
    import sys

    from scripts.localenv import REPO

    script = (
        "import sys; sys.path.insert(0, 'plugins')\n"
        "from tongban_ui.app import create_app\n"
        "from tongban_ui.settings import Settings\n"
        f"app = create_app(Settings({tmp_path.as_uri()!r}, None, 'cross_province_sync', 3, 'UTC'))\n"
        "assert any(r.path.endswith('/data_docs.html') for r in app.routes)\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] == 'great_expectations'))\n"
    )
    done = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.strip().splitlines()[-1] == "[]"


def test_critical_failure_rate() -> None:
    assert critical_failure_rate({"fetched": 12, "quarantined": 2, "rejected": 3}) == 0.3
    assert critical_failure_rate({"fetched": 2, "quarantined": 2, "rejected": 0}) is None
    assert critical_failure_rate(None) is None


def test_trend_is_inline_svg_with_escaped_tooltips() -> None:
    svg = trend_svg(
        [
            TrendPoint("<b>", "ok", {"published": 4, "rejected": 1}),
            TrendPoint("r2", "failed", None),
            TrendPoint("r3", "ok", {"published": 0, "rejected": 0}),
            TrendPoint("r4", "held_back", {"published": 0, "rejected": 3}),
        ]
    )
    assert svg.startswith("<svg") and "<b>" not in svg and "&lt;b&gt;：已推送 4，退回 1" in svg
    assert "r2：失败" in svg and svg.count("<rect") == 7
    assert "r4：暂缓发布，已推送 0，退回 3" in svg and 'fill="#ef6c00" width="8" data-status="held_back"' in svg


class Key:
    def __init__(self, task_id: str, map_index: int = 3, dag_id: str = "cross_province_sync") -> None:
        self.dag_id, self.task_id, self.map_index = dag_id, task_id, map_index
        self.run_id, self.try_number = "manual__2026-11-28T13:35:01.915496+00:00", 1


def test_task_link_points_partner_tasks_to_their_report(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(links, "division_of", lambda key: "441900")
    link = links.PartnerReportLink()
    for task_id in ("partner.fetch", "partner_publish.publish"):
        url = link.get_link(None, ti_key=Key(task_id))  # type: ignore[arg-type]
        assert url.endswith("/tongban/runs/manual__2026-11-28T13%3A35%3A01.915496%2B00%3A00/441900/report.html")
    for key in (
        Key("plan", -1),
        Key("province_five_level", -1),
        Key("summarise", -1),
        Key("partner.fetch", -1),
        Key("partner.fetch", dag_id="other"),
    ):
        assert link.get_link(None, ti_key=key) == ""  # type: ignore[arg-type]
    monkeypatch.setattr(links, "division_of", lambda key: None)
    assert link.get_link(None, ti_key=Key("partner_publish.report")) == ""  # type: ignore[arg-type]


def test_task_link_reads_the_division_from_the_rendered_map_index() -> None:
    found: Any = links.LABEL.match("440100 广州市")
    assert found and found.group(1) == "440100"
    assert links.LABEL.match("3") is None and links.LABEL.match("4401001 x") is None


def test_make_chromium_installs_a_cjk_font_with_the_browser(tmp_path: Path) -> None:
    """Issue 12.8: without fonts-noto-cjk every Chinese character of a screenshot is a box; on a machine that
    has neither, `make chromium` installs both (dry run, -n: nothing is installed here)."""
    import subprocess

    from scripts.localenv import REPO

    missing = {"CHROMIUM": tmp_path / "chromium", "CJK_FONT": tmp_path / "font.ttc"}
    planned = subprocess.run(
        ["make", "-n", "-C", str(REPO), "chromium", *(f"{k}={v}" for k, v in missing.items())],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    installs = [line.split()[-1] for line in planned.splitlines() if "apt-get install" in line]
    assert installs == ["chromium", "fonts-noto-cjk"]
    assert (
        Path("/usr/share/fonts/opentype/noto/NotoSansCJK-Regular.ttc").exists()
        or not Path("/usr/bin/chromium").exists()
    ), "Chromium without the CJK font: run `make chromium`"


def test_the_ours_cell_names_each_offer_count_as_the_report_does() -> None:
    """The 沅江事项 cell: configured / offered with the trend, and a tooltip naming every drift count in the words
    of the report's 沅江事项在贵地配置情况 section (outbound.report.COUNT_LABELS), the error when the offer failed."""
    from tongban.files import SummaryOutbound
    from tongban_ui.pages import _env

    cell = _env().get_template("macros.html.j2").module.ours_cell  # type: ignore[attr-defined]
    counts = {"offered": 92, "configured": 90, "missing": 1, "outdated": 1, "withdrawn": 0, "mode_mismatch": 0}
    failed = str(cell(SummaryOutbound(status="failed", sent=2, trend=-2, error="HTTP 503", **counts)))
    title = "未配置 1，版本落后 1，已撤销仍在配置 0，办理模式不一致 0，本次发送 2；未完成：HTTP 503"
    assert f'title="{title}">90/92（-2）！</td>' in failed and 'class="n bad"' in failed
    ok = str(cell(SummaryOutbound(status="ok", sent=0, trend=0, **counts)))
    assert 'title="未配置 1，版本落后 1，已撤销仍在配置 0，办理模式不一致 0，本次发送 0">90/92（±0）</td>' in ok
    assert "–" in str(cell(SummaryOutbound(status="not_run")))
