"""Fixtures for the simulator tests: the registry, live servers (subprocesses or in-thread), paging."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import pytest
import requests
import uvicorn
from fastapi import FastAPI

from tongban.registry import Registry, WireFormat, load_registry
from tongban.simulators.__main__ import base_url, bind
from tongban.simulators.launcher import SimulatorURLs, running_simulators


@pytest.fixture(scope="session")
def registry() -> Registry:
    return load_registry()


@pytest.fixture(scope="session")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SimulatorURLs]:
    """Both simulators as real subprocesses (through the launcher), with their own state folder."""
    with running_simulators(tmp_path_factory.mktemp("live-simulators")) as urls:
        yield urls


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


def fetch_all(base: str, fmt: WireFormat, size: int | None = None) -> tuple[list[dict[str, Any]], list[Any]]:
    """Page through a partner's API the way a client must; returns (rows, the page-level markers).

    For page paging the markers are the reported totals, for cursor paging the cursors received.
    """
    paging = fmt.paging
    url = base + fmt.path
    params: dict[str, Any] = {paging.size_param: size or paging.page_size}
    rows: list[dict[str, Any]] = []
    markers: list[Any] = []
    if paging.kind == "page":
        assert paging.page_param and paging.total_field
        params[paging.page_param] = paging.first_page
    for _ in range(10_000):
        answer = requests.get(url, params=params, timeout=30)
        assert answer.status_code == 200, answer.text
        body = answer.json()
        page = body[paging.items_field]
        rows += page
        if paging.kind == "page":
            markers.append(body[paging.total_field])
            if not page or len(rows) >= body[paging.total_field]:
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
