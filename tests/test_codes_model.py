from __future__ import annotations

import pytest
from pydantic import ValidationError

from tests.conftest import make_record, split_task_code, uscc_valid
from tongban.codes import make_uscc, org_code_check_char, uscc_check_char
from tongban.model import ELEMENTS, Item, content_hash, element_hashes
from tongban.registry import dictionaries, load_registry, wire_formats


def test_uscc_fixture_from_domain_passes_both_checks() -> None:
    assert uscc_valid("11430981000612349J")
    assert uscc_check_char("11430981000612349") == "J"
    assert org_code_check_char("00061234") == "9"


@pytest.mark.parametrize(
    "code",
    [
        "11430981000612349K",  # wrong GB 32100 check character
        "11430981000612359J",  # wrong 组织机构代码 check character
        "11430981000612349",  # truncated (17 characters, seen in real data)
        "11430981O00612349J",  # letter O is not in the alphabet
    ],
)
def test_bad_usccs_fail(code: str) -> None:
    assert not uscc_valid(code)


def test_make_uscc_builds_valid_codes_in_the_given_division() -> None:
    code = make_uscc("1", "1", "440300", "7654321A")
    assert uscc_valid(code) and code[2:8] == "440300"


def test_task_code_layout() -> None:
    record = make_record(level="4")
    uscc, level, catalog = split_task_code(record["task_code"])  # type: ignore[misc]
    assert (uscc, level, catalog) == (record["dept_uscc"], "4", record["catalog_code"])
    assert split_task_code("short") is None


def test_item_round_trips_and_sorts_service_objects() -> None:
    item = Item(**make_record(service_objects=["6", "1", "6"]))
    assert item.service_objects == ["1", "6"]
    assert Item(**item.record()) == item


def test_item_refuses_unknown_fields_and_bad_types() -> None:
    with pytest.raises(ValidationError, match="legal_limit"):
        Item(**make_record(legal_limit="fifteen"))
    with pytest.raises(ValidationError, match="surprise"):
        Item(**make_record(surprise=1))


def test_ten_elements_and_hashes_react_to_each_element() -> None:
    assert len(ELEMENTS) == 10
    base = make_record()
    assert element_hashes(base) == element_hashes(make_record())
    changed = make_record(
        materials=[{"name": "户口簿", "required": True, "form": "paper", "copies": 1, "source": None}]
    )
    diff = {k for k, v in element_hashes(changed).items() if v != element_hashes(base)[k]}
    assert diff == {"materials"}
    assert content_hash(base) != content_hash(changed)
    # bookkeeping fields are not content
    assert content_hash(base) == content_hash(make_record(version="9", source_ref="elsewhere"))


def test_registry_matches_the_real_case() -> None:
    registry = load_registry()
    assert len(registry.partners) == 16
    assert sum(p.items for p in registry.partners) == 2976
    provinces = {p.province for p in registry.partners}
    assert provinces == {"440000", "370000"}
    guangdong = sum(p.items for p in registry.partners if p.province == "440000")
    assert guangdong > 2976 / 2
    assert {p.format for p in registry.partners} == set(wire_formats())


def test_registry_env_var_switches_partners(tmp_path, monkeypatch) -> None:
    other = tmp_path / "partners.yaml"
    other.write_text(
        'home: {division: "430981", name: 沅江市}\nseed: 1\n'
        'partners:\n  - {division: "371700", name: 菏泽市, items: 5, format: national_json}\n',
        encoding="utf-8",
    )
    monkeypatch.setenv("TONGBAN_REGISTRY", str(other))
    assert [p.division for p in load_registry().partners] == ["371700"]
    assert load_registry() is load_registry()  # kept per process: every task asks for it
    # an edited registry file is read again (a partner added between two runs of a long-lived process)
    other.write_text(
        other.read_text(encoding="utf-8") + '  - {division: "371300", name: 临沂市, items: 5, format: national_json}\n',
        encoding="utf-8",
    )
    assert [p.division for p in load_registry().partners] == ["371700", "371300"]
    with pytest.raises(ValidationError, match="frozen"):
        load_registry().seed = 2  # type: ignore[misc]  (shared, so nobody may change it)


def test_registry_rejects_unknown_division_and_format(tmp_path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        'home: {}\nseed: 1\npartners:\n  - {division: "371200", name: 莱芜市, items: 1, format: national_json}\n',
        encoding="utf-8",
    )
    with pytest.raises(ValidationError, match="371200"):
        load_registry(bad)


def test_every_format_maps_onto_canonical_codes_only() -> None:
    for fmt in wire_formats().values():
        for name in ("item_type", "level", "service_object", "handling_mode", "handle_type", "time_unit"):
            assert set(fmt.to_canonical(name).values()) <= set(dictionaries()[name]), (fmt.name, name)
