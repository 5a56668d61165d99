"""The catalogue generator: sizes, determinism, valid records, 五级N同 groups, deliberate defects."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import defaultdict
from datetime import datetime
from typing import Any

import pytest

from tests.conftest import split_task_code, uscc_division, uscc_valid
from tongban.model import ELEMENTS, Item, element_hashes
from tongban.registry import Registry, dictionaries
from tongban.simulators import DEFECT_KINDS, defects, generate_catalogue, province_quirks, reference_time
from tongban.simulators.catalogue import QUIRKS_PER_PROVINCE, _build_cached

ELEMENT_KEYS = [e.key for e in ELEMENTS]


@pytest.fixture(scope="module")
def catalogues(registry: Registry) -> dict[str, list[dict[str, Any]]]:
    return {p.division: generate_catalogue(registry, p) for p in registry.partners}


@pytest.fixture(scope="module")
def broken(registry: Registry) -> dict[str, dict[str, str]]:
    return {p.division: defects(registry, p) for p in registry.partners}


def test_sizes_follow_the_registry(registry: Registry, catalogues: dict[str, list[dict[str, Any]]]) -> None:
    for p in registry.partners:
        assert len(catalogues[p.division]) == p.items, p.division
    assert sum(len(c) for c in catalogues.values()) == 2976


def test_same_seed_same_catalogue_even_in_another_process(registry: Registry) -> None:
    partner = registry.partner("440300")
    first = generate_catalogue(registry, partner)
    _build_cached.cache_clear()
    assert generate_catalogue(registry, partner) == first
    script = (
        "import json; from tongban.registry import load_registry; "
        "from tongban.simulators import generate_catalogue, defects; r = load_registry(); p = r.partner('440300'); "
        "print(json.dumps([generate_catalogue(r, p), defects(r, p)], ensure_ascii=False))"
    )
    other = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "PYTHONHASHSEED": "12345"},
    )
    assert json.loads(other.stdout) == [first, defects(registry, partner)]


def test_catalogues_generated_in_worker_processes_are_the_same(
    registry: Registry, broken: dict[str, dict[str, str]], monkeypatch: pytest.MonkeyPatch
) -> None:
    from tongban.simulators import catalogue

    monkeypatch.setattr(catalogue, "SHARED_GENERATION_ITEMS", 0)  # share out even this small registry
    shared = catalogue.generate_catalogues(registry, processes=2)
    assert list(shared) == [p.division for p in registry.partners]
    for p in registry.partners:
        assert shared[p.division] == (generate_catalogue(registry, p), broken[p.division]), p.division


def test_another_seed_gives_another_catalogue(registry: Registry) -> None:
    partner = registry.partner("370300")
    reseeded = registry.model_copy(update={"seed": registry.seed + 1})
    a, b = generate_catalogue(registry, partner), generate_catalogue(reseeded, partner)
    assert len(a) == len(b) == partner.items
    assert [r["task_code"] for r in a] != [r["task_code"] for r in b]


def test_callers_get_their_own_copies(registry: Registry) -> None:
    partner = registry.partner("370300")
    generate_catalogue(registry, partner)[0]["name"] = "被调用方改掉的名称"
    assert generate_catalogue(registry, partner)[0]["name"] != "被调用方改掉的名称"


def test_task_codes_sorted_and_unique_across_the_registry(catalogues: dict[str, list[dict[str, Any]]]) -> None:
    codes = [r["task_code"] for c in catalogues.values() for r in c]
    assert len(set(codes)) == len(codes) == 2976
    for records in catalogues.values():
        assert [r["task_code"] for r in records] == sorted(r["task_code"] for r in records)


def test_every_record_is_an_item_record_and_sound_unless_listed_as_defect(
    registry: Registry, catalogues: dict[str, list[dict[str, Any]]], broken: dict[str, dict[str, str]]
) -> None:
    dicts = dictionaries()
    reference = reference_time(registry.seed)
    for partner in registry.partners:
        for r in catalogues[partner.division]:
            assert Item(**r).record() == r  # exactly Item.record() shaped
            if r["task_code"] in broken[partner.division]:
                continue
            where = f"{partner.division} {r['task_code']}"
            uscc, level, catalog = split_task_code(r["task_code"]) or ("", "", "")
            assert uscc == r["dept_uscc"] and level == r["level"] and catalog == r["catalog_code"], where
            assert uscc_valid(uscc) and uscc.startswith("1"), where
            expected_division = partner.province if r["level"] == "2" else partner.division
            assert uscc_division(uscc) == expected_division, where
            assert r["level"] in {"2", "3", "4", "5"}, where
            assert catalog.isdigit() and len(catalog) == 12 and catalog[2:4] == r["item_type"], where
            assert catalog[:2] in {"00", partner.division[:2]}, where
            assert r["item_type"] in dicts["item_type"] and r["handling_mode"] in dicts["handling_mode"], where
            assert r["handle_type"] is None or r["handle_type"] in dicts["handle_type"], where
            assert r["service_objects"] and set(r["service_objects"]) <= set(dicts["service_object"]), where
            assert 100 <= len(r["legal_basis"]) <= 400 and r["legal_basis"].startswith("《"), where
            assert 100 <= len(r["accept_conditions"]) <= 300 and 100 <= len(r["procedure"]) <= 300, where
            assert 1 <= len(r["materials"]) <= 6, where
            assert all(m["form"] in dicts["material_form"] for m in r["materials"]), where
            assert r["promised_limit_unit"] in dicts["time_unit"], where
            if r["legal_limit"] is not None:
                assert r["legal_limit_unit"] == r["promised_limit_unit"], where
                assert 0 < r["promised_limit"] <= r["legal_limit"], where
            assert datetime.fromisoformat(r["updated_at"]) < reference, where


def test_same_catalog_code_means_same_ten_elements_at_different_places(
    catalogues: dict[str, list[dict[str, Any]]], broken: dict[str, dict[str, str]]
) -> None:
    multi_level = 0
    for division, records in catalogues.items():
        groups: dict[str, list[dict[str, Any]]] = defaultdict(list)
        for r in records:
            if broken[division].get(r["task_code"]) != "five_level_diff":
                groups[r["catalog_code"]].append(r)
        for code, members in groups.items():
            hashes = {tuple(h[k] for k in ELEMENT_KEYS) for h in map(element_hashes, members)}
            assert len(hashes) == 1, f"{division} {code}: ten elements differ"
            assert len({m["dept_uscc"] for m in members}) == len(members), f"{division} {code}: same body twice"
            multi_level += len({m["level"] for m in members}) >= 3
    assert multi_level >= 50  # plenty of 基本编码 implemented at three or more levels


def test_defects_are_rare_listed_and_really_there(
    catalogues: dict[str, list[dict[str, Any]]], broken: dict[str, dict[str, str]]
) -> None:
    total = sum(len(b) for b in broken.values())
    assert 0.01 * 2976 <= total <= 0.02 * 2976
    assert {kind for b in broken.values() for kind in b.values()} == set(DEFECT_KINDS)
    item_types = dictionaries()["item_type"]
    for division, listed in broken.items():
        assert len(listed) >= 2, division
        by_code = {r["task_code"]: r for r in catalogues[division]}
        for code, kind in listed.items():
            r = by_code[code]
            siblings = [s for s in catalogues[division] if s["catalog_code"] == r["catalog_code"] and s is not r]
            if kind == "bad_uscc_check":
                assert not uscc_valid(r["dept_uscc"]) and code[:18] == r["dept_uscc"]
            elif kind == "empty_legal_basis":
                assert r["legal_basis"] == ""
            elif kind == "promised_over_legal":
                assert r["promised_limit"] > r["legal_limit"]
                assert r["promised_limit_unit"] == r["legal_limit_unit"]
            elif kind == "level_mismatch":
                assert code[18] != r["level"] and uscc_valid(code[:18])
            elif kind == "five_level_diff":
                assert len(siblings) >= 2
                mine = element_hashes(r)
                differing = {k for k in ELEMENT_KEYS for s in siblings if element_hashes(s)[k] != mine[k]}
                assert len(differing) == 1, differing
            elif kind == "unmappable_code":
                assert r["item_type"] not in item_types
            if kind in ("empty_legal_basis", "promised_over_legal", "unmappable_code"):
                assert not siblings, f"{kind} should not also show as a 五级N同 difference"


def _province_groups(
    registry: Registry, catalogues: dict[str, list[dict[str, Any]]], broken: dict[str, dict[str, str]]
) -> dict[tuple[str, str], dict[str, set[tuple[str, ...]]]]:
    """(province, 基本编码) -> partner -> the ten-element hashes of its sound records."""
    groups: dict[tuple[str, str], dict[str, set[tuple[str, ...]]]] = defaultdict(lambda: defaultdict(set))
    for partner in registry.partners:
        for r in catalogues[partner.division]:
            if r["task_code"] not in broken[partner.division]:
                hashes = element_hashes(r)
                groups[partner.province, r["catalog_code"]][partner.division].add(
                    tuple(hashes[k] for k in ELEMENT_KEYS)
                )
    return groups


def test_partners_of_a_province_agree_on_shared_catalog_codes_except_the_listed_quirks(
    registry: Registry, catalogues: dict[str, list[dict[str, Any]]], broken: dict[str, dict[str, str]]
) -> None:
    groups = _province_groups(registry, catalogues, broken)
    shared = {key: held for key, held in groups.items() if len(held) >= 2}
    assert len(shared) >= 200  # plenty of 基本编码 held by several partners of a province
    quirks = {(q.partner[:2] + "0000", q.catalog_code): q for q in province_quirks(registry)}
    assert len(quirks) == QUIRKS_PER_PROVINCE * len({p.province for p in registry.partners})
    for key, held in shared.items():
        versions = {h for hashes in held.values() for h in hashes}
        if key not in quirks:
            assert len(versions) == 1, f"{key}: partners of the province disagree"
            continue
        quirk = quirks[key]
        assert tuple(sorted(held)) == quirk.holders and len(quirk.holders) >= 3
        [theirs] = {h for d, hashes in held.items() if d != quirk.partner for h in hashes}
        [mine] = held[quirk.partner]  # the quirky partner agrees with itself at all its levels
        assert [k for k, a, b in zip(ELEMENT_KEYS, mine, theirs, strict=True) if a != b] == [quirk.element]


def test_a_quirky_partner_is_outvoted_at_the_most_senior_level(
    registry: Registry, catalogues: dict[str, list[dict[str, Any]]]
) -> None:
    for quirk in province_quirks(registry):
        levels = {
            d: min(r["level"] for r in catalogues[d] if r["catalog_code"] == quirk.catalog_code) for d in quirk.holders
        }
        senior = min(levels.values())
        at_senior = [d for d, level in levels.items() if level == senior]
        assert levels[quirk.partner] != senior or len(at_senior) >= 3, quirk
        assert not any(
            defects(registry, registry.partner(d)).get(r["task_code"])
            for d in quirk.holders
            for r in catalogues[d]
            if r["catalog_code"] == quirk.catalog_code
        ), quirk


def test_quirks_do_not_depend_on_the_process(registry: Registry) -> None:
    script = (
        "import json; from tongban.registry import load_registry; from tongban.simulators import province_quirks; "
        "print(json.dumps([q.__dict__ for q in province_quirks(load_registry())]))"
    )
    env = {**os.environ, "PYTHONHASHSEED": "54321"}
    other = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True, env=env)
    assert json.loads(other.stdout) == [{**q.__dict__, "holders": list(q.holders)} for q in province_quirks(registry)]
