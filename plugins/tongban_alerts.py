"""Alerts of the 跨省通办 sync: failures and the 06:00 deadline, posted to the ``tongban_alerts`` webhook.

The Connection ``tongban_alerts`` (type ``http``; the webhook's URL in ``host``, or schema/host/port plus
an optional endpoint in ``extra`` as ``{"endpoint": "..."}``; login/password for basic auth, extra
headers in ``extra`` as the http provider reads them) configures where alerts go. They are sent by the
http provider's :class:`~airflow.providers.http.notifications.http.HttpNotifier`, as JSON: ``event``
(``task_failed``, ``dag_failed``, ``deadline_missed``), ``text`` (one readable line), ``dag_id``,
``run_id``, ``task_id``, ``map_index``, ``error``, ``log_url``.

Without the Connection an alert is not sent and one line says so in the log; an alert that cannot be
delivered is logged and never fails the callback. This module imports nothing heavy at import time:
the DAG file refers to it at parse.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

ALERTS_CONN_ID = "tongban_alerts"
DAG_ID = "cross_province_sync"
DEADLINE_CALLBACK = "tongban_alerts.deadline_missed"  # AsyncCallback path: runs in the triggerer

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
    dag_id = (
        _get(ti, "dag_id") or _get(dag_run, "dag_id") or _get(context.get("dag"), "dag_id") or "cross_province_sync"
    )
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
    }.get(event, f"[tongban] {event}: {where}")
    if error:
        text += f": {str(error)[:300]}"
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


def _notifier(payload: dict[str, Any]) -> Any:
    from airflow.providers.http.notifications.http import HttpNotifier  # imported when alerting only

    return HttpNotifier(http_conn_id=ALERTS_CONN_ID, json=payload)


def _not_configured(payload: Mapping[str, Any]) -> None:
    log.warning("alert not sent (no Connection %r defined): %s", ALERTS_CONN_ID, payload["text"])


def _send(payload: dict[str, Any], context: Mapping[str, Any] | None) -> bool:
    from airflow.sdk import BaseHook
    from airflow.sdk.exceptions import AirflowNotFoundException

    try:
        BaseHook.get_connection(ALERTS_CONN_ID)
    except AirflowNotFoundException:
        _not_configured(payload)
        return False
    try:
        _notifier(payload).notify(dict(context or {}))
    except Exception:  # an alert must never fail the callback it runs in
        log.exception("alert could not be sent through Connection %r: %s", ALERTS_CONN_ID, payload["text"])
        return False
    log.info("alert sent through Connection %r: %s", ALERTS_CONN_ID, payload["text"])
    return True


def notify_task_failure(context: Mapping[str, Any]) -> bool:
    """Task ``on_failure_callback`` (the DAG's default_args)."""
    return _send(alert_payload(context, "task_failed"), context)


def notify_dag_failure(context: Mapping[str, Any]) -> bool:
    """DAG ``on_failure_callback``."""
    return _send(alert_payload(context, "dag_failed"), context)


async def deadline_missed(context: Mapping[str, Any] | None = None, **kwargs: Any) -> bool:
    """The DeadlineAlert's AsyncCallback (in the triggerer): the nightly run is not done by 06:00."""
    from airflow.sdk import BaseHook
    from airflow.sdk.exceptions import AirflowNotFoundException

    payload = alert_payload({**kwargs, **(context or {})}, "deadline_missed")
    try:
        await BaseHook.aget_connection(ALERTS_CONN_ID)
    except AirflowNotFoundException:
        _not_configured(payload)
        return False
    try:
        await _notifier(payload).async_notify(dict(context or {}))
    except Exception:
        log.exception("alert could not be sent through Connection %r: %s", ALERTS_CONN_ID, payload["text"])
        return False
    log.info("alert sent through Connection %r: %s", ALERTS_CONN_ID, payload["text"])
    return True
