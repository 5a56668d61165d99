"""The partner catalogue APIs: one FastAPI app serving every partner of the registry.

Each partner answers under ``/partners/{division}`` + its wire format's ``path``, with that
format's field names, codes and paging. What it serves is the generated catalogue
(:mod:`tongban.simulators.catalogue`) plus the changes made through the admin API, which persist
in ``state_dir/partner_overrides.json``. Admin routes speak canonical records.
"""

from __future__ import annotations

import base64
import binascii
import bisect
import json
import os
import threading
from datetime import timedelta
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from pydantic import ValidationError

from tongban.model import ITEM_FIELDS, Item
from tongban.registry import Partner, Registry, wire_formats
from tongban.simulators.catalogue import defects, generate_catalogue, reference_time
from tongban.simulators.wire import WireEncoder

MAX_PAGE_SIZE = 500
OVERRIDES_FILE = "partner_overrides.json"
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
            changed = self._overrides.get(division, {})
            return {c: k for c, k in defects(self.registry, self.partner(division)).items() if c not in changed}

    def _base(self, division: str) -> dict[str, dict[str, Any]]:
        if division not in self._generated:
            records = generate_catalogue(self.registry, self.partner(division))
            self._generated[division] = {r["task_code"]: r for r in records}
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


def _page(encoder: WireEncoder, items: list[dict[str, Any]], request: Request) -> dict[str, Any]:
    """One page of page/pageSize paging: ``{"code": 200, "total": N, "page": p, "pageSize": s, "data": [...]}``."""
    paging = encoder.format.paging
    page_param, total_field = paging.page_param or "page", paging.total_field or "total"
    size = _int_param(request, paging.size_param, paging.page_size, 1, MAX_PAGE_SIZE)
    page = _int_param(request, page_param, paging.first_page, paging.first_page)
    start = (page - paging.first_page) * size
    return {
        "code": 200,
        total_field: len(items),
        page_param: page,
        paging.size_param: size,
        paging.items_field: [encoder.encode(r) for r in items[start : start + size]],
    }


def _cursor_page(encoder: WireEncoder, items: list[dict[str, Any]], request: Request) -> dict[str, Any]:
    """One page of cursor paging: ``{"success": true, "rows": [...], "nextCursor": "…" | null}``.

    The cursor names the last task_code served (keyset paging), so a client paging through while the
    catalogue changes neither repeats nor skips the records that stay.
    """
    paging = encoder.format.paging
    size = _int_param(request, paging.size_param, paging.page_size, 1, MAX_PAGE_SIZE)
    cursor = request.query_params.get(paging.cursor_param or "cursor")
    start = bisect.bisect_right([r["task_code"] for r in items], decode_cursor(cursor)) if cursor else 0
    rows = items[start : start + size]
    more = start + size < len(items)
    return {
        "success": True,
        paging.items_field: [encoder.encode(r) for r in rows],
        paging.next_field or "nextCursor": encode_cursor(rows[-1]["task_code"]) if more and rows else None,
    }


def create_partner_app(registry: Registry, state_dir: Path) -> FastAPI:
    """The partner simulator app; admin overrides persist under ``state_dir``."""
    store = PartnerStore(registry, Path(state_dir) / OVERRIDES_FILE)
    encoders = {name: WireEncoder(fmt) for name, fmt in wire_formats().items()}
    app = FastAPI(title="跨省通办合作地区事项接口模拟器", docs_url="/docs", redoc_url=None)
    app.state.store = store

    @app.exception_handler(SimulatorError)
    async def _refused(_: Request, exc: SimulatorError) -> JSONResponse:
        return JSONResponse({"error": exc.message}, status_code=exc.status)

    @app.get("/healthz")
    def healthz() -> dict[str, Any]:
        return {"status": "ok", "partners": len(registry.partners)}

    @app.get("/partners/{division}/{path:path}")
    def catalogue(division: str, path: str, request: Request) -> JSONResponse:
        encoder = encoders[store.partner(division).format]
        wire = encoder.format
        if "/" + path.strip("/") != wire.path.rstrip("/"):
            raise SimulatorError(404, f"合作地区 {division} 没有接口 /{path}（应为 {wire.path}）")
        items = store.items(division)
        if wire.paging.kind == "page":
            return JSONResponse(_page(encoder, items, request))
        return JSONResponse(_cursor_page(encoder, items, request))

    @app.get("/admin/partners/{division}/items")
    def admin_items(division: str) -> JSONResponse:
        items = store.items(division)
        return JSONResponse({"partner": division, "count": len(items), "items": items})

    @app.get("/admin/partners/{division}/defects")
    def admin_defects(division: str) -> dict[str, Any]:
        return {"partner": division, "defects": store.defects(division)}

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
        store.reset()
        return {"reset": True}

    return app
