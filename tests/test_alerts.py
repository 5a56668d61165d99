"""Alerts: the tongban_alerts wrapper posts through HttpNotifier to a real local webhook, or logs one line."""

from __future__ import annotations

import asyncio
import json
import logging
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import SimpleNamespace
from typing import Any

import pytest

from scripts.localenv import REPO

sys.path.insert(0, str(REPO / "plugins"))  # as Airflow does for plugins/

import tongban_alerts


@pytest.fixture
def webhook() -> Iterator[tuple[str, list[dict[str, Any]]]]:
    """A webhook receiver on loopback; yields its URL and the JSON bodies it received."""
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


def _context() -> dict[str, Any]:
    ti = SimpleNamespace(
        dag_id="cross_province_sync", run_id="scheduled__2026-11-28", task_id="partner.fetch", map_index=3
    )
    ti.log_url = "http://airflow/log"
    return {"ti": ti, "run_id": ti.run_id, "exception": ValueError("partner 440100 unreachable")}


def test_task_failure_posts_to_the_webhook(webhook, monkeypatch: pytest.MonkeyPatch) -> None:
    url, received = webhook
    monkeypatch.setenv("AIRFLOW_CONN_TONGBAN_ALERTS", json.dumps({"conn_type": "http", "host": url}))
    assert tongban_alerts.notify_task_failure(_context()) is True
    [got] = received
    assert got["path"] == "/hooks/tongban"
    alert = got["json"]
    assert alert["event"] == "task_failed" and alert["task_id"] == "partner.fetch" and alert["map_index"] == 3
    assert alert["run_id"] == "scheduled__2026-11-28" and "unreachable" in alert["error"]
    assert alert["text"].startswith("[tongban] task failed: cross_province_sync run scheduled__2026-11-28")


def test_dag_failure_and_deadline_post_to_the_webhook(webhook, monkeypatch: pytest.MonkeyPatch) -> None:
    url, received = webhook
    monkeypatch.setenv("AIRFLOW_CONN_TONGBAN_ALERTS", json.dumps({"conn_type": "http", "host": url}))
    run = SimpleNamespace(dag_id="cross_province_sync", run_id="scheduled__late")
    assert tongban_alerts.notify_dag_failure({"dag_run": run, "reason": "task_failure"}) is True
    assert asyncio.run(tongban_alerts.deadline_missed({"dag_run": {"dag_id": "cross_province_sync"}})) is True
    assert [r["json"]["event"] for r in received] == ["dag_failed", "deadline_missed"]
    assert "06:00" in received[1]["json"]["text"]


def test_without_the_connection_one_line_and_no_error(monkeypatch: pytest.MonkeyPatch, caplog) -> None:
    monkeypatch.delenv("AIRFLOW_CONN_TONGBAN_ALERTS", raising=False)
    with caplog.at_level(logging.WARNING, logger="tongban_alerts"):
        assert tongban_alerts.notify_task_failure(_context()) is False
        assert asyncio.run(tongban_alerts.deadline_missed({})) is False
    lines = [r.getMessage() for r in caplog.records if r.name == "tongban_alerts"]
    assert len(lines) == 2 and all("no Connection 'tongban_alerts'" in line for line in lines)


def test_an_unreachable_webhook_does_not_fail_the_callback(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AIRFLOW_CONN_TONGBAN_ALERTS", json.dumps({"conn_type": "http", "host": "http://127.0.0.1:9"}))
    assert tongban_alerts.notify_task_failure(_context()) is False
