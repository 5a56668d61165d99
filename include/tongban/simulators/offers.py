"""What each partner has configured of 沅江's items, and its offer endpoint (read and write).

Each partner keeps a list of our items it has configured for handling there (canonical record plus the
handling modes), persisted in ``state_dir/partner_offers.json``. It starts as the offer of the library
as generated (:mod:`tongban.simulators.library`), as if an earlier sync had configured it, with
deterministic drift (``DRIFT_ROLES``, given to the registry's first partners in order):

- ``behind``: ``BEHIND`` items one version behind (a longer promised limit, the last material missing);
- ``missing``: ``MISSING`` items never configured;
- ``withdrawn``: one withdrawn item still listed;
- ``mode_mismatch``: one item with a mode we do not offer, one lacking a mode we offer.

A partner whose writes fail for a while has a ``write_unavailable`` fault (registry ``faults:`` or the
admin API); one with such a fault in the registry also starts with one item missing (the write it could
not take), so that the first run meets the failing endpoint.

The endpoint is the wire format's ``offer`` block: ``GET`` pages the configured list like the catalogue,
``POST`` applies a batch idempotently (same key and body: the stored answer again; same key, other body:
409), answering per operation; see docs/partner-formats.md §13.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
import uuid
from pathlib import Path
from typing import Any

from tongban.outbound.wire import MODES, decode_batch, decode_rows, encode_modes
from tongban.registry import WRITE_FAULTS, Partner, Registry, WireFormat
from tongban.simulators.catalogue import _copied, _digest
from tongban.simulators.library import generate_library, home_partner

OFFERS_FILE = "partner_offers.json"
DRIFT_ROLES = ("behind", "missing", "withdrawn", "mode_mismatch")
BEHIND = 3
MISSING = 4


class OfferError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def drift_roles(registry: Registry) -> dict[str, str]:
    """division -> drift role of the partners that start with one."""
    return {p.division: role for p, role in zip(registry.partners, DRIFT_ROLES, strict=False)}


def offer_to(library: list[dict[str, Any]], division: str) -> dict[str, dict[str, Any]]:
    """What the library offers one partner: task code -> {record, modes}."""
    return {
        e["task_code"]: {"record": {k: v for k, v in e.items() if k != "offer"}, "modes": list(e["offer"]["modes"])}
        for e in library
        if e["offer"]["offered"] and division in e["offer"]["regions"]
    }


def initial_configuration(registry: Registry, partner: Partner) -> tuple[dict[str, dict[str, Any]], dict[str, Any]]:
    """The partner's configured list at the start, and what drifted in it (role, task codes)."""
    library = generate_library(registry)
    configured = offer_to(library, partner.division)
    role = drift_roles(registry).get(partner.division)
    if role is None and any(f.kind in WRITE_FAULTS for f in partner.faults):
        role = "write_failing"
    picked = sorted(configured, key=lambda c: _digest(f"{registry.seed}|{partner.division}|drift|{c}"))
    drift: dict[str, Any] = {"role": role, "task_codes": []}
    if role == "behind":
        for code in picked[:BEHIND]:
            record = _copied(configured[code]["record"])
            record["version"] = str(max(1, int(record["version"]) - 1)) if record["version"].isdigit() else "1"
            if record["promised_limit"] is not None:
                record["promised_limit"] += 2
            if len(record["materials"]) > 1:
                record["materials"] = record["materials"][:-1]
            configured[code] = {"record": record, "modes": configured[code]["modes"]}
            drift["task_codes"].append(code)
    elif role in ("missing", "write_failing"):
        for code in picked[: MISSING if role == "missing" else 1]:
            del configured[code]
            drift["task_codes"].append(code)
    elif role == "withdrawn":
        withdrawn = next(e for e in library if e["offer"].get("withdrawn"))
        record = {k: v for k, v in withdrawn.items() if k != "offer"}
        configured[withdrawn["task_code"]] = {"record": record, "modes": list(withdrawn["offer"]["modes"])}
        drift["task_codes"].append(withdrawn["task_code"])
    elif role == "mode_mismatch":
        extra, lacking = picked[0], picked[1]
        modes = set(configured[extra]["modes"])
        configured[extra]["modes"] = sorted(modes | {min({"1", "2", "3"} - modes or {"3"})})
        if len(configured[lacking]["modes"]) > 1:
            configured[lacking]["modes"] = configured[lacking]["modes"][:-1]
        else:  # one mode offered: the partner has another one instead
            configured[lacking]["modes"] = [min({"1", "2", "3"} - set(configured[lacking]["modes"]))]
        drift["task_codes"] += [extra, lacking]
    return configured, drift


class OfferBook:
    """Every partner's configured list of our items and the batches it took (thread-safe, persisted)."""

    def __init__(self, registry: Registry, state_dir: Path) -> None:
        self.registry = registry
        self.home = home_partner(registry)
        self.path = Path(state_dir) / OFFERS_FILE
        self._lock = threading.RLock()
        self._state: dict[str, dict[str, Any]] = {}
        if self.path.exists():
            try:
                self._state = json.loads(self.path.read_text(encoding="utf-8"))
            except ValueError as exc:
                raise RuntimeError(f"cannot read simulator offers {self.path}: {exc}") from exc

    def _partner(self, division: str) -> dict[str, Any]:
        if division not in self._state:
            configured, drift = initial_configuration(self.registry, self.registry.partner(division))
            self._state[division] = {"items": configured, "batches": {}, "drift": drift}
        return self._state[division]

    def configured(self, division: str) -> list[dict[str, Any]]:
        """The configured items, by task code: canonical record plus ``offer_modes``."""
        with self._lock:
            items = self._partner(division)["items"]
            return [{**items[c]["record"], MODES: list(items[c]["modes"])} for c in sorted(items)]

    def drift(self, division: str) -> dict[str, Any]:
        with self._lock:
            return dict(self._partner(division)["drift"])

    def remove(self, division: str, task_code: str) -> None:
        """A partner dropping one of our items on its own (admin)."""
        with self._lock:
            if self._partner(division)["items"].pop(task_code, None) is None:
                raise OfferError(404, f"合作地区 {division} 未配置事项 {task_code}")
            self._save()

    def reset(self) -> None:
        with self._lock:
            self._state = {}
            self._save()

    def apply(self, division: str, fmt: WireFormat, key: str, body: bytes) -> dict[str, Any]:
        """Apply one batch (idempotent under ``key``); the answer lists every operation's outcome."""
        digest = hashlib.sha256(body).hexdigest()
        with self._lock:
            state = self._partner(division)
            if (known := state["batches"].get(key)) is not None:
                if known["sha256"] != digest:
                    raise OfferError(409, f"幂等键 {key} 已用于内容不同的批次 {known['answer']['batch_id']}")
                return {**known["answer"], "replayed": True}
            try:
                rows = decode_batch(fmt, body)
            except ValueError as exc:
                raise OfferError(400, str(exc)) from exc
            results = []
            for n, decoded in enumerate(decode_rows(fmt, rows, self.home, "批次"), start=1):
                reason = "；".join(decoded.problems) or None
                if decoded.op is None and reason is None:
                    reason = "缺少操作类型"
                if reason is None and decoded.op == "upsert":
                    assert decoded.record is not None and decoded.task_code is not None
                    state["items"][decoded.task_code] = {"record": decoded.record, "modes": decoded.modes}
                elif reason is None:
                    state["items"].pop(decoded.task_code, None)  # withdrawing what is not there is fine
                results.append(
                    {
                        "task_code": decoded.task_code,
                        "op": decoded.op,
                        "line": n,
                        "status": "accepted" if reason is None else "rejected",
                        "reason": reason,
                    }
                )
            answer = {"batch_id": uuid.uuid4().hex, "idempotency_key": key, "replayed": False, "results": results}
            state["batches"][key] = {"sha256": digest, "answer": answer}
            self._save()
            return answer

    def _save(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(self.path.name + ".tmp")
        tmp.write_text(json.dumps(self._state, ensure_ascii=False, sort_keys=True), encoding="utf-8")
        os.replace(tmp, self.path)


def wire_listing(fmt: WireFormat, configured: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Configured items ready for the catalogue encoder of the read-back format (modes already on the wire)."""
    return [{**r, MODES: encode_modes(fmt, r[MODES])} for r in configured]
