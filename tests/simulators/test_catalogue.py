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

from tongban.codes import split_task_code, uscc_division, uscc_valid
from tongban.model import ELEMENTS, Item, element_hashes
from tongban.registry import Registry, dictionaries
from tongban.simulators import DEFECT_KINDS, defects, generate_catalogue, reference_time
from tongban.simulators.catalogue import _build_cached

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
