"""Issue 16, end to end: the run killed at each stage through the real DAG, and old runs resumed.

One module-scoped deployment of its own (TONGBAN_HOME, Airflow DB, simulators) with the item store on
PostgreSQL (a schema of its own), syncing one partner. Each kill test changes an item at the partner,
starts `airflow dags test` as a subprocess and SIGKILLs its process group once the run reached the
stage (its files in the run folder show it, or the platform hangs after applying a batch); then an
ordinary run must leave the platform, the item store, its history and the ledger agreeing item by
item on content, with no ledger row unsettled.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
import sqlalchemy as sa

from scripts.localenv import airflow, dags_test_command
from tests.test_e2e import Deployment
from tests.test_publish import PG_URL
from tongban.files import SummaryFile
from tongban.layout import DELIVERY, ITEMS, PUBLISH, REPORT_JSON, REPORTS, RUNS, SETTLE, STATE, WATERMARK
from tongban.model import content_hash
from tongban.publish import drift
from tongban.store.repo import ItemStore

pytestmark = [pytest.mark.e2e, pytest.mark.postgres]

PARTNER = "370100"  # pinyin_json, with 基本编码 no other partner of its province holds (see tests/test_e2e.py)
DAG_ID = "cross_province_sync"


class Recovery(Deployment):
    def __init__(self, home: Path, urls: Any, db_url: str) -> None:
        super().__init__(home, urls)
        self.env["AIRFLOW_CONN_TONGBAN_DB"] = db_url.replace("postgresql+psycopg2://", "postgresql://", 1)
        self.store = ItemStore(db_url)  # the DAG's, through its Connection
        self.first = ""  # the deployment's first run: published, superseded by every later run

    def ordinary(self) -> SummaryFile:
        return self.run({"partners": [PARTNER]})

    def killed(self, when: Callable[[Path], bool], *extra: str) -> str:
        """Start a run of PARTNER and SIGKILL it once ``when(its run folder of the partner)`` holds; its run id."""
        started = time.time()
        args, env = dags_test_command(self.env, {"partners": [PARTNER]}, *extra)
        log = (self.home / f"killed-{started:.0f}.log").open("w")
        proc = subprocess.Popen(args, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            deadline = time.time() + 300
            while True:
                folder = self.newest_run(started)
                if folder is not None and when(folder):
                    return folder.parent.name
                assert proc.poll() is None, f"the run ended before the kill point: {log.name}"
                assert time.time() < deadline, "the run never reached the kill point"
                time.sleep(0.1)
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            log.close()

    def newest_run(self, since: float) -> Path | None:
        runs = [p for p in (self.home / RUNS).glob(f"*/{PARTNER}") if p.stat().st_mtime >= since]
        return max(runs, key=lambda p: p.stat().st_mtime) if runs else None

    def task_done(self, task_id: str) -> Callable[[Path], bool]:
        """Whether the run's task (of the partner) succeeded, as the Airflow database says."""
        database = self.home / "airflow" / "airflow.db"

        def done(folder: Path) -> bool:
            with sqlite3.connect(f"file:{database}?mode=ro", uri=True, timeout=5) as conn:
                query = "SELECT state FROM task_instance WHERE run_id = ? AND task_id = ?"
                return ("success",) in conn.execute(query, (folder.parent.name, task_id)).fetchall()

        return done

    def change_an_item(self, value: str) -> dict[str, Any]:
        """Give one published item of PARTNER a new 办理结果 at the partner; the item as the platform held it."""
        target = self.unshared(PARTNER)[0]
        url = f"{self.urls.partners}/admin/partners/{PARTNER}/items/{target['task_code']}"
        requests.patch(url, json={"result": value}, timeout=30).raise_for_status()
        return target

    def platform_faults(self, **faults: Any) -> dict[str, Any]:
        url = f"{self.urls.platform}/admin/faults"
        if faults or not requests.get(url, timeout=10).json():
            requests.put(url, json=faults, timeout=10).raise_for_status()
        return dict(requests.get(url, timeout=10).json())

    def assert_all_agree(self) -> None:
        """Platform, item store, history and ledger agree item by item on content; nothing unsettled."""
        held = {r["task_code"]: r for r in self.platform.items(PARTNER)}
        assert drift(self.platform, PARTNER, self.store) == {
            "only_on_platform": [],
            "only_in_store": [],
            "different": [],
        }
        current = self.store.current(PARTNER)
        assert {c: content_hash(r) for c, r in current.items()} == {c: content_hash(r) for c, r in held.items()}
        assert self.store.unsettled(PARTNER) == []
        for code, record in held.items():  # the history tells how each item came to be what the platform holds
            changes = self.store.history(PARTNER, code)
            assert changes and changes[-1]["kind"] != "removed", code
            for element in ("result",):
                told = [h["new"] for h in changes if h["kind"] == "changed" and h["element"] == element]
                if told:
                    assert told[-1] == record[element], (code, element)


@pytest.fixture(scope="module")
def deployment(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Recovery]:
    from tongban.simulators.launcher import running_simulators

    home = tmp_path_factory.mktemp("tongban-recovery")
    schema = f"tongban_e2e_recovery_{os.getpid()}"
    admin = sa.create_engine(PG_URL)
    with admin.begin() as conn:
        conn.execute(sa.text(f"CREATE SCHEMA {schema}"))
    try:
        with running_simulators(home / "simulators") as urls:
            deployment = Recovery(home, urls, f"{PG_URL}?options=-csearch_path%3D{schema}")
            migrated = airflow("db", "migrate", env=deployment.env, capture_output=True)
            assert migrated.returncode == 0, migrated.stderr[-3000:]
            first = deployment.ordinary()
            assert first.failed == []
            deployment.first = first.run_id
            deployment.assert_all_agree()
            yield deployment
    finally:
        with admin.begin() as conn:
            conn.execute(sa.text(f"DROP SCHEMA {schema} CASCADE"))
        admin.dispose()


def _exists(*names: str) -> Callable[[Path], bool]:
    return lambda folder: all((folder / name).exists() for name in names)


def _reported(folder: Path) -> bool:
    run_id = folder.parent.name
    return (folder.parents[2] / REPORTS / run_id / PARTNER / REPORT_JSON).exists()


def _hanging(deployment: Recovery) -> Callable[[Path], bool]:
    """The platform applied and recorded a batch and now hangs: its fault counter is used up."""
    return lambda _: deployment.platform_faults()["hang_after_apply"] == 0


KILL_POINTS = {
    # stage the run is killed in: what shows it got there
    "fetch": lambda _: _exists(SETTLE),
    "validate": lambda _: _exists(ITEMS),
    "publish": _hanging,  # between the platform's apply and our acknowledgement
    "report": lambda _: _exists(PUBLISH),
    "deliver": lambda _: _reported,
}


@pytest.mark.parametrize("stage", list(KILL_POINTS))
def test_killed_at_each_stage_the_next_run_repairs_everything(deployment: Recovery, stage: str) -> None:
    value = f"{stage}阶段中断后的办理结果"
    target = deployment.change_an_item(value)
    if stage == "publish":
        deployment.platform_faults(hang_after_apply=1, hang_seconds=600)
    try:
        killed = deployment.killed(KILL_POINTS[stage](deployment))
    finally:
        deployment.platform_faults()  # ends the hang
    reached_platform = stage in ("publish", "report", "deliver")
    on_platform = {r["task_code"]: r for r in deployment.platform.items(PARTNER)}
    assert (on_platform[target["task_code"]]["result"] == value) is reached_platform

    summary = deployment.ordinary()
    assert summary.failed == [] and summary.undelivered == []
    report = deployment.report(summary, PARTNER)
    deployment.assert_all_agree()
    assert {r["task_code"]: r for r in deployment.platform.items(PARTNER)}[target["task_code"]]["result"] == value
    settled = json.loads((deployment.home / RUNS / summary.run_id / PARTNER / SETTLE).read_text())
    assert all(row["run_id"] == killed for row in settled["settled"])
    if stage == "publish":  # the batch the platform applied is acked under the killed run, not sent again
        assert [(s["was"], s["now"]) for s in settled["settled"]] == [("sent", "acked")]
        changed = [h for h in deployment.store.history(PARTNER, target["task_code"]) if h["kind"] == "changed"]
        assert (changed[-1]["run_id"], changed[-1]["new"]) == (killed, value)
        assert report["counts"]["published"] == 0
    for row in deployment.store.ledger(killed, PARTNER):
        assert row["status"] in ("acked", "unsent", "unapplied")
    # what the killed run published reaches the partner in this run's report (unless its own got through)
    delivery = deployment.home / REPORTS / killed / PARTNER / DELIVERY
    told = delivery.exists() and json.loads(delivery.read_text())["status"] == "delivered"
    earlier = [(e["run_id"], e["task_code"], e["kind"], e["element"], e["new"]) for e in report["earlier"]]
    if reached_platform and not told:
        assert earlier == [(killed, target["task_code"], "changed", "result", value)]
    else:
        assert earlier == []
    assert deployment.store.unreported(PARTNER, "after") == []  # everything published is told now


def test_a_resumed_superseded_run_changes_nothing_on_the_platform(deployment: Recovery) -> None:
    """An old run killed once it reconciled (its reconciliation holds old content); a newer run publishes
    newer content; then the old run's tasks run again, as a scheduler resuming the old run would."""
    deployment.change_an_item("旧运行的办理结果")
    old = deployment.killed(deployment.task_done("partner_publish.reconcile"))
    target = deployment.change_an_item("新运行的办理结果")
    assert deployment.ordinary().failed == []
    before = {r["task_code"]: content_hash(r) for r in deployment.platform.items(PARTNER)}
    assert {r["task_code"]: r for r in deployment.platform.items(PARTNER)}[target["task_code"]]["result"] == (
        "新运行的办理结果"
    )

    # publish first: running a task again clears its XCom, which the tasks after it read
    for task_id in ("partner_publish.publish", "partner_publish.reconcile", "partner.settle"):
        resumed = airflow(
            "tasks", "test", DAG_ID, task_id, old, "--map-index", "0", env=deployment.env, capture_output=True
        )
        output = resumed.stdout + resumed.stderr
        assert f"run {old} is superseded for partner {PARTNER}" in output, (task_id, output[-3000:])
        assert {r["task_code"]: content_hash(r) for r in deployment.platform.items(PARTNER)} == before
    assert deployment.store.ledger(old, PARTNER) == []
    deployment.assert_all_agree()


def test_a_published_run_cleared_from_its_fetch_does_not_move_the_next_pull(deployment: Recovery) -> None:
    """The first run published long ago; a newer one since. Its `partner.fetch` cleared (re-run without
    `partner.settle`, as clearing that task in the grid does) would pull now, and the pull would count as the
    partner's latest, its run having published: the next incremental pull would start after the latest change it
    saw, none of them published, and miss the earlier ones until the weekly full pull. It fails at once instead,
    leaving the partner's pull state as it was."""
    assert deployment.ordinary().failed == []  # the first run is superseded now
    state = deployment.home / STATE / PARTNER / WATERMARK
    kept = state.read_bytes()
    resumed = airflow(
        "tasks", "test", DAG_ID, "partner.fetch", deployment.first, "--map-index", "0", env=deployment.env,
        capture_output=True,
    )  # fmt: skip
    output = resumed.stdout + resumed.stderr
    assert f"run {deployment.first} is superseded for partner {PARTNER}" in output, output[-3000:]
    assert state.read_bytes() == kept  # the next run pulls every change since the newer run's pull
    deployment.assert_all_agree()
