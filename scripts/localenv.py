"""The environment of the embedded, single-machine deployment: Airflow on SQLite under $TONGBAN_HOME.

Used by `make run`, `make ui` and the tests, so all three run Airflow the same way.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
DAG_ID = "cross_province_sync"
STORE_CONN = "AIRFLOW_CONN_TONGBAN_DB"  # the item store's Connection (tongban.store.DB_CONN_ID) as a variable
# What a worker imports once, before it forks a process for each task, so that no task process imports it again
# (docs/scaling.md): Airflow's side of running a task (the task runner, what parsing the DAG file takes) and
# tongban's (tongban/preload.py, last: it freezes the GC's view of all of them). The one list, used twice:
TASK_PRELOAD = (
    "airflow.sdk.execution_time.task_runner",
    "airflow.sdk",
    "airflow.dag_processing.dagbag",
    "airflow.providers.standard.decorators.python",
    "airflow.serialization.serialized_objects",
    "tongban.preload",
)
# - the LocalExecutor: the scheduler's forkserver imports the executor (Airflow's own example value) and the list
#   before it starts the executor's workers, which fork the task processes;
FORKSERVER_PRELOAD = ",".join(["airflow.executors.local_executor", *TASK_PRELOAD])
# - Celery: the worker's main process imports the list (Celery's ``imports``, "modules to import when the worker
#   starts", through the provider's ``[celery] extra_celery_config``) before it forks its prefork pool, whose
#   processes fork the task processes. docker-compose.yaml spells the same value (tests/test_compose.py).
CELERY_PRELOAD = json.dumps({"imports": list(TASK_PRELOAD)})


def tongban_home() -> Path:
    return Path(os.environ.get("TONGBAN_HOME", REPO / "var")).resolve()


def airflow_env(home: Path | None = None, extra: dict[str, str] | None = None) -> dict[str, str]:
    """os.environ plus what the embedded deployment needs (existing values are kept)."""
    home = home or tongban_home()
    airflow_home = home / "airflow"
    defaults = {
        "TONGBAN_HOME": str(home),
        "TONGBAN_EXPECTATIONS_DIR": str(REPO / "expectations"),
        "AIRFLOW_HOME": str(airflow_home),
        "AIRFLOW__CORE__DAGS_FOLDER": str(REPO / "dags"),
        "AIRFLOW__CORE__PLUGINS_FOLDER": str(REPO / "plugins"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__DEFAULT_TIMEZONE": "Asia/Shanghai",
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{airflow_home / 'airflow.db'}",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": "admin:admin",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(airflow_home / "passwords.json"),
        "AIRFLOW__LOGGING__BASE_LOG_FOLDER": str(airflow_home / "logs"),
        "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "30",
        "AIRFLOW__API__HOST": "127.0.0.1",
        # The LocalExecutor's workers start from a forkserver that has imported the task code (tongban.preload),
        # and a Celery worker imports it before it starts its pool: each task process, forked from a process that
        # has it, imports none of it again (docs/scaling.md).
        "AIRFLOW__SCHEDULER__MP_START_METHOD": "forkserver",
        "AIRFLOW__SCHEDULER__MP_FORKSERVER_PRELOAD": FORKSERVER_PRELOAD,
        "AIRFLOW__CELERY__EXTRA_CELERY_CONFIG": CELERY_PRELOAD,
        "NO_PROXY": "*",
    }
    # Everything that lives under the home follows the home asked for, whatever the caller's environment says.
    under_home = {
        "TONGBAN_HOME",
        "AIRFLOW_HOME",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE",
        "AIRFLOW__LOGGING__BASE_LOG_FOLDER",
    }
    if "sqlite" in os.environ.get("AIRFLOW__DATABASE__SQL_ALCHEMY_CONN", "sqlite"):
        under_home.add("AIRFLOW__DATABASE__SQL_ALCHEMY_CONN")
    env = dict(os.environ)
    for key, value in defaults.items():
        if key in under_home:
            env[key] = value
        else:
            env.setdefault(key, value)
    # No 06:00 deadline alert in this deployment, whatever the caller's environment says: `make run`'s `airflow
    # dags test` cannot run the DAG with it (dags_test_command), and a DAG with it serialises differently, so
    # `make ui` (the same metadata database) would add a DAG version at every switch between the two.
    env["TONGBAN_DEADLINE_ALERT"] = "off"
    env.update(extra or {})
    # The item store as a deployment names it, the `tongban_db` Connection (here the SQLite file under the home,
    # which it follows like the rest), unless another store is given (TONGBAN_DB_URL or a Connection of another
    # database). Without it every task asks Airflow's API for a Connection that is not there before it falls
    # back to the same file: a round trip per task instance.
    store_conn = env.get(STORE_CONN, "")
    if not env.get("TONGBAN_DB_URL") and (not store_conn or store_conn.startswith("sqlite:")):
        env[STORE_CONN] = f"sqlite:///{home / 'tongban.db'}"
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"  # standalone runs `airflow …`
    airflow_home.mkdir(parents=True, exist_ok=True)
    passwords = Path(env["AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE"])
    if not passwords.exists():  # a known login for the local UI; Airflow generates one otherwise
        passwords.write_text('{"admin": "admin"}', encoding="utf-8")
    return env


def local_parallelism(pool_slots: int, cpus: int | None = None) -> int:
    """Task processes at once for the LocalExecutor of `make ui`, Airflow's ``[core] parallelism`` (default 32),
    which is also how many worker processes the executor keeps once it has started them: one CPU-bound task per
    core (normalise, validate, reconcile) plus the ``partner_api`` pool's slots, the pulls that wait on partners."""
    return (cpus or len(os.sched_getaffinity(0))) + pool_slots


def ui_env(env: dict[str, str], pool_slots: int) -> dict[str, str]:
    """The environment of `make ui`'s `airflow standalone`: ``env`` with the LocalExecutor sized for this machine
    (:func:`local_parallelism`), unless ``env`` sets ``AIRFLOW__CORE__PARALLELISM`` itself. On another port than
    8080 (``AIRFLOW__API__PORT``), the tasks reach the execution API there too: Airflow's default for them is
    ``http://localhost:8080/execution/`` whatever the port, and every task then fails to start."""
    defaults = {"AIRFLOW__CORE__PARALLELISM": str(local_parallelism(pool_slots))}
    if port := env.get("AIRFLOW__API__PORT"):
        defaults["AIRFLOW__CORE__EXECUTION_API_SERVER_URL"] = f"http://localhost:{port}/execution/"
    return defaults | env


def airflow_command(*args: str) -> list[str]:
    """The command line of the `airflow` CLI of this virtualenv."""
    return [str(Path(sys.executable).with_name("airflow")), *args]


def airflow(*args: str, env: dict[str, str] | None = None, **kwargs: object) -> subprocess.CompletedProcess[str]:
    """Run the `airflow` CLI of this virtualenv with the embedded deployment's environment."""
    return subprocess.run(airflow_command(*args), env=env or airflow_env(), text=True, check=False, **kwargs)  # type: ignore[call-overload]


def dags_test_command(
    env: dict[str, str], conf: dict[str, object] | None = None, *extra: str
) -> tuple[list[str], dict[str, str]]:
    """Command line and environment of one run of the sync with `airflow dags test` (in-process, no
    scheduler). The 06:00 deadline alert is left out there (see the DAG file): Airflow 3.3.2's test mode
    cannot finish a run that has one. ``extra``: more arguments (a logical date, --mark-success-pattern)."""
    args = airflow_command("dags", "test", DAG_ID, *extra, *(["-c", json.dumps(conf)] if conf else []))
    return args, {**env, "TONGBAN_DEADLINE_ALERT": "off"}


def dags_test(
    env: dict[str, str], conf: dict[str, object] | None = None, **kwargs: object
) -> subprocess.CompletedProcess[str]:
    """One run of the sync with `airflow dags test` (see :func:`dags_test_command`)."""
    args, run_env = dags_test_command(env, conf)
    return subprocess.run(args, env=run_env, text=True, check=False, **kwargs)  # type: ignore[call-overload]


def ensure_pools(env: dict[str, str] | None = None, divisions: list[str] | None = None) -> int:
    """Create or resize the ``partner_api`` pool the fetch tasks run in (idempotent); returns its slots.

    ``airflow dags test`` runs tasks one by one and ignores pools; the scheduler (``make ui``, a real
    deployment) does not schedule a task whose pool is missing.
    """
    from tongban.pools import DESCRIPTION, PARTNER_API_POOL, SLOTS_PER_PROVINCE, partner_api_slots

    if divisions is None:
        from tongban.registry import load_registry

        divisions = [p.division for p in load_registry().partners]
    slots = partner_api_slots(divisions)
    text = DESCRIPTION.format(per=SLOTS_PER_PROVINCE, provinces=len({d[:2] for d in divisions}))
    done = airflow("pools", "set", PARTNER_API_POOL, str(slots), text, env=env, capture_output=True)
    if done.returncode != 0:
        raise RuntimeError(f"could not create pool {PARTNER_API_POOL}: {done.stderr[-2000:]}")
    return slots


if __name__ == "__main__":  # `python -m scripts.localenv db migrate` == airflow with this environment
    sys.exit(airflow(*sys.argv[1:]).returncode)
