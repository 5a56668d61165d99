"""The partner simulator's protocols: the GBK CSV export, authentication, incremental pulls, faults."""

from __future__ import annotations

import csv
import io
import json
import time
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import requests

from tongban.auth import request_headers
from tongban.registry import Fault, Registry, wire_formats
from tongban.simulators.catalogue import CHINA_TZ, reference_time
from tongban.simulators.credentials import SECRETS_FILE, derived_secret, partner_secrets
from tongban.simulators.launcher import SimulatorURLs, partner_base_url
from tongban.simulators.partners import FAULTS_FILE, create_partner_app

from .conftest import fetch_all, ground_truth, signed_get

NATIONAL, PINYIN, CSV = "440100", "440300", "441300"


def test_csv_export_is_gbk_with_camel_case_headers_and_its_own_codes(
    live: SimulatorURLs, secrets: dict[str, str]
) -> None:
    fmt = wire_formats()["csv_gbk"]
    url = partner_base_url(live, CSV) + fmt.path
    answer = signed_get(url, fmt, secrets[CSV], params={"pageSize": 500})
    assert answer.status_code == 200 and answer.headers["Content-Type"] == "text/csv; charset=GBK"
    with pytest.raises(UnicodeDecodeError):
        answer.content.decode("utf-8")  # really GBK, not UTF-8
    text = answer.content.decode("gbk")
    assert text.splitlines()[0] == ",".join(fmt.fields.values())
    rows = list(csv.DictReader(io.StringIO(text, newline="")))
    truth = {r["task_code"]: r for r in ground_truth(live.partners, CSV)}
    assert int(answer.headers["X-Total-Count"]) == len(rows) == len(truth)
    types = {"01": "许可", "02": "处罚", "04": "征收", "05": "给付", "07": "确认", "20": "公共服务"}
    for row in rows:
        r = truth[row["unifyId"]]
        assert row["unifyName"] == r["name"] and row["rightsCode"] == r["catalog_code"]
        assert row["typeName"] == types.get(r["item_type"], row["typeName"])
        assert row["exerciseLevel"] == {"2": "省级", "3": "市级", "4": "县级", "5": "乡镇级"}[r["level"]]
        assert row["commitmentLimit"] == str(r["promised_limit"])
        assert row["commitmentLimitUnit"] == {"WD": "G", "ND": "Z"}[r["promised_limit_unit"]]
        assert row["approveLimit"] == ("" if r["legal_limit"] is None else str(r["legal_limit"]))
        assert row["projectType"] == {"1": "即办件", "2": "承诺件", None: ""}[r["handle_type"]]
        assert row["serveObject"] == ",".join(r["service_objects"])
        local = datetime.fromisoformat(r["updated_at"]).astimezone(CHINA_TZ)
        assert row["updateTime"] == local.strftime("%Y/%m/%d %H:%M:%S")
        entries = row["materialList"].split(";")
        assert len(entries) == len(r["materials"])
        for entry, material in zip(entries, r["materials"], strict=True):
            name, required, form, copies, source = entry.split("|")
            assert (name, source) == (material["name"], material["source"])
            assert required == ("Y" if material["required"] else "N")
            assert form == {"paper": "纸质", "electronic": "电子", "both": "纸质及电子"}[material["form"]]
            assert copies == ("" if material["copies"] is None else str(material["copies"]))


# --- authentication -----------------------------------------------------------------------------


def _url(live: SimulatorURLs, division: str, registry: Registry) -> str:
    return partner_base_url(live, division) + wire_formats()[registry.partner(division).format].path


@pytest.mark.parametrize(
    ("division", "headers", "reason"),
    [
        (NATIONAL, {}, "缺少 API 密钥"),
        (NATIONAL, {"X-Api-Key": "wrong"}, "API 密钥无效"),
        (CSV, {}, "缺少访问令牌"),
        (CSV, {"Authorization": "Basic abc"}, "缺少访问令牌"),
        (CSV, {"Authorization": "Bearer wrong"}, "访问令牌无效"),
        (PINYIN, {}, "缺少签名请求头"),
        (PINYIN, {"X-Sx-Timestamp": "soon", "X-Sx-Nonce": "n", "X-Sx-Signature": "s"}, "不是整数秒"),
    ],
)
def test_requests_without_valid_credentials_are_refused_with_a_reason(
    registry: Registry, live: SimulatorURLs, division: str, headers: dict[str, str], reason: str
) -> None:
    answer = requests.get(_url(live, division, registry), headers=headers, timeout=10)
    assert answer.status_code == 401 and reason in answer.json()["error"]


def _signed(registry: Registry, url: str, secret: str, **kwargs: Any) -> dict[str, str]:
    auth = wire_formats()["pinyin_json"].auth
    return request_headers(
        auth, secret, "GET", urlsplit(url).path, algorithm=registry.partner(PINYIN).signature, **kwargs
    )


@pytest.mark.parametrize("skew", [-301, 301])
def test_stale_or_future_timestamps_are_refused(
    registry: Registry, live: SimulatorURLs, secrets: dict[str, str], skew: int
) -> None:
    url = _url(live, PINYIN, registry)
    headers = _signed(registry, url, secrets[PINYIN], clock=lambda: time.time() + skew)
    answer = requests.get(url, headers=headers, timeout=10)
    assert answer.status_code == 401 and "时间戳超出允许偏差（±300 秒）" in answer.json()["error"]
    near = _signed(registry, url, secrets[PINYIN], clock=lambda: time.time() + skew * 0.9)
    assert requests.get(url, headers=near, timeout=10).status_code == 200  # within the window


def test_a_replayed_nonce_is_refused(registry: Registry, live: SimulatorURLs, secrets: dict[str, str]) -> None:
    url = _url(live, PINYIN, registry)
    headers = _signed(registry, url, secrets[PINYIN])
    assert requests.get(url, headers=headers, timeout=10).status_code == 200
    again = requests.get(url, headers=headers, timeout=10)
    assert again.status_code == 401 and "已使用" in again.json()["error"]


def test_a_signature_over_another_path_or_with_another_key_is_refused(
    registry: Registry, live: SimulatorURLs, secrets: dict[str, str]
) -> None:
    url = _url(live, PINYIN, registry)
    for headers in (
        _signed(registry, url.replace(PINYIN, "440400"), secrets[PINYIN]),  # signed for another path
        _signed(registry, url, secrets["440400"]),  # another partner's key
    ):
        answer = requests.get(url, headers=headers, timeout=10)
        assert answer.status_code == 401 and answer.json()["error"] == "签名校验失败"


def test_secrets_are_derived_from_the_seed_kept_in_the_state_folder_and_distinct(
    registry: Registry, tmp_path: Path
) -> None:
    first = partner_secrets(tmp_path, registry)
    assert first == {p.division: derived_secret(registry.seed, p.division) for p in registry.partners}
    assert len(set(first.values())) == len(first)
    (tmp_path / SECRETS_FILE).write_text('{"440100": "rotated-key"}', encoding="utf-8")
    again = partner_secrets(tmp_path, registry)
    assert again["440100"] == "rotated-key" and again["440300"] == first["440300"]  # the file wins
    assert (tmp_path / SECRETS_FILE).stat().st_mode & 0o077 == 0


# --- incremental pulls --------------------------------------------------------------------------


@pytest.fixture
def app_url(registry: Registry, tmp_path: Path, serve: Callable[..., Any]) -> Iterator[str]:
    with serve(create_partner_app(registry, tmp_path)) as url:
        yield url


@pytest.mark.parametrize("division", [NATIONAL, PINYIN, CSV])
def test_incremental_parameter_returns_only_records_changed_since(
    registry: Registry, tmp_path: Path, app_url: str, division: str
) -> None:
    fmt = wire_formats()[registry.partner(division).format]
    assert fmt.incremental is not None
    secret = partner_secrets(tmp_path, registry)[division]
    target = ground_truth(app_url, division)[5]
    patched = requests.patch(
        f"{app_url}/admin/partners/{division}/items/{target['task_code']}", json={"result": "新的办理结果"}, timeout=10
    ).json()
    base = partner_base_url(SimulatorURLs(app_url, ""), division)
    since = reference_time(registry.seed).strftime(fmt.incremental.format)
    rows, markers = fetch_all(base, fmt, secret=secret, **{fmt.incremental.param: since})
    assert [r[fmt.fields["task_code"]] for r in rows] == [target["task_code"]]
    assert rows[0][fmt.fields["result"]] == "新的办理结果" and patched["updated_at"] > target["updated_at"]
    if fmt.paging.kind == "page":
        assert markers == [1]
    # the moment is inclusive: asking from the change's own time still returns it
    stamp = datetime.fromisoformat(patched["updated_at"]).astimezone(CHINA_TZ).strftime(fmt.incremental.format)
    rows, _ = fetch_all(base, fmt, secret=secret, **{fmt.incremental.param: stamp})
    assert len(rows) == 1
    later = (datetime.fromisoformat(patched["updated_at"]) + timedelta(seconds=1)).astimezone(CHINA_TZ)
    rows, _ = fetch_all(base, fmt, secret=secret, **{fmt.incremental.param: later.strftime(fmt.incremental.format)})
    assert rows == []


# --- fault profiles -----------------------------------------------------------------------------


def _catalogue(registry: Registry, app_url: str, tmp_path: Path, division: str, **params: Any) -> requests.Response:
    fmt = wire_formats()[registry.partner(division).format]
    secret = partner_secrets(tmp_path, registry)[division]
    return signed_get(partner_base_url(SimulatorURLs(app_url, ""), division) + fmt.path, fmt, secret, params=params)


def _set(app_url: str, division: str, *faults: dict[str, Any]) -> None:
    answer = requests.put(f"{app_url}/admin/partners/{division}/faults", json=list(faults), timeout=10)
    assert answer.status_code == 200, answer.text


def test_faults_are_set_listed_persisted_cleared_and_validated(
    registry: Registry, tmp_path: Path, serve: Callable[..., Any]
) -> None:
    with serve(create_partner_app(registry, tmp_path)) as url:
        assert requests.get(f"{url}/admin/partners/{NATIONAL}/faults", timeout=10).json()["faults"] == []
        _set(url, NATIONAL, {"kind": "schema_drift", "rename": {"task_name": "item_name"}, "times": 2})
        bad = requests.put(f"{url}/admin/partners/{NATIONAL}/faults", json=[{"kind": "gremlins"}], timeout=10)
        assert bad.status_code == 422 and bad.json()["error"]
        assert requests.put(f"{url}/admin/partners/999999/faults", json=[], timeout=10).status_code == 404
        for kind in ("non_objects", "wrong_types", "nested_body"):  # JSON only: on a CSV partner they would do nothing
            moot = requests.put(f"{url}/admin/partners/{CSV}/faults", json=[{"kind": kind, "page": 1}], timeout=10)
            assert moot.status_code == 422 and kind in moot.json()["error"] and "csv_gbk" in moot.json()["error"]
        assert requests.get(f"{url}/admin/partners/{CSV}/faults", timeout=10).json()["faults"] == []
        _set(url, PINYIN, {"kind": "non_objects", "page": 1})
    assert (tmp_path / FAULTS_FILE).exists()
    with serve(create_partner_app(registry, tmp_path)) as url:  # persisted across a restart
        [fault] = requests.get(f"{url}/admin/partners/{NATIONAL}/faults", timeout=10).json()["faults"]
        assert fault["kind"] == "schema_drift" and fault["rename"] == {"task_name": "item_name"}
        assert requests.delete(f"{url}/admin/partners/{NATIONAL}/faults", timeout=10).json()["faults"] == []
        assert _catalogue(registry, url, tmp_path, NATIONAL).status_code == 200


def test_registry_faults_are_the_starting_profile(
    registry: Registry, tmp_path: Path, serve: Callable[..., Any]
) -> None:
    faulty = registry.model_copy(
        update={
            "partners": [
                p.model_copy(update={"faults": (Fault(kind="server_error", status=502, times=1),)})
                if p.division == NATIONAL
                else p
                for p in registry.partners
            ]
        }
    )
    with serve(create_partner_app(faulty, tmp_path)) as url:
        assert _catalogue(faulty, url, tmp_path, NATIONAL).status_code == 502
        assert _catalogue(faulty, url, tmp_path, NATIONAL).status_code == 200  # times: 1
        assert _catalogue(faulty, url, tmp_path, PINYIN).status_code == 200


def test_each_fault_shows_on_the_wire(registry: Registry, tmp_path: Path, app_url: str) -> None:
    get = lambda division, **params: _catalogue(registry, app_url, tmp_path, division, **params)  # noqa: E731
    clean = get(NATIONAL, page=2).json()

    _set(app_url, NATIONAL, {"kind": "server_error", "times": 2})
    assert [get(NATIONAL).status_code for _ in range(3)] == [503, 503, 200]
    _set(app_url, NATIONAL, {"kind": "rate_limit", "retry_after": 7})
    limited = get(NATIONAL)
    assert limited.status_code == 429 and limited.headers["Retry-After"] == "7"
    _set(app_url, NATIONAL, {"kind": "slow", "delay": 0.3, "page": 2})
    started = time.monotonic()
    assert get(NATIONAL, page=2).status_code == 200 and time.monotonic() - started >= 0.3
    _set(app_url, NATIONAL, {"kind": "truncated"})
    with pytest.raises(ValueError):
        get(NATIONAL).json()
    _set(app_url, NATIONAL, {"kind": "invalid_json"})
    assert get(NATIONAL).text.startswith("<html>")
    _set(app_url, NATIONAL, {"kind": "wrong_encoding"})
    with pytest.raises(UnicodeDecodeError):
        get(NATIONAL).content.decode("utf-8")
    _set(app_url, CSV, {"kind": "wrong_encoding"})
    assert "unifyName" in get(CSV).content.decode("utf-8")  # UTF-8 where GBK was promised
    _set(app_url, NATIONAL, {"kind": "duplicate_page", "page": 2})
    doubled = get(NATIONAL, page=2).json()
    first = get(NATIONAL, page=1).json()
    assert doubled["data"] == first["data"] + clean["data"] and doubled["total"] == clean["total"]
    _set(app_url, NATIONAL, {"kind": "missing_page", "page": 2})
    assert get(NATIONAL, page=2).json()["data"] == [] and get(NATIONAL, page=3).json()["data"]
    _set(app_url, NATIONAL, {"kind": "schema_drift", "rename": {"task_name": "item_name"}, "add": {"is_charge": "0"}})
    row = get(NATIONAL).json()["data"][0]
    assert "task_name" not in row and row["item_name"] and row["is_charge"] == "0"
    _set(app_url, NATIONAL, {"kind": "oversized", "size": 3_000_000})
    assert len(get(NATIONAL).content) == 3_000_000
    _set(app_url, NATIONAL, {"kind": "bad_signature"})
    refused = get(NATIONAL)
    assert refused.status_code == 401 and refused.json()["error"] == "凭证无效"
    _set(app_url, PINYIN, {"kind": "bad_signature"})
    assert get(PINYIN).json()["error"] == "签名校验失败"


def test_each_bad_catalogue_fault_shows_on_the_wire(registry: Registry, tmp_path: Path, app_url: str) -> None:
    """The faults of issue 16: answers that are well-formed on the wire but would mislead a pull."""
    get = lambda division, **params: _catalogue(registry, app_url, tmp_path, division, **params)  # noqa: E731
    clean = get(NATIONAL).json()
    _set(app_url, NATIONAL, {"kind": "empty_catalogue"})
    empty = get(NATIONAL).json()
    assert (empty["total"], empty["data"]) == (0, [])
    _set(app_url, PINYIN, {"kind": "non_objects"})
    rows = get(PINYIN).json()["rows"]
    assert rows and all(isinstance(r, str) and json.loads(r) for r in rows)
    _set(app_url, NATIONAL, {"kind": "total_shrinks", "total": 30})
    shrunk = get(NATIONAL).json()
    assert shrunk["total"] == 30 and shrunk["data"] == clean["data"][:30]
    _set(app_url, NATIONAL, {"kind": "total_shrinks", "total": 30, "omit_total": True})
    assert "total" not in get(NATIONAL).json()
    _set(app_url, CSV, {"kind": "total_shrinks", "total": 30, "omit_total": True})
    assert "X-Total-Count" not in get(CSV).headers and get(CSV).status_code == 200
    _set(app_url, NATIONAL, {"kind": "wrong_types", "count": 3})
    numbers = [r["task_code"] for r in get(NATIONAL).json()["data"] if not isinstance(r["task_code"], str)]
    assert len(numbers) == 3 and all(isinstance(n, int) and len(str(n)) == 31 for n in numbers)
    _set(app_url, NATIONAL, {"kind": "future_timestamp", "count": 1, "stamp": "2099-12-31T08:00:00"})
    data = get(NATIONAL).json()["data"]
    assert data[0]["update_time"] == "2099-12-31 08:00:00" and data[1]["update_time"] < "2099"
    _set(app_url, NATIONAL, {"kind": "nested_body", "depth": 5000})
    assert "[" * 5000 in get(NATIONAL).text
    with pytest.raises(RecursionError):
        json.loads(get(NATIONAL).text)
