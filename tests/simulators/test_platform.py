"""The platform simulator over real HTTP: batches, idempotency, rejections, persistence."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.conftest import make_record
from tongban.registry import Registry
from tongban.simulators import generate_catalogue
from tongban.simulators.launcher import SimulatorURLs
from tongban.simulators.platform import DB_FILE, create_platform_app

from .conftest import platform_signer

REGION = "440100"
STATES: dict[str, Path] = {}  # platform URL -> its state folder (where its secret is)


@contextmanager
def serving_platform(serve: Callable[..., Any], state: Path) -> Iterator[str]:
    with serve(create_platform_app(state)) as url:
        STATES[url] = state
        yield url


def signed(url: str) -> Any:
    return platform_signer(STATES[url])


@pytest.fixture(scope="module")
def records(registry: Registry) -> list[dict[str, Any]]:
    return generate_catalogue(registry, registry.partner(REGION))[:6]


@pytest.fixture
def platform(tmp_path: Path, serve: Callable[..., Any]) -> Iterator[str]:
    with serving_platform(serve, tmp_path) as url:
        yield url


def push(url: str, body: dict[str, Any], key: str | None, region: str = REGION) -> requests.Response:
    headers = {"Idempotency-Key": key} if key is not None else {}
    return requests.post(
        f"{url}/api/v1/regions/{region}/batches", json=body, headers=headers, auth=signed(url), timeout=10
    )


def page(url: str, region: str = REGION, **params: Any) -> requests.Response:
    return requests.get(f"{url}/api/v1/regions/{region}/items", params=params, auth=signed(url), timeout=30)


def held(url: str, region: str = REGION, page_size: int = 2) -> list[dict[str, Any]]:
    """The region's whole list, read page by page as docs/platform-api.md describes it."""
    items: list[dict[str, Any]] = []
    params: dict[str, Any] = {"page_size": page_size}
    while True:
        answer = page(url, region, **params)
        assert answer.status_code == 200, answer.text
        body = answer.json()
        assert body["region"] == region and body["page_size"] == page_size and len(body["items"]) <= page_size
        items += body["items"]
        if body["next_cursor"] is None:
            assert body["total"] == len(items)
            return items
        assert len(body["items"]) == page_size  # only the last page is short
        params["cursor"] = body["next_cursor"]


def test_batch_upserts_and_deletes_and_holds_full_records(platform: str, records: list[dict[str, Any]]) -> None:
    first = push(platform, {"upserts": records[:4]}, "k1")
    assert first.status_code == 200, first.text
    answer = first.json()
    assert answer["idempotency_key"] == "k1" and answer["replayed"] is False and answer["batch_id"]
    assert [(r["task_code"], r["op"], r["status"], r["reason"]) for r in answer["results"]] == [
        (r["task_code"], "upsert", "accepted", None) for r in records[:4]
    ]
    assert held(platform) == sorted(records[:4], key=lambda r: r["task_code"])

    changed = {**records[0], "promised_limit": 1}
    unknown = records[5]["task_code"]  # never pushed: deleting it is accepted
    second = push(platform, {"upserts": [changed], "deletes": [records[1]["task_code"], unknown]}, "k2").json()
    assert [(r["op"], r["status"]) for r in second["results"]] == [("upsert", "accepted")] + [
        ("delete", "accepted")
    ] * 2
    assert held(platform) == sorted([changed, records[2], records[3]], key=lambda r: r["task_code"])
    assert held(platform, "440300") == []

    stored = requests.get(f"{platform}/api/v1/batches/{second['batch_id']}", auth=signed(platform), timeout=10)
    assert stored.json()["results"] == second["results"] and stored.json()["region"] == REGION
    assert stored.json()["received_at"]
    assert requests.get(f"{platform}/api/v1/batches/nope", auth=signed(platform), timeout=10).status_code == 404


def test_a_batch_applies_its_operations_in_order(platform: str, records: list[dict[str, Any]]) -> None:
    """The same code twice: the last record stays; upserted then deleted in one batch: not held."""
    push(platform, {"upserts": records[:2]}, "k1")
    first, second = {**records[0], "promised_limit": 1}, {**records[0], "promised_limit": 2}
    answer = push(platform, {"upserts": [first, second, records[2]], "deletes": [records[2]["task_code"]]}, "k2")
    assert [r["status"] for r in answer.json()["results"]] == ["accepted"] * 4
    assert held(platform) == [second, records[1]]


def test_same_key_replays_without_applying_and_other_body_conflicts(
    platform: str, records: list[dict[str, Any]]
) -> None:
    body = {"upserts": records[:2], "deletes": []}
    original = push(platform, body, "run-1").json()
    push(platform, {"deletes": [records[0]["task_code"]]}, "run-2")  # a later batch removes one

    replay = push(platform, {"deletes": [], "upserts": records[:2]}, "run-1")  # same content, other key order
    assert replay.status_code == 200
    assert replay.json() == {**original, "replayed": True}
    assert [r["task_code"] for r in held(platform)] == [records[1]["task_code"]]  # not re-applied

    conflict = push(platform, {"upserts": records[:3]}, "run-1")
    assert conflict.status_code == 409 and "run-1" in conflict.json()["error"]
    assert push(platform, body, "run-1", region="440300").status_code == 409  # same key, other region
    assert [r["task_code"] for r in held(platform)] == [records[1]["task_code"]]


@pytest.mark.parametrize("key", [None, ""])
def test_missing_idempotency_key_is_refused(platform: str, records: list[dict[str, Any]], key: str | None) -> None:
    answer = push(platform, {"upserts": records[:1]}, key)
    assert answer.status_code == 400 and "Idempotency-Key" in answer.json()["error"]
    assert held(platform) == []


def test_platform_rejections_say_why_in_chinese(platform: str, records: list[dict[str, Any]]) -> None:
    good = records[0]
    short = {**records[1], "task_code": records[1]["task_code"][:30]}
    elsewhere = {**records[2], "partner": "370100"}
    nameless = {**records[3], "name": "  "}
    answer = push(platform, {"upserts": [good, short, elsewhere, nameless], "deletes": ["123"]}, "mixed").json()
    statuses = [(r["status"], r["reason"]) for r in answer["results"]]
    assert statuses[0] == ("accepted", None)
    assert statuses[1][0] == "rejected" and "31" in statuses[1][1] and "30" in statuses[1][1]
    assert statuses[2][0] == "rejected" and "370100" in statuses[2][1] and "不一致" in statuses[2][1]
    assert statuses[3] == ("rejected", "事项名称为空")
    assert statuses[4][0] == "rejected" and answer["results"][4]["op"] == "delete"
    assert [r["task_code"] for r in held(platform)] == [good["task_code"]]


def test_malformed_body_applies_nothing(platform: str, records: list[dict[str, Any]]) -> None:
    answer = push(platform, {"upserts": records[:1], "surprise": True}, "bad-body")
    assert answer.status_code == 422
    assert held(platform) == []
    assert push(platform, {"upserts": records[:1]}, "bad-body").json()["replayed"] is False  # key not used up


def test_data_and_keys_survive_a_restart(
    tmp_path: Path, serve: Callable[..., Any], records: list[dict[str, Any]]
) -> None:
    body = {"upserts": records[:3]}
    with serving_platform(serve, tmp_path) as url:
        original = push(url, body, "persist").json()
        before = held(url)
    assert (tmp_path / DB_FILE).exists()
    with serving_platform(serve, tmp_path) as url:  # a new app and engine on the same database
        assert held(url) == before
        assert push(url, body, "persist").json() == {**original, "replayed": True}
        assert push(url, {"upserts": records[:1]}, "persist").status_code == 409


def test_a_region_list_is_paged_by_cursor_in_code_order_and_the_page_size_is_limited(platform: str) -> None:
    records = [make_record(partner=REGION, catalog_code=f"0001{i:05d}000") for i in range(1001)]
    for start in range(0, len(records), 500):
        assert push(platform, {"upserts": records[start : start + 500]}, f"many-{start}").status_code == 200
    whole = held(platform, page_size=500)  # three pages: 500, 500, 1
    assert [r["task_code"] for r in whole] == sorted(r["task_code"] for r in records)
    assert whole == sorted(records, key=lambda r: r["task_code"])
    first = page(platform, page_size=500).json()
    assert (first["total"], len(first["items"])) == (1001, 500) and first["next_cursor"]
    # a cursor is a place in the list, not a page number: an item deleted before it moves nothing after it
    assert push(platform, {"deletes": [whole[0]["task_code"]]}, "delete-first").status_code == 200
    second = page(platform, page_size=500, cursor=first["next_cursor"]).json()
    assert second["items"] == whole[500:1000] and second["total"] == 1000

    for size in ("501", "0", "-1", "五百", "1e2", "²"):
        refused = page(platform, page_size=size)
        assert (refused.status_code, refused.json()["error"]) == (400, "page_size 应为 1 到 500 之间的整数（每页条数）")
    assert page(platform).status_code == 400  # no page_size: a client expecting the whole list fails loudly
    for cursor in ("not-a-cursor", first["next_cursor"] + "x", ""):
        answer = page(platform, page_size=10, cursor=cursor)
        assert (answer.status_code, answer.json()["error"]) == (400, "cursor 无效：请使用上一页返回的 next_cursor")


def test_launched_platform_answers(live: SimulatorURLs, records: list[dict[str, Any]]) -> None:
    """The subprocess the launcher starts is the same app (own state, shared by the session)."""
    assert requests.get(f"{live.platform}/healthz", timeout=10).json() == {"status": "ok"}
    assert live.state_dir is not None
    STATES[live.platform] = live.state_dir
    answer = push(live.platform, {"upserts": records[:1]}, "launched").json()
    assert answer["results"][0]["status"] == "accepted"
    assert records[0]["task_code"] in {r["task_code"] for r in held(live.platform)}
