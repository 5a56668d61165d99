"""Validation of canonical service items with a GX Core expectation suite.

``import tongban.validation`` is cheap: no pandas, no GX. They are imported when
:func:`validate_items` first runs (GX alone takes seconds to import), so a DAG file may import
this package at top level.

    from tongban.validation import validate_items
    outcome = validate_items([item.record() for item in items], partner)
    outcome.findings, outcome.rejected_rows, outcome.summary(), outcome.gx_result

The suite is ``expectations/items.json`` (``$TONGBAN_EXPECTATIONS_DIR/items.json`` when set),
read on every call; GX's in-memory context and the suite's GX form are built once per process, and each
call validates its frame as one batch (``runner.run_gx``).
:func:`validate_across_partners` does the same with ``expectations/province.json`` for 五级N同
across the partners of one province.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tongban.validation.outcome import Finding, FlaggedRecord, Severity, ValidationOutcome

if TYPE_CHECKING:
    import pandas as pd

    from tongban.registry import Partner

# GX logs some 200 INFO lines about its own API docs ("Skipping registering function …") when it is imported:
# noise in every task log that imports it. Every import of GX in the project comes after this package's.
logging.getLogger("great_expectations._docs_decorators").setLevel(logging.WARNING)

__all__ = ["Finding", "FlaggedRecord", "Severity", "ValidationOutcome", "validate_across_partners", "validate_items"]


def validate_items(
    records: Sequence[Mapping[str, Any]],
    partner: Partner,
    suite_path: Path | None = None,
) -> ValidationOutcome:
    """Validate item records (``Item.record()`` dicts) of one partner, or of several partners of
    one province (the province check uses ``partner.province``).

    Rows are positions in ``records``. Raises ``tongban.validation.suite.SuiteError`` when the
    suite file is malformed or GX cannot evaluate one of its expectations.
    """
    from tongban.validation.runner import validate_items as run

    return run(records, partner, suite_path)


def validate_across_partners(frame: pd.DataFrame, province: str, suite_path: Path | None = None) -> ValidationOutcome:
    """五级N同 across the partners of one province: a frame of element hashes, one row per item, as
    ``tongban.province`` builds it (``expectations/province.json``; see the runner's function)."""
    from tongban.validation.runner import validate_across_partners as run

    return run(frame, province, suite_path)
