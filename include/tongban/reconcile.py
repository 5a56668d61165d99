"""Reconcile a partner's validated catalogue against what the provincial platform holds.

Deterministic and idempotent: the same inputs give the same result, every list sorted by 实施编码.
Items that were rejected or quarantined this run are *held*: the platform keeps its version of
them; they are neither changed nor removed because of a bad record. An item that disappears under
one 实施编码 while an item with the same 基本编码, name and department appears under another is a
*re-code*, not a removal plus an addition. An incremental pull (only items updated since the last
pull) never removes anything: removals are found by full pulls only.
"""

from __future__ import annotations

import unicodedata
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from tongban.hashing import keyed_hashes
from tongban.model import COMPARED, LABELS, Element, element_hashes, element_value
from tongban.table import items_table


@dataclass(frozen=True)
class ElementChange:
    """One compared element whose content differs: its key (``model.COMPARED``), Chinese label, and the old
    and new values (a JSON scalar, or a dict for multi-field elements). In ``reconciliation.json``, the offer
    diff (old: as configured at the partner, new: as we offer it) and both report sections."""

    element: str
    label: str
    old: Any
    new: Any


def _changes(entries: list[ElementChange]) -> list[dict[str, Any]]:
    return [{"element": e.element, "label": e.label, "old": e.old, "new": e.new} for e in entries]


@dataclass
class Changed:
    """An item whose compared elements differ (here and in the offer diff, ``tongban.outbound.diff``)."""

    task_code: str
    name: str
    changes: list[ElementChange]
    record: dict[str, Any] = field(repr=False)

    def as_dict(self) -> dict[str, Any]:
        """JSON-safe; the record is referenced, not copied (``dataclasses.asdict`` deep-copies every record,
        which costs more than the whole reconciliation on a large catalogue)."""
        return {
            "task_code": self.task_code,
            "name": self.name,
            "changes": _changes(self.changes),
            "record": self.record,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Changed:
        return cls(data["task_code"], data["name"], [ElementChange(**e) for e in data["changes"]], data["record"])


@dataclass
class Recoded:
    old_code: str
    task_code: str
    name: str
    changes: list[ElementChange]
    record: dict[str, Any] = field(repr=False)

    def as_dict(self) -> dict[str, Any]:
        """JSON-safe, the record referenced (as :meth:`Changed.as_dict`)."""
        return {"old_code": self.old_code, **Changed(self.task_code, self.name, self.changes, self.record).as_dict()}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Recoded:
        changed = Changed.from_dict(data)
        return cls(data["old_code"], changed.task_code, changed.name, changed.changes, changed.record)


@dataclass
class Reconciliation:
    added: list[dict[str, Any]] = field(default_factory=list)
    changed: list[Changed] = field(default_factory=list)
    removed: list[dict[str, Any]] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    held: list[str] = field(default_factory=list)
    recoded: list[Recoded] = field(default_factory=list)
    full: bool = True
    held_back: bool = False  # the whole partner held back by validation: nothing changes on the platform
    removal_guard: dict[str, Any] | None = None  # removals held for a person to confirm (tongban.guard)

    def counts(self) -> dict[str, int]:
        return {k: len(getattr(self, k)) for k in ("added", "changed", "removed", "unchanged", "held", "recoded")}

    def upserts(self) -> list[dict[str, Any]]:
        """Records the platform must hold anew: added, changed and re-coded items."""
        return [*self.added, *(c.record for c in self.changed), *(r.record for r in self.recoded)]

    def as_dict(self) -> dict[str, Any]:
        """JSON-safe; records are referenced, not copied (:meth:`Changed.as_dict`)."""
        return {
            "added": self.added,
            "changed": [c.as_dict() for c in self.changed],
            "removed": self.removed,
            "unchanged": self.unchanged,
            "held": self.held,
            "recoded": [r.as_dict() for r in self.recoded],
            "full": self.full,
            "held_back": self.held_back,
            "removal_guard": self.removal_guard,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Reconciliation:
        return cls(
            data["added"],
            [Changed.from_dict(c) for c in data["changed"]],
            data["removed"],
            data["unchanged"],
            data["held"],
            [Recoded.from_dict(r) for r in data.get("recoded", [])],
            data.get("full", True),
            data.get("held_back", False),
            data.get("removal_guard"),
        )


@dataclass
class HashComparison:
    """Which task codes were added, removed, unchanged, and which elements of the others changed."""

    added: list[str]
    removed: list[str]
    unchanged: list[str]
    changed: dict[str, list[str]]  # task code -> keys of the elements that differ, sorted by code
    new_rows: np.ndarray = field(repr=False)  # row in ``new`` of each changed code, in ``changed`` order
    old_rows: np.ndarray = field(repr=False)  # row in ``old`` of each changed code
    flags: np.ndarray = field(repr=False)  # changed codes x ``elements``: which element differs
    elements: list[str] = field(default_factory=list)


def _sorted_codes(codes: pa.Array, rows: np.ndarray) -> list[str]:
    return codes.take(pa.array(rows, pa.int64())).sort().to_pylist()


def compare_hashes(new: pa.Table, old: pa.Table) -> HashComparison:
    """Compare two tables of per-element content hashes (``tongban.hashing.keyed_hashes``).

    Only the codes (exactly, through one dictionary encoding of both sides) and the eight-byte hashes
    are read, never the texts: a million items cost a few hundred MB; the values of changed elements
    are looked up afterwards for the changed rows alone (``tongban.table.element_values``).
    """
    elements = [name for name in new.column_names if name != "task_code"]
    codes = pa.chunked_array([*new["task_code"].chunks, *old["task_code"].chunks], pa.string()).combine_chunks()
    ids = pc.dictionary_encode(codes).indices.to_numpy(zero_copy_only=False).astype(np.int64)
    new_ids, old_ids = ids[: len(new)], ids[len(new) :]
    for side, side_ids in (("new", new_ids), ("old", old_ids)):
        counts = np.bincount(side_ids, minlength=1)
        if len(side_ids) and counts.max() > 1:
            dup = codes[int(np.flatnonzero(ids == np.argmax(counts))[0])]
            raise ValueError(f"{side} catalogue holds 实施编码 {dup} more than once: dedupe before reconciling")
    old_row_of = np.full(len(ids) and ids.max() + 1, -1, np.int64)
    old_row_of[old_ids] = np.arange(len(old_ids))
    match = old_row_of[new_ids]
    in_new = np.zeros_like(old_row_of, dtype=bool)
    in_new[new_ids] = True
    new_rows = np.flatnonzero(match >= 0)
    old_rows = match[new_rows]
    differs = np.column_stack(
        [new[e].to_numpy()[new_rows] != old[e].to_numpy()[old_rows] for e in elements]
        or [np.zeros(len(new_rows), bool)]
    )
    changed_at = differs.any(axis=1)
    new_codes = codes.slice(0, len(new))
    by_code = pc.sort_indices(new_codes.take(pa.array(new_rows[changed_at], pa.int64()))).to_numpy()
    rows_new, rows_old = new_rows[changed_at][by_code], old_rows[changed_at][by_code]
    flags = differs[changed_at][by_code]
    changed_codes = new_codes.take(pa.array(rows_new, pa.int64())).to_pylist()
    changed: dict[str, list[str]] = {code: [] for code in changed_codes}
    for i, element in enumerate(elements):  # column by column: element order kept, no Python work per row
        for at in np.flatnonzero(flags[:, i]).tolist():
            changed[changed_codes[at]].append(element)
    return HashComparison(
        added=_sorted_codes(new_codes, np.flatnonzero(match < 0)),
        removed=_sorted_codes(codes.slice(len(new)), np.flatnonzero(~in_new[old_ids])),
        unchanged=_sorted_codes(new_codes, new_rows[~changed_at]),
        changed=changed,
        new_rows=rows_new,
        old_rows=rows_old,
        flags=flags,
        elements=elements,
    )


def diff_elements(old: Mapping[str, Any], new: Mapping[str, Any]) -> list[ElementChange]:
    """The compared elements whose content differs, with old and new values."""
    old_h, new_h = element_hashes(old), element_hashes(new)
    return [_change(e, old, new) for e in COMPARED if old_h[e.key] != new_h[e.key]]


def _change(element: Element, old: Mapping[str, Any], new: Mapping[str, Any]) -> ElementChange:
    return ElementChange(element.key, LABELS[element.key], element_value(old, element), element_value(new, element))


def _hashes(records: Mapping[str, Mapping[str, Any]]) -> pa.Table:
    return keyed_hashes(items_table(records.values()))


def _identity(record: Mapping[str, Any]) -> tuple[str, str, str]:
    """What stays the same when an item is re-coded: 基本编码, normalised name and department."""

    def norm(text: str) -> str:
        return "".join(unicodedata.normalize("NFKC", text or "").split())

    return record["catalog_code"], norm(record["name"]), norm(record["dept_name"])


def _pair_recodes(result: Reconciliation) -> None:
    removed_by_identity: dict[tuple[str, str, str], list[dict[str, Any]]] = defaultdict(list)
    for old in result.removed:
        removed_by_identity[_identity(old)].append(old)
    still_added = []
    for new in result.added:
        candidates = removed_by_identity.get(_identity(new))
        if candidates:
            old = candidates.pop(0)
            result.recoded.append(
                Recoded(old["task_code"], new["task_code"], new["name"], diff_elements(old, new), new)
            )
        else:
            still_added.append(new)
    paired = {r.old_code for r in result.recoded}
    result.added = still_added
    result.removed = [r for r in result.removed if r["task_code"] not in paired]


def reconcile(
    candidates: Iterable[Mapping[str, Any]],
    current: Iterable[Mapping[str, Any]],
    held_codes: Iterable[str] = (),
    *,
    full: bool = True,
) -> Reconciliation:
    """Classify each item as added, changed, re-coded, removed, unchanged or held.

    ``candidates``: the partner's accepted items this run; ``current``: the platform's list;
    ``held_codes``: 实施编码 of records rejected or quarantined this run; ``full``: whether the pull
    was a full one (otherwise items it did not deliver are kept as they are).
    """
    new = {r["task_code"]: dict(r) for r in candidates}
    old = {r["task_code"]: dict(r) for r in current}
    held = set(held_codes) - set(new)
    compared = compare_hashes(_hashes(new), _hashes(old))
    result = Reconciliation(full=full)
    result.added = [new[code] for code in compared.added]
    for code in compared.removed:
        if code in held:
            result.held.append(code)
        elif full:
            result.removed.append(old[code])
        else:
            result.unchanged.append(code)
    result.unchanged = sorted([*result.unchanged, *compared.unchanged])
    by_key = {e.key: e for e in COMPARED}
    for code, keys in compared.changed.items():  # sorted by code
        changes = [_change(by_key[key], old[code], new[code]) for key in keys]
        result.changed.append(Changed(code, new[code]["name"], changes, new[code]))
    _pair_recodes(result)
    return result
