"""docker-compose.yaml (the scale-out deployment) against what the code needs. Docker cannot run here,
so the file is parsed and checked: services, health checks, volumes, environment and secrets."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from sqlalchemy.engine import make_url

from tongban.registry import load_registry

REPO = Path(__file__).resolve().parent.parent
AIRFLOW = ["airflow-apiserver", "airflow-scheduler", "airflow-dag-processor", "airflow-triggerer", "airflow-worker"]
LONG_RUNNING = ["postgres", "redis", "seaweedfs", *AIRFLOW, "partner-sim", "platform-sim"]
SERVICES = {*LONG_RUNNING, "airflow-init"}
VAR = re.compile(r"^\$\{[A-Z][A-Z0-9_]*\}$")


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return yaml.safe_load((REPO / "docker-compose.yaml").read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def env_example() -> dict[str, str]:
    lines = (REPO / ".env.example").read_text(encoding="utf-8").splitlines()
    return dict(line.split("=", 1) for line in lines if line.strip() and not line.lstrip().startswith("#"))


def env_of(compose: dict[str, Any], service: str) -> dict[str, str]:
    return {k: str(v) for k, v in (compose["services"][service].get("environment") or {}).items()}


def test_services(compose: dict[str, Any]) -> None:
    assert set(compose["services"]) == SERVICES


@pytest.mark.parametrize("service", LONG_RUNNING)
def test_long_running_services_have_health_checks(compose: dict[str, Any], service: str) -> None:
    check = compose["services"][service].get("healthcheck")
    assert check and check.get("test"), f"{service} has no health check"
    assert check.get("interval") and check.get("retries")


def test_init_runs_once_and_the_rest_wait_for_it(compose: dict[str, Any]) -> None:
    services = compose["services"]
    assert "restart" not in services["airflow-init"]
    assert "airflow db migrate" in " ".join(services["airflow-init"]["command"])
    for name in AIRFLOW:
        deps = services[name]["depends_on"]
        assert deps["airflow-init"]["condition"] == "service_completed_successfully", name
        assert deps["postgres"]["condition"] == deps["redis"]["condition"] == "service_healthy", name


@pytest.mark.parametrize("service", [*AIRFLOW, "airflow-init"])
def test_airflow_services_mount_the_project(compose: dict[str, Any], service: str) -> None:
    volumes = compose["services"][service]["volumes"]
    mounts = {v.split(":")[0]: v.split(":")[1] for v in volumes}
    assert mounts["./dags"] == "/opt/airflow/dags"
    assert mounts["./plugins"] == "/opt/airflow/plugins"
    env = env_of(compose, service)
    assert mounts["./expectations"] == env["TONGBAN_EXPECTATIONS_DIR"]
    for source in mounts:
        if source.startswith("./"):
            assert (REPO / source).exists(), source


@pytest.mark.parametrize("service", [*AIRFLOW, "airflow-init"])
def test_airflow_environment(compose: dict[str, Any], service: str) -> None:
    env = env_of(compose, service)
    assert env["AIRFLOW__CORE__EXECUTOR"] == "CeleryExecutor"
    assert env["AIRFLOW__CORE__LOAD_EXAMPLES"].lower() == "false"
    assert env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"].startswith("postgresql+psycopg2://")
    assert env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"].endswith("@postgres/airflow")
    assert env["AIRFLOW__CELERY__BROKER_URL"].startswith("redis://redis:6379/")
    assert env["AIRFLOW__CELERY__RESULT_BACKEND"].startswith("db+postgresql://")
    assert env["AIRFLOW__CORE__EXECUTION_API_SERVER_URL"].startswith("http://airflow-apiserver:8080/")
    platform = json.loads(env["AIRFLOW_CONN_TONGBAN_PLATFORM"])
    assert platform["conn_type"] == "http" and platform["host"].startswith("http://platform-sim:")


def test_workers_share_no_folder_only_object_storage(compose: dict[str, Any]) -> None:
    """Tasks pass files through the bucket and logs go there too: a worker mounts only the project's code."""
    worker = compose["services"]["airflow-worker"]
    assert all(v.split(":")[0].startswith("./") for v in worker["volumes"]), worker["volumes"]
    env = env_of(compose, "airflow-worker")
    assert env["TONGBAN_STORAGE_URL"].startswith("s3://tongban/")
    conn = json.loads(env[f"AIRFLOW_CONN_{env['TONGBAN_STORAGE_CONN_ID'].upper()}"])
    assert conn["conn_type"] == "aws" and conn["extra"]["endpoint_url"] == "http://seaweedfs:8333"
    assert env["AIRFLOW__LOGGING__REMOTE_LOGGING"] == "true"
    assert env["AIRFLOW__LOGGING__REMOTE_BASE_LOG_FOLDER"].startswith("s3://tongban/")
    assert env["AIRFLOW__LOGGING__REMOTE_LOG_CONN_ID"] == env["TONGBAN_STORAGE_CONN_ID"]
    assert compose["services"]["seaweedfs"]["image"].startswith("chrislusf/seaweedfs:")
    assert "-s3.port=8333" in " ".join(compose["services"]["seaweedfs"]["command"])
    init = " ".join(compose["services"]["airflow-init"]["command"])
    assert "python -m tongban.connections -- python -c" in init and 'create_bucket("tongban")' in init


def test_workers_import_the_task_code_before_they_fork_their_pool(compose: dict[str, Any]) -> None:
    """The worker's main process imports the preload list (Celery's ``imports``) before it starts its prefork
    pool, so no task process imports the task code again: the same list as make celery-e2e and the
    LocalExecutor's forkserver (scripts/localenv.py), and a pool that forks (not threads, not green threads)."""
    from scripts.localenv import CELERY_PRELOAD, TASK_PRELOAD

    env = env_of(compose, "airflow-worker")
    assert json.loads(env["AIRFLOW__CELERY__EXTRA_CELERY_CONFIG"]) == json.loads(CELERY_PRELOAD)
    assert json.loads(CELERY_PRELOAD)["imports"] == list(TASK_PRELOAD)
    assert TASK_PRELOAD[-1] == "tongban.preload"  # last: it freezes the GC's view of everything imported before
    assert env.get("AIRFLOW__CELERY__POOL", "prefork") == "prefork"
    assert compose["services"]["airflow-worker"]["command"] == "celery worker"


@pytest.mark.parametrize("service", [*AIRFLOW, "airflow-init"])
def test_the_item_store_is_the_tongban_db_connection(compose: dict[str, Any], service: str) -> None:
    """Every Airflow service names the item store as the `tongban_db` Connection (no TONGBAN_DB_URL, the
    fallback of processes outside Airflow): the postgres service's database `tongban`, its user, and its password
    added at start-up by tongban.connections, so that any character survives; the tasks, the UI and the trace CLI
    resolve it to that database (tongban.store.store_url)."""
    from tongban.connections import with_secrets
    from tongban.store import DB_CONN_VAR, store_url

    env = env_of(compose, service)
    postgres = compose["services"]["postgres"]["environment"]
    assert "TONGBAN_DB_URL" not in env
    conn = json.loads(env[DB_CONN_VAR])
    assert conn["conn_type"] == "postgres" and conn["host"] == "postgres" and "password" not in conn
    assert conn["login"] == postgres["POSTGRES_USER"] and env["TONGBAN_DB_SECRET"] == postgres["POSTGRES_PASSWORD"]
    odd = "p@ss/wo:rd\"'#%密"  # what .env may hold: the password, as PostgreSQL takes it, reaches the URL intact
    url = make_url(store_url(env=with_secrets({**env, "TONGBAN_DB_SECRET": odd})))
    assert (url.drivername, url.username, url.password, url.host, url.port) == (
        "postgresql+psycopg2",
        "airflow",
        odd,
        "postgres",
        5432,
    )
    assert url.database == conn["schema"] == "tongban"


def test_item_store_database_is_created(compose: dict[str, Any]) -> None:
    volumes = compose["services"]["postgres"]["volumes"]
    init = [v.split(":")[0] for v in volumes if "/docker-entrypoint-initdb.d/" in v]
    assert init, "no init script creates the item store's database"
    assert "CREATE DATABASE tongban" in (REPO / init[0]).read_text(encoding="utf-8")


def test_every_partner_has_a_connection_with_a_secret_from_env(
    compose: dict[str, Any], env_example: dict[str, str]
) -> None:
    env = env_of(compose, "airflow-worker")
    for partner in load_registry().partners:
        raw = env.get(f"AIRFLOW_CONN_PARTNER_{partner.division}")
        assert raw, f"no Connection partner_{partner.division}"
        conn = json.loads(raw)
        assert conn["conn_type"] == "http"
        assert conn["host"].endswith(f"/partners/{partner.division}")
        # the secret is never spliced into the JSON: tongban.connections adds it from PARTNER_<division>_SECRET
        assert "password" not in conn and "SECRET" not in raw
        assert f"PARTNER_{partner.division}_SECRET" in env_example, f"{partner.division} missing from .env.example"
    assert (
        "password" not in json.loads(env["AIRFLOW_CONN_TONGBAN_PLATFORM"]) and "TONGBAN_PLATFORM_SECRET" in env_example
    )


@pytest.mark.parametrize("service", AIRFLOW)
def test_airflow_services_start_with_the_connection_secrets_added(compose: dict[str, Any], service: str) -> None:
    entrypoint = compose["services"][service]["entrypoint"]
    assert entrypoint[:4] == ["python", "-m", "tongban.connections", "--"]
    assert entrypoint[4:] == ["/usr/bin/dumb-init", "--", "/entrypoint"]  # the Airflow image's own


@pytest.mark.parametrize("service", ["partner-sim", "platform-sim"])
def test_simulators_take_their_secrets_from_the_env_file(compose: dict[str, Any], service: str) -> None:
    script = " ".join(compose["services"][service]["command"])
    assert "python -m tongban.simulators.credentials /opt/tongban/var/simulators" in script


def _walk(node: Any, path: str = "") -> list[tuple[str, str]]:
    if isinstance(node, dict):
        return [item for k, v in node.items() for item in _walk(v, f"{path}/{k}")]
    if isinstance(node, list):
        return [item for i, v in enumerate(node) for item in _walk(v, f"{path}[{i}]")]
    return [(path, str(node))]


def test_secrets_only_from_the_env_file(compose: dict[str, Any], env_example: dict[str, str]) -> None:
    for service in SERVICES:
        if service in ("postgres", "redis"):
            continue
        assert compose["services"][service]["env_file"] == [".env"]
    assert not (REPO / ".env").exists() or ".env" in (REPO / ".gitignore").read_text(encoding="utf-8")
    secret_key = re.compile(r"PASSWORD|SECRET|FERNET|TOKEN|_KEY$")
    for path, value in _walk(compose):
        key = path.rsplit("/", 1)[-1]
        if secret_key.search(key) and not key.endswith("_FILE"):
            assert VAR.match(value), f"{path} is not a ${{VAR}} from .env: {value!r}"
            assert value[2:-1] in env_example, f"{value} is not in .env.example"
    for path, value in _walk(compose):
        # URLs with credentials: user:${VAR}@host only
        for userinfo in re.findall(r"://[^/@\s]*:([^/@\s]*)@", value):
            assert VAR.match(userinfo), f"{path} has a literal password in a URL"
        for conn in re.findall(r"\{.*\}", value):
            try:
                fields = json.loads(conn)
            except ValueError:
                continue
            if isinstance(fields, dict) and "password" in fields:
                assert VAR.match(fields["password"]), f"{path} has a literal password in a Connection"
    assert "change-me" not in (REPO / "docker-compose.yaml").read_text(encoding="utf-8")
