"""The partner simulator over real HTTP: paging every format, wire codes, errors, admin changes."""

from __future__ import annotations

import base64
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
import requests

from tongban.registry import Registry, wire_formats
from tongban.simulators.catalogue import CHINA_TZ, UNMAPPABLE_ITEM_TYPE, defects
from tongban.simulators.credentials import partner_secrets
from tongban.simulators.launcher import SimulatorURLs, partner_base_url
from tongban.simulators.partners import OVERRIDES_FILE, create_partner_app

from .conftest import fetch_all, ground_truth, signed_get

NATIONAL, PINYIN, CSV = "440100", "440300", "441300"  # partners.yaml: national_json, pinyin_json, csv_gbk


@pytest.mark.parametrize("size", [None, 37, 500])
def test_every_partner_pages_to_exactly_its_ground_truth(
    registry: Registry, live: SimulatorURLs, secrets: dict[str, str], size: int | None
) -> None:
    chosen = (NATIONAL, PINYIN, CSV)
    partners = registry.partners if size is None else [registry.partner(d) for d in chosen]
    for partner in partners:
        fmt = wire_formats()[partner.format]
        truth = ground_truth(live.partners, partner.division)
        rows, markers = fetch_all(partner_base_url(live, partner.division), fmt, size, secrets[partner.division])
        codes = [row[fmt.fields["task_code"]] for row in rows]
        assert len(codes) == len(set(codes)) == partner.items, partner.division
        assert codes == [r["task_code"] for r in truth]  # same set, stable sorted order
        if fmt.paging.kind == "page":
            assert set(markers) == {partner.items}
        else:
            cursors = markers[:-1]
            assert markers[-1] is None and len(set(cursors)) == len(cursors)
            assert not any(code in c for c in cursors for code in codes)  # opaque, not the code itself


def _decode(fmt_name: str, dictionary: str, wire: Any) -> Any:
    return wire_formats()[fmt_name].to_canonical(dictionary)[wire]


def test_pinyin_rows_carry_pinyin_codes_strings_and_local_time(
    registry: Registry, live: SimulatorURLs, secrets: dict[str, str]
) -> None:
    fmt = wire_formats()["pinyin_json"]
    truth = {r["task_code"]: r for r in ground_truth(live.partners, PINYIN)}
    rows, _ = fetch_all(partner_base_url(live, PINYIN), fmt, secret=secrets[PINYIN])
    listed = requests.get(f"{live.partners}/admin/partners/{PINYIN}/defects", timeout=10).json()["defects"]
    assert listed == defects(registry, registry.partner(PINYIN))
    broken = {c for c, k in listed.items() if k == "unmappable_code"}
    assert broken
    seen_handle_types = set()
    for row in rows:
        r = truth[row["SSBM"]]
        assert set(row) == set(fmt.fields.values())
        assert row["SXMC"] == r["name"] and row["SSZTBM"] == r["dept_uscc"]
        if row["SSBM"] in broken:
            assert row["SXLX"] == UNMAPPABLE_ITEM_TYPE and UNMAPPABLE_ITEM_TYPE not in fmt.to_canonical("item_type")
        else:
            assert row["SXLX"] in {"XK", "CF", "QZ", "ZS", "GF", "JC", "QR", "JL", "CJ", "QT", "GG"}
            assert _decode("pinyin_json", "item_type", row["SXLX"]) == r["item_type"]
        # this system numbers levels 1 省 … 4 镇 and reverses 即办件/承诺件
        assert row["XSCJ"] == str(int(r["level"]) - 1)
        if r["handle_type"] is not None:
            assert row["BJLX"] == {"1": "2", "2": "1"}[r["handle_type"]]
            seen_handle_types.add(r["handle_type"])
        assert row["TBMS"] in {"全程网办", "异地代收代办", "两地联办"}
        assert row["FWDX"] == "|".join(r["service_objects"])
        assert (
            row["CNBJSX"] == str(r["promised_limit"])
            and row["CNBJSXDW"] == {"ND": "1", "WD": "2"}[r["promised_limit_unit"]]
        )
        if r["legal_limit"] is None:
            assert row["FDBJSX"] is None and row["FDBJSXDW"] is None
        else:
            assert row["FDBJSX"] == str(r["legal_limit"])
        local = datetime.fromisoformat(r["updated_at"]).astimezone(CHINA_TZ)
        assert row["GXSJ"] == local.strftime("%Y%m%d%H%M%S")
        for wire, canon in zip(row["SQCL"], r["materials"], strict=True):
            assert wire["CLMC"] == canon["name"] and wire["SFBX"] == ("是" if canon["required"] else "否")
            assert wire["CLXS"] == {"paper": "纸质", "electronic": "电子", "both": "纸质和电子"}[canon["form"]]
            assert wire["FS"] == (None if canon["copies"] is None else str(canon["copies"]))
    assert seen_handle_types == {"1", "2"}


def test_national_rows_carry_national_codes_ints_and_local_time(live: SimulatorURLs, secrets: dict[str, str]) -> None:
    fmt = wire_formats()["national_json"]
    truth = {r["task_code"]: r for r in ground_truth(live.partners, NATIONAL)}
    rows, _ = fetch_all(partner_base_url(live, NATIONAL), fmt, secret=secrets[NATIONAL])
    for row in rows:
        r = truth[row["task_code"]]
        assert row["task_name"] == r["name"] and row["use_level"] == r["level"]
        assert row["project_type"] == r["handle_type"] and row["handle_mode"] == r["handling_mode"]
        assert row["server_type"] == ",".join(r["service_objects"])
        assert row["promise_day"] == r["promised_limit"] and isinstance(row["promise_day"], int)
        assert row["promise_type"] == {"WD": "1", "ND": "2"}[r["promised_limit_unit"]]
        local = datetime.fromisoformat(r["updated_at"]).astimezone(CHINA_TZ)
        assert row["update_time"] == local.strftime("%Y-%m-%d %H:%M:%S")
        for wire, canon in zip(row["materials"], r["materials"], strict=True):
            assert wire["is_need"] == ("1" if canon["required"] else "2")
            assert wire["page_num"] == canon["copies"]


@pytest.mark.parametrize(
    ("path", "params", "status"),
    [
        ("/partners/999999/api/v1/items", {}, 404),
        ("/partners/440100/api/sx/list", {}, 404),  # the other format's path
        ("/partners/440100/api/v1/items", {"pageSize": 501}, 400),
        ("/partners/440100/api/v1/items", {"pageSize": 0}, 400),
        ("/partners/440100/api/v1/items", {"page": 0}, 400),
        ("/partners/440100/api/v1/items", {"page": "x"}, 400),
        ("/partners/440100/api/v1/items", {"updated_since": "yesterday"}, 400),
        ("/partners/440300/api/sx/list", {"limit": 501}, 400),
        ("/partners/440300/api/sx/list", {"cursor": "not-a-cursor"}, 400),
        ("/partners/440300/api/sx/list", {"cursor": base64.urlsafe_b64encode(b"123").decode()}, 400),
        ("/partners/441300/export/items.csv", {"pageNo": 0}, 400),
    ],
)
def test_bad_requests_get_json_errors(
    registry: Registry,
    live: SimulatorURLs,
    secrets: dict[str, str],
    path: str,
    params: dict[str, Any],
    status: int,
) -> None:
    division = path.split("/")[2]
    fmt = wire_formats()[registry.partner(division).format] if division in secrets else wire_formats()["national_json"]
    answer = signed_get(live.partners + path, fmt, secrets.get(division, "x"), params=params)
    assert answer.status_code == status
    assert answer.json()["error"]


def test_page_past_the_end_is_empty_with_the_total(live: SimulatorURLs, secrets: dict[str, str]) -> None:
    fmt = wire_formats()["national_json"]
    url = f"{live.partners}/partners/{NATIONAL}/api/v1/items"
    body = signed_get(url, fmt, secrets[NATIONAL], params={"page": 99}).json()
    assert body["data"] == [] and body["total"] == 420 and body["page"] == 99


def test_admin_changes_are_served_and_survive_a_restart(
    registry: Registry, tmp_path: Path, serve: Callable[..., Any]
) -> None:
    fmt = wire_formats()["pinyin_json"]
    with serve(create_partner_app(registry, tmp_path)) as url:
        admin = f"{url}/admin/partners/{PINYIN}/items"
        before = ground_truth(url, PINYIN)
        target, doomed = before[10], before[20]
        patched = requests.patch(f"{admin}/{target['task_code']}", json={"promised_limit": 1}, timeout=10)
        assert patched.status_code == 200, patched.text
        new = patched.json()
        assert new["promised_limit"] == 1 and new["version"] == str(int(target["version"]) + 1)
        assert new["updated_at"] > max(r["updated_at"] for r in before)  # after every generated change
        added = {**target, "task_code": target["task_code"][:-3] + "999", "name": "新增测试事项"}
        assert requests.post(admin, json=added, timeout=10).status_code == 201
        assert requests.post(admin, json=added, timeout=10).status_code == 409
        assert requests.delete(f"{admin}/{doomed['task_code']}", timeout=10).status_code == 200
        assert requests.delete(f"{admin}/{doomed['task_code']}", timeout=10).status_code == 404
        expected = ground_truth(url, PINYIN)
        secret = partner_secrets(tmp_path, registry)[PINYIN]
        rows, _ = fetch_all(partner_base_url(SimulatorURLs(url, ""), PINYIN), fmt, secret=secret)
        assert [r["SSBM"] for r in rows] == [r["task_code"] for r in expected]
        served = {r["SSBM"]: r for r in rows}
        assert served[target["task_code"]]["CNBJSX"] == "1" and served[target["task_code"]]["BBH"] == new["version"]
        assert added["task_code"] in served and doomed["task_code"] not in served
    assert (tmp_path / OVERRIDES_FILE).exists()

    with serve(create_partner_app(registry, tmp_path)) as url:  # a new app reading the same state
        assert ground_truth(url, PINYIN) == expected
        again = requests.patch(f"{url}/admin/partners/{PINYIN}/items/{target['task_code']}", json={}, timeout=10)
        assert again.json()["version"] == str(int(new["version"]) + 1)
        assert again.json()["updated_at"] > new["updated_at"]  # the change counter persisted too
        assert requests.post(f"{url}/admin/reset", timeout=10).status_code == 200
        assert ground_truth(url, PINYIN) == before
    with serve(create_partner_app(registry, tmp_path)) as url:
        assert ground_truth(url, PINYIN) == before  # the reset persisted too


BAD_CHANGES = [
    ({"no_such_field": 1}, 422),
    ({"promised_limit": "many"}, 422),
    ({"task_code": "X" * 31}, 400),
    ({"partner": "370100"}, 400),
]


def test_admin_refuses_bad_changes_and_keeps_the_record(
    registry: Registry, tmp_path: Path, serve: Callable[..., Any]
) -> None:
    with serve(create_partner_app(registry, tmp_path)) as url:
        target = ground_truth(url, NATIONAL)[0]
        for changes, status in BAD_CHANGES:
            answer = requests.patch(
                f"{url}/admin/partners/{NATIONAL}/items/{target['task_code']}", json=changes, timeout=10
            )
            assert answer.status_code == status and answer.json()["error"], changes
        missing = requests.patch(f"{url}/admin/partners/{NATIONAL}/items/{'1' * 31}", json={}, timeout=10)
        assert missing.status_code == 404
        assert ground_truth(url, NATIONAL)[0] == target
    assert not (tmp_path / OVERRIDES_FILE).exists()
