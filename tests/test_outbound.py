"""The outbound direction end to end through its stages: 沅江's library read from the platform simulator,
validated, offered to every partner simulator in its own wire style; item store on SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from upath import UPath

from tests.test_publish import store  # noqa: F401  (the item store fixture: SQLite and PostgreSQL)
from tongban import layout
from tongban.files import OutboundFile, PublishFile
from tongban.http import HttpSettings
from tongban.ingest import FetchSettings
from tongban.layout import LIBRARY_CHECK
from tongban.outbound import stages
from tongban.outbound.client import OfferClient
from tongban.outbound.library import offer_for
from tongban.outbound.report import section
from tongban.outbound.wire import MODES
from tongban.publish import PlatformClient
from tongban.registry import load_registry
from tongban.results import Offered
from tongban.simulators.credentials import partner_secrets, platform_credentials
from tongban.simulators.launcher import SimulatorURLs, partner_base_url, running_simulators
from tongban.simulators.offers import drift_roles
from tongban.storage import read_json
from tongban.store.repo import ItemStore

REGISTRY = load_registry()
FETCH = FetchSettings(retries=1, backoff=0.01, jitter=0)
WRITE = HttpSettings(retries=2, backoff=0.01, jitter=0)


class World:
    """Fresh simulators, a storage root and an item store: runs of the outbound stages against them."""

    def __init__(self, urls: SimulatorURLs, state: Path, root: UPath, items: ItemStore) -> None:
        self.urls, self.root, self.store = urls, root, items
        self.secrets = partner_secrets(state, REGISTRY)
        self.platform = PlatformClient(urls.platform, **platform_credentials(state))

    def run(self, run_id: str) -> dict[str, Offered]:
        stages.library(REGISTRY, self.platform, self.root, run_id, self.store)
        return {
            p.division: stages.offer_partner(
                p,
                REGISTRY,
                self.root,
                run_id,
                partner_base_url(self.urls, p.division),
                self.store,
                secret=self.secrets[p.division],
                fetch_settings=FETCH,
                write_settings=WRITE,
            )
            for p in REGISTRY.partners
        }

    def configured(self, division: str) -> dict[str, dict[str, Any]]:
        """What the partner simulator holds (its admin view, not our files)."""
        answer = requests.get(f"{self.urls.partners}/admin/partners/{division}/offers", timeout=30)
        answer.raise_for_status()
        return {r["task_code"]: r for r in answer.json()["items"]}

    def patch(self, task_code: str, **changes: Any) -> dict[str, Any]:
        answer = requests.patch(f"{self.urls.platform}/admin/library/items/{task_code}", json=changes, timeout=30)
        assert answer.status_code == 200, answer.text
        return answer.json()

    def outbound(self, run_id: str, division: str) -> OutboundFile:
        found = stages.outbound_of(self.root, run_id, division)
        assert found is not None
        return found


@pytest.fixture(scope="module")
def fresh_simulators(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[SimulatorURLs, Path]]:
    state = tmp_path_factory.mktemp("outbound-sims")
    with running_simulators(state) as urls:
        yield urls, state


@pytest.fixture
def world(fresh_simulators: tuple[SimulatorURLs, Path], tmp_path: Path, store: ItemStore) -> World:  # noqa: F811
    """The module's simulators as they started (what an earlier test changed at the partners, their configured
    offers and faults, and in the platform's library, is dropped), a new storage root and item store."""
    urls, state = fresh_simulators
    requests.post(f"{urls.partners}/admin/reset", timeout=30).raise_for_status()
    requests.post(f"{urls.platform}/admin/library/reset", timeout=30).raise_for_status()
    return World(urls, state, UPath(tmp_path / "home"), store)


def offer_of(world: World, run_id: str, division: str) -> dict[str, dict[str, Any]]:
    return offer_for(stages.home_run(world.root, run_id, REGISTRY), division)


def same(offer: dict[str, dict[str, Any]], held: dict[str, dict[str, Any]]) -> bool:
    from tongban.outbound.diff import digest

    return {c: digest(r) for c, r in offer.items()} == {c: digest(r) for c, r in held.items()}


def test_every_drift_is_found_repaired_and_a_rerun_sends_nothing(world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    reads: list[str] = []
    configured = OfferClient.configured

    def counted(self: OfferClient) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        reads.append(self.partner.division)
        return configured(self)

    monkeypatch.setattr(OfferClient, "configured", counted)
    first = world.run("r1")
    library = read_json(stages.home_run(world.root, "r1", REGISTRY) / LIBRARY_CHECK)
    assert library["offered"] == 99 and library["rejected"] > 0 and library["not_offered"] == 0
    assert sum(s.offered for s in first.values()) == library["offers"]
    roles = {role: division for division, role in drift_roles(REGISTRY).items()}
    kinds = {"behind": "outdated", "missing": "missing", "withdrawn": "withdrawn", "mode_mismatch": "mode_mismatch"}
    for role, kind in kinds.items():
        summary = first[roles[role]]
        assert getattr(summary, kind) > 0 and summary.sent == getattr(summary, kind), (role, summary)
        assert all(getattr(summary, k) == 0 for k in kinds.values() if k != kind), (role, summary)
    behind = world.outbound("r1", roles["behind"]).diff["outdated"]
    assert {e["element"] for c in behind for e in c["changes"]} == {"time_limit", "materials"}
    report = section(world.outbound("r1", roles["mode_mismatch"]))
    assert report.mode_mismatch and all(m.extra != "（无）" or m.lacking != "（无）" for m in report.mode_mismatch)
    for partner in REGISTRY.partners:
        assert first[partner.division].status == "ok"
        assert first[partner.division].configured == first[partner.division].offered
        assert same(offer_of(world, "r1", partner.division), world.configured(partner.division))

    divisions = [p.division for p in REGISTRY.partners]
    # every partner's list is read, and read back after a write; one already in line is read once
    assert sorted(reads) == sorted(divisions + [d for d in divisions if first[d].sent])
    reads.clear()
    second = world.run("r2")
    assert all(s.sent == 0 and s.configured == s.offered for s in second.values())
    assert sorted(reads) == sorted(divisions)
    assert all(getattr(s, k) == 0 for s in second.values() for k in kinds.values())


def test_a_changed_item_goes_to_its_partners_only_and_an_invalid_one_keeps_the_previous_version(world: World) -> None:
    world.run("r1")
    offer = read_json(stages.home_run(world.root, "r1", REGISTRY) / "offer.json")["items"]
    narrow = next(o for o in offer if len(o["regions"]) < len(REGISTRY.partners))
    code, old_result = narrow["record"]["task_code"], narrow["record"]["result"]
    new_result = old_result + "（电子证照同步发放）"
    world.patch(code, result=new_result)
    second = world.run("r2")
    for division, summary in second.items():
        if division in narrow["regions"]:
            assert (summary.sent, summary.outdated) == (1, 1), (division, summary)
            [outdated] = world.outbound("r2", division).diff["outdated"]
            assert outdated["task_code"] == code
            assert outdated["changes"] == [
                {
                    "element": "result",
                    "label": "办理结果",
                    "old": old_result,
                    "new": old_result + "（电子证照同步发放）",
                }
            ]
            assert world.configured(division)[code]["result"].endswith("（电子证照同步发放）")
        else:
            assert summary.sent == 0 and code not in world.configured(division)

    # the next version is invalid (empty 设定依据): not offered; the partners keep the valid one
    world.patch(code, legal_basis="")
    third = world.run("r3")
    assert all(s.sent == 0 for s in third.values())
    check = read_json(stages.home_run(world.root, "r3", REGISTRY) / LIBRARY_CHECK)
    [flagged] = [f for f in check["flagged"] if f["task_code"] == code]
    assert flagged["consequence"] == "previous_version_offered" and flagged["rejected"]
    assert any(f["element"] == "legal_basis" and f["severity"] == "critical" for f in flagged["findings"])
    internal = (world.root / "reports" / "r3" / "internal" / "library_check.html").read_text()
    assert code in internal and "继续提供" in internal
    division = narrow["regions"][0]
    assert world.configured(division)[code]["legal_basis"] == narrow["record"]["legal_basis"]
    assert code in offer_of(world, "r3", division)


def test_a_failing_write_endpoint_is_reported_and_retried_next_run(world: World) -> None:
    failing = drift_roles(REGISTRY)
    division = next(d for d, role in failing.items() if role == "missing")
    faults = f"{world.urls.partners}/admin/partners/{division}/faults"
    requests.put(faults, json=[{"kind": "write_unavailable"}], timeout=30).raise_for_status()
    first = world.run("r1")
    summary = first[division]
    assert summary.status == "failed" and summary.error and "503" in summary.error
    assert summary.missing > 0 and summary.sent == 0
    assert summary.configured == summary.offered - summary.missing
    assert all(s.status == "ok" for d, s in first.items() if d != division)  # the others are not held up
    report = section(world.outbound("r1", division))
    assert report.status == "failed" and report.error and len(report.missing) == summary.missing

    requests.delete(faults, timeout=30).raise_for_status()
    second = world.run("r2")
    assert second[division].status == "ok" and second[division].sent == summary.missing
    assert same(offer_of(world, "r2", division), world.configured(division))
    assert all(r[MODES] for r in world.configured(division).values())


def test_the_partner_report_shows_the_section_in_json_html_and_xlsx(world: World, tmp_path: Path) -> None:
    from openpyxl import load_workbook

    from tongban import report as reports
    from tongban.reconcile import Reconciliation
    from tongban.report_model import PartnerReport

    world.run("r1")
    division = next(d for d, role in drift_roles(REGISTRY).items() if role == "behind")
    outbound = world.outbound("r1", division)
    built = reports.build(
        partner=REGISTRY.partner(division),
        run_id="r1",
        fetched=0,
        quarantined=[],
        rejected=[],
        warnings=[],
        recon=Reconciliation(),
        publish=PublishFile(dry_run=False, accepted=[], rejected=[]),
        outbound=outbound,
    )
    paths = reports.write(built, UPath(tmp_path / "report"))
    loaded = PartnerReport.load(Path(paths["report_json"]).read_bytes())
    assert loaded.outbound is not None and loaded.outbound.counts.outdated == len(outbound.diff["outdated"]) > 0
    change = loaded.outbound.outdated[0].changes[0]
    html = Path(paths["report_html"]).read_text()
    assert "沅江事项在贵地配置情况" in html and loaded.outbound.outdated[0].task_code in html
    sheet = load_workbook(paths["report_xlsx"])["沅江事项在贵地配置情况"]
    rows = [[c.value for c in row] for row in sheet.iter_rows()]
    assert rows[0] == ["类别", "实施编码", "事项名称", "要素", "贵地现值", "沅江提供值"]
    outdated = [r for r in rows if r[0] == "版本落后"]
    assert len(outdated) == sum(len(c.changes) for c in loaded.outbound.outdated)
    assert outdated[0][1] == loaded.outbound.outdated[0].task_code and outdated[0][3] == change.label
    # the partner reads every value and count in Chinese: no Python/JSON structure, English key or code
    assert [r[3] for r in rows if r[0] == "汇总"] == [
        "状态",
        "提供",
        "已正确配置",
        "未配置",
        "版本落后",
        "已撤销仍在配置",
        "办理模式不一致",
        "本次发送",
    ]
    assert {r[4] for r in rows if r[0] == "本次发送"} <= {"已接受", "被拒绝"}
    english = ("legal_limit", "promised_limit", "'form'", '"form"', "'name'", '"name"', "electronic", "paper")
    for value in [v for r in outdated for v in r[4:]] + [html]:
        assert not any(word in str(value) for word in english), value


def test_the_summary_gives_every_partner_both_directions_with_a_trend(tmp_path: Path) -> None:
    """summary.json: an ``outbound`` object per partner (not_run without an offer this run), the trend against the
    run before (or, without one, against what the partner held when this run started), the failed offers."""
    from tongban.files import SummaryPartner
    from tongban.outbound.report import ours_cell, summary_outbound
    from tongban.storage import write_json

    root = UPath(tmp_path)
    reports = root / "reports"

    def offer(run_id: str, division: str, configured: int | None, status: str = "ok", before: int = 90) -> None:
        counts = {"offered": 92, "configured": configured, "missing": 2, "outdated": 0, "withdrawn": 0}
        counts |= {"mode_mismatch": 0, "sent": 2 if status == "ok" else 0}
        record = {"status": status, "error": None if status == "ok" else "HTTP 503", "dry_run": False, "counts": counts}
        record |= {"diff": {}, "results": [], "not_configured": []}
        write_json(root / "runs" / run_id / division / layout.OUTBOUND, record | {"configured_before": before})

    offer("r1", "440100", 92)
    offer("r1", "440300", 90, "failed")
    found = summary_outbound(root, reports, "r1", ["440100", "440300", "440600"])
    assert [d for d, o in found.items() if o.status != "ok"] == ["440300", "440600"]
    assert found["440100"].trend == 2 and ours_cell(found["440100"]) == "92/92 +2"  # against the start of the run
    assert found["440300"].status == "failed" and ours_cell(found["440300"]) == "90/92 ±0 !"
    assert found["440300"].error == "HTTP 503" and found["440100"].missing == 2
    assert found["440600"].status == "not_run" and found["440600"].sent is None
    assert ours_cell(found["440600"]) == "-"
    rows = [SummaryPartner(partner=d, outbound=o) for d, o in found.items()]
    write_json(reports / "r1" / "summary.json", {"run_id": "r1", "partners": rows})

    offer("r2", "440100", 91, before=92)
    offer("r2", "440300", 92, before=90)
    found = summary_outbound(root, reports, "r2", ["440100", "440300"])
    assert [o.status for o in found.values()] == ["ok", "ok"]
    assert [o.trend for o in found.values()] == [-1, 2]  # against the end of r1 (read back typed)


def test_a_summary_rows_outbound_names_every_offer_count() -> None:
    from dataclasses import fields

    from tongban.files import SummaryOutbound
    from tongban.outbound.diff import COUNT_KEYS

    assert set(COUNT_KEYS) <= {f.name for f in fields(SummaryOutbound)}


def test_a_dead_runs_offer_batches_are_settled_and_a_superseded_run_offers_nothing(world: World) -> None:
    from tongban.publish import StaleRun
    from tongban.store.schema import OFFER

    partner = REGISTRY.partners[0]
    division = partner.division

    def offer(run_id: str) -> Offered:
        stages.library(REGISTRY, world.platform, world.root, run_id, world.store)
        return stages.offer_partner(
            partner,
            REGISTRY,
            world.root,
            run_id,
            partner_base_url(world.urls, division),
            world.store,
            secret=world.secrets[division],
            fetch_settings=FETCH,
            write_settings=WRITE,
        )

    # a run that died mid-offer: one batch noted but never sent, one sent and never answered
    world.store.claim_sequence(division, "dead")
    world.store.ledger_plan("dead", division, [("offer-a", 3, None), ("offer-b", 2, None)], direction=OFFER)
    world.store.ledger_sent("offer-b")
    assert [r["status"] for r in world.store.unsettled(division, direction=OFFER)] == ["pending", "sent"]

    assert offer("next").status == "ok"
    assert world.store.unsettled(division, direction=OFFER) == []  # nothing left pending
    assert world.store.ledger_entry("offer-a")["status"] == "unsent"
    assert world.store.ledger_entry("offer-b")["status"] == "superseded"
    written = read_json(world.root / "runs" / "next" / division / layout.OUTBOUND)  # who reads it: people (runbook)
    settled = {s["key"]: (s["was"], s["now"]) for s in written["settled"]}
    assert settled == {"offer-a": ("pending", "unsent"), "offer-b": ("sent", "superseded")}
    configured = world.configured(division)
    assert same(offer_of(world, "next", division), configured)

    # the dead run resumed after the newer one: it offers nothing, the partner's list stays as it is
    with pytest.raises(StaleRun, match="superseded"):
        offer("dead")
    assert world.configured(division) == configured
