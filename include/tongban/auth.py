"""Request authentication of the partner APIs, as declared by each wire format's ``auth`` block.

The secret (API key, bearer token or HMAC key) is the ``password`` of the partner's Airflow
Connection; nothing here stores or logs it. ``request_headers`` builds the headers of one request
attempt (a fresh timestamp and nonce each time, so a retried request is signed anew);
``redact`` removes secrets from headers before they are written to the fetch manifest. The partner
simulator verifies with ``signature`` and ``SIGNED_FIELDS`` from here, so both sides agree on the
string to sign (docs/partner-formats.md).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets as _secrets
import time
from collections.abc import Callable, Mapping

from tongban.registry import Auth

REDACTED = "***"
SIGNED_FIELDS = ("method", "path", "timestamp", "nonce")


class MissingSecret(ValueError):
    """The format needs a secret and the Connection has none."""


def string_to_sign(method: str, path: str, timestamp: str, nonce: str) -> str:
    """``METHOD\\nPATH\\nTIMESTAMP\\nNONCE``: upper-case method, the URL path as sent (no query string)."""
    return f"{method.upper()}\n{path}\n{timestamp}\n{nonce}"


def signature(secret: str, method: str, path: str, timestamp: str, nonce: str) -> str:
    """Lower-case hex HMAC-SHA256 of :func:`string_to_sign` keyed with the UTF-8 secret."""
    message = string_to_sign(method, path, timestamp, nonce).encode()
    return hmac.new(secret.encode(), message, hashlib.sha256).hexdigest()


def request_headers(
    auth: Auth,
    secret: str | None,
    method: str,
    path: str,
    *,
    clock: Callable[[], float] = time.time,
    nonce: Callable[[], str] = lambda: _secrets.token_hex(16),
) -> dict[str, str]:
    """The authentication headers of one request attempt."""
    if auth.scheme == "none":
        return {}
    if not secret:
        raise MissingSecret(f"the {auth.scheme} scheme needs a secret in the Connection's password")
    if auth.scheme == "api_key":
        assert auth.header
        return {auth.header: secret}
    if auth.scheme == "bearer":
        return {"Authorization": f"Bearer {secret}"}
    timestamp, once = str(int(clock())), nonce()
    return {
        auth.timestamp_header: timestamp,
        auth.nonce_header: once,
        auth.signature_header: signature(secret, method, path, timestamp, once),
    }


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


def verify_signature(secret: str, method: str, path: str, timestamp: str, nonce: str, given: str) -> bool:
    return hmac.compare_digest(signature(secret, method, path, timestamp, nonce), given.strip().lower())
