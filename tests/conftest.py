"""Shared fixtures: a well-formed canonical item, and the live simulators for integration tests."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from tests.validation import item_fixtures
from tongban.codes import TASK_CODE_LENGTH, USCC_LENGTH, make_uscc

USCC = make_uscc("1", "1", "440100", "00612345")  # a 广州 government body, both check characters right

# The modules that take minutes (Airflow runs, servers, browsers), slowest first. `make test` runs the suite on
# two workers a file each (pytest-xdist --dist loadfile --no-loadscope-reorder): a file is handed to whichever
# worker is free, in collection order, so these go first and the short ones fill in after; one of these
# started last would keep its worker busy for minutes after the other ran out of work. The rest keep their order.
SLOW_FIRST = (
    "tests/test_e2e_recovery.py",
    "tests/test_e2e.py",
    "tests/test_e2e_guard.py",
    "tests/test_benches.py",
    "tests/test_object_storage.py",
    "tests/ui/test_operations_ui.py",
    "tests/test_outbound.py",
    "tests/test_local_operation.py",
    "tests/test_removal_guard.py",
    "tests/ui/test_plugin_page.py",
    "tests/test_conformance.py",
    "tests/test_province.py",
)


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    rank = {path: i for i, path in enumerate(SLOW_FIRST)}
    items.sort(key=lambda item: rank.get(item.nodeid.split("::")[0], len(rank)))


def make_record(**overrides: Any) -> dict[str, Any]:
    """A canonical item record (``Item.record()`` shape) that passes every check; keyword arguments
    override fields (``level``, ``dept_uscc`` and ``catalog_code`` rebuild the 实施编码)."""
    defaults = {"item_type": "20", "legal_limit": 15, "version": "3", "updated_at": "2026-11-01T08:00:00+08:00"}
    return item_fixtures.make_record(
        uscc=overrides.pop("dept_uscc", USCC),
        level=overrides.pop("level", "3"),
        catalog=overrides.pop("catalog_code", "000104002000"),
        partner=overrides.pop("partner", "440100"),
        **(defaults | overrides),
    )


def uscc_valid(code: str) -> bool:
    """A USCC that validation's check (``uscc_checks``) finds right: its shape and both check characters."""
    import pandas as pd

    from tongban.validation.derived import uscc_checks

    facts = uscc_checks(pd.Series([code], dtype=object))
    return bool(facts["_uscc_format_ok"].iloc[0] and facts["_uscc_check_ok"].iloc[0] and facts["_org_check_ok"].iloc[0])


def uscc_division(code: str) -> str:
    """The 6-digit division code of a USCC's registering authority (characters 3-8)."""
    return code[2:8]


def split_task_code(task_code: str) -> tuple[str, str, str] | None:
    """(USCC, level digit, 基本编码) of a 31-character 实施编码, or None if it has another length."""
    if not isinstance(task_code, str) or len(task_code) != TASK_CODE_LENGTH:
        return None
    return task_code[:USCC_LENGTH], task_code[USCC_LENGTH], task_code[USCC_LENGTH + 1 :]


@pytest.fixture
def record() -> dict[str, Any]:
    return make_record()


@pytest.fixture(scope="session")
def simulators(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """Both simulators running on loopback for the whole session (their own state folder)."""
    from tongban.simulators.launcher import running_simulators

    state: Path = tmp_path_factory.mktemp("simulators")
    with running_simulators(state) as urls:
        yield urls


@contextmanager
def webhook_receiver() -> Iterator[tuple[str, list[dict[str, Any]]]]:
    """A webhook receiver on loopback (what the tongban_alerts Connection points at in tests); yields its URL
    and the requests it received (``path`` and ``json``)."""
    received: list[dict[str, Any]] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"]))
            received.append({"path": self.path, "json": json.loads(body)})
            self.send_response(204)
            self.end_headers()

        def log_message(self, *_: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/hooks/tongban", received
    finally:
        server.shutdown()
        server.server_close()
