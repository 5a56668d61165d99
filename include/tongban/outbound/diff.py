"""What a partner has configured of our items, against what we offer it.

Every item we offer the partner is *current* (configured with the same elements and the same modes),
*missing*, *outdated* (configured with other content: which elements differ, the partner's value as
``old`` and ours as ``new``) and/or in *mode mismatch* (a mode configured that we do not offer, or one
we offer that is not configured); an item configured there that we do not offer (any more) is
*withdrawn*. Element comparison is the inbound reconciliation's (:func:`tongban.reconcile.reconcile`),
so both directions judge "the same item" alike. Lists are sorted by 实施编码.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from tongban.model import content_hash
from tongban.outbound.wire import MODES
from tongban.reconcile import Changed, reconcile

COUNT_KEYS = ("offered", "configured", "missing", "outdated", "withdrawn", "mode_mismatch", "sent")


def digest(record: Mapping[str, Any]) -> str:
    """Content hash of an offered or configured item: its compared elements plus its modes."""
    return content_hash(record) + ":" + ",".join(sorted(record.get(MODES) or []))


@dataclass
class OfferDiff:
    offered: list[str] = field(default_factory=list)  # what we offer the partner
    current: list[str] = field(default_factory=list)
    missing: list[dict[str, Any]] = field(default_factory=list)  # our record with offer_modes
    outdated: list[Changed] = field(default_factory=list)  # record: ours
    withdrawn: list[dict[str, Any]] = field(default_factory=list)  # the partner's record
    mode_mismatch: list[dict[str, Any]] = field(default_factory=list)  # task_code, name, offered, configured

    def upserts(self, offer: Mapping[str, Mapping[str, Any]]) -> list[dict[str, Any]]:
        """Our records (with modes) the partner must configure anew: missing, outdated or mode-mismatched."""
        codes = {r["task_code"] for r in self.missing} | {c.task_code for c in self.outdated}
        codes |= {m["task_code"] for m in self.mode_mismatch}
        return [dict(offer[c]) for c in sorted(codes)]

    def deletes(self) -> list[str]:
        return [r["task_code"] for r in self.withdrawn]

    def in_line(self) -> bool:
        """The partner holds our offer as it is: nothing to send."""
        return not (self.missing or self.outdated or self.withdrawn or self.mode_mismatch)

    def counts(self) -> dict[str, int]:
        return {k: len(getattr(self, k)) for k in ("offered", "missing", "outdated", "withdrawn", "mode_mismatch")}

    def as_dict(self) -> dict[str, Any]:
        return {
            "offered": self.offered,
            "current": self.current,
            "missing": self.missing,
            "outdated": [c.as_dict() for c in self.outdated],
            "withdrawn": self.withdrawn,
            "mode_mismatch": self.mode_mismatch,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> OfferDiff:
        return cls(
            list(data["offered"]),
            list(data["current"]),
            list(data["missing"]),
            [Changed.from_dict(c) for c in data["outdated"]],
            list(data["withdrawn"]),
            list(data["mode_mismatch"]),
        )


def compare(offer: Iterable[Mapping[str, Any]], configured: Iterable[Mapping[str, Any]]) -> OfferDiff:
    """``offer``: our records for the partner, each with ``offer_modes``; ``configured``: the partner's, read back."""
    ours = {r["task_code"]: dict(r) for r in offer}
    theirs = {r["task_code"]: dict(r) for r in configured}
    recon = reconcile(ours.values(), theirs.values(), full=True)
    diff = OfferDiff(offered=sorted(ours))
    # an item under another code is not "the same item" here: we offer codes, the partner configures codes
    diff.missing = sorted([*recon.added, *(r.record for r in recon.recoded)], key=lambda r: r["task_code"])
    diff.withdrawn = sorted(
        [*recon.removed, *(theirs[r.old_code] for r in recon.recoded)], key=lambda r: r["task_code"]
    )
    diff.outdated = recon.changed
    for code in sorted(ours.keys() & theirs.keys()):
        offered, held = sorted(ours[code].get(MODES) or []), sorted(theirs[code].get(MODES) or [])
        if offered != held:
            diff.mode_mismatch.append(
                {
                    "task_code": code,
                    "name": ours[code]["name"],
                    "offered": offered,
                    "configured": held,
                    "extra": sorted(set(held) - set(offered)),
                    "lacking": sorted(set(offered) - set(held)),
                }
            )
    outdated = {c.task_code for c in diff.outdated} | {m["task_code"] for m in diff.mode_mismatch}
    diff.current = sorted((ours.keys() & theirs.keys()) - outdated)
    return diff
