"""五级N同 as a custom GX Core expectation: ``expect_five_level_elements_identical``.

This module imports GX at its top, so import it only inside functions (``tongban.validation``
does so when it validates). Importing it registers the expectation and its metric with GX.
"""

from typing import Any, ClassVar

import tongban.validation.gx_import  # noqa: F401  (first: GX without the modules it would load unused)

# isort: split
from great_expectations.compatibility import pydantic
from great_expectations.core.metric_domain_types import MetricDomainTypes
from great_expectations.execution_engine import ExecutionEngine, PandasExecutionEngine
from great_expectations.expectations.expectation import BatchExpectation
from great_expectations.expectations.expectation_configuration import parse_result_format
from great_expectations.expectations.metrics.metric_provider import metric_value
from great_expectations.expectations.metrics.table_metric_provider import TableMetricProvider

from tongban.validation.elements import five_level_differences

METRIC = "tongban.five_level_differences"
_VALUE_KEYS = ("element_columns", "group_columns", "level_column", "id_column", "vote_column", "judged_column")


class FiveLevelDifferences(TableMetricProvider):
    """The elements that differ between rows sharing the group columns (see ``elements.py``)."""

    metric_name = METRIC
    value_keys = _VALUE_KEYS

    @metric_value(engine=PandasExecutionEngine)
    def _pandas(
        cls,
        execution_engine: PandasExecutionEngine,
        metric_domain_kwargs: dict,
        metric_value_kwargs: dict,
        metrics: dict[str, Any],
        runtime_configuration: dict,
    ) -> list[dict[str, Any]]:
        df, _, _ = execution_engine.get_compute_domain(metric_domain_kwargs, domain_type=MetricDomainTypes.TABLE)
        return five_level_differences(df, **{k: metric_value_kwargs[k] for k in _VALUE_KEYS})


class ExpectFiveLevelElementsIdentical(BatchExpectation):
    """Expect every 五级N同 element to be identical on all rows that share a 基本编码.

    ``element_columns`` maps element keys (``tongban.model.ELEMENTS``) to the columns holding
    their comparable values, normally the content hashes ``_h_<key>``. The result lists each
    differing (group, element) in ``details.differences`` with the reference row and the rows
    that differ from it (row index, ``id_column`` value and level), and the rows in
    ``unexpected_index_list``.

    Across partners of a province: ``vote_column`` (the partner) makes the most senior level's
    value the one held by most partners, a tie leaving the group contested (every judged row
    reported); rows whose ``judged_column`` is false vote but are never reported. See
    ``tongban.validation.elements``.
    """

    element_columns: dict[str, str]
    group_columns: list[str] = pydantic.Field(default_factory=lambda: ["catalog_code"])
    level_column: str = "level"
    id_column: str = "task_code"
    vote_column: str | None = None
    judged_column: str | None = None

    metric_dependencies: ClassVar[tuple[str, ...]] = (METRIC, "table.row_count")
    success_keys: ClassVar[tuple[str, ...]] = _VALUE_KEYS
    args_keys: ClassVar[tuple[str, ...]] = ("element_columns",)

    @pydantic.validator("element_columns")
    def _some_elements(cls, value: dict[str, str]) -> dict[str, str]:
        if not value:
            raise ValueError("element_columns must name at least one element")
        return value

    def _validate(
        self,
        metrics: dict,
        runtime_configuration: dict | None = None,
        execution_engine: ExecutionEngine | None = None,
    ) -> dict[str, Any]:
        differences: list[dict[str, Any]] = metrics[METRIC]
        success = not differences
        result_format = parse_result_format(self._get_result_format(runtime_configuration))
        if result_format["result_format"] == "BOOLEAN_ONLY":
            return {"success": success, "result": {}}
        rows = sorted({d["row"] for diff in differences for d in diff["differing"]})
        partial = int(result_format["partial_unexpected_count"])
        complete = result_format["result_format"] == "COMPLETE"
        total = int(metrics.get("table.row_count") or 0)
        result: dict[str, Any] = {
            "observed_value": len(differences),
            "element_count": total,
            "unexpected_count": len(rows),
            "unexpected_percent": 100.0 * len(rows) / total if total else 0.0,
            "partial_unexpected_list": [_brief(d) for d in differences[:partial]],
            "details": {"differences": differences if complete else differences[:partial]},
        }
        if complete:
            result["unexpected_index_list"] = rows
        return {"success": success, "result": result}


def _brief(difference: dict[str, Any]) -> dict[str, Any]:
    return {
        "element": difference["element"],
        "group": difference["group"],
        "reference": difference["reference"]["id"],
        "differing": [d["id"] for d in difference["differing"]],
    }
