"""Signed requests: what is signed, how, and how a receiver checks it (docs/partner-formats.md).

Every request to a partner or to the platform is signed with the endpoint's secret (the ``password``
of its Airflow Connection): an HMAC over

    METHOD\\nPATH\\nSORTED_QUERY\\nBODY_SHA256\\nTIMESTAMP\\nNONCE[\\nname:value ...]

(upper-case method; the URL path as sent; the query parameters sorted by name then value, each
RFC 3986 percent-encoded, ``name=value`` joined by ``&``; the lower-case hex SHA-256 of the body,
of no bytes for a GET; Unix seconds; a fresh random nonce; then one line per header of
``Auth.signed_headers`` the request carries, its lower-case name and its value, sorted by name: the
platform's ``X-Publish-Sequence``), in lower-case hex. The algorithm is
chosen per endpoint: ``HMAC-SHA256`` or ``HMAC-SM3`` (GB/T 32905, the 国密 hash). Formats whose
systems also identify callers by an API key or a bearer token send that too (``Auth.scheme``).

``request_headers`` builds the headers of one attempt (a retried request is signed anew, see
:mod:`tongban.http`), ``url_headers`` the same for a whole URL; ``Verifier`` is the receiving side
every simulator uses: it refuses a missing or wrong credential, a timestamp outside the allowed
skew, another algorithm than the endpoint's, a signature that does not match (a tampered query,
body or signed header) and a nonce seen before.
``redact`` removes secrets from headers before they are written anywhere.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets as _secrets
import threading
import time
from collections.abc import Callable, Mapping
from typing import get_args
from urllib.parse import parse_qsl, quote, urlsplit

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives import hmac as crypto_hmac

from tongban.registry import Auth, SignatureAlgorithm

REDACTED = "***"
ALGORITHMS: tuple[str, ...] = get_args(SignatureAlgorithm)


class MissingSecret(ValueError):
    """The endpoint needs a secret and the Connection has none, or one its format cannot send."""


class Refused(Exception):
    """A request the receiver refuses (HTTP 401); ``message`` (Chinese) says why, for the caller."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


def hmac_hex(algorithm: str, key: bytes, message: bytes) -> str:
    """Lower-case hex HMAC of ``message`` with ``algorithm`` (one of :data:`ALGORITHMS`)."""
    if algorithm == "HMAC-SHA256":
        return hmac.new(key, message, hashlib.sha256).hexdigest()
    if algorithm == "HMAC-SM3":
        mac = crypto_hmac.HMAC(key, hashes.SM3())
        mac.update(message)
        return mac.finalize().hex()
    raise ValueError(f"unknown signature algorithm {algorithm!r}; expected one of {', '.join(ALGORITHMS)}")


def body_sha256(body: bytes | str | None) -> str:
    data = body.encode() if isinstance(body, str) else (body or b"")
    return hashlib.sha256(data).hexdigest()


def canonical_query(query: str) -> str:
    """The query string as signed: parameters sorted by name then value, RFC 3986 encoded."""
    pairs = sorted(parse_qsl(query, keep_blank_values=True))
    return "&".join(f"{quote(k, safe='-_.~')}={quote(v, safe='-_.~')}" for k, v in pairs)


def signed_header_values(auth: Auth, headers: Mapping[str, str] | None) -> dict[str, str]:
    """The headers of ``auth.signed_headers`` that ``headers`` carry (names in lower case, values stripped):
    what the signature covers besides the request line and body."""
    given = {name.lower(): value for name, value in (headers or {}).items()}
    wanted = (name.lower() for name in auth.signed_headers)
    return {name: str(given[name]).strip() for name in sorted(wanted) if name in given}


def string_to_sign(
    method: str,
    path: str,
    query: str,
    body_digest: str,
    timestamp: str,
    nonce: str,
    signed_headers: Mapping[str, str] | None = None,
) -> str:
    """The six lines of every request, then ``name:value`` per signed header (:func:`signed_header_values`)."""
    lines = [method.upper(), path, canonical_query(query), body_digest, timestamp, nonce]
    lines += (f"{name}:{value}" for name, value in sorted((signed_headers or {}).items()))
    return "\n".join(lines)


def signature(
    secret: str,
    method: str,
    path: str,
    timestamp: str,
    nonce: str,
    *,
    query: str = "",
    body: bytes | str | None = None,
    algorithm: str = "HMAC-SHA256",
    signed_headers: Mapping[str, str] | None = None,
) -> str:
    """The signature of one request: :func:`hmac_hex` of :func:`string_to_sign`, keyed with the UTF-8 secret."""
    message = string_to_sign(method, path, query, body_sha256(body), timestamp, nonce, signed_headers)
    return hmac_hex(algorithm, secret.encode(), message.encode())


def request_headers(
    auth: Auth,
    secret: str | None,
    method: str,
    path: str,
    *,
    query: str = "",
    body: bytes | str | None = None,
    algorithm: str = "HMAC-SHA256",
    headers: Mapping[str, str] | None = None,
    clock: Callable[[], float] = time.time,
    nonce: Callable[[], str] = lambda: _secrets.token_hex(16),
) -> dict[str, str]:
    """The authentication headers of one request attempt: the credential the format asks for, if any,
    and the signature with its timestamp, nonce and algorithm. ``headers``: the request's other headers,
    of which those in ``auth.signed_headers`` are signed too."""
    if not secret:
        raise MissingSecret("signed requests need a secret in the Connection's password")
    carried = {"api_key": auth.header, "bearer": "Authorization"}.get(auth.scheme)
    if carried and not (secret.isascii() and secret.isprintable()):  # HTTP headers carry nothing else
        raise MissingSecret(
            f"the secret travels in the {carried} header too, so it must be printable ASCII; the Connection's password"
            " has other characters"
        )
    timestamp, once = str(int(clock())), nonce()
    out: dict[str, str] = {}
    if auth.scheme == "api_key":
        assert auth.header
        out[auth.header] = secret
    elif auth.scheme == "bearer":
        out["Authorization"] = f"Bearer {secret}"
    signed = signed_header_values(auth, headers)
    sig = signature(
        secret, method, path, timestamp, once, query=query, body=body, algorithm=algorithm, signed_headers=signed
    )
    return out | {
        auth.timestamp_header: timestamp,
        auth.nonce_header: once,
        auth.algorithm_header: algorithm,
        auth.signature_header: sig,
    }


def url_headers(
    auth: Auth,
    secret: str | None,
    method: str,
    url: str,
    *,
    body: bytes | str | None = None,
    algorithm: str = "HMAC-SHA256",
    headers: Mapping[str, str] | None = None,
    clock: Callable[[], float] = time.time,
    nonce: Callable[[], str] = lambda: _secrets.token_hex(16),
) -> dict[str, str]:
    """:func:`request_headers` of a request to ``url``: its path and query signed as they are sent."""
    parts = urlsplit(url)
    return request_headers(
        auth,
        secret,
        method,
        parts.path,
        query=parts.query,
        body=body,
        algorithm=algorithm,
        headers=headers,
        clock=clock,
        nonce=nonce,
    )


def secret_headers(auth: Auth) -> set[str]:
    """Lower-case names of the headers that carry a secret (never written anywhere)."""
    names = {"authorization", "proxy-authorization", "cookie"}
    if auth.scheme == "api_key" and auth.header:
        names.add(auth.header.lower())
    return names


def redact(auth: Auth, headers: Mapping[str, str]) -> dict[str, str]:
    """Headers fit for the manifest: secret-bearing ones replaced by ``***``.

    A signature stays: it is a MAC over public values and does not reveal the key.
    """
    hidden = secret_headers(auth)
    return {k: (REDACTED if k.lower() in hidden else str(v)) for k, v in headers.items()}


class Verifier:
    """The receiving side: checks a request's credential and signature; thread-safe.

    A timestamp must be within ``auth.max_skew_seconds`` of the receiver's clock and a nonce must not
    have been seen (for the same ``scope``, e.g. one partner) within twice that window.
    """

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self.clock = clock
        self._nonces: dict[str, dict[str, float]] = {}
        self._lock = threading.Lock()

    def check(
        self,
        scope: str,
        auth: Auth,
        secret: str,
        algorithm: str,
        method: str,
        path: str,
        query: str,
        body: bytes,
        headers: Mapping[str, str],
    ) -> None:
        """Raises :class:`Refused` with the reason, in Chinese, unless the request is properly signed."""
        if auth.scheme == "api_key":
            assert auth.header
            given = headers.get(auth.header)
            if not given:
                raise Refused(f"缺少 API 密钥（请求头 {auth.header}）")
            if not hmac.compare_digest(given.encode(), secret.encode()):
                raise Refused("API 密钥无效")
        elif auth.scheme == "bearer":
            kind, _, token = headers.get("Authorization", "").partition(" ")
            if kind.lower() != "bearer" or not token.strip():
                raise Refused("缺少访问令牌（Authorization: Bearer <令牌>）")
            if not hmac.compare_digest(token.strip().encode(), secret.encode()):
                raise Refused("访问令牌无效")
        names = (auth.timestamp_header, auth.nonce_header, auth.signature_header)
        stamp, once, given = (headers.get(n) for n in names)
        if not (stamp and once and given):
            raise Refused(f"缺少签名请求头（{'、'.join(names)}）")
        try:
            moment = int(stamp)
        except ValueError:
            raise Refused(f"时间戳 {stamp!r} 不是整数秒") from None
        now = self.clock()
        if abs(now - moment) > auth.max_skew_seconds:
            raise Refused(f"时间戳超出允许偏差（±{auth.max_skew_seconds} 秒）：请求 {moment}，服务器 {int(now)}")
        named = (headers.get(auth.algorithm_header) or "").strip().upper()
        if named != algorithm:
            raise Refused(f"签名算法应为 {algorithm}（请求头 {auth.algorithm_header}），收到 {named or '（空）'}")
        signed = signed_header_values(auth, headers)
        expected = signature(
            secret, method, path, stamp, once, query=query, body=body, algorithm=algorithm, signed_headers=signed
        )
        if not hmac.compare_digest(expected, given.strip().lower()):
            raise Refused("签名校验失败")
        with self._lock:
            seen = self._nonces.setdefault(scope, {})
            for old in [n for n, expiry in seen.items() if expiry < now]:
                del seen[old]
            if once in seen:
                raise Refused(f"nonce {once} 已使用（重放请求被拒绝）")
            seen[once] = now + 2 * auth.max_skew_seconds
