"""Deliver a partner's run report to the partner: ``POST <partner base URL>/api/reports``.

The body is ``report.json`` exactly as written for the run (the bytes are read once; the SHA-256 sent
in ``X-Content-SHA256``, the one recorded and the archived copy are all of those same bytes), with the
run id in ``X-Tongban-Run-Id``; the receiver checks both against the body and its own record, so a
report never counts for another run. Requests are signed as the partner's catalogue API requests are
(over the body too, signed anew for every attempt) and retried by the one client of :mod:`tongban.http`
(connection errors, timeouts, 429 and 5xx, with backoff and jitter).
The receiver is idempotent per (run, checksum): delivering the same report again is acknowledged as
already received, other content for a run already delivered is refused (409).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any

import requests

from tongban.http import HttpClient, HttpFailure, HttpSettings, Signer
from tongban.registry import Partner, wire_formats

REPORT_PATH = "api/reports"  # under the partner's base URL (its Connection's host)
RUN_HEADER = "X-Tongban-Run-Id"
CHECKSUM_HEADER = "X-Content-SHA256"


class DeliveryError(RuntimeError):
    """The report was not accepted; ``retryable`` if trying later may help (partner down)."""

    def __init__(self, message: str, *, retryable: bool, attempts: list[dict[str, Any]] | None = None) -> None:
        super().__init__(message)
        self.retryable = retryable
        self.attempts = attempts or []


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
    settings: HttpSettings | None = None,
    session: requests.Session | None = None,
) -> Delivery:
    """POST ``body`` (the report JSON) for ``run_id``; raises DeliveryError unless the partner holds it.

    ``sha256`` defaults to the checksum of ``body``; a different one is what a tampered body looks like.
    """
    url = report_url(base_url)
    signer = Signer(wire_formats()[partner.format].auth, secret, partner.signature)
    client = HttpClient(f"partner {partner.division} ({partner.name})", signer, settings, session)
    headers = {
        "Content-Type": "application/json; charset=utf-8",
        RUN_HEADER: run_id,
        CHECKSUM_HEADER: sha256 or checksum(body),
    }
    attempts: list[dict[str, Any]] = []
    try:
        answer = client.request(
            "POST", url, data=body, headers=headers, what=f"POST {url} for run {run_id}", log_to=attempts
        )
    except HttpFailure as exc:
        raise DeliveryError(str(exc), retryable=exc.retryable, attempts=attempts) from None
    try:
        payload = answer.json()
    except ValueError:  # an HTML page (a proxy's, a login page): whether the partner holds the report is unknown
        kind = answer.headers.get("Content-Type", "no Content-Type")
        attempts[-1]["error"] = f"HTTP {answer.status} but not JSON ({kind})"
        message = (
            f"{client.who}: POST {url} for run {run_id} answered HTTP {answer.status} with {kind} instead of a JSON "
            f"receipt: {answer.body[:200]!r}; not sent again (the next delivered report tells of this run's changes)"
        )
        raise DeliveryError(message, retryable=False, attempts=attempts) from None
    return Delivery(payload.get("status", "received"), answer.status, payload, attempts)
