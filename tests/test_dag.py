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
    assert set(dag.params) == {"partners", "dry_run", "full_resync"}
    assert all(t.retries >= 1 for t in dag.tasks if t.task_id.startswith("partner."))


def test_per_partner_chain_is_one_mapped_group(dagbag) -> None:
    dag = dagbag.dags["cross_province_sync"]
    chain = ["fetch", "normalise", "validate", "reconcile", "publish", "report", "deliver"]
    for upstream, downstream in itertools.pairwise(chain):
        assert f"partner.{downstream}" in dag.get_task(f"partner.{upstream}").downstream_task_ids
    group = dag.task_group_dict["partner"]
    assert type(group).__name__ == "MappedTaskGroup"
    summarise = dag.get_task("summarise")
    assert summarise.trigger_rule == "all_done"
    assert "partner.deliver" in summarise.upstream_task_ids


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
