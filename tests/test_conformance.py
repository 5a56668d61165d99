"""The conformance kit: passes on a partner server written from the page alone and on every simulator
format, and fails with a readable Chinese checklist on every fault profile of the simulator."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import requests

from tests.independent_partner import serving as independent
from tests.partner_texts import internal_in
from tongban import conformance
from tongban.registry import FAULT_KINDS, WRITE_FAULTS, load_registry, wire_formats
from tongban.simulators.credentials import partner_secrets
from tongban.simulators.partners import create_partner_app

from .simulators.conftest import serving

REGISTRY = load_registry()


@pytest.fixture(scope="module")
def sim(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    state = tmp_path_factory.mktemp("conformance")
    with serving(create_partner_app(REGISTRY, state)) as url:
        yield {"url": url, "secrets": partner_secrets(state, REGISTRY)}


def run_kit(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], fmt: str, division: str, url: str, *extra: str
) -> tuple[int, str]:
    code = conformance.main(["--format", fmt, "--division", division, *extra, url])
    return code, capsys.readouterr().out


@pytest.mark.parametrize("algorithm", ["HMAC-SM3", "HMAC-SHA256"])
def test_the_kit_passes_on_a_server_written_from_the_page_alone(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], algorithm: str
) -> None:
    secret = 'a "secret" with; odd = characters & back\\slash'
    monkeypatch.setenv(conformance.SECRET_ENV, secret)
    with independent("440100", secret, algorithm) as url:
        code, out = run_kit(monkeypatch, capsys, "national_json", "440100", url, "--signature", algorithm)
    assert code == 0, out
    assert "0 项需修改" in out and "[需修改]" not in out and out.count("[通过]") >= 24
    monkeypatch.setenv(conformance.SECRET_ENV, "not the secret")
    with independent("440100", secret, algorithm) as url:
        code, out = run_kit(monkeypatch, capsys, "national_json", "440100", url, "--signature", algorithm)
    assert code == 1 and "[需修改] 认证：按约定签名" in out


@pytest.mark.parametrize("division", ["440100", "440600", "440300", "441900", "441300", "440800"])
def test_the_kit_passes_on_every_simulator_format_and_algorithm(
    sim: dict[str, Any], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], division: str
) -> None:
    partner = REGISTRY.partner(division)
    monkeypatch.setenv(conformance.SECRET_ENV, sim["secrets"][division])
    url = f"{sim['url']}/partners/{division}"
    code, out = run_kit(monkeypatch, capsys, partner.format, division, url, "--signature", partner.signature)
    assert code == 0, out
    assert "[需修改]" not in out and "0 项需修改" in out
    assert "数据：代码值都在约定的代码表中" in out  # a deliberate unmappable code is a remark, not a failure


# every fault the simulator can show, as a persistent profile, and the checklist line it must fail
PROFILES: dict[str, tuple[dict[str, Any], str]] = {
    "slow": ({"delay": 1.2}, "[需修改] 时延"),
    "server_error": ({"status": 503}, "[需修改] 认证：按约定签名"),
    "rate_limit": ({"retry_after": 0}, "[需修改] 认证：按约定签名"),
    "truncated": ({}, "[需修改] 编码与格式"),
    "invalid_json": ({}, "[需修改] 编码与格式"),
    "wrong_encoding": ({}, "[需修改] 编码与格式"),
    "duplicate_page": ({"page": 2}, "[需修改] 记录：同一实施编码只出现一次"),
    "missing_page": ({"page": 2}, "[需修改] 分页"),
    "schema_drift": ({"rename": {"task_name": "item_name"}}, "[需修改] 编码与格式"),
    "oversized": ({"page": 2, "size": 33 * 1024 * 1024}, "[需修改] 大小"),
    "bad_signature": ({}, "[需修改] 认证：按约定签名"),
    "empty_catalogue": ({}, "[需修改] 记录：目录不为空"),
    "non_objects": ({}, "[需修改] 字段：每条记录含约定的全部字段"),
    "total_shrinks": ({"total": 100, "omit_total": True}, "[需修改]"),
    "wrong_types": ({"count": 3}, "[需修改] 字段：每条记录含约定的全部字段"),
    "future_timestamp": ({"count": 2}, "[需修改] 字段：更新时间（update_time）不晚于当前时间"),
    "nested_body": ({"depth": 50}, "[需修改]"),
    "report_html": ({}, "[需修改] 报告接收"),
}


def test_every_fault_kind_has_a_profile() -> None:
    # write faults hit the outbound offer endpoint (docs/partner-formats.md §13), which the kit does not exercise
    assert set(PROFILES) == set(FAULT_KINDS) - set(WRITE_FAULTS)


@pytest.mark.parametrize("kind", sorted(PROFILES))
def test_the_kit_fails_on_each_fault_profile_with_a_readable_checklist(
    sim: dict[str, Any], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], kind: str
) -> None:
    division = "442000"  # national_json, 200 records: two pages
    params, expected = PROFILES[kind]
    answer = requests.put(f"{sim['url']}/admin/partners/{division}/faults", json=[{"kind": kind, **params}], timeout=10)
    assert answer.status_code == 200, answer.text
    monkeypatch.setenv(conformance.SECRET_ENV, sim["secrets"][division])
    try:
        code, out = run_kit(
            monkeypatch, capsys, "national_json", division, f"{sim['url']}/partners/{division}", "--max-seconds", "1"
        )
    finally:
        requests.delete(f"{sim['url']}/admin/partners/{division}/faults", timeout=10).raise_for_status()
    assert code == 1, out
    assert expected in out, out
    failing = [line for line in out.splitlines() if line.startswith("[需修改]")]
    assert failing and out.rstrip().endswith("请按上面的说明修改后重新检查。")
    theirs = {new for _, new in params.get("rename", {}).items()}
    assert internal_in(out, wire_formats()["national_json"], theirs) == [], out  # readable: no internal names
