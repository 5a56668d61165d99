"""A partner's own implementation of the national_json catalogue API and the report receiver, written from
docs/partner-formats.md alone — as a partner's engineers would, with the standard library (and the
``cryptography`` package for SM3). It shares no code with tongban or its simulator; the conformance kit is
proved against it (tests/test_conformance.py).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, quote, urlsplit

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives import hmac as crypto_hmac

BASE_PATH = "/gov/tongban"  # our base URL's path; the format's path comes after it
SKEW = 300


def _record(n: int, updated: str) -> dict[str, Any]:
    uscc = "11440100MB2C90387X"
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


class Partner:
    """Our catalogue, our secret and what we received."""

    def __init__(self, division: str, secret: str, algorithm: str) -> None:
        self.division, self.secret, self.algorithm = division, secret, algorithm
        stamps = ["2026-10-01 08:00:00", "2026-10-02 09:30:00", "2026-11-03 10:00:00", "2026-11-03 10:00:00"]
        self.records = sorted((_record(n, stamps[n % len(stamps)]) for n in range(1, 24)), key=lambda r: r["task_code"])
        self.nonces: dict[str, float] = {}
        self.reports: dict[str, str] = {}
        self.lock = threading.Lock()

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
        if path != BASE_PATH + "/api/v1/items":
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
        if path != BASE_PATH + "/api/reports":
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
def serving(division: str, secret: str, algorithm: str) -> Iterator[str]:
    """Our server on a free loopback port; yields its base URL."""
    handler = type("Bound", (Handler,), {"partner": Partner(division, secret, algorithm)})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}{BASE_PATH}"
    finally:
        server.shutdown()
        server.server_close()
