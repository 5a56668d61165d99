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
