"""Alerts of the 跨省通办 sync: failures and the 06:00 deadline, sent through one or two channels.

Each channel is optional and configured by its own Airflow Connection:

- **webhook**: Connection ``tongban_alerts`` (type ``http``; the webhook's URL in ``host``, or
  schema/host/port plus an optional endpoint in ``extra`` as ``{"endpoint": "..."}``; login/password for
  basic auth, extra headers in ``extra`` as the http provider reads them). Sent by the http provider's
  :class:`~airflow.providers.http.notifications.http.HttpNotifier` as JSON: ``event`` (``task_failed``,
  ``dag_failed``, ``deadline_missed``, and the partner notices ``partner_held_back``, ``removals_held`` and
  ``codes_recovered``),
  ``text`` (one readable line), ``dag_id``, ``run_id``,
  ``task_id``, ``map_index``, ``error``, ``log_url``.
- **mail**: Connection ``tongban_alerts_smtp`` (type ``smtp``: host, port, login/password; in ``extra``
  the recipients ``to`` (a list, or addresses separated by ``,``/``;``), optionally ``cc``, and the smtp
  provider's own keys: ``from_email``, ``disable_ssl``, ``disable_tls``, ``timeout``, ``retry_limit``).
  Sent by the smtp provider's :class:`~airflow.providers.smtp.notifications.smtp.SmtpNotifier`: the
  subject is the alert's one line, the body an HTML table of the same fields.

Every configured channel is tried, each on its own: a channel that fails is logged (with the
Connection's id) and never fails the callback, nor stops the other channel. Without either Connection
one log line says that no alert was sent. Failure callbacks (in the worker or the DAG processor) and
the deadline alert (an ``AsyncCallback`` in the triggerer) share this logic. This module imports
nothing heavy at import time: the DAG file refers to it at parse.
"""

from __future__ import annotations

import html
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from airflow.sdk import Connection

ALERTS_CONN_ID = "tongban_alerts"  # webhook (type http)
SMTP_CONN_ID = "tongban_alerts_smtp"  # mail (type smtp)
DAG_ID = "cross_province_sync"
DEADLINE_CALLBACK = "tongban_alerts.deadline_missed"  # AsyncCallback path: runs in the triggerer
TEXT_ERROR_CHARS = 300  # of the error in an alert's one-line ``text`` (the payload's ``error`` keeps more)

log = logging.getLogger(__name__)


def _get(obj: Any, name: str) -> Any:
    if obj is None:
        return None
    if isinstance(obj, Mapping):
        return obj.get(name)
    return getattr(obj, name, None)


def alert_payload(context: Mapping[str, Any] | None, event: str) -> dict[str, Any]:
    """The JSON of one alert, from an Airflow callback context (task, DAG or deadline)."""
    context = context or {}
    ti = context.get("ti") or context.get("task_instance")
    dag_run = context.get("dag_run")
    dag_id = _get(ti, "dag_id") or _get(dag_run, "dag_id") or _get(context.get("dag"), "dag_id") or DAG_ID
    run_id = context.get("run_id") or _get(ti, "run_id") or _get(dag_run, "run_id")
    task_id, map_index = _get(ti, "task_id"), _get(ti, "map_index")
    error = context.get("exception") or context.get("reason")
    partner = context.get("partner_label")
    where = f"{dag_id} run {run_id}"
    if task_id:
        where += f" task {task_id}" + (f"[{map_index}]" if map_index not in (None, -1) else "")
    if partner:
        where += f" [{partner}]"
    text = {
        "task_failed": f"[tongban] task failed: {where}",
        "dag_failed": f"[tongban] run failed: {where}",
        "deadline_missed": f"[tongban] nightly sync not finished by its deadline (06:00 Asia/Shanghai): {where}",
        "partner_held_back": f"[tongban] partner held back, nothing of it published: {where}",
        "removals_held": f"[tongban] removals held for confirmation (param confirm_removals): {where}",
        "codes_recovered": f"[tongban] records with a non-text 实施编码 (recovered, items held): {where}",
    }.get(event, f"[tongban] {event}: {where}")
    if error:
        text += f": {str(error)[:TEXT_ERROR_CHARS]}"
    return {
        "event": event,
        "text": text,
        "dag_id": dag_id,
        "run_id": run_id,
        "task_id": task_id,
        "map_index": map_index,
        "error": str(error)[:2000] if error else None,
        "log_url": _get(ti, "log_url"),
    }


# --- channels -----------------------------------------------------------------------------------

EVENT_TITLES = {
    "task_failed": "任务失败 (task failed)",
    "dag_failed": "运行失败 (run failed)",
    "deadline_missed": "06:00 前未完成 (deadline missed)",
    "partner_held_back": "伙伴整体暂缓推送 (partner held back)",
    "removals_held": "删除暂缓，待人工确认 (removals held)",
    "codes_recovered": "实施编码类型错误，事项保留原版本 (codes recovered)",
}
# events of a run that need a person though nothing failed
NOTICES = ("partner_held_back", "removals_held", "codes_recovered")
MAIL_FIELDS = (
    ("event", "事件 event"),
    ("dag_id", "DAG"),
    ("run_id", "运行 run"),
    ("task_id", "任务 task"),
    ("map_index", "分片 map index"),
    ("log_url", "日志 log"),
)


def mail_subject(payload: Mapping[str, Any]) -> str:
    """The alert's one line as a mail subject: a single line, not too long."""
    line = " ".join(str(payload["text"]).split())
    return line if len(line) <= 200 else line[:199] + "…"


def mail_body(payload: Mapping[str, Any]) -> str:
    """The alert as a small HTML page; every value escaped (errors quote partner answers)."""
    title = EVENT_TITLES.get(payload["event"], payload["event"])
    rows = []
    for key, label in MAIL_FIELDS:
        value = payload.get(key)
        if value in (None, "", -1):
            continue
        cell = html.escape(str(value))
        if key == "log_url":
            cell = f'<a href="{cell}">{cell}</a>'
        rows.append(f"<tr><th align='left'>{html.escape(label)}</th><td>{cell}</td></tr>")
    error = payload.get("error")
    heading = "说明 notice" if payload["event"] in NOTICES else "错误 error"
    detail = f"<h3>{heading}</h3><pre>{html.escape(error)}</pre>" if error else ""
    return (
        f"<h2>跨省通办同步告警：{html.escape(title)}</h2>"
        f"<p>{html.escape(str(payload['text']))}</p>"
        f"<table>{''.join(rows)}</table>{detail}"
        "<p>处置见 docs/runbook.md（Runbook: the nightly sync）。</p>"
    )


def recipients(conn: Connection, key: str = "to") -> list[str]:
    """Addresses in the Connection's extra under ``key``: a list, or one string split at ``,`` / ``;``."""
    value = conn.extra_dejson.get(key) or []
    if isinstance(value, str):
        value = value.replace(";", ",").split(",")
    return [address.strip() for address in value if address and address.strip()]


def _webhook(conn: Connection, payload: dict[str, Any]) -> Any:
    from airflow.providers.http.notifications.http import HttpNotifier  # imported when alerting only

    return HttpNotifier(http_conn_id=conn.conn_id, json=payload)


def _mail(conn: Connection, payload: dict[str, Any]) -> Any:
    from airflow.providers.smtp.notifications.smtp import SmtpNotifier  # imported when alerting only

    to = recipients(conn)
    if not to:
        raise ValueError(f"Connection {conn.conn_id!r} names no recipients: set 'to' in its extra")
    return SmtpNotifier(
        smtp_conn_id=conn.conn_id,
        to=to,
        cc=recipients(conn, "cc") or None,
        from_email=conn.extra_dejson.get("from_email"),  # None: the smtp hook reads the same key
        subject=mail_subject(payload),
        html_content=mail_body(payload),
    )


@dataclass(frozen=True)
class Channel:
    conn_id: str
    build: Callable[[Connection, dict[str, Any]], Any]  # a notifier with notify / async_notify


CHANNELS = (Channel(ALERTS_CONN_ID, _webhook), Channel(SMTP_CONN_ID, _mail))


def _not_configured(payload: Mapping[str, Any]) -> None:
    """The task log is then the only place the alert is kept: its line ends with the whole error or notice,
    not ``text``'s first 300 characters of it (a removals notice is longer, and its last line says how to
    confirm)."""
    ids = " or ".join(repr(c.conn_id) for c in CHANNELS)
    line, error = str(payload["text"]), payload.get("error")
    if error and not line.endswith(error):
        line = line.removesuffix(f": {error[:TEXT_ERROR_CHARS]}") + f": {error}"
    log.warning("alert not sent (no Connection %s defined): %s", ids, line)


def _failed(channel: Channel, payload: Mapping[str, Any]) -> bool:
    log.exception("alert could not be sent through Connection %r: %s", channel.conn_id, payload["text"])
    return False


def _sent(channel: Channel, payload: Mapping[str, Any]) -> bool:
    log.info("alert sent through Connection %r: %s", channel.conn_id, payload["text"])
    return True


def _send(payload: dict[str, Any], context: Mapping[str, Any] | None) -> dict[str, bool]:
    """Send through every configured channel; returns Connection id -> whether it went out."""
    from airflow.sdk import BaseHook
    from airflow.sdk.exceptions import AirflowNotFoundException

    results: dict[str, bool] = {}
    for channel in CHANNELS:
        try:
            conn = BaseHook.get_connection(channel.conn_id)
        except AirflowNotFoundException:
            continue
        try:  # an alert must never fail the callback it runs in
            channel.build(conn, payload).notify(dict(context or {}))
        except Exception:
            results[channel.conn_id] = _failed(channel, payload)
        else:
            results[channel.conn_id] = _sent(channel, payload)
    if not results:
        _not_configured(payload)
    return results


async def _asend(payload: dict[str, Any], context: Mapping[str, Any] | None) -> dict[str, bool]:
    """:func:`_send` for the triggerer's event loop."""
    from airflow.sdk import BaseHook
    from airflow.sdk.exceptions import AirflowNotFoundException

    results: dict[str, bool] = {}
    for channel in CHANNELS:
        try:
            conn = await BaseHook.aget_connection(channel.conn_id)
        except AirflowNotFoundException:
            continue
        try:
            await channel.build(conn, payload).async_notify(dict(context or {}))
        except Exception:
            results[channel.conn_id] = _failed(channel, payload)
        else:
            results[channel.conn_id] = _sent(channel, payload)
    if not results:
        _not_configured(payload)
    return results


def notify_task_failure(context: Mapping[str, Any]) -> dict[str, bool]:
    """Task ``on_failure_callback`` (the DAG's default_args)."""
    return _send(alert_payload(context, "task_failed"), context)


def notify_partner(context: Mapping[str, Any], event: str, notice: str) -> dict[str, bool]:
    """A partner's run needs a person though no task failed (``NOTICES``: held back whole, removals held);
    ``notice`` is what the partner's report says, with the numbers (sent as the alert's ``error`` field)."""
    return _send(alert_payload({**context, "reason": notice}, event), context)


def notify_dag_failure(context: Mapping[str, Any]) -> dict[str, bool]:
    """DAG ``on_failure_callback``."""
    return _send(alert_payload(context, "dag_failed"), context)


async def deadline_missed(context: Mapping[str, Any] | None = None, **kwargs: Any) -> dict[str, bool]:
    """The DeadlineAlert's AsyncCallback (in the triggerer): the nightly run is not done by 06:00."""
    return await _asend(alert_payload({**kwargs, **(context or {})}, "deadline_missed"), context)
