"""Acceptance of the Airflow UI plugin (issue 6, item 3) against a real API server and real Chromium.

The page must show the right numbers for a finished run; an unauthenticated request is refused; a
``../`` path (also URL-encoded) is refused; report content comes out escaped; every answer has a CSP.
"""

from __future__ import annotations

from html.parser import HTMLParser
from typing import Any

import pytest

from tests.ui.conftest import (
    EVIL_ITEM,
    EVIL_NAME,
    FORMULA_ITEM,
    HELD,
    NEW_RUN,
    OLD_RUN,
    SECRET,
    Browser,
    Server,
    run_path,
)
from tongban.files import SummaryFile, SummaryPartner

COUNT_KEYS = ("fetched", "quarantined", "rejected", "added", "changed", "removed", "unchanged", "published")
OVERVIEW_KEYS = ("fetched", "quarantined", "rejected", "outstanding", "added", "changed", "removed", "published")


class Rows(HTMLParser):
    """Cells of every ``<tr data-partner>``: its data-count / data-status / data-rate / data-run cells, and links."""

    def __init__(self, dom: str) -> None:
        super().__init__()
        self.rows: dict[str, dict[str, Any]] = {}
        self.scripts = 0
        self._row: dict[str, Any] | None = None
        self._cell: str | None = None
        self.feed(dom)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        if tag == "script":
            self.scripts += 1
        elif tag == "tr" and a.get("data-partner"):
            self._row = self.rows.setdefault(str(a["data-partner"]), {"links": [], "text": ""})
        elif self._row is not None and tag == "td":
            for key in ("data-count", "data-status", "data-rate"):
                if key in a:
                    self._cell = f"{key}:{a[key] or ''}"
                    self._row[self._cell] = ""
        elif self._row is not None and tag == "a":
            self._row["links"].append(a.get("href"))
            if a.get("data-run"):
                self._row["run"] = a["data-run"]

    def handle_endtag(self, tag: str) -> None:
        if tag == "td":
            self._cell = None
        elif tag == "tr":
            self._row = None

    def handle_data(self, data: str) -> None:
        if self._row is not None:
            self._row["text"] += data
            if self._cell:
                self._row[self._cell] += data.strip()


def _row(summary: SummaryFile, division: str) -> SummaryPartner:
    return next(r for r in summary.partners if r.partner == division)


def _rate(row: SummaryPartner) -> str:
    """The hold-back rate of a summary row, as the pages print it."""
    return f"{row.critical_rate:.2%}"


def test_sync_page_shows_each_partners_newest_run(server: Server, browser: Browser) -> None:
    page = Rows(browser.dom("/tongban/"))
    new = server.summaries[NEW_RUN]
    assert set(page.rows) == {"440100", "440300", HELD, "370100"}
    for division in ("440100", "440300"):
        row, expected = page.rows[division], _row(new, division)
        assert row["run"] == NEW_RUN and row["data-status:ok"].startswith("成功")
        for key in OVERVIEW_KEYS:
            assert row[f"data-count:{key}"] == str(expected.counts[key]), (division, key)
        assert row["data-rate:"] == _rate(expected)
    # concrete numbers, so the test cannot pass on two equal mistakes: an incremental night, 2 rejected of its
    # catalogue of 18 (the 12 records pulled and 6 published items it did not carry), not of the 12 - 2 parseable
    # records pulled (20%, the hold-back threshold); 3 待整改 (the older run's rejection the incremental night did
    # not carry again, and tonight's two)
    assert page.rows["440100"]["data-count:rejected"] == "2" and page.rows["440100"]["data-rate:"] == "11.11%"
    assert 'data-rate title="目录 18 条，阈值 20%">11.11%<' in server.get("/tongban/")[2]
    assert page.rows["440100"]["data-count:outstanding"] == "3"
    failed = page.rows["370100"]
    assert failed["run"] == NEW_RUN and failed["data-status:failed"].startswith("失败")
    assert failed["data-count:fetched"] == "–" and failed["data-rate:"] == "–"
    # links: the report (HTML, xlsx, JSON), the GX result and its Data Docs page, where the run stored them
    for division in ("440100", "440300", HELD):
        folder = run_path(NEW_RUN, f"{division}/").removeprefix("/tongban/")
        for name in ("report.html", "report.xlsx", "report.json", "gx_validation_result.json", "data_docs.html"):
            assert folder + name in page.rows[division]["links"], (division, name)
    assert "31/33 通过" in page.rows["440100"]["text"]  # the stored result's statistics (2 checks failed)
    assert not any("report" in str(link) or "data_docs" in str(link) for link in failed["links"])


def test_run_page_shows_that_runs_numbers_and_totals(server: Server, browser: Browser) -> None:
    page = Rows(browser.dom(run_path(OLD_RUN)))
    old = server.summaries[OLD_RUN]
    for division in ("440100", "440300", "370100"):
        expected = _row(old, division).counts
        for key in COUNT_KEYS:
            assert page.rows[division][f"data-count:{key}"] == str(expected[key]), (division, key)
        assert page.rows[division]["data-rate:"] == _rate(_row(old, division))
    for key in COUNT_KEYS:
        assert page.rows["total"][f"data-count:{key}"] == str(old.totals[key])
    assert page.rows["440300"]["data-count:rejected"] == "2" and page.rows["440300"]["data-rate:"] == "25.00%"
    # every count class has its total, not "–" (issue 12.2): the extra ones in their own cell, non-zero ones
    new = Rows(browser.dom(run_path(NEW_RUN)))
    totals = server.summaries[NEW_RUN].totals
    assert totals["held"] == 0 and totals["outstanding"] == 3 + 1 + 4  # 440100, 440300, the held-back 440400
    assert new.rows["total"]["data-count:outstanding"] == "8"
    assert "–" not in [v for k, v in new.rows["total"].items() if k.startswith("data-count:")]


def test_trend_covers_the_recent_runs(server: Server) -> None:
    status, _, body = server.get("/tongban/")
    assert status == 200
    for run_id in (OLD_RUN, NEW_RUN):  # each bar's tooltip names its run and its numbers
        counts = _row(server.summaries[run_id], "440100").counts
        assert f"{run_id}：已推送 {counts['published']}，退回 {counts['rejected']}" in body
    assert f"{NEW_RUN}：失败" in body  # 370100 failed in the newer run
    assert f"{NEW_RUN}：暂缓发布，已推送 0，退回 4" in body  # held back: a status of its own, not failed


def test_markup_from_the_data_is_shown_as_text(server: Server, browser: Browser) -> None:
    page = Rows(browser.dom("/tongban/"))
    assert page.scripts == 0
    assert EVIL_NAME in page.rows["440300"]["text"]  # the partner name, as text
    report = Rows(browser.dom(run_path(NEW_RUN, "440100/report.html")))
    assert report.scripts == 0
    status, headers, raw = server.get(run_path(NEW_RUN, "440100/report.html"))
    assert status == 200 and headers["content-type"].startswith("text/html")
    assert "<script" not in raw and "&lt;script&gt;alert(1)&lt;/script&gt;" in raw
    assert "=HYPERLINK(&#34;http://x&#34;,&#34;y&#34;)" in raw  # inert text, not markup
    status, _, raw_page = server.get("/tongban/")
    assert "<script" not in raw_page and "&lt;script&gt;alert(&#34;名&#34;)&lt;/script&gt;" in raw_page
    assert EVIL_ITEM and FORMULA_ITEM  # the item names planted by conftest


@pytest.mark.parametrize(
    "path",
    ["/tongban/", run_path(NEW_RUN), run_path(NEW_RUN, "440100/report.html"), run_path(NEW_RUN, "440100/report.json")],
)
def test_unauthenticated_requests_are_refused(server: Server, path: str) -> None:
    status, headers, body = server.get(path, auth=False)
    assert status == 401 and SECRET not in body and "data-partner" not in body
    assert "content-security-policy" in headers
    status, headers, _ = server.get(path, auth=False, headers={"Accept": "text/html"})  # a browser: to the login
    assert status == 303 and headers["location"].startswith("/auth/login?next=")
    status, _, body = server.get(path, auth=False, headers={"Cookie": "_token=not-a-jwt"})
    assert status in (401, 403) and "data-partner" not in body


def test_browser_without_login_lands_on_the_login_page(server: Server, browser: Browser) -> None:
    dom = browser.dom("/tongban/", logged_in=False)
    assert "data-partner" not in dom and "跨省通办事项同步" not in dom


@pytest.mark.parametrize(
    "path",
    [
        "/tongban/runs/../../secret.txt",
        "/tongban/runs/%2e%2e/%2e%2e/secret.txt",
        "/tongban/runs/..%2f..%2fsecret.txt/440100/report.html",
        "/tongban/runs/%2e%2e/440100/report.json",
        "/tongban/runs/..",
        "/tongban/runs/%2e%2e",
        run_path(NEW_RUN, "..%2F..%2F..%2Fsecret.txt"),
        run_path(NEW_RUN, "440100/items.jsonl"),
        run_path(NEW_RUN, "440100/data_docs/index.html"),  # GX's own site: no longer written nor served
        run_path(NEW_RUN, "440100/data_docs.html/../../../../secret.txt"),
        run_path(NEW_RUN, "440100/data_docs.html/%2e%2e/%2e%2e/%2e%2e/%2e%2e/secret.txt"),
        run_path(NEW_RUN, "370100/data_docs.html"),  # failed: no GX result
        run_path(OLD_RUN, "440400/data_docs.html"),  # not in that run
        run_path(NEW_RUN, "999999/data_docs.html"),
        run_path(NEW_RUN, "provinces/370000/data_docs.html"),  # its GX result is a symlink out of the root
        run_path(NEW_RUN, "provinces/370000/gx_validation_result.json"),
        run_path(NEW_RUN, "provinces/999999/data_docs.html"),
        run_path(NEW_RUN, "..%2F440100/report.json"),
        run_path(NEW_RUN, "4401/report.json"),
        run_path(NEW_RUN, "999999/gx_validation_result.json"),  # the folder exists; the division is not a partner
        run_path(NEW_RUN, "440000/gx_validation_result.json"),  # a province is not a partner
        run_path(NEW_RUN, "provinces/999999/five_level.json"),
        run_path(NEW_RUN, "provinces/440000/items.jsonl"),
        run_path(NEW_RUN, "provinces/..%2F440100/five_level.json"),
    ],
)
def test_paths_outside_the_reports_are_refused(server: Server, path: str) -> None:
    status, headers, body = server.get(path)
    assert status == 404, (path, status)
    assert SECRET not in body and "content-security-policy" in headers
    assert "未找到：运行编号、地区代码或文件名无效，或该文件不存在。" in body  # the plugin's own 404 page


def test_files_are_served_with_a_policy_and_the_right_type(server: Server) -> None:
    cases = {
        run_path(NEW_RUN, "440100/report.html"): ("text/html", "sandbox"),
        run_path(NEW_RUN, "440100/report.json"): ("application/json", "sandbox"),
        run_path(NEW_RUN, "440100/gx_validation_result.json"): ("application/json", "sandbox"),
        run_path(NEW_RUN, "440100/report.xlsx"): (
            "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
            "sandbox",
        ),
        run_path(NEW_RUN, "provinces/440000/five_level.json"): ("application/json", "sandbox"),
        "/tongban/trace?q=x": ("text/html", "style-src 'sha256-"),
        run_path(NEW_RUN, "440100/data_docs.html"): ("text/html", "sandbox"),
        run_path(NEW_RUN, "provinces/440000/data_docs.html"): ("text/html", "sandbox"),
        run_path(NEW_RUN, "provinces/440000/gx_validation_result.json"): ("application/json", "sandbox"),
        run_path(NEW_RUN): ("text/html", "style-src 'sha256-"),
        "/tongban/": ("text/html", "style-src 'sha256-"),
    }
    for path, (media_type, policy) in cases.items():
        status, headers, _ = server.get(path)
        assert status == 200, path
        assert headers["content-type"].startswith(media_type)
        csp = headers["content-security-policy"]
        assert "default-src 'none'" in csp and policy in csp
        assert headers["x-content-type-options"] == "nosniff"
    status, headers, _ = server.get("/tongban")  # the nav link without its slash (was Airflow's 404)
    assert status == 307 and headers["location"] == "/tongban/"
    status, headers, _ = server.get(run_path(NEW_RUN).rstrip("/"))  # the run page's relative links need the slash
    assert status == 307 and headers["location"] == run_path(NEW_RUN).removeprefix("/tongban/runs/")
    status, _, body = server.get(run_path(NEW_RUN, "440100/report.json"))
    assert status == 200 and '"rejected": 2' in body.replace("\n", " ").replace("  ", " ")
