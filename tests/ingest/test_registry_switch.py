"""TONGBAN_REGISTRY switches the whole pipeline, simulators included, to other partners without code changes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import requests
from upath import UPath

from tongban import pipeline
from tongban.connections import simulator_connections
from tongban.layout import run_dir
from tongban.registry import load_registry
from tongban.simulators.credentials import partner_secrets
from tongban.simulators.launcher import running_simulators

from .conftest import FAST, Partners, assert_nothing_lost

OTHER_REGISTRY = """\
home: {division: "430981", name: 沅江市}
seed: 20240601
partners:
  - {division: "441400", name: 梅州市, items: 30, format: national_json}
  - {division: "370800", name: 济宁市, items: 25, format: pinyin_json, full_resync_days: 3}
  - {division: "445100", name: 潮州市, items: 20, format: csv_gbk}
"""


def test_another_registry_file_switches_partners_everywhere(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "other-partners.yaml"
    path.write_text(OTHER_REGISTRY, encoding="utf-8")
    monkeypatch.setenv("TONGBAN_REGISTRY", str(path))
    registry = load_registry()
    divisions = [p.division for p in registry.partners]
    assert divisions == ["441400", "370800", "445100"] and registry.partner("370800").full_resync_days == 3

    state = tmp_path / "simulators"
    with running_simulators(state) as urls:  # a subprocess: it reads TONGBAN_REGISTRY from the environment
        secrets = partner_secrets(state, registry)
        env = simulator_connections(urls.partners, urls.platform, divisions, secrets)
        assert sorted(env) == sorted(
            ["AIRFLOW_CONN_TONGBAN_PLATFORM"] + [f"AIRFLOW_CONN_PARTNER_{d}" for d in divisions]
        )
        root = UPath(tmp_path / "store")
        sim = Partners(urls.partners, state, registry)
        for partner in registry.partners:
            conn = json.loads(env[f"AIRFLOW_CONN_PARTNER_{partner.division}"])
            assert conn["password"] == secrets[partner.division]  # the pipeline's only source of the secret
            run = run_dir(root, "run-1", partner.division)
            summary = pipeline.fetch(
                partner, conn["host"], run, secret=conn["password"], root=root, run_id="run-1", settings=FAST
            )
            pipeline.normalise_partner(partner, run)
            assert summary.fetched == partner.items
            assert_nothing_lost(run, sim.served(partner.division), partner)
        gone = requests.get(f"{urls.partners}/admin/partners/440100/items", timeout=10)
        assert gone.status_code == 404  # the packaged registry's partners are not served
