"""Endpoints and secrets come from Airflow Connections; this module only interprets their fields.

A partner's Connection is ``partner_<division>``, the platform's ``tongban_platform``. Either may give
the whole base URL in ``host`` (``http://127.0.0.1:8801/partners/440100``) or, as Airflow's HTTP
hook reads it, a protocol in ``schema`` with ``host`` and ``port``. Each Connection's ``password`` is
the secret every request to that endpoint is signed with (tongban.auth; a partner's API key or bearer
token too, where its wire format wants one). A partner's signature algorithm is its registry
``signature``; the platform's is the ``signature_algorithm`` of its Connection's extra (default
:data:`PLATFORM_SIGNATURE`).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from typing import Any

from tongban.registry import Auth, SignatureAlgorithm
from tongban.simulators.launcher import SimulatorURLs, partner_base_url

PLATFORM_CONN_ID = "tongban_platform"
SEQUENCE_HEADER = "X-Publish-Sequence"  # a batch's publish sequence, the platform's fencing token (publish.py)
# the default signature headers, no key header; the fencing token is signed with the request
PLATFORM_AUTH = Auth(scheme="signature", signed_headers=(SEQUENCE_HEADER,))
PLATFORM_SIGNATURE: SignatureAlgorithm = "HMAC-SM3"  # the provincial platform asks for 国密 by default
SIGNATURE_EXTRA = "signature_algorithm"


def platform_signature(extra: Mapping[str, Any] | None) -> str:
    """The platform's signature algorithm from its Connection's extra."""
    return str((extra or {}).get(SIGNATURE_EXTRA) or PLATFORM_SIGNATURE).upper()


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
    platform: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """``AIRFLOW_CONN_*`` variables pointing every partner and the platform at the local simulators.

    ``secrets`` (division -> secret; the simulator's ``partner_secrets``) go into each partner
    Connection's ``password``, where the pipeline reads them; ``platform`` (the simulator's
    ``platform_credentials``: secret and algorithm) into the platform Connection's password and extra.
    The values are JSON-encoded, so any character of a secret survives.
    """
    platform_conn: dict[str, Any] = {"conn_type": "http", "host": platform_url}
    if platform:
        platform_conn |= {"password": platform["secret"], "extra": {SIGNATURE_EXTRA: platform["algorithm"]}}
    env = {conn_env_var(PLATFORM_CONN_ID): json.dumps(platform_conn)}
    urls = SimulatorURLs(partners=partners_url, platform=platform_url)
    for division in divisions:
        conn: dict[str, str] = {"conn_type": "http", "host": partner_base_url(urls, division)}
        if secrets and secrets.get(division):
            conn["password"] = secrets[division]
        env[conn_env_var(f"partner_{division}")] = json.dumps(conn)
    return env


SECRET_SUFFIX = "_SECRET"


def with_secrets(environ: Mapping[str, str]) -> dict[str, str]:
    """``environ`` with each JSON ``AIRFLOW_CONN_<ID>`` given the password in ``<ID>_SECRET``, if set.

    The deployment (docker-compose.yaml) keeps secrets out of the Connection templates: a secret spliced
    into a JSON string breaks on a ``"`` or ``\\``; put in here by ``json.dumps``, any character survives.
    """
    env = dict(environ)
    for name, value in environ.items():
        if not name.startswith("AIRFLOW_CONN_"):
            continue
        secret = environ.get(name.removeprefix("AIRFLOW_CONN_") + SECRET_SUFFIX)
        if not secret:
            continue
        try:
            conn = json.loads(value)
        except ValueError:
            raise ValueError(f"{name} must be a JSON Connection to take its secret from the environment") from None
        env[name] = json.dumps({**conn, "password": secret})
    return env


def main(argv: list[str]) -> None:
    """``python -m tongban.connections -- <command …>``: run the command with :func:`with_secrets` applied."""
    import os

    command = argv[1:] if argv[:1] == ["--"] else argv
    if not command:
        raise SystemExit("usage: python -m tongban.connections -- <command> [args…]")
    os.execvpe(command[0], command, with_secrets(os.environ))


if __name__ == "__main__":
    import sys

    main(sys.argv[1:])
