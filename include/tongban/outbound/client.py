"""HTTP clients of the outbound direction: the platform's library API and a partner's offer endpoint.

The partner's configured list is read with the catalogue pull itself (:func:`tongban.ingest.fetch_catalogue`
on the format's read-back variant: same paging, auth, retries, raw answers archived). Writes are
authenticated like every partner request (:func:`tongban.auth.request_headers`, signed anew for each
attempt) and retried with the one retry policy (connection errors, timeouts, 429, 5xx); the batch's
idempotency key makes a retried write safe.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

import requests
from urllib3.exceptions import MaxRetryError

from tongban.archive import Archive
from tongban.auth import MissingSecret, request_headers
from tongban.delivery import DeliverySettings
from tongban.ingest import (
    RETRY_STATUSES,
    TRANSIENT,
    FetchError,
    FetchSettings,
    archived_pages,
    fetch_catalogue,
    fetch_session,
    http_session,
)
from tongban.outbound.wire import MODES, Operation, decode_rows, encode_batch, endpoint, readback_format
from tongban.registry import Partner, wire_formats

log = logging.getLogger(__name__)
LIBRARY_PATH = "/api/v1/library/items"
WriteSettings = DeliverySettings  # the same knobs: timeouts, retries, backoff


class OfferError(RuntimeError):
    """The partner's offer endpoint could not be read or written; ``retryable`` if later may help."""

    def __init__(self, message: str, *, retryable: bool, attempts: list[dict[str, Any]] | None = None) -> None:
        super().__init__(message)
        self.retryable = retryable
        self.attempts = attempts or []


class LibraryError(RuntimeError):
    """The platform's library could not be read whole."""


class LibraryClient:
    """沅江's item library on the provincial platform (``GET /api/v1/library/items``, paged)."""

    def __init__(self, base_url: str, session: requests.Session | None = None, page_size: int = 200) -> None:
        self.base_url = base_url.rstrip("/")
        self.session = session or http_session()
        self.page_size = page_size

    def entries(self, since: datetime | None = None, timeout: float = 60.0) -> list[dict[str, Any]]:
        """Every entry (record + ``offer``), or those updated at or after ``since``; checked against the total."""
        params: dict[str, Any] = {"page_size": self.page_size, "page": 1}
        if since is not None:
            params["updated_since"] = since.isoformat()
        entries: list[dict[str, Any]] = []
        while True:
            response = self.session.get(self.base_url + LIBRARY_PATH, params=params, timeout=timeout)
            if response.status_code != 200:
                raise LibraryError(
                    f"platform library page {params['page']}: HTTP {response.status_code} {response.text[:200]}"
                )
            body = response.json()
            entries.extend(body["items"])
            if len(body["items"]) < self.page_size or len(entries) >= body["total"]:
                break
            params["page"] += 1
        codes = {e["task_code"] for e in entries}
        if len(codes) != len(entries) or len(entries) != body["total"]:
            raise LibraryError(f"platform library: read {len(codes)} distinct items of {body['total']} declared")
        return entries


class OfferClient:
    """One partner's offer endpoint (its wire format's ``offer`` block)."""

    def __init__(
        self,
        partner: Partner,
        base_url: str,
        archive: Archive,
        home: Partner,
        *,
        secret: str | None = None,
        fetch_settings: FetchSettings | None = None,
        write_settings: WriteSettings | None = None,
        session: requests.Session | None = None,
    ) -> None:
        self.partner, self.base_url, self.archive, self.home, self.secret = partner, base_url, archive, home, secret
        self.fmt = wire_formats()[partner.format]
        self.offer = endpoint(self.fmt)
        self.fetch_settings = fetch_settings or FetchSettings()
        self.write_settings = write_settings or WriteSettings()
        self.session = session or fetch_session()
        self.who = f"partner {partner.division} ({partner.name})"

    def configured(self) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        """What the partner has configured of our items (records with ``offer_modes``), and the manifest of
        the read (every request, its answer archived)."""
        fmt = readback_format(self.fmt)
        try:
            result = fetch_catalogue(
                self.partner, fmt, self.base_url, self.archive, secret=self.secret, settings=self.fetch_settings
            )
        except FetchError as exc:
            raise OfferError(f"reading what it configured: {exc}", retryable=exc.retryable) from exc
        rows = [row for _, page in archived_pages(result.exchanges, self.archive, fmt) for row in page]
        configured, problems = [], []
        for decoded in decode_rows(self.fmt, rows, self.home, "回读"):
            if decoded.record is None:
                problems.append(f"{decoded.task_code or '?'}: {'；'.join(decoded.problems)}")
            else:
                configured.append({**decoded.record, MODES: decoded.modes})
        if problems:
            raise OfferError(f"{self.who}: configured items not readable: {'; '.join(problems[:5])}", retryable=False)
        return configured, result.exchanges

    def push(self, key: str, upserts: Sequence[Mapping[str, Any]], deletes: Sequence[str]) -> dict[str, Any]:
        """One batch (upserts: records with ``offer_modes``); the partner's answer, results keyed canonically."""
        operations = [
            Operation("upsert", r["task_code"], {k: v for k, v in r.items() if k != MODES}, tuple(r[MODES]))
            for r in upserts
        ] + [Operation("delete", code) for code in deletes]
        body, content_type = encode_batch(self.fmt, operations)
        url = self.base_url.rstrip("/") + self.offer.path
        settings, retry = self.write_settings, self.write_settings.retry()
        attempts: list[dict[str, Any]] = []
        while True:
            entry: dict[str, Any] = {"attempt": len(attempts) + 1, "at": datetime.now(UTC).isoformat()}
            attempts.append(entry)
            try:
                headers = request_headers(self.fmt.auth, self.secret, "POST", urlsplit(url).path)
            except MissingSecret as exc:
                raise OfferError(f"{self.who}: no credentials: {exc}", retryable=False, attempts=attempts) from exc
            headers |= {"Content-Type": content_type, self.offer.key_header: key}
            response, error = None, None
            try:
                response = self.session.post(
                    url, data=body, headers=headers, timeout=(settings.connect_timeout, settings.read_timeout)
                )
            except TRANSIENT as exc:
                error = exc
            except requests.RequestException as exc:
                raise OfferError(f"{self.who}: POST {url}: {exc}", retryable=False, attempts=attempts) from None
            if response is not None:
                entry["status"] = response.status_code
                if response.status_code == 200:
                    return self._canonical(response.json())
                entry["error"] = f"HTTP {response.status_code}: {_reason(response)}"
                if response.status_code not in RETRY_STATUSES:
                    raise OfferError(
                        f"{self.who}: POST {url} batch {key}: {entry['error']}", retryable=False, attempts=attempts
                    )
            else:
                entry["error"] = f"{type(error).__name__}: {error}"
            raw = response.raw if response is not None else None
            try:
                retry = retry.increment("POST", url, response=raw, error=error)
            except MaxRetryError:
                message = f"{self.who}: POST {url} still failing after {len(attempts)} attempts; last: {entry['error']}"
                raise OfferError(message, retryable=True, attempts=attempts) from None
            log.warning(
                "%s: offer batch %s attempt %s failed (%s); retrying", self.who, key, entry["attempt"], entry["error"]
            )
            retry.sleep(raw)

    def _canonical(self, answer: dict[str, Any]) -> dict[str, Any]:
        for result in answer.get("results", []):
            if result.get("op") not in ("upsert", "delete"):
                raise OfferError(f"{self.who}: answer names an unknown operation: {result}", retryable=False)
        return answer


def _reason(response: requests.Response) -> str:
    try:
        return str(response.json().get("error", response.text[:300]))
    except ValueError:
        return response.text[:300]
