"""End to end: the real DAG under `airflow dags test` against the real simulators, as `make run` does it.

One module-scoped deployment (own TONGBAN_HOME, Airflow DB and simulator state). The runs build on
each other: first sync, an unchanged re-run, then one item changed at a partner, a partner held back,
and a partner whose pull fails.
"""

from __future__ import annotations

import gzip
import json
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from upath import UPath

from scripts.localenv import airflow, airflow_env, dags_test, ensure_pools
from scripts.run_local import check_against_platform, check_outbound, newest_summary
from tongban.connections import simulator_connections
from tongban.files import SummaryFile
from tongban.layout import FIVE_LEVEL, PROVINCES, REPORT_HTML, REPORTS, RUNS
from tongban.model import content_hash
from tongban.publish import PlatformClient
from tongban.registry import load_registry
from tongban.simulators import province_quirks
from tongban.simulators.credentials import (
    PLATFORM_SECRET_FILE,
    SECRETS_FILE,
    partner_secrets,
    platform_credentials,
    secrets_from_env,
)
from tongban.storage import read_json
from tongban.store import store_url
from tongban.store.repo import ItemStore

pytestmark = pytest.mark.e2e

REGISTRY = load_registry()
# a pinyin_json partner (the change crosses a real format mapping) holding 基本编码 no other partner of its
# province holds: a change to one of those alone keeps 五级N同 across the province's partners
CHANGED_PARTNER = "370100"
ODD_SECRET = "q\"uo\\te '$HOME' ${X} #; = & 密钥"
RETRY_POLICY = """from datetime import timedelta


def task_policy(task):
    task.retry_delay = timedelta(seconds=1)
"""


class Deployment:
    def __init__(self, home: Path, urls: Any) -> None:
        self.home = home
        self.urls = urls
        divisions = [p.division for p in REGISTRY.partners]
        secrets = partner_secrets(home / "simulators", REGISTRY)
        platform = platform_credentials(home / "simulators")
        conns = simulator_connections(urls.partners, urls.platform, divisions, secrets, platform)
        self.env = airflow_env(home, conns)
        # Airflow imports airflow_local_settings from $AIRFLOW_HOME/config: this deployment's cluster policy makes
        # a failed try wait 1 s (doubling) for its next one instead of the DAG's 30 s (tries and all else unchanged)
        config = Path(self.env["AIRFLOW_HOME"]) / "config"
        config.mkdir(parents=True, exist_ok=True)
        (config / "airflow_local_settings.py").write_text(RETRY_POLICY, encoding="utf-8")
        self.platform = PlatformClient(urls.platform, **platform)
        self.secrets = [*secrets.values(), platform["secret"]]
        self.output: list[str] = []  # what every `airflow dags test` printed
        self.store = ItemStore(store_url(env=self.env))

    def run(self, conf: dict[str, Any] | None = None, *, succeeds: bool = True) -> SummaryFile:
        started = time.time()
        done = dags_test(self.env, conf, capture_output=True)
        self.output.append(done.stdout + done.stderr)
        summary_path = newest_summary(self.home / REPORTS, started)
        assert (done.returncode == 0) is succeeds and summary_path, done.stdout[-4000:] + done.stderr[-4000:]
        return read_json(summary_path, SummaryFile)

    def report(self, summary: SummaryFile, division: str) -> dict[str, Any]:
        [row] = [r for r in summary.partners if r.partner == division]
        return json.loads(UPath(row.report).read_bytes())

    def report_path(self, summary: SummaryFile, division: str) -> str:
        [row] = [r for r in summary.partners if r.partner == division]
        return str(row.report)

    def map_labels(self, run_id: str) -> dict[str, set[str]]:
        """task id -> the rendered map indexes (partner labels) of its mapped instances in that run."""
        import sqlite3

        with sqlite3.connect(self.home / "airflow" / "airflow.db") as db:
            rows = db.execute(
                "SELECT task_id, rendered_map_index FROM task_instance WHERE run_id = ? AND map_index >= 0", (run_id,)
            ).fetchall()
        labels: dict[str, set[str]] = {}
        for task_id, label in rows:
            labels.setdefault(task_id, set()).add(label)
        return labels

    def served(self, division: str) -> list[dict[str, Any]]:
        answer = requests.get(f"{self.urls.partners}/admin/partners/{division}/items", timeout=30)
        answer.raise_for_status()
        return answer.json()["items"]

    def unshared(self, division: str) -> list[dict[str, Any]]:
        """The partner's items on the platform whose 基本编码 neither another of its items nor another partner
        of its province holds: changing one at the partner leaves 五级N同 intact."""
        mine = list(self.platform.items(division))
        province = REGISTRY.partner(division).province
        codes = [r["catalog_code"] for r in mine]
        codes += [
            r["catalog_code"]
            for p in REGISTRY.partners
            if p.province == province and p.division != division
            for r in self.platform.items(p.division)
        ]
        return [r for r in mine if codes.count(r["catalog_code"]) == 1]


@pytest.fixture(scope="module")
def deployment(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    from tongban.simulators.launcher import running_simulators

    home = tmp_path_factory.mktemp("tongban-home")
    # secrets with characters that break naive quoting: one partner's (signature only, so never in a header)
    # and the platform's, as .env would give them
    secrets_from_env(
        home / "simulators", {"PARTNER_440300_SECRET": ODD_SECRET, "TONGBAN_PLATFORM_SECRET": ODD_SECRET[::-1]}
    )
    with running_simulators(home / "simulators") as urls:
        deployment = Deployment(home, urls)
        migrated = airflow("db", "migrate", env=deployment.env, capture_output=True)
        assert migrated.returncode == 0, migrated.stderr[-3000:]
        ensure_pools(deployment.env, [p.division for p in REGISTRY.partners])
        yield deployment


@pytest.fixture(scope="module")
def first(deployment: Deployment) -> SummaryFile:
    return deployment.run()


def test_first_run_syncs_every_partner(deployment: Deployment, first: SummaryFile) -> None:
    assert first.failed == []
    assert [r.partner for r in first.partners] == [p.division for p in REGISTRY.partners]
    assert first.totals["fetched"] == sum(p.items for p in REGISTRY.partners) == 2976
    checked = check_against_platform(first, deployment.platform, deployment.home / REPORTS, deployment.store)
    assert checked.problems == [] and list(checked.held) == [p.division for p in REGISTRY.partners]


def test_first_run_offers_our_99_items_and_every_partner_then_holds_its_offer(
    deployment: Deployment, first: SummaryFile
) -> None:
    from tongban.outbound.client import LibraryClient

    library = [e for e in LibraryClient(deployment.platform).entries() if e["offer"]["offered"]]
    assert len(library) == 99
    keys = {"offered", "configured", "missing", "outdated", "withdrawn", "mode_mismatch", "sent"}
    outbound = [row.outbound for row in first.partners if row.outbound]
    assert len(outbound) == len(first.partners) and all(o.status == "ok" for o in outbound)
    assert sum(o.offered or 0 for o in outbound) == sum(len(e["offer"]["regions"]) for e in library)
    assert all(o.configured == o.offered for o in outbound)
    drift = {k: sum(getattr(o, k) for o in outbound) for k in keys - {"offered", "configured"}}
    assert all(drift.values()), drift  # the simulators' drift of every kind was found and sent
    assert drift["sent"] == drift["missing"] + drift["outdated"] + drift["withdrawn"] + drift["mode_mismatch"]
    assert check_outbound(first, deployment.urls.partners, deployment.home) == []  # read from the partners


@pytest.mark.parametrize("division", [p.division for p in REGISTRY.partners])
def test_nothing_lost_and_platform_holds_exactly_the_accepted_items(
    deployment: Deployment, first: SummaryFile, division: str
) -> None:
    report = deployment.report(first, division)
    counts = report["counts"]
    served = deployment.served(division)
    assert counts["fetched"] == len(served)
    # every served record is accounted for exactly once
    accepted = counts["added"] + counts["changed"] + counts["unchanged"]
    assert counts["quarantined"] + counts["rejected"] + accepted == counts["fetched"]
    assert counts["published"] == counts["added"] - len(report["platform_rejected"])
    # what the platform holds is exactly the served content of the accepted items
    bad = {r["task_code"] for r in report["rejected"]} | {q["task_code"] for q in report["quarantined"]}
    expected = {r["task_code"]: content_hash(r) for r in served if r["task_code"] not in bad}
    held = {r["task_code"]: content_hash(r) for r in deployment.platform.items(division)}
    assert held == expected
    # rejections say why, per element
    for rejected in report["rejected"]:
        assert rejected["findings"] and all(f["message"] for f in rejected["findings"])
    for quarantined in report["quarantined"]:
        assert quarantined["position"] and all(p["reason"] for p in quarantined["problems"])


def test_no_secret_is_in_any_log_archive_report_or_xcom_of_a_run(deployment: Deployment, first: SummaryFile) -> None:
    """Every file of the run's home (the simulators' logs, Airflow's database with its XComs, the raw archive,
    the run folders, the reports) and everything `airflow dags test` printed (the task logs), searched for
    each secret used: none."""
    kept = {SECRETS_FILE, PLATFORM_SECRET_FILE}  # the simulators' own secrets files hold them by design
    files = [p for p in deployment.home.rglob("*") if p.is_file() and p.name not in kept]
    kinds = {"log": 0, "archive": 0, "report": 0, "db": 0}
    for path in files:
        data = path.read_bytes()
        if path.suffix == ".gz":
            data = gzip.decompress(data)
        kinds["log"] += path.suffix == ".log"
        kinds["archive"] += "archive" in path.parts
        kinds["report"] += path.name.startswith("report.")
        kinds["db"] += path.name == "airflow.db"
        for secret in deployment.secrets:
            for form in {secret, json.dumps(secret)[1:-1], json.dumps(secret, ensure_ascii=False)[1:-1]}:
                assert form.encode() not in data, f"a secret in {path}"
    assert all(kinds.values()), kinds  # every kind of place was searched
    with sqlite3.connect(deployment.home / "airflow" / "airflow.db") as db:
        xcoms = [str(v) for (v,) in db.execute("SELECT value FROM xcom")]
    assert len(xcoms) > 20 and sum(len(out) for out in deployment.output) > 100_000  # the task logs
    for secret in deployment.secrets:
        assert not any(secret in x for x in xcoms) and not any(secret in out for out in deployment.output)
    assert ODD_SECRET in deployment.secrets and first.failed == []  # the odd secrets worked end to end


def test_defects_in_partner_data_are_caught(first: SummaryFile) -> None:
    totals = {k: sum(r.counts[k] for r in first.partners) for k in ("quarantined", "rejected")}
    assert totals["quarantined"] > 0 and totals["rejected"] > 0


def test_partners_disagreeing_within_a_province_are_caught_and_the_rest_published(
    deployment: Deployment, first: SummaryFile
) -> None:
    """The simulator's province quirks, and nothing else, fail 五级N同 across partners: the quirky partner's
    items are rejected naming the element and a partner it differs from; the others' are on the platform."""
    quirks = province_quirks(REGISTRY)
    assert len(quirks) == 4
    expected = {
        (q.partner, r["task_code"]): q
        for q in quirks
        for r in deployment.served(q.partner)
        if r["catalog_code"] == q.catalog_code
    }
    found = {
        (row.partner, rejected["task_code"]): finding
        for row in first.partners
        for rejected in deployment.report(first, row.partner)["rejected"]
        for finding in rejected["findings"]
        if finding["expectation"] == "five_level_across_partners"
    }
    assert set(found) == set(expected)
    for key, finding in found.items():
        quirk = expected[key]
        others = [p.name for p in REGISTRY.partners if p.division in quirk.holders and p.division != quirk.partner]
        assert finding["element"] == quirk.element and finding["severity"] == "critical"
        assert f"在{REGISTRY.partner(quirk.partner).name}" in finding["message"]
        assert any(f"与{name}" in finding["message"] for name in others), finding["message"]
    for quirk in quirks:
        for division in quirk.holders:
            held = [r for r in deployment.platform.items(division) if r["catalog_code"] == quirk.catalog_code]
            assert bool(held) is (division != quirk.partner), (quirk, division)
    runs = deployment.home / RUNS / first.run_id / PROVINCES
    records = {p.name: json.loads((p / FIVE_LEVEL).read_text(encoding="utf-8")) for p in runs.iterdir()}
    assert sorted(records) == ["370000", "440000"]
    assert sum(len(r["findings"]) for r in records.values()) == len(expected)
    assert all(r["compared"]["catalog_codes"] >= 90 for r in records.values())


@pytest.fixture(scope="module")
def second(deployment: Deployment, first: SummaryFile) -> SummaryFile:
    return deployment.run({"full_resync": True})  # a full pull: removals would show too


def test_unchanged_rerun_publishes_nothing(first: SummaryFile, second: SummaryFile) -> None:
    assert second.run_id != first.run_id
    assert second.failed == []
    assert {k: second.totals[k] for k in ("added", "changed", "removed", "published")} == dict.fromkeys(
        ("added", "changed", "removed", "published"), 0
    )
    assert all(r.outbound and r.outbound.sent == 0 and r.outbound.trend == 0 for r in second.partners)
    for before, after in zip(first.partners, second.partners, strict=True):
        b, a = before.counts, after.counts
        assert a["unchanged"] == b["added"] + b["changed"] + b["unchanged"]
        assert (a["quarantined"], a["rejected"]) == (b["quarantined"], b["rejected"])


def test_one_changed_item_is_published_alone_with_old_and_new_values(
    deployment: Deployment, second: SummaryFile
) -> None:
    target = next(r for r in deployment.unshared(CHANGED_PARTNER) if (r["promised_limit"] or 0) > 1)
    new_limit = target["promised_limit"] - 1
    patched = requests.patch(
        f"{deployment.urls.partners}/admin/partners/{CHANGED_PARTNER}/items/{target['task_code']}",
        json={"promised_limit": new_limit},
        timeout=30,
    )
    patched.raise_for_status()

    third = deployment.run({"partners": [CHANGED_PARTNER]})
    assert [r.partner for r in third.partners] == [CHANGED_PARTNER]
    report = deployment.report(third, CHANGED_PARTNER)
    assert report["counts"]["published"] == 1 and report["counts"]["changed"] == 1
    assert report["counts"]["added"] == report["counts"]["removed"] == 0
    [changed] = report["changed"]
    assert changed["task_code"] == target["task_code"]
    [element] = changed["changes"]
    assert element["element"] == "time_limit"
    assert element["old"]["promised_limit"] == target["promised_limit"]
    assert element["new"]["promised_limit"] == new_limit
    assert report["published"] == [{"task_code": target["task_code"], "op": "upsert"}]
    now = {r["task_code"]: r for r in deployment.platform.items(CHANGED_PARTNER)}
    assert now[target["task_code"]]["promised_limit"] == new_limit
    html = (UPath(third.partners[0].report).parent / REPORT_HTML).read_text(encoding="utf-8")
    assert target["task_code"] in html and "办结时限" in html


def test_partner_above_the_critical_rate_is_held_back_while_others_publish(
    deployment: Deployment, second: SummaryFile
) -> None:
    bad, good = "370300", "370100"
    before = {r["task_code"]: content_hash(r) for r in deployment.platform.items(bad)}
    for record in list(deployment.platform.items(bad))[:20]:  # 20% of 淄博's items lose their legal basis
        answer = requests.patch(
            f"{deployment.urls.partners}/admin/partners/{bad}/items/{record['task_code']}",
            json={"legal_basis": ""},
            timeout=30,
        )
        answer.raise_for_status()
    target = deployment.unshared(good)[0]
    requests.patch(
        f"{deployment.urls.partners}/admin/partners/{good}/items/{target['task_code']}",
        json={"result": "新的办理结果名称"},
        timeout=30,
    ).raise_for_status()

    deployment.env["TONGBAN_MAX_CRITICAL_RATE"] = "0.1"
    try:
        summary = deployment.run({"partners": [bad, good], "full_resync": True})
    finally:
        del deployment.env["TONGBAN_MAX_CRITICAL_RATE"]
    assert summary.held_back == [bad] and summary.failed == []
    held = deployment.report(summary, bad)
    assert held["held_back"] is True and held["counts"]["published"] == 0
    assert held["counts"]["rejected"] >= 20
    assert {r["task_code"]: content_hash(r) for r in deployment.platform.items(bad)} == before
    published = deployment.report(summary, good)
    assert published["counts"]["published"] == 1
    assert [c["task_code"] for c in published["changed"]] == [target["task_code"]]
    # in Airflow's grid the held-back partner's publishing tasks say so (they succeed: no state tells it)
    labels = deployment.map_labels(summary.run_id)
    bad_name, good_name = REGISTRY.partner(bad).name, REGISTRY.partner(good).name
    for task in ("reconcile", "publish", "report", "deliver"):
        assert f"{bad} {bad_name} · 暂缓发布" in labels[f"partner_publish.{task}"]
        assert f"{good} {good_name}" in labels[f"partner_publish.{task}"]


def test_a_partner_whose_pull_fails_does_not_block_the_others(deployment: Deployment, second: SummaryFile) -> None:
    failing, other = "441300", "440800"
    faults = f"{deployment.urls.partners}/admin/partners/{failing}/faults"
    requests.put(faults, json=[{"kind": "bad_signature"}], timeout=30).raise_for_status()
    try:
        summary = deployment.run({"partners": [failing, other]}, succeeds=False)
    finally:
        requests.delete(faults, timeout=30).raise_for_status()
    assert summary.failed == [failing]
    report = deployment.report(summary, other)
    assert report["counts"]["fetched"] > 0 and report["counts"]["rejected"] == 0
    province = deployment.home / RUNS / summary.run_id / PROVINCES / "440000" / FIVE_LEVEL
    roles = json.loads(province.read_text(encoding="utf-8"))["partners"]
    assert roles[failing]["role"] == "not_validated" and roles[failing]["context"] > 0  # its published items
    assert roles[other]["role"] == "judged"


def test_a_changed_item_of_ours_reaches_its_partners_and_a_failing_write_endpoint_blocks_nothing(
    deployment: Deployment, second: SummaryFile
) -> None:
    """One of our items changes on the platform: the next run sends exactly that change to the partners it is
    offered to, each report showing old and new; one of them cannot take writes: its inbound side still
    syncs, the failure is reported and the run after repairs it."""
    from tongban.outbound.client import LibraryClient

    entry = next(e for e in LibraryClient(deployment.platform).entries() if e["offer"]["offered"])
    partners = entry["offer"]["regions"][-3:]
    failing = partners[-1]
    new_result = entry["result"] + "（可邮寄送达）"
    requests.patch(
        f"{deployment.urls.platform}/admin/library/items/{entry['task_code']}", json={"result": new_result}, timeout=30
    ).raise_for_status()
    faults = f"{deployment.urls.partners}/admin/partners/{failing}/faults"
    # the endpoint asks for 1 s between attempts (Retry-After): each of the offer task's three tries fails after
    # its retries in 5 s, not in the 31 s of the client's own backoff
    unavailable = {"kind": "write_unavailable", "retry_after": 1}
    requests.put(faults, json=[unavailable], timeout=30).raise_for_status()
    try:
        summary = deployment.run({"partners": partners}, succeeds=False)
    finally:
        requests.delete(faults, timeout=30).raise_for_status()
    assert summary.failed == [] and summary.outbound_failed == [failing]
    for division in partners:
        report = deployment.report(summary, division)  # written for every partner, the failing one too
        outbound = report["outbound"]
        [outdated] = outbound["outdated"]
        assert outdated["task_code"] == entry["task_code"]
        assert outdated["changes"] == [
            {"element": "result", "label": "办理结果", "old": entry["result"], "new": new_result}
        ]
        if division == failing:
            assert outbound["status"] == "failed" and "503" in outbound["error"]
            assert (
                outbound["counts"]["sent"] == 0
                and outbound["counts"]["configured"] == outbound["counts"]["offered"] - 1
            )
            assert report["counts"]["fetched"] > 0  # its inbound sync went on
        else:
            assert outbound["status"] == "ok" and outbound["counts"]["sent"] == 1
            assert outbound["sent"] == [
                {"task_code": entry["task_code"], "op": "upsert", "status": "accepted", "reason": None}
            ]
    html = (UPath(deployment.report_path(summary, failing)).parent / REPORT_HTML).read_text(encoding="utf-8")
    assert "沅江事项在贵地配置情况" in html and new_result in html

    again = deployment.run({"partners": [failing]})
    [row] = again.partners
    assert row.outbound and row.outbound.status == "ok" and row.outbound.sent == 1 and row.outbound.trend == 1
    assert check_outbound(again, deployment.urls.partners, deployment.home) == []


def test_replay_cli_reproduces_a_real_dag_run(deployment: Deployment, first: SummaryFile) -> None:
    """Issue 12.5: `python -m tongban.replay <run id>` on the folder a real DAG run wrote (it holds the province
    check's provinces/ beside the partners) replays every partner, identical to the run."""
    import subprocess
    import sys

    assert (deployment.home / RUNS / first.run_id / PROVINCES).is_dir()
    done = subprocess.run(
        [sys.executable, "-m", "tongban.replay", first.run_id],
        env=deployment.env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert done.stdout.count("identical to the run") == len(REGISTRY.partners)
