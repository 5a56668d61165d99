"""The nightly run against its floor: the real DAG and an empty DAG of the same shape, alternating, in one run.

Starts the simulators, gives both DAGs one Airflow home (SQLite), runs ``cross_province_sync`` once to sync
every partner (the first sync), and the floor once, then alternates floor and real DAG ``--repeat`` times on
unchanged data, each under ``airflow dags test`` (all tasks in one process, one after another). The floor is
``bench/dags/nightly_shape.py``: the same plan, mapping and trigger rules with empty task bodies, so its time
is what Airflow itself costs for the run's task instances (9 x partners + 4). Prints every run's time, the
medians and their ratio (issue 14's target: <= 1.5).

    python bench/bench_nightly.py                        # all 16 partners, 2 rounds
    python bench/bench_nightly.py --partners 440100 --repeat 1
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from scripts.localenv import DAG_ID, airflow, airflow_env, dags_test, ensure_pools  # noqa: E402
from tongban.connections import simulator_connections  # noqa: E402
from tongban.registry import load_registry  # noqa: E402
from tongban.simulators.credentials import partner_secrets, platform_credentials  # noqa: E402
from tongban.simulators.launcher import running_simulators  # noqa: E402

FLOOR_DAG_ID = "nightly_shape_floor"
FLOOR_DAGS = REPO / "bench" / "dags"


def timed(env: dict[str, str], dag_id: str, conf: dict[str, object]) -> float:
    """Seconds one ``airflow dags test`` of ``dag_id`` took (the real DAG through ``dags_test``, as ``make run``)."""
    start = time.monotonic()
    if dag_id == DAG_ID:
        done = dags_test(env, conf, capture_output=True)
    else:
        done = airflow("dags", "test", dag_id, "-c", json.dumps(conf), env=env, capture_output=True)
    seconds = time.monotonic() - start
    if done.returncode != 0:
        raise RuntimeError(f"{dag_id} failed ({done.returncode}):\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
    return seconds


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--partners", default="", help="comma-separated division codes (default: every partner)")
    parser.add_argument("--repeat", type=int, default=2, help="rounds of floor + real after the first sync")
    args = parser.parse_args()
    registry = load_registry()
    partners = [d.strip() for d in args.partners.split(",") if d.strip()] or [p.division for p in registry.partners]
    for division in partners:
        registry.partner(division)
    conf: dict[str, object] = {"partners": partners}
    with tempfile.TemporaryDirectory(prefix="bench-nightly-") as tmp:
        home = Path(tmp)
        with running_simulators(home / "simulators") as urls:
            conns = simulator_connections(
                urls.partners,
                urls.platform,
                [p.division for p in registry.partners],
                partner_secrets(home / "simulators", registry),
                platform_credentials(home / "simulators"),
            )
            real = airflow_env(home, conns)
            floor = real | {"AIRFLOW__CORE__DAGS_FOLDER": str(FLOOR_DAGS)}
            migrated = airflow("db", "migrate", env=real, capture_output=True)
            if migrated.returncode != 0:
                raise RuntimeError(migrated.stderr[-3000:])
            ensure_pools(real, partners)
            print(
                f"{len(partners)} partners, {8 * len(partners) + 4} task instances per run; `airflow dags test`",
                flush=True,
            )
            first = timed(real, DAG_ID, conf)
            print(f"first sync (publishes every item, not counted)  {first:7.1f}s", flush=True)
            print(f"floor, first run (not counted)                  {timed(floor, FLOOR_DAG_ID, conf):7.1f}s")
            times: dict[str, list[float]] = {"floor": [], "real": []}
            for round_no in range(1, args.repeat + 1):
                for kind, env, dag_id in (("floor", floor, FLOOR_DAG_ID), ("real", real, DAG_ID)):
                    seconds = timed(env, dag_id, conf)
                    times[kind].append(seconds)
                    print(
                        f"round {round_no}: {kind:<5} {'(empty tasks)' if kind == 'floor' else '(unchanged data)':<18} "
                        f"{seconds:7.1f}s",
                        flush=True,
                    )
    floor_s, real_s = statistics.median(times["floor"]), statistics.median(times["real"])
    print(
        f"\nairflow dags test, median of {args.repeat}: real {real_s:.1f}s, floor {floor_s:.1f}s, "
        f"ratio {real_s / floor_s:.2f} (target <= 1.5)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
