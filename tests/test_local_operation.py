"""Local operation (issue 12.8): `make run` passes DAG params; `make ui` stops everything it started on SIGTERM.

Both go through `make` itself, with a TONGBAN_HOME of their own (so their own Airflow database and simulators).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
from upath import UPath

from scripts.localenv import REPO
from tests.independent_partner import Partner as Independent
from tests.independent_partner import serving
from tongban.files import SummaryFile
from tongban.storage import read_json


def test_command_line_params_become_the_dags_params() -> None:
    from scripts.run_local import dag_conf, parse_args

    args = parse_args(["--full-resync", "--partners", "440100", "370100,370200", "--dry-run"])
    assert dag_conf(args) == {"partners": ["440100", "370100", "370200"], "full_resync": True, "dry_run": True}
    assert dag_conf(parse_args([])) == {}
    with pytest.raises(SystemExit):
        parse_args(["--ui", "--dry-run"])


def test_make_run_confirms_held_removals() -> None:
    """The runbook's confirmation of held removals on the local deployment: `make run` passes the DAG's
    ``confirm_removals`` param as given (the DAG's plan task checks each entry)."""
    from scripts.run_local import dag_conf, parse_args

    run = "manual__2026-11-30T07:07:53.229574+00:00"
    args = parse_args(["--partners", "440400", "--confirm-removals", f"440400@{run}", f"440800@{run},370100@{run}"])
    assert dag_conf(args) == {
        "partners": ["440400"],
        "confirm_removals": [f"440400@{run}", f"440800@{run}", f"370100@{run}"],
    }
    with pytest.raises(SystemExit):
        parse_args(["--ui", "--confirm-removals", f"440400@{run}"])


def test_make_run_says_what_needs_a_person() -> None:
    """Held-back partners and held removals are no failure (status ok, exit 0), so `make run` names them, and
    gives the command that confirms the removals; a run with none of it adds no line."""
    from scripts.run_local import attention, parse_args

    run = "manual__2026-11-30T07:20:52.187529+00:00"
    held, removals = attention(SummaryFile(run_id=run, partners=[], held_back=["440500"], removals_held=["440600"]))
    assert held.startswith("HELD BACK") and "440500" in held
    assert removals.startswith("REMOVALS HELD for confirmation: 440600")
    [args] = [part.split('"')[1] for part in removals.split("make run ARGS=")[1:]]
    assert parse_args(args.split()).confirm_removals == [f"440600@{run}"]
    assert attention(SummaryFile(run_id=run, partners=[])) == []


def _make(
    target: str,
    home: Path,
    args: str,
    registry: Path | None = None,
    environ: dict[str, str] | None = None,
    **kwargs: object,
) -> subprocess.Popen[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "TONGBAN_"))}
    env |= {"TONGBAN_HOME": str(home), "AIRFLOW__API__PORT": str(_free_port())}  # not the 8080 of a `make ui`
    if registry is not None:
        env["TONGBAN_REGISTRY"] = str(registry)
    env |= environ or {}
    return subprocess.Popen(
        ["make", "--no-print-directory", "-C", str(REPO), target, f"ARGS={args}"],
        env=env,
        text=True,
        start_new_session=True,  # the test's own group: whatever is left is found and killed at the end
        **kwargs,  # type: ignore[call-overload]
    )


@pytest.mark.e2e
def test_make_run_passes_partners_full_resync_and_dry_run(tmp_path: Path) -> None:
    proc = _make("run", tmp_path, "--full-resync --partners 440100 --dry-run", stdout=subprocess.PIPE)
    out, _ = proc.communicate(timeout=900)
    assert proc.returncode == 0, out[-4000:]
    [summary_path] = (tmp_path / "reports").glob("*/summary.json")
    summary = read_json(summary_path, SummaryFile)
    assert [r.partner for r in summary.partners] == ["440100"]
    [row] = summary.partners
    assert row.report
    report = json.loads(UPath(row.report).read_bytes())
    assert report["dry_run"] is True and report["full_pull"] is True and report["published"] == []
    assert summary.totals["added"] > 0  # reconciled against an empty platform, pushed nothing
    fetch = json.loads((tmp_path / "runs" / summary.run_id / "440100" / "fetch.json").read_text(encoding="utf-8"))
    assert fetch["mode"] == "full"


@pytest.mark.e2e
def test_make_run_with_a_bad_param_fails_at_once_saying_why(tmp_path: Path) -> None:
    """A confirm_removals entry naming a run that never was: plan fails naming it, and the tasks that run whatever
    became of plan (the province check, the summary) fail at once too, without retries (they crashed on plan's missing
    result with a TypeError, the province check three times over 90 s), and make run prints each failed task's reason
    (it printed only the log's tail and "the run wrote no summary")."""
    started = time.monotonic()
    proc = _make("run", tmp_path, "--partners 440100 --confirm-removals 440100@manual__nothing", stdout=subprocess.PIPE)
    out, _ = proc.communicate(timeout=900)
    assert proc.returncode != 0 and "the run wrote no summary" in out, out[-4000:]
    assert "task plan failed: confirm_removals: run manual__nothing did not reconcile partner 440100" in out
    assert "task province_five_level failed: plan failed, so nothing of this run was done" in out
    assert "task summarise failed: plan failed" in out and "NoneType" not in out
    [log] = (tmp_path / "logs").glob("dags-test-*.log")
    assert log.read_text(errors="replace").count("[DAG TEST] starting task_id=province_five_level") == 1  # no retry
    assert time.monotonic() - started < 300


@pytest.mark.e2e
def test_make_run_says_why_each_failed_partner_failed(tmp_path: Path) -> None:
    """A partner whose pull fails: make run names it and prints its task's reason, the partner's own words included
    (it printed only "FAILED partners: 370100", the reason being in fetch.json and the task log)."""
    registry = tmp_path / "partners.yaml"
    entry = '  - {division: "370100", name: 济南市, items: 40, format: pinyin_json, faults: [{kind: bad_signature}]}'
    registry.write_text(f"home: {{division: '430981', name: 沅江市}}\nseed: 7\npartners:\n{entry}\n", encoding="utf-8")
    home = tmp_path / "home"
    proc = _make("run", home, "--partners 370100", stdout=subprocess.PIPE, registry=registry)
    out, _ = proc.communicate(timeout=900)
    assert proc.returncode != 0 and "FAILED partners: 370100" in out, out[-4000:]
    assert "task partner.fetch failed: partner 370100 (济南市): GET http://127.0.0.1:" in out
    assert "/partners/370100/api/sx/list {'limit': 100} answered HTTP 401: 签名校验失败" in out


@pytest.mark.e2e
@pytest.mark.postgres
def test_make_run_checks_the_store_the_connection_names(tmp_path: Path) -> None:
    """An operator's shell naming the item store as the `tongban_db` Connection (here a PostgreSQL schema): the DAG
    writes there, and `make run` checks the platform against that store (it read the SQLite file under the home,
    empty, and reported every published item as a mismatch)."""
    import sqlalchemy as sa

    from tests.test_publish import PG_URL
    from tongban.store.repo import ItemStore

    schema = f"tongban_make_run_{os.getpid()}"
    store_url = f"{PG_URL}?options=-csearch_path%3D{schema}"
    admin = sa.create_engine(PG_URL)
    with admin.begin() as conn:
        conn.execute(sa.text(f"CREATE SCHEMA {schema}"))
    try:
        connection = {"AIRFLOW_CONN_TONGBAN_DB": store_url.replace("postgresql+psycopg2://", "postgresql://", 1)}
        proc = _make("run", tmp_path, "--partners 370100", environ=connection, stdout=subprocess.PIPE)
        out, _ = proc.communicate(timeout=900)
        assert proc.returncode == 0, out[-4000:]
        assert "MISMATCH" not in out and "platform check: every partner's platform list matches" in out
        [summary_path] = (tmp_path / "reports").glob("*/summary.json")
        assert read_json(summary_path, SummaryFile).totals["published"] > 0
        store = ItemStore(store_url)
        assert store.current("370100") and store.unsettled("370100") == []  # the DAG wrote the Connection's store
        assert not (tmp_path / "tongban.db").exists()  # and nothing opened the SQLite store under the home
    finally:
        with admin.begin() as conn:
            conn.execute(sa.text(f"DROP SCHEMA {schema} CASCADE"))
        admin.dispose()


@pytest.mark.e2e
def test_a_partner_without_its_connection_fails_at_once_naming_it_and_the_others_sync(tmp_path: Path) -> None:
    """A partner added to the registry whose Connection was forgotten (docs/runbook.md, Adding a partner): its fetch
    and offer fail at once, naming the Connection and what it needs (Airflow said only "The conn_id
    `partner_370100` isn't defined", after two retries); the other partner of the run syncs as ever."""
    registry = tmp_path / "partners.yaml"
    entries = [
        '  - {division: "370100", name: 济南市, items: 40, format: pinyin_json}',
        '  - {division: "370300", name: 淄博市, items: 40, format: pinyin_json}',
    ]
    registry.write_text("home: {division: '430981', name: 沅江市}\nseed: 7\npartners:\n" + "\n".join(entries) + "\n")
    home = tmp_path / "home"
    # an empty variable is no Connection to Airflow, and make run keeps a partner Connection it finds set
    proc = _make(
        "run", home, "", stdout=subprocess.PIPE, registry=registry, environ={"AIRFLOW_CONN_PARTNER_370100": ""}
    )
    out, _ = proc.communicate(timeout=900)
    assert proc.returncode != 0 and "FAILED partners: 370100 " in out, out[-4000:]
    needs = "no Airflow Connection partner_370100 (type http, host = its base URL, password = its secret;"
    assert f"task partner.fetch failed: partner 370100 (济南市): {needs}" in out
    assert f"task partner_publish.offer failed: partner 370100 (济南市): {needs}" in out
    [log] = (home / "logs").glob("dags-test-*.log")
    assert log.read_text(errors="replace").count("[DAG TEST] starting task_id=partner.fetch map_index=0") == 1
    [summary_path] = (home / "reports").glob("*/summary.json")
    rows = {r.partner: r for r in read_json(summary_path, SummaryFile).partners}
    assert rows["370300"].status == "ok" and rows["370300"].delivery == "delivered"


@pytest.mark.e2e
def test_a_partner_built_from_the_docs_alone_is_onboarded_as_the_runbook_says(tmp_path: Path) -> None:
    """The acceptance test of onboarding: a partner system written from docs/partner-formats.md alone
    (tests/independent_partner.py, national_json, HMAC-SM3) added as 440900 茂名市, not in the shipped registry, by
    docs/runbook.md's *Adding a partner*: a registry of our own, its Connection in the environment, make run. Its
    catalogue is published whole, its report reaches it, it configures exactly what we offer it. make run's partner
    check reads the simulator's lists, so it says it did not check this partner (it compared the simulator's own,
    untouched list of 440900 with our offer and called that "read from the partner")."""
    secret = "s3cret-maoming"
    partner = Independent("440900", secret, "HMAC-SM3")
    registry = tmp_path / "partners.yaml"
    entry = '  - {division: "440900", name: 茂名市, items: 40, format: national_json, signature: HMAC-SM3}'
    registry.write_text(f"home: {{division: '430981', name: 沅江市}}\nseed: 7\npartners:\n{entry}\n", encoding="utf-8")
    home = tmp_path / "home"
    with serving(partner) as url:
        conn = json.dumps({"conn_type": "http", "host": url, "password": secret})
        environ = {"AIRFLOW_CONN_PARTNER_440900": conn}
        proc = _make("run", home, "--partners 440900", registry=registry, environ=environ, stdout=subprocess.PIPE)
        out, _ = proc.communicate(timeout=900)
    assert proc.returncode == 0, out[-4000:]
    assert "AIRFLOW_CONN_PARTNER_440900: set in the environment, used as it is (not the simulator)" in out
    [summary_path] = (home / "reports").glob("*/summary.json")
    summary = read_json(summary_path, SummaryFile)
    [row] = summary.partners
    assert row.status == "ok" and row.counts and row.counts["published"] == len(partner.records), row
    assert row.delivery == "delivered" and list(partner.reports) == [summary.run_id]
    assert row.outbound and row.outbound.status == "ok" and len(partner.configured) == row.outbound.offered
    assert "partner check: not done for 440900 (its own endpoint" in out


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.e2e
def test_sigterm_to_make_ui_stops_airflow_and_both_simulators(tmp_path: Path) -> None:
    proc = _make("ui", tmp_path, "", stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    make = psutil.Process(proc.pid)
    seen: dict[int, psutil.Process] = {}
    try:
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline:
            for child in make.children(recursive=True):
                seen.setdefault(child.pid, child)
            names = [" ".join(_cmdline(p)) for p in seen.values() if _alive(p)]
            standalone = [p for p in seen.values() if "standalone" in " ".join(_cmdline(p))]
            simulators = [n for n in names if "tongban.simulators" in n]
            if standalone and len(simulators) == 2 and len(standalone[0].children(recursive=True)) >= 2:
                break
            time.sleep(1)
        else:
            pytest.fail(f"make ui did not start airflow standalone and both simulators: {names}")
        time.sleep(5)  # let standalone start its components too
        for child in make.children(recursive=True):
            seen.setdefault(child.pid, child)
        os.kill(proc.pid, signal.SIGTERM)  # make alone, as a service manager or `kill <pid>` does
        proc.wait(timeout=90)
        left = time.monotonic() + 30
        while time.monotonic() < left and any(_alive(p) for p in seen.values()):
            time.sleep(0.5)
        alive = [" ".join(_cmdline(p)) for p in seen.values() if _alive(p)]
        assert alive == [], alive
    finally:
        for p in [*seen.values(), make]:
            if _alive(p):
                with contextlib.suppress(psutil.Error):
                    p.kill()


def _cmdline(p: psutil.Process) -> list[str]:
    try:
        return p.cmdline()
    except (psutil.NoSuchProcess, psutil.ZombieProcess, psutil.AccessDenied):
        return []


def _alive(p: psutil.Process) -> bool:
    try:
        return p.is_running() and p.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


# What the dag-processor of `make ui` and `airflow dags test` of `make run` both do with the DAG file: parse the
# bundle and write each DAG's serialisation to the metadata database; prints the hash stored. A changed hash is a
# new DAG version once the previous one has run (Airflow rewrites a version no task has run in place).
WRITE_DAG = """
from sqlalchemy import select
from airflow.dag_processing.bundles.manager import DagBundlesManager
from airflow.dag_processing.dagbag import BundleDagBag, sync_bag_to_db
from airflow.models.serialized_dag import SerializedDagModel
from airflow.utils.session import create_session

manager = DagBundlesManager()
manager.sync_bundles_to_db()
for bundle in manager.get_all_dag_bundles():
    bundle.initialize()
    bag = BundleDagBag(dag_folder=bundle.path, bundle_path=bundle.path, bundle_name=bundle.name)
    sync_bag_to_db(bag, bundle.name, bundle.version)
with create_session() as session:
    print(session.scalar(select(SerializedDagModel.dag_hash).where(SerializedDagModel.dag_id == "cross_province_sync")))
"""


def test_make_run_and_make_ui_serialise_the_same_dag(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Switching between `make run` and `make ui` on one home adds no DAG version: the DAG each writes to the
    metadata database is the same (it differed by the 06:00 deadline alert, which `airflow dags test` must leave
    out), so the UI does not show a new version of unchanged code at each switch."""
    from scripts.localenv import airflow, airflow_env, dags_test_command, ui_env

    for key in list(os.environ):  # this deployment only: none of the caller's Airflow/tongban settings
        if key.startswith(("AIRFLOW", "TONGBAN_")):
            monkeypatch.delenv(key)
    env = airflow_env(tmp_path)
    assert airflow("db", "migrate", env=env, capture_output=True).returncode == 0
    _, run_env = dags_test_command(env)  # make run
    ui = ui_env(env, pool_slots=4)  # make ui: what serve_ui hands `airflow standalone`
    now = {"AIRFLOW__CORE__MIN_SERIALIZED_DAG_UPDATE_INTERVAL": "0"}  # a switch comes minutes later, not seconds
    hashes = []
    for path_env in (run_env, ui, run_env):
        done = subprocess.run([sys.executable, "-c", WRITE_DAG], env=path_env | now, capture_output=True, text=True)
        assert done.returncode == 0, done.stderr[-3000:]
        hashes.append(done.stdout.split()[-1])
    assert len(set(hashes)) == 1, hashes


def test_make_ui_sizes_the_local_executor_for_the_machine(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`make ui`'s LocalExecutor keeps a worker process per task it may run at once, `[core] parallelism`, 32 by
    default: 32 idle processes on a 2-core machine. The UI mode sets it to the machine's cores plus the
    ``partner_api`` pool's slots; the operator's own setting wins."""
    from scripts.localenv import airflow_env, local_parallelism, ui_env

    monkeypatch.delenv("AIRFLOW__CORE__PARALLELISM", raising=False)
    assert local_parallelism(pool_slots=4, cpus=2) == 6
    assert local_parallelism(pool_slots=1, cpus=64) == 65
    cpus = len(os.sched_getaffinity(0))
    env = ui_env(airflow_env(tmp_path), pool_slots=4)
    assert env["AIRFLOW__CORE__PARALLELISM"] == str(cpus + 4)
    # the executor Airflow builds from that environment (the option's name and section are right)
    code = "from airflow.executors.executor_loader import ExecutorLoader as L; e = L.get_default_executor(); "
    code += "print(type(e).__name__, e.parallelism)"
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert done.stdout.split()[-2:] == ["LocalExecutor", str(cpus + 4)]
    monkeypatch.setenv("AIRFLOW__CORE__PARALLELISM", "3")
    assert ui_env(airflow_env(tmp_path), pool_slots=4)["AIRFLOW__CORE__PARALLELISM"] == "3"


def test_make_ui_on_another_port_runs_its_tasks_through_that_port(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`AIRFLOW__API__PORT=8093 make ui` served the UI on 8093, but the tasks asked the execution API on 8080 (Airflow's
    default whatever the port): every task failed to start, "Connection refused". The operator's own URL wins."""
    from scripts.localenv import airflow_env, ui_env

    for key in list(os.environ):
        if key.startswith(("AIRFLOW", "TONGBAN_")):
            monkeypatch.delenv(key)
    code = "from airflow.configuration import conf; print(conf.get('core', 'execution_api_server_url'))"
    env = ui_env(airflow_env(tmp_path, {"AIRFLOW__API__PORT": "8093"}), pool_slots=4)
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert done.stdout.split()[-1] == "http://localhost:8093/execution/"
    own = {"AIRFLOW__API__PORT": "8093", "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": "http://api:9000/execution/"}
    assert ui_env(airflow_env(tmp_path, own), pool_slots=4)["AIRFLOW__CORE__EXECUTION_API_SERVER_URL"] == (
        "http://api:9000/execution/"
    )


def test_the_embedded_deployment_names_its_item_store_as_a_connection(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`make run` and `make ui` define the `tongban_db` Connection (the SQLite file under the home), so each task
    finds it in its environment instead of asking Airflow's API for one that is not there; another store given
    (TONGBAN_DB_URL, or a Connection of another database) is left to win."""
    from airflow.sdk import Connection

    from scripts.localenv import STORE_CONN, airflow_env
    from tongban.store import DB_CONN_ID, store_url, url_from_uri

    monkeypatch.delenv("TONGBAN_DB_URL", raising=False)
    monkeypatch.setenv(STORE_CONN, f"sqlite:///{tmp_path / 'elsewhere' / 'tongban.db'}")  # another home's
    for home in (tmp_path / "a", tmp_path / "b"):
        env = airflow_env(home)
        uri = Connection.from_uri(env[STORE_CONN], conn_id=DB_CONN_ID).get_uri()
        assert url_from_uri(uri) == f"sqlite:///{home / 'tongban.db'}"  # what a task reads: the home's file
        assert store_url(env=env) == url_from_uri(uri)  # and what `make run`'s check reads

    postgres = "postgresql+psycopg2://postgres@127.0.0.1:5432/test"
    monkeypatch.delenv(STORE_CONN)
    env = airflow_env(tmp_path, {"TONGBAN_DB_URL": postgres})
    assert STORE_CONN not in env and store_url(env=env) == postgres
    monkeypatch.setenv(STORE_CONN, "postgresql://postgres@127.0.0.1:5432/test")
    env = airflow_env(tmp_path)
    uri = Connection.from_uri(env[STORE_CONN], conn_id=DB_CONN_ID).get_uri()
    assert url_from_uri(uri) == store_url(env=env) == postgres


def test_make_run_names_an_unknown_partner_without_a_traceback(capsys: pytest.CaptureFixture[str]) -> None:
    """A typo in --partners is an error of the command line: said at once, with the partners there are, before
    any simulator or Airflow starts."""
    from scripts.run_local import parse_args, run

    assert run(parse_args(["--partners", "440100", "999999"])) == 2
    err = capsys.readouterr().err
    assert "999999 is not a partner" in err and "440100" in err.split("partners:")[-1]
    assert "Traceback" not in err and "440100 is not" not in err


def test_make_run_refuses_a_home_another_make_run_or_ui_holds_until_that_one_is_gone(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """`make run` beside a `make ui` on the same home would run the same partners twice at once: it says so and
    starts nothing. The lock goes with the process that held it, even one killed with SIGKILL."""
    from scripts.run_local import home_lock, main

    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time; from pathlib import Path; from scripts.run_local import home_lock\n"
            f"with home_lock(Path({str(tmp_path)!r}), 'make ui'):\n    print('held', flush=True); time.sleep(600)",
        ],
        cwd=REPO,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        monkeypatch.setenv("TONGBAN_HOME", str(tmp_path))
        assert main(["--partners", "440100"]) == 3
        err = capsys.readouterr().err
        assert f"{tmp_path} is in use by make ui (pid {holder.pid})" in err
        assert not (tmp_path / "simulators").exists()  # nothing was started
    finally:
        holder.kill()
        holder.wait()
    with home_lock(tmp_path, "make run"):
        assert (tmp_path / ".make-run.lock").read_text().startswith("make run (pid ")
