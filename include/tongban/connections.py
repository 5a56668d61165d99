"""Endpoints and secrets come from Airflow Connections; this module only interprets their fields.

A partner's Connection is ``partner_<division>``, the platform's ``tongban_platform``. Either may give
the whole base URL in ``host`` (``http://127.0.0.1:8801/partners/440100``) or, as Airflow's HTTP
hook reads it, a protocol in ``schema`` with ``host`` and ``port``. A partner's secret (API key,
bearer token or HMAC key, as its wire format's ``auth`` says) is the Connection's ``password``.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping

PLATFORM_CONN_ID = "tongban_platform"


def base_url(host: str | None, port: int | None = None, schema: str | None = None) -> str:
    if not host:
        raise ValueError("connection has no host")
    if "://" in host:
        return host.rstrip("/")
    return f"{schema or 'http'}://{host}{f':{port}' if port else ''}"


def conn_env_var(conn_id: str) -> str:
    return f"AIRFLOW_CONN_{conn_id.upper()}"


def simulator_connections(
    partners_url: str,
    platform_url: str,
    divisions: Iterable[str],
    secrets: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """``AIRFLOW_CONN_*`` variables pointing every partner and the platform at the local simulators.

    ``secrets`` (division -> API key, token or HMAC key; the simulator's ``partner_secrets``) go into
    each partner Connection's ``password``, where the pipeline reads them.
    """
    env = {conn_env_var(PLATFORM_CONN_ID): json.dumps({"conn_type": "http", "host": platform_url})}
    for division in divisions:
        url = f"{partners_url.rstrip('/')}/partners/{division}"
        conn: dict[str, str] = {"conn_type": "http", "host": url}
        if secrets and secrets.get(division):
            conn["password"] = secrets[division]
        env[conn_env_var(f"partner_{division}")] = json.dumps(conn)
    return env
