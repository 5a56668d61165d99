"""Per-partner pull state: which pulls succeeded, up to which update time, and what the next pull is.

``<storage root>/state/<division>/watermark.json`` holds the successful pulls keyed by run id (so a
re-run of a run's fetch rewrites its own entry and never builds on itself). Each entry has the
pull's mode, when it ran, and its watermark: the latest update time among the records it took,
in the partner's own clock (never ours, so clock skew between systems does not lose changes).

A pull *counts* for the next run only once its run has really published for that partner
(``runs/<run>/<division>/publish.json`` exists, was not a dry run and the partner was not held back):
a run that fetched but failed later, a dry run, or a partner held back whole must not move the next
incremental pull past changes nobody published. A full pull whose removals the removal guard held
(``tongban.guard``; ``removals_held`` in publish.json) counts for its watermark but not as the
periodic full pull: the next run pulls in full again.

A watermark is never later than the pull's own start: records dated in the future are flagged by
the pull and left out of it, and a stored watermark past the planning time is taken as that time.

The next pull is **full** when asked for (the DAG param ``full_resync``), when no pull counts yet,
when the format has no incremental parameter, or when the last counting full pull is older than the
partner's ``full_resync_days`` (7 by default); otherwise **incremental** from the latest counting
watermark minus ``OVERLAP`` (records changed in that window come again; publishing is idempotent).
Removals show only in full pulls.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Literal

import msgspec
from upath import UPath

from tongban.files import PublishFile
from tongban.layout import PUBLISH, run_dir, watermark_path
from tongban.registry import Partner
from tongban.storage import read_json, write_json

OVERLAP = timedelta(minutes=10)
KEEP = 60  # pull entries kept per partner


@dataclass(frozen=True)
class PullPlan:
    mode: Literal["full", "incremental"]
    since: datetime | None
    reason: str
    base: dict[str, Any] | None = None  # the counting pull an incremental one builds on

    def as_dict(self) -> dict[str, Any]:
        return {
            "mode": self.mode,
            "since": self.since.isoformat() if self.since else None,
            "reason": self.reason,
            "base_run": self.base["run_id"] if self.base else None,
        }


def load(root: UPath, division: str) -> dict[str, Any]:
    path = watermark_path(root, division)
    if not path.exists():
        return {"partner": division, "pulls": {}}
    return read_json(path)


def published(root: UPath, run_id: str, division: str) -> PublishFile | None:
    """What ``run_id``'s publish stage recorded for ``division``, if it published for real (not a dry
    run, not held back); None otherwise, and for a file that cannot be read. A file without the fields
    ``PublishFile`` requires raises (naming it)."""
    path = run_dir(root, run_id, division) / PUBLISH
    if not path.exists():
        return None
    try:
        info = read_json(path, PublishFile)
    except msgspec.ValidationError:
        raise
    except (ValueError, OSError):
        return None
    return None if info.dry_run or info.held_back else info


def committed(root: UPath, run_id: str, division: str) -> bool:
    """Whether ``run_id`` published ``division``'s pull for real (not a dry run, not held back)."""
    return published(root, run_id, division) is not None


def counting_pulls(root: UPath, division: str, exclude_run: str | None = None) -> list[dict[str, Any]]:
    """The successful pulls of published runs, oldest first, each with ``removals_held`` (how many removals
    its run held for confirmation)."""
    pulls = []
    for run_id, pull in load(root, division)["pulls"].items():
        info = published(root, run_id, division) if run_id != exclude_run else None
        if info is not None:
            pulls.append({**pull, "removals_held": info.removals_held})
    return sorted(pulls, key=lambda p: p["pulled_at"])


def complete_fulls(root: UPath, division: str, exclude_run: str | None = None) -> list[dict[str, Any]]:
    """The counting full pulls whose removals were all applied (none held), oldest first."""
    return [p for p in counting_pulls(root, division, exclude_run) if p["mode"] == "full" and not p["removals_held"]]


def last_full_size(root: UPath, division: str, exclude_run: str | None = None) -> int | None:
    """The catalogue size of the last complete full pull: its declared total, else the records it took."""
    fulls = complete_fulls(root, division, exclude_run)
    if not fulls:
        return None
    last = fulls[-1]
    size = last.get("declared_total")
    return int(size) if size is not None else last.get("fetched")


def plan(
    root: UPath,
    partner: Partner,
    run_id: str,
    *,
    now: datetime,
    full_resync: bool = False,
    incremental: bool = True,
) -> PullPlan:
    """What this run's pull of ``partner`` is (the same answer however often the run is retried)."""
    if full_resync:
        return PullPlan("full", None, "full resync requested (DAG param full_resync)")
    if not incremental:
        return PullPlan("full", None, "the partner's format has no incremental parameter")
    pulls = counting_pulls(root, partner.division, exclude_run=run_id)
    if not pulls:
        return PullPlan("full", None, "no earlier pull was published")
    fulls = [p for p in pulls if p["mode"] == "full" and not p["removals_held"]]
    every = timedelta(days=partner.full_resync_days)
    since_complete = fulls[-1]["pulled_at"] if fulls else ""
    held = [p for p in pulls if p["mode"] == "full" and p["removals_held"] and p["pulled_at"] > since_complete]
    if held:  # until a full pull is published whole (or its removals confirmed), every pull is a full one
        return PullPlan("full", None, f"the full pull of run {held[-1]['run_id']} held removals for confirmation")
    if not fulls:
        return PullPlan("full", None, "no earlier full pull was published")
    last_full = datetime.fromisoformat(fulls[-1]["pulled_at"])
    if now - last_full >= every:
        return PullPlan(
            "full", None, f"periodic full resync: last full pull {last_full:%Y-%m-%d %H:%M} (every {every.days} d)"
        )
    marked = [p for p in pulls if p.get("watermark")]
    if not marked:
        return PullPlan("full", None, "earlier pulls took no dated records")
    base = max(marked, key=lambda p: p["watermark"])
    since = min(datetime.fromisoformat(base["watermark"]), now) - OVERLAP  # never past now (a future date)
    return PullPlan("incremental", since, f"changes since {since.isoformat()} (run {base['run_id']})", base)


def record(root: UPath, division: str, run_id: str, entry: dict[str, Any]) -> None:
    """Note a successful pull of ``run_id`` (replacing that run's earlier entry)."""
    state = load(root, division)
    state["pulls"][run_id] = {**entry, "run_id": run_id}
    newest = sorted(state["pulls"].values(), key=lambda p: p["pulled_at"])[-KEEP:]
    state["pulls"] = {p["run_id"]: p for p in newest}
    write_json(watermark_path(root, division), state)


def last_counting(root: UPath, division: str) -> dict[str, Any] | None:
    """The latest pull whose data reached the platform: the partner's list there is as of its time."""
    pulls = counting_pulls(root, division)
    return pulls[-1] if pulls else None


def stale_since(root: UPath, division: str) -> str | None:
    """When the platform's list of ``division`` was last refreshed from a pull (ISO), or None if never."""
    last = last_counting(root, division)
    return last["pulled_at"] if last else None
