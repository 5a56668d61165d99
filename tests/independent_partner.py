"""A partner's own implementation of the national_json catalogue API, the offer endpoint (§13: 沅江's items
configured here) and the report receiver, written from docs/partner-formats.md alone — as a partner's engineers
would, with the standard library (and the ``cryptography`` package for SM3). It shares no code with tongban or
its simulator; the conformance kit is proved against it (tests/test_conformance.py). ``idempotent=False`` is
the same partner with a classic bug: it ignores the idempotency key (applies a retried batch again, never
answers ``replayed``, never 409).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, quote, urlsplit

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives import hmac as crypto_hmac

BASE_PATH = "/gov/tongban"  # our base URL's path; the format's path comes after it
SKEW = 300
ITEMS_PATH = "/api/v1/items"
OFFER_PATH = "/api/v1/cross-items"  # §13: 沅江's items we configured (GET) / to configure or withdraw (POST)
REPORTS_PATH = "/api/reports"

# §2: the fields of national_json and those that may be empty; §3: its codes
FIELDS = [
    "task_code",
    "catalog_code",
    "task_name",
    "by_law",
    "task_type",
    "accept_condition",
    "server_type",
    "handle_flow",
    "materials",
    "anticipate_day",
    "anticipate_type",
    "promise_day",
    "promise_type",
    "result_name",
    "use_level",
    "dept_name",
    "dept_code",
    "handle_mode",
    "project_type",
    "task_version",
    "update_time",
]
MAY_BE_EMPTY = {"anticipate_day", "anticipate_type", "project_type"}
CODES = {
    "task_type": {"01", "02", "03", "04", "05", "06", "07", "08", "09", "10", "20"},
    "use_level": {"1", "2", "3", "4", "5", "6"},
    "handle_mode": {"1", "2", "3"},
    "project_type": {"1", "2"},
    "anticipate_type": {"1", "2"},
    "promise_type": {"1", "2"},
}
SERVICE_OBJECTS = {"1", "2", "3", "4", "5", "6", "9"}
MODES = {"1", "2", "3"}  # 办理模式, joined by "," in handle_modes
MATERIAL_FIELDS = ("material_name", "is_need", "material_form", "page_num", "source_type")
MATERIAL_CODES = {"is_need": {"1", "2"}, "material_form": {"1", "2", "3"}}


def _record(n: int, updated: str) -> dict[str, Any]:
    uscc = "11440100MB2C90389P"  # a 广州 body; both check characters right (GB 32100, GB 11714)
    catalog = f"00010400{n:04d}"
    return {
        "task_code": f"{uscc}3{catalog}",
        "catalog_code": catalog,
        "task_name": f"测试事项{n}",
        "by_law": "《某某条例》第一条",
        "task_type": "01",
        "accept_condition": "符合条件的申请人",
        "server_type": "1,2",
        "handle_flow": "申请、受理、审核、办结",
        "materials": [
            {
                "material_name": "申请书",
                "is_need": "1",
                "material_form": "1",
                "page_num": 1,
                "source_type": "申请人自备",
            },
            {
                "material_name": "身份证明",
                "is_need": "2",
                "material_form": "2",
                "page_num": None,
                "source_type": "政府部门核发",
            },
        ],
        "anticipate_day": None if n % 3 == 0 else 20,
        "anticipate_type": None if n % 3 == 0 else "1",
        "promise_day": 5,
        "promise_type": "1",
        "result_name": "批准文件",
        "use_level": "3",
        "dept_name": "某市某局",
        "dept_code": uscc,
        "handle_mode": "1",
        "project_type": None if n % 4 == 0 else "2",
        "task_version": "1",
        "update_time": updated,
    }


def _yuanjiang_item() -> dict[str, Any]:
    """One of 沅江's items we have configured already (the example of §13.2)."""
    return {
        "task_code": "11430000017731934K2002021003000",
        "catalog_code": "002021003000",
        "task_name": "医疗保险参保信息变更登记",
        "by_law": "《中华人民共和国社会保险法》第五十八条",
        "task_type": "20",
        "accept_condition": "1.已参加基本医疗保险",
        "server_type": "1,2",
        "handle_flow": "1.申请：提交材料；2.办结",
        "materials": [
            {
                "material_name": "居民身份证",
                "is_need": "1",
                "material_form": "1",
                "page_num": 2,
                "source_type": "政府部门核发",
            }
        ],
        "anticipate_day": None,
        "anticipate_type": None,
        "promise_day": 1,
        "promise_type": "1",
        "result_name": "参保信息变更结果",
        "use_level": "2",
        "dept_name": "湖南省医疗保障局",
        "dept_code": "11430000017731934K",
        "handle_mode": "2",
        "project_type": "1",
        "task_version": "3",
        "update_time": "2023-05-15 11:59:27",
        "handle_modes": "1,2",
    }


def problems_of(item: dict[str, Any]) -> list[str]:
    """Why an upsert cannot be taken (§13.2: a field missing or not mappable as in §2–§3, an unknown or no mode)."""
    out = [f"缺少字段 {name}" for name in FIELDS if name not in item]
    for name in FIELDS:
        value = item.get(name)
        if name not in item or (value is None and name in MAY_BE_EMPTY):
            continue
        if value is None or value == "":
            out.append(f"字段 {name} 不能为空")
        elif name in CODES and value not in CODES[name]:
            out.append(f"字段 {name} 的值 {value!r} 不在代码表中")
        elif name in ("anticipate_day", "promise_day") and (not isinstance(value, int) or isinstance(value, bool)):
            out.append(f"字段 {name} 应为整数")
        elif name == "server_type" and not set(str(value).split(",")) <= SERVICE_OBJECTS:
            out.append(f"字段 server_type 的值 {value!r} 不在代码表中")
        elif name == "update_time" and not _is_time(value):
            out.append("字段 update_time 应为 YYYY-MM-DD HH:MM:SS")
    materials = item.get("materials")
    if "materials" in item and not isinstance(materials, list):
        out.append("字段 materials 应为列表")
    for m in materials if isinstance(materials, list) else []:
        if not isinstance(m, dict) or any(f not in m for f in MATERIAL_FIELDS):
            out.append("申请材料缺少字段")
        elif any(m[f] not in codes for f, codes in MATERIAL_CODES.items()):
            out.append("申请材料的是否必要或材料形式不在代码表中")
    modes = [m for m in str(item.get("handle_modes") or "").split(",") if m]
    if not modes:
        out.append("handle_modes 为空：至少要有一种办理模式")
    elif not set(modes) <= MODES:
        out.append(f"handle_modes 含未知的办理模式 {sorted(set(modes) - MODES)}")
    return out


def _is_time(value: Any) -> bool:
    try:
        time.strptime(str(value), "%Y-%m-%d %H:%M:%S")
    except ValueError:
        return False
    return True


class Partner:
    """Our catalogue, what we configured of 沅江's items, our secret and what we received."""

    def __init__(self, division: str, secret: str, algorithm: str, *, idempotent: bool = True) -> None:
        self.division, self.secret, self.algorithm = division, secret, algorithm
        stamps = ["2026-10-01 08:00:00", "2026-10-02 09:30:00", "2026-11-03 10:00:00", "2026-11-03 10:00:00"]
        self.records = sorted((_record(n, stamps[n % len(stamps)]) for n in range(1, 24)), key=lambda r: r["task_code"])
        first = _yuanjiang_item()
        self.configured: dict[str, dict[str, Any]] = {first["task_code"]: first}
        self.idempotent = idempotent
        self.batches: dict[str, tuple[str, dict[str, Any]]] = {}  # idempotency key -> (body SHA-256, answer)
        self.nonces: dict[str, float] = {}
        self.reports: dict[str, str] = {}
        self.lock = threading.Lock()

    def listed(self) -> list[dict[str, Any]]:
        with self.lock:
            return [dict(self.configured[c]) for c in sorted(self.configured)]

    def apply(self, key: str, body: bytes) -> tuple[int, dict[str, Any]]:
        """One batch (§13.2): the answer's status and body."""
        digest = hashlib.sha256(body).hexdigest()
        with self.lock:
            if self.idempotent and key in self.batches:
                known, answer = self.batches[key]
                if known != digest:
                    return 409, {"error": f"幂等键 {key} 已用于内容不同的批次"}
                return 200, {**answer, "replayed": True}
            try:
                operations = json.loads(body.decode("utf-8"))["items"]
            except (ValueError, KeyError, TypeError):
                return 400, {"error": '请求正文应为 UTF-8 JSON {"items": [...]}'}
            if not isinstance(operations, list) or not all(isinstance(o, dict) for o in operations):
                return 400, {"error": "items 应为对象列表"}
            results = []
            for line, operation in enumerate(operations, start=1):
                code, op = operation.get("task_code"), operation.get("operation")
                reason = None
                if not isinstance(code, str) or not code:
                    reason = "缺少 task_code"
                elif op == "upsert":
                    problems = problems_of(operation)
                    reason = "；".join(problems) or None
                    if reason is None:
                        self.configured[code] = {k: v for k, v in operation.items() if k != "operation"}
                elif op == "delete":
                    self.configured.pop(code, None)  # withdrawing what is not configured is fine
                else:
                    reason = f"未知的操作类型 {op!r}"
                known_op = op if op in ("upsert", "delete") else None
                results.append(
                    {
                        "task_code": code,
                        "op": known_op,
                        "line": line,
                        "status": "accepted" if reason is None else "rejected",
                        "reason": reason,
                    }
                )
            answer = {"batch_id": uuid.uuid4().hex, "idempotency_key": key, "replayed": False, "results": results}
            if self.idempotent:
                self.batches[key] = (digest, answer)
            return 200, answer

    # -- the signature, as the page's §1a says --

    def mac(self, message: bytes) -> str:
        key = self.secret.encode("utf-8")
        if self.algorithm == "HMAC-SM3":
            h = crypto_hmac.HMAC(key, hashes.SM3())
            h.update(message)
            return h.finalize().hex()
        return hmac.new(key, message, hashlib.sha256).hexdigest()

    def refused(self, method: str, path: str, query: str, body: bytes, headers: Any) -> str | None:
        if headers.get("X-Api-Key") != self.secret:
            return "API 密钥无效或缺失"
        stamp, nonce, sig = headers.get("X-Timestamp"), headers.get("X-Nonce"), headers.get("X-Signature")
        if not (stamp and nonce and sig):
            return "缺少签名请求头"
        if not stamp.isdigit() or abs(time.time() - int(stamp)) > SKEW:
            return "时间戳无效或超出允许偏差"
        if headers.get("X-Signature-Method") != self.algorithm:
            return f"签名算法应为 {self.algorithm}"
        pairs = sorted(parse_qsl(query, keep_blank_values=True))
        sorted_query = "&".join(quote(k, safe="-_.~") + "=" + quote(v, safe="-_.~") for k, v in pairs)
        lines = [method, path, sorted_query, hashlib.sha256(body).hexdigest(), stamp, nonce]
        if not hmac.compare_digest(self.mac("\n".join(lines).encode("utf-8")), sig.lower()):
            return "签名校验失败"
        with self.lock:
            now = time.time()
            self.nonces = {n: t for n, t in self.nonces.items() if now - t < 2 * SKEW}
            if nonce in self.nonces:
                return "nonce 已使用"
            self.nonces[nonce] = now
        return None


class Handler(BaseHTTPRequestHandler):
    partner: Partner

    def log_message(self, *args: Any) -> None:  # quiet
        pass

    def _send(self, status: int, payload: dict[str, Any]) -> None:
        body = json.dumps(payload, ensure_ascii=False).encode("utf-8")
        self.send_response(status)
        self.send_header("Content-Type", "application/json; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _common(self, method: str) -> tuple[str, str, bytes] | None:
        parts = urlsplit(self.path)
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        reason = self.partner.refused(method, parts.path, parts.query, body, self.headers)
        if reason:
            self._send(401, {"error": reason})
            return None
        return parts.path, parts.query, body

    def do_GET(self) -> None:
        got = self._common("GET")
        if got is None:
            return
        path, query, _ = got
        if path not in (BASE_PATH + ITEMS_PATH, BASE_PATH + OFFER_PATH):
            self._send(404, {"error": f"没有接口 {path}"})
            return
        params = dict(parse_qsl(query, keep_blank_values=True))
        try:
            page = int(params.get("page", "1"))
            size = int(params.get("pageSize", "100"))
        except ValueError:
            self._send(400, {"error": "page 和 pageSize 应为整数"})
            return
        if page < 1 or not 1 <= size <= 500:
            self._send(400, {"error": "page 应不小于 1，pageSize 应为 1–500"})
            return
        if path == BASE_PATH + OFFER_PATH:  # §13.1: like the catalogue, no incremental parameter
            rows = self.partner.listed()
            data = rows[(page - 1) * size : page * size]
            self._send(200, {"code": 200, "total": len(rows), "page": page, "pageSize": size, "data": data})
            return
        rows = self.partner.records
        if params.get("updated_since"):
            rows = [r for r in rows if r["update_time"] >= params["updated_since"]]
        data = rows[(page - 1) * size : page * size]
        self._send(200, {"code": 200, "total": len(rows), "page": page, "pageSize": size, "data": data})

    def do_POST(self) -> None:
        got = self._common("POST")
        if got is None:
            return
        path, _, body = got
        if path == BASE_PATH + OFFER_PATH:
            key = self.headers.get("Idempotency-Key", "")
            if not key or len(key) > 200:
                self._send(400, {"error": "缺少请求头 Idempotency-Key（最多 200 个字符）"})
                return
            self._send(*self.partner.apply(key, body))
            return
        if path != BASE_PATH + REPORTS_PATH:
            self._send(404, {"error": f"没有接口 {path}"})
            return
        run_id, given = self.headers.get("X-Tongban-Run-Id"), self.headers.get("X-Content-SHA256", "").lower()
        actual = hashlib.sha256(body).hexdigest()
        if not run_id or given != actual:
            self._send(400, {"error": "缺少运行编号，或校验和与正文不符"})
            return
        try:
            report = json.loads(body)
        except ValueError:
            self._send(400, {"error": "报告不是 JSON"})
            return
        if report.get("partner") != self.partner.division or report.get("run_id") != run_id:
            self._send(409, {"error": "报告不属于本地区或本次运行"})
            return
        with self.partner.lock:
            known = self.partner.reports.get(run_id)
            if known is None:
                self.partner.reports[run_id] = actual
                self._send(201, {"status": "received"})
            elif known == actual:
                self._send(200, {"status": "duplicate"})
            else:
                self._send(409, {"error": "该运行的报告已收到，内容不同"})


@contextmanager
def serving(partner: Partner) -> Iterator[str]:
    """Our server on a free loopback port; yields its base URL."""
    handler = type("Bound", (Handler,), {"partner": partner})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}{BASE_PATH}"
    finally:
        server.shutdown()
        server.server_close()
