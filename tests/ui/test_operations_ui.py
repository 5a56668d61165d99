"""Issue 12 in the browser (real API server, Debian Chromium): a held-back partner has a status of its own with
its report and the reason; only rates above the threshold are red and the threshold is shown; the 待整改 list;
undelivered reports and stale partners; the item trace; Data Docs rendered from the stored GX result; one named
time zone; and screenshots a person can open (saved under the session's output folder, see the ``screenshots`` fixture).
"""

from __future__ import annotations

import importlib.util
import json
import re
import shutil
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from upath import UPath

from tests.ui.conftest import (
    HELD,
    LONG_NAME,
    NEW_RUN,
    OLD_RUN,
    OUTSTANDING_ITEM,
    PROVINCE,
    UNDELIVERED,
    Browser,
    Server,
    run_path,
)
from tests.ui.test_plugin_page import Rows
from tests.ui.test_plugin_parts import text_of
from tongban import report
from tongban.files import PublishFile
from tongban.layout import REJECTED, REPORTS, RUNS, SUMMARY
from tongban.reconcile import Reconciliation
from tongban.registry import load_registry

GX_STYLES = "render/view/static/styles/data_docs_default_styles.css"  # in the installed GX package


def _code(server: Server, run_id: str, division: str, name: str) -> str:
    rejected = (server.home / RUNS / run_id / division / REJECTED).read_text(encoding="utf-8")
    return next(r["record"]["task_code"] for r in map(json.loads, rejected.splitlines()) if r["record"]["name"] == name)


def test_held_back_partner_has_its_own_status_and_its_report(server: Server, browser: Browser) -> None:
    overview = Rows(browser.dom("/tongban/"))
    held = overview.rows[HELD]
    assert held["data-status:held_back"] == "暂缓发布"  # was 「失败：未生成报告」
    assert run_path(NEW_RUN, f"{HELD}/report.html").removeprefix("/tongban/") in held["links"]
    dom = browser.dom("/tongban/")
    [runs_row] = re.findall(rf'<tr data-run="{re.escape(NEW_RUN)}">.*?</tr>', dom, re.S)
    assert "2 / 4 成功" in runs_row and HELD in runs_row  # the runs table: 440100 and 440300 succeeded
    run = browser.dom(run_path(NEW_RUN))
    [banner] = re.findall(r'<div class="banner held"[^>]*>.*?</div>', run, re.S)
    assert "暂缓发布" in banner and "4/10 = 40% &gt; 20%" in banner  # the report's own notice: rate and threshold
    assert f'href="{HELD}/report.html"' in banner
    assert Rows(run).rows[HELD]["data-status:held_back"] == "暂缓发布"
    report = browser.dom(run_path(NEW_RUN, f"{HELD}/report.html"))  # the partner's own report says why, in numbers
    assert "4/10 = 40% &gt; 20%" in report and "已通过校验的 6 项也随之暂缓" in report


def test_only_rates_above_the_threshold_are_red_and_the_threshold_is_shown(server: Server, browser: Browser) -> None:
    dom = browser.dom("/tongban/")
    assert "阈值 20%" in dom
    cells = dict(re.findall(r'<tr data-partner="(\d+)">.*?<td class="n( bad)?" data-rate', dom, re.S))
    assert cells["440100"] == ""  # 11.11% of its catalogue (2 of the 10 parseable records of its incremental pull)
    assert cells[HELD] == " bad"  # 40%
    gx = re.search(r'<tr data-partner="440100">.*?<a class="([^"]*)" href="[^"]*gx_validation_result.json"', dom, re.S)
    assert gx and gx.group(1) == ""  # the GX link is not red either


def test_outstanding_rejection_stays_listed_on_incremental_nights(server: Server, browser: Browser) -> None:
    code = _code(server, OLD_RUN, "440100", OUTSTANDING_ITEM)
    new = server.summaries[NEW_RUN]
    row = next(r for r in new.partners if r.partner == "440100")
    assert row.counts and row.counts["rejected"] == 2 and row.counts["outstanding"] == 3  # 甲 is not in tonight's pull
    run = browser.dom(run_path(NEW_RUN))
    [item] = re.findall(rf'<tr data-item="{code}">.*?</tr>', run, re.S)
    assert OUTSTANDING_ITEM in item and "退回" in item and re.search(r'<td class="n">2</td>', item)
    assert f'href="../../trace?q={code}"' in item
    report = json.loads(server.get(run_path(NEW_RUN, "440100/report.json"))[2])
    [listed] = [o for o in report["outstanding"] if o["task_code"] == code]
    assert listed["first_run"] == OLD_RUN and listed["nights"] == 2


def test_undelivered_reports_and_stale_partners_are_shown(server: Server, browser: Browser) -> None:
    run = browser.dom(run_path(NEW_RUN))
    assert re.search(r'data-banner="undelivered">.*?' + UNDELIVERED, run, re.S)
    assert re.search(r'data-banner="failed">.*?370100.*?从未成功拉取', run, re.S)
    page = Rows(run)
    assert "报告未送达" in page.rows[UNDELIVERED]["text"] and "从未成功拉取" in page.rows["370100"]["text"]
    overview = browser.dom("/tongban/")
    [runs_row] = re.findall(rf'<tr data-run="{re.escape(NEW_RUN)}">.*?</tr>', overview, re.S)
    assert re.search(rf'data-undelivered="?"?>{UNDELIVERED}<', runs_row)


def test_item_trace_page_answers_why_an_item_is_not_on_the_platform(server: Server, browser: Browser) -> None:
    code = _code(server, OLD_RUN, "440100", OUTSTANDING_ITEM)
    for query in (code, OUTSTANDING_ITEM):
        dom = browser.dom(f"/tongban/trace?q={query}")
        assert f'data-trace-item="{code}"' in dom
        assert 'data-on-platform="no"' in dom and 'data-outstanding-state="open"' in dom
        old = re.findall(rf'<tr data-run="{re.escape(OLD_RUN)}" data-stage="([^"]+)">.*?</tr>', dom, re.S)
        assert old == ["拉取", "校验", "送达"]
        assert "行使层级与事项的行使层级不一致" in dom  # the rejection's reason, from the run files
        new = re.findall(rf'<tr data-run="{re.escape(NEW_RUN)}" data-stage="[^"]+">(.*?)</tr>', dom, re.S)
        assert len(new) == 1 and "增量拉取未包含" in new[0]
    published = _code(server, NEW_RUN, HELD, "退回事项0")
    assert 'data-on-platform="no"' in browser.dom(f"/tongban/trace?q={published}")
    assert "data-trace-empty" in browser.dom("/tongban/trace?q=不存在的事项名称")


def test_data_docs_are_rendered_from_the_stored_gx_result(server: Server, browser: Browser) -> None:
    """The partner's and the province check's Data Docs: GX's validation page of the stored result, with GX's
    own stylesheet (inline, from the installed package), nothing from a CDN, no script, under the sandbox."""
    spec = importlib.util.find_spec("great_expectations")  # found, not imported
    assert spec and spec.origin
    gx_styles = (Path(spec.origin).parent / GX_STYLES).read_text(encoding="utf-8")
    province_docs = run_path(NEW_RUN, f"provinces/{PROVINCE}/data_docs.html")
    for path in (run_path(NEW_RUN, "440100/data_docs.html"), province_docs):
        status, headers, page = server.get(path)
        assert status == 200 and headers["content-type"] == "text/html; charset=utf-8"
        csp = headers["content-security-policy"]
        assert "sandbox" in csp and "default-src 'none'" in csp and "script-src" not in csp
        assert not re.search(r"<(link|script)\b|\ssrc=[\"']?(https?:)?//|url\([\"']?(https?:)?//", page, re.I)  # no CDN
        assert gx_styles.split("{% endif %}", 1)[1].split("url(")[0].strip() in page  # GX's stylesheet, to its logo
        assert ".fa-times::before" in page  # the status icons, without Font Awesome
    partner = text_of(browser.dom(run_path(NEW_RUN, "440100/data_docs.html")))
    assert "← 返回运行 · GX 校验结果（Data Docs） ：广州市（440100） · 运行 " + NEW_RUN in partner
    assert "Expectation Suite: tongban_items" in partner and "Status: Failed" in partner
    assert "Evaluated Expectations 33 Successful Expectations 31" in partner
    # the failed expectation and its rows: the two rejected records, after the one accepted (rows 1 and 2)
    [legal_basis] = re.findall(r"_legal_basis_ok Status Expectation Observed Value (.*?)% unexpected", partner)
    assert "2 unexpected values found" in legal_basis and re.search(r"Index False 2 1, 2\b", legal_basis)
    province = text_of(browser.dom(province_docs))
    assert f"广东省（{PROVINCE}）省内五级N同比对 · 运行 {NEW_RUN}" in province
    assert "expect_five_level_elements_identical" in province and "2 unexpected values found" in province
    codes = re.findall(r"'differing': \['(\w+)'\]", province)  # each partner's item 1 differs from the other's
    assert len(codes) == 2 and {c[2:8] for c in codes} == {"440100", "440300"}
    # linked from the run page where the check stored its result; back to the run page from the Data Docs
    run = browser.dom(run_path(NEW_RUN))
    assert f'href="provinces/{PROVINCE}/data_docs.html"' in run
    assert f"广东省（{PROVINCE}）比对结果" in text_of(run)  # the province by name, not its code alone
    assert '<a href="../../">← 返回运行</a>' in server.get(province_docs)[2]
    status, _, missing = server.get(run_path(NEW_RUN, "370100/data_docs.html"))  # failed: no result stored
    assert status == 404 and "未找到" in missing and '<p><a href="../">← 返回运行</a></p>' in missing


def test_data_docs_failed_only_filter_and_more_info_work_without_script(server: Server, browser: Browser) -> None:
    """GX's "Failed Only" button and "Show more info..." link ran GX's script, which the page may not run: they did
    nothing, and the info was always open. The stylesheet does it: choosing Failed Only leaves the failed
    expectations (2 of 33 for 广州) shown, Show All all of them; the info opens at its link."""
    sections = (
        "Array.from(document.querySelectorAll('div[id^=\"section-\"]')).filter(e => /^section-[0-9]+$/.test(e.id))"
        ".filter(e => e.checkVisibility()).length"
    )
    info = "document.querySelector('.collapse').checkVisibility()"
    path = run_path(NEW_RUN, "440100/data_docs.html")
    shown = browser.evaluate(path, f"[{sections}, {info}]")
    assert shown == [1 + 32, False]  # the overview and a section per column (33 expectations); the info closed
    failed = f"(document.getElementById('option2').click(), [{sections}, {info}])"
    assert browser.evaluate(path, failed) == [1 + 2, False]  # the two failed expectations' sections
    everything = f"(document.getElementById('option2').click(), document.getElementById('option1').click(), {sections})"
    assert browser.evaluate(path, everything) == 1 + 32
    opened = (
        "(document.querySelector('a[data-toggle=collapse]').click(), document.querySelector('.collapse')"
        ".checkVisibility())"
    )
    assert browser.evaluate(path, opened) is True


def test_library_check_data_docs_are_linked_from_the_run_that_stored_them(server: Server, browser: Browser) -> None:
    """沅江's own library check (internal): its GX result's Data Docs page, linked from the run page of that run
    only; the second item, without a legal basis, is the failed row."""
    assert 'href="internal/data_docs.html"' in browser.dom(run_path(NEW_RUN))
    assert "internal/data_docs.html" not in browser.dom(run_path(OLD_RUN))  # that run stored no library result
    status, headers, page = server.get(run_path(NEW_RUN, "internal/data_docs.html"))
    assert status == 200 and "sandbox" in headers["content-security-policy"] and "<script" not in page
    text = text_of(page)
    assert f"沅江市事项库校验（内部） · 运行 {NEW_RUN}" in text and "Expectation Suite: tongban_items" in text
    [legal_basis] = re.findall(r"_legal_basis_ok Status Expectation Observed Value (.*?)% unexpected", text)
    assert "1 unexpected values found" in legal_basis and re.search(r"Index False 1 1\b", legal_basis)
    assert server.get(run_path(OLD_RUN, "internal/data_docs.html"))[0] == 404


CORRUPT_RUN = "manual__2026-11-28T08:00:00+00:00"  # its GX results were damaged in storage
NARROW_RUN = "manual__2026-11-28T09:00:00+00:00"  # a report of long 待整改 reasons


@pytest.mark.parametrize(
    ("rest", "content"),
    [
        ("440100/gx_validation_result.json", '{"success": true, "results": ['),  # cut off: not JSON
        ("440300/gx_validation_result.json", '{"partner": "440300"}'),  # JSON, but not a GX result
        ("provinces/440000/gx_validation_result.json", "[1, 2]"),
        ("internal/gx_validation_result.json", "\ufffd\x00"),
    ],
)
def test_a_corrupt_gx_result_is_named_on_the_plugins_error_page(
    server: Server, browser: Browser, rest: str, content: str
) -> None:
    """A stored GX result that cannot be read gives the plugin's error page naming the file, not a traceback."""
    area = REPORTS if rest.startswith("internal/") else RUNS
    stored = server.home / area / CORRUPT_RUN / rest
    stored.parent.mkdir(parents=True, exist_ok=True)
    stored.write_text(content, encoding="utf-8")
    path = run_path(CORRUPT_RUN, rest.replace("gx_validation_result.json", "data_docs.html"))
    try:
        status, headers, page = server.get(path)
        text = text_of(browser.dom(path))
    finally:  # the other tests (the item trace reads every run folder) never see this run
        shutil.rmtree(server.home / area / CORRUPT_RUN)
    assert status == 500 and "style-src 'sha256-" in headers["content-security-policy"]  # the plugin's own page
    assert f"无法读取 GX 校验结果文件 {area}/{CORRUPT_RUN}/{rest}" in text, text
    home = "../../" if rest.startswith("provinces/") else "../"  # back to the run page, as the Data Docs bar links
    assert f'<p><a href="{home}">← 返回运行</a></p>' in page
    assert "Traceback" not in page and "Error" not in text


def test_times_are_in_one_named_zone(server: Server, browser: Browser) -> None:
    dom = browser.dom(run_path(NEW_RUN))
    assert "Asia/Shanghai（UTC+08:00）" in dom
    finished = (server.home / REPORTS / NEW_RUN / SUMMARY).stat().st_mtime
    shown = datetime.fromtimestamp(finished, ZoneInfo("Asia/Shanghai")).strftime("%Y-%m-%d %H:%M")
    assert f"完成于 {shown}" in dom


def test_the_run_page_fits_1280_px_with_a_long_partner_name(server: Server, browser: Browser) -> None:
    """Airflow frames the page in its own: at 1,280 px nothing may be cut off or scroll sideways, however long a
    partner's name (the held-back partner's, in its row and banner) or markup in one (440300's). Narrower, the
    partners' table scrolls in its own box, not the page. The screenshot test below shows the page."""
    path = run_path(NEW_RUN)
    assert LONG_NAME in browser.dom(path)
    widths = browser.widths(path, width=1280)
    assert widths["innerWidth"] == 1280
    assert widths["scrollWidth"] <= widths["clientWidth"] and widths["right"] <= widths["clientWidth"], widths
    narrow = browser.widths(path, width=1000)
    assert narrow["scrollWidth"] <= narrow["clientWidth"], narrow  # the table scrolls, not the page


def test_report_headings_keep_to_one_line_however_long_the_rows(server: Server, browser: Browser) -> None:
    """A table heading never wraps: the 待整改 table's 已持续（次运行）, a column of small numbers beside long reasons,
    was squeezed to a character or two a line. Counted as the line boxes of each heading's text, in Chromium."""
    lines = (
        "Array.from(document.querySelectorAll('th'), th => { const text = document.createRange(); "
        "text.selectNodeContents(th); "
        "return [th.textContent, new Set(Array.from(text.getClientRects(), r => Math.round(r.top))).size]; })"
    )
    path = run_path(NEW_RUN, "440100/report.html")
    for width in (1280, 1000):
        headings = browser.evaluate(path, lines, width=width)
        assert "已持续（次运行）" in {text for text, _ in headings}
        assert [(text, count) for text, count in headings if count != 1] == [], width


def test_report_kinds_keep_to_one_line_in_a_narrow_window(server: Server, browser: Browser) -> None:
    """The 待整改 table's 类别 (退回 / 隔离 / 平台拒收) beside long reasons: 平台拒收 was split over two lines in a
    window narrower than the table. Counted as the line boxes of each cell's text, in Chromium."""
    partner = load_registry().partner("440100")
    reason = "省一体化平台拒收：办理时限超出法定时限，且设定依据与实施依据不一致，请核对后重新提供。" * 2
    outstanding = [
        {"task_code": f"11440100MB2C0000001{i:012d}", "name": f"待整改事项{i}", "kind": kind, "reason": reason,
         "first_run": NEW_RUN, "first_seen": "2026-11-27T09:30:00+00:00", "nights": 3}
        for i, kind in enumerate(("platform_rejected", "rejected", "quarantined"))
    ]  # fmt: skip
    built = report.build(
        partner=partner, run_id=NARROW_RUN, fetched=3, quarantined=[], rejected=[], warnings=[],
        recon=Reconciliation(), publish=PublishFile(dry_run=False, accepted=[], rejected=[]), outstanding=outstanding,
    )  # fmt: skip
    report.write(built, UPath(server.home.as_uri()) / REPORTS / NARROW_RUN / "440100")
    lines = (
        "Array.from(document.querySelectorAll('#outstanding ~ table')[0].querySelectorAll('td:nth-child(3)'), td => {"
        " const text = document.createRange(); text.selectNodeContents(td);"
        " return [td.textContent, new Set(Array.from(text.getClientRects(), r => Math.round(r.top))).size]; })"
    )
    try:
        for width in (1280, 900, 700):
            kinds = browser.evaluate(run_path(NARROW_RUN, "440100/report.html"), lines, width=width)
            assert [text for text, _ in kinds] == ["平台拒收", "退回", "隔离"]
            assert [(text, count) for text, count in kinds if count != 1] == [], width
    finally:
        shutil.rmtree(server.home / REPORTS / NARROW_RUN)


def test_screenshots_of_the_overview_a_held_back_run_a_report_a_trace_and_data_docs(
    server: Server, browser: Browser, screenshots: Path
) -> None:
    """Saved for a person to open (Chinese must be readable: `make chromium` installs fonts-noto-cjk)."""
    code = _code(server, OLD_RUN, "440100", OUTSTANDING_ITEM)
    shots = {
        "overview.png": "/tongban/",
        "run-with-held-back-partner.png": run_path(NEW_RUN),
        "report-held-back.png": run_path(NEW_RUN, f"{HELD}/report.html"),
        "report-outstanding.png": run_path(NEW_RUN, "440100/report.html"),
        "item-trace.png": f"/tongban/trace?q={code}",
        "data-docs.png": run_path(NEW_RUN, "440100/data_docs.html"),
        "data-docs-province.png": run_path(NEW_RUN, f"provinces/{PROVINCE}/data_docs.html"),
        "no-data-docs.png": run_path(NEW_RUN, "370100/data_docs.html"),  # the error page, linking back to the run
    }
    for name, path in shots.items():  # GX's pages long enough to show the failed expectations
        browser.screenshot(path, screenshots / name, height=2400 if name.startswith("data-docs") else 1100)
    assert set(shots) <= {p.name for p in screenshots.glob("*.png")}
