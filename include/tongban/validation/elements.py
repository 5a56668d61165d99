"""五级N同 in plain pandas: which elements differ between the levels of one 基本编码.

Rows sharing the group columns (the province and 基本编码) are the same item at different
levels (or at the same level in different regions of the province). For each element whose
content hash is not the same on all of them, the reference is the value held by most rows at
the most senior level present (the lowest 行使层级 code; on a tie, the earliest row), and every
row holding another value is reported against it. No GX here: the GX expectation in
:mod:`tongban.validation.five_level` wraps this, and the benchmark calls it directly.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import pandas as pd

from tongban.model import LABELS


def five_level_differences(
    df: pd.DataFrame,
    element_columns: Mapping[str, str],
    group_columns: Sequence[str],
    level_column: str,
    id_column: str,
) -> list[dict[str, Any]]:
    """One entry per (group, element) that is not identical across the group's rows.

    ``element_columns`` maps an element key to the column holding its comparable value (a
    content hash, or the value itself). Rows are identified by ``df``'s index.
    """
    if df.empty:
        return []
    group = df.groupby(list(group_columns), sort=False, dropna=False).ngroup()
    shared = group.duplicated(keep=False).to_numpy()
    if not shared.any():
        return []
    columns = list(dict.fromkeys(element_columns.values()))
    rows = df.loc[shared, columns]
    base = pd.DataFrame(
        {
            "g": group.to_numpy()[shared],
            "row": rows.index,
            "level": df.loc[shared, level_column],
            "id": df.loc[shared, id_column],
        },
        index=rows.index,
    )
    varying = _varying(rows, base["g"])
    differences: list[dict[str, Any]] = []
    for order, (key, column) in enumerate(element_columns.items()):
        varying_groups = varying.index[varying[column].to_numpy()]
        if len(varying_groups):
            varies = base["g"].isin(varying_groups).to_numpy()
            part = base[varies].assign(value=rows[column][varies])
            differences.extend(_element_differences(part, key, order, df, group_columns))
    differences.sort(key=lambda d: (d["_first_row"], d["_order"]))
    for d in differences:
        del d["_first_row"], d["_order"]
    return differences


def _varying(rows: pd.DataFrame, group: pd.Series) -> pd.DataFrame:
    """Per group and column: do the values differ? (min/max, much faster than nunique)."""
    grouped = rows.groupby(group.to_numpy(), sort=False)
    low, high = grouped.min(), grouped.max()
    nulls = rows.isna().groupby(group.to_numpy(), sort=False)
    values_differ = ~((low == high) | (low.isna() & high.isna()))
    return values_differ | (nulls.min() != nulls.max())


def _element_differences(
    part: pd.DataFrame, key: str, order: int, df: pd.DataFrame, group_columns: Sequence[str]
) -> list[dict[str, Any]]:
    senior = part["level"] == part.groupby("g")["level"].transform("min")
    votes = (
        part[senior]
        .groupby(["g", "value"], sort=False, dropna=False)
        .agg(n=("row", "size"), first=("row", "min"))
        .reset_index()
        .sort_values(["g", "n", "first"], ascending=[True, False, True])
        .drop_duplicates("g")
        .set_index("g")
    )
    reference = part.loc[votes["first"].to_numpy()].set_index("g")
    ref_value = part["g"].map(votes["value"])
    same = (part["value"] == ref_value) | (part["value"].isna() & ref_value.isna())
    off = part[~same.to_numpy()]
    groups = df.loc[reference["row"].to_numpy(), list(group_columns)].to_numpy(dtype=object)
    refs = {
        g: (_where(row, ident, level), dict(zip(group_columns, map(_json, values), strict=True)))
        for g, row, ident, level, values in zip(
            reference.index, reference["row"], reference["id"], reference["level"], groups, strict=True
        )
    }
    out: dict[Any, dict[str, Any]] = {}
    for g, row, ident, level in zip(off["g"], off["row"], off["id"], off["level"], strict=True):
        if g not in out:
            ref, group = refs[g]
            out[g] = {
                "group": group,
                "element": key,
                "label": LABELS.get(key, key),
                "reference": ref,
                "differing": [],
                "_first_row": ref["row"],
                "_order": order,
            }
        out[g]["differing"].append(_where(row, ident, level))
        out[g]["_first_row"] = min(out[g]["_first_row"], int(row))
    return list(out.values())


def _where(row: Any, ident: Any, level: Any) -> dict[str, Any]:
    return {"row": int(row), "id": _json(ident), "level": _json(level)}


def _json(value: Any) -> Any:
    return value.item() if hasattr(value, "item") else value
