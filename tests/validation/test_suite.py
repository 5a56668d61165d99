"""The suite file: GX's own form, parameters and message templates that resolve, clear errors."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from item_fixtures import make_record

from tongban.model import ITEM_FIELDS
from tongban.registry import Partner
from tongban.validation import validate_across_partners, validate_items
from tongban.validation.derived import items_frame, validation_frame
from tongban.validation.suite import (
    EXPECTATIONS_DIR_ENV,
    FIVE_LEVEL_TYPE,
    PROVINCE_SUITE_FILE,
    SUITE_FILE,
    SuiteError,
    default_suite_path,
    expectation_parameters,
    load_suite,
    message_extras,
)

REPO = Path(__file__).resolve().parents[2]
FIVE_LEVEL_PLACEHOLDERS = {"element_label", "level_label", "reference_level_label", "reference_task_code"}


def test_default_path_and_env_override(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv(EXPECTATIONS_DIR_ENV, raising=False)
    assert default_suite_path() == REPO / "expectations" / SUITE_FILE
    monkeypatch.setenv(EXPECTATIONS_DIR_ENV, str(tmp_path))
    assert default_suite_path() == tmp_path / SUITE_FILE


def test_parameters_are_all_provided(partner: Partner) -> None:
    suite = load_suite()
    assert suite.parameters() <= set(expectation_parameters(partner))
    assert expectation_parameters(partner)["partner_province"] == ["440000"]


def test_message_placeholders_resolve(partner: Partner) -> None:
    frame = items_frame([make_record()])
    known = set(ITEM_FIELDS) | set(validation_frame(frame).columns) | set(message_extras(partner))
    for check in load_suite().checks.values():
        extra = FIVE_LEVEL_PLACEHOLDERS if check.type == FIVE_LEVEL_TYPE else set()
        assert set(check.placeholders) <= known | extra, check.name


@pytest.mark.parametrize("name", [SUITE_FILE, PROVINCE_SUITE_FILE])
def test_file_is_gx_suite_json(name: str) -> None:
    """GX reads every expectation of the file and writes back its type, meta, severity and kwargs
    (GX leaves out kwargs that equal the expectation's defaults)."""
    import great_expectations as gx

    from tongban.validation import five_level  # noqa: F401  (registers the custom expectation)

    document = json.loads(default_suite_path(name).read_text(encoding="utf-8"))
    suite = gx.ExpectationSuite(name=document["name"], expectations=document["expectations"])
    dumped = suite.to_json_dict()["expectations"]
    assert len(dumped) == len(document["expectations"])
    for mine, theirs, expectation in zip(document["expectations"], dumped, suite.expectations, strict=True):
        assert {k: theirs[k] for k in ("type", "meta", "severity")} == {
            k: mine[k] for k in ("type", "meta", "severity")
        }
        assert {k: v for k, v in mine["kwargs"].items() if k not in theirs["kwargs"]} == {
            k: getattr(expectation, k) for k in mine["kwargs"] if k not in theirs["kwargs"]
        }
        assert {k: mine["kwargs"][k] for k in theirs["kwargs"]} == theirs["kwargs"]


def _write_suite(tmp_path: Path, change: Any) -> Path:
    document = json.loads(default_suite_path().read_text(encoding="utf-8"))
    change(document["expectations"])
    path = tmp_path / SUITE_FILE
    path.write_text(json.dumps(document, ensure_ascii=False), encoding="utf-8")
    return path


@pytest.mark.parametrize(
    ("change", "error"),
    [
        (lambda es: es[0]["meta"].pop("check"), "meta.check is required"),
        (lambda es: es[0]["meta"].pop("message_zh"), "meta.message_zh is required"),
        (lambda es: es[0].update(severity="info"), "severity must be one of"),
        (lambda es: es[0]["meta"].update(element="colour"), "not in tongban.model.LABELS"),
        (lambda es: es[1]["meta"].update(check=es[0]["meta"]["check"]), "defined twice"),
        (lambda es: es[0]["kwargs"].update(column="_no_such_column"), "not derived"),
    ],
)
def test_malformed_suite_is_refused_before_gx(tmp_path: Path, partner: Partner, change: Any, error: str) -> None:
    with pytest.raises(SuiteError, match=error):
        validate_items([make_record()], partner, _write_suite(tmp_path, change))


@pytest.mark.parametrize(
    ("change", "error"),
    [
        (lambda es: es[0].update(type="expect_nonsense"), "GX accepted 32 of 33"),  # GX only logs this one
        (lambda es: es[0]["kwargs"].update(min_value="two"), "GX refused the suite"),
    ],
)
def test_expectation_gx_rejects_is_not_silently_dropped(
    tmp_path: Path, partner: Partner, change: Any, error: str
) -> None:
    with pytest.raises(SuiteError, match=error):
        validate_items([make_record()], partner, _write_suite(tmp_path, change))


def test_metric_error_is_raised_not_reported_as_data(tmp_path: Path, partner: Partner) -> None:
    def between_on_text(es: list[dict[str, Any]]) -> None:
        next(e for e in es if e["meta"]["check"] == "service_objects_present")["kwargs"]["column"] = "name"

    with pytest.raises(SuiteError, match="GX could not evaluate: service_objects_present"):
        validate_items([make_record()], partner, _write_suite(tmp_path, between_on_text))


def test_env_dir_is_used(tmp_path: Path, partner: Partner, monkeypatch: pytest.MonkeyPatch) -> None:
    shutil.copy(default_suite_path(), tmp_path / SUITE_FILE)
    monkeypatch.setenv(EXPECTATIONS_DIR_ENV, str(tmp_path))
    assert validate_items([make_record()], partner).gx_result["suite_name"] == "tongban_items"
    (tmp_path / SUITE_FILE).unlink()
    with pytest.raises(SuiteError, match="cannot read"):
        validate_items([make_record()], partner)


def test_province_check_must_have_the_within_partner_five_level_severity(tmp_path: Path) -> None:
    import pandas as pd

    document = json.loads(default_suite_path(PROVINCE_SUITE_FILE).read_text(encoding="utf-8"))
    document["expectations"][0]["severity"] = "warning"
    path = tmp_path / PROVINCE_SUITE_FILE
    path.write_text(json.dumps(document, ensure_ascii=False), encoding="utf-8")
    with pytest.raises(SuiteError, match="must have the severity of the within-partner 五级N同 check"):
        validate_across_partners(pd.DataFrame(), "440000", path)


def test_import_is_cheap() -> None:
    """A DAG may import tongban.validation at top level: it must pull in neither GX nor pandas."""
    code = "import sys, tongban.validation; print(sorted({'great_expectations', 'pandas'} & set(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
