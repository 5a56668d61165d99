"""Signed exchanges: SM3 against its published vectors, HMAC-SM3 against RFC 2104 built by hand, and every
simulator refusing unsigned, tampered (query or body), replayed and stale requests."""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import requests
from cryptography.hazmat.primitives import hashes

from tongban import auth
from tongban.connections import PLATFORM_AUTH
from tongban.registry import Auth, load_registry, wire_formats
from tongban.simulators.credentials import partner_secrets, platform_credentials
from tongban.simulators.partners import create_partner_app
from tongban.simulators.platform import create_platform_app

from .simulators.conftest import serving

# GB/T 32905-2016, appendix A (also ISO/IEC 10118-3:2018): "abc" and "abcd" x 16
SM3_VECTORS = [
    (b"abc", "66c7f0f462eeedd9d1f2d46bdc10e4e24167c4875cf2f7a2297da02b8f4ba8e0"),
    (b"abcd" * 16, "debe9ff92275b8a138604889c18e5a4d6fdb70e5387e5765293dcba39c0c5732"),
]


def sm3(data: bytes) -> str:
    """Lower-case hex SM3 digest (GB/T 32905-2016): the hash HMAC-SM3 (``auth.hmac_hex``) is built on."""
    digest = hashes.Hash(hashes.SM3())
    digest.update(data)
    return digest.finalize().hex()


@pytest.mark.parametrize(("message", "digest"), SM3_VECTORS)
def test_sm3_matches_the_published_test_vectors(message: bytes, digest: str) -> None:
    assert sm3(message) == digest


def _rfc2104(key: bytes, message: bytes) -> str:
    """HMAC (RFC 2104) over SM3 (64-byte blocks), written out by hand."""
    block = 64
    key = bytes.fromhex(sm3(key)) if len(key) > block else key
    key = key.ljust(block, b"\0")
    inner = bytes.fromhex(sm3(bytes(b ^ 0x36 for b in key) + message))
    return sm3(bytes(b ^ 0x5C for b in key) + inner)


@pytest.mark.parametrize("key", [b"k3y", b"\x0b" * 20, b"x" * 100])  # short, RFC 4231's, longer than a block
def test_hmac_sm3_is_rfc2104_over_sm3_and_hmac_sha256_is_the_stdlib_one(key: bytes) -> None:
    message = b"GET\n/api/sx/list\nlimit=100\n" + hashlib.sha256(b"").hexdigest().encode()
    assert auth.hmac_hex("HMAC-SM3", key, message) == _rfc2104(key, message)
    assert auth.hmac_hex("HMAC-SHA256", key, message) == hmac.new(key, message, hashlib.sha256).hexdigest()
    assert auth.hmac_hex("HMAC-SM3", key, message) != auth.hmac_hex("HMAC-SHA256", key, message)
    with pytest.raises(ValueError, match="unknown signature algorithm"):
        auth.hmac_hex("HMAC-MD5", key, message)


def test_the_query_is_signed_sorted_and_percent_encoded() -> None:
    assert auth.canonical_query("b=2&a=1&a=0&c=&d=%E6%B7%B1+x") == "a=0&a=1&b=2&c=&d=%E6%B7%B1%20x"
    assert auth.canonical_query("") == ""


# --- every simulator refuses what is not properly signed ----------------------------------------


REGISTRY = load_registry()
# one partner of each format and each algorithm
PARTNERS = ["440100", "440600", "441900", "440300", "440800", "441300"]


@pytest.fixture(scope="module")
def sims(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    state = tmp_path_factory.mktemp("signing")
    with serving(create_partner_app(REGISTRY, state)) as partners, serving(create_platform_app(state)) as platform:
        yield {"partners": partners, "platform": platform, "state": state}


def test_the_registry_uses_both_algorithms_for_every_format() -> None:
    used = {(wire_formats()[p.format].name, p.signature) for p in REGISTRY.partners}
    assert used == {(f, a) for f in wire_formats() for a in auth.ALGORITHMS}
    assert {REGISTRY.partner(d).signature for d in PARTNERS} == set(auth.ALGORITHMS)


class Endpoint:
    """One signed endpoint of a simulator: how to sign, and a request with a query or a body."""

    def __init__(self, spec: Auth, secret: str, algorithm: str, method: str, url: str, body: bytes = b"") -> None:
        self.spec, self.secret, self.algorithm = spec, secret, algorithm
        self.method, self.url, self.body = method, url, body

    def headers(self, *, query: str = "", body: bytes | None = None, clock: Callable[[], float] = time.time) -> Any:
        path = urlsplit(self.url).path
        extra = {"Content-Type": "application/json"} if self.method == "POST" else {}
        return extra | auth.request_headers(
            self.spec,
            self.secret,
            self.method,
            path,
            query=query,
            body=self.body if body is None else body,
            algorithm=self.algorithm,
            clock=clock,
        )

    def send(self, headers: dict[str, str], *, query: str = "", body: bytes | None = None) -> requests.Response:
        url = f"{self.url}?{query}" if query else self.url
        data = self.body if body is None else body
        return requests.request(self.method, url, data=data or None, headers=headers, timeout=10)


def _endpoints(sims: dict[str, Any]) -> dict[str, Endpoint]:
    secrets = partner_secrets(sims["state"], REGISTRY)
    out = {}
    for division in PARTNERS:
        partner = REGISTRY.partner(division)
        fmt = wire_formats()[partner.format]
        base = f"{sims['partners']}/partners/{division}"
        out[f"read {division}"] = Endpoint(fmt.auth, secrets[division], partner.signature, "GET", base + fmt.path)
        report = json.dumps({"partner": division, "run_id": f"sig-{division}", "counts": {}}).encode()
        out[f"report {division}"] = Endpoint(
            fmt.auth, secrets[division], partner.signature, "POST", base + "/api/reports", report
        )
    platform = platform_credentials(sims["state"])
    region = f"{sims['platform']}/api/v1/regions/440100"
    batch = json.dumps({"upserts": [], "deletes": []}).encode()
    out["platform read"] = Endpoint(PLATFORM_AUTH, platform["secret"], platform["algorithm"], "GET", region + "/items")
    out["platform push"] = Endpoint(
        PLATFORM_AUTH, platform["secret"], platform["algorithm"], "POST", region + "/batches", batch
    )
    return out


ENDPOINTS = [f"{kind} {d}" for d in PARTNERS for kind in ("read", "report")] + ["platform read", "platform push"]


def _extra(endpoint: Endpoint) -> dict[str, str]:
    if endpoint.url.endswith("/api/reports"):
        run = json.loads(endpoint.body)["run_id"]
        return {"X-Tongban-Run-Id": run, "X-Content-SHA256": hashlib.sha256(endpoint.body).hexdigest()}
    return {"Idempotency-Key": f"sig-{time.time_ns()}"} if endpoint.method == "POST" else {}


@pytest.mark.parametrize("name", ENDPOINTS)
def test_every_simulator_refuses_unsigned_tampered_replayed_and_stale_requests(sims: dict[str, Any], name: str) -> None:
    endpoint = _endpoints(sims)[name]
    query = ("page_size=5" if name == "platform read" else "pageSize=5&page=1") if endpoint.method == "GET" else ""

    def refused(answer: requests.Response, why: str) -> None:
        assert answer.status_code == 401, (why, answer.status_code, answer.text)
        assert answer.json()["error"], why

    refused(endpoint.send(_extra(endpoint), query=query), "unsigned")
    if endpoint.method == "GET":
        signed = endpoint.headers(query=query) | _extra(endpoint)
        refused(endpoint.send(signed, query="pageSize=5&page=2"), "query changed after signing")
        signed = endpoint.headers(query=query) | _extra(endpoint)
        refused(endpoint.send(signed, query=query + "&extra=1"), "parameter added after signing")
    else:
        tampered = endpoint.body.replace(b"[]", b'["x"]', 1) if b"[]" in endpoint.body else endpoint.body + b" "
        signed = endpoint.headers() | _extra(endpoint)
        refused(endpoint.send(signed, body=tampered), "body changed after signing")
    stale = endpoint.headers(query=query, clock=lambda: time.time() - 3600) | _extra(endpoint)
    answer = endpoint.send(stale, query=query)
    refused(answer, "stale")
    assert "时间戳超出允许偏差" in answer.json()["error"]
    other = "HMAC-SM3" if endpoint.algorithm == "HMAC-SHA256" else "HMAC-SHA256"
    wrong = Endpoint(endpoint.spec, endpoint.secret, other, endpoint.method, endpoint.url, endpoint.body)
    answer = wrong.send(wrong.headers(query=query) | _extra(endpoint), query=query)
    refused(answer, "another algorithm than the endpoint's")
    assert f"签名算法应为 {endpoint.algorithm}" in answer.json()["error"]

    good = endpoint.headers(query=query) | _extra(endpoint)
    first = endpoint.send(good, query=query)
    assert first.status_code in (200, 201), first.text  # the very same request, properly signed, is taken
    replayed = endpoint.send(good, query=query)
    refused(replayed, "replayed")
    assert "已使用" in replayed.json()["error"]


def test_the_signature_covers_the_path(sims: dict[str, Any]) -> None:
    endpoints = _endpoints(sims)
    endpoint = endpoints["read 440100"]
    headers = endpoint.headers()
    other = Endpoint(
        endpoint.spec, endpoint.secret, endpoint.algorithm, "GET", endpoint.url.replace("440100", "440700")
    )
    answer = other.send(headers)
    assert answer.status_code == 401 and answer.json()["error"] in ("签名校验失败", "API 密钥无效")


def test_the_worked_example_of_the_partner_page_is_what_we_compute() -> None:
    page = (Path(__file__).parents[1] / "docs" / "partner-formats.md").read_text(encoding="utf-8")
    query, nonce = "limit=100&GXSJQ=20261101000000", "3f9a1c2e7b4d4e0f8a6b5c4d3e2f1a0b"
    signed = auth.string_to_sign("GET", "/api/sx/list", query, auth.body_sha256(b""), "1700000000", nonce)
    assert "\n".join("    " + line for line in signed.split("\n")) in page
    for algorithm in auth.ALGORITHMS:
        value = auth.signature(
            "example-secret", "GET", "/api/sx/list", "1700000000", nonce, query=query, algorithm=algorithm
        )
        assert f"`{algorithm}` `{value}`" in page


def test_a_url_is_signed_over_its_path_and_query_as_sent() -> None:
    spec = wire_formats()["national_json"].auth
    fixed = {"clock": lambda: 1700000000.0, "nonce": lambda: "n0"}
    whole = auth.url_headers(spec, "k3y", "GET", "https://p.example/api/sx?b=2&a=1", **fixed)  # type: ignore[arg-type]
    parts = auth.request_headers(spec, "k3y", "GET", "/api/sx", query="a=1&b=2", **fixed)  # type: ignore[arg-type]
    assert whole == parts
    other = auth.url_headers(spec, "k3y", "GET", "https://p.example/api/sy?b=2&a=1", **fixed)  # type: ignore[arg-type]
    assert other[spec.signature_header] != whole[spec.signature_header]


def test_the_publish_sequence_is_signed_and_a_tampered_one_refused(sims: dict[str, Any]) -> None:
    """The platform's fencing token (X-Publish-Sequence) is covered by the signature: a batch whose sequence
    was changed, added or dropped after signing is refused before the fence is looked at."""
    assert auth.string_to_sign("POST", "/p", "", "d", "1", "n", {"x-publish-sequence": "5"}).endswith(
        "\nn\nx-publish-sequence:5"
    )
    platform = platform_credentials(sims["state"])
    url = f"{sims['platform']}/api/v1/regions/440199/batches"
    body = json.dumps({"upserts": [], "deletes": []}).encode()

    def signed(sequence: str | None) -> dict[str, str]:
        headers = {"Content-Type": "application/json", "Idempotency-Key": f"seq-{time.time_ns()}"}
        headers |= {"X-Publish-Sequence": sequence} if sequence is not None else {}
        return headers | auth.url_headers(
            PLATFORM_AUTH, platform["secret"], "POST", url, body=body, algorithm=platform["algorithm"], headers=headers
        )

    def send(headers: dict[str, str]) -> requests.Response:
        return requests.post(url, data=body, headers=headers, timeout=10)

    for tampered in ({"X-Publish-Sequence": "9"}, {"X-Publish-Sequence": "4"}):
        answer = send(signed("5") | tampered)
        assert (answer.status_code, answer.json()["error"]) == (401, "签名校验失败"), tampered
    dropped = {k: v for k, v in signed("5").items() if k != "X-Publish-Sequence"}
    assert send(dropped).status_code == 401
    assert send(signed(None) | {"X-Publish-Sequence": "5"}).status_code == 401  # added after signing
    assert send(signed("5")).status_code == 200
    answer = send(signed(None))  # the region has taken a sequence: a batch without one is refused by the fence
    assert answer.status_code == 428, answer.text
