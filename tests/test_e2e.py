"""End to end: the real DAG under `airflow dags test` against the real simulators, as `make run` does it.

One module-scoped deployment (own TONGBAN_HOME, Airflow DB and simulator state). The runs build on
each other: first sync, an unchanged re-run, then one item changed at a partner.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from upath import UPath

from scripts.localenv import airflow, airflow_env, dags_test, ensure_pools
from scripts.run_local import check_against_platform, newest_summary
from tongban.connections import simulator_connections
from tongban.model import content_hash
from tongban.publish import PlatformClient
from tongban.registry import load_registry
from tongban.simulators.credentials import partner_secrets

pytestmark = pytest.mark.e2e

REGISTRY = load_registry()
CHANGED_PARTNER = "440300"  # a pinyin_json partner: the change crosses a real format mapping


class Deployment:
    def __init__(self, home: Path, urls: Any) -> None:
        self.home = home
        self.urls = urls
        divisions = [p.division for p in REGISTRY.partners]
        secrets = partner_secrets(home / "simulators", REGISTRY)
        self.env = airflow_env(home, simulator_connections(urls.partners, urls.platform, divisions, secrets))
        self.platform = PlatformClient(urls.platform)

    def run(self, conf: dict[str, Any] | None = None) -> dict[str, Any]:
        started = time.time()
        done = dags_test(self.env, conf, capture_output=True)
        summary_path = newest_summary(self.home / "reports", started)
        assert done.returncode == 0 and summary_path, done.stdout[-4000:] + done.stderr[-4000:]
        return json.loads(summary_path.read_text(encoding="utf-8"))

    def report(self, summary: dict[str, Any], division: str) -> dict[str, Any]:
        [row] = [r for r in summary["partners"] if r["partner"] == division]
        return json.loads(UPath(row["report"]).read_bytes())

    def served(self, division: str) -> list[dict[str, Any]]:
        answer = requests.get(f"{self.urls.partners}/admin/partners/{division}/items", timeout=30)
        answer.raise_for_status()
        return answer.json()["items"]


@pytest.fixture(scope="module")
def deployment(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    from tongban.simulators.launcher import running_simulators

    home = tmp_path_factory.mktemp("tongban-home")
    with running_simulators(home / "simulators") as urls:
        deployment = Deployment(home, urls)
        migrated = airflow("db", "migrate", env=deployment.env, capture_output=True)
        assert migrated.returncode == 0, migrated.stderr[-3000:]
        ensure_pools(deployment.env, [p.division for p in REGISTRY.partners])
        yield deployment


@pytest.fixture(scope="module")
def first(deployment: Deployment) -> dict[str, Any]:
    return deployment.run()


def test_first_run_syncs_every_partner(deployment: Deployment, first: dict[str, Any]) -> None:
    assert first["failed"] == []
    assert [r["partner"] for r in first["partners"]] == [p.division for p in REGISTRY.partners]
    assert first["totals"]["fetched"] == sum(p.items for p in REGISTRY.partners) == 2976
    assert check_against_platform(first, deployment.urls.platform) == []


@pytest.mark.parametrize("division", [p.division for p in REGISTRY.partners])
def test_nothing_lost_and_platform_holds_exactly_the_accepted_items(
    deployment: Deployment, first: dict[str, Any], division: str
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


def test_defects_in_partner_data_are_caught(first: dict[str, Any]) -> None:
    totals = {k: sum(r["counts"][k] for r in first["partners"]) for k in ("quarantined", "rejected")}
    assert totals["quarantined"] > 0 and totals["rejected"] > 0


@pytest.fixture(scope="module")
def second(deployment: Deployment, first: dict[str, Any]) -> dict[str, Any]:
    return deployment.run({"full_resync": True})  # a full pull: removals would show too


def test_unchanged_rerun_publishes_nothing(first: dict[str, Any], second: dict[str, Any]) -> None:
    assert second["run_id"] != first["run_id"]
    assert second["failed"] == []
    assert {k: second["totals"][k] for k in ("added", "changed", "removed", "published")} == dict.fromkeys(
        ("added", "changed", "removed", "published"), 0
    )
    for before, after in zip(first["partners"], second["partners"], strict=True):
        b, a = before["counts"], after["counts"]
        assert a["unchanged"] == b["added"] + b["changed"] + b["unchanged"]
        assert (a["quarantined"], a["rejected"]) == (b["quarantined"], b["rejected"])


def test_one_changed_item_is_published_alone_with_old_and_new_values(
    deployment: Deployment, second: dict[str, Any]
) -> None:
    target = next(r for r in deployment.platform.items(CHANGED_PARTNER) if (r["promised_limit"] or 0) > 1)
    new_limit = target["promised_limit"] - 1
    patched = requests.patch(
        f"{deployment.urls.partners}/admin/partners/{CHANGED_PARTNER}/items/{target['task_code']}",
        json={"promised_limit": new_limit},
        timeout=30,
    )
    patched.raise_for_status()

    third = deployment.run({"partners": [CHANGED_PARTNER]})
    assert [r["partner"] for r in third["partners"]] == [CHANGED_PARTNER]
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
    html = (UPath(third["partners"][0]["report"]).parent / "report.html").read_text(encoding="utf-8")
    assert target["task_code"] in html and "办结时限" in html


def test_partner_above_the_critical_rate_is_held_back_while_others_publish(
    deployment: Deployment, second: dict[str, Any]
) -> None:
    bad, good = "370300", "370100"
    before = {r["task_code"]: content_hash(r) for r in deployment.platform.items(bad)}
    for record in deployment.platform.items(bad)[:20]:  # 20% of 淄博's items lose their legal basis
        answer = requests.patch(
            f"{deployment.urls.partners}/admin/partners/{bad}/items/{record['task_code']}",
            json={"legal_basis": ""},
            timeout=30,
        )
        answer.raise_for_status()
    target = deployment.platform.items(good)[0]
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
    assert summary["held_back"] == [bad] and summary["failed"] == []
    held = deployment.report(summary, bad)
    assert held["held_back"] is True and held["counts"]["published"] == 0
    assert held["counts"]["rejected"] >= 20
    assert {r["task_code"]: content_hash(r) for r in deployment.platform.items(bad)} == before
    published = deployment.report(summary, good)
    assert published["counts"]["published"] == 1
    assert [c["task_code"] for c in published["changed"]] == [target["task_code"]]
