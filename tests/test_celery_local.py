"""When `make celery-e2e` kills worker w2 (issue 14.3): in a publish that is pushing, and in every run."""

from __future__ import annotations

import json
import logging
from typing import Any

from scripts.celery_local import VICTIM, to_kill

PLANNED = ["440100", "370100"]


def ti(task: str, state: str | None, worker: str | None = None, division: str = "440100") -> dict[str, Any]:
    host = f"{worker}@host" if worker else None
    index = PLANNED.index(division)
    return {
        "task_id": task,
        "map_index": index,
        "state": state,
        "hostname": host,
        "rendered_map_index": f"{division} 某市",
    }


def test_kills_when_the_victims_publish_has_begun_pushing() -> None:
    tis = [
        ti("partner_publish.publish", "running", VICTIM, "440100"),
        ti("partner_publish.reconcile", "running", VICTIM, "370100"),
        ti("partner_publish.publish", "queued", None, "370100"),
    ]
    assert to_kill(tis, lambda i: PLANNED[i] == "440100") == tis[:2]


def test_waits_while_the_victims_publish_has_not_pushed_yet() -> None:
    tis = [ti("partner_publish.publish", "running", VICTIM, "440100")]
    assert to_kill(tis, lambda i: False) == []


def test_waits_while_a_publish_may_still_come_to_the_victim() -> None:
    tis = [ti("partner_publish.reconcile", "running", VICTIM), ti("partner_publish.publish", None)]
    assert to_kill(tis, lambda i: True) == []


def test_kills_during_the_rest_of_the_group_once_every_publish_has_ended() -> None:
    tis = [ti("partner_publish.publish", "success", "w1"), ti("partner_publish.report", "running", VICTIM)]
    assert to_kill(tis, lambda i: False) == tis[1:]


def test_never_for_tasks_on_the_other_worker_or_outside_the_publishing_group() -> None:
    tis = [ti("partner_publish.publish", "running", "w1"), ti("partner.validate", "running", VICTIM, "370100")]
    assert to_kill(tis, lambda i: True) == []


def test_a_killed_publish_says_how_its_retry_sent_each_batch(tmp_path: Any) -> None:
    from upath import UPath

    from scripts.celery_local import replays
    from tongban.layout import PUBLISH, run_dir
    from tongban.storage import write_json

    root = UPath(tmp_path)
    write_json(run_dir(root, "r1", "440100") / PUBLISH, {"batches": [{"replayed": True}, {"replayed": None}]})
    assert replays(root, "r1", ti("partner_publish.publish", "success", "w1")) == "; its batches: replayed, sent"
    assert replays(root, "r1", ti("partner_publish.report", "success", "w1")) == ""


def test_the_celery_worker_imports_the_preload_list_at_start(tmp_path: Any) -> None:
    """The environment of make celery-e2e (scripts.localenv) reaches the Celery app the worker runs: the modules
    it imports when it starts, before it forks its pool, end with the preload list (the provider merges
    ``[celery] extra_celery_config`` into its default Celery config)."""
    import json
    import subprocess
    import sys

    from scripts.localenv import TASK_PRELOAD, airflow_env

    env = airflow_env(tmp_path, {"AIRFLOW__CORE__EXECUTOR": "CeleryExecutor"})
    code = (
        "import json; from airflow.providers.celery.executors.celery_executor import app; "
        "print(json.dumps(list(app.loader.default_modules)))"
    )
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    modules = json.loads(done.stdout.strip().splitlines()[-1])
    assert modules[-len(TASK_PRELOAD) :] == list(TASK_PRELOAD)


def test_a_task_killed_with_its_worker_must_succeed_elsewhere_unless_it_had_already_succeeded() -> None:
    """The kill follows the look at the task instances by a moment: a task seen running on the victim may have
    succeeded there first (same try, ended before the kill). Anything else must succeed on the other worker."""
    from datetime import UTC, datetime, timedelta

    from scripts.celery_local import DONE_BEFORE_KILL, LOST, RECOVERED, kill_outcomes

    killed_at = datetime(2026, 11, 30, 6, 20, tzinfo=UTC)
    seen = [
        ti("partner_publish.publish", "running", VICTIM, "440100") | {"try_number": 1},
        ti("partner_publish.offer", "running", VICTIM, "370100") | {"try_number": 1},
    ]

    def ended(task: dict[str, Any], worker: str, state: str, try_number: int, seconds: float) -> dict[str, Any]:
        end = (killed_at + timedelta(seconds=seconds)).isoformat().replace("+00:00", "Z")
        return task | {"state": state, "hostname": f"{worker}@host", "try_number": try_number, "end_date": end}

    after = [ended(seen[0], "w1", "success", 2, 90), ended(seen[1], VICTIM, "success", 1, -0.2)]
    assert [o for _, o in kill_outcomes(seen, after, killed_at)] == [RECOVERED, DONE_BEFORE_KILL]
    lost = [ended(seen[0], "w1", "failed", 3, 200), ended(seen[1], VICTIM, "success", 2, 100)]
    assert [o for _, o in kill_outcomes(seen, lost, killed_at)] == [LOST, LOST]


def test_the_preload_leaves_nothing_open_and_prepares_what_every_task_would() -> None:
    """tongban.preload runs before a worker forks: no thread, no open file may cross the fork; what it prepares
    (imports, the report templates, GX's import quietened) must be there in the process that imports it."""
    import subprocess
    import sys

    code = """
import json, logging, os, sys, threading
fds = set(os.listdir("/proc/self/fd"))
import tongban.preload
from tongban.report import templates
print(json.dumps({
    "threads": threading.active_count(),
    "new_fds": sorted(set(os.listdir("/proc/self/fd")) - fds),
    "modules": [m for m in ("great_expectations", "pandas", "openpyxl", "tongban.pipeline") if m in sys.modules],
    "compiled": sorted(k[1] for k in templates().cache),
    "gx_docs_logger": logging.getLogger("great_expectations._docs_decorators").level,
}))
"""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    state = json.loads(done.stdout.strip().splitlines()[-1])
    assert state["threads"] == 1 and state["new_fds"] == []
    assert state["modules"] == ["great_expectations", "pandas", "openpyxl", "tongban.pipeline"]
    assert state["compiled"] == ["library_check.html.j2", "outbound_section.html.j2", "report.html.j2"]
    assert state["gx_docs_logger"] == logging.WARNING
