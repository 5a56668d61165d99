"""The simulators' secrets, kept in their state folder: each partner's and the platform's.

``partner_secrets(state_dir, registry)`` reads ``state_dir/partner_secrets.json``; a partner missing
from it gets a secret derived from the registry seed and its division code, and the file is
(re)written. The simulator checks requests against these; ``make run`` and the tests put the same
values into the partners' Airflow Connections (``password``). The pipeline only ever sees the
Connection. ``platform_credentials(state_dir)`` likewise: the platform's secret and signature
algorithm (``state_dir/platform_secret.json``, a random secret made on first use).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import secrets
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from starlette.requests import Request

from tongban.auth import Verifier
from tongban.connections import PLATFORM_SIGNATURE
from tongban.registry import Auth, Registry

SECRETS_FILE = "partner_secrets.json"
PLATFORM_SECRET_FILE = "platform_secret.json"


def derived_secret(seed: int, division: str) -> str:
    return hmac.new(str(seed).encode(), f"tongban-simulator|{division}".encode(), hashlib.sha256).hexdigest()[:40]


def partner_secrets(state_dir: Path, registry: Registry) -> dict[str, str]:
    path = Path(state_dir) / SECRETS_FILE
    stored: dict[str, str] = {}
    if path.exists():
        stored = {str(k): str(v) for k, v in json.loads(path.read_text(encoding="utf-8")).items()}
    wanted = {
        p.division: stored.get(p.division) or derived_secret(registry.seed, p.division) for p in registry.partners
    }
    if {**stored, **wanted} != stored:
        path.parent.mkdir(parents=True, exist_ok=True)
        _write_private(path, {**stored, **wanted})
    return wanted


def platform_credentials(state_dir: Path, algorithm: str | None = None) -> dict[str, str]:
    """``{"secret": ..., "algorithm": ...}`` of the platform simulator; ``algorithm`` (HMAC-SHA256 or
    HMAC-SM3) replaces the stored one (default: the platform's, ``tongban.connections.PLATFORM_SIGNATURE``)."""
    path = Path(state_dir) / PLATFORM_SECRET_FILE
    stored = json.loads(path.read_text(encoding="utf-8")) if path.exists() else {}
    wanted = {
        "secret": stored.get("secret") or secrets.token_urlsafe(30),
        "algorithm": algorithm or stored.get("algorithm") or PLATFORM_SIGNATURE,
    }
    if wanted != stored:
        _write_private(path, wanted)
    return wanted


def _write_private(path: Path, data: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + f".{os.getpid()}.tmp")
    tmp.write_text(json.dumps(data, indent=1, sort_keys=True), encoding="utf-8")
    os.chmod(tmp, 0o600)
    os.replace(tmp, path)


def check_signed(
    verifier: Verifier, scope: str, auth: Auth, secret: str, algorithm: str, request: Request, body: bytes
) -> None:
    """:meth:`tongban.auth.Verifier.check` of one received request; raises ``Refused``."""
    url = request.url
    verifier.check(scope, auth, secret, algorithm, request.method, url.path, url.query, body, request.headers)


async def raw_body(request: Request) -> bytes:
    """FastAPI dependency: the request's body as sent (what its signature covers)."""
    return bytes(await request.body())


def secrets_from_env(state_dir: Path, environ: Mapping[str, str]) -> None:
    """Write the simulators' secrets files from ``PARTNER_<division>_SECRET`` and ``TONGBAN_PLATFORM_SECRET``
    (the deployment's .env), so the simulators check requests against what the Connections carry."""
    partners = {
        k.removeprefix("PARTNER_").removesuffix("_SECRET"): v
        for k, v in environ.items()
        if k.startswith("PARTNER_") and k.endswith("_SECRET") and v
    }
    _write_private(Path(state_dir) / SECRETS_FILE, partners)
    if environ.get("TONGBAN_PLATFORM_SECRET"):
        algorithm = environ.get("TONGBAN_PLATFORM_SIGNATURE") or PLATFORM_SIGNATURE
        _write_private(
            Path(state_dir) / PLATFORM_SECRET_FILE,
            {"secret": environ["TONGBAN_PLATFORM_SECRET"], "algorithm": algorithm},
        )


if __name__ == "__main__":
    import sys

    secrets_from_env(Path(sys.argv[1]), os.environ)
