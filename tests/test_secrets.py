"""Secrets: any character survives from .env into a Connection and the simulators' files; `make env` writes
a Fernet key and random secrets; the partner and platform Connections sign with what they carry."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest
from airflow.sdk.definitions.connection import Connection
from cryptography.fernet import Fernet

from scripts.make_env import PLACEHOLDER, main, render
from tongban.connections import with_secrets
from tongban.simulators.credentials import PLATFORM_SECRET_FILE, SECRETS_FILE, secrets_from_env

REPO = Path(__file__).resolve().parent.parent
NASTY = "q\"uo\\te '$HOME' ${X} #not-a-comment ; = & 密钥\tend"


def test_any_character_of_a_secret_reaches_the_connection_unchanged() -> None:
    environ = {
        "AIRFLOW_CONN_PARTNER_440100": '{"conn_type": "http", "host": "http://partner-sim:8801/partners/440100"}',
        "PARTNER_440100_SECRET": NASTY,
        "AIRFLOW_CONN_TONGBAN_PLATFORM": json.dumps(
            {"conn_type": "http", "host": "http://p", "extra": {"signature_algorithm": "HMAC-SM3"}}
        ),
        "TONGBAN_PLATFORM_SECRET": NASTY[::-1],
        "AIRFLOW_CONN_OTHER": '{"conn_type": "http", "host": "h"}',
    }
    env = with_secrets(environ)
    partner = Connection.from_json(env["AIRFLOW_CONN_PARTNER_440100"], conn_id="partner_440100")
    assert partner.password == NASTY and partner.host.endswith("/partners/440100")
    platform = Connection.from_json(env["AIRFLOW_CONN_TONGBAN_PLATFORM"], conn_id="tongban_platform")
    assert platform.password == NASTY[::-1] and platform.extra_dejson == {"signature_algorithm": "HMAC-SM3"}
    assert env["AIRFLOW_CONN_OTHER"] == environ["AIRFLOW_CONN_OTHER"]  # no secret given: untouched
    with pytest.raises(ValueError, match="must be a JSON Connection"):
        with_secrets({"AIRFLOW_CONN_X": "http://h", "X_SECRET": "s"})


def test_the_simulators_secrets_files_are_written_from_the_environment(tmp_path: Path) -> None:
    secrets_from_env(
        tmp_path,
        {"PARTNER_440100_SECRET": NASTY, "PARTNER_440300_SECRET": "", "TONGBAN_PLATFORM_SECRET": "p" + NASTY},
    )
    assert json.loads((tmp_path / SECRETS_FILE).read_text(encoding="utf-8")) == {"440100": NASTY}
    platform = json.loads((tmp_path / PLATFORM_SECRET_FILE).read_text(encoding="utf-8"))
    assert platform == {"secret": "p" + NASTY, "algorithm": "HMAC-SM3"}
    for name in (SECRETS_FILE, PLATFORM_SECRET_FILE):
        assert stat.S_IMODE((tmp_path / name).stat().st_mode) == 0o600


def test_make_env_generates_a_fernet_key_and_random_secrets(tmp_path: Path) -> None:
    example = (REPO / ".env.example").read_text(encoding="utf-8")
    assert "AIRFLOW_FERNET_KEY=\n" in example  # left blank: generated
    out = tmp_path / ".env"
    assert main(["--out", str(out)]) == 0
    values = dict(line.split("=", 1) for line in out.read_text().splitlines() if "=" in line and line[0] != "#")
    Fernet(values["AIRFLOW_FERNET_KEY"].encode())  # a valid key
    assert PLACEHOLDER not in values.values() and stat.S_IMODE(out.stat().st_mode) == 0o600
    assert len({v for k, v in values.items() if k.endswith(("_SECRET", "PASSWORD", "SECRET_KEY"))}) == len(
        [k for k in values if k.endswith(("_SECRET", "PASSWORD", "SECRET_KEY"))]
    )  # each secret its own
    assert main(["--out", str(out)]) == 1  # never overwritten
    assert render(example, 1234) != render(example, 1234)  # new secrets every time
