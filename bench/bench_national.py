"""Benchmark: the whole nightly pipeline at national scale (N partners x M items), stage by stage.

    .venv/bin/python bench/bench_national.py                          # about 1,000,000 items
    .venv/bin/python bench/bench_national.py --partners 6 --items 2000  # a quick look

It writes a registry of N partners (the prefecture-level division codes of ``divisions.yaml``
outside the home province, wire formats in turn) with M items each, starts the partner and
platform simulators on it (real HTTP servers on loopback, as ``make run`` does), and runs every
stage of one nightly run for every partner: the functions the DAG's tasks call (``tongban.pipeline``
and ``tongban.province``), in the DAG's order, each (stage, partner) as one task on a pool of W
worker processes (``--workers``, default 2: this machine's cores, like two Celery workers). Files
pass between tasks through the storage root only, as they do between Airflow workers.

Printed per stage: wall time, the sum and the slowest of its task times, the CPU seconds its tasks
used (``getrusage`` of the worker process around each task) and the CPU seconds the simulators used
meanwhile (each simulator process and its workers), both also per 1M items, and the largest peak
resident memory of one task (the kernel's high-water mark, reset before each task). CPU seconds say
what is the pipeline's and what the simulators', and depend less on what else the machine runs than
wall time does. The simulators' start-up (generating every partner's catalogue) is timed apart: a
real partner holds its catalogue already. Airflow's own cost per task (scheduling, process start) is
not in these figures: docs/scaling.md measures it.
The run passes only if the platform ends up holding every item the reports say was published.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import resource
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import yaml
from benchutil import peak_rss_gb, tree_cpu_seconds, tree_rss_gb

RUN_ID = "bench_national"
TARGET_ITEMS = 1_000_000


def national_registry(partners: int | None, items: int | None) -> dict[str, Any]:
    """N partners of M items each: every prefecture-level division outside the home province."""
    from tongban.registry import divisions, load_registry, wire_formats

    home = load_registry()
    known = divisions()["divisions"]
    cities = [
        code
        for code in sorted(known)
        if code.endswith("00") and not code.endswith("0000") and code[:2] != home.home["division"][:2]
    ]
    count = partners or len(cities)
    if count > len(cities):
        raise SystemExit(f"only {len(cities)} prefecture-level divisions in divisions.yaml; add codes there for more")
    per_partner = items or -(-TARGET_ITEMS // count)
    formats = sorted(wire_formats())
    return {
        "home": home.home,
        "seed": home.seed,
        "partners": [
            {"division": code, "name": known[code], "items": per_partner, "format": formats[i % len(formats)]}
            for i, code in enumerate(cities[:count])
        ],
    }


# -- one task: runs in a worker process ------------------------------------------------------------


def _cpu() -> float:
    used = resource.getrusage(resource.RUSAGE_SELF)
    return used.ru_utime + used.ru_stime


def _task(stage: str, division: str, ctx: dict[str, Any]) -> dict[str, Any]:
    Path("/proc/self/clear_refs").write_text("5")  # reset the peak-RSS high-water mark for this task
    start, cpu = time.perf_counter(), _cpu()
    STAGES[stage](division, ctx)
    return {
        "stage": stage,
        "partner": division,
        "seconds": time.perf_counter() - start,
        "cpu": _cpu() - cpu,
        "peak_gb": peak_rss_gb(),
    }


def _parts(division: str, ctx: dict[str, Any]) -> tuple[Any, Any, Any, Any, Any]:
    from upath import UPath

    from tongban.layout import report_dir, run_dir
    from tongban.publish import PlatformClient
    from tongban.registry import load_registry
    from tongban.store.repo import ItemStore

    root = UPath(ctx["root"])
    partner = load_registry().partner(division)
    return (
        partner,
        run_dir(root, RUN_ID, division),
        report_dir(root, RUN_ID, division),
        PlatformClient(ctx["platform"], **ctx["platform_credentials"]),
        ItemStore(ctx["db"]),
    )


def _settle(division: str, ctx: dict[str, Any]) -> Any:
    from tongban import pipeline

    partner, run, _, client, store = _parts(division, ctx)
    return pipeline.settle_partner(partner, run, client, store, RUN_ID)


def _fetch(division: str, ctx: dict[str, Any]) -> Any:
    from upath import UPath

    from tongban import pipeline

    partner, run, *_ = _parts(division, ctx)
    url = f"{ctx['partners']}/partners/{division}"
    return pipeline.fetch(partner, url, run, secret=ctx["secrets"][division], root=UPath(ctx["root"]), run_id=RUN_ID)


def _normalise(division: str, ctx: dict[str, Any]) -> Any:
    from tongban import pipeline

    partner, run, *_ = _parts(division, ctx)
    return pipeline.normalise_partner(partner, run)


def _validate(division: str, ctx: dict[str, Any]) -> Any:
    from tongban import pipeline

    partner, run, _, _, store = _parts(division, ctx)
    return pipeline.validate(partner, run, store)


def _province(_: str, ctx: dict[str, Any]) -> Any:
    from upath import UPath

    from tongban import layout, province
    from tongban.layout import RUNS, run_dir
    from tongban.registry import load_registry
    from tongban.results import Validated
    from tongban.store.repo import ItemStore

    registry = load_registry()
    root = UPath(ctx["root"])
    files = {p.division: run_dir(root, RUN_ID, p.division) / layout.VALIDATION for p in registry.partners}
    validated = {division: Validated.model_validate_json(path.read_bytes()) for division, path in files.items()}
    return province.check_run(
        registry.partners, registry.partners, validated, root / RUNS / RUN_ID, ItemStore(ctx["db"])
    )


def _reconcile(division: str, ctx: dict[str, Any]) -> Any:
    from tongban import pipeline

    partner, run, _, client, store = _parts(division, ctx)
    return pipeline.reconcile_partner(partner, run, client, store, RUN_ID)


def _publish(division: str, ctx: dict[str, Any]) -> Any:
    from tongban import pipeline

    partner, run, _, client, store = _parts(division, ctx)
    return pipeline.publish_partner(partner, run, client, store, RUN_ID, False)


def _report(division: str, ctx: dict[str, Any]) -> Any:
    from tongban import pipeline

    partner, run, reports, _, store = _parts(division, ctx)
    return pipeline.write_report(partner, run, reports, RUN_ID, store)


def _deliver(division: str, ctx: dict[str, Any]) -> Any:
    from upath import UPath

    from tongban import pipeline

    partner, run, reports, *_ = _parts(division, ctx)
    url = f"{ctx['partners']}/partners/{division}"
    return pipeline.deliver(
        partner, run, reports, RUN_ID, url, secret=ctx["secrets"][division], root=UPath(ctx["root"])
    )


STAGES: dict[str, Callable[[str, dict[str, Any]], Any]] = {
    "settle": _settle,
    "fetch": _fetch,
    "normalise": _normalise,
    "validate": _validate,
    "province": _province,  # one task for the run, as in the DAG
    "reconcile": _reconcile,
    "publish": _publish,
    "report": _report,
    "deliver": _deliver,
}


# -- the run -------------------------------------------------------------------------------------------


def run(registry_file: Path, work: Path, workers: int) -> int:
    from tongban.registry import load_registry
    from tongban.simulators.credentials import partner_secrets, platform_credentials
    from tongban.simulators.launcher import running_simulators

    registry = load_registry(registry_file)
    divisions = [p.division for p in registry.partners]
    total = sum(p.items for p in registry.partners)
    print(f"{len(divisions)} partners x {registry.partners[0].items:,} items = {total:,} items, {workers} workers")
    print(f"{os.cpu_count()} cores, load average (1 min) before the run: {os.getloadavg()[0]:.1f}")
    rows = []
    started = time.perf_counter()
    with running_simulators(work / "simulators", registry_file, timeout=1800) as urls:
        simulators = list(urls.pids.values())

        def simulators_cpu() -> float:
            return sum(tree_cpu_seconds(pid) for pid in simulators)

        print(f"simulators ready in {time.perf_counter() - started:.1f} s, {simulators_cpu():.1f} CPU s", flush=True)
        ctx = {
            "root": str(work / "storage"),
            "db": f"sqlite:///{work / 'items.db'}",
            "partners": urls.partners,
            "platform": urls.platform,
            "secrets": partner_secrets(work / "simulators", registry),
            "platform_credentials": platform_credentials(work / "simulators"),
        }
        started = time.perf_counter()
        with ProcessPoolExecutor(workers) as pool:
            for stage in STAGES:
                targets = ["(run)"] if stage == "province" else divisions
                stage_start, sim_cpu = time.perf_counter(), simulators_cpu()
                results = list(pool.map(_task, [stage] * len(targets), targets, [ctx] * len(targets)))
                rows.append(
                    (stage, len(targets), time.perf_counter() - stage_start, results, simulators_cpu() - sim_cpu)
                )
                print(f"  {stage:<10} done in {rows[-1][2]:8.1f} s", flush=True)
        wall = time.perf_counter() - started
        resident = ", ".join(f"{kind} {tree_rss_gb(pid):.2f} GB" for kind, pid in urls.pids.items())
        published = _check_platform(work / "storage", divisions, ctx)
    per_million = 1_000_000 / total
    print(
        f"\n{'stage':<11}{'tasks':>6}{'wall s':>9}{'task s sum':>12}{'slowest s':>11}"
        f"{'task CPU s':>12}{'per 1M':>9}{'sim CPU s':>11}{'per 1M':>9}{'peak GB/task':>14}"
    )
    for stage, tasks, seconds, results, sim_cpu in rows:
        cpu = sum(r["cpu"] for r in results)
        print(
            f"{stage:<11}{tasks:>6}{seconds:>9.1f}{sum(r['seconds'] for r in results):>12.1f}"
            f"{max(r['seconds'] for r in results):>11.1f}{cpu:>12.1f}{cpu * per_million:>9.0f}"
            f"{sim_cpu:>11.1f}{sim_cpu * per_million:>9.0f}{max(r['peak_gb'] for r in results):>14.2f}"
        )
    cpu = sum(r["cpu"] for row in rows for r in row[3])
    sim_cpu = sum(row[4] for row in rows)
    print(
        f"{'whole run':<11}{sum(r[1] for r in rows):>6}{wall:>9.1f}{'':>23}"
        f"{cpu:>12.1f}{cpu * per_million:>9.0f}{sim_cpu:>11.1f}{sim_cpu * per_million:>9.0f}"
    )
    print(f"\n{published:,} items published and held by the platform ({total:,} generated); {wall / 60:.1f} min")
    print(f"simulators resident at the end: {resident}; load average (1 min) at the end: {os.getloadavg()[0]:.1f}")
    return 0


def _check_platform(storage: Path, divisions: list[str], ctx: dict[str, Any]) -> int:
    """Every item the reports say was published is on the platform, and nothing else."""
    from tongban.layout import REPORT_JSON, REPORTS
    from tongban.publish import PlatformClient

    client = PlatformClient(ctx["platform"], **ctx["platform_credentials"])
    published = 0
    for division in divisions:
        report = json.loads((storage / REPORTS / RUN_ID / division / REPORT_JSON).read_text())
        held = sum(1 for _ in client.items(division))
        if held != report["counts"]["published"]:
            raise SystemExit(f"FAIL: platform holds {held} items of {division}, report says {report['counts']}")
        published += held
    return published


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--partners", type=int, help="N (default: every division available)")
    parser.add_argument("--items", type=int, help="M per partner (default: 1,000,000 / N)")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--keep", type=Path, help="work in this folder and keep it (default: a temporary one)")
    args = parser.parse_args()
    with contextlib.ExitStack() as stack:
        work = args.keep or Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="bench-national-")))
        work.mkdir(parents=True, exist_ok=True)
        registry_file = work / "registry.yaml"
        registry_file.write_text(yaml.safe_dump(national_registry(args.partners, args.items), allow_unicode=True))
        os.environ["TONGBAN_REGISTRY"] = str(registry_file)  # workers inherit it
        os.environ["TONGBAN_HOME"] = str(work / "home")
        return run(registry_file, work, args.workers)


if __name__ == "__main__":
    sys.exit(main())
