"""Deliver a partner's run report to the partner: ``POST <partner base URL>/api/reports``.

The body is ``report.json`` exactly as written for the run (the bytes are read once; the SHA-256 sent
in ``X-Content-SHA256``, the one recorded and the archived copy are all of those same bytes), with the
run id in ``X-Tongban-Run-Id``; the receiver checks both against the body and its own record, so a
report never counts for another run. Requests are authenticated as the partner's catalogue API is
(:func:`tongban.auth.request_headers`, signed anew for every attempt) and retried by the one retry
policy of :mod:`tongban.ingest` (connection errors, timeouts, 429 and 5xx, with backoff and jitter).
The receiver is idempotent per (run, checksum): delivering the same report again is acknowledged as
already received, other content for a run already delivered is refused (409).
"""

from __future__ import annotations

import hashlib
import logging
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

import requests
from urllib3.exceptions import MaxRetryError

from tongban.auth import MissingSecret, request_headers
from tongban.ingest import RETRY_STATUSES, TRANSIENT, PartnerRetry, fetch_session, retry_policy
from tongban.registry import Partner, wire_formats

log = logging.getLogger(__name__)

REPORT_PATH = "api/reports"  # under the partner's base URL (its Connection's host)
RUN_HEADER = "X-Tongban-Run-Id"
CHECKSUM_HEADER = "X-Content-SHA256"


class DeliveryError(RuntimeError):
    """The report was not accepted; ``retryable`` if trying later may help (partner down)."""

    def __init__(self, message: str, *, retryable: bool, attempts: list[dict[str, Any]] | None = None) -> None:
        super().__init__(message)
        self.retryable = retryable
        self.attempts = attempts or []


@dataclass(frozen=True)
class DeliverySettings:
    connect_timeout: float = 10.0
    read_timeout: float = 60.0
    retries: int = 5
    backoff: float = 1.0
    backoff_max: float = 60.0
    jitter: float = 1.0

    def retry(self) -> PartnerRetry:
        return retry_policy(self.retries, self.backoff, self.backoff_max, self.jitter)


@dataclass
class Delivery:
    """What the partner answered: ``received`` (first time) or ``duplicate`` (already had it)."""

    status: str
    http_status: int
    answer: dict[str, Any]
    attempts: list[dict[str, Any]] = field(default_factory=list)


def checksum(body: bytes) -> str:
    return hashlib.sha256(body).hexdigest()


def report_url(base_url: str) -> str:
    return f"{base_url.rstrip('/')}/{REPORT_PATH}"


def send_report(
    partner: Partner,
    base_url: str,
    body: bytes,
    run_id: str,
    *,
    secret: str | None = None,
    sha256: str | None = None,
    settings: DeliverySettings | None = None,
    session: requests.Session | None = None,
) -> Delivery:
    """POST ``body`` (the report JSON) for ``run_id``; raises DeliveryError unless the partner holds it.

    ``sha256`` defaults to the checksum of ``body``; a different one is what a tampered body looks like.
    """
    settings = settings or DeliverySettings()
    session = session or fetch_session()
    url = report_url(base_url)
    path = urlsplit(url).path
    auth = wire_formats()[partner.format].auth
    digest = sha256 or checksum(body)
    who = f"partner {partner.division} ({partner.name})"
    retry = settings.retry()
    attempts: list[dict[str, Any]] = []
    while True:
        entry: dict[str, Any] = {"attempt": len(attempts) + 1, "at": datetime.now(UTC).isoformat()}
        attempts.append(entry)
        try:
            headers = request_headers(auth, secret, "POST", path)
        except MissingSecret as exc:
            raise DeliveryError(f"{who}: no credentials: {exc}", retryable=False, attempts=attempts) from exc
        headers |= {"Content-Type": "application/json; charset=utf-8", RUN_HEADER: run_id, CHECKSUM_HEADER: digest}
        started = time.monotonic()
        response = None
        error: Exception | None = None
        try:
            response = session.post(
                url,
                data=body,
                headers=headers,
                timeout=(settings.connect_timeout, settings.read_timeout),
                allow_redirects=False,
            )
        except TRANSIENT as exc:
            error = exc
        except requests.RequestException as exc:
            entry["error"] = f"{type(exc).__name__}: {exc}"
            raise DeliveryError(f"{who}: POST {url}: {exc}", retryable=False, attempts=attempts) from None
        entry["elapsed_ms"] = int((time.monotonic() - started) * 1000)
        if response is not None:
            entry["status"] = response.status_code
            if response.status_code in (200, 201):
                answer = response.json()
                return Delivery(answer.get("status", "received"), response.status_code, answer, attempts)
            reason = _reason(response)
            entry["error"] = f"HTTP {response.status_code}: {reason}"
            if response.status_code not in RETRY_STATUSES:
                message = f"{who}: POST {url} for run {run_id} answered HTTP {response.status_code}: {reason}"
                raise DeliveryError(message, retryable=False, attempts=attempts)
        else:
            entry["error"] = f"{type(error).__name__}: {error}"
        raw = response.raw if response is not None else None
        try:
            retry = retry.increment("POST", url, response=raw, error=error)
        except MaxRetryError:
            message = f"{who}: POST {url} still failing after {len(attempts)} attempts; last: {entry['error']}"
            raise DeliveryError(message, retryable=True, attempts=attempts) from None
        log.warning("%s: report delivery attempt %s failed (%s); retrying", who, entry["attempt"], entry["error"])
        retry.sleep(raw)


def _reason(response: requests.Response) -> str:
    try:
        return str(response.json().get("error", response.text[:300]))
    except ValueError:
        return response.text[:300]
