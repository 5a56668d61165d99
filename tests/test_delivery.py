"""Report delivery against the real partner simulator: once, idempotent, checksummed, run-scoped."""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from upath import UPath

from tests.conftest import make_record
from tests.ingest.conftest import Partners
from tongban import layout, pipeline, report
from tongban.archive import Archive
from tongban.delivery import DeliveryError, checksum, send_report
from tongban.files import PublishFile
from tongban.http import HttpSettings
from tongban.layout import report_dir, run_dir
from tongban.reconcile import reconcile
from tongban.registry import load_registry
from tongban.results import Delivered
from tongban.simulators.partners import create_partner_app
from tongban.storage import read_json, write_json
from tongban.store.repo import ItemStore

from .simulators.conftest import serving

FAST = HttpSettings(connect_timeout=2, read_timeout=5, retries=3, backoff=0.01, backoff_max=0.1, jitter=0.01)
ONE_OF_EACH_AUTH = ["440100", "440300", "441300"]  # one partner of each wire format (and its auth scheme)


class Sim(Partners):
    """The partner simulator, also asked what reports it received."""

    def received(self, division: str) -> list[dict[str, Any]]:
        answer = requests.get(f"{self.url}/admin/partners/{division}/reports", timeout=10)
        answer.raise_for_status()
        return answer.json()["reports"]


@pytest.fixture(scope="module")
def sim(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sim]:
    registry = load_registry()
    state = tmp_path_factory.mktemp("delivery-sim")
    with serving(create_partner_app(registry, state)) as url:
        yield Sim(url, state, registry)


def prepare(root: UPath, run_id: str, division: str, *, dry_run: bool = False, **report: Any) -> UPath:
    """What the stages before leave behind: publish.json in the run folder, report.json in the report folder.

    ``report``: fields of report.json to override (``stated_run``: the run id it states)."""
    write_json(run_dir(root, run_id, division) / layout.PUBLISH, {"dry_run": dry_run, "accepted": [], "rejected": []})
    content = {"partner": division, "run_id": report.pop("stated_run", run_id), "counts": {"fetched": 3, "added": 1}}
    content |= report
    return write_json(report_dir(root, run_id, division) / layout.REPORT_JSON, content).parent


def deliver(sim: Sim, root: UPath, run_id: str, division: str, **kwargs: Any) -> Delivered:
    partner = sim.registry.partner(division)
    kwargs.setdefault("secret", sim.secret(division))
    return pipeline.deliver(
        partner,
        run_dir(root, run_id, division),
        report_dir(root, run_id, division),
        run_id,
        kwargs.pop("base_url", sim.base(division)),
        settings=FAST,
        **kwargs,
    )


@pytest.mark.parametrize("division", ONE_OF_EACH_AUTH)
def test_delivered_once_recorded_and_archived(sim: Sim, tmp_path: Path, division: str) -> None:
    root, run_id = UPath(tmp_path), f"manual__once-{division}"
    out = prepare(root, run_id, division)
    sent = (out / layout.REPORT_JSON).read_bytes()
    result = deliver(sim, root, run_id, division)
    assert result.status == "delivered" and result.attempts == 1
    assert result.checksum == checksum(sent)
    [got] = [r for r in sim.received(division) if r["run_id"] == run_id]
    assert got["sha256"] == checksum(sent) and got["bytes"] == len(sent)
    record = read_json(out / layout.DELIVERY)
    assert record["status"] == "delivered" and record["checksum"] == checksum(sent) and record["at"]
    assert record["receipt"]["status"] == "received" and len(record["deliveries"]) == 1
    assert Archive(root).get(record["checksum"]) == sent  # exactly the bytes that went out


def test_redelivery_is_idempotent(sim: Sim, tmp_path: Path) -> None:
    root, run_id, division = UPath(tmp_path), "scheduled__again", "440100"
    out = prepare(root, run_id, division)
    first = deliver(sim, root, run_id, division)
    again = deliver(sim, root, run_id, division)  # a re-run task, or an answer lost on the way back
    assert (first.status, again.status) == ("delivered", "already_received")
    assert first.checksum == again.checksum
    assert [r["run_id"] for r in sim.received(division)].count(run_id) == 1
    record = read_json(out / layout.DELIVERY)
    assert [d["status"] for d in record["deliveries"]] == ["delivered", "already_received"]
    assert record["receipt"]["message"] == "已收到（重复投递）"


def test_other_content_for_a_delivered_run_is_refused(sim: Sim, tmp_path: Path) -> None:
    root, run_id, division = UPath(tmp_path), "scheduled__changed", "440300"
    prepare(root, run_id, division)
    deliver(sim, root, run_id, division)
    out = prepare(root, run_id, division, counts={"fetched": 4, "added": 2})  # the report changed afterwards
    with pytest.raises(DeliveryError, match="HTTP 409") as failed:
        deliver(sim, root, run_id, division)
    assert not failed.value.retryable
    assert read_json(out / layout.DELIVERY)["status"] == "failed"


def test_tampered_checksum_is_refused(sim: Sim) -> None:
    partner = sim.registry.partner("441300")
    body = json.dumps({"partner": "441300", "run_id": "scheduled__tampered", "counts": {}}).encode()
    kwargs: dict[str, Any] = {"secret": sim.secret("441300"), "settings": FAST}
    with pytest.raises(DeliveryError, match="HTTP 400") as failed:
        send_report(partner, sim.base("441300"), body + b" ", "scheduled__tampered", sha256=checksum(body), **kwargs)
    assert not failed.value.retryable and "校验和不符" in str(failed.value)
    assert not [r for r in sim.received("441300") if r["run_id"] == "scheduled__tampered"]


def test_wrong_run_is_refused(sim: Sim, tmp_path: Path) -> None:
    root, division = UPath(tmp_path), "440100"
    partner = sim.registry.partner(division)
    # the receiver: a report sent as another run's
    body = json.dumps({"partner": division, "run_id": "scheduled__a", "counts": {}}).encode()
    with pytest.raises(DeliveryError, match="HTTP 409"):
        send_report(partner, sim.base(division), body, "scheduled__b", secret=sim.secret(division), settings=FAST)
    # the sender: a report folder holding another run's report, and another run's folder, never go out
    prepare(root, "scheduled__b", division, stated_run="scheduled__a")
    with pytest.raises(DeliveryError, match="is the report of run scheduled__a"):
        deliver(sim, root, "scheduled__b", division)
    prepare(root, "scheduled__c", division)
    with pytest.raises(DeliveryError, match="is not this run's"):
        pipeline.deliver(
            partner,
            run_dir(root, "scheduled__c", division),
            report_dir(root, "scheduled__c", division),
            "x",
            "http://x",
        )
    assert not {"scheduled__a", "scheduled__b"} & {r["run_id"] for r in sim.received(division)}


def test_wrong_credentials_are_refused(sim: Sim, tmp_path: Path) -> None:
    root, run_id, division = UPath(tmp_path), "scheduled__creds", "440300"
    prepare(root, run_id, division)
    with pytest.raises(DeliveryError, match="HTTP 401") as failed:
        deliver(sim, root, run_id, division, secret="not-the-secret")
    assert not failed.value.retryable


def test_partner_down_is_retried_then_retryable(sim: Sim, tmp_path: Path) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    root, run_id, division = UPath(tmp_path), "scheduled__down", "441300"
    out = prepare(root, run_id, division)
    with pytest.raises(DeliveryError, match="still failing after 4 attempts") as failed:
        deliver(sim, root, run_id, division, base_url=f"http://127.0.0.1:{port}/partners/{division}")
    assert failed.value.retryable
    record = read_json(out / layout.DELIVERY)
    assert record["status"] == "failed" and record["attempts"] == 4


def test_dry_run_delivers_nothing(sim: Sim, tmp_path: Path) -> None:
    root, run_id, division = UPath(tmp_path), "manual__dry", "440100"
    prepare(root, run_id, division, dry_run=True)
    assert deliver(sim, root, run_id, division).status == "skipped"
    assert run_id not in {r["run_id"] for r in sim.received(division)}


def test_changes_of_a_run_whose_report_never_arrived_are_told_by_the_next_delivered_report(
    sim: Sim, tmp_path: Path
) -> None:
    """Issue 16 item 5: run 1 published and died before its report was delivered. Run 2's report tells of
    run 1's changes too; only once the partner holds it do they count as reported."""
    division, first, second = "440100", "manual__earlier-1", "manual__earlier-2"
    store = ItemStore(f"sqlite:///{tmp_path / 'items.db'}")
    a, b = (make_record(partner=division, catalog_code=f"00010400{i}000") for i in (1, 2))
    store.apply(first, division, [a, b], [])
    store.apply(second, division, [{**a, "result": "新的办理结果"}], [])
    earlier = store.unreported(division, second)
    assert [(h["run_id"], h["task_code"], h["kind"], h["name"]) for h in earlier] == [
        (first, a["task_code"], "added", a["name"]),
        (first, b["task_code"], "added", b["name"]),
    ]
    root = UPath(tmp_path)
    partner = sim.registry.partner(division)
    built = report.build(
        partner=partner,
        run_id=second,
        fetched=1,
        quarantined=[],
        rejected=[],
        warnings=[],
        recon=reconcile([], []),
        publish=PublishFile(dry_run=False, accepted=[], rejected=[]),
        earlier=earlier,
    )
    assert built.counts.earlier_unreported == 2 and {e.kind_label for e in built.earlier} == {"新增"}
    write_json(run_dir(root, second, division) / layout.PUBLISH, {"dry_run": False, "accepted": [], "rejected": []})
    out = report_dir(root, second, division)
    report.write(built, out)
    html = (out / layout.REPORT_HTML).read_text(encoding="utf-8")
    assert "此前未报告的变更（2）" in html and first in html and b["name"] in html

    with pytest.raises(DeliveryError):  # not delivered: nothing counts as told
        deliver(sim, root, second, division, store=store, secret="not-the-secret")
    assert len(store.unreported(division, "manual__earlier-3")) == 3
    assert deliver(sim, root, second, division, store=store).status == "delivered"
    assert store.unreported(division, "manual__earlier-3") == []
    assert {h["reported_run"] for code in (a, b) for h in store.history(division, code["task_code"])} == {second}


def test_receiver_answering_200_with_an_html_page_is_a_clean_failure_without_reposts(sim: Sim, tmp_path: Path) -> None:
    root, run_id, division = UPath(tmp_path), "scheduled__html", "440300"
    out = prepare(root, run_id, division)
    faults = f"{sim.url}/admin/partners/{division}/faults"
    requests.put(faults, json=[{"kind": "report_html", "times": 1}], timeout=10).raise_for_status()
    try:
        with pytest.raises(DeliveryError, match="answered HTTP 200 with text/html") as failed:
            deliver(sim, root, run_id, division)
    finally:
        requests.delete(faults, timeout=10).raise_for_status()
    assert not failed.value.retryable  # the DAG fails the task at once: no Airflow retries either
    record = read_json(out / layout.DELIVERY)
    assert (record["status"], record["attempts"]) == ("failed", 1)
    assert not [r for r in sim.received(division) if r["run_id"] == run_id]
    assert deliver(sim, root, run_id, division).status == "delivered"  # the receiver behaves again
