"""The DAG file: imports cleanly, parses fast, has the intended shape, and imports nothing heavy."""

from __future__ import annotations

import itertools
import json
import subprocess
import sys

import pytest

from scripts.localenv import REPO, airflow_env

PARSE_BUDGET_S = 1.0


@pytest.fixture(scope="module")
def dagbag():
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder=REPO / "dags")
    return bag


def test_no_import_errors(dagbag) -> None:
    assert dagbag.import_errors == {}
    assert set(dagbag.dags) == {"cross_province_sync"}


def test_parse_time_under_budget(dagbag) -> None:
    [stat] = [s for s in dagbag.dagbag_stats if s.file.endswith("cross_province_sync.py")]
    assert stat.duration.total_seconds() < PARSE_BUDGET_S, stat


def test_schedule_and_run_settings(dagbag) -> None:
    dag = dagbag.dags["cross_province_sync"]
    assert dag.schedule == "0 2 * * *"
    assert str(dag.timezone.name) == "Asia/Shanghai"
    assert dag.catchup is False and dag.max_active_runs == 1
    assert {"tongban", "nightly"} <= set(dag.tags)
    assert dag.doc_md and "五级N同" in dag.doc_md
    assert set(dag.params) == {"partners", "dry_run", "full_resync", "confirm_removals"}
    assert all(t.retries >= 1 for t in dag.tasks if t.task_id.startswith(("partner", "province")))


def test_partner_groups_around_the_province_check(dagbag) -> None:
    """Per partner settle -> fetch -> normalise -> validate; then one province-level 五级N同 task over every
    partner, run whatever became of them; then per partner reconcile -> publish -> report -> deliver, with the
    partner's offer of our items (outbound) beside reconcile -> publish, both feeding its report."""
    dag = dagbag.dags["cross_province_sync"]
    chain = [
        "partner.settle",
        "partner.fetch",
        "partner.normalise",
        "partner.validate",
        "province_five_level",
        "partner_publish.reconcile",
        "partner_publish.publish",
        "partner_publish.report",
        "partner_publish.deliver",
    ]
    for upstream, downstream in itertools.pairwise(chain):
        assert downstream in dag.get_task(upstream).downstream_task_ids, upstream
    assert dag.get_task("partner.validate").downstream_task_ids == {"province_five_level"}
    assert dag.get_task("partner_publish.reconcile").downstream_task_ids == {"partner_publish.publish"}
    assert dag.get_task("partner_publish.publish").downstream_task_ids == {"partner_publish.report"}
    assert dag.get_task("partner_publish.report").downstream_task_ids == {"partner_publish.deliver"}
    for group in ("partner", "partner_publish"):
        assert type(dag.task_group_dict[group]).__name__ == "MappedTaskGroup"
    province = dag.get_task("province_five_level")
    assert province.trigger_rule == "all_done"  # a partner whose fetch failed must not block the others
    assert province.upstream_task_ids == {"plan", "partner.validate"}
    assert type(province).__name__ != "MappedOperator"  # one task, province by province
    reconcile = dag.get_task("partner_publish.reconcile")
    assert reconcile.trigger_rule == "all_success" and reconcile.upstream_task_ids == {"province_five_level"}
    summarise = dag.get_task("summarise")
    assert summarise.trigger_rule == "all_done"
    assert "partner_publish.deliver" in summarise.upstream_task_ids


def test_the_outbound_side_beside_the_inbound_one(dagbag) -> None:
    """沅江's library check starts with the run and waits for nothing; each partner's offer needs only it and the
    partner's turn (the province task hands every planned partner over, whatever became of it), never its
    inbound stages; the report waits for both directions and runs whatever became of the offer."""
    dag = dagbag.dags["cross_province_sync"]
    library = dag.get_task("outbound_library")
    assert library.upstream_task_ids == set() and library.downstream_task_ids == {"partner_publish.offer"}
    offer = dag.get_task("partner_publish.offer")
    assert offer.upstream_task_ids == {"outbound_library", "province_five_level"}
    assert offer.downstream_task_ids == {"partner_publish.report"} and offer.pool == "partner_api"
    assert offer.trigger_rule == "all_success" and offer.retries >= 1
    report = dag.get_task("partner_publish.report")
    assert report.upstream_task_ids == {"partner_publish.publish", "partner_publish.offer", "province_five_level"}
    assert report.trigger_rule == "all_done"  # a failed offer never costs the partner its report


def test_parsing_imports_nothing_heavy() -> None:
    code = (
        "import sys, json; from airflow.dag_processing.dagbag import DagBag; DagBag(dag_folder=sys.argv[1]);"
        "print(json.dumps([m for m in ('great_expectations', 'pandas', 'tongban.pipeline', 'requests')"
        " if m in sys.modules]))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code, str(REPO / "dags")], env=airflow_env(), text=True, capture_output=True, check=True
    )
    assert json.loads(out.stdout.strip().splitlines()[-1]) == []


def test_failure_alerts_and_0600_deadline(dagbag) -> None:
    from airflow.sdk import AsyncCallback, DeadlineReference

    dag = dagbag.dags["cross_province_sync"]
    assert dag.on_failure_callback is not None  # the run's
    assert all(t.on_failure_callback for t in dag.tasks)  # every task's, through default_args
    [alert] = dag.deadline if isinstance(dag.deadline, list) else [dag.deadline]
    assert alert.reference == DeadlineReference.DAGRUN_LOGICAL_DATE
    assert alert.interval.total_seconds() == 4 * 3600  # the 02:00 run must be done by 06:00 Asia/Shanghai
    assert isinstance(alert.callback, AsyncCallback)
    assert alert.callback.path == "tongban_alerts.deadline_missed"


def test_deadline_alert_fires_before_the_run_is_killed(dagbag) -> None:
    """Issue 12.6: alert interval and dagrun_timeout were both 4 h, so the run was killed as the alert fell due.
    The nightly run's logical date is 02:00 Asia/Shanghai; the alert is due at 06:00 there, and the timeout
    (counted from the run's start, never before its logical date) ends the run only after that."""
    import pendulum
    from airflow.timetables.base import TimeRestriction
    from airflow.timetables.trigger import CronTriggerTimetable  # the scheduler's own, as the DAG's schedule

    dag = dagbag.dags["cross_province_sync"]
    [alert] = dag.deadline if isinstance(dag.deadline, list) else [dag.deadline]
    assert alert.interval < dag.dagrun_timeout
    after = pendulum.datetime(2026, 11, 29, 12, 0, tz="Asia/Shanghai")
    logical = (
        CronTriggerTimetable(dag.schedule, timezone=dag.timezone)
        .next_dagrun_info(
            last_automated_data_interval=None, restriction=TimeRestriction(earliest=after, latest=None, catchup=False)
        )
        .logical_date
    )
    due = pendulum.instance(logical + alert.interval).in_timezone("Asia/Shanghai")
    killed = pendulum.instance(logical + dag.dagrun_timeout).in_timezone("Asia/Shanghai")  # started on time
    assert (due.hour, due.minute) == (6, 0) and due.date() == pendulum.date(2026, 11, 30)
    assert killed > due


def test_a_partner_connection_without_its_secret_fails_at_once_naming_it() -> None:
    """Every request to a partner is signed with its Connection's password: a Connection without one fails the task
    at once (AirflowFailException: no retry) naming it, as a missing Connection does."""
    code = """
import importlib.util, sys
from types import SimpleNamespace
from airflow.sdk.exceptions import AirflowFailException
spec = importlib.util.spec_from_file_location("sync_dag", sys.argv[1])
dag = importlib.util.module_from_spec(spec)
spec.loader.exec_module(dag)
partner = SimpleNamespace(division="370100", name="济南市", conn_id="partner_370100")
print(dag._partner_connection(partner).password)
for conn_id in ("partner_370100_bare", "partner_370100_absent"):
    try:
        dag._partner_connection(SimpleNamespace(**{**vars(partner), "conn_id": conn_id}))
    except AirflowFailException as exc:
        print(exc)
"""
    env = airflow_env() | {
        "AIRFLOW_CONN_PARTNER_370100": "http://:s3cret@partner.example:8443",
        "AIRFLOW_CONN_PARTNER_370100_BARE": "http://partner.example:8443",
    }
    out = subprocess.run(
        [sys.executable, "-c", code, str(REPO / "dags" / "cross_province_sync.py")],
        env=env,
        text=True,
        capture_output=True,
        check=True,
    ).stdout.splitlines()
    needs = "(type http, host = its base URL, password = its secret; docs/runbook.md, Adding a partner)"
    assert out[-3:] == [
        "s3cret",
        f"partner 370100 (济南市): Airflow Connection partner_370100_bare has no password {needs}",
        f"partner 370100 (济南市): no Airflow Connection partner_370100_absent {needs}",
    ]
