"""Which item store: tongban.store.store_url, the one precedence the DAG, the UI, the trace CLI and `make run`'s
check share (the `tongban_db` Connection, else TONGBAN_DB_URL, else SQLite under the home)."""

from __future__ import annotations

import json
from pathlib import Path
from urllib.parse import quote

import pytest
from sqlalchemy.engine import make_url

from tongban.store import DB_CONN_ID, DB_CONN_VAR, store_url, url_from_uri

PG = "postgresql+psycopg2://postgres@127.0.0.1:5432/test"
OTHER_PG = "postgresql+psycopg2://postgres@127.0.0.1:5432/other"


def test_the_connection_wins_then_tongban_db_url_then_sqlite_under_the_home(tmp_path: Path) -> None:
    home = {"TONGBAN_HOME": str(tmp_path)}
    conn = {DB_CONN_VAR: "postgresql://postgres@127.0.0.1:5432/test"}
    assert store_url(env=home | conn | {"TONGBAN_DB_URL": OTHER_PG}) == PG
    assert store_url(env=home | {"TONGBAN_DB_URL": OTHER_PG}) == OTHER_PG
    assert store_url(env=home) == f"sqlite:///{tmp_path / 'tongban.db'}"
    assert store_url(env=home | {DB_CONN_VAR: "", "TONGBAN_DB_URL": ""}) == f"sqlite:///{tmp_path / 'tongban.db'}"


def test_inside_airflow_the_connection_is_asked_of_airflow(tmp_path: Path) -> None:
    """With a lookup (the DAG's, the UI's), Airflow answers for the Connection, from whatever secrets backend it
    uses (its environment variables among them): the variable is not read a second time, and a Connection Airflow
    does not know leaves TONGBAN_DB_URL, then the SQLite file."""
    asked: list[str] = []

    def known(conn_id: str) -> str | None:
        asked.append(conn_id)
        return "postgres://postgres@127.0.0.1:5432/test"  # what Connection.get_uri() gives

    env = {"TONGBAN_HOME": str(tmp_path), DB_CONN_VAR: "sqlite:////elsewhere.db", "TONGBAN_DB_URL": OTHER_PG}
    assert store_url(known, env) == PG and asked == [DB_CONN_ID]
    assert store_url(lambda _: None, env) == OTHER_PG
    assert store_url(lambda _: None, {"TONGBAN_HOME": str(tmp_path)}) == f"sqlite:///{tmp_path / 'tongban.db'}"


def test_the_process_environment_is_the_default(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(DB_CONN_VAR, raising=False)
    monkeypatch.delenv("TONGBAN_DB_URL", raising=False)
    monkeypatch.setenv("TONGBAN_HOME", str(tmp_path))
    assert store_url() == f"sqlite:///{tmp_path / 'tongban.db'}"
    monkeypatch.setenv(DB_CONN_VAR, json.dumps({"conn_type": "sqlite", "host": str(tmp_path / "other.db")}))
    assert store_url() == f"sqlite:///{tmp_path / 'other.db'}"


ODD = "p@ss/wo:rd?#%\"'密"
VARIABLES = [
    "postgresql://postgres@127.0.0.1:5432/test",
    "postgres://postgres@127.0.0.1:5432/test?options=-csearch_path%3Dtongban_x",  # tests/test_e2e_recovery.py's
    f"postgresql://airflow:{quote(ODD, safe='')}@postgres/tongban",
    "postgresql+psycopg2://postgres@127.0.0.1/test",
    "sqlite:////var/lib/tongban/tongban.db",
    " sqlite:///relative/tongban.db\n",
    # docker-compose.yaml's form: JSON, the password added by tongban.connections
    json.dumps({"conn_type": "postgres", "host": "postgres", "login": "airflow", "schema": "tongban", "password": ODD}),
    json.dumps({"conn_type": "postgresql", "host": "db", "port": "5433", "login": "u", "schema": "s"}),
    json.dumps({"conn_type": "postgres", "host": "db", "schema": "s", "extra": {"options": "-csearch_path=x"}}),
    json.dumps({"conn_type": "postgres", "host": "db", "extra": '{"sslmode": "require"}'}),
    json.dumps({"conn_type": "sqlite", "host": "/var/lib/tongban/tongban.db"}),
]


@pytest.mark.parametrize("value", VARIABLES)
def test_the_variable_is_read_as_airflow_reads_it(value: str) -> None:
    """Outside Airflow (the trace CLI, `make run`'s check) the variable, in URI or JSON form, names the store a
    task finds through Airflow: Airflow's own parsing of the variable (its environment secrets backend's) and
    Connection.get_uri(), then url_from_uri, as the DAG does."""
    from airflow.sdk import Connection

    parsed = (
        Connection.from_json(value.strip(), conn_id=DB_CONN_ID)
        if value.strip().startswith("{")
        else Connection.from_uri(value.strip(), conn_id=DB_CONN_ID)
    )
    by_airflow = url_from_uri(parsed.get_uri())
    ours = store_url(env={DB_CONN_VAR: value, "TONGBAN_DB_URL": OTHER_PG})
    assert make_url(ours) == make_url(by_airflow)
    assert make_url(ours).drivername in ("postgresql+psycopg2", "sqlite")


def test_what_the_forms_name() -> None:
    compose = json.dumps({"conn_type": "postgres", "host": "postgres", "login": "airflow", "schema": "tongban"})
    url = make_url(store_url(env={DB_CONN_VAR: json.dumps({**json.loads(compose), "password": ODD})}))
    assert (url.drivername, url.username, url.password, url.host, url.database) == (
        "postgresql+psycopg2",
        "airflow",
        ODD,
        "postgres",
        "tongban",
    )
    sqlite = "/var/lib/tongban/tongban.db"
    for value in (f"sqlite:///{sqlite}", json.dumps({"conn_type": "sqlite", "host": sqlite})):
        assert store_url(env={DB_CONN_VAR: value}) == f"sqlite:///{sqlite}"  # the file, not an in-memory database
    options = "postgresql://postgres@127.0.0.1:5432/test?options=-csearch_path%3Dtongban_x"
    assert make_url(store_url(env={DB_CONN_VAR: options})).query == {"options": "-csearch_path=tongban_x"}


def test_the_embedded_deployment_names_the_variable_the_store_reads() -> None:
    from scripts.localenv import STORE_CONN

    assert STORE_CONN == DB_CONN_VAR
