"""One GX validation run over a frame of items, and its result turned into per-row findings.

Imports pandas at module level and GX only inside :func:`run_gx`; import this module lazily.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import logging
import math
import time
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pandas as pd

import tongban.validation.gx_import  # noqa: F401  (before any GX import: GX without what it would load unused)
from tongban.model import COMPARED
from tongban.normalise import WIDTH_ONLY, width_only_difference
from tongban.registry import Partner, divisions, label
from tongban.validation.derived import items_frame, validation_frame
from tongban.validation.outcome import Finding, ValidationOutcome
from tongban.validation.suite import (
    FIVE_LEVEL_TYPE,
    PROVINCE_SUITE_FILE,
    Check,
    Suite,
    SuiteError,
    coded_values,
    default_suite_path,
    expectation_parameters,
    load_suite,
    message_extras,
)

# COMPLETE so that every failing row is listed (unexpected_index_list holds the frame index,
# which is the row position); the pandas query string for those rows is not needed. Only the expectations
# that failed are run in it (see run_gx); the first pass over the whole suite asks for pass or fail only.
RESULT_FORMAT: dict[str, Any] = {
    "result_format": "COMPLETE",
    "partial_unexpected_count": 20,
    "return_unexpected_index_query": False,
}
FIRST_PASS_FORMAT: dict[str, Any] = {"result_format": "BOOLEAN_ONLY"}
EMPTY = "（空）"
log = logging.getLogger(__name__)
_MAX_SHOWN = 60


def validate_items(
    records: Sequence[Mapping[str, Any]],
    partner: Partner,
    suite_path: Path | None = None,
) -> ValidationOutcome:
    started = time.perf_counter()
    frame = items_frame(records)
    log.debug("built a frame of %d records in %.2fs", len(frame), time.perf_counter() - started)
    return validate_frame(frame, partner, suite_path)


def validate_frame(frame: pd.DataFrame, partner: Partner, suite_path: Path | None = None) -> ValidationOutcome:
    """Validate a frame of item records (columns ``model.ITEM_FIELDS``, index = row position)."""
    started = time.perf_counter()
    suite = load_suite(suite_path)
    derived = validation_frame(frame)
    columns = suite.columns()
    missing = [c for c in columns if c not in derived.columns]
    if missing:
        raise SuiteError(f"{suite.path}: expectations read columns that are not derived: {missing}")
    derived_at = time.perf_counter()
    result = run_gx(derived[columns], suite, expectation_parameters(partner))
    gx_at = time.perf_counter()
    findings = _Findings(frame, derived, suite, message_extras(partner), coded_values(partner)).collect(result)
    outcome = ValidationOutcome(rows=len(frame), findings=findings, gx_result=result)
    log.info(
        "validated %d rows of %s with %s: %d rejected, %d findings (derive %.2fs, GX %.2fs, findings %.2fs)",
        len(frame),
        partner.division,
        suite.path.name,
        len(outcome.rejected_rows),
        len(findings),
        derived_at - started,
        gx_at - derived_at,
        time.perf_counter() - gx_at,
    )
    return outcome


def validate_across_partners(frame: pd.DataFrame, province: str, suite_path: Path | None = None) -> ValidationOutcome:
    """五级N同 across the partners of one province, with the province suite (``expectations/province.json``).

    ``frame``: one row per item (index = row position) with the columns the suite reads (``partner``,
    ``catalog_code``, ``level``, ``task_code``, ``_judged``, the hashes ``_h_<element>``) and those its
    message names (``name``, ``partner_name``); see ``tongban.province``. Raises SuiteError when the
    province check's severity is not the within-partner 五级N同 check's: both must treat a difference alike.
    """
    started = time.perf_counter()
    suite = load_suite(suite_path or default_suite_path(PROVINCE_SUITE_FILE))
    within = [c for c in load_suite().checks.values() if c.type == FIVE_LEVEL_TYPE]
    for check in suite.checks.values():
        if any(c.severity != check.severity for c in within):
            raise SuiteError(f"{suite.path}: {check.name} must have the severity of the within-partner 五级N同 check")
    columns = suite.columns()
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise SuiteError(f"{suite.path}: expectations read columns the province frame lacks: {missing}")
    result = run_gx(frame[columns], suite, {})
    names = divisions()["provinces"]
    extras = {"partner_province": province, "partner_province_name": names.get(province, province)}
    findings = _Findings(frame, frame, suite, extras).collect(result)
    outcome = ValidationOutcome(rows=len(frame), findings=findings, gx_result=result)
    log.info(
        "province %s: compared %d rows across partners, %d findings (%.2fs)",
        province,
        len(frame),
        len(findings),
        time.perf_counter() - started,
    )
    return outcome


def run_gx(df: pd.DataFrame, suite: Suite, parameters: Mapping[str, Any]) -> dict[str, Any]:
    """Validate ``df`` with the suite; GX's result as JSON (``ExpectationSuiteValidationResult.to_json_dict()``).

    GX runs in a throwaway in-memory context that writes nothing (workers share no state), and validates the
    frame as one batch (``Batch.validate``) with the suite's GX form, built once per process and suite
    document (:func:`_gx_suite`). No checkpoint, no stores, no Data Docs: the result is the record, and the UI
    renders its Data Docs page from it when someone opens it.

    Two passes: every expectation in ``BOOLEAN_ONLY`` (pass or fail: half the cost of ``COMPLETE`` on a
    night's few rows, where GX's cost is building each expectation's metric graph), then only those that
    failed again in ``COMPLETE`` (:data:`RESULT_FORMAT`: which rows, what differs), whose results replace
    theirs. The findings are the same as from one ``COMPLETE`` pass, and so are the statistics and each
    expectation's success; a passing expectation's result carries no observed value.
    """
    import great_expectations as gx
    from great_expectations.core.run_identifier import RunIdentifier
    from great_expectations.data_context.data_context.context_factory import project_manager
    from great_expectations.data_context.types.base import (
        DataContextConfig,
        InMemoryStoreBackendDefaults,
        ProgressBarsConfig,
    )

    from tongban.validation import five_level  # noqa: F401  (registers the custom expectation)
    from tongban.validation.gx_memo import install

    install()
    started = datetime.now(UTC)
    document = json.dumps(suite.document, sort_keys=True)
    context = gx.get_context(  # a new one each time (0.02 s): nothing of a validation outlives it
        mode="ephemeral",
        project_config=DataContextConfig(
            store_backend_defaults=InMemoryStoreBackendDefaults(),
            progress_bars=ProgressBarsConfig(globally=False),
            analytics_enabled=False,
        ),
    )
    # Adding the datasource, asset and batch definition would each serialise the context's whole configuration
    # to YAML for its in-memory store (a tenth of a small validation), which this throwaway context never reads.
    context._save_project_config = lambda: None  # type: ignore[method-assign]
    batch = (
        context.data_sources.add_pandas("tongban")
        .add_dataframe_asset("items")
        .add_batch_definition_whole_dataframe("all_rows")
        .get_batch(batch_parameters={"dataframe": df})
    )
    values = dict(parameters)
    try:
        result = batch.validate(
            _gx_suite(str(suite.path), document), result_format=FIRST_PASS_FORMAT, expectation_parameters=values
        )
        failed = {_check_of(r): i for i, r in enumerate(result.results) if not r.success}
        if failed:
            again = _gx_suite(str(suite.path), document, tuple(sorted(failed)))
            for detailed in batch.validate(again, result_format=RESULT_FORMAT, expectation_parameters=values).results:
                result.results[failed[_check_of(detailed)]] = detailed
    finally:
        project_manager.set_project(None)  # GX keeps the newest context, and with it the frame, until the next
    run = RunIdentifier(run_time=started)  # when it ran, as a checkpoint would note it (its Data Docs page shows it)
    result.meta |= {"run_id": run, "validation_time": run.run_time}
    return result.to_json_dict()


def _check_of(result: Any) -> str:
    """The suite check an expectation's result is of (``meta.check``: one expectation per check, load_suite)."""
    return str(result.expectation_config.meta["check"])


@functools.lru_cache(maxsize=64)
def _gx_suite(path: str, document_json: str, checks: tuple[str, ...] | None = None) -> Any:
    """The GX ``ExpectationSuite`` of a suite document, or of its expectations of ``checks`` only; built once
    per document and choice (GX's ~0.1 s for the whole suite), shared read-only."""
    import great_expectations as gx

    document = json.loads(document_json)
    expectations = [
        e for e in document["expectations"] if checks is None or (e.get("meta") or {}).get("check") in checks
    ]
    try:
        gx_suite = gx.ExpectationSuite(
            name=document["name"],
            expectations=expectations,
            meta=dict(document.get("meta") or {}),
            notes=document.get("notes"),
        )
    except Exception as exc:  # GX raises pydantic, marshmallow and its own errors here
        raise SuiteError(f"{path}: GX refused the suite: {exc}") from exc
    accepted, written = len(gx_suite.expectations), len(expectations)
    if accepted != written:  # GX logs and drops unknown expectation types
        raise SuiteError(f"{path}: GX accepted {accepted} of {written} expectations")
    return gx_suite


class _Findings:
    """Maps a GX result back to rows, wording each failure in Chinese from the check's template."""

    def __init__(
        self,
        frame: pd.DataFrame,
        derived: pd.DataFrame,
        suite: Suite,
        extras: Mapping[str, str],
        coded: Mapping[str, Mapping[str, str]] | None = None,
    ) -> None:
        self.frame, self.derived, self.suite, self.extras = frame, derived, suite, extras
        self.coded = coded or {}  # suite.coded_values: how a coded value is quoted
        self._arrays: dict[str, Any] = {}
        self._task_codes = frame["task_code"].to_numpy(dtype=object)

    def collect(self, result: Mapping[str, Any]) -> list[Finding]:
        errors = [e for r in result["results"] for e in _errors(r)]
        if errors:
            raise SuiteError("GX could not evaluate: " + "; ".join(errors))
        order = {name: i for i, name in enumerate(self.suite.checks)}
        findings: list[Finding] = []
        for r in result["results"]:
            if r["success"]:
                continue
            check = self.suite.checks[r["expectation_config"]["meta"]["check"]]
            findings.extend(
                self._five_level(check, r["result"])
                if check.type == FIVE_LEVEL_TYPE
                else self._per_row(check, r["result"])
            )
        findings.sort(key=lambda f: (f.row, order[f.expectation]))
        return findings

    def _per_row(self, check: Check, result: Mapping[str, Any]) -> list[Finding]:
        rows = result.get("unexpected_index_list")
        if rows is None:
            raise SuiteError(f"check {check.name!r} failed without naming rows: {result}")
        return [self._finding(check, int(row), check.element, {}) for row in rows]

    def _five_level(self, check: Check, result: Mapping[str, Any]) -> list[Finding]:
        out: list[Finding] = []
        for diff in result["details"]["differences"]:
            ref = diff["reference"]
            shared = {
                "element_label": diff["label"],
                "reference_level_label": label("level", ref["level"]),
                "reference_task_code": _shown(ref["id"]),
            }
            for name in check.placeholders:  # {reference_<column>}: that column on the reference row
                column = name.removeprefix("reference_")
                if name not in shared and column != name and name not in self.extras:
                    shared[name] = _shown(self._column(column)[int(ref["row"])])
            if "votes" in diff:  # across partners: how the reference was chosen (suite meta.texts_zh)
                votes = {
                    "reference_votes": str(diff["votes"]["reference"]),
                    "senior_voters": str(diff["votes"]["senior"]),
                }
                verdict = check.texts_zh.get("contested" if diff["contested"] else "majority", "")
                shared |= votes | {"verdict": verdict.format_map({**self.extras, **shared, **votes})}
            for where in diff["differing"]:
                extra = {**shared, "level_label": label("level", where["level"])}
                finding = self._finding(check, int(where["row"]), diff["element"], extra)
                if self._width_only(diff["element"], int(where["row"]), int(ref["row"])):
                    finding = dataclasses.replace(finding, message=finding.message + WIDTH_ONLY)
                out.append(finding)
        return out

    def _width_only(self, element: str, row: int, reference: int) -> bool:
        """The element's values on the two rows differ only in width or invisible characters."""
        fields = next((e.fields for e in COMPARED if e.key == element), ())
        if not fields or any(f not in self.frame for f in fields):
            return False
        values = [[self._column(f)[r] for f in fields] for r in (row, reference)]
        return width_only_difference(*values)

    def _finding(self, check: Check, row: int, element: str, extra: Mapping[str, str]) -> Finding:
        values = {**self.extras, **extra}
        for name in check.placeholders:
            if name not in values:
                value = self._column(name)[row]
                quoted = self.coded[name].get(value) if name in self.coded and isinstance(value, str) else None
                values[name] = quoted or _shown(value)
        task_code = self._task_codes[row]
        return Finding(
            row=row,
            task_code=task_code if isinstance(task_code, str) else "",
            element=element,
            expectation=check.name,
            severity=check.severity,
            message=check.message_zh.format_map(values),
        )

    def _column(self, name: str) -> Any:
        if name not in self._arrays:
            source = self.derived if name.startswith("_") or name not in self.frame else self.frame
            if name not in source:
                raise SuiteError(f"message placeholder {{{name}}} is neither a record field nor derived")
            self._arrays[name] = source[name].to_numpy(dtype=object)
        return self._arrays[name]


def _errors(result: Mapping[str, Any]) -> list[str]:
    info = result.get("exception_info") or {}
    entries = [info] if "raised_exception" in info else list(info.values())
    check = (result.get("expectation_config") or {}).get("meta", {}).get("check", "?")
    return [
        f"{check}: {e.get('exception_message')}" for e in entries if isinstance(e, dict) and e.get("raised_exception")
    ]


def _shown(value: Any) -> str:
    """A value as partners read it: empty as （空）, lists joined, long text cut."""
    if value is None or value is pd.NA or (isinstance(value, float) and math.isnan(value)):
        return EMPTY
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, list | tuple):
        return ",".join(_shown(v) for v in value) or EMPTY
    text = str(value)
    if not text:
        return EMPTY
    return text if len(text) <= _MAX_SHOWN else text[:_MAX_SHOWN] + "…"
