"""Fixtures for the simulator tests: the registry, live servers (subprocesses or in-thread), paging."""

from __future__ import annotations

import csv
import io
import json
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import requests
import uvicorn
from fastapi import FastAPI

from tongban.connections import PLATFORM_AUTH
from tongban.http import Signer
from tongban.registry import Registry, WireFormat, load_registry
from tongban.simulators.__main__ import base_url, bind
from tongban.simulators.credentials import partner_secrets, platform_credentials
from tongban.simulators.launcher import SimulatorURLs, running_simulators


@pytest.fixture(scope="session")
def registry() -> Registry:
    return load_registry()


@pytest.fixture(scope="session")
def live_state(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("live-simulators")


@pytest.fixture(scope="session")
def live(live_state: Path) -> Iterator[SimulatorURLs]:
    """Both simulators as real subprocesses (through the launcher), with their own state folder."""
    with running_simulators(live_state) as urls:
        yield urls


@pytest.fixture(scope="session")
def secrets(live: SimulatorURLs, live_state: Path, registry: Registry) -> dict[str, str]:
    """The live partner simulator's secrets (what the partners' Connections carry)."""
    return partner_secrets(live_state, registry)


@contextmanager
def serving(app: FastAPI) -> Iterator[str]:
    """Serve an app with uvicorn in a thread on a free loopback port; yields its base URL."""
    sock = bind("127.0.0.1", 0)
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="off"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "in-thread server did not start"
        time.sleep(0.01)
    try:
        yield base_url("127.0.0.1", sock.getsockname()[1])
    finally:
        server.should_exit = True
        thread.join(10)
        sock.close()


@pytest.fixture
def serve() -> Callable[[FastAPI], Any]:
    return serving


def partner_signer(url: str, fmt: WireFormat, secret: str) -> Signer:
    """Signs requests to the partner whose URL this is, with its registry algorithm (tongban.http)."""
    division = urlsplit(url).path.split("/partners/", 1)[1].split("/", 1)[0]
    try:
        algorithm = load_registry().partner(division).signature
    except KeyError:  # a partner the simulator does not serve either
        algorithm = "HMAC-SHA256"
    return Signer(fmt.auth, secret, algorithm)


def platform_signer(state_dir: Path) -> Signer:
    """Signs requests to the platform simulator whose state folder this is."""
    credentials = platform_credentials(state_dir)
    return Signer(PLATFORM_AUTH, credentials["secret"], credentials["algorithm"])


def signed_get(url: str, fmt: WireFormat, secret: str | None, **kwargs: Any) -> requests.Response:
    """GET signed as the partner's format and algorithm say (a fresh timestamp and nonce each time)."""
    auth = partner_signer(url, fmt, secret) if secret else None
    return requests.get(url, auth=auth, timeout=30, **kwargs)


def page_rows(fmt: WireFormat, answer: requests.Response) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """(records, the rest of the answer) of one page; CSV decoded from the format's encoding."""
    if fmt.media == "csv":
        assert answer.headers["Content-Type"].lower().startswith("text/csv")
        text = answer.content.decode(fmt.encoding)
        rows = list(csv.DictReader(io.StringIO(text, newline="")))
        total = answer.headers[fmt.paging.total_header or ""]
        return rows, {"total": int(total)}
    body = json.loads(answer.content.decode(fmt.encoding))
    return body[fmt.paging.items_field], body


def fetch_all(
    base: str, fmt: WireFormat, size: int | None = None, secret: str | None = None, **extra: Any
) -> tuple[list[dict[str, Any]], list[Any]]:
    """Page through a partner's API the way a client must; returns (rows, the page-level markers).

    For page paging the markers are the reported totals, for cursor paging the cursors received.
    """
    paging = fmt.paging
    url = base + fmt.path
    params: dict[str, Any] = {paging.size_param: size or paging.page_size, **extra}
    rows: list[dict[str, Any]] = []
    markers: list[Any] = []
    if paging.kind == "page":
        assert paging.page_param
        params[paging.page_param] = paging.first_page
    for _ in range(10_000):
        answer = signed_get(url, fmt, secret, params=params)
        assert answer.status_code == 200, answer.text
        page, body = page_rows(fmt, answer)
        rows += page
        if paging.kind == "page":
            total = body["total"] if fmt.media == "csv" else body[paging.total_field or "total"]
            markers.append(total)
            if not page or len(rows) >= total:
                return rows, markers
            params[paging.page_param] += 1
        else:
            assert paging.next_field and paging.cursor_param
            cursor = body[paging.next_field]
            markers.append(cursor)
            if cursor is None:
                return rows, markers
            params[paging.cursor_param] = cursor
    raise AssertionError("paging did not end")


def ground_truth(partners_url: str, division: str) -> list[dict[str, Any]]:
    answer = requests.get(f"{partners_url}/admin/partners/{division}/items", timeout=30)
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["count"] == len(body["items"])
    return list(body["items"])
