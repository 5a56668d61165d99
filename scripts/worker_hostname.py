"""``[core] hostname_callable`` for several Celery workers on one machine (``make celery-e2e``).

Airflow records the worker's host name on each task instance (``hostname``); two workers on the same
machine would both report its FQDN. Each worker started by ``scripts.celery_local`` sets
``TONGBAN_WORKER_NAME`` (``w1``, ``w2``), giving ``w1@<fqdn>`` like its Celery host name. Anything
else (scheduler, api-server) falls back to the plain FQDN, as Airflow does by default.
"""

from __future__ import annotations

import os
import socket


def hostname() -> str:
    fqdn = socket.getfqdn()
    name = os.environ.get("TONGBAN_WORKER_NAME")
    return f"{name}@{fqdn}" if name else fqdn
