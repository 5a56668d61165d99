"""Reconcile a partner's validated catalogue against what the provincial platform holds.

Deterministic and idempotent: the same inputs give the same result, every list sorted by 实施编码.
Items that were rejected or quarantined this run are *held*: the platform keeps its version of
them; they are neither changed nor removed because of a bad record.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

from tongban.model import COMPARED, LABELS, element_hashes, element_value


@dataclass(frozen=True)
class ElementChange:
    element: str
    label: str
    old: Any
    new: Any


@dataclass
class Changed:
    task_code: str
    name: str
    changes: list[ElementChange]
    record: dict[str, Any] = field(repr=False)


@dataclass
class Reconciliation:
    added: list[dict[str, Any]] = field(default_factory=list)
    changed: list[Changed] = field(default_factory=list)
    removed: list[dict[str, Any]] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    held: list[str] = field(default_factory=list)

    def counts(self) -> dict[str, int]:
        return {k: len(getattr(self, k)) for k in ("added", "changed", "removed", "unchanged", "held")}

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Reconciliation:
        changed = [
            Changed(c["task_code"], c["name"], [ElementChange(**e) for e in c["changes"]], c["record"])
            for c in data["changed"]
        ]
        return cls(data["added"], changed, data["removed"], data["unchanged"], data["held"])


def diff_elements(old: Mapping[str, Any], new: Mapping[str, Any]) -> list[ElementChange]:
    """The compared elements whose content differs, with old and new values."""
    old_h, new_h = element_hashes(old), element_hashes(new)
    return [
        ElementChange(e.key, LABELS[e.key], element_value(old, e), element_value(new, e))
        for e in COMPARED
        if old_h[e.key] != new_h[e.key]
    ]


def reconcile(
    candidates: Iterable[Mapping[str, Any]],
    current: Iterable[Mapping[str, Any]],
    held_codes: Iterable[str] = (),
) -> Reconciliation:
    """Classify each item as added, changed, removed, unchanged or held.

    ``candidates``: the partner's accepted items this run; ``current``: the platform's list;
    ``held_codes``: 实施编码 of records rejected or quarantined this run.
    """
    new = {r["task_code"]: dict(r) for r in candidates}
    old = {r["task_code"]: dict(r) for r in current}
    held = set(held_codes) - set(new)
    result = Reconciliation()
    for code in sorted(new.keys() | old.keys()):
        if code in new and code not in old:
            result.added.append(new[code])
        elif code in old and code not in new:
            if code in held:
                result.held.append(code)
            else:
                result.removed.append(old[code])
        else:
            changes = diff_elements(old[code], new[code])
            if changes:
                result.changed.append(Changed(code, new[code]["name"], changes, new[code]))
            else:
                result.unchanged.append(code)
    return result
