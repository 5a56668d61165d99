"""`make celery-e2e`: the scale-out topology of docker-compose.yaml, without Docker, on this machine.

Airflow with the CeleryExecutor against the local PostgreSQL (a fresh database for the metadata, one
for the item store) and Redis (db 5 as the broker): a scheduler, a dag-processor, an api-server on a
free loopback port and two Celery workers (``w1@%h``, ``w2@%h``, concurrency 2 each), every one a
subprocess in its own process group, logging to ``$TONGBAN_HOME/celery/``. It starts the simulators,
unpauses and triggers ``cross_province_sync`` through the REST API, waits for the run, checks the
outcome as ``make run`` does (summary, reports, platform contents) and shows from the run's task
instances that both workers ran tasks. Whatever it starts it stops, and it drops its databases.

The workers share this machine's disk: storage is ``file://`` under the run's home, which stands in
for the S3 bucket of a multi-host deployment; task logs go to one shared base log folder, where the
api-server reads them.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections import Counter
from datetime import datetime
from pathlib import Path
from typing import Any

from scripts.localenv import DAG_ID, REPO, airflow, airflow_env, ensure_pools, tongban_home
from scripts.run_local import check_against_platform, newest_summary
from tongban.connections import simulator_connections
from tongban.publish import PlatformClient
from tongban.registry import load_registry
from tongban.report import summary_table
from tongban.simulators.credentials import partner_secrets, platform_credentials
from tongban.simulators.launcher import running_simulators

PG = {
    "host": os.environ.get("TONGBAN_CI_PGHOST", "127.0.0.1"),
    "port": int(os.environ.get("TONGBAN_CI_PGPORT", "5432")),
}
PG_USER = os.environ.get("TONGBAN_CI_PGUSER", "postgres")
METADATA_DB = "tongban_airflow_ci"
STORE_DB = "tongban_store_ci"
REDIS_URL = os.environ.get("TONGBAN_CI_REDIS_URL", "redis://127.0.0.1:6379/5")
WORKERS = ("w1", "w2")
CONCURRENCY = 2
AIRFLOW_EXE = str(Path(sys.executable).with_name("airflow"))
NO_PROXY = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def pg_url(db: str, driver: str = "postgresql+psycopg2") -> str:
    return f"{driver}://{PG_USER}@{PG['host']}:{PG['port']}/{db}"


def recreate_databases(*names: str, drop_only: bool = False) -> None:
    import psycopg2

    conn = psycopg2.connect(dbname="postgres", user=PG_USER, **PG)
    conn.autocommit = True
    try:
        with conn.cursor() as cur:
            for name in names:
                cur.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
                if not drop_only:
                    cur.execute(f'CREATE DATABASE "{name}"')
    finally:
        conn.close()


def flush_broker() -> None:
    import redis

    redis.Redis.from_url(REDIS_URL).flushdb()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Processes:
    """Subprocesses, each in its own process group (session), stopped whole."""

    def __init__(self, log_dir: Path) -> None:
        self.log_dir = log_dir
        self.procs: dict[str, subprocess.Popen[bytes]] = {}

    def start(self, name: str, args: list[str], env: dict[str, str]) -> None:
        log = (self.log_dir / f"{name}.log").open("wb")
        self.procs[name] = subprocess.Popen(
            [AIRFLOW_EXE, *args], env=env, cwd=REPO, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
        log.close()

    def check_alive(self) -> None:
        for name, proc in self.procs.items():
            if proc.poll() is not None:
                tail = (self.log_dir / f"{name}.log").read_text(errors="replace")[-3000:]
                raise RuntimeError(f"{name} exited with {proc.returncode}:\n{tail}")

    def stop_all(self, grace: float = 30) -> None:
        for proc in self.procs.values():
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
        deadline = time.monotonic() + grace
        for proc in self.procs.values():
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
        for proc in self.procs.values():  # whatever is left of each group, stragglers included
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=10)


class Api:
    def __init__(self, base: str) -> None:
        self.base = base
        self.token: str | None = None

    def call(self, method: str, path: str, body: Any = None, expect: tuple[int, ...] = (200,)) -> Any:
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.base + path, data=data, method=method)
        req.add_header("Content-Type", "application/json")
        if self.token:
            req.add_header("Authorization", f"Bearer {self.token}")
        try:
            with NO_PROXY.open(req, timeout=30) as resp:
                status, text = resp.status, resp.read().decode()
        except urllib.error.HTTPError as err:
            status, text = err.code, err.read().decode(errors="replace")
        if status not in expect:
            raise RuntimeError(f"{method} {path}: HTTP {status} {text[:500]}")
        return json.loads(text) if text else None

    def login(self, username: str = "admin", password: str = "admin") -> None:
        self.token = self.call("POST", "/auth/token", {"username": username, "password": password}, (200, 201))[
            "access_token"
        ]


def wait_for(what: str, probe: Any, timeout: float, procs: Processes, every: float = 2) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        procs.check_alive()
        with contextlib.suppress(Exception):
            result = probe()
            if result:
                return result
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(every)


def ts(value: str | None) -> datetime | None:
    return datetime.fromisoformat(value.replace("Z", "+00:00")) if value else None


def task_table(tis: list[dict[str, Any]]) -> tuple[str, Counter[str], dict[str, float]]:
    """Per-task lines (worker, queued→start latency, duration) and per-worker counts."""
    lines = [f"{'task':<44} {'map':>4} {'state':<8} {'worker':<28} {'queued→start':>12} {'duration':>9}"]
    per_worker: Counter[str] = Counter()
    latencies, durations = [], []
    for ti in sorted(tis, key=lambda t: (t.get("start_date") or "", t["task_id"], t.get("map_index", -1))):
        queued, start = ts(ti.get("queued_when")), ts(ti.get("start_date"))
        latency = (start - queued).total_seconds() if queued and start else None
        host = ti.get("hostname") or "-"
        if ti.get("state") == "success" and host != "-":
            per_worker[host] += 1
        if latency is not None:
            latencies.append(latency)
        if ti.get("duration") is not None:
            durations.append(float(ti["duration"]))
        lat = "" if latency is None else f"{latency:.2f}s"
        dur = "" if ti.get("duration") is None else f"{float(ti['duration']):.2f}s"
        lines.append(
            f"{ti['task_id']:<44} {ti.get('map_index', -1):>4} {ti.get('state')!s:<8} {host:<28} {lat:>12} {dur:>9}"
        )

    def median(xs: list[float]) -> float:
        xs = sorted(xs)
        return xs[len(xs) // 2] if xs else float("nan")

    stats = {
        "task_instances": len(tis),
        "median_queued_to_start_s": median(latencies),
        "max_queued_to_start_s": max(latencies, default=float("nan")),
        "median_duration_s": median(durations),
        "total_task_time_s": sum(durations),
    }
    return "\n".join(lines), per_worker, stats


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--timeout", type=float, default=900, help="seconds to wait for the run (default 900)")
    parser.add_argument(
        "--partners",
        default=os.environ.get("CELERY_E2E_PARTNERS", ""),
        help="comma-separated division codes to sync (the DAG's `partners` param; default every partner, "
        "or $CELERY_E2E_PARTNERS)",
    )
    args = parser.parse_args()
    t0 = time.monotonic()

    base = tongban_home() / "celery"
    home = base / "home"  # the run's TONGBAN_HOME: fresh every time, like its databases
    shutil.rmtree(home, ignore_errors=True)
    base.mkdir(parents=True, exist_ok=True)
    for old in base.glob("*.log"):
        old.unlink()
    registry = load_registry()
    divisions = [p.division for p in registry.partners]
    procs = Processes(base)
    timings: dict[str, float] = {}
    try:
        recreate_databases(METADATA_DB, STORE_DB)
        flush_broker()
        with running_simulators(home / "simulators") as urls:
            port = free_port()
            extra = simulator_connections(
                urls.partners,
                urls.platform,
                divisions,
                partner_secrets(home / "simulators", registry),
                platform_credentials(home / "simulators"),
            )
            extra |= {
                "AIRFLOW__CORE__EXECUTOR": "CeleryExecutor",
                "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": pg_url(METADATA_DB),
                "AIRFLOW__CELERY__BROKER_URL": REDIS_URL,
                "AIRFLOW__CELERY__RESULT_BACKEND": pg_url(METADATA_DB, "db+postgresql+psycopg2"),
                "AIRFLOW__CELERY__WORKER_CONCURRENCY": str(CONCURRENCY),
                "AIRFLOW__CORE__HOSTNAME_CALLABLE": "scripts.worker_hostname.hostname",
                "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"http://127.0.0.1:{port}/execution/",
                "AIRFLOW__API__HOST": "127.0.0.1",
                "AIRFLOW__API__PORT": str(port),
                "AIRFLOW__API__WORKERS": "1",
                # one secret for every process: the scheduler signs the tasks' tokens, the api-server checks them
                "AIRFLOW__API_AUTH__JWT_SECRET": secrets.token_hex(32),
                "AIRFLOW__API__SECRET_KEY": secrets.token_hex(32),
                # only the run triggered here: no scheduled run appears on unpause
                "AIRFLOW__SCHEDULER__USE_JOB_SCHEDULE": "False",
                "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "10",
                "TONGBAN_DB_URL": pg_url(STORE_DB),
                "TONGBAN_STORAGE_URL": f"file://{home}",
                "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
                "NO_PROXY": "*",
                "no_proxy": "*",
            }
            env = airflow_env(home, extra)
            print(f"metadata: {pg_url(METADATA_DB)}  item store: {pg_url(STORE_DB)}  broker: {REDIS_URL}")
            print(f"simulators: partners {urls.partners}  platform {urls.platform}")
            print(f"logs: {base}/*.log  task logs: {env['AIRFLOW__LOGGING__BASE_LOG_FOLDER']}", flush=True)

            step = time.monotonic()
            with (base / "db-migrate.log").open("w") as fh:
                if airflow("db", "migrate", env=env, stdout=fh, stderr=fh).returncode != 0:
                    raise RuntimeError(f"airflow db migrate failed, see {base / 'db-migrate.log'}")
            ensure_pools(env, divisions)
            timings["db migrate + pools"] = time.monotonic() - step

            step = time.monotonic()
            procs.start("scheduler", ["scheduler"], env)
            procs.start("dag-processor", ["dag-processor"], env)
            procs.start("api-server", ["api-server", "--host", "127.0.0.1", "--port", str(port)], env)
            for name in WORKERS:
                worker_env = env | {"TONGBAN_WORKER_NAME": name}
                procs.start(
                    f"worker-{name}",
                    [
                        "celery",
                        "worker",
                        "--celery-hostname",
                        f"{name}@%h",
                        "--concurrency",
                        str(CONCURRENCY),
                        "--skip-serve-logs",
                        "--pid",
                        str(base / f"worker-{name}.pid"),
                    ],
                    worker_env,
                )
            api = Api(f"http://127.0.0.1:{port}")
            wait_for("the api-server", lambda: api.call("GET", "/api/v2/version"), 180, procs)
            api.login()
            wait_for(
                "both Celery workers",
                lambda: all(" ready." in (base / f"worker-{n}.log").read_text(errors="replace") for n in WORKERS),
                180,
                procs,
            )
            wait_for(f"{DAG_ID} to be parsed", lambda: api.call("GET", f"/api/v2/dags/{DAG_ID}"), 180, procs)
            timings["start-up (processes, parse)"] = time.monotonic() - step

            step = time.monotonic()
            api.call("PATCH", f"/api/v2/dags/{DAG_ID}", {"is_paused": False})
            conf = {"partners": [d.strip() for d in args.partners.split(",") if d.strip()]} if args.partners else {}
            run = api.call("POST", f"/api/v2/dags/{DAG_ID}/dagRuns", {"logical_date": None, "conf": conf})
            run_id = run["dag_run_id"]
            started = time.time() - 5
            print(
                f"triggered {DAG_ID} run {run_id} through the REST API; waiting (timeout {args.timeout:.0f}s) …",
                flush=True,
            )

            def finished() -> str | None:
                if time.monotonic() - step > 600 and api.token:  # tokens expire: log in again now and then
                    api.login()
                state = api.call("GET", f"/api/v2/dags/{DAG_ID}/dagRuns/{run_id}")["state"]
                return state if state in ("success", "failed") else None

            state = wait_for(f"run {run_id}", finished, args.timeout, procs, every=5)
            timings["the run (trigger → finished)"] = time.monotonic() - step

            tis: list[dict[str, Any]] = []
            while True:  # the API caps a page (maximum_page_limit, 100 by default)
                page = api.call(
                    "GET", f"/api/v2/dags/{DAG_ID}/dagRuns/{run_id}/taskInstances?limit=100&offset={len(tis)}"
                )
                tis += page["task_instances"]
                if not page["task_instances"] or len(tis) >= page["total_entries"]:
                    break
            table, per_worker, stats = task_table(tis)
            summary_path = newest_summary(home / "reports", started)
            summary = json.loads(summary_path.read_text(encoding="utf-8")) if summary_path else None
            problems = (
                check_against_platform(
                    summary,
                    PlatformClient(urls.platform, **platform_credentials(home / "simulators")),
                    home / "reports",
                )
                if summary
                else ["the run wrote no summary"]
            )

        print("\n" + table)
        print("\ntasks per worker (succeeded): " + ", ".join(f"{h}: {n}" for h, n in sorted(per_worker.items())))
        print(
            "task overhead: "
            + ", ".join(f"{k} {v:.2f}" if isinstance(v, float) else f"{k} {v}" for k, v in stats.items())
        )
        if summary:
            print()
            print(summary_table(summary, extra=("platform",)))
            print(f"summary: {summary_path}")
        for problem in problems:
            print(f"MISMATCH {problem}")
        workers_used = {h.split("@", 1)[0] for h in per_worker}
        failures = []
        if state != "success":
            failures.append(f"run {run_id} ended {state}")
        if summary and summary["failed"]:
            failures.append(f"failed partners: {', '.join(summary['failed'])}")
        if problems:
            failures.append("platform check failed")
        if not set(WORKERS) <= workers_used:
            failures.append(f"tasks did not run on both workers: {sorted(per_worker)}")
        (base / "timings.json").write_text(json.dumps({"timings_s": timings, "task_stats": stats}, indent=1))
        for name, seconds in timings.items():
            print(f"time: {name:<30} {seconds:7.1f}s")
        if failures:
            print("FAILED: " + "; ".join(failures) + f"  (logs: {base})")
            return 1
        print(
            f"OK: {DAG_ID} succeeded on the CeleryExecutor, tasks spread over {', '.join(sorted(per_worker))}; "
            "platform matches every report"
        )
        return 0
    finally:
        procs.stop_all()
        with contextlib.suppress(Exception):
            flush_broker()
        try:
            recreate_databases(METADATA_DB, STORE_DB, drop_only=True)
        except Exception as err:
            print(f"warning: could not drop the CI databases: {err}", file=sys.stderr)
        print(f"stopped everything it started; dropped {METADATA_DB}, {STORE_DB}  (total {time.monotonic() - t0:.0f}s)")


if __name__ == "__main__":
    sys.exit(main())
