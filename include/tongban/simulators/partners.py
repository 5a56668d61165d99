"""The partner catalogue APIs: one FastAPI app serving every partner of the registry.

Each partner answers under ``/partners/{division}`` + its wire format's ``path``, with that
format's field names, codes, encoding, paging and authentication (every request signed with the
partner's registry ``signature`` algorithm, plus the format's API key or bearer token; the secrets in
``state_dir/partner_secrets.json``, see :mod:`.credentials`). It honours the format's incremental
parameter (records updated at or after the given moment). What it serves is the generated catalogue
(:mod:`tongban.simulators.catalogue`) plus the changes made through the admin API, which persist in
``state_dir/partner_overrides.json``.
Admin routes speak canonical records and need no credentials.

Fault profiles (``registry.Fault``) make a partner misbehave the way real systems do: each partner
starts with its registry ``faults:``; ``PUT /admin/partners/{division}/faults`` replaces them
(persisted in ``state_dir/partner_faults.json``), ``DELETE`` clears them.
"""

from __future__ import annotations

import base64
import binascii
import bisect
import hashlib
import hmac
import json
import os
import threading
import time
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from fastapi import Body, Depends, FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response, StreamingResponse
from pydantic import ValidationError

from tongban.auth import Refused, Verifier
from tongban.delivery import CHECKSUM_HEADER, REPORT_PATH, RUN_HEADER
from tongban.model import ITEM_FIELDS, Item
from tongban.outbound.wire import readback_format
from tongban.registry import (
    JSON_ONLY_FAULTS,
    REPORT_FAULT_KINDS,
    WRITE_FAULTS,
    Fault,
    Partner,
    Registry,
    WireFormat,
    wire_formats,
)
from tongban.simulators.catalogue import CHINA_TZ, defects, generate_catalogue, generate_catalogues, reference_time
from tongban.simulators.credentials import check_signed, partner_secrets, raw_body
from tongban.simulators.offers import OfferBook, OfferError, wire_listing
from tongban.simulators.wire import WireEncoder, csv_text

MAX_PAGE_SIZE = 500
OVERRIDES_FILE = "partner_overrides.json"
FAULTS_FILE = "partner_faults.json"
MAINTENANCE_PAGE = "<html><head><title>系统维护</title></head><body><h1>系统维护中，请稍后再试</h1></body></html>"
_CURSOR_PREFIX = "after:"


class SimulatorError(Exception):
    """A request the simulator refuses; ``message`` is shown to the caller."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


class PartnerStore:
    """Generated catalogues plus persisted admin overrides, per partner. Thread-safe."""

    def __init__(self, registry: Registry, overrides_path: Path) -> None:
        self.registry = registry
        self.path = overrides_path
        self.reference = reference_time(registry.seed)
        self._lock = threading.RLock()
        self._generated: dict[str, dict[str, dict[str, Any]]] = {}
        self._defects: dict[str, dict[str, str]] = {}
        self._served: dict[str, list[dict[str, Any]]] = {}
        self._changes = 0
        self._overrides: dict[str, dict[str, dict[str, Any] | None]] = {}
        self._load()

    # -- reading --

    def partner(self, division: str) -> Partner:
        for p in self.registry.partners:
            if p.division == division:
                return p
        raise SimulatorError(404, f"未知的合作地区：{division}")

    def items(self, division: str) -> list[dict[str, Any]]:
        """The records served for a partner, sorted by task_code (do not mutate them)."""
        with self._lock:
            if division not in self._served:
                merged = dict(self._base(division))
                for code, record in self._overrides.get(division, {}).items():
                    if record is None:
                        merged.pop(code, None)
                    else:
                        merged[code] = record
                self._served[division] = [merged[c] for c in sorted(merged)]
            return self._served[division]

    def defects(self, division: str) -> dict[str, str]:
        """Generated defects still served as generated (not changed through the admin API)."""
        with self._lock:
            self._base(division)
            changed = self._overrides.get(division, {})
            return {c: k for c, k in self._defects[division].items() if c not in changed}

    def pregenerate(self, processes: int = 1) -> None:
        """Generate every partner's catalogue now, in ``processes`` worker processes when it is worth it
        (:func:`~tongban.simulators.catalogue.generate_catalogues`), rather than on its first request."""
        with self._lock:
            for division, (records, broken) in generate_catalogues(self.registry, processes).items():
                self._generated[division] = {r["task_code"]: r for r in records}
                self._defects[division] = broken

    def _base(self, division: str) -> dict[str, dict[str, Any]]:
        if division not in self._generated:
            partner = self.partner(division)
            self._generated[division] = {r["task_code"]: r for r in generate_catalogue(self.registry, partner)}
            self._defects[division] = defects(self.registry, partner)
        return self._generated[division]

    def _current(self, division: str) -> dict[str, dict[str, Any]]:
        return {r["task_code"]: r for r in self.items(division)}

    # -- admin changes --

    def patch(self, division: str, task_code: str, changes: dict[str, Any]) -> dict[str, Any]:
        with self._lock:
            current = self._current(division).get(task_code)
            if current is None:
                raise SimulatorError(404, f"合作地区 {division} 不存在事项 {task_code}")
            unknown = sorted(set(changes) - set(ITEM_FIELDS))
            if unknown:
                raise SimulatorError(422, f"未知字段：{', '.join(unknown)}")
            for fixed in ("partner", "task_code"):
                if fixed in changes and changes[fixed] != current[fixed]:
                    raise SimulatorError(400, f"不能修改字段 {fixed}；请删除后新增事项")
            changed = {**current, **changes}
            if "version" not in changes:
                changed["version"] = _bump(current["version"])
            if "updated_at" not in changes:
                changed["updated_at"] = self._next_stamp()
            record = _validated(changed)
            self._store(division, task_code, record)
            return record

    def add(self, division: str, record: dict[str, Any]) -> dict[str, Any]:
        with self._lock:
            self.partner(division)
            if record.get("partner", division) != division:
                raise SimulatorError(400, f"记录所属地区 {record.get('partner')} 与路径中的地区 {division} 不一致")
            task_code = record.get("task_code")
            if task_code in self._current(division):
                raise SimulatorError(409, f"合作地区 {division} 已存在事项 {task_code}")
            full = {"partner": division, "version": "1", "updated_at": self._next_stamp(), **record}
            checked = _validated(full)
            self._store(division, checked["task_code"], checked)
            return checked

    def delete(self, division: str, task_code: str) -> None:
        with self._lock:
            if task_code not in self._current(division):
                raise SimulatorError(404, f"合作地区 {division} 不存在事项 {task_code}")
            self._store(division, task_code, None)

    def reset(self) -> None:
        """Drop every override. The change counter stays, so later changes still move updated_at on."""
        with self._lock:
            self._overrides = {}
            self._served.clear()
            self._save()

    def _next_stamp(self) -> str:
        """The next change's updated_at: the reference time plus one day per change made so far."""
        return (self.reference + timedelta(days=self._changes + 1)).isoformat()

    def _store(self, division: str, task_code: str, record: dict[str, Any] | None) -> None:
        self._changes += 1
        overrides = self._overrides.setdefault(division, {})
        if record is None and task_code not in self._base(division):
            overrides.pop(task_code, None)  # an added record deleted again: nothing left to override
        else:
            overrides[task_code] = record
        self._served.pop(division, None)
        self._save()

    # -- persistence --

    def _load(self) -> None:
        if not self.path.exists():
            return
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
            self._changes = int(data["changes"])
            overrides = data["partners"]
        except (ValueError, KeyError, TypeError) as exc:
            raise RuntimeError(f"cannot read simulator overrides {self.path}: {exc}") from exc
        known = {p.division for p in self.registry.partners}
        self._overrides = {d: dict(items) for d, items in overrides.items() if d in known}

    def _save(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(self.path.name + ".tmp")
        payload = {"changes": self._changes, "partners": self._overrides}
        tmp.write_text(json.dumps(payload, ensure_ascii=False, indent=1, sort_keys=True), encoding="utf-8")
        os.replace(tmp, self.path)


def _bump(version: str) -> str:
    return str(int(version) + 1) if version.isdigit() else f"{version}.1"


def _validated(record: dict[str, Any]) -> dict[str, Any]:
    try:
        return Item(**record).record()
    except ValidationError as exc:
        problems = "；".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        raise SimulatorError(422, f"事项记录不合法：{problems}") from exc
    except TypeError as exc:
        raise SimulatorError(422, f"事项记录不合法：{exc}") from exc


def encode_cursor(task_code: str) -> str:
    return base64.urlsafe_b64encode((_CURSOR_PREFIX + task_code).encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> str:
    """The task_code a cursor points after; raises SimulatorError(400) for a cursor not issued here."""
    try:
        text = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
    except (binascii.Error, UnicodeDecodeError, ValueError) as exc:
        raise SimulatorError(400, f"无效的游标：{cursor}") from exc
    if not text.startswith(_CURSOR_PREFIX):
        raise SimulatorError(400, f"无效的游标：{cursor}")
    return text.removeprefix(_CURSOR_PREFIX)


def _int_param(request: Request, name: str | None, default: int, low: int, high: int | None = None) -> int:
    raw = request.query_params.get(name) if name else None
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError as exc:
        raise SimulatorError(400, f"参数 {name} 应为整数，收到 {raw!r}") from exc
    if value < low or (high is not None and value > high):
        bounds = f"{low}–{high}" if high is not None else f"不小于 {low}"
        raise SimulatorError(400, f"参数 {name} 超出范围（{bounds}）：{value}")
    return value


# --- authentication -----------------------------------------------------------------------------


class Gatekeeper:
    """Checks each request to a partner against its secret, its format's ``auth`` and its registry
    ``signature`` algorithm (:class:`tongban.auth.Verifier`: stale timestamps and replayed nonces refused)."""

    def __init__(self, secrets: dict[str, str], clock: Callable[[], float] = time.time) -> None:
        self.secrets = secrets
        self.verifier = Verifier(clock)

    def check(self, partner: Partner, fmt: WireFormat, request: Request, body: bytes) -> None:
        division = partner.division
        try:
            check_signed(self.verifier, division, fmt.auth, self.secrets[division], partner.signature, request, body)
        except Refused as exc:
            raise SimulatorError(401, exc.message) from None


# --- fault profiles -----------------------------------------------------------------------------

ANSWERING_FAULTS = ("bad_signature", "server_error", "rate_limit")  # replace the answer, in this order


class FaultBook:
    """Each partner's fault profiles: the registry's, or those set through the admin API (persisted).

    A fault with ``times`` affects that many matching requests, then the partner behaves again;
    setting a partner's faults restarts the count.
    """

    def __init__(self, registry: Registry, path: Path) -> None:
        self.registry = registry
        self.path = path
        self._lock = threading.Lock()
        self._set: dict[str, list[Fault]] = {}
        if path.exists():
            try:
                stored = json.loads(path.read_text(encoding="utf-8"))
                self._set = {d: [Fault(**f) for f in faults] for d, faults in stored.items()}
            except (ValueError, TypeError, ValidationError) as exc:
                raise RuntimeError(f"cannot read simulator faults {path}: {exc}") from exc
        self._left: dict[str, list[int | None]] = {}

    def faults(self, division: str) -> list[Fault]:
        if division in self._set:
            return self._set[division]
        return list(next((p.faults for p in self.registry.partners if p.division == division), ()))

    def put(self, division: str, faults: list[Fault]) -> None:
        with self._lock:
            self._set[division] = faults
            self._left.pop(division, None)
            self._save()

    def reset(self) -> None:
        with self._lock:
            self._set = {}
            self._left = {}
            self._save()

    def draw(self, division: str, page: int, writes: bool = False, report: bool = False) -> list[Fault]:
        """The faults that hit this request (for page ``page``; ``writes``: a write of the offer endpoint,
        which only ``WRITE_FAULTS`` hit, and only there; ``report``: a report delivery, which only
        ``REPORT_FAULT_KINDS`` hit), counted."""
        with self._lock:
            faults = self.faults(division)
            left = self._left.setdefault(division, [f.times for f in faults])
            hit = []
            for i, fault in enumerate(faults):
                if (fault.kind in WRITE_FAULTS) is not writes or (fault.kind in REPORT_FAULT_KINDS) is not report:
                    continue
                if fault.page is not None and fault.page != page:
                    continue
                if fault.kind == "duplicate_page" and page < 2:
                    continue
                if left[i] is not None:
                    if left[i] <= 0:
                        continue
                    left[i] -= 1
                hit.append(fault)
            return hit

    def _save(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(self.path.name + ".tmp")
        data = {d: [f.spec() for f in faults] for d, faults in self._set.items()}
        tmp.write_text(json.dumps(data, ensure_ascii=False, indent=1, sort_keys=True), encoding="utf-8")
        os.replace(tmp, self.path)


# --- one catalogue answer -----------------------------------------------------------------------


def _since(fmt: WireFormat, request: Request) -> datetime | None:
    if fmt.incremental is None:
        return None
    raw = request.query_params.get(fmt.incremental.param)
    if not raw:
        return None
    try:
        return datetime.strptime(raw, fmt.incremental.format).replace(tzinfo=CHINA_TZ)
    except ValueError:
        expected = fmt.incremental.format
        raise SimulatorError(400, f"参数 {fmt.incremental.param} 应为 {expected} 格式，收到 {raw!r}") from None


class _Slice:
    """Which records one request asks for: page number (1-based), start index, size."""

    def __init__(self, fmt: WireFormat, items: list[dict[str, Any]], request: Request) -> None:
        paging = fmt.paging
        self.size = _int_param(request, paging.size_param, paging.page_size, 1, MAX_PAGE_SIZE)
        if paging.kind == "page":
            self.number_param = _int_param(request, paging.page_param, paging.first_page, paging.first_page)
            self.start = (self.number_param - paging.first_page) * self.size
        else:
            cursor = request.query_params.get(paging.cursor_param or "cursor")
            after = decode_cursor(cursor) if cursor else None
            self.start = 0 if after is None else bisect.bisect_right(items, after, key=_task_code)
        self.page = self.start // self.size + 1
        self.end = self.start + self.size


def _task_code(record: dict[str, Any]) -> str:
    return str(record["task_code"])


def _answer(encoder: WireEncoder, items: list[dict[str, Any]], request: Request, faults: list[Fault]) -> Response:
    """The page the request asks for, as the format writes it, with the drawn faults applied."""
    fmt = encoder.format
    paging = fmt.paging
    kinds = {f.kind: f for f in faults}
    if "empty_catalogue" in kinds:
        items = []
    if shrunk := kinds.get("total_shrinks"):
        items = items[: shrunk.total]
    where = _Slice(fmt, items, request)
    rows = items[where.start : where.end]
    more = where.end < len(items)
    if "duplicate_page" in kinds and where.start > 0:
        rows = items[max(0, where.start - where.size) : where.start] + rows  # the page before, again
    if "missing_page" in kinds:
        rows = []
    wire = [encoder.encode(r) for r in rows]
    columns = list(fmt.fields.values())
    if drift := kinds.get("schema_drift"):
        renamed, added = dict(drift.rename), dict(drift.add)
        wire = [{renamed.get(k, k): v for k, v in row.items()} | added for row in wire]
        columns = [renamed.get(c, c) for c in columns] + [c for c in added if c not in columns]
    wire = _mistyped(fmt, wire, kinds)
    omit_total = "total_shrinks" in kinds and kinds["total_shrinks"].omit_total
    headers: dict[str, str] = {}
    if fmt.media == "csv":
        text = csv_text(columns, wire)
        media = f"text/csv; charset={fmt.encoding.upper()}"
        if paging.total_header and not omit_total:
            headers[paging.total_header] = str(len(items))
    else:
        if paging.kind == "page":
            payload: dict[str, Any] = {"code": 200, paging.total_field or "total": len(items)}
            payload |= {paging.page_param or "page": where.number_param, paging.size_param: where.size}
        else:
            payload = {"success": True}
            if paging.total_field:
                payload[paging.total_field] = len(items)
            last = items[where.end - 1]["task_code"] if more and where.end - 1 < len(items) else None
            payload[paging.next_field or "nextCursor"] = encode_cursor(last) if last else None
        if omit_total:
            payload.pop(paging.total_field or "total", None)
        payload[paging.items_field or "data"] = wire
        text = json.dumps(payload, ensure_ascii=False)
        if (nested := kinds.get("nested_body")) and wire:
            text = text.replace(json.dumps(_NESTED), "[" * nested.depth + "]" * nested.depth, 1)
        media = f"application/json; charset={fmt.encoding}"
    encoding = fmt.encoding
    if "wrong_encoding" in kinds:
        encoding = "utf-8" if fmt.encoding.lower() != "utf-8" else "gbk"
    body = text.encode(encoding)
    if "truncated" in kinds:
        body = body[: max(1, len(body) // 2)]
    if "invalid_json" in kinds:
        body, media = MAINTENANCE_PAGE.encode(), "text/html; charset=utf-8"
    if oversized := kinds.get("oversized"):
        return StreamingResponse(_padded(body, oversized.size), media_type=media, headers=headers)
    return Response(body, media_type=media, headers=headers)


_NESTED = "\u0000nested\u0000"  # where nested_body puts its arrays (a value no record holds)


def _mistyped(fmt: WireFormat, wire: list[Any], kinds: dict[str, Fault]) -> list[Any]:
    """The page's wire records as the type faults make them (records of a CSV are text whatever happens)."""
    code, stamp_field = fmt.fields["task_code"], fmt.fields["updated_at"]
    if future := kinds.get("future_timestamp"):
        stamp = future.stamp.strftime(fmt.datetime_format)
        wire = [{**row, stamp_field: stamp} if i < future.count else row for i, row in enumerate(wire)]
    if fmt.media == "csv":
        return wire
    if wrong := kinds.get("wrong_types"):
        digits = [i for i, row in enumerate(wire) if str(row[code]).isdigit()][: wrong.count]
        wire = [{**row, code: int(row[code])} if i in digits else row for i, row in enumerate(wire)]
    if "nested_body" in kinds and wire:
        wire = [{**wire[0], code: _NESTED}, *wire[1:]]
    if "non_objects" in kinds:
        wire = [json.dumps(row, ensure_ascii=False) for row in wire]
    return wire


def _padded(body: bytes, size: int) -> Iterator[bytes]:
    """The body followed by blanks up to ``size`` bytes (valid JSON; just far too big)."""
    yield body
    chunk = b" " * (256 * 1024)
    left = size - len(body)
    while left > 0:
        yield chunk[: min(left, len(chunk))]
        left -= len(chunk)


def _refusal(fault: Fault, fmt: WireFormat) -> JSONResponse:
    if fault.kind == "bad_signature":
        reason = "签名校验失败" if fmt.auth.scheme == "signature" else "凭证无效"
        return JSONResponse({"error": reason}, status_code=401)
    if fault.kind == "rate_limit":
        headers = {"Retry-After": str(1 if fault.retry_after is None else fault.retry_after)}
        return JSONResponse({"error": "请求过于频繁，请稍后再试"}, status_code=429, headers=headers)
    return JSONResponse({"error": "服务暂不可用"}, status_code=fault.status)


def create_partner_app(registry: Registry, state_dir: Path, clock: Callable[[], float] = time.time) -> FastAPI:
    """The partner simulator app; admin overrides, fault profiles and secrets live under ``state_dir``."""
    state_dir = Path(state_dir)
    store = PartnerStore(registry, state_dir / OVERRIDES_FILE)
    book = FaultBook(registry, state_dir / FAULTS_FILE)
    gate = Gatekeeper(partner_secrets(state_dir, registry), clock)
    encoders = {name: WireEncoder(fmt) for name, fmt in wire_formats().items()}
    app = FastAPI(title="跨省通办合作地区事项接口模拟器", docs_url="/docs", redoc_url=None)
    app.state.store = store
    app.state.faults = book
    offers = OfferBook(registry, state_dir)
    app.state.offers = offers
    readback = {name: WireEncoder(readback_format(fmt)) for name, fmt in wire_formats().items() if fmt.offer}

    @app.exception_handler(SimulatorError)
    async def _refused(_: Request, exc: SimulatorError) -> JSONResponse:
        return JSONResponse({"error": exc.message}, status_code=exc.status)

    @app.get("/healthz")
    def healthz() -> dict[str, Any]:
        return {"status": "ok", "partners": len(registry.partners)}

    @app.get("/partners/{division}/{path:path}")
    def catalogue(division: str, path: str, request: Request, body: bytes = Depends(raw_body)) -> Response:
        partner = store.partner(division)
        encoder = encoders[partner.format]
        wire = encoder.format
        if wire.offer and "/" + path.strip("/") == wire.offer.path.rstrip("/"):  # what it configured of ours
            gate.check(partner, wire, request, body)
            return _answer(readback[wire.name], wire_listing(wire, offers.configured(division)), request, [])
        if "/" + path.strip("/") != wire.path.rstrip("/"):
            raise SimulatorError(404, f"合作地区 {division} 没有接口 /{path}（应为 {wire.path}）")
        gate.check(partner, wire, request, body)
        items = store.items(division)
        since = _since(wire, request)
        if since is not None:
            items = [r for r in items if datetime.fromisoformat(r["updated_at"]) >= since]
        faults = book.draw(division, _Slice(wire, items, request).page)
        for fault in faults:
            if fault.kind == "slow":
                time.sleep(fault.delay)
        for kind in ANSWERING_FAULTS:
            refusal = next((f for f in faults if f.kind == kind), None)
            if refusal is not None:
                return _refusal(refusal, wire)
        return _answer(encoder, items, request, faults)

    @app.get("/admin/partners/{division}/items")
    def admin_items(division: str) -> JSONResponse:
        items = store.items(division)
        return JSONResponse({"partner": division, "count": len(items), "items": items})

    @app.get("/admin/partners/{division}/defects")
    def admin_defects(division: str) -> dict[str, Any]:
        return {"partner": division, "defects": store.defects(division)}

    @app.get("/admin/partners/{division}/faults")
    def admin_faults(division: str) -> dict[str, Any]:
        store.partner(division)
        return {"partner": division, "faults": [f.spec() for f in book.faults(division)]}

    @app.put("/admin/partners/{division}/faults")
    def admin_set_faults(division: str, faults: list[dict[str, Any]] = Body(...)) -> dict[str, Any]:  # noqa: B008
        partner = store.partner(division)
        try:
            parsed = [Fault(**f) for f in faults]
        except (ValidationError, TypeError) as exc:
            raise SimulatorError(422, f"故障配置不合法：{exc}") from exc
        media = encoders[partner.format].format.media
        if media != "json" and (moot := sorted({f.kind for f in parsed} & set(JSON_ONLY_FAULTS))):
            kinds = "、".join(moot)
            raise SimulatorError(
                422, f"故障 {kinds} 只作用于 JSON 格式；合作地区 {division} 的接口为 {partner.format}，设置了也不会生效"
            )
        book.put(division, parsed)
        return {"partner": division, "faults": [f.spec() for f in parsed]}

    @app.delete("/admin/partners/{division}/faults")
    def admin_clear_faults(division: str) -> dict[str, Any]:
        store.partner(division)
        book.put(division, [])
        return {"partner": division, "faults": []}

    @app.patch("/admin/partners/{division}/items/{task_code}")
    def admin_patch(division: str, task_code: str, changes: dict[str, Any]) -> dict[str, Any]:
        return store.patch(division, task_code, changes)

    @app.post("/admin/partners/{division}/items", status_code=201)
    def admin_add(division: str, record: dict[str, Any]) -> dict[str, Any]:
        return store.add(division, record)

    @app.delete("/admin/partners/{division}/items/{task_code}")
    def admin_delete(division: str, task_code: str) -> dict[str, Any]:
        store.delete(division, task_code)
        return {"partner": division, "deleted": task_code}

    @app.post("/admin/reset")
    def admin_reset() -> dict[str, Any]:
        """Drop every admin change and every fault set through the admin API."""
        store.reset()
        book.reset()
        offers.reset()
        return {"reset": True}

    @app.get("/admin/partners/{division}/offers")
    def admin_offers(division: str) -> dict[str, Any]:
        """What the partner has configured of 沅江's items (canonical), and the drift it started with."""
        items = offers.configured(division)
        return {"partner": division, "count": len(items), "items": items, "drift": offers.drift(division)}

    @app.delete("/admin/partners/{division}/offers/{task_code}")
    def admin_drop_offer(division: str, task_code: str) -> dict[str, Any]:
        offers.remove(division, task_code)
        return {"partner": division, "removed": task_code}

    # -- report delivery (tongban.delivery): each partner receives its run reports --

    received = ReportInbox(state_dir / REPORTS_FILE)
    app.state.reports = received

    @app.post("/partners/{division}/" + REPORT_PATH)
    async def receive_report(division: str, request: Request) -> JSONResponse:
        """A partner's report for one run, authenticated like that partner's catalogue API.

        The body is the report JSON exactly as sent, ``X-Tongban-Run-Id`` its run and
        ``X-Content-SHA256`` the SHA-256 of the body. Idempotent per (run, checksum).
        """
        partner = store.partner(division)
        body = await request.body()
        gate.check(partner, encoders[partner.format].format, request, body)
        if book.draw(division, 1, report=True):  # report_html: a proxy's page in front of the receiver
            return HTMLResponse(MAINTENANCE_PAGE)
        run_id = request.headers.get(RUN_HEADER, "").strip()
        given = request.headers.get(CHECKSUM_HEADER, "").strip().lower()
        if not run_id or not given:
            raise SimulatorError(400, f"缺少请求头 {RUN_HEADER} 或 {CHECKSUM_HEADER}")
        actual = hashlib.sha256(body).hexdigest()
        if not hmac.compare_digest(actual, given):
            raise SimulatorError(400, f"校验和不符：请求头 {given}，正文 {actual}（报告在传输中被改动？）")
        try:
            report = json.loads(body)
        except ValueError as exc:
            raise SimulatorError(400, f"报告不是合法的 JSON：{exc}") from exc
        if not isinstance(report, dict) or report.get("partner") != division:
            raise SimulatorError(409, f"报告不属于合作地区 {division}")
        if report.get("run_id") != run_id:
            stated = report.get("run_id")
            raise SimulatorError(409, f"报告的运行编号 {stated!r} 与请求头 {RUN_HEADER} {run_id!r} 不一致")
        status, entry = received.put(division, run_id, actual, len(body), report.get("counts"))
        if status == "conflict":
            raise SimulatorError(409, f"运行 {run_id} 的报告已收到（校验和 {entry['sha256']}），内容不同，拒收")
        message = "已收到（重复投递）" if status == "duplicate" else "已接收"
        code = 200 if status == "duplicate" else 201
        return JSONResponse({"status": status, "message": message, **entry}, status_code=code)

    @app.get("/admin/partners/{division}/reports")
    def admin_reports(division: str) -> dict[str, Any]:
        store.partner(division)
        entries = received.list(division)
        return {"partner": division, "count": len(entries), "reports": entries}

    @app.post("/partners/{division}/{path:path}")
    async def offer_batch(division: str, path: str, request: Request) -> JSONResponse:
        """A batch of 沅江's items to configure or withdraw (the format's ``offer`` endpoint)."""
        partner = store.partner(division)
        wire = encoders[partner.format].format
        if not wire.offer or "/" + path.strip("/") != wire.offer.path.rstrip("/"):
            raise SimulatorError(404, f"合作地区 {division} 没有接口 POST /{path}")
        body = await request.body()
        gate.check(partner, wire, request, body)
        for fault in book.draw(division, 1, writes=True):
            wait = {} if fault.retry_after is None else {"Retry-After": str(fault.retry_after)}
            return JSONResponse({"error": "事项配置接口维护中，暂不可写入"}, status_code=fault.status, headers=wait)
        key = request.headers.get(wire.offer.key_header, "").strip()
        if not key or len(key) > 200:
            raise SimulatorError(400, f"缺少或过长的请求头 {wire.offer.key_header}（幂等键，最多200个字符）")
        try:
            return JSONResponse(offers.apply(division, wire, key, body))
        except OfferError as exc:
            raise SimulatorError(exc.status, exc.message) from exc

    return app


REPORTS_FILE = "partner_reports.json"


class ReportInbox:
    """The reports each partner received: one per (partner, run), persisted in ``state_dir``."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._got: dict[str, dict[str, dict[str, Any]]] = {}
        if path.exists():
            self._got = json.loads(path.read_text(encoding="utf-8"))

    def put(self, division: str, run_id: str, sha256: str, size: int, counts: Any) -> tuple[str, dict[str, Any]]:
        """``received``, ``duplicate`` (same run and checksum) or ``conflict`` (same run, other content)."""
        with self._lock:
            runs = self._got.setdefault(division, {})
            if (known := runs.get(run_id)) is not None:
                return ("duplicate" if known["sha256"] == sha256 else "conflict"), known
            entry = {"run_id": run_id, "sha256": sha256, "bytes": size, "counts": counts}
            entry["received_at"] = datetime.now(CHINA_TZ).isoformat()
            runs[run_id] = entry
            self.path.parent.mkdir(parents=True, exist_ok=True)
            tmp = self.path.with_name(self.path.name + ".tmp")
            tmp.write_text(json.dumps(self._got, ensure_ascii=False, indent=1, sort_keys=True), encoding="utf-8")
            os.replace(tmp, self.path)
            return "received", entry

    def list(self, division: str) -> list[dict[str, Any]]:
        with self._lock:
            return sorted(self._got.get(division, {}).values(), key=lambda e: e["received_at"])
