"""Stages that combine several parts: validation of incremental pulls, and holding a partner back."""

from __future__ import annotations

import pytest
from upath import UPath

from tests.validation.item_fixtures import CITY_USCC, DISTRICT_USCC, make_record
from tongban import layout, pipeline, province, report_model
from tongban.registry import load_registry
from tongban.storage import read_json, read_jsonl, write_json, write_jsonl
from tongban.store.repo import ItemStore
from tongban.validation.outcome import Finding, FlaggedRecord

PARTNER = load_registry().partner("440100")


@pytest.fixture
def run(tmp_path) -> UPath:
    return UPath(tmp_path) / "run"


@pytest.fixture
def store(tmp_path) -> ItemStore:
    return ItemStore(f"sqlite:///{tmp_path / 'items.db'}")


def test_incremental_pull_is_checked_against_the_published_group(run: UPath, store: ItemStore) -> None:
    city, district = make_record(1, uscc=CITY_USCC, level="3"), make_record(1, uscc=DISTRICT_USCC, level="4")
    store.apply("run-0", PARTNER.division, [city, district], [])
    changed = make_record(1, uscc=DISTRICT_USCC, level="4", result="另一个办理结果")  # differs from the city's
    write_json(run / layout.FETCH, {"mode": "incremental", "status": "ok"})
    write_jsonl(run / layout.ITEMS, [changed])

    summary = pipeline.validate(PARTNER, run, store)

    assert summary.context_rows == 1 and summary.rejected == 1
    assert not (run / "data_docs").exists()  # no Data Docs built in the task: the UI renders them from the result
    gx = read_json(run / layout.GX_RESULT)
    [five] = [r for r in gx["results"] if r["expectation_config"]["type"] == "expect_five_level_elements_identical"]
    assert five["result"]["element_count"] == 2 and five["result"]["unexpected_percent"] == 50.0
    [rejected] = list(read_jsonl(run / layout.REJECTED))
    assert {f["element"] for f in rejected["findings"] if f["severity"] == "critical"} == {"result"}
    # the file's records are validation's own types, and the report shows those same findings
    [typed] = list(read_jsonl(run / layout.REJECTED, FlaggedRecord))
    assert typed.record["task_code"] == changed["task_code"]
    assert all(isinstance(f, Finding) and f.row == 0 for f in typed.findings)
    assert report_model.Flagged.model_fields["findings"].annotation == list[Finding]


def test_full_pull_is_judged_on_its_own_and_can_hold_the_partner_back(
    run: UPath, store: ItemStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    good = [make_record(i) for i in range(1, 5)]
    bad = make_record(9, legal_basis="")
    write_json(run / layout.FETCH, {"mode": "full", "status": "ok"})
    write_jsonl(run / layout.ITEMS, [*good, bad])

    monkeypatch.setenv("TONGBAN_MAX_CRITICAL_RATE", "0.25")
    summary = pipeline.validate(PARTNER, run, store)
    assert (summary.context_rows, summary.rejected, summary.critical_rate) == (0, 1, 0.2)
    assert summary.held_back is False

    monkeypatch.setenv("TONGBAN_MAX_CRITICAL_RATE", "0.1")
    assert pipeline.validate(PARTNER, run, store).held_back is True
    assert read_json(run / layout.VALIDATION)["held_back"] is True


def test_stage_files_are_read_through_their_types_and_a_missing_field_names_the_file(run: UPath) -> None:
    """fetch.json, publish.json, delivery.json, outbound.json and summary.json are read as ``tongban.files`` types:
    a field renamed by a writer fails the reader loudly, naming the file, instead of reading as None (issue 15)."""
    import msgspec

    from tongban.files import DeliveryFile, FetchFile, OutboundFile, PublishFile, SummaryFile

    write_json(run / layout.FETCH, {"mode": "incremental", "status": "ok", "fetched": 3, "pages": 1})
    assert read_json(run / layout.FETCH, FetchFile) == FetchFile(mode="incremental", status="ok", fetched=3)
    assert pipeline.is_full_pull(run) is False
    write_json(run / layout.FETCH, {"pull_mode": "incremental", "status": "ok"})  # a writer renamed `mode`
    with pytest.raises(msgspec.ValidationError, match=r"fetch\.json: does not match FetchFile: .*`mode`"):
        pipeline.is_full_pull(run)
    broken = [
        (layout.PUBLISH, {"dryrun": True, "accepted": [], "rejected": []}, PublishFile, "`dry_run`"),
        (layout.DELIVERY, {"status": 200}, DeliveryFile, r"`\$\.status`"),
        (layout.OUTBOUND, {"status": "ok", "error": None, "dry_run": False}, OutboundFile, "`counts`"),
        (layout.SUMMARY, {"run_id": "r1", "partners": [{"division": "440100"}]}, SummaryFile, "`partner`"),
    ]
    for name, content, file_type, field in broken:
        write_json(run / name, content)
        with pytest.raises(msgspec.ValidationError, match=rf"{name}: does not match {file_type.__name__}: .*{field}"):
            read_json(run / name, file_type)


def test_one_bad_change_of_an_incremental_night_is_counted_over_the_catalogue_not_the_night(
    run: UPath, store: ItemStore
) -> None:
    """1 of a night's 2 changed records fails a critical check: over the partner's 10 published items that is 1/10,
    not 1/2 = 50% (which held the whole partner back every night until it fixed that one item); a full pull of the
    same 2 records is the whole catalogue, and is held back (issue: hold-back rate of incremental nights)."""
    published = [make_record(i) for i in range(1, 11)]
    store.apply("run-0", PARTNER.division, published, [])
    changed = {**published[0], "result": "新的办理结果"}
    bad = {**published[1], "legal_basis": ""}
    quarantined = {"position": "第1页第3条", "task_code": published[2]["task_code"], "problems": []}
    write_json(run / layout.FETCH, {"mode": "incremental", "status": "ok"})
    write_jsonl(run / layout.ITEMS, [changed, bad])
    write_jsonl(run / layout.QUARANTINE, [quarantined])  # carried by the pull (records), not counted again

    summary = pipeline.validate(PARTNER, run, store)
    assert (summary.records, summary.catalogue, summary.rejected, summary.failing) == (3, 10, 1, 1)
    assert (summary.critical_rate, summary.held_back) == (0.1, False)
    assert read_json(run / layout.VALIDATION)["catalogue"] == 10
    # the province check counts its rejections over the same catalogue
    check = province.apply_findings(run, summary, [_critical(changed["task_code"])])
    assert (check.catalogue, check.failing, check.critical_rate, check.held_back) == (10, 2, 0.2, False)

    write_json(run / layout.FETCH, {"mode": "full", "status": "ok"})
    full = pipeline.validate(PARTNER, run, store)
    assert (full.catalogue, full.critical_rate, full.held_back) == (3, round(1 / 3, 6), True)
    # an incremental pull of a partner with nothing published yet is its whole catalogue too
    write_json(run / layout.FETCH, {"mode": "incremental", "status": "ok"})
    empty = pipeline.validate(PARTNER, run, ItemStore(f"sqlite:///{run.parent / 'empty.db'}"))
    assert (empty.catalogue, empty.held_back) == (3, True)


def _critical(task_code: str) -> Finding:
    return Finding(
        row=None,
        task_code=task_code,
        element="result",
        expectation="expect_province_elements_identical",
        severity="critical",
        message="与其他地区不一致",
    )
