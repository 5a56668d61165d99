"""End to end through the real DAG (`airflow dags test`, real simulators): bad partner answers never take items
off the platform, a confirmed withdrawal removes exactly the withdrawn items, and a partner held back one night
is re-pulled and published the night it is fixed, without a full resync (issues 16 and 12).

Its own module-scoped deployment with two partners (a page-paged and a cursor-paged one), alerts going to a
webhook receiver on loopback through the `tongban_alerts` Connection. The runs build on each other.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
import requests

from scripts.localenv import airflow, ensure_pools
from tests.conftest import webhook_receiver
from tests.test_e2e import Deployment
from tongban.files import SummaryFile
from tongban.guard import percent
from tongban.model import content_hash

pytestmark = pytest.mark.e2e

PAGED, CURSOR = "442000", "370300"  # 中山市 national_json (page paging), 淄博市 pinyin_json (cursor paging)
LABELS = {PAGED: "442000 中山市", CURSOR: "370300 淄博市"}


class Guarded(Deployment):
    def __init__(self, *args: Any, hook: tuple[str, list[dict[str, Any]]]) -> None:
        super().__init__(*args)
        url, self.received = hook
        self.env["AIRFLOW_CONN_TONGBAN_ALERTS"] = json.dumps({"conn_type": "http", "host": url})

    def alerts(self, event: str, run_id: str) -> list[dict[str, Any]]:
        return [r["json"] for r in self.received if r["json"]["event"] == event and r["json"]["run_id"] == run_id]

    def faults(self, division: str, *faults: dict[str, Any]) -> None:
        url = f"{self.urls.partners}/admin/partners/{division}/faults"
        requests.put(url, json=list(faults), timeout=30).raise_for_status()

    def on_platform(self, division: str) -> dict[str, str]:
        return {r["task_code"]: content_hash(r) for r in self.platform.items(division)}


@pytest.fixture(scope="module")
def deployment(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Guarded]:
    from tongban.simulators.launcher import running_simulators

    home = tmp_path_factory.mktemp("tongban-guard-home")
    with webhook_receiver() as hook, running_simulators(home / "simulators") as urls:
        deployment = Guarded(home, urls, hook=hook)
        migrated = airflow("db", "migrate", env=deployment.env, capture_output=True)
        assert migrated.returncode == 0, migrated.stderr[-3000:]
        ensure_pools(deployment.env, [PAGED, CURSOR])
        yield deployment


@pytest.fixture(scope="module")
def before(deployment: Guarded) -> dict[str, dict[str, str]]:
    """A clean first night of both partners; what the platform then holds of each."""
    first = deployment.run({"partners": [PAGED, CURSOR]})
    assert first.failed == [] and first.held_back == []
    return {d: deployment.on_platform(d) for d in (PAGED, CURSOR)}


@pytest.fixture(scope="module")
def bad_night(deployment: Guarded, before: dict[str, dict[str, str]]) -> SummaryFile:
    """An empty catalogue from one partner, a cursor catalogue cut to 25 records without a total from the other."""
    deployment.faults(PAGED, {"kind": "empty_catalogue"})
    deployment.faults(CURSOR, {"kind": "total_shrinks", "total": 25, "omit_total": True})
    try:
        return deployment.run({"partners": [PAGED, CURSOR], "full_resync": True})
    finally:
        deployment.faults(PAGED)
        deployment.faults(CURSOR)


def test_bad_answers_leave_the_platform_unchanged_with_the_reason_and_an_alert(
    deployment: Guarded, before: dict[str, dict[str, str]], bad_night: SummaryFile
) -> None:
    assert bad_night.failed == [] and bad_night.held_back == []  # the run goes on: nothing failed
    assert bad_night.removals_held == [PAGED, CURSOR]
    for division, size in ((PAGED, 0), (CURSOR, 25)):
        assert deployment.on_platform(division) == before[division], division
        report = deployment.report(bad_night, division)
        guard = report["removal_guard"]
        assert report["counts"]["removed"] == 0 and report["counts"]["removals_held"] == guard["removals"] > 0
        assert {r["task_code"] for r in guard["held"]} == set(before[division]) - set(report["unchanged"])
        assert guard["size"] == size and guard["previous_size"] == len(deployment.served(division))
        assert f"{division}@{bad_night.run_id}" in guard["text"] and "> 20%" in guard["text"]
        [alert] = [a for a in deployment.alerts("removals_held", bad_night.run_id) if LABELS[division] in a["text"]]
        assert alert["error"].startswith(guard["text"]) and alert["task_id"] == "partner_publish.report"
        assert f'"confirm_removals": ["{division}@{bad_night.run_id}"]' in alert["error"]


@pytest.fixture(scope="module")
def withdrawn(deployment: Guarded, before: dict[str, dict[str, str]], bad_night: SummaryFile) -> list[str]:
    """The partner really withdraws 60 published items, and a person confirms the bad night's held removals."""
    codes = sorted(before[PAGED])[:60]
    for code in codes:
        url = f"{deployment.urls.partners}/admin/partners/{PAGED}/items/{code}"
        requests.delete(url, timeout=30).raise_for_status()
    confirmed = deployment.run({"partners": [PAGED], "confirm_removals": [f"{PAGED}@{bad_night.run_id}"]})
    report = deployment.report(confirmed, PAGED)
    assert report["full_pull"] and report["removal_guard"]["confirmed_run"] == bad_night.run_id
    return codes


def test_a_confirmed_mass_withdrawal_removes_exactly_the_withdrawn_items(
    deployment: Guarded, before: dict[str, dict[str, str]], withdrawn: list[str]
) -> None:
    after = deployment.on_platform(PAGED)
    assert set(before[PAGED]) - set(after) == set(withdrawn)
    assert after == {code: digest for code, digest in before[PAGED].items() if code not in withdrawn}


def test_a_partner_held_back_one_night_is_published_the_night_it_is_fixed(
    deployment: Guarded, withdrawn: list[str]
) -> None:
    alone = deployment.unshared(PAGED)  # changing one keeps 五级N同
    broken, fine = alone[:10], alone[10]["task_code"]
    patch = f"{deployment.urls.partners}/admin/partners/{PAGED}/items"
    for record in broken:
        requests.patch(f"{patch}/{record['task_code']}", json={"legal_basis": ""}, timeout=30).raise_for_status()
    requests.patch(f"{patch}/{fine}", json={"result": "新的办理结果"}, timeout=30).raise_for_status()
    kept = deployment.on_platform(PAGED)

    # an incremental night's rate is over the partner's catalogue (the 140 items left), not the 11 records pulled
    deployment.env["TONGBAN_MAX_CRITICAL_RATE"] = "0.05"
    try:
        held = deployment.run({"partners": [PAGED]})
    finally:
        del deployment.env["TONGBAN_MAX_CRITICAL_RATE"]
    assert held.held_back == [PAGED] and deployment.on_platform(PAGED) == kept
    report = deployment.report(held, PAGED)
    assert not report["full_pull"] and report["hold_back"]["failing"] == 10
    assert (report["hold_back"]["records"], report["hold_back"]["catalogue"]) == (11, len(kept))
    rate = f"10/{len(kept)} = {percent(10 / len(kept))} > 5%"
    assert f"{rate}（分母为贵方事项目录 {len(kept)} 条：本次增量拉取 11 条" in report["hold_back"]["text"]
    assert fine in {i["task_code"] for i in report["held_with_partner"]}
    [alert] = deployment.alerts("partner_held_back", held.run_id)
    assert LABELS[PAGED] in alert["text"] and "> 5%" in alert["error"] and "请按" in alert["error"]

    for record in broken:  # the partner fixes its records and says what the result is now
        fix = {"legal_basis": record["legal_basis"], "result": "更正后的办理结果"}
        requests.patch(f"{patch}/{record['task_code']}", json=fix, timeout=30).raise_for_status()
    fixed = deployment.run({"partners": [PAGED]})
    assert fixed.held_back == [] and fixed.failed == []
    report = deployment.report(fixed, PAGED)
    assert not report["full_pull"]  # an incremental pull from the last published one, not a full resync
    expected = sorted([*(r["task_code"] for r in broken), fine])
    assert sorted(c["task_code"] for c in report["changed"]) == expected
    served = {r["task_code"]: content_hash(r) for r in deployment.served(PAGED)}
    after = deployment.on_platform(PAGED)
    assert all(after[code] == served[code] for code in expected)


def test_one_bad_change_on_an_incremental_night_rejects_that_item_alone(deployment: Guarded) -> None:
    """An incremental night pulls only the partner's changes: one of its 2 changes failing a critical check is 1 of
    its whole catalogue, not 1 of 2 = 50% (which held the partner back whole, and again every night until that one
    item was fixed, its other changes with it): the bad change alone is rejected, the other published."""
    alone = deployment.unshared(PAGED)
    bad, good = alone[0], alone[1]
    patch = f"{deployment.urls.partners}/admin/partners/{PAGED}/items"
    requests.patch(f"{patch}/{bad['task_code']}", json={"legal_basis": ""}, timeout=30).raise_for_status()
    requests.patch(f"{patch}/{good['task_code']}", json={"result": "再次更新的办理结果"}, timeout=30).raise_for_status()
    kept = deployment.on_platform(PAGED)

    night = deployment.run({"partners": [PAGED]})
    assert night.held_back == [] and night.failed == []
    assert deployment.alerts("partner_held_back", night.run_id) == []
    report = deployment.report(night, PAGED)
    assert not report["full_pull"] and report["hold_back"] is None  # the 2 changes (and the pull's overlap)
    assert [r["task_code"] for r in report["rejected"]] == [bad["task_code"]]
    assert [c["task_code"] for c in report["changed"]] == [good["task_code"]]
    after = deployment.on_platform(PAGED)
    assert after[bad["task_code"]] == kept[bad["task_code"]]  # the platform keeps the item's published version
    served = {r["task_code"]: content_hash(r) for r in deployment.served(PAGED)}
    assert after[good["task_code"]] == served[good["task_code"]] != kept[good["task_code"]]
