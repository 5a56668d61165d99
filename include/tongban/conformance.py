"""Conformance kit for partners: checks an implementation of docs/partner-formats.md over real HTTP.

    python -m tongban.conformance --format <style> --division <code> <base url>

with the secret in the environment variable ``TONGBAN_PARTNER_SECRET`` (never on the command line) and
``--signature HMAC-SHA256|HMAC-SM3`` as agreed. It checks authentication (signed requests taken; unsigned,
tampered, replayed and stale ones refused), the encoding and media type, every field and its type and
codes, paging and the declared totals, incremental reads, error answers, answer time and size, the offer
endpoint (§13: the configured list of 沅江's items read like the catalogue; signed, idempotent batch writes
answered per operation, checked by reading back; ``--no-offer`` skips it for a partner that only provides the
inbound side) and the report receiver (``POST /api/reports``). It prints a checklist in Chinese — what passes
and what to fix — and exits 1 when anything of the interface is to be fixed. The report receiver gets a test
report for a run named ``conformance__<time>``; a partner may discard those. The offer endpoint gets test items of 沅江
(``TEST_NAME``), withdrawn again at the end whatever failed, so the configured list is left as it was found.

Then it runs the nightly run's own content checks on the catalogue it read (:class:`Content`: the normaliser and
the partner's validation suite) and lists, as a separate verdict, the records the next nightly run would
quarantine or reject and why; it exits 3 (``CONTENT_EXIT``) when the interface conforms but some would.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import urlencode

import requests

from tongban.auth import ALGORITHMS, url_headers
from tongban.codes import make_task_code, make_uscc
from tongban.config import CHINA_TZ
from tongban.delivery import CHECKSUM_HEADER, REPORT_PATH, RUN_HEADER
from tongban.guard import ratio
from tongban.http import Answer, HttpSettings, reason
from tongban.ingest import PageError, ParsedPage, parse_page, updated_at
from tongban.model import Item
from tongban.normalise import Normalised, Quarantined, normalise_catalogue
from tongban.outbound.diff import digest
from tongban.outbound.wire import (
    MODES,
    Decoded,
    Operation,
    decode_rows,
    encode_batch,
    endpoint,
    home_region,
    readback_format,
)
from tongban.registry import OfferEndpoint, Partner, WireFormat, load_registry, wire_formats
from tongban.report_model import Flagged, QuarantinedRecord
from tongban.results import HoldBackRate

SECRET_ENV = "TONGBAN_PARTNER_SECRET"
CONTENT_EXIT = 3  # the interface conforms, the content would not all pass (2 is a usage error)
MAX_PAGES = 2_000
SHOWN = 3  # examples shown per problem
AHEAD = timedelta(hours=1)  # clocks differ; an update time further ahead is wrong
UNKNOWN_CODE = "不是约定的"  # what tongban.normalise says of a value its code table does not hold
OFFER_AREA = "沅江事项配置接口"
TEST_NAME = "接口联调测试事项（可删除）"  # the offer checks' items of 沅江, withdrawn again at the end
UNKNOWN_MODE = "9"  # a handling mode no format codes (canonical 1–3)
SHOWN_RECORDS = 10  # records the content section lists (the nightly report lists every one)
WHOLE = "整条记录"  # how the content section names the field of a problem with the whole record (``*``)
NOT_CHECKED = (  # the nightly checks that need other partners' items or the platform's
    "同省各合作地区之间的五级N同比对（需要其他合作地区的事项）",
    "与省一体化平台上已发布版本的比较（更新时间更早而内容不同的旧版本记录将被退回；需要平台上已发布的版本）",
)


@dataclass
class Check:
    area: str
    what: str
    ok: bool
    detail: str = ""
    note: bool = False  # a remark, not a check of the interface: shown, never a failure


@dataclass
class Content:
    """What the nightly run's own checks would do with the catalogue as the kit read it: the normaliser
    (``tongban.normalise``: quarantine) and the partner's validation suite (``tongban.validation``: reject or
    warn), as ``pipeline.normalise_partner`` and ``pipeline.validate`` run them on a full pull. A separate
    verdict from the interface checks: the data is the partner's to correct, not its implementation."""

    read: int  # records mapped or quarantined (exact copies counted once, as the nightly run counts them)
    quarantined: list[QuarantinedRecord]
    rejected: list[Flagged]
    warned: int  # accepted with warnings (published; the report lists them as 待核)
    rate: HoldBackRate  # over the records read, as on a full pull

    @property
    def failing(self) -> int:
        """Records that would not reach the platform: quarantined or rejected."""
        return len(self.quarantined) + len(self.rejected)

    def render(self) -> list[str]:
        from tongban.report import quarantined_rows, rejected_rows

        lines = [
            "内容检查（按每日同步的同一套映射和校验规则，逐条检查本次读取的目录）",
            f"  读取 {self.read} 条：可以同步 {self.read - self.failing} 条，将被退回 {len(self.rejected)} 条，"
            f"将被隔离 {len(self.quarantined)} 条"
            + (f"；可以同步的记录中有 {self.warned} 条将在报告中列为待核（警告）" if self.warned else "")
            + "。",
        ]
        quarantined = self.quarantined[:SHOWN_RECORDS]
        for q in quarantined:  # the report's wording: its 隔离 and 退回 rows, under each record
            lines.append(f"  [隔离] {q.position} {q.task_code or '（无实施编码）'} {q.name or '（无事项名称）'}")
            lines += [f"         {WHOLE if f == '*' else f}：{why}" for *_, f, why in quarantined_rows([q])]
        rejected = self.rejected[: SHOWN_RECORDS - len(quarantined)]
        for item in rejected:
            lines.append(f"  [退回] {item.task_code} {item.name}")
            lines += [f"         {element}：{why}" for *_, element, why in rejected_rows([item])]
        shown = len(quarantined) + len(rejected)
        if self.failing > shown:
            lines.append(f"  （只列出前 {shown} 条，共 {self.failing} 条；每日同步报告的“退回”和“隔离”逐条列出）")
        if self.rate.held_back:
            lines.append(
                "  按目前的目录，下一次同步将整体暂缓推送：未通过关键校验或无法识别的记录 "
                f"{ratio(self.rate.failing, self.read, self.rate.max_critical_rate)}（超过暂缓阈值），"
                "贵方的事项一项也不会推送到省一体化平台。"
            )
        lines.append(f"  本工具无法进行、每日同步时才进行的检查：{'；'.join(NOT_CHECKED)}。")
        if self.failing:
            verdict = (
                f"{self.failing} 条记录在下一次同步时将被退回或隔离，不会推送到省一体化平台；"
                "请在贵方系统中更正后重新检查。"
            )
        else:
            verdict = f"读取的 {self.read} 条记录都能通过每日同步的映射和校验。"
        return [*lines, f"  内容结论：{verdict}"]


@dataclass
class Checklist:
    checks: list[Check] = field(default_factory=list)
    content: Content | None = None  # None: no record of the catalogue was read, so no content was checked

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
        lines.append("")
        lines += self.content.render() if self.content else ["内容检查：未进行（没有读到目录中的记录，见上面的检查）"]
        passed = sum(c.ok for c in self.checks)
        if self.failed:
            verdict = "请按上面的说明修改后重新检查。"
        elif self.content and self.content.rate.held_back:
            verdict = "接口符合约定；但按目前的目录，下一次同步将整体暂缓推送，请先更正上面“内容检查”所列的记录。"
        elif self.content_failing:
            verdict = f"接口符合约定，可以接入；{self.content_failing} 条记录将被退回或隔离，见上面的“内容检查”。"
        else:
            verdict = "接口符合约定，可以接入。"
        lines += ["", f"结论：{passed} 项通过，{len(self.failed)} 项需修改。{verdict}"]
        return "\n".join(lines)

    @property
    def content_failing(self) -> int:
        """Records that the next nightly run would quarantine or reject (0 when the content was not checked)."""
        return self.content.failing if self.content else 0

    def exit_code(self) -> int:
        """1: the interface is to be fixed (whatever the content); 3: it conforms, but records would be
        quarantined or rejected; 0: neither."""
        return 1 if self.failed else CONTENT_EXIT if self.content_failing else 0


@dataclass
class Pages:
    """A list read whole, page by page, and what the reading saw."""

    pages: list[tuple[int, list[Any]]] = field(default_factory=list)
    totals: set[int] = field(default_factory=set)  # the totals the pages declared
    oversize: list[str] = field(default_factory=list)  # pages longer than asked for
    media_ok: bool = True
    unexpected: set[str] = field(default_factory=set)

    @property
    def rows(self) -> list[Any]:
        return [row for _, page in self.pages for row in page]


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
        offer: bool = True,
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
        self.offer = offer  # False: --no-offer
        self.home = home_region(load_registry())  # 沅江, whose items the offer endpoint takes
        self.run_tag = uuid.uuid4().hex[:16]  # this run's idempotency keys are its own
        self.catalogue: Normalised | None = None  # the catalogue as read and normalised, for the content check

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

    def _get(self, params: dict[str, Any], base: str | None = None) -> Answer:
        """One signed read of the catalogue (or of ``base``); the kit does not retry: every failure is worth knowing."""
        url = f"{base or self.url}?{urlencode(params)}"
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
        if self.offer and self.fmt.offer is not None:  # a format without an offer endpoint has nothing to check
            try:
                self.check_offer()
            except requests.RequestException as exc:
                self.list.add(
                    OFFER_AREA,
                    "接口可以访问并在时限内应答",
                    False,
                    f"请求失败：{type(exc).__name__}（{_plain(str(exc))}）",
                )
        elif not self.offer:
            self.list.add(
                OFFER_AREA,
                "未检查（--no-offer：贵方只提供事项目录和报告接收；接收沅江事项前须不带此参数再检查一次）",
                False,
                note=True,
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
        self.list.content = self.check_content()
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
            "" if taken.status_code == 200 else _answered(taken),
        )
        again = self._raw("GET", url, good)
        self.list.add("认证", "重放的请求（同一 nonce）被拒绝（401）", again.status_code == 401, _refusal(again))
        return Answer(taken.status_code, taken.headers, taken.content) if ok else None

    def _read(self, fmt: WireFormat, url: str, scope: str = "") -> Pages | None:
        """Page through a whole list of ``fmt`` at ``url`` as we do; None (and the failure noted) when a page is
        refused or not a page of the format. ``scope``: the checklist area of another list than the catalogue."""
        paging = fmt.paging
        size = paging.page_size
        params: dict[str, Any] = {paging.size_param: size}
        if paging.kind == "page":
            params[paging.page_param or "page"] = paging.first_page
        read = Pages()
        want = "text/csv" if fmt.media == "csv" else "application/json"
        for number in range(1, MAX_PAGES + 1):
            answer = self._get(params, url)
            if answer.status != 200:
                self.list.add(
                    scope or "分页",
                    f"{_listed(scope)}第 {number} 页正常应答（200）",
                    False,
                    f"应答 HTTP {answer.status}：{reason(answer.body)}",
                )
                return None
            media = str(answer.headers.get("Content-Type", "")).lower()
            if want not in media or fmt.encoding.lower() not in media.replace("gb2312", "gbk"):
                read.media_ok = False
            try:
                page = parse_page(fmt, answer.body, answer.headers)
            except PageError as exc:
                self.list.add(
                    scope or "编码与格式",
                    f"{_listed(scope)}第 {number} 页是约定编码（{fmt.encoding.upper()}）的{fmt.media.upper()}",
                    False,
                    str(exc),
                )
                return None
            read.unexpected |= set(page.unexpected_fields)
            if page.total is not None:
                read.totals.add(page.total)
            if len(page.rows) > size:
                read.oversize.append(f"第 {number} 页返回 {len(page.rows)} 条，多于请求的每页 {size} 条")
            read.pages.append((number, page.rows))
            if not self._advance(fmt, params, page, len(read.rows), size):
                break
        return read

    def check_catalogue(self) -> list[dict[str, Any]]:
        """Page through the whole catalogue as we do; checks media type, encoding, fields, paging, totals."""
        fmt = self.fmt
        read = self._read(fmt, self.url)
        if read is None:
            return []
        rows = read.rows
        want = "text/csv" if fmt.media == "csv" else "application/json"
        self.list.add("编码与格式", f"Content-Type 为 {want}; charset={fmt.encoding.upper()}", read.media_ok)
        self.list.add("编码与格式", f"正文按 {fmt.encoding.upper()} 解码无误", True)
        self.list.add("记录", "目录不为空", bool(rows), "" if rows else "接口返回 0 条记录：请确认接口连接的是正式目录")
        self._check_records(read.pages, read.unexpected)
        self._check_paging(fmt, read)
        return [r for r in rows if isinstance(r, dict)]

    def _advance(self, fmt: WireFormat, params: dict[str, Any], page: ParsedPage, have: int, size: int) -> bool:
        paging = fmt.paging
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
        result = self.catalogue = normalise_catalogue(pages, fmt, self.partner)
        quarantined = [q for q in result.outcomes if isinstance(q, Quarantined)]
        # a code its table does not hold is the data's fault, not the interface's: the content check lists it
        bad = [q for q in quarantined if not all(UNKNOWN_CODE in p.reason for p in q.problems)]

        def examples(records: list[Quarantined]) -> str:
            shown = "；".join(f"{q.position}：{q.problems[0].reason}" for q in records[:SHOWN])
            return f"{len(records)} 条不符，例如 {shown}" if records else ""

        self.list.add("字段", "每条记录含约定的全部字段，类型和时间格式正确", not bad, examples(bad))
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
        shown = "；".join(n.reason for n in noted[:SHOWN])
        self.list.add(
            "字段",
            "编码、数字和时间不含全角字符或不可见字符",
            not noted,
            f"{len(noted)} 处，例如 {shown}" if noted else "",
        )
        copies = result.duplicates
        example = f"{len(copies)} 条重复，例如 {copies[0].position}：{copies[0].reason}" if copies else ""
        self.list.add("记录", "同一实施编码只出现一次，没有重复记录", not copies, example)

    def check_content(self) -> Content | None:
        """The nightly run's content checks on the catalogue as read (:class:`Content`); None when it was not
        read or empty. Checks that need other partners or the platform cannot run here (``NOT_CHECKED``)."""
        if self.catalogue is None or not self.catalogue.outcomes:
            return None
        from tongban.pipeline import hold_back_rate
        from tongban.report import flagged, quarantined_record
        from tongban.validation import validate_items  # GX is heavy: imported when there is a catalogue only

        outcomes = self.catalogue.outcomes
        records = [o.record() for o in outcomes if isinstance(o, Item)]
        quarantined = [o for o in outcomes if isinstance(o, Quarantined)]
        _, rejected, warned = validate_items(records, self.partner).split(records) if records else ([], [], [])
        unidentified = sum(not q.task_code for q in quarantined)
        return Content(
            read=len(outcomes),
            quarantined=[quarantined_record(q) for q in quarantined],
            rejected=[flagged(r, self.fmt) for r in rejected],
            warned=len(warned),
            rate=hold_back_rate(len(rejected) + unidentified, len(outcomes)),
        )

    def _check_paging(self, fmt: WireFormat, read: Pages, scope: str = "") -> None:
        rows = read.rows
        key = fmt.fields["task_code"]
        codes = [r.get(key) for r in rows if isinstance(r, dict)]
        distinct = len({_code(c) for c in codes})
        area, listed = scope or "分页", _listed(scope)
        if fmt.paging.total_field or fmt.paging.total_header:
            totals = read.totals
            total = next(iter(totals)) if len(totals) == 1 else None
            where = f"应答头 {fmt.paging.total_header}" if fmt.paging.total_header else f"字段 {fmt.paging.total_field}"
            ok = total is not None and total == distinct == len(rows)
            declared = "未声明总数" if total is None else f"声明总数 {total}"
            detail = (
                f"各页声明的总数不一致：{sorted(totals)}"
                if len(totals) > 1
                else f"{declared}，共 {len(read.pages)} 页实际收到 {len(rows)} 条（不同实施编码 {distinct} 个）"
            )
            self.list.add(area, f"{listed}{where} 声明的总数与逐页收到的记录数一致", ok, "" if ok else detail)
        self.list.add(
            area, f"{listed}每页记录数不超过请求的每页条数", not read.oversize, "；".join(read.oversize[:SHOWN])
        )
        ordered = [c for c in codes if isinstance(c, str)]
        self.list.add(area, f"{listed}记录按实施编码升序返回（分页稳定）", ordered == sorted(ordered))

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

    # -- the offer endpoint (§13): 沅江's items configured at the partner --

    def check_offer(self) -> None:
        """Read the configured list, then write test items of 沅江 and read back after every write; whatever
        happens, the test items are withdrawn at the end and the list must be as it was found."""
        offer = endpoint(self.fmt)
        before = self._configured(full=True)
        if before is None:
            return
        ours = test_items(self.home, datetime.now(CHINA_TZ))
        try:
            self._offer_writes(offer, ours)
        finally:
            self._withdraw([r["task_code"] for r in ours], before)

    def _configured(self, *, full: bool = False) -> dict[str, Decoded] | None:
        """The partner's configured list by 实施编码, read whole as we read it (§13.1); ``full``: with the checks
        of the list's format (media type, fields and modes, totals, paging, order)."""
        fmt = readback_format(self.fmt)
        read = self._read(fmt, self.base + fmt.path, OFFER_AREA)
        if read is None:
            return None
        rows = read.rows
        decoded = decode_rows(self.fmt, rows, self.home, "配置清单")
        if full:
            want = "text/csv" if fmt.media == "csv" else "application/json"
            self.list.add(
                OFFER_AREA,
                f"配置清单（GET {fmt.path}）的 Content-Type 为 {want}; charset={fmt.encoding.upper()}",
                read.media_ok,
            )
            bad = [(n, d) for n, d in enumerate(decoded, start=1) if d.problems]
            shown = "；".join(f"第{n}条（{d.task_code or '无实施编码'}）：{d.problems[0]}" for n, d in bad[:SHOWN])
            self.list.add(
                OFFER_AREA,
                f"配置清单每条记录含约定的全部字段及可办理模式字段 {fmt.fields[MODES]}，代码可以识别",
                not bad,
                f"{len(bad)} 条不符，例如 {shown}" if bad else "",
            )
            self.list.add(
                OFFER_AREA,
                "配置清单没有约定之外的字段",
                not read.unexpected,
                f"多出字段：{'、'.join(sorted(read.unexpected))}" if read.unexpected else "",
            )
            seen = [d.task_code for d in decoded if d.task_code]
            twice = sorted({c for c in seen if seen.count(c) > 1})
            self.list.add(
                OFFER_AREA,
                "配置清单中同一实施编码只出现一次",
                not twice,
                f"重复的实施编码：{'、'.join(twice[:SHOWN])}" if twice else "",
            )
            self._check_paging(fmt, read, OFFER_AREA)
        return {d.task_code: d for d in decoded if d.task_code}

    def _post_batch(
        self, operations: Sequence[Operation], key: str | None, *, signed: bool = True, tampered: bool = False
    ) -> requests.Response:
        """One batch to the offer endpoint, encoded as the pipeline encodes it; ``key`` None: no idempotency
        header; ``tampered``: the body changed after signing (a blank line more, harmless in every format)."""
        offer = endpoint(self.fmt)
        body, content_type = encode_batch(self.fmt, operations)
        url = self.base + offer.path
        headers = self._headers("POST", url, body) if signed else {}
        headers["Content-Type"] = content_type
        if key is not None:
            headers[offer.key_header] = key
        return self._raw("POST", url, headers, body + b"\r\n" if tampered else body)

    def _key(self, step: str) -> str:
        return f"conformance-{self.division}-{step}-{self.run_tag}"

    def _offer_writes(self, offer: OfferEndpoint, ours: list[dict[str, Any]]) -> None:
        first, second, never = ours  # never: not written at all, for the withdrawal of an unconfigured item
        harmless = [Operation("delete", first["task_code"])]  # what a refused request would have done if taken
        path = offer.path
        for what, got, status in (
            ("未签名的写入请求被拒绝（401）", self._post_batch(harmless, self._key("unsigned"), signed=False), 401),
            (
                "正文在签名后被改动的写入请求被拒绝（401）",
                self._post_batch(harmless, self._key("tampered"), tampered=True),
                401,
            ),
            (
                f'缺少幂等键请求头 {offer.key_header} 的写入请求被拒绝（400），正文为 {{"error": "原因"}}',
                self._post_batch(harmless, None),
                400,
            ),
        ):
            ok = got.status_code == status and _error_body(got)
            self.list.add(OFFER_AREA, what, ok, "" if ok else _not_refused(got))

        def upsert(record: dict[str, Any], *modes: str) -> Operation:
            return Operation("upsert", record["task_code"], record, modes)

        batch = [upsert(first, "1", "2")]
        got = self._post_batch(batch, self._key("first"))
        wrong = _results(got, [("upsert", "accepted", first["task_code"])])
        if not self.list.add(
            OFFER_AREA,
            f"签名的写入批次（新增测试事项「{first['name']}」）应答 200，"
            "每个操作一条结果（op、status、line，按请求顺序）",
            not wrong,
            wrong,
        ):
            return
        answer = _payload(got)
        detail = _differs(self._configured(), first, ["1", "2"])
        self.list.add(
            OFFER_AREA,
            f"POST {path} 之后读回的配置清单含该测试事项，内容和可办理模式（1、2）与写入的一致",
            not detail,
            detail,
        )

        mixed = [upsert(second, UNKNOWN_MODE), upsert(first, "1")]
        got = self._post_batch(mixed, self._key("mixed"))
        wrong = _results(got, [("upsert", "rejected", second["task_code"]), ("upsert", "accepted", first["task_code"])])
        self.list.add(
            OFFER_AREA,
            f"同一批次中可办理模式无法识别（{UNKNOWN_MODE}）的操作被拒绝（rejected，附 reason），"
            "另一个操作被接受（accepted）",
            not wrong,
            wrong,
        )
        held = self._configured()
        detail = _differs(held, first, ["1"])
        if held is not None and second["task_code"] in held:
            detail = f"被拒绝的操作仍然生效：配置清单含 {second['task_code']}"
        self.list.add(OFFER_AREA, "读回的配置清单：被拒绝的操作没有生效，同批次其他操作已生效", not detail, detail)

        got = self._post_batch(batch, self._key("first"))
        again = _payload(got)
        if got.status_code != 200:
            detail = _answered(got)
        elif again.get("replayed") is not True:
            shown = json.dumps(again.get("replayed"), ensure_ascii=False)
            detail = f'应答 200，但 "replayed" 为 {shown}（应为 true，并且不再执行该批次）'
        elif again.get("results") != answer.get("results"):
            detail = "应答的 results 与首次应答不同（应原样返回首次的应答）"
        else:
            detail = ""
        self.list.add(
            OFFER_AREA,
            '同一幂等键、同一正文再次提交应答 200，正文 "replayed": true，结果与首次相同',
            not detail,
            detail,
        )
        held = self._configured()
        detail = _differs(held, first, ["1"])
        if detail and _modes(held, first) == ["1", "2"]:
            detail = "重放后测试事项的可办理模式又变回首次写入的 1、2：同一批次被执行了两次"
        self.list.add(OFFER_AREA, "重放的批次没有再次生效（配置清单不变）", not detail, detail)

        got = self._post_batch([upsert(first, "2")], self._key("first"))
        ok = got.status_code == 409 and _error_body(got)
        taken = "：幂等键已用于另一批次，新批次却被执行了" if got.status_code == 200 else ""
        self.list.add(
            OFFER_AREA,
            '同一幂等键、不同正文的批次被拒绝（409），正文为 {"error": "原因"}',
            ok,
            "" if ok else f"应答 HTTP {got.status_code}{taken or '：' + _why(got)[:120]}",
        )
        held = self._configured()
        detail = _differs(held, first, ["1"])
        if detail and _modes(held, first) == ["2"]:
            detail = "测试事项的可办理模式被改为 2：被拒绝的批次生效了"
        self.list.add(OFFER_AREA, "被拒绝（409）的批次没有生效（配置清单不变）", not detail, detail)

        got = self._post_batch([Operation("delete", first["task_code"])], self._key("delete"))
        wrong = _results(got, [("delete", "accepted", first["task_code"])])
        held = self._configured()
        if not wrong and held is not None and first["task_code"] in held:
            wrong = "撤销被接受，但读回的配置清单仍含该测试事项"
        self.list.add(OFFER_AREA, "撤销测试事项的操作被接受（accepted），读回的配置清单不再含该事项", not wrong, wrong)

        got = self._post_batch([Operation("delete", never["task_code"])], self._key("delete-unconfigured"))
        wrong = _results(got, [("delete", "accepted", never["task_code"])])
        self.list.add(OFFER_AREA, "撤销未配置的事项同样被接受（accepted，撤销可重复）", not wrong, wrong)

    def _withdraw(self, codes: list[str], before: dict[str, Decoded]) -> None:
        """Withdraw the test items whatever happened, and check that the list is as it was found."""
        try:
            self._post_batch([Operation("delete", c) for c in codes], self._key("cleanup"))
            after = self._configured()
        except requests.RequestException as exc:
            self.list.add(
                OFFER_AREA,
                "检查结束时撤销测试事项",
                False,
                f"请求失败：{type(exc).__name__}；请手工删除 {'、'.join(codes)}",
            )
            return
        if after is None:
            return

        def state(listed: dict[str, Decoded]) -> dict[str, str]:
            return {c: digest({**(d.record or {}), MODES: d.modes}) for c, d in listed.items() if c not in codes}

        left = sorted(set(codes) & after.keys())
        changed = sorted(set(state(before).items()) ^ set(state(after).items()))
        ok = not left and not changed
        detail = (
            f"测试事项未能撤销，请手工删除：{'、'.join(left)}"
            if left
            else f"检查前后不同的实施编码：{'、'.join(sorted({c for c, _ in changed})[:SHOWN])}"
        )
        self.list.add(OFFER_AREA, "检查结束后配置清单与检查前相同（测试事项已撤销）", ok, "" if ok else detail)

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


def test_items(home: Partner, moment: datetime) -> list[dict[str, Any]]:
    """Three items of 沅江 for the offer checks, canonical records clearly marked as test items (``TEST_NAME``,
    基本编码 99990000000n of a test department of the home division); the kit withdraws them again."""
    uscc = make_uscc("1", "1", home.division, "TB990001")
    stamp = moment.astimezone(CHINA_TZ).replace(microsecond=0)
    items = []
    for n, name in enumerate((TEST_NAME, TEST_NAME.replace("（", "二（"), TEST_NAME.replace("（", "三（")), start=1):
        catalog = f"99990000000{n}"
        item = Item(
            partner=home.division,
            task_code=make_task_code(uscc, "4", catalog),
            catalog_code=catalog,
            name=name,
            legal_basis="接口联调测试，无设定依据（可删除）",
            item_type="20",
            accept_conditions="仅用于接口联调测试，不对外受理",
            service_objects=["1"],
            procedure="接口联调测试，无办理流程",
            materials=[{"name": "测试材料", "required": True, "form": "paper", "copies": 1, "source": "申请人自备"}],
            legal_limit=None,
            legal_limit_unit=None,
            promised_limit=1,
            promised_limit_unit="WD",
            result="无（接口联调测试）",
            level="4",
            dept_name=f"{home.name}接口联调测试单位",
            dept_uscc=uscc,
            handling_mode="1",
            handle_type="1",
            version="1",
            updated_at=stamp,
        )
        items.append(item.record())
    return items


def _payload(answer: requests.Response) -> dict[str, Any]:
    try:
        payload = answer.json()
    except ValueError:
        return {}
    return payload if isinstance(payload, dict) else {}


def _results(answer: requests.Response, expected: Sequence[tuple[str, str, str]]) -> str:
    """Why a batch's answer is not 200 with one result per operation in order, each with the expected ``op``,
    ``status``, ``line`` and 实施编码 (and a ``reason`` when rejected); empty when it is."""
    if answer.status_code != 200:
        return _answered(answer)
    results = _payload(answer).get("results")
    if not isinstance(results, list):
        return f"应答正文没有 results 列表：{answer.text[:120]}"
    if len(results) != len(expected):
        return f"批次有 {len(expected)} 个操作，results 有 {len(results)} 条结果"
    for line, (result, (op, status, code)) in enumerate(zip(results, expected, strict=True), start=1):
        want = {"op": op, "status": status, "line": line, "task_code": code}
        got = {k: result.get(k) for k in want} if isinstance(result, dict) else result
        if got != want:
            shown = json.dumps(result, ensure_ascii=False)[:160]
            return f"第 {line} 条结果应为 {json.dumps(want, ensure_ascii=False)}，实际为 {shown}"
        if status == "rejected" and not result.get("reason"):
            return f"第 {line} 条结果被拒绝，但没有说明原因（reason）"
    return ""


def _differs(held: dict[str, Decoded] | None, record: dict[str, Any], modes: list[str]) -> str:
    """How the read-back list fails to hold ``record`` as sent (every compared element) with ``modes``; empty
    when it holds it."""
    code = record["task_code"]
    got = None if held is None else held.get(code)
    if held is None:
        return "配置清单无法读取（见上）"
    if got is None:
        return f"配置清单中没有 {code}"
    if got.record is None:
        return f"{code} 无法读取：{'；'.join(got.problems)}"
    if digest({**got.record, MODES: got.modes}) != digest({**record, MODES: modes}):
        return f"{code} 读回的内容或可办理模式（{'、'.join(got.modes)}）与写入的（{'、'.join(modes)}）不一致"
    return ""


def _modes(held: dict[str, Decoded] | None, record: dict[str, Any]) -> list[str] | None:
    got = None if held is None else held.get(record["task_code"])
    return None if got is None else got.modes


def _listed(scope: str) -> str:
    """How a check of a list names it: the catalogue's checks name none, the configured list's do."""
    return "配置清单" if scope else ""


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


def _answered(answer: requests.Response) -> str:
    """How the checklist quotes an answer it did not expect: its status and the reason it gives."""
    return f"应答 HTTP {answer.status_code}：{_why(answer)[:120]}"


def _not_refused(answer: requests.Response) -> str:
    """Why an answer is not the refusal (4xx) a check expects. A server error says nothing of whether the request
    would have been refused, so the line says so: the partner has its availability to fix first, perhaps only."""
    if answer.status_code >= 500:
        return f"应答 HTTP {answer.status_code}（服务端错误，无法判断该请求是否会被按要求拒绝）：{_why(answer)[:120]}"
    return _answered(answer)


def _refusal(answer: requests.Response) -> str:
    if answer.status_code == 401:
        return "" if _error_body(answer) else '应答 401，但正文不是 {"error": "原因"}'
    return _not_refused(answer)


def _plain(message: str) -> str:
    return message[:160]


def check(
    fmt: WireFormat,
    base_url: str,
    division: str,
    secret: str,
    algorithm: str,
    *,
    max_seconds: float = 10.0,
    offer: bool = True,
) -> Checklist:
    """Run every check (the offer endpoint's unless ``offer`` is false); the checklist says what passes and
    what to fix."""
    return Kit(fmt, base_url, division, secret, algorithm, max_seconds=max_seconds, offer=offer).run()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tongban.conformance",
        description="跨省通办合作地区接口一致性检查",
        epilog=f"退出码：0 接口符合约定且读取的记录都能通过内容检查；1 接口需修改；"
        f"{CONTENT_EXIT} 接口符合约定，但有记录将被退回或隔离；2 参数或密钥缺失。",
    )
    parser.add_argument("--format", required=True, choices=sorted(wire_formats()), help="接口格式（见接口约定文档）")
    parser.add_argument("--division", required=True, help="贵方的 6 位行政区划代码")
    parser.add_argument("--signature", choices=ALGORITHMS, default="HMAC-SHA256", help="约定的签名算法")
    parser.add_argument("--max-seconds", type=float, default=10.0, help="每个应答允许的最长秒数")
    parser.add_argument(
        "--no-offer",
        action="store_true",
        help="不检查沅江事项配置接口（贵方只提供事项目录和报告接收时）",
    )
    parser.add_argument("base_url", help="贵方接口的基础地址，例如 https://example.gov.cn/tongban")
    args = parser.parse_args(argv)
    secret = os.environ.get(SECRET_ENV, "")
    if not secret:
        print(f"请在环境变量 {SECRET_ENV} 中提供约定的密钥（不要写在命令行上）。", file=sys.stderr)
        return 2
    fmt = wire_formats()[args.format]
    result = check(
        fmt, args.base_url, args.division, secret, args.signature, max_seconds=args.max_seconds, offer=not args.no_offer
    )
    print(result.render(f"跨省通办接口一致性检查：{style_name(fmt)}，{args.base_url}，签名 {args.signature}"))
    return result.exit_code()


if __name__ == "__main__":
    sys.exit(main())
