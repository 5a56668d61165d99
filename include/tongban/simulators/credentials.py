"""Each simulated partner's secret (API key, bearer token or HMAC key), kept in the state folder.

``partner_secrets(state_dir, registry)`` reads ``state_dir/partner_secrets.json``; a partner missing
from it gets a secret derived from the registry seed and its division code, and the file is
(re)written. The simulator checks requests against these; ``make run`` and the tests put the same
values into the partners' Airflow Connections (``password``). The pipeline only ever sees the
Connection.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
from pathlib import Path

from tongban.registry import Registry

SECRETS_FILE = "partner_secrets.json"


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
        tmp = path.with_name(path.name + f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps({**stored, **wanted}, indent=1, sort_keys=True), encoding="utf-8")
        os.chmod(tmp, 0o600)
        os.replace(tmp, path)
    return wanted
