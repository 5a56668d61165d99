"""When `make celery-e2e` kills a worker (issue 14.3): the one whose publish has sent a batch, in every run."""

from __future__ import annotations

import json
import logging
from typing import Any

import pytest

from scripts.celery_local import to_kill

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


def test_kills_the_worker_whose_publish_has_sent_a_batch_with_all_it_runs() -> None:
    tis = [
        ti("partner_publish.publish", "running", "w1", "370100"),
        ti("partner_publish.publish", "running", "w2", "440100"),
        ti("partner.validate", "running", "w2", "370100"),
        ti("partner_publish.reconcile", "success", "w2", "370100"),
    ]
    assert to_kill(tis, lambda i: PLANNED[i] == "440100") == ("w2", tis[1:3])
    assert to_kill(tis, lambda i: True) == ("w1", tis[:1])


def test_waits_while_no_publish_has_sent_a_batch() -> None:
    tis = [ti("partner_publish.publish", "running", "w2", "440100"), ti("partner_publish.reconcile", "running", "w1")]
    assert to_kill(tis, lambda i: False) is None


def test_never_for_a_publish_that_is_not_running() -> None:
    tis = [ti("partner_publish.publish", "success", "w1"), ti("partner_publish.publish", "queued", None, "370100")]
    assert to_kill(tis, lambda i: True) is None


def test_the_ledger_says_pushing_only_once_a_publish_batch_is_marked_sent(tmp_path: Any) -> None:
    from scripts.celery_local import pushed
    from tongban.store.repo import ItemStore
    from tongban.store.schema import OFFER

    store = ItemStore(f"sqlite:///{tmp_path / 'items.db'}")
    store.ledger_plan("r1", "440100", [("k1", 1, None)], sequence=1)
    store.ledger_plan("r1", "440100", [("o1", 1, None)], direction=OFFER)
    store.ledger_sent("o1")
    assert not pushed(store, "r1", PLANNED, 0)
    store.ledger_sent("k1")
    assert pushed(store, "r1", PLANNED, 0)
    assert not pushed(store, "r1", PLANNED, 1) and not pushed(store, "r1", PLANNED, 5)


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
        ti("partner_publish.publish", "running", "w2", "440100") | {"try_number": 1},
        ti("partner_publish.offer", "running", "w2", "370100") | {"try_number": 1},
    ]

    def ended(task: dict[str, Any], worker: str, state: str, try_number: int, seconds: float) -> dict[str, Any]:
        end = (killed_at + timedelta(seconds=seconds)).isoformat().replace("+00:00", "Z")
        return task | {"state": state, "hostname": f"{worker}@host", "try_number": try_number, "end_date": end}

    after = [ended(seen[0], "w1", "success", 2, 90), ended(seen[1], "w2", "success", 1, -0.2)]
    assert [o for _, o in kill_outcomes("w2", seen, after, killed_at)] == [RECOVERED, DONE_BEFORE_KILL]
    lost = [ended(seen[0], "w1", "failed", 3, 200), ended(seen[1], "w2", "success", 2, 100)]
    assert [o for _, o in kill_outcomes("w2", seen, lost, killed_at)] == [LOST, LOST]


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


def test_every_process_names_the_item_store_as_the_connection(tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """make celery-e2e names the item store as docker-compose.yaml does, the `tongban_db` Connection in JSON (no
    TONGBAN_DB_URL): the machine's processes and each worker (at the machine's address on its link) resolve it
    to the e2e's database, whatever TONGBAN_DB_URL the shell has, and the checks read that store."""
    from airflow.sdk import Connection

    from scripts.celery_local import STORE_DB, pg_url, store_connection
    from scripts.localenv import STORE_CONN, airflow_env
    from tongban.store import DB_CONN_ID, store_url, url_from_uri

    monkeypatch.setenv("TONGBAN_DB_URL", "postgresql+psycopg2://postgres@127.0.0.1:5432/elsewhere")
    env = airflow_env(tmp_path / "machine", store_connection())
    worker = airflow_env(tmp_path / "w1", store_connection()) | store_connection("10.213.0.1")
    assert store_url(env=env) == pg_url(STORE_DB)
    assert store_url(env=worker) == pg_url(STORE_DB, host="10.213.0.1")
    for named in (env, worker):  # what a task finds through Airflow is what the checks read
        assert url_from_uri(Connection.from_json(named[STORE_CONN], conn_id=DB_CONN_ID).get_uri()) == store_url(
            env=named
        )
