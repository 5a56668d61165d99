"""Issue 14.1: storage on a real S3 server (SeaweedFS, started here on loopback) through Airflow's
ObjectStoragePath and the Amazon provider's ``aws`` Connection.

The storage primitives and the UI plugin's store run against it directly; the e2e test runs the real DAG
with ``airflow dags test`` on two partners with ``TONGBAN_STORAGE_URL=s3://…`` and checks that everything
that passes between tasks is in the bucket and nothing in the local home, that the platform holds exactly
what the reports say, that the plugin's store reads the run back, and that the replay CLI reproduces it.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from scripts.seaweedfs import S3_CONN_ID, S3Server, running_seaweedfs
from tongban import layout
from tongban.files import SummaryFile
from tongban.layout import REPORTS, RUNS
from tongban.storage import read_json, read_jsonl, write_json, write_jsonl


@pytest.fixture(scope="module")
def s3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    with running_seaweedfs(tmp_path_factory.mktemp("seaweedfs")) as server:
        yield server


@pytest.fixture
def storage_env(s3: S3Server, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    env = s3.storage_env(f"t{time.time_ns()}")
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    return env


def test_stage_files_round_trip_through_object_storage_path(storage_env: dict[str, str]) -> None:
    from airflow.sdk import ObjectStoragePath

    root = ObjectStoragePath(storage_env["TONGBAN_STORAGE_URL"], conn_id=S3_CONN_ID)
    assert root.protocol == "s3"
    run = root / RUNS / "manual__2026-11-30T01:00:00+00:00" / "440100"
    write_json(run / "fetch.json", {"名称": "广州", "n": 1})
    assert write_jsonl(run / "items.jsonl", ({"i": i, "事项": "办理"} for i in range(3))) == 3

    # read back through a fresh path object (another task, another process would build its own)
    again = ObjectStoragePath(storage_env["TONGBAN_STORAGE_URL"], conn_id=S3_CONN_ID) / RUNS
    [run_folder] = list(again.iterdir())
    partner = run_folder / "440100"
    assert read_json(partner / "fetch.json") == {"名称": "广州", "n": 1}
    assert [r["i"] for r in read_jsonl(partner / "items.jsonl")] == [0, 1, 2]


def test_ui_store_reads_runs_from_the_bucket_and_sees_new_ones(s3: S3Server, storage_env: dict[str, str]) -> None:
    from airflow.sdk import ObjectStoragePath

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "plugins"))
    from tongban_ui.store import NotFound, ReportStore

    root = ObjectStoragePath(storage_env["TONGBAN_STORAGE_URL"], conn_id=S3_CONN_ID)
    store = ReportStore(root)
    assert store.recent_runs(10) == []
    summary = {
        "run_id": "r1",
        "partners": [{"partner": "440100", "counts": {"fetched": 3}}],
        "totals": {},
        "failed": [],
    }
    write_json(root / REPORTS / "r1" / "summary.json", summary)
    write_json(root / REPORTS / "r1" / "440100" / "report.json", {"counts": {"fetched": 3}})
    assert [r.run_id for r in store.recent_runs(10)] == ["r1"]
    time.sleep(1.1)  # S3 keeps modification times in whole seconds
    # another process (the pipeline's summarise task) writes a run after the api-server listed the runs
    other = s3.root(storage_env["TONGBAN_STORAGE_URL"].split("/", 3)[3])
    write_json(other / REPORTS / "r2" / "summary.json", summary | {"run_id": "r2"})
    assert [r.run_id for r in store.recent_runs(10)] == ["r2", "r1"]
    assert json.loads(store.read(store.path(REPORTS, "r1", "440100", ["report.json"]))) == {"counts": {"fetched": 3}}
    for names in (["..", "summary.json"], ["missing.json"]):
        with pytest.raises(NotFound):
            store.read(store.path(REPORTS, "r1", "440100", names))


PARTNERS = ["440100", "370100"]  # one partner of each province (different wire formats)


@pytest.mark.e2e
def test_the_dag_runs_on_s3_storage(s3: S3Server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from airflow.sdk import ObjectStoragePath

    from scripts.localenv import airflow, airflow_env, dags_test, ensure_pools
    from scripts.run_local import check_against_platform, newest_summary
    from tongban.connections import simulator_connections
    from tongban.layout import REPORT_HTML, REPORT_JSON, REPORT_XLSX
    from tongban.publish import PlatformClient
    from tongban.registry import load_registry
    from tongban.simulators.credentials import partner_secrets, platform_credentials
    from tongban.simulators.launcher import running_simulators
    from tongban.store import store_url
    from tongban.store.repo import ItemStore

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "plugins"))
    from tongban_ui.data_docs import gx_page
    from tongban_ui.store import ReportStore

    home = tmp_path / "home"
    registry = load_registry()
    storage = s3.storage_env("e2e")
    for key, value in storage.items():
        monkeypatch.setenv(key, value)
    with running_simulators(home / "simulators") as urls:
        platform = platform_credentials(home / "simulators")
        conns = simulator_connections(
            urls.partners,
            urls.platform,
            [p.division for p in registry.partners],
            partner_secrets(home / "simulators", registry),
            platform,
        )
        env = airflow_env(home, conns | storage)
        migrated = airflow("db", "migrate", env=env, capture_output=True)
        assert migrated.returncode == 0, migrated.stderr[-3000:]
        ensure_pools(env, PARTNERS)
        started = time.time()
        done = dags_test(env, {"partners": PARTNERS}, capture_output=True)
        assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]

        root = s3.root("e2e")
        summary_path = newest_summary(root / REPORTS, started)
        assert summary_path is not None
        summary = read_json(summary_path, SummaryFile)
        assert summary.failed == [] and [r.partner for r in summary.partners] == PARTNERS
        assert summary.totals["published"] > 0
        client, store = PlatformClient(urls.platform, **platform), ItemStore(store_url(env=env))
        assert check_against_platform(summary, client, root / REPORTS, store).problems == []

    run_id = summary.run_id
    for division in PARTNERS:
        run = root / RUNS / run_id / division
        manifest = read_json(run / layout.RAW / layout.MANIFEST)
        assert manifest  # the raw archive: every page of the pull, content-addressed in the bucket
        for name in (
            layout.FETCH,
            layout.ITEMS,
            layout.ACCEPTED,
            layout.GX_RESULT,
            layout.VALIDATION,
            layout.RECONCILIATION,
            layout.PUBLISH,
        ):
            assert (run / name).is_file(), name
        for name in (REPORT_JSON, REPORT_HTML, REPORT_XLSX):
            assert (root / REPORTS / run_id / division / name).is_file(), name
    # nothing that passes between tasks went to the local disk
    assert not (home / RUNS).exists() and not (home / REPORTS).exists()

    # the UI plugin's store, as the api-server builds it (ObjectStoragePath with the Connection)
    store = ReportStore(ObjectStoragePath(storage["TONGBAN_STORAGE_URL"], conn_id=S3_CONN_ID))
    [latest] = store.recent_runs(5)
    assert latest.run_id == run_id and [p.partner for p in latest.partners] == PARTNERS
    for division in PARTNERS:
        stats = store.gx_stats(run_id, division)
        assert stats is not None and stats.evaluated > 0
        # the Data Docs page the UI renders from the result in the bucket (tasks write no Data Docs)
        page = gx_page(store.read(store.path(RUNS, run_id, division, [layout.GX_RESULT])))
        assert "tongban_items" in page and "expect_five_level_elements_identical" in page, page[:2000]
        assert "<html" in store.read(store.path(REPORTS, run_id, division, [REPORT_HTML])).decode("utf-8").lower()

    # the replay CLI, outside Airflow, reads the bucket through the standard AWS variables
    replayed = subprocess.run(
        [sys.executable, "-m", "tongban.replay", run_id], env=env, capture_output=True, text=True, timeout=600
    )
    assert replayed.returncode == 0, replayed.stdout[-3000:] + replayed.stderr[-3000:]
    assert replayed.stdout.count("identical to the run") == len(PARTNERS)
