"""Conformance kit for partners: checks an implementation of docs/partner-formats.md over real HTTP.

    python -m tongban.conformance --format <style> --division <code> <base url>

with the secret in the environment variable ``TONGBAN_PARTNER_SECRET`` (never on the command line) and
``--signature HMAC-SHA256|HMAC-SM3`` as agreed. It checks authentication (signed requests taken; unsigned,
tampered, replayed and stale ones refused), the encoding and media type, every field and its type and
codes, paging and the declared totals, incremental reads, error answers, answer time and size, and the
report receiver (``POST /api/reports``). It prints a checklist in Chinese — what passes and what to
fix — and exits 1 when anything is to be fixed. The report receiver gets a test report for a run named
``conformance__<time>``; a partner may discard those.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import urlencode

import requests

from tongban.auth import ALGORITHMS, url_headers
from tongban.config import CHINA_TZ
from tongban.delivery import CHECKSUM_HEADER, REPORT_PATH, RUN_HEADER
from tongban.http import Answer, HttpSettings, reason
from tongban.ingest import PageError, ParsedPage, parse_page, updated_at
from tongban.normalise import Quarantined, normalise_catalogue
from tongban.registry import Partner, WireFormat, wire_formats

SECRET_ENV = "TONGBAN_PARTNER_SECRET"
MAX_PAGES = 2_000
SHOWN = 3  # examples shown per problem
AHEAD = timedelta(hours=1)  # clocks differ; an update time further ahead is wrong
UNKNOWN_CODE = "不是约定的"  # what tongban.normalise says of a value its code table does not hold


@dataclass
class Check:
    area: str
    what: str
    ok: bool
    detail: str = ""
    note: bool = False  # a remark on the data, not the interface: shown, never a failure


@dataclass
class Checklist:
    checks: list[Check] = field(default_factory=list)

    def add(self, area: str, what: str, ok: bool, detail: str = "", *, note: bool = False) -> bool:
        self.checks.append(Check(area, what, ok, detail, note))
        return ok

    @property
    def failed(self) -> list[Check]:
        return [c for c in self.checks if not c.ok and not c.note]

    def render(self, title: str) -> str:
        lines = [title, ""]
        for c in self.checks:
            mark = "[通过]  " if c.ok else ("[提示]  " if c.note else "[需修改]")
            lines.append(f"{mark} {c.area}：{c.what}" + (f"\n          {c.detail}" if c.detail else ""))
        passed = sum(c.ok for c in self.checks)
        verdict = "接口符合约定，可以接入。" if not self.failed else "请按上面的说明修改后重新检查。"
        lines += ["", f"结论：{passed} 项通过，{len(self.failed)} 项需修改。{verdict}"]
        return "\n".join(lines)


def style_name(fmt: WireFormat) -> str:
    """A format as partners know it: the Chinese part of its title."""
    return fmt.title.split(" (")[0]


class Kit:
    """One run of the checks against one partner's base URL."""

    def __init__(
        self,
        fmt: WireFormat,
        base_url: str,
        division: str,
        secret: str,
        algorithm: str,
        *,
        max_seconds: float = 10.0,
        settings: HttpSettings | None = None,
    ) -> None:
        self.fmt, self.base, self.division, self.secret, self.algorithm = (
            fmt,
            base_url.rstrip("/"),
            division,
            secret,
            algorithm,
        )
        self.url = self.base + fmt.path
        self.max_seconds = max_seconds
        self.settings = settings or HttpSettings()
        self.partner = Partner(division=division, name="待接入地区", items=0, format=fmt.name, signature=algorithm)  # type: ignore[arg-type]
        self.list = Checklist()
        self.slowest = 0.0
        self.largest = 0

    # -- plain requests, signed or not, for the checks of refusals --

    def _headers(self, method: str, url: str, body: bytes = b"", **kwargs: Any) -> dict[str, str]:
        return url_headers(self.fmt.auth, self.secret, method, url, body=body, algorithm=self.algorithm, **kwargs)

    def _raw(self, method: str, url: str, headers: dict[str, str], body: bytes = b"") -> requests.Response:
        started = time.monotonic()
        timeout = (self.settings.connect_timeout, self.settings.read_timeout)
        answer = requests.request(
            method, url, data=body or None, headers=headers, timeout=timeout, allow_redirects=False
        )
        self.slowest = max(self.slowest, time.monotonic() - started)
        self.largest = max(self.largest, len(answer.content))
        return answer

    def _get(self, params: dict[str, Any]) -> Answer:
        """One signed catalogue request (the kit does not retry: every failure is worth knowing)."""
        url = f"{self.url}?{urlencode(params)}"
        got = self._raw("GET", url, self._headers("GET", url))
        return Answer(got.status_code, got.headers, got.content)

    # -- the checks --

    def run(self) -> Checklist:
        try:
            first = self.check_auth()
            if first is not None:
                records = self.check_catalogue()
                if records:
                    self.check_incremental(records)
                self.check_errors()
        except requests.RequestException as exc:
            self.list.add(
                "连接", "接口可以访问并在时限内应答", False, f"请求失败：{type(exc).__name__}（{_plain(str(exc))}）"
            )
        cap = self.settings.max_response_bytes
        self.list.add(
            "大小",
            f"每个应答不超过 {cap // (1024 * 1024)} MiB",
            self.largest <= cap,
            f"最大的应答有 {self.largest} 字节，请减小每页条数" if self.largest > cap else "",
        )
        self.list.add(
            "时延",
            f"每个应答在 {self.max_seconds:g} 秒内返回",
            self.slowest <= self.max_seconds,
            f"最慢的一次用了 {self.slowest:.1f} 秒" if self.slowest > self.max_seconds else "",
        )
        self.check_reports()
        return self.list

    def check_auth(self) -> Answer | None:
        paging = self.fmt.paging
        params = {paging.size_param: 1}
        query = urlencode(params)
        url = f"{self.url}?{query}"
        refusals = {
            "未签名的请求被拒绝": ({}, url),
            "查询参数在签名后被改动的请求被拒绝": (
                self._headers("GET", url),
                f"{self.url}?{urlencode({paging.size_param: 2})}",
            ),
            "时间戳过期（超过 300 秒）的请求被拒绝": (self._headers("GET", url, clock=lambda: time.time() - 3600), url),
        }
        for what, (headers, target) in refusals.items():
            got = self._raw("GET", target, headers)
            self.list.add("认证", what + "（401）", got.status_code == 401, _refusal(got))
        good = self._headers("GET", url)
        taken = self._raw("GET", url, good)
        ok = self.list.add(
            "认证",
            f"按约定签名（{self.algorithm}）的请求被接受（200）",
            taken.status_code == 200,
            "" if taken.status_code == 200 else f"应答 HTTP {taken.status_code}：{_why(taken)}",
        )
        again = self._raw("GET", url, good)
        self.list.add("认证", "重放的请求（同一 nonce）被拒绝（401）", again.status_code == 401, _refusal(again))
        return Answer(taken.status_code, taken.headers, taken.content) if ok else None

    def check_catalogue(self) -> list[dict[str, Any]]:
        """Page through the whole catalogue as we do; checks media type, encoding, fields, paging, totals."""
        fmt, paging = self.fmt, self.fmt.paging
        size = paging.page_size
        params: dict[str, Any] = {paging.size_param: size}
        if paging.kind == "page":
            params[paging.page_param or "page"] = paging.first_page
        rows: list[Any] = []
        pages: list[tuple[int, list[Any]]] = []
        totals: set[int] = set()
        problems: list[str] = []
        media_ok, unexpected = True, set()
        want = "text/csv" if fmt.media == "csv" else "application/json"
        for number in range(1, MAX_PAGES + 1):
            answer = self._get(params)
            if answer.status != 200:
                self.list.add(
                    "分页", f"第 {number} 页正常应答（200）", False, f"应答 HTTP {answer.status}：{reason(answer.body)}"
                )
                return []
            media = str(answer.headers.get("Content-Type", "")).lower()
            if want not in media or fmt.encoding.lower() not in media.replace("gb2312", "gbk"):
                media_ok = False
            try:
                page = parse_page(fmt, answer.body, answer.headers)
            except PageError as exc:
                self.list.add(
                    "编码与格式",
                    f"第 {number} 页是约定编码（{fmt.encoding.upper()}）的{fmt.media.upper()}",
                    False,
                    str(exc),
                )
                return []
            unexpected |= set(page.unexpected_fields)
            if page.total is not None:
                totals.add(page.total)
            if len(page.rows) > size:
                problems.append(f"第 {number} 页返回 {len(page.rows)} 条，多于请求的每页 {size} 条")
            rows += page.rows
            pages.append((number, page.rows))
            if not self._advance(params, page, len(rows), size):
                break
        self.list.add(
            "编码与格式",
            f"Content-Type 为 {want}; charset={fmt.encoding.upper()}",
            media_ok,
        )
        self.list.add("编码与格式", f"正文按 {fmt.encoding.upper()} 解码无误", True)
        self.list.add("记录", "目录不为空", bool(rows), "" if rows else "接口返回 0 条记录：请确认接口连接的是正式目录")
        self._check_records(pages, unexpected)
        self._check_paging(rows, totals, problems, len(pages))
        return [r for r in rows if isinstance(r, dict)]

    def _advance(self, params: dict[str, Any], page: ParsedPage, have: int, size: int) -> bool:
        paging = self.fmt.paging
        if paging.kind == "page":
            if not page.rows or have >= (page.total or 0):
                return False
            params[paging.page_param or "page"] += 1
            return True
        if not page.next_cursor:
            return False
        params[paging.cursor_param or "cursor"] = page.next_cursor
        return True

    def _check_records(self, pages: list[tuple[int, list[Any]]], unexpected: set[str]) -> None:
        fmt = self.fmt
        result = normalise_catalogue(pages, fmt, self.partner)
        quarantined = [q for q in result.outcomes if isinstance(q, Quarantined)]
        data = [q for q in quarantined if all(UNKNOWN_CODE in p.reason for p in q.problems)]
        bad = [q for q in quarantined if q not in data]

        def examples(records: list[Quarantined]) -> str:
            shown = "；".join(f"{q.position}：{q.problems[0].reason}" for q in records[:SHOWN])
            return f"{len(records)} 条不符，例如 {shown}" if records else ""

        self.list.add("字段", "每条记录含约定的全部字段，类型和时间格式正确", not bad, examples(bad))
        self.list.add(
            "数据",
            "代码值都在约定的代码表中（不在其中的记录无法同步，每日报告中逐条列出）",
            not data,
            examples(data),
            note=True,
        )
        self.list.add(
            "字段",
            "没有约定之外的字段",
            not unexpected,
            f"多出字段：{'、'.join(sorted(unexpected))}（我方忽略这些字段；如需新增，请先商定）" if unexpected else "",
        )
        now = datetime.now(CHINA_TZ)
        future = [
            (p, r) for p, page in pages for r in page if (t := updated_at(fmt, r)) is not None and t > now + AHEAD
        ]
        field_name = fmt.fields["updated_at"]
        self.list.add(
            "字段",
            f"更新时间（{field_name}）不晚于当前时间",
            not future,
            f"{len(future)} 条记录的更新时间在将来，例如第 {future[0][0]} 页的 {future[0][1].get(field_name)}"
            if future
            else "",
        )
        noted = result.normalised
        shown = "；".join(n["reason"] for n in noted[:SHOWN])
        self.list.add(
            "字段",
            "编码、数字和时间不含全角字符或不可见字符",
            not noted,
            f"{len(noted)} 处，例如 {shown}" if noted else "",
        )
        copies = result.duplicates
        example = f"{len(copies)} 条重复，例如 {copies[0]['position']}：{copies[0]['reason']}" if copies else ""
        self.list.add("记录", "同一实施编码只出现一次，没有重复记录", not copies, example)

    def _check_paging(self, rows: list[Any], totals: set[int], problems: list[str], pages: int) -> None:
        fmt = self.fmt
        key = fmt.fields["task_code"]
        codes = [r.get(key) for r in rows if isinstance(r, dict)]
        distinct = len({_code(c) for c in codes})
        if fmt.paging.total_field or fmt.paging.total_header:
            total = next(iter(totals)) if len(totals) == 1 else None
            where = f"应答头 {fmt.paging.total_header}" if fmt.paging.total_header else f"字段 {fmt.paging.total_field}"
            ok = total is not None and total == distinct == len(rows)
            declared = "未声明总数" if total is None else f"声明总数 {total}"
            detail = (
                f"各页声明的总数不一致：{sorted(totals)}"
                if len(totals) > 1
                else f"{declared}，共 {pages} 页实际收到 {len(rows)} 条（不同实施编码 {distinct} 个）"
            )
            self.list.add("分页", f"{where} 声明的总数与逐页收到的记录数一致", ok, "" if ok else detail)
        self.list.add("分页", "每页记录数不超过请求的每页条数", not problems, "；".join(problems[:SHOWN]))
        ordered = [c for c in codes if isinstance(c, str)]
        self.list.add("分页", "记录按实施编码升序返回（分页稳定）", ordered == sorted(ordered))

    def check_incremental(self, records: list[dict[str, Any]]) -> None:
        inc = self.fmt.incremental
        if inc is None:
            return
        stamps = [(updated_at(self.fmt, r), r) for r in records]
        dated = [(s, r) for s, r in stamps if s is not None]
        if not dated:
            self.list.add("增量读取", "记录带可读的更新时间", False, "没有一条记录的更新时间可以读取")
            return
        moment = max(s for s, _ in dated)
        key = self.fmt.fields["task_code"]
        wanted = {_code(r.get(key)) for s, r in dated if s >= moment}
        paging = self.fmt.paging
        params: dict[str, Any] = {
            paging.size_param: paging.page_size,
            inc.param: moment.astimezone(CHINA_TZ).strftime(inc.format),
        }
        if paging.kind == "page":
            params[paging.page_param or "page"] = paging.first_page
        answer = self._get(params)
        if answer.status != 200:
            self.list.add(
                "增量读取", f"参数 {inc.param} 被接受", False, f"应答 HTTP {answer.status}：{reason(answer.body)}"
            )
            return
        page = parse_page(self.fmt, answer.body, answer.headers)
        got = {_code(r.get(key)) for r in page.rows if isinstance(r, dict)}
        ok = got == wanted and (page.total is None or page.total == len(wanted))
        detail = (
            f"按 {inc.param}={params[inc.param]} 应返回更新时间不早于该时刻的 {len(wanted)} 条，"
            f"实际返回 {len(got)} 条（声明总数 {page.total}）"
        )
        self.list.add(
            "增量读取", f"参数 {inc.param}（{inc.format}）只返回该时刻及之后更新的记录", ok, "" if ok else detail
        )

    def check_errors(self) -> None:
        paging = self.fmt.paging
        for what, params, status in (
            (f"参数 {paging.size_param} 不是整数时应答 400", {paging.size_param: "abc"}, 400),
            (f"参数 {paging.size_param}=500 被接受", {paging.size_param: 500}, 200),
        ):
            url = f"{self.url}?{urlencode(params)}"
            got = self._raw("GET", url, self._headers("GET", url))
            body_ok = status == 200 or _error_body(got)
            self.list.add(
                "错误应答",
                what + ('，正文为 {"error": "原因"}' if status != 200 else ""),
                got.status_code == status and body_ok,
                "" if got.status_code == status and body_ok else f"应答 HTTP {got.status_code}：{got.text[:120]}",
            )
        url = self.url.rstrip("/") + "-no-such-path"
        got = self._raw("GET", url, self._headers("GET", url))
        ok = got.status_code == 404 and _error_body(got)
        self.list.add(
            "错误应答",
            '未知路径应答 404，正文为 {"error": "原因"}',
            ok,
            "" if ok else f"应答 HTTP {got.status_code}：{got.text[:120]}",
        )

    def check_reports(self) -> None:
        url = f"{self.base}/{REPORT_PATH}"
        run_id = f"conformance__{datetime.now(CHINA_TZ):%Y%m%dT%H%M%S%f}"
        body = json.dumps(
            {"partner": self.division, "run_id": run_id, "counts": {"fetched": 0}}, ensure_ascii=False
        ).encode()
        other = json.dumps(
            {"partner": self.division, "run_id": run_id, "counts": {"fetched": 1}}, ensure_ascii=False
        ).encode()

        def post(content: bytes, digest: str | None = None, signed: bool = True) -> requests.Response:
            headers = self._headers("POST", url, content) if signed else {}
            headers |= {"Content-Type": "application/json; charset=utf-8", RUN_HEADER: run_id}
            headers[CHECKSUM_HEADER] = digest or hashlib.sha256(content).hexdigest()
            return self._raw("POST", url, headers, content)

        cases: Sequence[tuple[str, Callable[[], requests.Response], Callable[[requests.Response], bool]]] = (
            ("未签名的报告被拒绝（401）", lambda: post(body, signed=False), lambda r: r.status_code == 401),
            (
                "校验和与正文不符的报告被拒绝（400）",
                lambda: post(body + b" ", hashlib.sha256(body).hexdigest()),
                lambda r: r.status_code == 400,
            ),
            (
                '首次投递应答 200/201，正文 {"status": "received"}',
                lambda: post(body),
                lambda r: _status(r, (200, 201), "received"),
            ),
            (
                '同一报告再次投递应答 200，正文 {"status": "duplicate"}',
                lambda: post(body),
                lambda r: _status(r, (200,), "duplicate"),
            ),
            ("同一运行编号、内容不同的报告被拒绝（409）", lambda: post(other), lambda r: r.status_code == 409),
        )
        for what, send, good in cases:
            try:
                got = send()
            except requests.RequestException as exc:
                self.list.add("报告接收", f"POST {REPORT_PATH} 可以访问", False, f"请求失败：{type(exc).__name__}")
                return
            ok = good(got)
            self.list.add("报告接收", what, ok, "" if ok else f"应答 HTTP {got.status_code}：{got.text[:160]}")


def _code(value: Any) -> str:
    """A record's 实施编码 as a set member, whatever the partner sent."""
    return value if isinstance(value, str) else repr(value)


def _status(answer: requests.Response, codes: tuple[int, ...], status: str) -> bool:
    try:
        return answer.status_code in codes and answer.json().get("status") == status
    except ValueError:
        return False


def _error_body(answer: requests.Response) -> bool:
    try:
        payload = answer.json()
    except ValueError:
        return False
    return isinstance(payload, dict) and bool(payload.get("error"))


def _why(answer: requests.Response) -> str:
    return reason(answer.content)


def _refusal(answer: requests.Response) -> str:
    if answer.status_code == 401:
        return "" if _error_body(answer) else '应答 401，但正文不是 {"error": "原因"}'
    return f"应答 HTTP {answer.status_code}：{_why(answer)[:120]}"


def _plain(message: str) -> str:
    return message[:160]


def check(
    fmt: WireFormat, base_url: str, division: str, secret: str, algorithm: str, *, max_seconds: float = 10.0
) -> Checklist:
    """Run every check; the checklist says what passes and what to fix."""
    return Kit(fmt, base_url, division, secret, algorithm, max_seconds=max_seconds).run()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tongban.conformance", description="跨省通办合作地区接口一致性检查")
    parser.add_argument("--format", required=True, choices=sorted(wire_formats()), help="接口格式（见接口约定文档）")
    parser.add_argument("--division", required=True, help="贵方的 6 位行政区划代码")
    parser.add_argument("--signature", choices=ALGORITHMS, default="HMAC-SHA256", help="约定的签名算法")
    parser.add_argument("--max-seconds", type=float, default=10.0, help="每个应答允许的最长秒数")
    parser.add_argument("base_url", help="贵方接口的基础地址，例如 https://example.gov.cn/tongban")
    args = parser.parse_args(argv)
    secret = os.environ.get(SECRET_ENV, "")
    if not secret:
        print(f"请在环境变量 {SECRET_ENV} 中提供约定的密钥（不要写在命令行上）。", file=sys.stderr)
        return 2
    fmt = wire_formats()[args.format]
    result = check(fmt, args.base_url, args.division, secret, args.signature, max_seconds=args.max_seconds)
    print(result.render(f"跨省通办接口一致性检查：{style_name(fmt)}，{args.base_url}，签名 {args.signature}"))
    return 1 if result.failed else 0


if __name__ == "__main__":
    sys.exit(main())
