"""沅江's local item library on the provincial platform, with each item's 跨省通办 configuration.

``generate_library(registry)`` is deterministic in the registry's seed, home region and partners:
``LIBRARY_SIZE`` items of 沅江 (430981) made by the catalogue generator (provincial, city and town
implementations, a few deliberate defects), of which ``OFFERED`` valid ones are offered for handling in
partner regions. Each entry is the item's canonical record plus ``offer``: ``offered``, ``modes``
(canonical handling mode codes: 1 全程网办, 2 异地代收代办, 3 两地联办) and ``regions`` (partner
division codes: every partner of the registry, or by agreement one province's only). A few valid items
are ``withdrawn``: offered before, not any more (``withdrawn_items``).

The platform serves it read-only (``GET /api/v1/library/items``: paging and ``updated_since``) and
changes it through ``PATCH /admin/library/items/{task_code}`` (persisted in ``state_dir``); see
docs/platform-api.md, *沅江's item library*.
"""

from __future__ import annotations

import json
import os
import random
import threading
from collections.abc import Sequence
from datetime import datetime, timedelta
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Query
from pydantic import ValidationError

from tongban.model import ITEM_FIELDS, Item
from tongban.outbound.wire import home_region
from tongban.registry import Partner, Registry, dictionaries
from tongban.simulators import content
from tongban.simulators.catalogue import _build_cached, _copied, _digest, reference_time

LIBRARY_SIZE = 360
OFFERED = 99  # 沅江's 2023 report: 99 local items configured for handling in partner regions
ONE_PROVINCE_SHARE = 0.12  # offered items agreed with one province only
WITHDRAWN = 3
MAX_PAGE_SIZE = 500
LIBRARY_OVERRIDES = "library_overrides.json"


def home_partner(registry: Registry) -> Partner:
    """沅江 as the generator's region, ``LIBRARY_SIZE`` items."""
    return home_region(registry, LIBRARY_SIZE)


def _partners(registry: Registry) -> tuple[str, ...]:
    return tuple(p.division for p in registry.partners)


def generate_library(registry: Registry) -> list[dict[str, Any]]:
    """Every library entry (record + ``offer``), by task code; copies, free to change."""
    entries = _library(registry.seed, home_partner(registry), _partners(registry))
    return [_copied(e) | {"offer": dict(e["offer"])} for e in entries]


def library_defects(registry: Registry) -> dict[str, str]:
    """The deliberately broken items of the library (task code -> kind); none of them is offered."""
    home = home_partner(registry)
    return dict(_build_cached(registry.seed, home, (home,), home.name)[1])


def withdrawn_items(registry: Registry) -> list[str]:
    """Task codes of valid items offered before and withdrawn since (offered False)."""
    return [e["task_code"] for e in generate_library(registry) if e["offer"].get("withdrawn")]


@lru_cache(maxsize=8)
def _library(seed: int, home: Partner, partners: tuple[str, ...]) -> tuple[dict[str, Any], ...]:
    records, broken = _build_cached(seed, home, (home,), home.name)
    templates = {(t.item_type, t.main): t for t in content.TEMPLATES}
    bad_groups = {r["catalog_code"] for r in records if r["task_code"] in broken}
    valid = [r for r in records if r["catalog_code"] not in bad_groups]
    rng = random.Random(_digest(f"{seed}|{home.division}|library offer"))
    chosen = rng.sample(range(len(valid)), min(len(valid), OFFERED + WITHDRAWN))
    offered = {valid[i]["task_code"] for i in chosen[:OFFERED]}
    withdrawn = {valid[i]["task_code"] for i in chosen[OFFERED:]}
    provinces = sorted({d[:2] + "0000" for d in partners})
    entries = []
    for record in records:
        code = record["task_code"]
        offer: dict[str, Any] = {"offered": False, "modes": [], "regions": []}
        if code in offered or code in withdrawn:
            template = templates[(record["catalog_code"][2:4], record["catalog_code"][4:9])]
            modes = {record["handling_mode"], *(m for m in template.modes if rng.random() < 0.5)}
            regions = list(partners)
            if provinces and rng.random() < ONE_PROVINCE_SHARE:
                province = rng.choice(provinces)
                regions = [d for d in partners if d[:2] + "0000" == province]
            offer = {"offered": code in offered, "modes": sorted(modes), "regions": regions}
            if code in withdrawn:
                offer["withdrawn"] = True
        entries.append({**record, "offer": offer})
    return tuple(entries)


def _checked_offer(offer: Any, partners: tuple[str, ...]) -> dict[str, Any]:
    if not isinstance(offer, dict) or set(offer) - {"offered", "modes", "regions", "withdrawn"}:
        raise LibraryError(422, "offer 应为对象，字段 offered、modes、regions")
    modes = sorted(set(offer.get("modes", [])))
    given = set(offer.get("regions", []))
    regions = [d for d in partners if d in given]
    unknown = set(modes) - set(dictionaries()["handling_mode"])
    if unknown:
        raise LibraryError(422, f"未知的办理模式：{', '.join(sorted(unknown))}")
    if given - set(partners):
        raise LibraryError(422, f"未知的合作地区：{', '.join(sorted(given - set(partners)))}")
    offered = bool(offer.get("offered", False))
    if offered and (not modes or not regions):
        raise LibraryError(422, "开放跨省通办的事项至少要有一种办理模式和一个合作地区")
    return {"offered": offered, "modes": modes, "regions": regions} | (
        {"withdrawn": True} if offer.get("withdrawn") else {}
    )


class LibraryError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


class Library:
    """The generated library plus admin changes (persisted in ``state_dir/library_overrides.json``)."""

    def __init__(self, registry: Registry, state_dir: Path) -> None:
        self.registry = registry
        self.path = Path(state_dir) / LIBRARY_OVERRIDES
        self.reference = reference_time(registry.seed)
        self._lock = threading.RLock()
        self._changes = 0
        self._overrides: dict[str, dict[str, Any]] = {}
        if self.path.exists():
            data = json.loads(self.path.read_text(encoding="utf-8"))
            self._changes, self._overrides = int(data["changes"]), dict(data["items"])

    def entries(self) -> list[dict[str, Any]]:
        with self._lock:
            merged = {e["task_code"]: e for e in generate_library(self.registry)}
            merged.update(self._overrides)
            return [merged[c] for c in sorted(merged)]

    def patch(self, task_code: str, changes: dict[str, Any]) -> dict[str, Any]:
        """Change an item's elements and/or its ``offer``; bumps its version and update time."""
        with self._lock:
            current = next((e for e in self.entries() if e["task_code"] == task_code), None)
            if current is None:
                raise LibraryError(404, f"事项库中不存在事项 {task_code}")
            unknown = sorted(set(changes) - set(ITEM_FIELDS) - {"offer"})
            if unknown:
                raise LibraryError(422, f"未知字段：{', '.join(unknown)}")
            for fixed in ("partner", "task_code"):
                if fixed in changes and changes[fixed] != current[fixed]:
                    raise LibraryError(400, f"不能修改字段 {fixed}")
            offer = _checked_offer({**current["offer"], **changes.pop("offer", {})}, _partners(self.registry))
            self._changes += 1
            record = {k: v for k, v in current.items() if k != "offer"} | changes
            if "version" not in changes:
                record["version"] = str(int(record["version"]) + 1) if record["version"].isdigit() else "2"
            record["updated_at"] = (self.reference + timedelta(days=self._changes)).isoformat()
            try:  # well-formed only: defects stay in (an empty 设定依据 …), checking them is the pipeline's job
                record = Item(**record).record()
            except ValidationError as exc:
                problems = "；".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
                raise LibraryError(422, f"事项记录不合法：{problems}") from exc
            entry = {**record, "offer": offer}
            self._overrides[task_code] = entry
            self._save()
            return entry

    def reset(self) -> None:
        with self._lock:
            self._overrides = {}
            self._save()

    def _save(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(self.path.name + ".tmp")
        payload = {"changes": self._changes, "items": self._overrides}
        tmp.write_text(json.dumps(payload, ensure_ascii=False, indent=1, sort_keys=True), encoding="utf-8")
        os.replace(tmp, self.path)


def library_router(library: Library, signed: Sequence[Any] = ()) -> APIRouter:
    """The library's routes on the platform app (``LibraryError`` answered as ``{"error": ...}``); ``signed``:
    the dependencies that check a request's signature, as for the platform's other APIs (admin routes have none)."""
    router = APIRouter()

    @router.get("/api/v1/library/items", dependencies=list(signed))
    def library_items(
        page: Annotated[int, Query(ge=1)] = 1,
        page_size: Annotated[int, Query(ge=1, le=MAX_PAGE_SIZE)] = 100,
        updated_since: Annotated[datetime | None, Query(description="ISO 8601 with offset; at or after")] = None,
    ) -> dict[str, Any]:
        """沅江's library (records + 跨省通办 offer), by task code, page by page."""
        entries = library.entries()
        if updated_since is not None:
            if updated_since.tzinfo is None:
                raise LibraryError(400, "updated_since 须带时区，例如 2026-11-01T00:00:00+08:00")
            entries = [e for e in entries if datetime.fromisoformat(e["updated_at"]) >= updated_since]
        start = (page - 1) * page_size
        return {
            "region": library.registry.home["division"],
            "total": len(entries),
            "page": page,
            "page_size": page_size,
            "items": entries[start : start + page_size],
        }

    @router.patch("/admin/library/items/{task_code}")
    def library_patch(task_code: str, changes: dict[str, Any]) -> dict[str, Any]:
        return library.patch(task_code, changes)

    @router.post("/admin/library/reset")
    def library_reset() -> dict[str, Any]:
        library.reset()
        return {"reset": True}

    return router
