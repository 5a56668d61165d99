"""Derived columns: cheap facts about item rows, computed once in pandas for the suite to assert.

GX cannot compute check characters, look inside list-valued fields or compare elements across
levels, so those facts are computed here and ``expectations/items.json`` asserts them like any
other column. Scalar facts are vectorised (pyarrow string kernels, per-distinct-value lookups
for codes); the two list-valued fields (服务对象, 申请材料) are read in one Python pass each.
五级N同 compares the elements through :mod:`tongban.hashing`'s content hashes.

The validation frame holds normalised copies of the scalar columns the suite reads directly
(missing required text becomes ``""`` so GX's null-skipping checks still see it) and derived
columns named ``_*``. Some derived columns only serve to word the Chinese messages.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from tongban.codes import (
    CATALOG_CODE_LENGTH,
    TASK_CODE_LENGTH,
    USCC_LENGTH,
    USCC_PATTERN,
    org_code_check_char,
    uscc_check_char,
)
from tongban.hashing import element_hash_frame
from tongban.model import ELEMENTS, ITEM_FIELDS
from tongban.registry import dictionaries

_CATALOG_PATTERN = f"[0-9]{{{CATALOG_CODE_LENGTH}}}"

# Natural days per unit, to compare a promised limit with a legal one kept in another unit:
# five working days span a seven-day week. Holidays make it approximate, hence only a warning.
NATURAL_DAYS_PER_UNIT: dict[str, float] = {"ND": 1.0, "WD": 7 / 5}

HASH_PREFIX = "_h_"
"""Derived column ``_h_<element key>``: a content hash of one 五级N同 element (uint64)."""

REQUIRED_TEXT: tuple[str, ...] = ("legal_basis", "accept_conditions", "procedure", "result", "dept_name")
SCALAR_CODES: tuple[str, ...] = ("partner", "task_code", "catalog_code", "item_type", "level", "handling_mode")


def items_frame(records: Sequence[Mapping[str, Any]]) -> pd.DataFrame:
    """The records as a frame of exactly the canonical item columns, indexed by row position."""
    frame = pd.DataFrame.from_records(list(records), columns=list(ITEM_FIELDS))
    frame.index = pd.RangeIndex(len(frame))
    return frame


def validation_frame(frame: pd.DataFrame) -> pd.DataFrame:
    """Normalised scalar columns plus every derived column, on the same index as ``frame``."""
    cols: dict[str, Any] = {name: _text(frame[name]) for name in (*SCALAR_CODES, "name", "dept_uscc")}
    cols["handle_type"] = frame["handle_type"]  # optional: a null passes (GX skips nulls)
    cols["_province"] = cols["partner"].str[:2]
    cols["_name_len"] = cols["name"].str.len()
    cols.update({f"_{name}_ok": _present(frame[name]) for name in REQUIRED_TEXT})
    cols.update(_service_objects(frame["service_objects"]))
    cols.update(_materials(frame["materials"]))
    cols.update(_time_limits(frame))
    cols.update(_task_code(cols["task_code"], cols["dept_uscc"], cols["level"], cols["catalog_code"]))
    cols.update(uscc_checks(cols["dept_uscc"]))
    cols.update(_catalog_type(cols["catalog_code"], cols["item_type"]))
    cols.update(element_hashes(frame))
    return pd.DataFrame(cols, index=frame.index)


def _text(s: pd.Series) -> pd.Series:
    """A string column with missing values as ``""``."""
    return s.fillna("").astype(str)


def _present(s: pd.Series) -> pd.Series:
    """Text that is not missing, empty or only whitespace (pyarrow kernels; a regex is slower)."""
    text = _text(s)
    return (text.str.len() > 0) & ~text.str.isspace()


def _per_distinct(s: pd.Series, fn: Callable[[str], Any], dtype: Any = object) -> np.ndarray:
    """``fn`` of each value, computed once per distinct value (codes repeat a lot); NaN stays missing."""
    codes, distinct = pd.factorize(s)
    missing = np.nan if dtype is float else None
    return np.array([fn(v) for v in distinct] + [missing], dtype=dtype)[codes]


def _service_objects(s: pd.Series) -> dict[str, Any]:
    known = frozenset(dictionaries()["service_object"])
    values = s.to_numpy(dtype=object)
    unknown = np.array([",".join(str(c) for c in _as_list(v) if c not in known) for v in values], dtype=object)
    return {
        "_service_objects_count": _lengths(values),
        "_service_objects_known": unknown == "",
        "_service_objects_unknown": unknown,
    }


def _materials(s: pd.Series) -> dict[str, Any]:
    values = s.to_numpy(dtype=object)
    unnamed = np.fromiter((_unnamed(v) for v in values), np.int64, len(values))
    return {
        "_materials_count": _lengths(values),
        "_materials_unnamed": unnamed,
        "_materials_named": unnamed == 0,
    }


def _as_list(value: Any) -> list[Any]:
    """A list-valued field as a list: missing is empty, a stray scalar is one entry."""
    if type(value) is list:
        return value
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return []
    return [value]


def _lengths(values: np.ndarray) -> np.ndarray:
    return np.fromiter((len(_as_list(v)) for v in values), np.int64, len(values))


def _unnamed(materials: Any) -> int:
    """How many entries of a 申请材料 list lack a name."""
    missing = 0
    for material in _as_list(materials):
        name = material.get("name") if isinstance(material, Mapping) else None
        if not (isinstance(name, str) and name and not name.isspace()):
            missing += 1
    return missing


def _time_limits(frame: pd.DataFrame) -> dict[str, Any]:
    units = dictionaries()["time_unit"]
    out: dict[str, Any] = {}
    facts: dict[str, tuple[pd.Series, pd.Series, pd.Series, np.ndarray]] = {}
    for kind in ("legal", "promised"):
        value, unit = frame[f"{kind}_limit"], _text(frame[f"{kind}_limit_unit"])
        present = value.notna()
        number = pd.to_numeric(value, errors="coerce")
        valid = number.notna() & (number >= 0) & (number % 1 == 0)
        unit_known = unit.isin(list(units))
        out[f"_{kind}_limit_ok"] = ~present | valid
        out[f"_{kind}_limit_unit_ok"] = ~present | unit_known
        out[f"_{kind}_unit_label"] = _per_distinct(unit, lambda u: units.get(u, u))
        days = _per_distinct(unit, lambda u: NATURAL_DAYS_PER_UNIT.get(u, np.nan), dtype=float)
        facts[kind] = (present & valid & unit_known, number, unit, days)
    (legal_ok, legal, legal_unit, legal_days), (promised_ok, promised, promised_unit, promised_days) = (
        facts["legal"],
        facts["promised"],
    )
    both = legal_ok & promised_ok
    same_unit = both & (legal_unit == promised_unit)
    other_unit = both & (legal_unit != promised_unit)
    out["_time_limit_present"] = frame["legal_limit"].notna() | frame["promised_limit"].notna()
    out["_limits_order_ok"] = ~same_unit | (promised <= legal)
    out["_limits_order_converted_ok"] = ~other_unit | ~(promised * promised_days > legal * legal_days)
    return out


def _task_code(task: pd.Series, uscc: pd.Series, level: pd.Series, catalog: pd.Series) -> dict[str, Any]:
    """实施编码 = USCC (18) + 行使层级 (1) + 基本编码 (12); its parts are judged only at full length."""
    length = task.str.len()
    skip = length != TASK_CODE_LENGTH
    parts = {
        "uscc": task.str[:USCC_LENGTH],
        "level": task.str[USCC_LENGTH : USCC_LENGTH + 1],
        "catalog": task.str[USCC_LENGTH + 1 :],
    }
    return {
        "_task_code_len": length,
        **{f"_task_code_{k}": v for k, v in parts.items()},
        "_task_code_uscc_ok": skip | (parts["uscc"] == uscc),
        "_task_code_level_ok": skip | (parts["level"] == level),
        "_task_code_level_expected": level,  # the 19th digit is the item's level in the national code
        "_task_code_catalog_ok": skip | (parts["catalog"] == catalog),
    }


def uscc_checks(uscc: pd.Series) -> dict[str, Any]:
    """The USCC check: shape, and the check characters of well-formed codes (GB 32100 and its GB 11714
    part), computed once per distinct code. A code is right when ``_uscc_format_ok``, ``_uscc_check_ok``
    and ``_org_check_ok`` all hold."""
    well_formed = uscc.str.fullmatch(USCC_PATTERN)
    expected_check = _per_distinct(uscc, lambda c: uscc_check_char(c[:17]))
    expected_org = _per_distinct(uscc, lambda c: org_code_check_char(c[8:16]))
    division = uscc.str[2:8].where(well_formed)
    return {
        "_uscc_format_ok": well_formed,
        "_uscc_len": uscc.str.len(),
        "_uscc_check_expected": expected_check,
        "_uscc_check_ok": ~well_formed | (uscc.str[17:18] == expected_check),
        "_org_code": uscc.str[8:17],
        "_org_check_expected": expected_org,
        "_org_check_ok": ~well_formed | (uscc.str[16:17] == expected_org),
        "_uscc_division": division,
        "_uscc_province": (division.str[:2] + "0000").where(well_formed),
    }


def _catalog_type(catalog: pd.Series, item_type: pd.Series) -> dict[str, Any]:
    """基本编码 positions 3-4 against 事项类型; judged only when both are well formed."""
    judged = catalog.str.fullmatch(_CATALOG_PATTERN) & item_type.isin(list(dictionaries()["item_type"]))
    inner = catalog.str[2:4]
    return {"_catalog_type": inner, "_catalog_type_ok": ~judged | (inner == item_type)}


def element_hashes(frame: pd.DataFrame) -> dict[str, pd.Series]:
    """``_h_<key>``: a uint64 content hash of each 五级N同 element of each row (:mod:`tongban.hashing`)."""
    hashes = element_hash_frame(frame, ELEMENTS)
    return {HASH_PREFIX + key: hashes[key] for key in hashes.columns}
