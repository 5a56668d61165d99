"""The expectation suite file: where it is, what each expectation means, its runtime parameters.

``expectations/items.json`` is GX Core's own suite JSON (name, expectations with type, kwargs,
meta and severity). Value sets that come from the canonical dictionaries are GX suite
parameters (``{"$PARAMETER": "dictionary_<name>"}``) filled in at run time from
``dictionaries.yaml`` by :func:`expectation_parameters`, so no code is written down twice.
Loading and checking the file needs no GX.
"""

from __future__ import annotations

import json
import os
import string
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

from tongban.model import LABELS
from tongban.registry import CODED_FIELDS, Partner, dictionaries, divisions, wire_formats
from tongban.validation.outcome import SEVERITIES, Severity

SUITE_FILE = "items.json"
PROVINCE_SUITE_FILE = "province.json"  # 五级N同 across the partners of one province (tongban.province)
EXPECTATIONS_DIR_ENV = "TONGBAN_EXPECTATIONS_DIR"
FIVE_LEVEL_TYPE = "expect_five_level_elements_identical"

_COLUMN_KEYS = (
    "column",
    "column_A",
    "column_B",
    "group_columns",
    "column_list",
    "level_column",
    "id_column",
    "vote_column",
    "judged_column",
)


class SuiteError(RuntimeError):
    """The suite file is malformed, or GX could not evaluate one of its expectations."""


def default_suite_path(name: str = SUITE_FILE) -> Path:
    """``$TONGBAN_EXPECTATIONS_DIR/<name>``, else ``<repo>/expectations/<name>`` (``items.json``)."""
    configured = os.environ.get(EXPECTATIONS_DIR_ENV)
    directory = Path(configured) if configured else Path(__file__).resolve().parents[3] / "expectations"
    return directory / name


@dataclass(frozen=True)
class Check:
    """One expectation of the suite, as the findings need it."""

    name: str
    type: str
    severity: Severity
    elements: tuple[str, ...]
    message_zh: str
    kwargs: Mapping[str, Any]
    texts_zh: Mapping[str, str] = field(default_factory=dict)  # meta.texts_zh: wording the message picks

    @property
    def element(self) -> str:
        return self.elements[0]

    @property
    def placeholders(self) -> tuple[str, ...]:
        return tuple(f for _, f, _, _ in string.Formatter().parse(self.message_zh) if f)


@dataclass(frozen=True)
class Suite:
    path: Path
    document: dict[str, Any]
    checks: dict[str, Check]

    def columns(self) -> list[str]:
        """The frame columns the expectations read, in order of first mention."""
        seen: dict[str, None] = {}
        for check in self.checks.values():
            for key in _COLUMN_KEYS:
                value = check.kwargs.get(key)
                for column in [value] if isinstance(value, str) else value or []:
                    seen.setdefault(column, None)
            seen.update(dict.fromkeys(check.kwargs.get("element_columns", {}).values()))
        return list(seen)

    def parameters(self) -> set[str]:
        """Names of the GX suite parameters (``$PARAMETER``) the expectations use."""
        return {p for check in self.checks.values() for p in _parameter_names(check.kwargs)}


def load_suite(path: Path | None = None) -> Suite:
    """Read and check the suite file (no GX): every expectation names its check, element and message."""
    path = path or default_suite_path()
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise SuiteError(f"cannot read expectation suite {path}: {exc}") from exc
    checks: dict[str, Check] = {}
    for position, expectation in enumerate(document.get("expectations", [])):
        check = _check(expectation, f"{path}: expectation {position}")
        if check.name in checks:
            raise SuiteError(f"{path}: check {check.name!r} defined twice")
        checks[check.name] = check
    if not checks:
        raise SuiteError(f"{path}: no expectations")
    return Suite(path=path, document=document, checks=checks)


def _check(expectation: Mapping[str, Any], where: str) -> Check:
    meta = expectation.get("meta") or {}
    severity = expectation.get("severity")
    if severity not in SEVERITIES:
        raise SuiteError(f"{where}: severity must be one of {SEVERITIES}, not {severity!r}")
    elements = meta.get("elements") or [meta.get("element")]
    unknown = [e for e in elements if e not in LABELS]
    if unknown:
        raise SuiteError(f"{where}: meta.element(s) {unknown} not in tongban.model.LABELS")
    for key in ("check", "message_zh"):
        if not isinstance(meta.get(key), str) or not meta[key]:
            raise SuiteError(f"{where}: meta.{key} is required")
    return Check(
        name=meta["check"],
        type=str(expectation.get("type")),
        severity=cast(Severity, severity),
        elements=tuple(elements),
        message_zh=meta["message_zh"],
        kwargs=expectation.get("kwargs") or {},
        texts_zh=dict(meta.get("texts_zh") or {}),
    )


def _parameter_names(value: Any) -> Iterator[str]:
    if isinstance(value, Mapping):
        if "$PARAMETER" in value:
            yield str(value["$PARAMETER"])
        else:
            for v in value.values():
                yield from _parameter_names(v)
    elif isinstance(value, list):
        for v in value:
            yield from _parameter_names(v)


def expectation_parameters(partner: Partner) -> dict[str, Any]:
    """Values for the suite's ``$PARAMETER`` references: the canonical dictionaries and the province."""
    params: dict[str, Any] = {f"dictionary_{name}": sorted(codes) for name, codes in dictionaries().items()}
    params["partner_province"] = [partner.province]
    return params


# Message placeholders holding a digit inside a national code, and its dictionary (always a canonical code). The
# item's own coded elements (registry.CODED_FIELDS) are quoted in the partner's codes instead.
CANONICAL_CODED = {"_task_code_level": "level", "_task_code_level_expected": "level", "_catalog_type": "item_type"}


def coded_values(partner: Partner) -> dict[str, dict[str, str]]:
    """How a message quotes a coded value: placeholder -> {canonical code: text}. An element is quoted in the
    partner's own code with the dictionary's name (pinyin_json's 行使层级 「2（地市级）」, national_json's
    「3（地市级）」, csv_gbk's 「市级（地市级）」), so the partner finds it in its system; a digit inside a national
    code in the national code (「3（地市级）」). A value outside the dictionary is quoted as it is."""
    fmt = wire_formats()[partner.format]
    names = dictionaries()

    def quoted(dictionary: str, wire: Mapping[str, str]) -> dict[str, str]:
        return {
            c: label if wire.get(c, c) == label else f"{wire.get(c, c)}（{label}）"
            for c, label in names[dictionary].items()
        }

    shown = {field: quoted(d, fmt.to_wire(d)) for field, d in CODED_FIELDS.items()}
    return shown | {name: quoted(d, {}) for name, d in CANONICAL_CODED.items()}


def message_extras(partner: Partner) -> dict[str, str]:
    """Placeholders for messages that do not come from the row."""
    province = partner.province
    return {"partner_province": province, "partner_province_name": divisions()["provinces"].get(province, province)}
