"""Alerts: tongban_alerts sends through HttpNotifier to a real local webhook and through SmtpNotifier to a
real local SMTP server (aiosmtpd), each channel optional and on its own; without either, one log line."""

from __future__ import annotations

import asyncio
import email
import json
import logging
import socket
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from email.message import EmailMessage
from email.policy import default as default_policy
from types import SimpleNamespace
from typing import Any

import pytest
from aiosmtpd.controller import Controller

from scripts.localenv import REPO
from tests.conftest import webhook_receiver

sys.path.insert(0, str(REPO / "plugins"))  # as Airflow does for plugins/

import tongban_alerts

WEBHOOK, SMTP = "AIRFLOW_CONN_TONGBAN_ALERTS", "AIRFLOW_CONN_TONGBAN_ALERTS_SMTP"


@pytest.fixture(autouse=True)
def _no_channels(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each test configures the channels it means (none leaks in from the environment)."""
    monkeypatch.delenv(WEBHOOK, raising=False)
    monkeypatch.delenv(SMTP, raising=False)


@pytest.fixture
def webhook() -> Iterator[tuple[str, list[dict[str, Any]]]]:
    """A webhook receiver on loopback; yields its URL and the JSON bodies it received."""
    with webhook_receiver() as hook:
        yield hook


@dataclass
class Mailbox:
    """A real SMTP server (aiosmtpd) on loopback and the mails it accepted."""

    port: int
    envelopes: list[Any] = field(default_factory=list)

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # aiosmtpd calls it by this name
        self.envelopes.append(envelope)
        return "250 Message accepted for delivery"

    def conn(self, **overrides: Any) -> str:
        """An AIRFLOW_CONN_* value for the tongban_alerts_smtp Connection pointing at this server."""
        extra = {"to": ["oncall@tongban.example", "data@tongban.example"], "from_email": "airflow@tongban.example"}
        extra |= {"disable_ssl": True, "disable_tls": True, "timeout": 5, "retry_limit": 0} | overrides
        return json.dumps({"conn_type": "smtp", "host": "127.0.0.1", "port": self.port, "extra": extra})

    def messages(self) -> list[EmailMessage]:
        return [email.message_from_bytes(e.original_content, policy=default_policy) for e in self.envelopes]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def mailbox() -> Iterator[Mailbox]:
    box = Mailbox(_free_port())
    controller = Controller(box, hostname="127.0.0.1", port=box.port)
    controller.start()
    try:
        yield box
    finally:
        controller.stop()


def _context() -> dict[str, Any]:
    ti = SimpleNamespace(
        dag_id="cross_province_sync", run_id="scheduled__2026-11-28", task_id="partner.fetch", map_index=3
    )
    ti.log_url = "http://airflow/log?a=1&b=2"
    return {
        "ti": ti,
        "run_id": ti.run_id,
        "partner_label": "440100 广州市",
        "exception": ValueError("partner 440100 unreachable <html>"),
    }


def test_task_failure_posts_to_the_webhook(webhook, monkeypatch: pytest.MonkeyPatch) -> None:
    url, received = webhook
    monkeypatch.setenv(WEBHOOK, json.dumps({"conn_type": "http", "host": url}))
    assert tongban_alerts.notify_task_failure(_context()) == {"tongban_alerts": True}
    [got] = received
    assert got["path"] == "/hooks/tongban"
    alert = got["json"]
    assert alert["event"] == "task_failed" and alert["task_id"] == "partner.fetch" and alert["map_index"] == 3
    assert alert["run_id"] == "scheduled__2026-11-28" and "unreachable" in alert["error"]
    assert alert["text"].startswith("[tongban] task failed: cross_province_sync run scheduled__2026-11-28")


def test_dag_failure_and_deadline_post_to_the_webhook(webhook, monkeypatch: pytest.MonkeyPatch) -> None:
    url, received = webhook
    monkeypatch.setenv(WEBHOOK, json.dumps({"conn_type": "http", "host": url}))
    run = SimpleNamespace(dag_id="cross_province_sync", run_id="scheduled__late")
    assert tongban_alerts.notify_dag_failure({"dag_run": run, "reason": "task_failure"}) == {"tongban_alerts": True}
    deadline = asyncio.run(tongban_alerts.deadline_missed({"dag_run": {"dag_id": "cross_province_sync"}}))
    assert deadline == {"tongban_alerts": True}
    assert [r["json"]["event"] for r in received] == ["dag_failed", "deadline_missed"]
    assert "06:00" in received[1]["json"]["text"]


def test_task_failure_is_mailed(mailbox: Mailbox, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(SMTP, mailbox.conn())
    assert tongban_alerts.notify_task_failure(_context()) == {"tongban_alerts_smtp": True}
    [envelope] = mailbox.envelopes
    assert envelope.mail_from == "airflow@tongban.example"
    assert envelope.rcpt_tos == ["oncall@tongban.example", "data@tongban.example"]
    [mail] = mailbox.messages()
    subject = str(mail["Subject"])
    assert subject.startswith("[tongban] task failed: cross_province_sync run scheduled__2026-11-28")
    assert "[440100 广州市]" in subject and "\n" not in subject
    body = mail.get_body(("html",)).get_content()
    assert "跨省通办同步告警：任务失败" in body and "partner.fetch" in body
    # the error and the link are escaped, never markup of their own
    assert "unreachable &lt;html&gt;" in body and "<html>" not in body
    assert 'href="http://airflow/log?a=1&amp;b=2"' in body


def test_deadline_alert_is_mailed_from_the_triggerer_loop(mailbox: Mailbox, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(SMTP, mailbox.conn(to="oncall@tongban.example; lead@tongban.example", cc="cc@tongban.example"))
    run = {"dag_id": "cross_province_sync", "run_id": "scheduled__2026-11-28T18:00:00+00:00"}
    assert asyncio.run(tongban_alerts.deadline_missed({"dag_run": run})) == {"tongban_alerts_smtp": True}
    [envelope] = mailbox.envelopes
    assert envelope.rcpt_tos == ["oncall@tongban.example", "lead@tongban.example", "cc@tongban.example"]
    [mail] = mailbox.messages()
    assert "06:00" in str(mail["Subject"]) and "scheduled__2026-11-28T18:00:00+00:00" in str(mail["Subject"])
    assert "06:00 前未完成" in mail.get_body(("html",)).get_content()


def test_both_channels_each_on_its_own(mailbox: Mailbox, webhook, monkeypatch: pytest.MonkeyPatch, caplog) -> None:
    url, received = webhook
    monkeypatch.setenv(WEBHOOK, json.dumps({"conn_type": "http", "host": url}))
    monkeypatch.setenv(SMTP, mailbox.conn())
    both = {"tongban_alerts": True, "tongban_alerts_smtp": True}
    assert tongban_alerts.notify_task_failure(_context()) == both
    assert asyncio.run(tongban_alerts.deadline_missed({"run_id": "r"})) == both
    assert [r["json"]["event"] for r in received] == ["task_failed", "deadline_missed"]
    assert len(mailbox.envelopes) == 2
    # a failing webhook neither fails the callback nor keeps the mail from going out
    monkeypatch.setenv(WEBHOOK, json.dumps({"conn_type": "http", "host": "http://127.0.0.1:9"}))
    with caplog.at_level(logging.ERROR, logger="tongban_alerts"):
        assert tongban_alerts.notify_dag_failure({"run_id": "r"}) == {
            "tongban_alerts": False,
            "tongban_alerts_smtp": True,
        }
    assert len(mailbox.envelopes) == 3
    assert any("could not be sent through Connection 'tongban_alerts'" in r.getMessage() for r in caplog.records)


def test_a_failing_mail_server_does_not_fail_the_callback(webhook, monkeypatch: pytest.MonkeyPatch, caplog) -> None:
    url, received = webhook
    monkeypatch.setenv(WEBHOOK, json.dumps({"conn_type": "http", "host": url}))
    closed = json.dumps(
        {
            "conn_type": "smtp",
            "host": "127.0.0.1",
            "port": _free_port(),
            "extra": {
                "to": "a@b.example",
                "from_email": "x@b.example",
                "disable_ssl": True,
                "disable_tls": True,
                "timeout": 2,
                "retry_limit": 0,
            },
        }
    )
    monkeypatch.setenv(SMTP, closed)
    with caplog.at_level(logging.ERROR, logger="tongban_alerts"):
        assert tongban_alerts.notify_task_failure(_context()) == {"tongban_alerts": True, "tongban_alerts_smtp": False}
        deadline = asyncio.run(tongban_alerts.deadline_missed({}))
        assert deadline == {"tongban_alerts": True, "tongban_alerts_smtp": False}
    assert len(received) == 2
    failures = [r.getMessage() for r in caplog.records if r.name == "tongban_alerts"]
    assert len(failures) == 2 and all("Connection 'tongban_alerts_smtp'" in f for f in failures)


def test_a_mail_connection_without_recipients_is_a_logged_failure(
    mailbox: Mailbox, monkeypatch: pytest.MonkeyPatch, caplog
) -> None:
    monkeypatch.setenv(SMTP, mailbox.conn(to=[]))
    with caplog.at_level(logging.ERROR, logger="tongban_alerts"):
        assert tongban_alerts.notify_task_failure(_context()) == {"tongban_alerts_smtp": False}
    assert not mailbox.envelopes
    assert "names no recipients" in caplog.text


def test_without_any_connection_one_line_and_no_error(caplog) -> None:
    with caplog.at_level(logging.WARNING, logger="tongban_alerts"):
        assert tongban_alerts.notify_task_failure(_context()) == {}
        assert asyncio.run(tongban_alerts.deadline_missed({})) == {}
    lines = [r.getMessage() for r in caplog.records if r.name == "tongban_alerts"]
    assert len(lines) == 2
    assert all("no Connection 'tongban_alerts' or 'tongban_alerts_smtp'" in line for line in lines)


def test_without_any_connection_the_log_line_keeps_the_whole_notice(caplog) -> None:
    """The task log is all an operator without alert channels has: a removals notice (longer than the alert's
    one-line text keeps of it) must arrive whole there, down to how to confirm, not cut at 300 characters."""
    from tongban import guard

    run_id = "scheduled__2026-11-28T18:00:00+00:00"
    held = {
        "held": [{"task_code": f"11440400{i:023d}"} for i in range(78)],
        "reasons": [
            "本次全量拉取将删除贵方在省一体化平台上已发布的事项 78/177 = 44.1% > 20%",
            "贵方接口给出的事项总数 100 较上次已发布的全量拉取（180）减少 44.4% > 20%",
        ],
    }
    notice = f"{guard.removal_notice(held, '440400', run_id)}\n{guard.how_to_confirm('440400', run_id)}"
    assert len(notice) > 300
    with caplog.at_level(logging.WARNING, logger="tongban_alerts"):
        assert tongban_alerts.notify_partner({**_context(), "exception": None}, "removals_held", notice) == {}
    [line] = [r.getMessage() for r in caplog.records if r.name == "tongban_alerts"]
    assert line.startswith("alert not sent") and "[tongban] removals held for confirmation" in line
    assert line.endswith(f": {notice}")
    assert f'"confirm_removals": ["440400@{run_id}"]' in line


def test_an_unreachable_webhook_does_not_fail_the_callback(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(WEBHOOK, json.dumps({"conn_type": "http", "host": "http://127.0.0.1:9"}))
    assert tongban_alerts.notify_task_failure(_context()) == {"tongban_alerts": False}


def test_a_partner_notice_goes_through_both_channels_with_its_numbers(
    webhook, mailbox: Mailbox, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A hold-back is no failure, but a person must know: the notice (with rate and limit) goes out as is."""
    url, received = webhook
    monkeypatch.setenv(WEBHOOK, json.dumps({"conn_type": "http", "host": url}))
    monkeypatch.setenv(SMTP, mailbox.conn())
    context = {**_context(), "exception": None}
    context["ti"].task_id = "partner_publish.report"
    notice = "本次整体暂缓推送：未通过关键校验或无法识别的记录 9/32 = 28.1% > 20%（暂缓阈值 TONGBAN_MAX_CRITICAL_RATE）"
    sent = tongban_alerts.notify_partner(context, "partner_held_back", notice)
    assert sent == {"tongban_alerts": True, "tongban_alerts_smtp": True}
    [got] = received
    assert got["json"]["event"] == "partner_held_back" and got["json"]["error"] == notice
    assert got["json"]["text"].startswith("[tongban] partner held back") and "[440100 广州市]" in got["json"]["text"]
    [mail] = mailbox.messages()
    body = mail.get_body(("html",)).get_content()
    assert "伙伴整体暂缓推送" in body and "说明 notice" in body and "9/32 = 28.1% &gt; 20%" in body
