"""Pull a partner's catalogue page by page; archive every raw response before anything parses it.

This module pages and decodes; the HTTP side (signing every attempt anew, timeouts, the size cap,
retries with backoff and jitter honouring ``Retry-After``) is :mod:`tongban.http`'s. Every body is
archived (:mod:`tongban.archive`) and every attempt written to the manifest before the answer is
judged; a page that arrives damaged is retried like a 5xx, anything else fails at once with a
message that names the partner, the request and the partner's own reason. A malformed answer (an
HTML page with 200, a page without its total, a cut-off body) is asked for once more; the same bytes
again mean it will not change by itself, and the pull fails at once instead of spending its retries.

Paging is checked against what the partner declares: page paging must deliver exactly the declared
total of distinct records (a short or empty page before the total is retried, then fails as missing
records); cursor paging stops at the last cursor and checks the total where the format declares
one. Exact duplicate records are not counted twice (:class:`tongban.normalise.Deduper`).
"""

from __future__ import annotations

import codecs
import csv
import io
import json
import math
import time
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import requests

from tongban.archive import Archive
from tongban.config import CHINA_TZ
from tongban.http import Answer, HttpClient, HttpFailure, HttpSettings, Signer, TryAgain, reason
from tongban.normalise import Deduper, parse_time
from tongban.registry import Partner, WireFormat

MAX_PAGES = 10_000
FUTURE_SKEW = timedelta(minutes=5)  # a record dated this much after the pull started is future-dated
KEPT_RESPONSE_HEADERS = ("content-type", "content-length", "content-encoding", "retry-after", "date")
# decode with the superset: a GBK export may carry GB18030-only characters
DECODE_AS = {"gbk": "gb18030", "gb2312": "gb18030", "utf-8": "utf-8-sig", "utf8": "utf-8-sig"}


class FetchError(RuntimeError):
    """A partner's catalogue could not be pulled; the message names the partner, the request and why.

    ``retryable``: whether trying again later may help (the partner is down or overloaded), as
    opposed to an answer that will not change by itself (refused credentials, schema drift, …).
    ``exchanges``: the manifest of the attempts made, for the record.
    """

    def __init__(self, message: str, *, retryable: bool) -> None:
        super().__init__(message)
        self.retryable = retryable
        self.exchanges: list[dict[str, Any]] = []


class PageError(ValueError):
    """A body that is not a usable page of the format; ``retryable`` if it looks damaged in transit."""

    def __init__(self, message: str, *, retryable: bool) -> None:
        super().__init__(message)
        self.retryable = retryable


@dataclass(frozen=True)
class FetchSettings(HttpSettings):
    """HTTP behaviour of a pull (:class:`tongban.http.HttpSettings`) and its paging tolerances."""

    page_size: int | None = None  # ask for pages of this size instead of the format's
    extra_pages: int = 3  # page paging: pages tolerated past the declared total (repeated pages)
    cursor_repeats: int = 2  # cursor paging: times one cursor may come back before paging is stuck


# --- reading and parsing one answer -------------------------------------------------------------


@dataclass
class ParsedPage:
    rows: list[Any]
    total: int | None = None
    next_cursor: str | None = None
    unexpected_fields: list[str] = field(default_factory=list)


def decode(fmt: WireFormat, body: bytes) -> str:
    """The body as text in the format's encoding, strictly. Raises PageError."""
    declared = codecs.lookup(fmt.encoding).name
    if declared not in ("utf-8", "ascii") and not body.isascii():
        try:
            body.decode("utf-8")
        except UnicodeDecodeError:
            pass
        else:
            raise PageError(f"正文是 UTF-8 编码，而该格式约定为 {fmt.encoding.upper()} 编码", retryable=False)
    codec = DECODE_AS.get(declared, declared)
    try:
        return body.decode(codec)
    except UnicodeDecodeError as exc:
        if exc.end >= len(body) - 1 and exc.start >= len(body) - 4:
            raise PageError(f"正文在第 {exc.start} 字节处中断（内容不完整）", retryable=True) from exc
        raise PageError(
            f"正文不是 {fmt.encoding.upper()} 编码（第 {exc.start} 字节 0x{body[exc.start]:02x} 无法解码）",
            retryable=False,
        ) from exc


def parse_page(fmt: WireFormat, body: bytes, headers: Mapping[str, str]) -> ParsedPage:
    """One answer of the format: its records (JSON objects, or CSV rows as dicts), the declared total,
    the next cursor. Raises PageError for a body that is not such a page."""
    if body.lstrip()[:1] == b"<":  # an error or maintenance page from a gateway, whatever its encoding
        kind = "JSON" if fmt.media == "json" else "CSV"
        preview = body[:120].decode("utf-8", errors="replace")
        raise PageError(f"正文不是{kind}，而是 HTML 页面：{preview!r}", retryable=True)
    text = decode(fmt, body)
    page = _parse_csv(fmt, text, headers) if fmt.media == "csv" else _parse_json(fmt, text)
    _check_fields(fmt, page)
    return page


def _parse_json(fmt: WireFormat, text: str) -> ParsedPage:
    paging = fmt.paging
    try:
        payload = json.loads(text)
    except RecursionError:
        raise PageError("JSON 嵌套层数过深，无法解析（不是约定的分页格式）", retryable=False) from None
    except ValueError as exc:
        raise PageError(f"JSON 无法解析（内容可能不完整）：{exc}", retryable=True) from exc
    if not isinstance(payload, dict) or not isinstance(payload.get(paging.items_field), list):
        raise PageError(f"应答缺少记录列表 {paging.items_field}：{text[:160]!r}", retryable=True)
    total = _total(payload.get(paging.total_field)) if paging.total_field else None
    if paging.kind == "page" and total is None:
        raise PageError(f"应答缺少总数 {paging.total_field}", retryable=True)
    cursor = payload.get(paging.next_field) if paging.next_field else None
    if cursor is not None and not isinstance(cursor, str):
        raise PageError(f"游标 {paging.next_field} 不是字符串：{cursor!r}", retryable=False)
    return ParsedPage(payload[paging.items_field], total, cursor or None)


def _parse_csv(fmt: WireFormat, text: str, headers: Mapping[str, str]) -> ParsedPage:
    paging = fmt.paging
    lines = [row for row in csv.reader(io.StringIO(text, newline=""), strict=True) if row]
    if not lines:
        raise PageError("CSV 为空（连表头都没有）", retryable=True)
    header = [h.strip() for h in lines[0]]
    if len(set(header)) != len(header):
        raise PageError(f"CSV 表头有重复列：{header}", retryable=False)
    rows = []
    for number, values in enumerate(lines[1:], start=2):
        if len(values) != len(header):
            raise PageError(
                f"CSV 第 {number} 行有 {len(values)} 列，表头 {len(header)} 列（内容可能不完整）", retryable=True
            )
        rows.append(dict(zip(header, values, strict=True)))
    total = None
    if paging.total_header:
        lowered = {k.lower(): v for k, v in headers.items()}
        total = _total(lowered.get(paging.total_header.lower()))
        if total is None:
            raise PageError(f"应答头缺少总数 {paging.total_header}", retryable=True)
    elif paging.total_field:
        raise PageError("CSV 格式只能在应答头中给出总数", retryable=False)
    page = ParsedPage(rows, total)
    page.unexpected_fields = sorted(set(header) - set(fmt.fields.values()))
    missing = [f for f in fmt.fields.values() if f not in header]
    if missing:
        raise PageError(_drift(missing, page.unexpected_fields), retryable=False)
    return page


def _total(value: Any) -> int | None:
    try:
        total = int(str(value).strip())
    except ValueError:
        return None
    return total if total >= 0 else None


def _drift(missing: list[str], unexpected: list[str]) -> str:
    extra = f"；出现未约定的字段 {', '.join(unexpected)}" if unexpected else ""
    return f"接口字段结构变化：缺少约定字段 {', '.join(missing)}{extra}"


def _check_fields(fmt: WireFormat, page: ParsedPage) -> None:
    """Schema drift: a declared field missing from every record of a page fails the pull (retrying
    will not help); fields the format does not declare are noted and ignored."""
    if fmt.media == "csv":
        return
    objects = [r for r in page.rows if isinstance(r, dict)]
    if not objects:
        return
    declared = set(fmt.fields.values())
    page.unexpected_fields = sorted({k for r in objects for k in r} - declared)
    missing = [f for f in fmt.fields.values() if all(f not in r for r in objects)]
    if missing:
        raise PageError(_drift(missing, page.unexpected_fields), retryable=False)


def updated_at(fmt: WireFormat, row: Any) -> datetime | None:
    """A record's update time (partner local time, China), or None when it has none readable."""
    if not isinstance(row, dict):
        return None
    value = row.get(fmt.fields["updated_at"])
    try:
        return parse_time(str(value), fmt.datetime_format).replace(tzinfo=CHINA_TZ)
    except ValueError:
        return None


# --- the pull -----------------------------------------------------------------------------------


@dataclass
class FetchResult:
    exchanges: list[dict[str, Any]]  # the manifest: one entry per request attempt
    pages: int
    fetched: int  # records taken (exact duplicates counted once)
    duplicates: int
    declared_total: int | None
    watermark: datetime | None  # the latest update time among the records taken (future-dated ones left out)
    unexpected_fields: list[str]
    future_dated: list[dict[str, Any]] = field(default_factory=list)  # records dated after ``not_after``


class _Puller:
    def __init__(
        self,
        partner: Partner,
        fmt: WireFormat,
        base_url: str,
        archive: Archive,
        client: HttpClient,
        not_after: datetime | None = None,
    ) -> None:
        self.partner, self.fmt, self.archive, self.client = partner, fmt, archive, client
        self.not_after = not_after + FUTURE_SKEW if not_after else None
        self.future: list[dict[str, Any]] = []
        self.url = base_url.rstrip("/") + fmt.path
        self.who = client.who
        self.exchanges: list[dict[str, Any]] = []
        self.dedupe = Deduper(fmt.fields["task_code"])
        self.unexpected: set[str] = set()
        self.watermark: datetime | None = None
        self.total: int | None = None

    # one request, all its attempts
    def page(self, number: int, params: dict[str, Any], check: Callable[[ParsedPage], str | None]) -> ParsedPage:
        asked = dict(params)
        malformed: list[str] = []  # sha256 of each malformed answer so far

        def judge(answer: Answer) -> ParsedPage:
            if answer.status != 200:
                message = f"{self.who}: GET {self.url} {asked} answered HTTP {answer.status}: {reason(answer.body)}"
                raise HttpFailure(message, retryable=False, status=answer.status)
            try:
                parsed = parse_page(self.fmt, answer.body, answer.headers)
                complaint = check(parsed)
                if complaint:
                    raise PageError(complaint, retryable=True)
            except PageError as exc:
                answer.entry["error"] = str(exc)
                if not exc.retryable:
                    raise HttpFailure(
                        f"{self.who}: page {number} of {self.url} {asked}: {exc}", retryable=False
                    ) from None
                digest = answer.entry.get("sha256", "")
                if malformed and malformed[-1] == digest:  # byte for byte the same again: it stays so
                    raise HttpFailure(
                        f"{self.who}: page {number} of {self.url} {asked}: malformed answer, the same twice in a "
                        f"row (sha256 {digest[:12]}…), retrying will not help: {exc}",
                        retryable=False,
                    ) from None
                malformed.append(digest)
                raise TryAgain(str(exc)) from None
            return parsed

        try:
            return self.client.request(
                "GET",
                self.url,
                params=asked,
                log_to=self.exchanges,
                note={"page": number, "records": 0},
                on_body=self._record,
                check=judge,
            )
        except HttpFailure as exc:
            raise self.fail(str(exc), retryable=exc.retryable) from None

    def _record(self, answer: Answer, response: requests.Response | None) -> None:
        """Archive the body (before anything parses it) and note the answer in the manifest entry."""
        entry = answer.entry
        if response is not None:
            kept = {k.lower(): v for k, v in response.headers.items() if k.lower() in KEPT_RESPONSE_HEADERS}
            if self.fmt.paging.total_header and self.fmt.paging.total_header in response.headers:
                kept[self.fmt.paging.total_header.lower()] = response.headers[self.fmt.paging.total_header]
            entry["response_headers"] = kept
        entry["sha256"] = self.archive.put(answer.body)
        entry["size"] = len(answer.body)

    def fail(self, message: str, *, retryable: bool = False) -> FetchError:
        """The pull's FetchError (to raise), carrying every attempt so far; ``message`` names the partner."""
        error = FetchError(message, retryable=retryable)
        error.exchanges = self.exchanges
        return error

    # records of an accepted page
    def take(self, number: int, page: ParsedPage) -> int:
        """Count the page's records in; returns how many were new (not exact duplicates)."""
        entry = self.exchanges[-1]
        new = dup = 0
        for index, row in enumerate(page.rows, start=1):
            if self.dedupe.add(row, (number, index)) == "duplicate":
                dup += 1
                continue
            new += 1
            stamp = updated_at(self.fmt, row)
            if stamp is not None and self.not_after is not None and stamp > self.not_after:
                code = row.get(self.fmt.fields["task_code"])
                self.future.append({"position": f"第{number}页第{index}条", "task_code": code})
                self.future[-1]["updated_at"] = stamp.isoformat()
            elif stamp is not None and (self.watermark is None or stamp > self.watermark):
                self.watermark = stamp
        entry.update(rows=len(page.rows), records=new, duplicates=dup)
        self.unexpected |= set(page.unexpected_fields)
        if page.unexpected_fields:
            entry["unexpected_fields"] = page.unexpected_fields
        if page.total is not None:
            self.total = page.total
        return new


def fetch_catalogue(
    partner: Partner,
    fmt: WireFormat,
    base_url: str,
    archive: Archive,
    *,
    secret: str | None = None,
    since: datetime | None = None,
    settings: FetchSettings | None = None,
    session: requests.Session | None = None,
    clock: Callable[[], float] = time.time,
    not_after: datetime | None = None,
) -> FetchResult:
    """Pull every page of ``partner``'s catalogue (only records changed since ``since`` when given).

    Every answer is archived before it is parsed; the returned manifest lists every attempt. Raises
    FetchError (with ``exchanges`` set) when the pull cannot be completed exactly. Records updated
    later than ``not_after`` (the pull's start, plus ``FUTURE_SKEW`` for clocks a little apart) are
    listed in ``future_dated`` and left out of the watermark: one record dated 2099 must not stop every
    later incremental pull.
    """
    settings = settings or FetchSettings()
    signer = Signer(fmt.auth, secret, partner.signature, clock=clock)
    client = HttpClient(f"partner {partner.division} ({partner.name})", signer, settings, session)
    puller = _Puller(partner, fmt, base_url, archive, client, not_after)
    paging = fmt.paging
    size = settings.page_size or paging.page_size
    params: dict[str, Any] = {paging.size_param: size}
    if since is not None:
        if fmt.incremental is None:
            raise ValueError(f"format {fmt.name} has no incremental parameter")
        params[fmt.incremental.param] = since.astimezone(CHINA_TZ).strftime(fmt.incremental.format)
    pages = 0
    if paging.kind == "page":
        assert paging.page_param
        params[paging.page_param] = paging.first_page

        def complete(page: ParsedPage) -> str | None:
            new = puller.dedupe.count_new(page.rows)
            have, total = puller.dedupe.distinct + new, page.total or 0
            if len(page.rows) < size and have < total:
                what = "为空" if not page.rows else f"只有 {len(page.rows)} 条（每页 {size} 条）"
                return f"第 {params[paging.page_param]} 页{what}，声明总数 {total}，累计仅 {have} 条：页面缺失或不完整"
            return None

        while True:
            pages += 1
            page = puller.page(pages, params, complete)
            puller.take(pages, page)
            total = puller.total or 0
            if puller.dedupe.distinct >= total:
                break
            expected_pages = math.ceil(total / size)
            if pages >= expected_pages + settings.extra_pages or pages >= MAX_PAGES:
                raise puller.fail(
                    f"{puller.who}: paged {pages} pages of {size} and got {puller.dedupe.distinct} distinct records "
                    f"of the {total} declared: pages repeat or are missing"
                )
            params[paging.page_param] += 1
    else:
        assert paging.cursor_param
        requested: Counter[str] = Counter()
        while True:
            pages += 1
            page = puller.page(pages, params, lambda _page: None)
            puller.take(pages, page)
            cursor = page.next_cursor
            if not cursor:
                break
            requested[cursor] += 1
            if requested[cursor] > 1 + settings.cursor_repeats:
                again = f"cursor {cursor!r} came back {requested[cursor]} times"
                raise puller.fail(f"{puller.who}: {again}: paging does not advance")
            if pages >= MAX_PAGES:
                raise puller.fail(f"{puller.who}: more than {MAX_PAGES} pages")
            params[paging.cursor_param] = cursor
    total, distinct = puller.total, puller.dedupe.distinct
    if total is not None and distinct != total:
        lost = f"{total - distinct} records missing" if distinct < total else f"{distinct - total} more than declared"
        raise puller.fail(
            f"{puller.who}: received {distinct} distinct records but the partner declared {total} ({lost}); "
            "a page was skipped or the catalogue changed while paging"
        )
    return FetchResult(
        exchanges=puller.exchanges,
        pages=pages,
        fetched=distinct,
        duplicates=puller.dedupe.duplicates,
        declared_total=total,
        watermark=puller.watermark,
        unexpected_fields=sorted(puller.unexpected),
        future_dated=puller.future,
    )


def archived_pages(manifest: list[dict[str, Any]], archive: Archive, fmt: WireFormat) -> list[tuple[int, list[Any]]]:
    """(page number, records) of a run's accepted answers, read back from the archive only."""
    pages = []
    for entry in manifest:
        if entry.get("outcome") != "ok":
            continue
        body = archive.get(entry["sha256"])
        pages.append((entry["page"], parse_page(fmt, body, entry.get("response_headers", {})).rows))
    return pages
