"""`make celery-e2e`: the scale-out topology, without Docker, with each Celery worker as a host of its own.

Airflow with the CeleryExecutor against the local PostgreSQL (a fresh database for the metadata, one for
the item store) and Redis (db 5 as the broker): a scheduler, a dag-processor and an api-server on this
machine, and two Celery workers (``w1``, ``w2``, concurrency 2 each), every one a subprocess in its own
process group, logging to ``$TONGBAN_HOME/celery/``.

Each worker is a host of its own (``scripts.netns``; root, as CI runs): its own network namespace, joined to
this machine by a veth pair on a private bridge (``10.213.0.0/24``), and its own empty folders (home,
``AIRFLOW_HOME``, task logs, temp). It reaches the rest only over that link at ``10.213.0.1``: SeaweedFS (the
S3 storage, ``scripts.seaweedfs``), the simulators and the api-server (the Execution API) listen there;
PostgreSQL and Redis, which listen on the machine's loopback only, are relayed there by a small TCP forwarder.
No folder is shared: every file that passes between tasks goes through the S3 bucket, and the script checks
afterwards that none was written to a local folder. ``--same-host`` keeps the workers in this machine's
network (loopback; no root needed), with everything else the same.

It triggers ``cross_province_sync`` through the REST API and, unless ``--no-kill``, kills a worker with SIGKILL
(its whole process group, as a host that is lost) while it runs a ``publish`` between the platform's apply of a
batch and its acknowledgement: the platform simulator hangs after applying each batch until the kill, so the
moment is certain, whichever worker it falls to. The scheduler finds its tasks' heartbeats gone and Airflow's
retries run them on the other worker, which must replay that batch, not apply it twice. The run must still
succeed with the outcome unchanged: every partner's platform list exactly what its report says, the publish
ledger complete (no batch left pending) and its accepted operations exactly the report's, the item store's
current items exactly the platform's, and the report served by the UI plugin from the bucket. A task log of
each worker, read from the bucket, must say that the task's process found the task code imported: the workers
import it before they fork their pools (``scripts.localenv.TASK_PRELOAD``; ``--no-preload`` leaves it out and
expects the opposite). Whatever it starts it stops, and it drops its databases and deletes its namespaces.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

from upath import UPath

from scripts.localenv import DAG_ID, REPO, STORE_CONN, airflow, airflow_env, ensure_pools, tongban_home
from scripts.netns import Topology, forward_command, worker_hosts
from scripts.run_local import check_against_platform, check_outbound, newest_summary
from scripts.seaweedfs import S3_CONN_ID, free_ports, running_seaweedfs
from tongban.connections import simulator_connections
from tongban.files import SummaryFile
from tongban.layout import REPORT_JSON, REPORTS
from tongban.publish import PlatformClient
from tongban.registry import load_registry
from tongban.report import summary_table
from tongban.simulators.credentials import partner_secrets, platform_credentials
from tongban.simulators.launcher import running_simulators
from tongban.storage import read_json
from tongban.store import store_url

PG = {
    "host": os.environ.get("TONGBAN_CI_PGHOST", "127.0.0.1"),
    "port": int(os.environ.get("TONGBAN_CI_PGPORT", "5432")),
}
PG_USER = os.environ.get("TONGBAN_CI_PGUSER", "postgres")
METADATA_DB = "tongban_airflow_ci"
STORE_DB = "tongban_store_ci"
REDIS_URL = os.environ.get("TONGBAN_CI_REDIS_URL", "redis://127.0.0.1:6379/5")
WORKERS = ("w1", "w2")
# the platform hangs after applying each batch (up to this many) until the kill, at most this long
HANG_BATCHES, HANG_SECONDS = 10_000, 300
UNFINISHED = (None, "scheduled", "queued", "running", "up_for_retry", "restarting", "deferred", "up_for_reschedule")
HEARTBEAT_TIMEOUT = 45  # seconds without a task heartbeat before the scheduler fails the task (then retries it)
URL_PREFIX = "/tongban"  # the UI plugin's (tongban_ui.settings.URL_PREFIX; plugins/ is not importable here)
CONCURRENCY = 2
LOGS_PREFIX = "airflow-logs"  # task logs in the bucket, beside the run files (remote_logging_env)
AIRFLOW_EXE = str(Path(sys.executable).with_name("airflow"))
NO_PROXY = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def pg_url(db: str, driver: str = "postgresql+psycopg2", host: str | None = None) -> str:
    return f"{driver}://{PG_USER}@{host or PG['host']}:{PG['port']}/{db}"


def store_connection(host: str | None = None) -> dict[str, str]:
    """The item store as docker-compose.yaml names it, so that the e2e runs that form: the `tongban_db` Connection
    in JSON, here STORE_DB of the PostgreSQL at ``host`` (the tasks', the UI's and the checks' store alike)."""
    conn = {"conn_type": "postgres", "host": host or PG["host"], "port": PG["port"], "login": PG_USER}
    return {STORE_CONN: json.dumps({**conn, "schema": STORE_DB})}


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


class Processes:
    """Subprocesses, each in its own process group (session), stopped whole."""

    def __init__(self, log_dir: Path) -> None:
        self.log_dir = log_dir
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.killed: list[str] = []

    def start(self, name: str, argv: list[str], env: dict[str, str]) -> None:
        log = (self.log_dir / f"{name}.log").open("wb")
        self.procs[name] = subprocess.Popen(
            argv, env=env, cwd=REPO, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
        log.close()

    def kill(self, name: str) -> None:
        """SIGKILL to the whole process group, as a host that is lost: no shutdown, no task gets to finish."""
        proc = self.procs.pop(name)
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
        self.killed.append(name)

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


def session_cpu(sessions: set[int]) -> float:
    """CPU seconds so far of every process in ``sessions`` (each a process started by :class:`Processes`, with the
    processes it forked, and the CPU of those it has reaped), from /proc."""
    total = 0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError):
            fields = stat.read_text().rsplit(")", 1)[1].split()
            if int(fields[3]) in sessions:  # session; then utime, stime, cutime, cstime (fields 14-17)
                total += sum(int(f) for f in fields[11:15])
    return total / os.sysconf("SC_CLK_TCK")


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

    def text(self, path: str) -> tuple[int, str]:
        req = urllib.request.Request(self.base + path, headers={"Authorization": f"Bearer {self.token}"})
        try:
            with NO_PROXY.open(req, timeout=30) as resp:
                return resp.status, resp.read().decode()
        except urllib.error.HTTPError as err:
            return err.code, err.read().decode(errors="replace")

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


def task_instances(api: Api, run_id: str) -> list[dict[str, Any]]:
    tis: list[dict[str, Any]] = []
    while True:  # the API caps a page (maximum_page_limit, 100 by default)
        page = api.call("GET", f"/api/v2/dags/{DAG_ID}/dagRuns/{run_id}/taskInstances?limit=100&offset={len(tis)}")
        tis += page["task_instances"]
        if not page["task_instances"] or len(tis) >= page["total_entries"]:
            return tis


PUBLISH_TASK = "partner_publish.publish"


def worker_of(ti: dict[str, Any]) -> str:
    return (ti.get("hostname") or "").split("@", 1)[0]


def to_kill(tis: list[dict[str, Any]], pushing: Callable[[int], bool]) -> tuple[str, list[dict[str, Any]]] | None:
    """The worker to kill and the task instances it runs then, or None yet. The platform hangs after applying
    every batch until the kill (``hang_after_apply``), so a ``publish`` that has sent a batch (``pushing(map_index)``:
    the ledger marked one ``sent``) stays running, between the platform's apply and its acknowledgement, until its
    worker is killed: the retry elsewhere must replay that batch, not apply it twice. Whichever worker runs it is
    the one killed; no task can finish in the meantime and leave the kill with nothing to recover."""
    for ti in tis:
        if ti["task_id"] == PUBLISH_TASK and ti["state"] == "running" and worker_of(ti) and pushing(ti["map_index"]):
            victim = worker_of(ti)
            return victim, [t for t in tis if t["state"] == "running" and worker_of(t) == victim]
    return None


RECOVERED = "recovered"  # a later try succeeded on another worker
DONE_BEFORE_KILL = "done before the kill"  # the try seen running had succeeded on the victim before its kill
LOST = "lost"


def kill_outcomes(
    victim: str, killed: list[dict[str, Any]], tis: list[dict[str, Any]], killed_at: datetime
) -> list[tuple[dict[str, Any], str]]:
    """Each task instance that worker ``victim`` ran when it was killed (``killed``, as seen then), as it ended
    (from ``tis``), and how. The kill follows the look at the task instances by a moment, so a short task seen
    running may have succeeded on ``victim`` first: the same try, succeeded there by ``killed_at``; anything else
    not succeeded on another worker is lost."""
    by_key = {(t["task_id"], t.get("map_index", -1)): t for t in tis}
    outcomes = []
    for ti in killed:
        after = by_key[(ti["task_id"], ti.get("map_index", -1))]
        ended = ts(after.get("end_date"))
        if after["state"] != "success":
            outcome = LOST
        elif worker_of(after) != victim:
            outcome = RECOVERED
        elif after.get("try_number") == ti.get("try_number") and ended is not None and ended <= killed_at:
            outcome = DONE_BEFORE_KILL
        else:
            outcome = LOST
        outcomes.append((after, outcome))
    return outcomes


def plan_of(api: Api, run_path: str) -> list[str]:
    """The divisions ``plan`` returned (empty until it has): the publishing group's map indexes follow them."""
    try:
        value = api.call("GET", f"{run_path}/taskInstances/plan/xcomEntries/return_value")["value"]
    except RuntimeError:  # 404 until plan is done
        return []
    value = json.loads(value) if isinstance(value, str) else value
    return [str(d) for d in value] if isinstance(value, list) else []


def pushed(store: Any, run_id: str, planned: list[str], map_index: int) -> bool:
    """Whether the ledger marks a publish batch of the partner at ``map_index`` of the plan ``sent`` (its request
    gone out, no answer applied yet)."""
    from tongban.store.schema import PUBLISH, SENT

    if not 0 <= map_index < len(planned):
        return False
    return any(e["direction"] == PUBLISH and e["status"] == SENT for e in store.ledger(run_id, planned[map_index]))


def platform_faults(url: str, **faults: Any) -> None:
    """Set the platform simulator's faults (none: the defaults, which also ends a hang)."""
    req = urllib.request.Request(f"{url}/admin/faults", data=json.dumps(faults).encode(), method="PUT")
    req.add_header("Content-Type", "application/json")
    with NO_PROXY.open(req, timeout=30):
        pass


def replays(root: UPath, run_id: str, ti: dict[str, Any]) -> str:
    """For a publish killed mid-run: how its retry sent each batch (replayed: applied once, by the first try)."""
    from tongban.layout import PUBLISH, run_dir

    if ti["task_id"] != "partner_publish.publish":
        return ""
    division = (ti.get("rendered_map_index") or "").split(" ")[0]
    batches = read_json(run_dir(root, run_id, division) / PUBLISH)["batches"]
    return f"; its batches: {', '.join('replayed' if b.get('replayed') else 'sent' for b in batches) or 'none'}"


def outcome_problems(summary: SummaryFile, platform: PlatformClient, store_db: str, reports: UPath) -> list[str]:
    """Beyond the platform and outbound checks: nothing lost, nothing duplicated. Per partner, the ledger has no
    batch left pending, and its publish batches accepted exactly the operations the report lists as published;
    the platform holds each item once; the item store's current items are exactly the platform's."""
    from tongban.outbound.stages import KEY_PREFIX as OFFER_KEY_PREFIX
    from tongban.store.repo import ItemStore

    store = ItemStore(store_db)
    problems = []
    for row in summary.partners:
        if row.status == "failed":
            continue
        division = row.partner
        ledger = store.ledger(summary.run_id, division)
        pending = [e["key"] for e in ledger if e["status"] != "acked"]
        if pending:
            problems.append(f"{division}: ledger batches never acknowledged: {pending}")
        accepted = [
            (r["op"], r["task_code"])
            for e in ledger
            if not e["key"].startswith(OFFER_KEY_PREFIX)  # the outbound side's batches: check_outbound
            for r in e["results"] or []
            if r["status"] == "accepted"
        ]
        report = json.loads((reports / summary.run_id / division / REPORT_JSON).read_bytes())
        published = sorted((p["op"], p["task_code"]) for p in report["published"])
        if sorted(accepted) != published:
            problems.append(
                f"{division}: the ledger accepted {len(accepted)} operations, the report lists {len(published)}"
            )
        codes = [r["task_code"] for r in platform.items(division)]
        if len(codes) != len(set(codes)):
            problems.append(f"{division}: the platform holds {len(codes) - len(set(codes))} items twice")
        if set(store.current(division)) != set(codes):
            problems.append(f"{division}: the item store's current items differ from the platform's")
    return problems


def remote_logging_env(folder: str) -> dict[str, str]:
    """Task logs to object storage: each task's supervisor uploads its log when the try ends, and the api-server
    reads it from there (a worker's own folders are not reachable, so its log server is never started)."""
    return {
        "AIRFLOW__LOGGING__REMOTE_LOGGING": "True",
        "AIRFLOW__LOGGING__REMOTE_BASE_LOG_FOLDER": folder,
        "AIRFLOW__LOGGING__REMOTE_LOG_CONN_ID": S3_CONN_ID,
        "AIRFLOW__LOGGING__DELETE_LOCAL_LOGS": "True",
    }


PRELOADED = "task code preloaded:"  # the DAG file's line in a task process forked with the task code imported
NOT_PRELOADED = "task code not preloaded:"


def log_problems(
    api: Api,
    run_id: str,
    tis: list[dict[str, Any]],
    hosts: dict[str, Path],
    folder: str,
    preload: bool = True,
    victim: str = "",
) -> list[str]:
    """The log of one succeeded task of every worker is served by the api-server from the bucket (it cannot reach
    the workers), and no worker keeps the log of a try that ended there (the killed worker's own tries aside:
    their supervisor died with them, so nothing was uploaded; Airflow shows the retry's log). That log says the
    task code was preloaded (``preload``: the worker imported it before it forked its pool; otherwise, that it
    was not): the task's process found GX, pandas and the stages imported when it parsed the DAG file."""
    expected = PRELOADED if preload else NOT_PRELOADED
    problems: list[str] = []
    seen: set[str] = set()
    for ti in tis:
        worker = (ti.get("hostname") or "").split("@", 1)[0]
        if ti["state"] != "success" or worker in seen or worker not in hosts:
            continue
        seen.add(worker)
        path = (
            f"/api/v2/dags/{DAG_ID}/dagRuns/{quote(run_id, safe='')}/taskInstances/{ti['task_id']}/logs/"
            f"{ti['try_number']}?map_index={ti.get('map_index', -1)}"
        )
        status, text = api.text(path)
        events = [e.get("event", "") for e in json.loads(text).get("content", [])] if status == 200 else []
        # the log's source (first lines) is the bucket, and the task's own lines follow
        if not any(e.startswith(f"{folder}/") for e in events[:5]) or len(events) < 5:
            problems.append(f"log of {ti['task_id']}[{ti.get('map_index')}] on {worker}: HTTP {status} {text[:300]}")
            continue
        said = [e for e in events if e.startswith((PRELOADED, NOT_PRELOADED))]
        print(f"{worker}, {ti['task_id']}[{ti.get('map_index')}]: {said[0] if said else 'no preload line'}")
        if not said or not said[0].startswith(expected):
            problems.append(f"log of {ti['task_id']}[{ti.get('map_index')}] on {worker}: no {expected!r} line")
    problems += [f"no succeeded task ran on {w}: its log was not checked" for w in sorted(set(hosts) - seen)]
    # a try's supervisor uploads its log and deletes it locally after reporting the try's state: the last tasks'
    # logs may still be on their way when the run has already succeeded
    deadline = time.monotonic() + 60
    while True:
        kept = [str(f) for w, d in hosts.items() if w != victim for f in (d / "airflow" / "logs").rglob("*.log")]
        if not kept or time.monotonic() > deadline:
            break
        time.sleep(2)
    return problems + [f"task log kept on a worker instead of the bucket: {f}" for f in kept[:5]]


def local_run_files(folders: list[Path]) -> list[str]:
    """Run or report files in local folders: there must be none, storage is the bucket."""
    from tongban.layout import RUNS

    return [str(f / area) for f in folders for area in (RUNS, REPORTS) if (f / area).exists()]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--timeout", type=float, default=900, help="seconds to wait for the run (default 900)")
    parser.add_argument(
        "--partners",
        default=os.environ.get("CELERY_E2E_PARTNERS", ""),
        help="comma-separated division codes to sync (the DAG's `partners` param; default every partner, "
        "or $CELERY_E2E_PARTNERS)",
    )
    parser.add_argument(
        "--same-host", action="store_true", help="workers in this machine's network (no namespaces, no root)"
    )
    parser.add_argument("--no-kill", action="store_true", help="do not kill a worker mid-publish")
    parser.add_argument(
        "--no-preload",
        action="store_true",
        help="workers without the task-code preload, every task process imports it (to measure what it saves)",
    )
    args = parser.parse_args()
    if not args.same_host and os.geteuid() != 0:
        parser.error("workers in network namespaces need root; --same-host runs them in this machine's network")
    t0 = time.monotonic()

    base = tongban_home() / "celery"
    shutil.rmtree(base, ignore_errors=True)  # fresh every time, like its databases
    base.mkdir(parents=True)
    home = base / "home"  # the control host's TONGBAN_HOME (scheduler, dag-processor, api-server, simulators)
    hosts = {name: base / "hosts" / name for name in WORKERS}  # each worker's own, empty folders
    registry = load_registry()
    divisions = [p.division for p in registry.partners]
    procs = Processes(base)
    timings: dict[str, float] = {}
    # CPU seconds of each worker (its processes and the task processes they reaped): started up, and in the run
    startup_cpu: dict[str, float] = {}
    worker_cpu: dict[str, float] = {}
    victim = ""  # the worker killed mid-publish
    with contextlib.ExitStack() as stack:
        try:
            topology = Topology("127.0.0.1", {}) if args.same_host else stack.enter_context(worker_hosts(WORKERS))
            ip = topology.host_ip
            recreate_databases(METADATA_DB, STORE_DB)
            flush_broker()
            s3 = stack.enter_context(running_seaweedfs(base / "seaweedfs", host=ip))
            urls = stack.enter_context(running_simulators(home / "simulators", host=ip))
            redis = urlsplit(REDIS_URL)
            if not args.same_host:  # PostgreSQL and Redis listen on loopback only: relay them onto the link
                procs.start(
                    "forwarder",
                    forward_command({PG["port"]: PG["port"], redis.port or 6379: redis.port or 6379}),
                    os.environ.copy(),
                )
            port = free_ports(ip, 1)[0]
            platform = platform_credentials(home / "simulators")
            extra = simulator_connections(
                urls.partners,
                urls.platform,
                divisions,
                partner_secrets(home / "simulators", registry),
                platform,
            )
            extra |= s3.storage_env("nightly")
            extra |= remote_logging_env(s3.url(LOGS_PREFIX))
            extra |= {
                "AIRFLOW__CORE__EXECUTOR": "CeleryExecutor",
                "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": pg_url(METADATA_DB),
                "AIRFLOW__CELERY__BROKER_URL": REDIS_URL,
                "AIRFLOW__CELERY__RESULT_BACKEND": pg_url(METADATA_DB, "db+postgresql+psycopg2"),
                "AIRFLOW__CELERY__WORKER_CONCURRENCY": str(CONCURRENCY),
                "AIRFLOW__CORE__HOSTNAME_CALLABLE": "scripts.worker_hostname.hostname",
                "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"http://{ip}:{port}/execution/",
                "AIRFLOW__API__HOST": ip,
                "AIRFLOW__API__PORT": str(port),
                "AIRFLOW__API__WORKERS": "1",
                # one secret for every process: the scheduler signs the tasks' tokens, the api-server checks them
                "AIRFLOW__API_AUTH__JWT_SECRET": secrets.token_hex(32),
                "AIRFLOW__API__SECRET_KEY": secrets.token_hex(32),
                # only the run triggered here: no scheduled run appears on unpause
                "AIRFLOW__SCHEDULER__USE_JOB_SCHEDULE": "False",
                "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "10",
                # a lost worker's tasks are found by their missing heartbeats (default 300 s) and retried
                "AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT": str(HEARTBEAT_TIMEOUT),
                "AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT_DETECTION_INTERVAL": "5",
                **store_connection(),
                # the production DAG, its 06:00 deadline alert included (no `airflow dags test` on this database)
                "TONGBAN_DEADLINE_ALERT": "on",
                **({"AIRFLOW__CELERY__EXTRA_CELERY_CONFIG": "{}"} if args.no_preload else {}),
                "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
                "NO_PROXY": "*",
                "no_proxy": "*",
            }
            env = airflow_env(home, extra)
            store_db = store_url(env=env)  # what the tasks resolve the Connection to; the checks read it
            print(f"metadata: {pg_url(METADATA_DB)}  item store: {store_db}  broker: {REDIS_URL}")
            print(f"storage: {s3.url('nightly')} (SeaweedFS S3 at {s3.endpoint})")
            print(f"simulators: partners {urls.partners}  platform {urls.platform}")
            if not args.same_host:
                hosts_text = ", ".join(
                    f"{n} {a} (netns {topology.namespace(n)})" for n, a in topology.addresses.items()
                )
                print(f"workers: {hosts_text}; the machine at {ip}")
            print(f"logs: {base}/*.log  task logs: {s3.url(LOGS_PREFIX)} (the UI reads them there)", flush=True)

            step = time.monotonic()
            with (base / "db-migrate.log").open("w") as fh:
                if airflow("db", "migrate", env=env, stdout=fh, stderr=fh).returncode != 0:
                    raise RuntimeError(f"airflow db migrate failed, see {base / 'db-migrate.log'}")
            ensure_pools(env, divisions)
            timings["db migrate + pools"] = time.monotonic() - step

            step = time.monotonic()
            procs.start("scheduler", [AIRFLOW_EXE, "scheduler"], env)
            procs.start("dag-processor", [AIRFLOW_EXE, "dag-processor"], env)
            procs.start("api-server", [AIRFLOW_EXE, "api-server", "--host", ip, "--port", str(port)], env)
            for name in WORKERS:
                # the worker's own folders, and every service at the machine's address on its link
                worker_env = airflow_env(hosts[name], extra) | {
                    "TONGBAN_WORKER_NAME": name,
                    "TMPDIR": str(hosts[name] / "tmp"),
                    "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": pg_url(METADATA_DB, host=ip),
                    "AIRFLOW__CELERY__BROKER_URL": redis._replace(netloc=f"{ip}:{redis.port or 6379}").geturl(),
                    "AIRFLOW__CELERY__RESULT_BACKEND": pg_url(METADATA_DB, "db+postgresql+psycopg2", host=ip),
                    **store_connection(ip),
                }
                (hosts[name] / "tmp").mkdir(parents=True)
                procs.start(
                    f"worker-{name}",
                    topology.exec(
                        name,
                        [
                            AIRFLOW_EXE,
                            "celery",
                            "worker",
                            "--celery-hostname",
                            f"{name}@%h",
                            "--concurrency",
                            str(CONCURRENCY),
                            "--skip-serve-logs",
                            "--pid",
                            str(hosts[name] / "worker.pid"),
                        ],
                    ),
                    worker_env,
                )
            api = Api(f"http://{ip}:{port}")
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

            startup_cpu = {name: session_cpu({procs.procs[f"worker-{name}"].pid}) for name in WORKERS}
            step = time.monotonic()
            if not args.no_kill:  # every publish hangs after its first batch until the kill (to_kill)
                platform_faults(urls.platform, hang_after_apply=HANG_BATCHES, hang_seconds=HANG_SECONDS)
            api.call("PATCH", f"/api/v2/dags/{DAG_ID}", {"is_paused": False})
            conf = {"partners": [d.strip() for d in args.partners.split(",") if d.strip()]} if args.partners else {}
            run = api.call("POST", f"/api/v2/dags/{DAG_ID}/dagRuns", {"logical_date": None, "conf": conf})
            run_id = run["dag_run_id"]
            started = time.time() - 5
            print(
                f"triggered {DAG_ID} run {run_id} through the REST API; waiting (timeout {args.timeout:.0f}s) …",
                flush=True,
            )
            killed: list[dict[str, Any]] = []
            killed_at: datetime | None = None
            from tongban.store.repo import ItemStore

            store = ItemStore(store_db)
            planned: list[str] = []
            run_path = f"/api/v2/dags/{DAG_ID}/dagRuns/{quote(run_id, safe='')}"
            deadline = time.monotonic() + args.timeout
            while True:
                procs.check_alive()
                if time.monotonic() - step > 600 and api.token:  # tokens expire: log in again now and then
                    api.login()
                    step = time.monotonic() - 1
                state = api.call("GET", f"/api/v2/dags/{DAG_ID}/dagRuns/{run_id}")["state"]
                if state in ("success", "failed"):
                    break
                if not args.no_kill and not killed:
                    planned = planned or plan_of(api, run_path)  # what the publishing group maps over, in order
                    chosen = to_kill(task_instances(api, run_id), partial(pushed, store, run_id, planned))
                    if chosen:
                        victim, killed = chosen
                        worker_cpu[victim] = session_cpu({procs.procs[f"worker-{victim}"].pid}) - startup_cpu[victim]
                        procs.kill(f"worker-{victim}")
                        killed_at = datetime.now(UTC)
                        platform_faults(urls.platform)  # the other worker's publishes get their answers now
                        print(
                            f"killed worker {victim} (SIGKILL to its process group) while it ran "
                            + ", ".join(f"{ti['task_id']}[{ti.get('map_index')}]" for ti in killed),
                            flush=True,
                        )
                if time.monotonic() > deadline:
                    raise TimeoutError(f"run {run_id} not finished after {args.timeout:.0f}s")
                time.sleep(0.5 if not args.no_kill and not killed else 5)
            timings["the run (trigger → finished)"] = time.monotonic() - step
            for name in WORKERS:  # the killed worker's was read at its kill
                if f"worker-{name}" in procs.procs:
                    worker_cpu[name] = session_cpu({procs.procs[f"worker-{name}"].pid}) - startup_cpu[name]

            tis = task_instances(api, run_id)
            table, per_worker, stats = task_table(tis)
            reports = s3.root("nightly") / REPORTS
            summary_path = newest_summary(reports, started)
            summary = read_json(summary_path, SummaryFile) if summary_path else None
            held: dict[str, int] = {}  # items the platform holds per partner
            failures = []
            if summary:
                client = PlatformClient(urls.platform, **platform)
                checked = check_against_platform(summary, client, reports, store)
                held = checked.held
                problems = checked.problems + check_outbound(summary, urls.partners, s3.root("nightly"))
                problems += outcome_problems(summary, client, store_db, reports)
                served = [
                    (r.partner, api.text(f"{URL_PREFIX}/runs/{quote(run_id, safe='')}/{r.partner}/report.html"))
                    for r in summary.partners
                    if r.status != "failed"
                ]
                problems += [
                    f"{d}: the UI plugin answered {code} for its report" for d, (code, _) in served if code != 200
                ]
            else:
                problems = ["the run wrote no summary"]
            problems += log_problems(
                api, run_id, tis, hosts, s3.url(LOGS_PREFIX), preload=not args.no_preload, victim=victim
            )
            local = local_run_files([home, *hosts.values()])
            if local:
                failures.append(f"run files written to local folders: {local}")
            if killed and killed_at:
                outcomes = kill_outcomes(victim, killed, tis, killed_at)
                for after, outcome in outcomes:
                    name = f"{after['task_id']}[{after.get('map_index')}]"
                    if outcome == RECOVERED:
                        print(
                            f"recovered: {name} try {after.get('try_number')} succeeded on {after.get('hostname')}"
                            + replays(s3.root("nightly"), run_id, after)
                        )
                    elif outcome == DONE_BEFORE_KILL:
                        print(f"not killed: {name} had succeeded on {after.get('hostname')} before the kill landed")
                    else:
                        failures.append(f"{name} killed on {victim} ended {after['state']} on {after.get('hostname')}")
                if all(outcome == DONE_BEFORE_KILL for _, outcome in outcomes):
                    failures.append(f"every task seen running on {victim} had ended before the kill: none recovered")
        finally:
            procs.stop_all()
            with contextlib.suppress(Exception):
                flush_broker()
            try:
                recreate_databases(METADATA_DB, STORE_DB, drop_only=True)
            except Exception as err:
                print(f"warning: could not drop the CI databases: {err}", file=sys.stderr)

    print("\n" + table)
    print("\ntasks per worker (succeeded): " + ", ".join(f"{h}: {n}" for h, n in sorted(per_worker.items())))
    print(
        "task overhead: " + ", ".join(f"{k} {v:.2f}" if isinstance(v, float) else f"{k} {v}" for k, v in stats.items())
    )
    if worker_cpu:
        total_cpu = sum(worker_cpu.values())
        print(
            "worker CPU (every process of a worker, task processes included) "
            + ("without the preload" if args.no_preload else "with the task code preloaded")
            + ": started up "
            + ", ".join(f"{n} {c:.1f}s" for n, c in sorted(startup_cpu.items()))
            + "; in the run (the killed one's until its kill) "
            + ", ".join(f"{n} {c:.1f}s" for n, c in sorted(worker_cpu.items()))
            + f", {total_cpu:.1f}s for {len(tis)} task instances, {total_cpu / max(len(tis), 1):.2f}s each"
        )
    if summary:
        print()
        print(summary_table(summary, platform=held))
        print(f"summary: {summary_path}")
    for problem in problems:
        print(f"MISMATCH {problem}")
    workers_used = {h.split("@", 1)[0] for h in per_worker}
    if state != "success":
        failures.append(f"run {run_id} ended {state}")
    if summary and summary.failed:
        failures.append(f"failed partners: {', '.join(summary.failed)}")
    if problems:
        failures.append("outcome check failed")
    if not args.no_kill and not killed:
        failures.append("no publish was seen with a batch sent: no worker killed")
    if not set(WORKERS) - {victim} <= workers_used or not (killed or victim in workers_used):
        failures.append(f"tasks did not run on both workers: {sorted(per_worker)}")
    (base / "timings.json").write_text(
        json.dumps(
            {
                "timings_s": timings,
                "task_stats": stats,
                "worker_startup_cpu_s": startup_cpu,
                "worker_run_cpu_s": worker_cpu,
                "preload": not args.no_preload,
            },
            indent=1,
        )
    )
    for name, seconds in timings.items():
        print(f"time: {name:<30} {seconds:7.1f}s")
    print(f"stopped everything it started; dropped {METADATA_DB}, {STORE_DB}  (total {time.monotonic() - t0:.0f}s)")
    if failures:
        print("FAILED: " + "; ".join(failures) + f"  (logs: {base})")
        return 1
    print(
        f"OK: {DAG_ID} succeeded on the CeleryExecutor, workers {', '.join(WORKERS)} "
        + ("in their own network namespaces" if not args.same_host else "on this host")
        + f", storage on SeaweedFS S3, tasks spread over {', '.join(sorted(per_worker))}"
        + (f"; {victim} killed mid-publish and its tasks retried elsewhere" if killed else "")
        + "; platform, ledger, item store and reports agree"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
