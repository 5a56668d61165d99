"""待整改 (issue 12.4): a rejection stays on the partner's outstanding list across incremental nights, which do not
carry the item again, until a run publishes it fixed or a full pull no longer has it.

Four nights of one partner through the real reconcile, publish and report stages, against the platform simulator
and a real item store (SQLite and PostgreSQL); validation's outputs are written as it writes them.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from openpyxl import load_workbook
from upath import UPath

from tests.conftest import make_record
from tests.test_publish import region, store  # noqa: F401 (fixtures)
from tongban import layout, pipeline
from tongban.layout import report_dir, run_dir
from tongban.publish import PlatformClient
from tongban.registry import load_registry
from tongban.simulators.credentials import platform_credentials
from tongban.storage import write_json, write_jsonl
from tongban.store.repo import ItemStore

CRITICAL = "事项名称缺少法定依据：请补充设定依据"


def _finding(record: dict[str, Any]) -> dict[str, Any]:
    return {
        "row": 0,
        "task_code": record["task_code"],
        "element": "legal_basis",
        "expectation": "legal_basis_present",
        "severity": "critical",
        "message": CRITICAL,
    }


class Nights:
    def __init__(self, root: UPath, division: str, platform: Any, items: ItemStore) -> None:
        self.root, self.store = root, items
        self.partner = load_registry().partner("440100").model_copy(update={"division": division})
        self.client = PlatformClient(platform.platform, **platform_credentials(platform.state_dir))
        self.n = 0

    def night(
        self,
        accepted: list[dict[str, Any]],
        rejected: list[dict[str, Any]] = (),  # type: ignore[assignment]
        quarantined: list[str] = (),  # type: ignore[assignment]
        *,
        full: bool,
        dry_run: bool = False,
        run_id: str | None = None,
    ) -> dict[str, Any]:
        """One run of the partner from its validation's outputs on; returns report.json."""
        if run_id is None:
            self.n += 1
            run_id = f"scheduled__2026-11-{self.n:02d}T18:00:00+00:00"
        run = run_dir(self.root, run_id, self.partner.division)
        write_json(run / layout.FETCH, {"mode": "full" if full else "incremental", "status": "ok"})
        quarantine = [
            {"position": f"第1页第{i + 1}条", "task_code": code, "problems": [_problem()]}
            for i, code in enumerate(quarantined)
        ]
        write_jsonl(run / layout.ITEMS, [*accepted, *rejected])
        write_jsonl(run / layout.QUARANTINE, quarantine)
        write_jsonl(run / layout.ACCEPTED, accepted)
        write_jsonl(run / layout.REJECTED, [{"record": r, "findings": [_finding(r)]} for r in rejected])
        write_jsonl(run / layout.WARNINGS, [])
        write_json(run / layout.VALIDATION, {"held_back": False})
        records = len(accepted) + len(rejected) + len(quarantine)
        write_json(run / layout.RAW / layout.MANIFEST, [{"page": 1, "records": records}])
        pipeline.reconcile_partner(self.partner, run, self.client, self.store, run_id)
        pipeline.publish_partner(self.partner, run, self.client, self.store, run_id, dry_run)
        out = report_dir(self.root, run_id, self.partner.division)
        pipeline.write_report(self.partner, run, out, run_id, self.store)
        return json.loads((out / "report.json").read_bytes())


def _problem() -> dict[str, str]:
    return {"field": "task_code", "wire_field": "ssbm", "reason": "实施编码格式不正确"}


@pytest.fixture
def nights(tmp_path, simulators: Any, store: ItemStore, region: str) -> Nights:  # noqa: F811
    return Nights(UPath(tmp_path), region, simulators, store)


def test_rejection_stays_outstanding_until_fixed_or_withdrawn(nights: Nights, tmp_path) -> None:
    division = nights.partner.division
    a, b, c = (make_record(partner=division, catalog_code=f"0001{i:05d}000") for i in range(3))
    e_code = make_record(partner=division, catalog_code="000199999000")["task_code"]

    first = nights.night([a, c], [b], [e_code], full=True)
    assert first["counts"]["rejected"] == 1 and first["counts"]["outstanding"] == 2
    listed = {o["task_code"]: o for o in first["outstanding"]}
    assert listed[b["task_code"]]["reason"] == CRITICAL and listed[b["task_code"]]["kind_label"] == "退回"
    assert listed[b["task_code"]]["name"] == b["name"] and listed[b["task_code"]]["nights"] == 1
    assert listed[e_code]["kind"] == "quarantined" and listed[e_code]["reason"] == "实施编码格式不正确"

    # night 2: incremental, only c changed: the old main reported 退回 0 and nothing else
    second = nights.night([{**c, "result": "新的办理结果"}], full=False)
    assert second["counts"]["rejected"] == 0 and second["counts"]["changed"] == 1
    assert {o["task_code"]: o["nights"] for o in second["outstanding"]} == {b["task_code"]: 2, e_code: 2}
    assert all(o["first_run"] == first["run_id"] for o in second["outstanding"])
    again = nights.night([{**c, "result": "新的办理结果"}], full=False, run_id=second["run_id"])  # a task retry
    assert again["outstanding"] == second["outstanding"]
    dry = nights.night([b], full=False, dry_run=True)  # a dry run shows the list and changes nothing
    assert dry["counts"]["resolved"] == 0 and dry["counts"]["outstanding"] == 2

    # night 4: b delivered fixed and published: resolved; e not in this incremental pull: still open
    fourth = nights.night([b], full=False)
    assert [(r["task_code"], r["resolution"]) for r in fourth["resolved"]] == [(b["task_code"], "fixed")]
    assert [(o["task_code"], o["nights"]) for o in fourth["outstanding"]] == [(e_code, 3)]  # the dry run not counted
    html = (tmp_path / "reports" / fourth["run_id"] / division / "report.html").read_text(encoding="utf-8")
    assert "待整改（1）" in html and e_code in html and "已更正（平台上已是贵方提供的版本）" in html
    book = load_workbook(tmp_path / "reports" / fourth["run_id"] / division / "report.xlsx")
    rows = [r for r in book["待整改"].iter_rows(min_row=2, values_only=True)]
    fixed = (b["task_code"], "本次整改完成：已更正（平台上已是贵方提供的版本）", 2)
    assert [(r[0], r[2], r[6]) for r in rows] == [(e_code, "隔离", 3), fixed]

    # night 5: a full pull without e: withdrawn; the list is empty
    fifth = nights.night([a, b, c], full=True)
    assert fifth["outstanding"] == [] and [r["resolution"] for r in fifth["resolved"]] == ["withdrawn"]
    # found again later, it opens anew
    sixth = nights.night([a, c], [b], full=True)
    assert [(o["task_code"], o["nights"], o["first_run"]) for o in sixth["outstanding"]] == [
        (b["task_code"], 1, sixth["run_id"])
    ]
    assert {r["task_code"] for r in nights.store.outstanding(division)} == {b["task_code"], e_code}


def test_a_new_item_the_platform_refuses_is_listed_by_name(nights: Nights, tmp_path) -> None:
    """An item never published before, refused by the platform: its 待整改 row names it (the item store has no
    earlier name for it; the platform answers code and reason only), in report.json and on the HTML report."""
    import requests

    division = nights.partner.division
    ok, refused = (
        make_record(partner=division, catalog_code=f"0002{i:05d}000", name=f"拒收测试事项{i}") for i in range(2)
    )
    faults = f"{nights.client.base_url}/admin/faults"
    requests.put(
        faults, json={"reject": {refused["task_code"]: "该事项未在省级目录中登记"}}, timeout=5
    ).raise_for_status()
    try:
        night = nights.night([ok, refused], full=True)
    finally:
        requests.put(faults, json={}, timeout=5).raise_for_status()
    assert night["counts"]["platform_rejected"] == 1 and night["counts"]["published"] == 1
    [listed] = night["outstanding"]
    assert (listed["task_code"], listed["kind"]) == (refused["task_code"], "platform_rejected")
    assert listed["name"] == "拒收测试事项1" and listed["reason"] == "平台拒收：该事项未在省级目录中登记"
    html = (tmp_path / "reports" / night["run_id"] / division / "report.html").read_text(encoding="utf-8")
    section = html.split('<h2 id="outstanding">')[1].split("</table>")[0]  # 待整改
    [row] = [r for r in section.split("<tr>") if refused["task_code"] in r]
    assert "拒收测试事项1" in row
    refusals = html.split("<h2>平台拒收")[1].split("</table>")[0]  # and in the night's own 平台拒收 table
    [row] = [r for r in refusals.split("<tr>") if refused["task_code"] in r]
    assert "<th>事项名称</th>" in refusals and "拒收测试事项1" in row
    [sent] = night["platform_rejected"]
    assert sent["name"] == "拒收测试事项1"


def test_trace_cli_tells_what_happened_to_an_item_run_by_run(
    nights: Nights, tmp_path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Issue 12.9: `python -m tongban.trace <实施编码 or name>` from the run files and the item store."""
    from tongban import trace

    division = nights.partner.division
    a = make_record(partner=division, catalog_code="000200000000")
    b = make_record(partner=division, catalog_code="000200001000", name="出生医学证明补发")
    first = nights.night([a], [b], full=True)
    second = nights.night([{**a, "result": "新的办理结果"}], full=False)
    third = nights.night([b], full=False)
    monkeypatch.setenv("TONGBAN_STORAGE_URL", str(UPath(tmp_path)))
    monkeypatch.setenv("TONGBAN_DB_URL", nights.store.engine.url.render_as_string(hide_password=False))
    for query in (b["task_code"], b["name"][1:]):
        assert trace.main([query]) == 0
        out = capsys.readouterr().out
        assert f"{b['task_code']}  {b['name']}" in out and "平台：在平台上" in out
        assert "待整改：已更正（平台上已是贵方提供的版本）" in out and "持续 2 次运行" in out
        runs = out.split(f"  {third['run_id']}\n")[1]
        fixed, rest = runs.split(f"  {second['run_id']}\n")
        skipped, old = rest.split(f"  {first['run_id']}\n")
        assert "已推送（upsert），平台已确认接收" in fixed and "对账  新增" in fixed
        assert "增量拉取未包含" in skipped
        assert f"退回（关键校验，设定依据）：{CRITICAL}" in old  # the element in Chinese, as the report names it
    assert trace.main(["没有这个事项"]) == 1


def test_a_full_pull_whose_removals_are_held_withdraws_nothing_from_the_list(nights: Nights) -> None:
    """A full pull that lacks most of the catalogue (an answer cut short) has its removals held: the items it lacks
    are not withdrawn, so an outstanding item it lacks stays open too, its history kept (it was closed as
    「已撤回」, contradicting the held removals of the same report, and opened anew with its nights at 1)."""
    division = nights.partner.division
    items = [make_record(partner=division, catalog_code=f"0002{i:05d}000") for i in range(10)]
    wrong = make_record(partner=division, catalog_code="000299999000")
    first = nights.night(items, [wrong], full=True)
    assert [o["task_code"] for o in first["outstanding"]] == [wrong["task_code"]]

    cut = nights.night(items[:2], full=True)
    assert cut["removal_guard"] and len(cut["removal_guard"]["held"]) == 8 and cut["counts"]["removed"] == 0
    assert cut["resolved"] == []
    assert [(o["task_code"], o["nights"], o["first_run"]) for o in cut["outstanding"]] == [
        (wrong["task_code"], 2, first["run_id"])
    ]
