"""Pull a partner's catalogue page by page and archive every raw response before it is parsed."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any

import requests
from requests.adapters import HTTPAdapter
from upath import UPath
from urllib3.util import Retry

from tongban.registry import Partner, WireFormat
from tongban.storage import write_json

MAX_PAGES = 10_000


class FetchError(RuntimeError):
    """A partner's catalogue could not be pulled; the message names the partner and the request."""


@dataclass(frozen=True)
class RawPage:
    number: int
    url: str
    params: dict[str, Any]
    status: int
    sha256: str
    size: int
    records: int
    path: str


def http_session(retries: int = 4, backoff: float = 0.5) -> requests.Session:
    """A session that retries connection errors, 429 and 5xx with exponential backoff and jitter,
    honouring Retry-After. TLS verification stays on (requests' default)."""
    retry = Retry(
        total=retries,
        connect=retries,
        read=retries,
        status=retries,
        backoff_factor=backoff,
        backoff_jitter=0.25,
        status_forcelist=(429, 500, 502, 503, 504),
        allowed_methods=None,  # retry POST too: publishing is made safe by idempotency keys
        respect_retry_after_header=True,
        raise_on_status=False,
    )
    session = requests.Session()
    adapter = HTTPAdapter(max_retries=retry)
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    return session


def fetch_catalogue(
    partner: Partner,
    fmt: WireFormat,
    base_url: str,
    raw_dir: UPath,
    *,
    session: requests.Session | None = None,
    timeout: float = 30.0,
) -> list[RawPage]:
    """Fetch every page of ``partner``'s catalogue into ``raw_dir``; returns the page manifest.

    Each response body is stored byte for byte (``page-00001.json``, …) before anything else reads it.
    """
    session = session or http_session()
    url = base_url.rstrip("/") + fmt.path
    paging = fmt.paging
    pages: list[RawPage] = []
    params: dict[str, Any] = {paging.size_param: paging.page_size}
    if paging.kind == "page":
        params[paging.page_param or "page"] = paging.first_page
    seen_cursors: set[str] = set()
    received = 0
    while len(pages) < MAX_PAGES:
        number = len(pages) + 1
        try:
            response = session.get(url, params=params, timeout=timeout)
        except requests.RequestException as exc:
            raise FetchError(f"partner {partner.division} ({partner.name}): GET {url} {params} failed: {exc}") from exc
        body = response.content
        path = raw_dir / f"page-{number:05d}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(body)
        if response.status_code != 200:
            raise FetchError(
                f"partner {partner.division} ({partner.name}): GET {url} {params} answered "
                f"{response.status_code}: {body[:200].decode(errors='replace')} (raw kept at {path})"
            )
        try:
            payload = json.loads(body)
            rows = payload[paging.items_field]
        except (ValueError, KeyError, TypeError) as exc:
            raise FetchError(
                f"partner {partner.division} ({partner.name}): page {number} of {url} is not the expected "
                f"{fmt.name} payload ({exc!r}; raw kept at {path})"
            ) from exc
        pages.append(
            RawPage(
                number,
                url,
                dict(params),
                response.status_code,
                hashlib.sha256(body).hexdigest(),
                len(body),
                len(rows),
                str(path),
            )
        )
        received += len(rows)
        if paging.kind == "page":
            total = int(payload[paging.total_field or "total"])
            if received >= total or not rows:
                break
            params[paging.page_param or "page"] += 1
        else:
            cursor = payload.get(paging.next_field or "nextCursor")
            if not cursor or not rows:
                break
            if cursor in seen_cursors:
                raise FetchError(
                    f"partner {partner.division} ({partner.name}): cursor {cursor!r} repeats at page {number}"
                )
            seen_cursors.add(cursor)
            params[paging.cursor_param or "cursor"] = cursor
    else:
        raise FetchError(f"partner {partner.division} ({partner.name}): more than {MAX_PAGES} pages")
    write_json(raw_dir / "manifest.json", [p.__dict__ for p in pages])
    return pages
