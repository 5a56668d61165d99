"""HTTP clients of the outbound direction: the platform's library API and a partner's offer endpoint.

Both go through the one HTTP client (:mod:`tongban.http`: every attempt signed anew, timeouts, retries with
backoff). The partner's configured list is read with the catalogue pull itself
(:func:`tongban.ingest.fetch_catalogue` on the format's read-back variant: same paging, auth, retries, raw
answers archived); the batch's idempotency key makes a retried write safe.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

import requests

from tongban.archive import Archive
from tongban.http import HttpClient, HttpFailure, HttpSettings, Signer
from tongban.ingest import FetchError, FetchSettings, archived_pages, fetch_catalogue
from tongban.outbound.wire import MODES, Operation, decode_rows, encode_batch, endpoint, readback_format
from tongban.publish import PlatformClient
from tongban.registry import Partner, wire_formats

LIBRARY_PATH = "/api/v1/library/items"


class OfferError(RuntimeError):
    """The partner's offer endpoint could not be read or written; ``retryable`` if later may help."""

    def __init__(self, message: str, *, retryable: bool) -> None:
        super().__init__(message)
        self.retryable = retryable


class LibraryError(RuntimeError):
    """The platform's library could not be read whole."""


class LibraryClient:
    """沅江's item library on the provincial platform (``GET /api/v1/library/items``, paged), signed like every
    platform request (the platform client's HTTP client)."""

    def __init__(self, platform: PlatformClient, page_size: int = 200) -> None:
        self.platform, self.page_size = platform, page_size

    def entries(self, since: datetime | None = None) -> list[dict[str, Any]]:
        """Every entry (record + ``offer``), or those updated at or after ``since``; checked against the total."""
        params: dict[str, Any] = {"page_size": self.page_size, "page": 1}
        if since is not None:
            params["updated_since"] = since.isoformat()
        url = self.platform.base_url + LIBRARY_PATH
        entries: list[dict[str, Any]] = []
        while True:
            try:
                body = self.platform.client.request(
                    "GET", url, params=params, what=f"library page {params['page']}"
                ).json()
            except HttpFailure as exc:
                raise LibraryError(f"platform library: {exc}") from None
            entries.extend(body["items"])
            if len(body["items"]) < self.page_size or len(entries) >= body["total"]:
                break
            params["page"] += 1
        if len({e["task_code"] for e in entries}) != len(entries) or len(entries) != body["total"]:
            raise LibraryError(f"platform library: read {len(entries)} items of {body['total']} declared")
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
        write_settings: HttpSettings | None = None,
        session: requests.Session | None = None,
    ) -> None:
        self.partner, self.base_url, self.archive, self.home, self.secret = partner, base_url, archive, home, secret
        self.fmt = wire_formats()[partner.format]
        self.offer = endpoint(self.fmt)
        self.fetch_settings = fetch_settings or FetchSettings()
        self.session = session
        self.who = f"partner {partner.division} ({partner.name})"
        signer = Signer(self.fmt.auth, secret, partner.signature)
        self.client = HttpClient(self.who, signer, write_settings, session)

    def configured(self) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        """What the partner has configured of our items (records with ``offer_modes``), and the manifest of
        the read (every request, its answer archived)."""
        fmt = readback_format(self.fmt)
        try:
            result = fetch_catalogue(
                self.partner,
                fmt,
                self.base_url,
                self.archive,
                secret=self.secret,
                settings=self.fetch_settings,
                session=self.session,
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
        headers = {"Content-Type": content_type, self.offer.key_header: key}
        try:
            answer = self.client.request("POST", url, data=body, headers=headers, what=f"POST {url} batch {key}").json()
        except HttpFailure as exc:
            raise OfferError(str(exc), retryable=exc.retryable) from None
        for result in answer.get("results", []):
            if result.get("op") not in ("upsert", "delete"):
                raise OfferError(f"{self.who}: answer names an unknown operation: {result}", retryable=False)
        return dict(answer)
