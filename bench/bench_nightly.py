"""The nightly run against its floor: the real DAG and an empty DAG of the same shape, alternating, in one run.

Starts the simulators, gives both DAGs one Airflow home (SQLite), runs ``cross_province_sync`` once to sync
every partner (the first sync), then alternates floor and real DAG ``--repeat`` times on unchanged data, in
one or both modes:

- ``dags-test``: each run under ``airflow dags test`` (every task in one process, one after another);
- ``scheduler``: a scheduler with the LocalExecutor (``--parallelism`` task processes, each forked for its
  task, as in a deployment), a dag-processor and an api-server (the tasks' Execution API), every run
  triggered through the REST API and timed from queued to finished as the metadata database records it.

The floor is ``bench/dags/nightly_shape.py``: the same plan, mapping, trigger rules, pools and rendered map
indexes with empty task bodies, so its time is what Airflow itself costs for the run's task instances (9 x
partners + 4; the bench checks that both runs had as many). Prints every run's time, and per mode the medians
and their ratio (issue 14's target: <= 1.5).

    python bench/bench_nightly.py                        # all 16 partners, 2 rounds, both modes
    python bench/bench_nightly.py --partners 440100 --repeat 1 --mode dags-test
"""

from __future__ import annotations

import argparse
import contextlib
import json
import resource
import secrets
import sqlite3
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any, NamedTuple
from urllib.parse import quote

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from scripts.celery_local import AIRFLOW_EXE, Api, Processes, session_cpu, wait_for  # noqa: E402
from scripts.localenv import DAG_ID, airflow, airflow_env, dags_test, ensure_pools  # noqa: E402
from scripts.seaweedfs import free_ports  # noqa: E402
from tongban.connections import simulator_connections  # noqa: E402
from tongban.registry import load_registry  # noqa: E402
from tongban.simulators.credentials import partner_secrets, platform_credentials  # noqa: E402
from tongban.simulators.launcher import running_simulators  # noqa: E402

FLOOR_DAG_ID = "nightly_shape_floor"
FLOOR_DAG_FILE = REPO / "bench" / "dags" / "nightly_shape.py"
MODES = ("dags-test", "scheduler")


def task_seconds(env: dict[str, str], dag_id: str) -> dict[str, list[float]]:
    """Task id -> the durations of its task instances in the newest run of ``dag_id``, from the (SQLite)
    metadata database (both modes record them there)."""
    path = env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"].removeprefix("sqlite:///")
    with contextlib.closing(sqlite3.connect(path)) as db:
        rows = db.execute(
            "SELECT task_id, coalesce(duration, 0) FROM task_instance WHERE dag_id = ? AND run_id = "
            "(SELECT run_id FROM dag_run WHERE dag_id = ? ORDER BY id DESC LIMIT 1)",
            (dag_id, dag_id),
        ).fetchall()
    out: dict[str, list[float]] = {}
    for task_id, seconds in rows:
        out.setdefault(task_id, []).append(float(seconds))
    return out


class Run(NamedTuple):
    seconds: float  # wall time
    cpu: float  # CPU seconds of every Airflow process and task the run kept busy (load on the machine aside)
    task_instances: int
    tasks: dict[str, list[float]]  # task id -> durations of its task instances


def task_table(real: list[Run], floor: list[Run]) -> str:
    """Per task id: task instances and the median over the rounds of their summed durations, real and floor."""
    lines = [f"  {'task':<34} {'TIs':>4} {'real s':>8} {'floor s':>8} {'extra s':>8}"]
    rows = []
    for task_id in sorted({t for r in real for t in r.tasks}):
        sums = [statistics.median(sum(r.tasks.get(task_id, [])) for r in runs) for runs in (real, floor)]
        rows.append((sums[0] - sums[1], task_id, len(real[-1].tasks.get(task_id, [])), *sums))
    for extra, task_id, count, real_s, floor_s in sorted(rows, reverse=True):
        lines.append(f"  {task_id:<34} {count:>4} {real_s:>8.1f} {floor_s:>8.1f} {extra:>8.1f}")
    return "\n".join(lines)


def dags_test_run(envs: dict[str, dict[str, str]], dag_id: str, conf: dict[str, object]) -> Run:
    """One ``airflow dags test`` of ``dag_id`` (the real DAG through ``dags_test``, as ``make run``): its wall
    time and the CPU time of its process."""
    before, start = resource.getrusage(resource.RUSAGE_CHILDREN), time.monotonic()
    if dag_id == DAG_ID:
        done = dags_test(envs[dag_id], conf, capture_output=True)
    else:
        done = airflow("dags", "test", dag_id, "-c", json.dumps(conf), env=envs[dag_id], capture_output=True)
    seconds, after = time.monotonic() - start, resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode != 0:
        raise RuntimeError(f"{dag_id} failed ({done.returncode}):\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
    cpu = after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime
    tasks = task_seconds(envs[dag_id], dag_id)
    return Run(seconds, cpu, sum(map(len, tasks.values())), tasks)


@contextlib.contextmanager
def scheduler(env: dict[str, str], log_dir: Path, dag_ids: list[str]) -> Iterator[tuple[Api, set[int]]]:
    """A scheduler (LocalExecutor), a dag-processor and an api-server on a free loopback port, each in its own
    session, stopped whole on exit; yields the REST API, logged in, once every DAG is parsed, and the sessions."""
    procs = Processes(log_dir)
    try:
        for name in ("scheduler", "dag-processor", "api-server"):
            procs.start(name, [AIRFLOW_EXE, name], env)
        api = Api(f"http://127.0.0.1:{env['AIRFLOW__API__PORT']}")
        wait_for("the api-server", lambda: api.call("GET", "/api/v2/version"), 300, procs)
        api.login()
        for dag_id in dag_ids:
            wait_for(f"{dag_id} to be parsed", lambda d=dag_id: api.call("GET", f"/api/v2/dags/{d}"), 300, procs)
            api.call("PATCH", f"/api/v2/dags/{dag_id}", {"is_paused": False})
        yield api, {proc.pid for proc in procs.procs.values()}
    finally:
        procs.stop_all()


def scheduler_run(
    api: Api, sessions: set[int], env: dict[str, str], dag_id: str, conf: dict[str, object], timeout: float = 1800
) -> Run:
    """Trigger one run through the REST API, wait for it; its seconds from queued to finished (as the metadata
    database records them), the CPU time of the deployment meanwhile, its task instances (read from the metadata
    database: the REST API pages task instances by 100 at most). A run that does not succeed raises."""
    api.login()
    cpu = session_cpu(sessions)  # tokens expire; a run of all partners can take minutes
    run_id = api.call("POST", f"/api/v2/dags/{dag_id}/dagRuns", {"logical_date": None, "conf": conf})["dag_run_id"]
    path = f"/api/v2/dags/{dag_id}/dagRuns/{quote(run_id, safe='')}"
    deadline = time.monotonic() + timeout
    while (run := api.call("GET", path))["state"] not in ("success", "failed"):
        if time.monotonic() > deadline:
            raise TimeoutError(f"{dag_id} run {run_id} not finished after {timeout:.0f}s")
        time.sleep(0.5)
    cpu = session_cpu(sessions) - cpu
    if run["state"] != "success":
        tis: list[dict[str, Any]] = api.call("GET", f"{path}/taskInstances?state=failed&state=upstream_failed")[
            "task_instances"
        ]
        failed = sorted(f"{t['task_id']}[{t.get('map_index')}]" for t in tis)
        raise RuntimeError(f"{dag_id} run {run_id} ended {run['state']}: {', '.join(failed)}")
    seconds = (ts(run["end_date"]) - ts(run["queued_at"])).total_seconds()
    tasks = task_seconds(env, dag_id)
    return Run(seconds, cpu, sum(map(len, tasks.values())), tasks)


def ts(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def scheduler_env(env: dict[str, str], home: Path, parallelism: int) -> dict[str, str]:
    """The LocalExecutor deployment of both DAGs: one DAG folder holding both files, a fresh API port and secrets."""
    dags = home / "bench-dags"
    dags.mkdir(exist_ok=True)
    for source in (REPO / "dags" / "cross_province_sync.py", FLOOR_DAG_FILE):
        (dags / source.name).symlink_to(source)
    port = free_ports("127.0.0.1", 1)[0]
    return env | {
        "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
        "AIRFLOW__CORE__PARALLELISM": str(parallelism),
        "AIRFLOW__CORE__DAGS_FOLDER": str(dags),
        "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"http://127.0.0.1:{port}/execution/",
        "AIRFLOW__API__PORT": str(port),
        "AIRFLOW__API__WORKERS": "1",
        "AIRFLOW__API_AUTH__JWT_SECRET": secrets.token_hex(32),
        "AIRFLOW__API__SECRET_KEY": secrets.token_hex(32),
        "AIRFLOW__SCHEDULER__USE_JOB_SCHEDULE": "False",  # only the runs triggered here
        "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "10",
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--partners", default="", help="comma-separated division codes (default: every partner)")
    parser.add_argument("--repeat", type=int, default=2, help="rounds of floor + real after the first sync, per mode")
    parser.add_argument("--mode", choices=[*MODES, "both"], default="both", help="how the runs are executed")
    parser.add_argument("--parallelism", type=int, default=4, help="task processes at once in scheduler mode")
    parser.add_argument("--keep", type=Path, help="work in this (new) folder and keep it: logs, metadata, run files")
    args = parser.parse_args()
    registry = load_registry()
    partners = [d.strip() for d in args.partners.split(",") if d.strip()] or [p.division for p in registry.partners]
    for division in partners:
        registry.partner(division)
    modes = list(MODES) if args.mode == "both" else [args.mode]
    conf: dict[str, object] = {"partners": partners}
    times: dict[str, dict[str, list[Run]]] = {mode: {"floor": [], "real": []} for mode in modes}
    with contextlib.ExitStack() as stack:
        if args.keep:
            args.keep.mkdir(parents=True)  # a new folder: the first sync must publish everything
        home = args.keep or Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="bench-nightly-")))
        with running_simulators(home / "simulators") as urls:
            conns = simulator_connections(
                urls.partners,
                urls.platform,
                [p.division for p in registry.partners],
                partner_secrets(home / "simulators", registry),
                platform_credentials(home / "simulators"),
            )
            real = airflow_env(home, conns)
            envs = {DAG_ID: real, FLOOR_DAG_ID: real | {"AIRFLOW__CORE__DAGS_FOLDER": str(FLOOR_DAG_FILE.parent)}}
            migrated = airflow("db", "migrate", env=real, capture_output=True)
            if migrated.returncode != 0:
                raise RuntimeError(migrated.stderr[-3000:])
            ensure_pools(real, partners)
            first = dags_test_run(envs, DAG_ID, conf)
            print(
                f"{len(partners)} partners, {first.task_instances} task instances per run\n"
                f"first sync (airflow dags test, publishes every item, not counted)  {first.seconds:7.1f}s",
                flush=True,
            )

            def rounds(mode: str, run: Callable[[str], Run]) -> None:
                print(f"floor, first run (not counted)  {run(FLOOR_DAG_ID).seconds:7.1f}s", flush=True)
                for round_no in range(1, args.repeat + 1):
                    counts = {}
                    for kind, dag_id in (("floor", FLOOR_DAG_ID), ("real", DAG_ID)):
                        done = run(dag_id)
                        times[mode][kind].append(done)
                        counts[kind] = done.task_instances
                        what = "(empty tasks)" if kind == "floor" else "(unchanged data)"
                        print(
                            f"round {round_no}: {kind:<5} {what:<18} {done.seconds:7.1f}s  (CPU {done.cpu:6.1f}s)",
                            flush=True,
                        )
                    if counts["floor"] != counts["real"]:
                        raise RuntimeError(f"the floor ran {counts['floor']} task instances, the DAG {counts['real']}")

            for mode in modes:
                print(f"\n## {mode}", flush=True)
                if mode == "dags-test":
                    rounds(mode, lambda d: dags_test_run(envs, d, conf))
                else:
                    print(f"LocalExecutor, parallelism {args.parallelism}; logs in {home / 'logs'}", flush=True)
                    (home / "logs").mkdir()
                    env = scheduler_env(real, home, args.parallelism)
                    with scheduler(env, home / "logs", [FLOOR_DAG_ID, DAG_ID]) as (api, sessions):
                        rounds(mode, lambda d, a=api, s=sessions, e=env: scheduler_run(a, s, e, d, conf))
    print()
    for mode in modes:
        floor, real_runs = times[mode]["floor"], times[mode]["real"]
        wall = [statistics.median(r.seconds for r in runs) for runs in (real_runs, floor)]
        cpu = [statistics.median(r.cpu for r in runs) for runs in (real_runs, floor)]
        print(
            f"{mode:<10} median of {args.repeat}: real {wall[0]:.1f}s, floor {wall[1]:.1f}s, "
            f"ratio {wall[0] / wall[1]:.2f} (target <= 1.5); "
            f"CPU real {cpu[0]:.1f}s, floor {cpu[1]:.1f}s, ratio {cpu[0] / cpu[1]:.2f}"
        )
        print(task_table(real_runs, floor), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
