"""The benchmarks still run and still check their own results (tiny sizes: figures are not asserted)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parent.parent / "bench"


def run(script: str, *args: str, timeout: float = 600) -> str:
    done = subprocess.run(
        [sys.executable, str(BENCH / script), *args], capture_output=True, text=True, timeout=timeout, check=False
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-4000:]
    return done.stdout


def test_reconcile_bench_matches_the_ground_truth(tmp_path: Path) -> None:
    out = run("bench_reconcile.py", "--rows", "3000", "--data", str(tmp_path))
    assert "both match the ground truth" in out
    assert "reusing" in run("bench_reconcile.py", "--rows", "3000", "--data", str(tmp_path))


def test_publish_bench_leaves_the_platform_holding_the_items() -> None:
    out = run("bench_publish.py", "--items", "40")
    assert "publishing 40 items" in out and "faster than item by item" in out


def test_national_bench_runs_every_stage_and_checks_the_platform(tmp_path: Path) -> None:
    out = run("bench_national.py", "--partners", "3", "--items", "40", "--keep", str(tmp_path))
    for stage in ("fetch", "normalise", "validate", "province", "reconcile", "publish", "report", "deliver"):
        assert f"\n{stage} " in out
    assert "3 partners x 40 items = 120 items" in out
    assert "held by the platform" in out


def test_the_floor_dag_has_the_nightly_runs_shape() -> None:
    """bench_nightly compares the DAG with an empty one: same tasks, dependencies, mapping, trigger rules, pools,
    and rendered map indexes (each costs the run a call to Airflow's API per mapped task instance)."""
    from airflow.dag_processing.dagbag import DagBag

    real = DagBag(dag_folder=BENCH.parent / "dags").dags["cross_province_sync"]
    floor = DagBag(dag_folder=BENCH / "dags").dags["nightly_shape_floor"]

    def shape(dag: object) -> dict[str, tuple[list[str], str, bool, str, str | None]]:
        return {
            t.task_id: (
                sorted(t.upstream_task_ids),
                str(t.trigger_rule),
                bool(t.get_closest_mapped_task_group()),
                t.pool,
                t.map_index_template,
            )
            for t in dag.tasks  # type: ignore[attr-defined]
        }

    assert shape(real) == shape(floor) and len(shape(real)) == 13


def test_nightly_bench_prints_both_times_and_the_ratio() -> None:
    """One partner under `airflow dags test` only: the scheduler mode is `make bench-nightly`'s (minutes more)."""
    out = run("bench_nightly.py", "--partners", "440100", "--repeat", "1", "--mode", "dags-test", timeout=900)
    assert "round 1: floor" in out and "round 1: real" in out
    assert "dags-test  median of 1" in out and "ratio" in out and "CPU real" in out
    assert "## scheduler" not in out
    # where the time goes: per task id, its task instances and their summed durations, real and floor
    rows = {line.split()[0]: line.split()[1:] for line in out.splitlines() if line.startswith("  partner.")}
    assert set(rows) >= {"partner.settle", "partner.fetch", "partner.normalise", "partner.validate"}
    assert all(count == "1" and float(real) > 0 for count, real, _, _ in rows.values())
