"""沅江's library on the platform simulator and the partners' offer endpoints, over real HTTP (subprocesses)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.simulators.conftest import fetch_all, partner_signer, platform_signer
from tongban.outbound.wire import MODES, Operation, decode_modes, encode_batch, readback_format
from tongban.registry import Registry, wire_formats
from tongban.simulators.credentials import partner_secrets
from tongban.simulators.launcher import SimulatorURLs, partner_base_url, running_simulators
from tongban.simulators.library import LIBRARY_SIZE, OFFERED, generate_library, library_defects, withdrawn_items
from tongban.simulators.offers import BEHIND, MISSING, drift_roles, offer_to


@pytest.fixture(scope="module")
def sims(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[SimulatorURLs, Path]]:
    state = tmp_path_factory.mktemp("offer-simulators")
    with running_simulators(state) as urls:
        yield urls, state


def library_page(sims: tuple[SimulatorURLs, Path], **params: Any) -> dict[str, Any]:
    urls, state = sims
    answer = requests.get(
        f"{urls.platform}/api/v1/library/items", params=params, auth=platform_signer(state), timeout=30
    )
    assert answer.status_code == 200, answer.text
    return answer.json()


def test_library_is_deterministic_with_99_valid_items_offered(registry: Registry) -> None:
    library = generate_library(registry)
    assert library == generate_library(registry) and len(library) == LIBRARY_SIZE
    offered = [e for e in library if e["offer"]["offered"]]
    assert len(offered) == OFFERED
    broken = library_defects(registry)
    assert broken and not {e["task_code"] for e in offered} & broken.keys()  # only valid items are offered
    partners = [p.division for p in registry.partners]
    assert all(e["offer"]["modes"] and e["offer"]["regions"] for e in offered)
    assert all(set(e["offer"]["regions"]) <= set(partners) for e in offered)
    by_reach = {len(e["offer"]["regions"]) for e in offered}
    assert len(partners) in by_reach and by_reach - {len(partners)}  # all 16 mostly, some one province only
    assert all(e["partner"] == "430981" and e["dept_uscc"][2:4] == "43" for e in library)
    assert withdrawn_items(registry) and not {e["task_code"] for e in offered} & set(withdrawn_items(registry))


def test_library_read_api_pages_and_reads_incrementally(sims: tuple[SimulatorURLs, Path]) -> None:
    urls, state = sims
    pages = [library_page(sims, page=n, page_size=100) for n in range(1, 5)]
    entries = [e for p in pages for e in p["items"]]
    assert {p["total"] for p in pages} == {LIBRARY_SIZE} and len({e["task_code"] for e in entries}) == LIBRARY_SIZE
    assert [e["task_code"] for e in entries] == sorted(e["task_code"] for e in entries)
    target = next(e for e in entries if e["offer"]["offered"])
    answer = requests.patch(
        f"{urls.platform}/admin/library/items/{target['task_code']}", json={"result": "新的办理结果"}, timeout=30
    )
    assert answer.status_code == 200, answer.text
    changed = answer.json()
    assert changed["version"] == str(int(target["version"]) + 1) and changed["offer"] == target["offer"]
    since = library_page(sims, updated_since=changed["updated_at"])
    assert [e["task_code"] for e in since["items"]] == [target["task_code"]] and since["total"] == 1
    url = f"{urls.platform}/api/v1/library/items"
    bad = requests.get(url, params={"updated_since": "2026-01-01T00:00:00"}, auth=platform_signer(state), timeout=30)
    assert bad.status_code == 400 and "时区" in bad.json()["error"]
    assert requests.get(url, timeout=30).status_code == 401  # signed like every platform API
    refused = requests.patch(
        f"{urls.platform}/admin/library/items/{target['task_code']}", json={"offer": {"modes": ["9"]}}, timeout=30
    )
    assert refused.status_code == 422 and "办理模式" in refused.json()["error"]


def configured(urls: SimulatorURLs, division: str) -> dict[str, Any]:
    answer = requests.get(f"{urls.partners}/admin/partners/{division}/offers", timeout=30)
    assert answer.status_code == 200, answer.text
    return answer.json()


def test_partners_start_with_what_was_offered_and_deterministic_drift(
    sims: tuple[SimulatorURLs, Path], registry: Registry
) -> None:
    urls, _ = sims
    library = generate_library(registry)
    roles = drift_roles(registry)
    assert sorted(roles.values()) == ["behind", "missing", "mode_mismatch", "withdrawn"]
    for partner in registry.partners:
        offer = offer_to(library, partner.division)
        state = configured(urls, partner.division)
        held = {r["task_code"]: r for r in state["items"]}
        drifted = state["drift"]["task_codes"]
        role = state["drift"]["role"]
        assert role == roles.get(partner.division, "write_failing" if partner.faults else None)
        if role == "behind":
            assert len(drifted) == BEHIND
            for code in drifted:
                assert int(held[code]["version"]) <= int(offer[code]["record"]["version"])
                assert held[code]["promised_limit"] == offer[code]["record"]["promised_limit"] + 2
        elif role in ("missing", "write_failing"):
            assert len(drifted) == (MISSING if role == "missing" else 1) and not set(drifted) & held.keys()
        elif role == "withdrawn":
            assert drifted == withdrawn_items(registry)[:1] and drifted[0] in held and drifted[0] not in offer
        elif role == "mode_mismatch":
            assert all(held[c][MODES] != sorted(offer[c]["modes"]) for c in drifted)
        else:
            assert not drifted
        untouched = offer.keys() - set(drifted)
        assert all(sorted(offer[c]["modes"]) == held[c][MODES] for c in untouched)


@pytest.mark.parametrize("fmt_name", ["national_json", "pinyin_json", "csv_gbk"])
def test_offer_endpoint_reads_back_and_writes_idempotently_in_each_style(
    sims: tuple[SimulatorURLs, Path], registry: Registry, fmt_name: str
) -> None:
    urls, state = sims
    partner = next(p for p in reversed(registry.partners) if p.format == fmt_name and not p.faults)
    fmt = wire_formats()[fmt_name]
    secret = partner_secrets(state, registry)[partner.division]
    base = partner_base_url(urls, partner.division)
    rows, _ = fetch_all(base, readback_format(fmt), secret=secret)  # the catalogue's paging and auth
    before = configured(urls, partner.division)["items"]
    assert len(rows) == len(before)
    assert sorted(r[fmt.fields["task_code"]] for r in rows) == [r["task_code"] for r in before]
    assert [decode_modes(fmt, r[fmt.offer.modes_field]) for r in rows] == [r[MODES] for r in before]  # type: ignore[union-attr]

    first, second = before[0], before[1]
    changed = {k: v for k, v in first.items() if k != MODES} | {"result": "更新后的办理结果"}
    ops = [Operation("upsert", first["task_code"], changed, ("1", "3")), Operation("delete", second["task_code"])]
    body, content_type = encode_batch(fmt, ops)

    def post(payload: bytes, key: str) -> requests.Response:
        url = base + fmt.offer.path  # type: ignore[union-attr]
        headers = {"Content-Type": content_type, fmt.offer.key_header: key}  # type: ignore[union-attr]
        return requests.post(url, data=payload, headers=headers, auth=partner_signer(url, fmt, secret), timeout=30)

    answer = post(body, f"k-{fmt_name}")
    assert answer.status_code == 200, answer.text
    results = answer.json()["results"]
    assert [(r["task_code"], r["op"], r["status"]) for r in results] == [
        (first["task_code"], "upsert", "accepted"),
        (second["task_code"], "delete", "accepted"),
    ]
    after = {r["task_code"]: r for r in configured(urls, partner.division)["items"]}
    assert after[first["task_code"]]["result"] == "更新后的办理结果" and after[first["task_code"]][MODES] == ["1", "3"]
    assert second["task_code"] not in after
    replay = post(body, f"k-{fmt_name}")
    assert replay.json()["replayed"] is True and replay.json()["batch_id"] == answer.json()["batch_id"]
    other, _ = encode_batch(fmt, ops[1:])
    assert post(other, f"k-{fmt_name}").status_code == 409
    # a bad operation is refused on its own, with a reason, while the rest of the batch is applied
    bad = Operation("upsert", second["task_code"], {k: v for k, v in second.items() if k != MODES}, ())
    mixed, _ = encode_batch(fmt, [bad, ops[0]])
    answer = post(mixed, f"k2-{fmt_name}").json()["results"]
    assert answer[0]["status"] == "rejected" and "至少要有一种办理模式" in answer[0]["reason"]
    assert answer[1]["status"] == "accepted"


def test_write_fault_fails_writes_only_until_used_up(sims: tuple[SimulatorURLs, Path], registry: Registry) -> None:
    urls, state = sims
    partner = next(p for p in registry.partners if p.format == "national_json")
    fmt = wire_formats()[partner.format]
    secret = partner_secrets(state, registry)[partner.division]
    base = partner_base_url(urls, partner.division)
    faults = f"{urls.partners}/admin/partners/{partner.division}/faults"
    requests.put(faults, json=[{"kind": "write_unavailable", "times": 2}], timeout=30).raise_for_status()
    try:
        fetch_all(base, readback_format(fmt), secret=secret)  # reads are not affected, nor counted
        fetch_all(base, fmt, secret=secret)
        body, content_type = encode_batch(fmt, [Operation("delete", "X" * 31)])
        headers = {"Content-Type": content_type, "Idempotency-Key": "w1"}
        url = base + "/api/v1/cross-items"
        signer = partner_signer(url, fmt, secret)
        statuses = [requests.post(url, data=body, headers=headers, auth=signer, timeout=30).status_code for _ in "abc"]
        assert statuses == [503, 503, 200]
    finally:
        requests.delete(faults, timeout=30).raise_for_status()
