"""HTTP behaviour of a pull: one retry policy, backoff with jitter, TLS, response cap, no secret on disk."""

from __future__ import annotations

import gzip
import hashlib
import hmac
from pathlib import Path

import pytest
import requests
from upath import UPath

from tongban import auth
from tongban.http import RETRY_STATUSES, Backoff, ResponseTooLarge, read_capped, retry_policy, session
from tongban.ingest import FetchSettings, fetch_catalogue
from tongban.registry import wire_formats

from .conftest import CSV, FAST, NATIONAL, PINYIN, Partners, pull


def test_backoff_is_exponential_with_jitter_and_capped() -> None:
    retry = retry_policy(5, backoff=1.0, backoff_max=6.0, jitter=0.5)
    waits = []
    for _ in range(4):
        retry = retry.increment("GET", "/x", error=ConnectionError("down"))
        waits.append(retry.get_backoff_time())
    assert 1.0 <= waits[0] <= 1.5 and 2.0 <= waits[1] <= 2.5 and 4.0 <= waits[2] <= 4.5  # 1, 2, 4 (+ jitter)
    assert waits[3] == 6.0  # 8 capped at backoff_max
    assert isinstance(retry, Backoff) and set(retry.status_forcelist) == set(RETRY_STATUSES) == {
        429,
        500,
        502,
        503,
        504,
    }
    assert retry.respect_retry_after_header


def test_the_session_keeps_tls_verification_and_never_retries_by_itself() -> None:
    assert session().verify is True
    assert session().get_adapter("https://x").max_retries.total == 0  # the client drives attempts (each signed anew)
    assert isinstance(FetchSettings().retry(), Backoff)  # … with the one policy


def test_a_session_without_tls_verification_is_refused(partners: Partners, store: UPath) -> None:
    session = requests.Session()
    session.verify = False
    partner = partners.registry.partner(NATIONAL)
    with pytest.raises(ValueError, match="TLS verification must stay on"):
        fetch_catalogue(partner, wire_formats()[partner.format], partners.base(NATIONAL), None, session=session)  # type: ignore[arg-type]


def test_declared_oversize_is_refused_before_reading() -> None:
    response = requests.Response()
    response.headers["Content-Length"] = str(10**9)
    with pytest.raises(ResponseTooLarge) as caught:
        read_capped(response, 1000)
    assert caught.value.declared == 10**9 and caught.value.read == b""


def test_hmac_signature_is_over_method_path_sorted_query_body_timestamp_and_nonce() -> None:
    fmt = wire_formats()["pinyin_json"]
    headers = auth.request_headers(
        fmt.auth,
        "k3y",
        "get",
        "/api/sx/list",
        query="limit=100&cursor=a%2Fb&GXSJQ=",
        clock=lambda: 1700000000.9,
        nonce=lambda: "n1",
    )
    assert headers["X-Sx-Timestamp"] == "1700000000" and headers["X-Sx-Nonce"] == "n1"
    assert headers["X-Sx-Signature-Method"] == "HMAC-SHA256"
    empty = hashlib.sha256(b"").hexdigest()
    signed = f"GET\n/api/sx/list\nGXSJQ=&cursor=a%2Fb&limit=100\n{empty}\n1700000000\nn1".encode()
    assert headers["X-Sx-Signature"] == hmac.new(b"k3y", signed, hashlib.sha256).hexdigest()
    assert auth.redact(fmt.auth, headers) == headers  # a signature does not reveal the key
    national = wire_formats()["national_json"].auth
    redacted = auth.redact(national, auth.request_headers(national, "k3y", "GET", "/p"))
    assert redacted["X-Api-Key"] == "***" and "k3y" not in redacted.values()
    bearer = wire_formats()["csv_gbk"].auth
    redacted = auth.redact(bearer, auth.request_headers(bearer, "k3y", "GET", "/p"))
    assert redacted["Authorization"] == "***" and "k3y" not in str(redacted)


@pytest.mark.parametrize("division", [NATIONAL, PINYIN, CSV])
def test_no_secret_is_written_anywhere(partners: Partners, store: UPath, division: str) -> None:
    partners.faults(division, {"kind": "server_error", "times": 1})
    pull(partners, store, division)
    secret = partners.secret(division).encode()
    files = [p for p in Path(str(store)).rglob("*") if p.is_file()]
    assert files
    for path in files:
        data = path.read_bytes()
        data = gzip.decompress(data) if path.suffix == ".gz" else data
        assert secret not in data, path


def test_default_settings_are_production_sized() -> None:
    settings = FetchSettings()
    assert settings.retries >= 3 and settings.backoff >= 1 and settings.read_timeout >= 30
    assert settings.max_retry_after >= 60 and settings.max_response_bytes >= 16 * 1024 * 1024
    assert FAST.backoff < 0.1  # tests only
