"""五级N同 in plain pandas: which elements differ between the levels of one 基本编码.

Rows sharing the group columns (the province and 基本编码) are the same item at different
levels (or at the same level in different regions of the province). For each element whose
content hash is not the same on all of them, the reference is the value held by most rows at
the most senior level present (the lowest 行使层级 code; on a tie, the earliest row), and every
row holding another value is reported against it. No GX here: the GX expectation in
:mod:`tongban.validation.five_level` wraps this, and the benchmark calls it directly.

Across partners of a province (``vote_column`` set, see :mod:`tongban.province`) the value at the
most senior level is chosen by the number of distinct voters (partners) holding it, not rows, and
a tie has no reference: the group is *contested* and every judged row of it is reported (rows
holding the first of the tied values against the second, the others against the first).
``judged_column`` marks rows that may be reported; the other rows (items already on the platform)
take part in the vote only.
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
    vote_column: str | None = None,
    judged_column: str | None = None,
) -> list[dict[str, Any]]:
    """One entry per (group, element, reference) where the element is not identical across the
    group's rows (two entries for a contested group).

    ``element_columns`` maps an element key to the column holding its comparable value (a
    content hash, or the value itself). Rows are identified by ``df``'s index. With
    ``vote_column``, entries also carry ``votes`` (voters holding the reference value, voters at
    the group's most senior level) and ``contested``.
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
            "vote": df.loc[shared, vote_column] if vote_column else rows.index,
            "judged": df.loc[shared, judged_column].astype(bool) if judged_column else True,
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
            differences.extend(_element_differences(part, key, order, df, group_columns, vote_column is not None))
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
    part: pd.DataFrame, key: str, order: int, df: pd.DataFrame, group_columns: Sequence[str], by_voters: bool
) -> list[dict[str, Any]]:
    senior = part["level"] == part.groupby("g")["level"].transform("min")
    votes = (
        part[senior]
        .groupby(["g", "value"], sort=False, dropna=False)
        .agg(n=("vote", "nunique") if by_voters else ("row", "size"), first=("row", "min"))
        .reset_index()
        .sort_values(["g", "n", "first"], ascending=[True, False, True])
    )
    top = votes.drop_duplicates("g").set_index("g")
    runner_up = votes[votes.duplicated("g")].drop_duplicates("g").set_index("g")
    contested = pd.Index([], dtype=top.index.dtype)
    if by_voters:  # a tie in voters leaves the group without a reference
        contested = runner_up.index[runner_up["n"].to_numpy() == top.loc[runner_up.index, "n"].to_numpy()]
    voters = part[senior].groupby("g")["vote"].nunique()
    ref_value = part["g"].map(top["value"])
    same = ((part["value"] == ref_value) | (part["value"].isna() & ref_value.isna())).to_numpy()
    judged = part["judged"].to_numpy(dtype=bool)
    in_contest = part["g"].isin(contested).to_numpy()
    # (reference row, rows reported against it): off the top value, and in a contest also the top value's rows
    against = [(top, part[~same & judged]), (runner_up, part[same & judged & in_contest])]
    out: dict[tuple[Any, int], dict[str, Any]] = {}
    for references, off in against:
        if off.empty:
            continue
        first_rows = references["first"].to_numpy()
        reference = part.loc[first_rows].set_index("g")
        groups = df.loc[first_rows, list(group_columns)].to_numpy(dtype=object)
        refs = {
            g: (_where(row, ident, level), dict(zip(group_columns, map(_json, values), strict=True)), int(n))
            for g, row, ident, level, values, n in zip(
                reference.index,
                reference["row"],
                reference["id"],
                reference["level"],
                groups,
                references["n"],
                strict=True,
            )
        }
        for g, row, ident, level in zip(off["g"], off["row"], off["id"], off["level"], strict=True):
            ref, group, n = refs[g]
            entry = out.get((g, ref["row"]))
            if entry is None:
                entry = out[(g, ref["row"])] = {
                    "group": group,
                    "element": key,
                    "label": LABELS.get(key, key),
                    "reference": ref,
                    "differing": [],
                    "_first_row": ref["row"],
                    "_order": order,
                }
                if by_voters:
                    entry["votes"] = {"reference": n, "senior": int(voters[g])}
                    entry["contested"] = bool(g in contested)
            entry["differing"].append(_where(row, ident, level))
            entry["_first_row"] = min(entry["_first_row"], int(row))
    return list(out.values())


def _where(row: Any, ident: Any, level: Any) -> dict[str, Any]:
    return {"row": int(row), "id": _json(ident), "level": _json(level)}


def _json(value: Any) -> Any:
    return value.item() if hasattr(value, "item") else value
