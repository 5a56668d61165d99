"""The conformance kit: passes on a partner server written from the page alone and on every simulator
format, and fails with a readable Chinese checklist on every fault profile of the simulator and on a partner
that ignores idempotency keys; the partner's configured list of 沅江's items is left as the kit found it."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import pytest
import requests

from tests.independent_partner import Partner as Independent
from tests.independent_partner import serving as independent
from tests.partner_texts import internal_in, offer_names
from tongban import conformance
from tongban.registry import FAULT_KINDS, load_registry, wire_formats
from tongban.simulators.credentials import partner_secrets
from tongban.simulators.partners import create_partner_app

from .simulators.conftest import serving

REGISTRY = load_registry()


@pytest.fixture(scope="module")
def sim(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    state = tmp_path_factory.mktemp("conformance")
    with serving(create_partner_app(REGISTRY, state)) as url:
        yield {"url": url, "secrets": partner_secrets(state, REGISTRY)}


def configured(sim: dict[str, Any], division: str) -> list[dict[str, Any]]:
    """The simulator's configured list of 沅江's items for one partner."""
    answer = requests.get(f"{sim['url']}/admin/partners/{division}/offers", timeout=10)
    assert answer.status_code == 200, answer.text
    return list(answer.json()["items"])


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
    partner = Independent("440100", secret, algorithm)
    found = partner.listed()
    with independent(partner) as url:
        code, out = run_kit(monkeypatch, capsys, "national_json", "440100", url, "--signature", algorithm)
    assert code == 0, out
    assert "0 项需修改" in out and "[需修改]" not in out and out.count("[通过]") >= 45
    assert "内容结论：读取的 23 条记录都能通过每日同步的映射和校验。" in out and "[退回]" not in out
    assert out.rstrip().endswith("接口符合约定，可以接入。")
    offer = [line for line in out.splitlines() if "沅江事项配置接口" in line]
    assert len(offer) >= 19 and all(line.startswith("[通过]") for line in offer), out
    assert '[通过]   沅江事项配置接口：同一幂等键、同一正文再次提交应答 200，正文 "replayed": true' in out
    assert partner.listed() == found and len(partner.batches) >= 5  # it wrote, and left the list as it found it
    monkeypatch.setenv(conformance.SECRET_ENV, "not the secret")
    with independent(Independent("440100", secret, algorithm)) as url:
        code, out = run_kit(monkeypatch, capsys, "national_json", "440100", url, "--signature", algorithm)
    assert code == 1 and "[需修改] 认证：按约定签名" in out


@pytest.mark.parametrize("division", ["440100", "440600", "440300", "441900", "441300", "440800"])
def test_the_kit_passes_the_interface_of_every_simulator_format_and_lists_its_defects(
    sim: dict[str, Any], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], division: str
) -> None:
    partner = REGISTRY.partner(division)
    monkeypatch.setenv(conformance.SECRET_ENV, sim["secrets"][division])
    url = f"{sim['url']}/partners/{division}"
    found = configured(sim, division)
    defects = requests.get(f"{sim['url']}/admin/partners/{division}/defects", timeout=10).json()["defects"]
    code, out = run_kit(monkeypatch, capsys, partner.format, division, url, "--signature", partner.signature)
    assert code == conformance.CONTENT_EXIT, out  # the interface conforms; the deliberate defects would not pass
    assert "[需修改]" not in out and "0 项需修改" in out
    assert "[通过]   沅江事项配置接口：撤销测试事项的操作被接受" in out
    assert configured(sim, division) == found  # the test items are withdrawn again
    # the content section lists each defect the nightly run would catch, and nothing else
    expected = {c: "隔离" if kind == "unmappable_code" else "退回" for c, kind in defects.items()}
    assert listed(out) == expected, out
    assert f"将被退回 {sum(v == '退回' for v in expected.values())} 条" in out
    assert f"内容结论：{len(expected)} 条记录在下一次同步时将被退回或隔离" in out
    fmt = wire_formats()[partner.format]
    assert internal_in(out, fmt, offer_names(fmt)) == [], out


def listed(out: str) -> dict[str, str]:
    """The records the kit's content section lists: 实施编码 -> 退回 or 隔离."""
    found = {}
    for line in out.splitlines():
        if line.startswith("  [退回] "):
            found[line.split()[1]] = "退回"
        elif line.startswith("  [隔离] "):
            found[line.split()[2]] = "隔离"
    return found


def wrong_check_character(record: dict[str, Any]) -> None:
    """A national_json record whose 实施主体's USCC (and so its 实施编码) ends in a wrong check character."""
    uscc = record["dept_code"]
    wrong = uscc[:17] + ("Q" if uscc[17] != "Q" else "R")
    record["dept_code"], record["task_code"] = wrong, wrong + record["task_code"][18:]


def test_the_kit_imports_gx_only_to_check_content() -> None:
    """GX is heavy: ``--help`` and a catalogue that cannot be read never wait for it."""
    code = "import sys, tongban.conformance; print('great_expectations' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], text=True, capture_output=True, check=True)
    assert out.stdout.strip() == "False", out


@pytest.mark.parametrize("bad", [1, 23], ids=["one record", "every record"])
def test_the_kit_lists_records_the_nightly_validation_would_reject(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], bad: int
) -> None:
    """A partner whose interface conforms but whose USCCs carry a wrong check character: the interface checks
    pass as before, the content section names each record with its 实施编码, 事项名称, the partner's fields and
    the reason, and the kit exits 3; every record wrong holds the whole partner back, and it says so."""
    secret = "the partner's secret"
    monkeypatch.setenv(conformance.SECRET_ENV, secret)
    partner = Independent("440100", secret, "HMAC-SHA256")
    for record in partner.records[:bad]:
        wrong_check_character(record)
    partner.records.sort(key=lambda r: r["task_code"])
    wrong = [r for r in partner.records if r["dept_code"].endswith("Q")]
    with independent(partner) as url:
        code, out = run_kit(monkeypatch, capsys, "national_json", "440100", url, "--no-offer")
    assert code == conformance.CONTENT_EXIT, out
    assert "[需修改]" not in out and "0 项需修改" in out  # the interface verdict is as before
    shown = wrong[: conformance.SHOWN_RECORDS]
    assert listed(out) == {r["task_code"]: "退回" for r in shown}, out
    first = wrong[0]
    assert (
        f"  [退回] {first['task_code']} {first['task_name']}\n"
        "         实施主体（dept_name、dept_code）：实施主体统一社会信用代码"
        f"「{first['dept_code']}」校验码错误：第 18 位应为「P」"
    ) in out
    assert f"读取 23 条：可以同步 {23 - bad} 条，将被退回 {bad} 条，将被隔离 0 条。" in out
    assert "同省各合作地区之间的五级N同比对" in out and "与省一体化平台上已发布版本的比较" in out  # not run here
    held = "下一次同步将整体暂缓推送"
    if bad == 1:
        assert held not in out and "接口符合约定，可以接入；1 条记录将被退回或隔离" in out
    else:
        assert "未通过关键校验或无法识别的记录 23/23 = 100% > 20%（超过暂缓阈值）" in out, out
        assert out.rstrip().endswith(f"接口符合约定；但按目前的目录，{held}，请先更正上面“内容检查”所列的记录。")
        assert f"（只列出前 {conformance.SHOWN_RECORDS} 条，共 23 条" in out
    fmt = wire_formats()["national_json"]
    assert internal_in(out, fmt) == [], out


def test_the_kit_fails_on_a_partner_that_ignores_idempotency_keys(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    secret = "the partner's secret"
    monkeypatch.setenv(conformance.SECRET_ENV, secret)
    partner = Independent("440100", secret, "HMAC-SHA256", idempotent=False)
    found = partner.listed()
    with independent(partner) as url:
        code, out = run_kit(monkeypatch, capsys, "national_json", "440100", url)
    assert code == 1, out
    failing = [line for line in out.splitlines() if line.startswith("[需修改]")]
    assert failing == [
        '[需修改] 沅江事项配置接口：同一幂等键、同一正文再次提交应答 200，正文 "replayed": true，结果与首次相同',
        "[需修改] 沅江事项配置接口：重放的批次没有再次生效（配置清单不变）",
        '[需修改] 沅江事项配置接口：同一幂等键、不同正文的批次被拒绝（409），正文为 {"error": "原因"}',
        "[需修改] 沅江事项配置接口：被拒绝（409）的批次没有生效（配置清单不变）",
    ], out
    assert '"replayed" 为 false（应为 true' in out and "同一批次被执行了两次" in out
    assert "新批次却被执行了" in out and "测试事项的可办理模式被改为 2：被拒绝的批次生效了" in out
    assert partner.listed() == found, out  # withdrawn again even though checks failed


def test_no_offer_skips_the_offer_endpoint_and_says_so(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    secret = "the partner's secret"
    monkeypatch.setenv(conformance.SECRET_ENV, secret)
    partner = Independent("440100", secret, "HMAC-SHA256", idempotent=False)  # its offer bug goes unseen
    with independent(partner) as url:
        code, out = run_kit(monkeypatch, capsys, "national_json", "440100", url, "--no-offer")
    assert code == 0, out
    assert "[提示]   沅江事项配置接口：未检查（--no-offer" in out and "0 项需修改" in out
    assert [line for line in out.splitlines() if "沅江事项配置接口" in line and "未检查" not in line] == []


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
    "write_unavailable": ({"status": 503}, "[需修改] 沅江事项配置接口：签名的写入批次"),
}


def test_every_fault_kind_has_a_profile() -> None:
    assert set(PROFILES) == set(FAULT_KINDS)


@pytest.mark.parametrize("kind", sorted(PROFILES))
def test_the_kit_fails_on_each_fault_profile_with_a_readable_checklist(
    sim: dict[str, Any], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], kind: str
) -> None:
    division = "442000"  # national_json, 200 records: two pages
    params, expected = PROFILES[kind]
    answer = requests.put(f"{sim['url']}/admin/partners/{division}/faults", json=[{"kind": kind, **params}], timeout=10)
    assert answer.status_code == 200, answer.text
    monkeypatch.setenv(conformance.SECRET_ENV, sim["secrets"][division])
    found = configured(sim, division)
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
    fmt = wire_formats()["national_json"]
    theirs = {new for _, new in params.get("rename", {}).items()} | offer_names(fmt)
    assert internal_in(out, fmt, theirs) == [], out  # readable: no internal names
    assert configured(sim, division) == found  # the kit leaves the configured list of 沅江's items as it was


# one partner of each format with the idempotency header docs/partner-formats.md §13 names for it
@pytest.mark.parametrize(
    ("division", "key_header"),
    [("442000", "Idempotency-Key"), ("440300", "X-Sx-Request-Id"), ("441300", "X-Request-Id")],
    ids=["national_json", "pinyin_json", "csv_gbk"],
)
def test_the_kit_names_each_refused_write_of_an_unavailable_offer_endpoint(
    sim: dict[str, Any],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    division: str,
    key_header: str,
) -> None:
    """Its reads work, every write answers 503 (docs/simulators.md): the two write checks fail, each
    naming the answer, in every format (csv_gbk's writes are GBK CSV, its answers JSON); the rest passes."""
    partner = REGISTRY.partner(division)
    fault = [{"kind": "write_unavailable", "status": 503}]
    requests.put(f"{sim['url']}/admin/partners/{division}/faults", json=fault, timeout=10).raise_for_status()
    monkeypatch.setenv(conformance.SECRET_ENV, sim["secrets"][division])
    found = configured(sim, division)
    try:
        code, out = run_kit(
            monkeypatch,
            capsys,
            partner.format,
            division,
            f"{sim['url']}/partners/{division}",
            "--signature",
            partner.signature,
        )
    finally:
        requests.delete(f"{sim['url']}/admin/partners/{division}/faults", timeout=10).raise_for_status()
    assert code == 1, out
    failing = [line for line in out.splitlines() if line.startswith("[需修改]")]
    assert failing == [
        f'[需修改] 沅江事项配置接口：缺少幂等键请求头 {key_header} 的写入请求被拒绝（400），正文为 {{"error": "原因"}}',
        "[需修改] 沅江事项配置接口：签名的写入批次（新增测试事项「接口联调测试事项（可删除）」）应答 200，"
        "每个操作一条结果（op、status、line，按请求顺序）",
    ], out
    assert out.count("事项配置接口维护中，暂不可写入") == 2, out
    # the refusal the check expected could not be judged: the line says the server failed, not what to change
    assert out.count("应答 HTTP 503（服务端错误，无法判断该请求是否会被按要求拒绝）：事项配置接口维护中") == 1, out
    assert "[通过]   沅江事项配置接口：配置清单记录按实施编码升序返回" in out  # reads are not affected
    assert "[通过]   沅江事项配置接口：检查结束后配置清单与检查前相同" in out
    fmt = wire_formats()[partner.format]
    assert internal_in(out, fmt, offer_names(fmt)) == [], out
    assert configured(sim, division) == found
