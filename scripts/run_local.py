"""`make run` / `make ui`: the whole sync on one machine, against the local simulators.

Starts the partner and platform simulators on loopback, points the Airflow Connections at them
(``AIRFLOW_CONN_*``), runs ``cross_province_sync`` once with ``airflow dags test`` (or serves the UI
with ``airflow standalone``), stops the simulators and prints a per-partner summary that it checks
against the reports and against what the platform simulator holds.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Collection, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import requests
from upath import UPath

from scripts.localenv import DAG_ID, airflow_env, dags_test, ensure_pools, tongban_home, ui_env
from tongban.connections import PLATFORM_CONN_ID, conn_env_var, simulator_connections
from tongban.files import SummaryFile
from tongban.layout import REPORT_JSON, REPORTS, SUMMARY
from tongban.publish import PlatformClient, PublishError, drift
from tongban.registry import load_registry
from tongban.report import summary_table
from tongban.simulators.credentials import partner_secrets, platform_credentials
from tongban.simulators.launcher import running_simulators
from tongban.storage import read_json
from tongban.store import store_url
from tongban.store.repo import ItemStore


def newest_summary(reports: Path | UPath, since: float) -> Path | UPath | None:
    """The newest ``summary.json`` written since ``since`` under the reports folder (local or object storage)."""
    found = [(p.stat().st_mtime, p) for p in reports.glob(f"*/{SUMMARY}")]
    return max((f for f in found if f[0] >= since - 1), key=lambda f: f[0], default=(0, None))[1]


@dataclass(frozen=True)
class PlatformCheck:
    """``check_against_platform``'s answer: what does not match, and how many items the platform holds per partner
    (the partners it checked)."""

    problems: list[str]
    held: dict[str, int] = field(default_factory=dict)


def check_against_platform(
    summary: SummaryFile, client: PlatformClient, reports: Path | UPath, store: ItemStore
) -> PlatformCheck:
    """Each partner's platform list must be what its report (under ``reports``, local or object storage) says
    was kept, added or changed, hold item by item the content the item store says was published (content
    hashes), and leave no ledger row unsettled. A platform that does not answer is one problem, said as such
    (no traceback)."""
    try:
        return _check_against_platform(summary, client, reports, store)
    except (requests.RequestException, PublishError) as exc:
        return PlatformCheck(
            [f"platform check not done: the platform at {client.base_url} did not answer: {str(exc)[:300]}"]
        )


def _check_against_platform(
    summary: SummaryFile, client: PlatformClient, reports: Path | UPath, store: ItemStore
) -> PlatformCheck:
    check = PlatformCheck([])
    for row in summary.partners:
        if row.status == "failed":
            continue
        report = json.loads((reports / summary.run_id / row.partner / REPORT_JSON).read_bytes())
        removed = {r["task_code"] for r in report["removed"]}
        expected = {*report["unchanged"], *report["held"], *(c["task_code"] for c in report["changed"]), *removed}
        recoded = {r["old_code"]: r["task_code"] for r in report.get("recoded", [])}
        expected |= recoded.keys()
        if not report["dry_run"]:
            refused = {(p["op"], p["task_code"]) for p in report["platform_rejected"]}
            expected -= {c for c in [*removed, *recoded] if ("delete", c) not in refused}
            expected |= {a["task_code"] for a in report["added"] if ("upsert", a["task_code"]) not in refused}
            expected |= {new for new in recoded.values() if ("upsert", new) not in refused}
        differs = {k: v for k, v in drift(client, row.partner, store).items() if v}
        held = {r["task_code"] for r in client.items(row.partner)}
        check.held[row.partner] = len(held)
        if held != expected:
            check.problems.append(
                f"{row.partner}: platform holds {len(held)} items, the report implies {len(expected)}"
            )
        if differs:
            where = "; ".join(f"{k} {len(v)}: {', '.join(v[:3])}" for k, v in differs.items())
            check.problems.append(f"{row.partner}: platform and item store differ in content ({where})")
        if unsettled := store.unsettled(row.partner):
            check.problems.append(f"{row.partner}: {len(unsettled)} publish ledger rows left unsettled")
    return check


def check_outbound(
    summary: SummaryFile, partners_url: str, home: Path | UPath, real: Collection[str] = ()
) -> list[str]:
    """Each partner's configured list of our items, read from the partner simulator itself, must equal what
    we offered it this run (unless the offer failed and says so). ``real``: partners on their own endpoint,
    whose list the simulator does not hold (the offer task read theirs back after writing)."""
    from tongban.outbound.diff import digest
    from tongban.outbound.library import offer_for
    from tongban.outbound.stages import home_run

    run = home_run(UPath(home), summary.run_id, load_registry())
    problems = []
    for row in summary.partners:
        if not row.outbound or row.outbound.status != "ok" or row.outbound.dry_run or row.partner in real:
            continue
        offer = {c: digest(r) for c, r in offer_for(run, row.partner).items()}
        answer = requests.get(f"{partners_url}/admin/partners/{row.partner}/offers", timeout=60)
        answer.raise_for_status()
        held = {r["task_code"]: digest(r) for r in answer.json()["items"]}
        if held != offer:
            differ = sorted(set(held.items()) ^ set(offer.items()))
            problems.append(f"{row.partner}: configures {len(held)} of ours, {len(offer)} offered; {differ[:3]}")
    return problems


def attention(summary: SummaryFile) -> list[str]:
    """What of the run needs a person, one line each, with what to do: failed and held-back partners, removals
    held for confirmation (with the `make run` that confirms them), reports not delivered."""
    run_id, lines = summary.run_id, []
    if summary.failed:
        lines.append(f"FAILED partners: {', '.join(summary.failed)} (docs/runbook.md, A partner is down)")
    if held := summary.held_back:
        lines.append(
            f"HELD BACK, nothing of them published: {', '.join(held)} (critical-failure rate over the limit; the next"
            " run pulls again from the last published pull; docs/runbook.md, A partner is held back)"
        )
    if guarded := summary.removals_held:
        confirm = " ".join(f"{d}@{run_id}" for d in guarded)
        lines.append(
            f"REMOVALS HELD for confirmation: {', '.join(guarded)} (the platform keeps the items; if the partner really"
            f' withdrew them: make run ARGS="--partners {" ".join(guarded)} --confirm-removals {confirm}";'
            " docs/runbook.md, Removals held for confirmation)"
        )
    if undelivered := summary.undelivered:
        lines.append(f"report NOT delivered to: {', '.join(undelivered)} (see delivery.json; the next report tells)")
    return lines


def serve_ui(env: dict[str, str]) -> None:
    """`airflow standalone` in its own process group, stopped whole (scheduler, workers, …) on exit: on Ctrl-C,
    on SIGTERM or SIGHUP (see ``stop_on_signals``), and when it ends by itself."""
    proc = subprocess.Popen(
        [str(Path(sys.executable).with_name("airflow")), "standalone"], env=env, start_new_session=True
    )
    try:
        proc.wait()
    finally:
        for sig in (signal.SIGTERM, signal.SIGKILL):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, sig)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=20)
                break


STOP_SIGNALS = (signal.SIGTERM, signal.SIGHUP, signal.SIGINT)


def stop_on_signals() -> None:
    """Make SIGTERM and SIGHUP end this program as Ctrl-C does: as an exception, so every ``finally`` and
    context manager runs and stops what it started (`airflow standalone`'s process group, the simulators,
    the `airflow dags test` child). Python's default for SIGTERM ends the process on the spot, leaving all of
    them running (`make` passes its SIGTERM on to this process). A second signal during clean-up is ignored."""

    def stop(signum: int, frame: object) -> None:
        for sig in STOP_SIGNALS:
            signal.signal(sig, signal.SIG_IGN)
        raise KeyboardInterrupt(f"stopped by {signal.Signals(signum).name}")

    for sig in STOP_SIGNALS:
        signal.signal(sig, stop)


def _listed(values: list[str]) -> list[str]:
    """The entries of a repeatable option, each value separated by commas or spaces."""
    return [entry for value in values for entry in value.replace(",", " ").split()]


def dag_conf(args: argparse.Namespace) -> dict[str, object]:
    """The DAG params given on the command line (the DAG's ``params``: partners, full_resync, dry_run,
    confirm_removals)."""
    conf: dict[str, object] = {}
    if args.partners:
        conf["partners"] = _listed(args.partners)
    if args.confirm_removals:
        conf["confirm_removals"] = _listed(args.confirm_removals)
    if args.full_resync:
        conf["full_resync"] = True
    if args.dry_run:
        conf["dry_run"] = True
    return conf


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__,
        epilog='make run ARGS="--full-resync --partners 440100 --dry-run"; --confirm-removals 440100@<run id>',
    )
    parser.add_argument("--ui", action="store_true", help="serve the Airflow UI (airflow standalone) instead")
    parser.add_argument(
        "--partners", nargs="+", metavar="DIVISION", help="division codes to sync (space or comma separated)"
    )
    parser.add_argument("--full-resync", action="store_true", help="pull every partner's whole catalogue")
    parser.add_argument("--dry-run", action="store_true", help="reconcile and report, push nothing")
    parser.add_argument(
        "--confirm-removals",
        nargs="+",
        metavar="DIVISION@RUN_ID",
        help="removals the removal guard held in that run, confirmed as withdrawn (docs/runbook.md)",
    )
    args = parser.parse_args(argv)
    if args.ui and dag_conf(args):
        parser.error("--partners, --full-resync, --dry-run and --confirm-removals are params of a run: not with --ui")
    return args


TASK_START = re.compile(r"\[DAG TEST\] starting task_id=(\S+)")
EXCEPTION_LINE = re.compile(r"^(?:[A-Za-z_][\w.]*\.)?\w*(?:Exception|Error): (.+)$")


def task_failures(log: str) -> list[tuple[str, str]]:
    """(task id, error) of each task of an `airflow dags test` log that failed, in order, each once: the last
    exception line of its try (the one raised, not its cause), the first try's where every try says the same."""
    failures: dict[tuple[str, str], None] = {}
    task, error = "", ""
    for line in [*log.splitlines(), "[DAG TEST] starting task_id=(end)"]:
        started = TASK_START.search(line)
        if started:
            if task and error:
                failures[(task, error)] = None
            task, error = started.group(1), ""
        elif found := EXCEPTION_LINE.match(line):
            error = found.group(1)
    return list(failures)


class HomeInUse(RuntimeError):
    """Another `make run` or `make ui` holds the home."""


@contextlib.contextmanager
def home_lock(home: Path, what: str) -> Iterator[None]:
    """Hold ``$TONGBAN_HOME`` for one `make run` or `make ui` at a time. Both start their own simulators on the
    same state folder and run the DAG on the same metadata and item store: a `make run` beside `make ui`'s
    scheduler would run the same partners twice at once (the older run's publish fenced out by the newer run's
    sequence, or its batch landing between the newer run's reconcile and its read-back). The lock is the
    kernel's (``flock``): it ends with the process, however it ends."""
    import fcntl

    path = home / ".make-run.lock"
    with path.open("a+") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            fh.seek(0)
            holder = fh.read().strip() or "another process"
            raise HomeInUse(
                f"{what}: {home} is in use by {holder}; stop it first (they share the simulators' state, the "
                "Airflow metadata and the item store), or give this one a home of its own with TONGBAN_HOME=…"
            ) from None
        fh.seek(0)
        fh.truncate()
        fh.write(f"{what} (pid {os.getpid()})\n")
        fh.flush()
        try:
            yield
        finally:
            fh.truncate(0)
            fcntl.flock(fh, fcntl.LOCK_UN)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    stop_on_signals()
    try:
        return run(args)
    except HomeInUse as busy:
        print(busy, file=sys.stderr)
        return 3
    except KeyboardInterrupt as stopped:
        print(f"\n{stopped or 'interrupted'}: Airflow and the simulators were stopped", file=sys.stderr)
        return 130


def run(args: argparse.Namespace) -> int:
    home = tongban_home()
    registry = load_registry()
    conf = dag_conf(args)
    known = [p.division for p in registry.partners]
    unknown = [d for d in conf.get("partners", []) if d not in known]  # type: ignore[attr-defined]
    if unknown:  # say so before starting anything, as an error of the command line, not a traceback
        print(
            f"make run: --partners: {', '.join(unknown)} is not a partner in {registry.source} "
            f"(partners: {' '.join(known)})",
            file=sys.stderr,
        )
        return 2
    log_dir = home / "logs"
    log_dir.mkdir(parents=True, exist_ok=True)
    with home_lock(home, "make ui" if args.ui else "make run"), running_simulators(home / "simulators") as urls:
        divisions = [p.division for p in registry.partners]
        secrets = partner_secrets(home / "simulators", registry)
        platform = platform_credentials(home / "simulators")
        simulated = simulator_connections(urls.partners, urls.platform, divisions, secrets, platform)
        real = sorted(k for k in simulated if k in os.environ and k != conn_env_var(PLATFORM_CONN_ID))
        for name in real:  # a partner pointed at its real endpoint (docs/runbook.md, "Pointing one partner")
            print(f"{name}: set in the environment, used as it is (not the simulator)")
        env = airflow_env(home, {k: v for k, v in simulated.items() if k not in real})
        pool_slots = ensure_pools(env, divisions)
        print(f"simulators: partners {urls.partners}  platform {urls.platform}")
        if args.ui:
            port = env.get("AIRFLOW__API__PORT", "8080")
            print(f"Airflow UI on http://127.0.0.1:{port} (login admin / admin); Ctrl-C stops it and the simulators.")
            print(
                f"While {DAG_ID} is paused (it is created paused), a run triggered stays queued: trigger it in the UI"
                " with 'Unpause … on trigger' ticked, or switch it on first with `.venv/bin/python -m scripts.localenv"
                f" dags unpause {DAG_ID}` (the scheduler then also starts the last 02:00 run); docs/runbook.md."
            )
            serve_ui(ui_env(env, pool_slots))
            return 0
        started = time.time()
        log = log_dir / f"dags-test-{time.strftime('%Y%m%dT%H%M%S')}.log"
        print(f"running {DAG_ID} with `airflow dags test` {json.dumps(conf)} (log: {log}) …", flush=True)
        with log.open("w") as fh:
            result = dags_test(env, conf or None, stdout=fh, stderr=fh)
        summary_path = newest_summary(home / REPORTS, started)
        if summary_path is None:
            text = log.read_text(errors="replace")
            print(text[-6000:])
            print(f"\nthe run wrote no summary (airflow exited {result.returncode}); full log: {log}")
            for task_id, error in task_failures(text):
                print(f"task {task_id} failed: {error}")
            return 1
        summary = read_json(summary_path, SummaryFile)
        store = ItemStore(store_url(env=env))  # the store the DAG wrote, as the environment given to Airflow names it
        checked = check_against_platform(summary, PlatformClient(urls.platform, **platform), home / REPORTS, store)
        own = sorted(name.removeprefix("AIRFLOW_CONN_PARTNER_") for name in real)
        problems = checked.problems + check_outbound(summary, urls.partners, home, own)
    print()
    print(summary_table(summary, platform=checked.held))
    print(
        "ours: 沅江's items the partner has configured as offered / offered to it, and the change since the last run"
        " (the first run: since this run found them)"
    )
    print(f"\nrun {summary.run_id}: reports in {summary_path.parent}/<division>/report.{{json,html,xlsx}}")
    print(f"summary: {summary_path}\nAirflow log: {log}")
    for line in attention(summary):
        print(line)
    if result.returncode != 0:  # why, task by task, as the task logs say it
        for task_id, error in task_failures(log.read_text(errors="replace")):
            print(f"task {task_id} failed: {error}")
    for problem in problems:
        print(f"MISMATCH {problem}")
    if summary.outbound_failed:
        print(f"our items NOT brought in line at: {', '.join(summary.outbound_failed)} (retried next run)")
    if not problems:
        print(
            "platform check: every partner's platform list matches its report (codes) and the item store (content),"
            " no publish ledger row left unsettled"
        )
        print("partner check: every partner configures exactly the items we offer it (read from the partner)")
    if own:  # the partner check reads the simulator's lists: a partner on its own endpoint is not in them
        print(
            f"partner check: not done for {', '.join(own)} (its own endpoint: the offer task read its list back"
            " after writing, see its report)"
        )
    return 0 if result.returncode == 0 and not problems and not summary.failed else 1


if __name__ == "__main__":
    sys.exit(main())
