"""Fixtures for ingestion tests: one in-thread partner simulator, fast HTTP settings, a pull helper."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import requests
from upath import UPath

from tongban import layout, pipeline
from tongban.ingest import FetchSettings
from tongban.layout import run_dir
from tongban.model import content_hash
from tongban.registry import Partner, Registry, load_registry, wire_formats
from tongban.simulators.credentials import partner_secrets
from tongban.simulators.partners import create_partner_app
from tongban.storage import read_json, read_jsonl

from ..simulators.conftest import serving

NATIONAL, PINYIN, CSV = "440100", "440300", "441300"  # one partner of each wire format
SMALL = {"370700": 100, "370300": 100, "442000": 200}  # small partners of each format: csv, pinyin, national

# short waits: the whole suite must stay fast (retries still back off exponentially, with jitter)
FAST = FetchSettings(connect_timeout=2, read_timeout=2, retries=3, backoff=0.01, backoff_max=0.1, jitter=0.01)


@pytest.fixture(scope="session")
def registry() -> Registry:
    return load_registry()


@dataclass
class Partners:
    """The simulator of all partners, with helpers to set faults and read what it serves."""

    url: str
    state: Path
    registry: Registry

    def base(self, division: str) -> str:
        return f"{self.url}/partners/{division}"

    def secret(self, division: str) -> str:
        return partner_secrets(self.state, self.registry)[division]

    def faults(self, division: str, *faults: dict[str, Any]) -> None:
        answer = requests.put(f"{self.url}/admin/partners/{division}/faults", json=list(faults), timeout=10)
        assert answer.status_code == 200, answer.text

    def served(self, division: str) -> list[dict[str, Any]]:
        answer = requests.get(f"{self.url}/admin/partners/{division}/items", timeout=10)
        answer.raise_for_status()
        return answer.json()["items"]

    def patch(self, division: str, task_code: str, **changes: Any) -> dict[str, Any]:
        answer = requests.patch(f"{self.url}/admin/partners/{division}/items/{task_code}", json=changes, timeout=10)
        answer.raise_for_status()
        return answer.json()

    def delete(self, division: str, task_code: str) -> None:
        requests.delete(f"{self.url}/admin/partners/{division}/items/{task_code}", timeout=10).raise_for_status()


@pytest.fixture(scope="module")
def partners(registry: Registry, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Partners]:
    state = tmp_path_factory.mktemp("partner-sim")
    with serving(create_partner_app(registry, state)) as url:
        yield Partners(url, state, registry)


@pytest.fixture(autouse=True)
def _clean(request: pytest.FixtureRequest) -> Iterator[None]:
    """Every test starts with well-behaved partners and unchanged catalogues."""
    yield
    if "partners" in request.fixturenames:
        sim: Partners = request.getfixturevalue("partners")
        requests.post(f"{sim.url}/admin/reset", timeout=10).raise_for_status()


@pytest.fixture
def unused_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def store(tmp_path: Path) -> UPath:
    return UPath(tmp_path / "store")


def pull(
    sim: Partners, root: UPath, division: str, run_id: str = "run-1", **kwargs: Any
) -> tuple[dict[str, Any], UPath]:
    """pipeline.fetch then pipeline.normalise_partner of one partner, as the DAG runs them; their results' fields in
    one dict (normalise's ``duplicates`` over fetch's)."""
    partner = sim.registry.partner(division)
    run = run_dir(root, run_id, division)
    kwargs.setdefault("settings", FAST)
    secret = sim.secret(division)
    fetched = pipeline.fetch(partner, sim.base(division), run, secret=secret, root=root, run_id=run_id, **kwargs)
    return fetched.model_dump() | pipeline.normalise_partner(partner, run).model_dump(), run


def publish_marker(root: UPath, run_id: str, division: str, dry_run: bool = False) -> None:
    """What the publish stage leaves behind (a pull counts for the next one only once published)."""
    from tongban.storage import write_json

    write_json(run_dir(root, run_id, division) / layout.PUBLISH, {"dry_run": dry_run, "accepted": [], "rejected": []})


def assert_nothing_lost(run: UPath, served: list[dict[str, Any]], partner: Partner) -> None:
    """What the partner served equals what was stored plus what was quarantined, each exactly once."""
    items = list(read_jsonl(run / layout.ITEMS))
    quarantined = list(read_jsonl(run / layout.QUARANTINE))
    stored = [i["task_code"] for i in items]
    held = [q["task_code"] for q in quarantined]
    assert len(stored) == len(set(stored)), "a record was stored twice"
    assert sorted(stored + held) == sorted(r["task_code"] for r in served), "records lost or invented"
    truth = {r["task_code"]: r for r in served}
    assert all(content_hash(i) == content_hash(truth[i["task_code"]]) for i in items), "content changed on the way"
    fetched = read_json(run / layout.FETCH)["fetched"]
    manifest = read_json(run / layout.RAW / layout.MANIFEST)
    assert fetched == sum(e["records"] for e in manifest) == len(items) + len(quarantined)
    fmt = wire_formats()[partner.format]
    assert all(q["partner"] == partner.division and q["position"] and q["problems"] for q in quarantined), fmt.name


def assert_failed_cleanly(root: UPath, run: UPath, division: str) -> dict[str, Any]:
    """A failed pull stores nothing, keeps its attempts on record and does not move the watermark."""
    assert not (run / layout.ITEMS).exists()
    info = read_json(run / layout.FETCH)
    assert info["status"] == "failed" and info["error"]
    manifest = read_json(run / layout.RAW / layout.MANIFEST)
    assert manifest  # the attempts made are on record (the last one failed, or the pull as a whole did)
    assert all("sha256" in e for e in manifest if e.get("status") is not None)  # every answer archived
    from tongban import watermark

    assert run.parent.name not in watermark.load(root, division)["pulls"]
    return info
