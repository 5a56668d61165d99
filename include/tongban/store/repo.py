"""Reading and writing the item store. Every write is an idempotent upsert keyed by run and partner."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, NamedTuple

from sqlalchemy import Engine, func, insert, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from tongban.model import content_digests
from tongban.reconcile import diff_elements
from tongban.store import engine, store_url
from tongban.store.schema import (
    ACKED,
    PENDING,
    PUBLISH,
    SENT,
    SUPERSEDED,
    UNAPPLIED,
    UNSENT,
    UNSETTLED,
    CurrentItem,
    ItemChange,
    LedgerEntry,
    OutstandingItem,
    PartnerRun,
    Pull,
    ReconciliationRow,
    Run,
)

Batch = Mapping[str, Any]  # one publish batch: {"upserts": [records], "deletes": [codes], "recoded": [[old, new]]}


class _Row(NamedTuple):
    removed_run: str | None
    content_hash: str
    record: dict[str, Any]


_IN_CHUNK = 900  # codes per IN (...) query: below SQLite's old 999-parameter limit


class ItemStore:
    def __init__(self, url: str | None = None) -> None:
        self.engine: Engine = engine(url or store_url())

    def _session(self) -> Session:
        return Session(self.engine, expire_on_commit=False)

    def ensure_run(self, run_id: str) -> None:
        try:
            with self._session() as s, s.begin():
                if s.get(Run, run_id) is None:
                    s.add(Run(run_id=run_id))
        except IntegrityError:  # a task of the same run on another worker inserted it first
            with self._session() as s:
                if s.get(Run, run_id) is None:
                    raise

    def record_pull(self, run_id: str, partner: str, *, fetched: int, quarantined: int, rejected: int) -> None:
        self.ensure_run(run_id)
        with self._session() as s, s.begin():
            row = s.scalar(select(Pull).where(Pull.run_id == run_id, Pull.partner == partner))
            row = row or Pull(run_id=run_id, partner=partner)
            row.fetched, row.quarantined, row.rejected = fetched, quarantined, rejected
            s.add(row)

    def record_reconciliation(self, run_id: str, partner: str, counts: Mapping[str, int]) -> None:
        self.ensure_run(run_id)
        with self._session() as s, s.begin():
            row = s.scalar(
                select(ReconciliationRow).where(
                    ReconciliationRow.run_id == run_id, ReconciliationRow.partner == partner
                )
            )
            row = row or ReconciliationRow(run_id=run_id, partner=partner)
            row.counts = dict(counts)
            s.add(row)

    # -- outstanding items (待整改) ------------------------------------------------------------------------
    def track_outstanding(
        self,
        run_id: str,
        partner: str,
        found: Mapping[str, Mapping[str, str]],
        fixed: Iterable[str],
        pulled: set[str] | None,
        *,
        persist: bool = True,
        now: datetime | None = None,
    ) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        """Bring the partner's 待整改 list up to this run; returns (still open, resolved by this run).

        ``found``: 实施编码 -> {name, kind, reason} of this run's problems (open or kept open); ``fixed``:
        实施编码 this run put on the platform as delivered; ``pulled``: every 实施编码 of a full pull (None for
        an incremental one, which says nothing of the items it did not carry: they stay open). Running the
        same run again gives the same list (nights count once per run). ``persist=False`` (a dry run)
        computes the same answer and writes nothing."""
        now = now or datetime.now(UTC)
        fixed = set(fixed)
        self.ensure_run(run_id)
        with self._session() as s:
            s.begin()
            mine = select(OutstandingItem).where(OutstandingItem.partner == partner)
            every = {r.task_code: r for r in s.scalars(mine)}
            rows = {c: r for c, r in every.items() if r.resolved_run in (None, run_id)}  # open before this run
            for code, problem in found.items():
                row = rows.get(code)
                if row is None:  # new, or found again after an earlier run resolved it: opens anew
                    row = every.get(code) or OutstandingItem(partner=partner, task_code=code)
                    row.first_run, row.first_seen, row.nights, row.last_run = run_id, now, 1, run_id
                    s.add(row)
                    rows[code] = row
                row.name = problem.get("name") or row.name or ""
                row.kind, row.reason = problem["kind"], problem["reason"]
                row.resolved_run = row.resolution = None
            for code, row in rows.items():
                if code not in found:
                    if code in fixed:
                        row.resolved_run, row.resolution = run_id, "fixed"
                    elif pulled is not None and code not in pulled:
                        row.resolved_run, row.resolution = run_id, "withdrawn"
                    else:
                        row.resolved_run = row.resolution = None
                if row.resolved_run is None and row.last_run != run_id:
                    row.nights, row.last_run = row.nights + 1, run_id
            s.flush()
            still = sorted((_as_dict(r) for r in rows.values() if r.resolved_run is None), key=_by_code)
            resolved = sorted((_as_dict(r) for r in rows.values() if r.resolved_run == run_id), key=_by_code)
            if persist:
                s.commit()
            else:
                s.rollback()
        return still, resolved

    def outstanding(self, partner: str | None = None, task_code: str | None = None) -> list[dict[str, Any]]:
        """Rows of the 待整改 list, open and resolved, of a partner and/or an item (the item trace)."""
        query = select(OutstandingItem).order_by(OutstandingItem.partner, OutstandingItem.task_code)
        if partner is not None:
            query = query.where(OutstandingItem.partner == partner)
        if task_code is not None:
            query = query.where(OutstandingItem.task_code == task_code)
        with self._session() as s:
            return [_as_dict(r) for r in s.scalars(query)]

    # -- publish sequence (fencing) -------------------------------------------------------------------
    def claim_sequence(self, partner: str, run_id: str) -> int:
        """The run's publish sequence for the partner: the one it got when it first started for the partner,
        else the next one (every run that starts later gets a higher one)."""
        self.ensure_run(run_id)
        for _ in range(10):
            try:
                with self._session() as s, s.begin():
                    row = s.get(PartnerRun, (partner, run_id))
                    if row is not None:
                        return row.sequence
                    top = s.scalar(select(func.max(PartnerRun.sequence)).where(PartnerRun.partner == partner))
                    s.add(PartnerRun(partner=partner, run_id=run_id, sequence=(top or 0) + 1))
                return (top or 0) + 1
            except IntegrityError:  # another run took that number at the same moment: take the next one
                continue
        raise RuntimeError(f"could not claim a publish sequence for partner {partner}, run {run_id}")

    def newer_run(self, partner: str, sequence: int) -> tuple[str, int] | None:
        """The latest run that started for the partner after the holder of ``sequence``, if any."""
        with self._session() as s:
            row = s.scalars(
                select(PartnerRun).where(PartnerRun.partner == partner).order_by(PartnerRun.sequence.desc()).limit(1)
            ).first()
            return (row.run_id, row.sequence) if row is not None and row.sequence > sequence else None

    # -- publish ledger -------------------------------------------------------------------------------
    def ledger_entry(self, key: str) -> dict[str, Any] | None:
        with self._session() as s:
            row = s.get(LedgerEntry, key)
            return _as_dict(row) if row else None

    def ledger_plan(
        self,
        run_id: str,
        partner: str,
        batches: Sequence[tuple[str, int, Batch | None]],
        *,
        sequence: int | None = None,
        direction: str = PUBLISH,
    ) -> None:
        """Note a call's batches ``pending`` before any is sent: (key, size, content to keep or None) each.
        Keys the ledger holds already are left as they are; new ones are numbered after the run's earlier
        batches for the partner (a publish sends a re-code's old codes in a call of their own)."""
        self.ensure_run(run_id)
        keys = [key for key, _, _ in batches]
        with self._session() as s, s.begin():
            known = {
                k
                for start in range(0, len(keys), _IN_CHUNK)
                for k in s.scalars(select(LedgerEntry.key).where(LedgerEntry.key.in_(keys[start : start + _IN_CHUNK])))
            }
            first = 1
            if not known:  # a call is planned whole or not at all: its batches are all known or none is
                ran = (LedgerEntry.run_id == run_id, LedgerEntry.partner == partner, LedgerEntry.direction == direction)
                first += s.scalar(select(func.coalesce(func.max(LedgerEntry.batch_no), 0)).where(*ran)) or 0
            s.add_all(
                LedgerEntry(
                    key=key,
                    run_id=run_id,
                    partner=partner,
                    batch_no=batch_no,
                    size=size,
                    status=PENDING,
                    direction=direction,
                    sequence=sequence,
                    body=None if body is None else dict(body),
                )
                for batch_no, (key, size, body) in enumerate(batches, start=first)
                if key not in known
            )

    def ledger_sent(self, key: str) -> None:
        """The batch's request is about to go out: from now on the platform may have applied it."""
        with self._session() as s, s.begin():
            status = s.scalar(select(LedgerEntry.status).where(LedgerEntry.key == key))  # not the batch's body
            if status is None:
                raise KeyError(f"ledger has no batch {key}")
            if status != ACKED:
                s.execute(update(LedgerEntry).where(LedgerEntry.key == key).values(status=SENT, sent_at=func.now()))

    def ledger_ack(
        self,
        key: str,
        answer: Mapping[str, Any],
        *,
        settled_by: str | None = None,
        digests: Mapping[str, str] | None = None,
    ) -> None:
        """Record the platform's answer to a batch and, in the same transaction, apply what it accepted to
        the current items and their history (under the batch's own run). Acking twice changes nothing.
        ``digests``: the content hashes of the batch's upserts by 实施编码, if the caller has them (:meth:`apply`)."""
        results = list(answer["results"])
        with self._session() as s, s.begin():
            row = self._ledger_row(s, key)
            if row.status == ACKED:
                return
            accepted = {(r["op"], r["task_code"]) for r in results if r["status"] == "accepted"}
            self._apply_batch(s, row, accepted, digests)
            row.status = ACKED
            row.platform_batch_id = answer.get("batch_id")
            row.replayed = bool(answer.get("replayed"))
            row.results = results
            row.accepted = len(accepted)
            row.rejected = len(results) - row.accepted
            row.acked_at = func.now()
            row.settled_by = settled_by

    def ledger_close(
        self,
        key: str,
        status: str,
        *,
        settled_by: str,
        note: str,
        found_applied: Iterable[tuple[str, str]] = (),
        digests: Mapping[str, str] | None = None,
    ) -> None:
        """Close a batch a dead run left unsettled: ``unsent`` (never marked sent; of a publish batch, the
        platform shows nothing either), ``unapplied`` (the platform has no record of it) or ``superseded`` (an
        offer batch: the partner's list read back decides).
        ``found_applied``: (op, 实施编码) of its operations the platform's list shows applied all the same (a
        platform that failed half-way): applied to the items and history too (``digests`` as in :meth:`apply`)."""
        if status not in (UNSENT, UNAPPLIED, SUPERSEDED):
            raise ValueError(f"a ledger row is closed as {UNSENT}, {UNAPPLIED} or {SUPERSEDED}, not {status}")
        with self._session() as s, s.begin():
            row = self._ledger_row(s, key)
            if row.status not in UNSETTLED:
                return
            self._apply_batch(s, row, set(found_applied), digests)
            row.status, row.settled_by, row.note, row.body = status, settled_by, note[:500], None

    @staticmethod
    def _ledger_row(s: Session, key: str) -> LedgerEntry:
        row = s.get(LedgerEntry, key, with_for_update=True)
        if row is None:
            raise KeyError(f"ledger has no batch {key}")
        return row

    def _apply_batch(
        self, s: Session, row: LedgerEntry, done: set[tuple[str, str]], digests: Mapping[str, str] | None = None
    ) -> None:
        """Apply the operations ``done`` of a ledger row's batch to the items and history; drop its body.
        Rows without a body (offers, or rows older than bodies) change no item."""
        if row.body is None:
            return
        body = row.body
        self._apply(
            s,
            row.run_id,
            row.partner,
            [r for r in body["upserts"] if ("upsert", r["task_code"]) in done],
            [c for c in body["deletes"] if ("delete", c) in done],
            [(old, new) for old, new in body.get("recoded", []) if ("upsert", new) in done],
            digests,
        )
        row.body = None

    def unsettled(self, partner: str, direction: str = PUBLISH) -> list[dict[str, Any]]:
        """The partner's ledger rows (of batches to the platform, by default) still ``pending`` or ``sent``,
        oldest first."""
        with self._session() as s:
            rows = s.scalars(
                select(LedgerEntry)
                .where(
                    LedgerEntry.partner == partner,
                    LedgerEntry.status.in_(UNSETTLED),
                    LedgerEntry.direction == direction,
                )
                .order_by(LedgerEntry.created_at, LedgerEntry.run_id, LedgerEntry.batch_no)
            )
            return [_as_dict(r) for r in rows]

    def ledger(self, run_id: str, partner: str) -> list[dict[str, Any]]:
        with self._session() as s:
            rows = s.scalars(
                select(LedgerEntry)
                .where(LedgerEntry.run_id == run_id, LedgerEntry.partner == partner)
                .order_by(LedgerEntry.batch_no)
            )
            return [_as_dict(r) for r in rows]

    # -- current items and history --------------------------------------------------------------------
    def apply(
        self,
        run_id: str,
        partner: str,
        upserted: Iterable[Mapping[str, Any]],
        deleted: Iterable[str],
        recoded: Iterable[tuple[str, str]] = (),
        digests: Mapping[str, str] | None = None,
    ) -> None:
        """Record what the platform accepted in this run; writing the same run again changes nothing.

        ``digests``: the upserted records' content hashes by 实施编码 (:func:`tongban.model.content_digests`),
        when the caller has computed them already (publishing does, once per item and run); else computed here."""
        self.ensure_run(run_id)
        with self._session() as s, s.begin():
            self._apply(s, run_id, partner, upserted, deleted, recoded, digests)

    def _apply(
        self,
        s: Session,
        run_id: str,
        partner: str,
        upserted: Iterable[Mapping[str, Any]],
        deleted: Iterable[str],
        recoded: Iterable[tuple[str, str]] = (),
        digests: Mapping[str, str] | None = None,
    ) -> None:
        upserted, deleted = list(upserted), list(deleted)
        if digests is None:
            digests = content_digests(upserted)
        changes: list[dict[str, Any]] = []  # ItemChange rows
        inserts: list[dict[str, Any]] = []  # CurrentItem rows, new
        updates: list[dict[str, Any]] = []  # CurrentItem rows, by primary key
        key = {"run_id": run_id, "partner": partner}
        rows = self._current_rows(s, partner, [*(r["task_code"] for r in upserted), *deleted])
        for old_code, new_code in recoded:
            if not s.scalar(
                select(ItemChange.id).where(
                    ItemChange.run_id == run_id, ItemChange.task_code == new_code, ItemChange.kind == "recoded"
                )
            ):
                changes.append(
                    key
                    | {
                        "task_code": new_code,
                        "kind": "recoded",
                        "element": "code",
                        "old": old_code,
                        "new": new_code,
                    }
                )
        for record in upserted:
            code = record["task_code"]
            row = rows.get(code)
            digest = digests[code]
            if row is None or row.removed_run is not None:
                changes.append(key | {"task_code": code, "kind": "added", "element": "", "old": None, "new": None})
            elif row.content_hash != digest:
                changes.extend(
                    key | {"task_code": code, "kind": "changed", "element": c.element, "old": c.old, "new": c.new}
                    for c in diff_elements(row.record, record)
                )
            else:
                continue
            values = {
                "partner": partner,
                "task_code": code,
                "catalog_code": record["catalog_code"],
                "record": dict(record),
                "content_hash": digest,
                "last_changed_run": run_id,
                "removed_run": None,
            }
            if row is None:
                inserts.append(values | {"first_run": run_id})
                rows[code] = _Row(None, digest, dict(record))
            else:
                updates.append(values)
        for code in deleted:
            row = rows.get(code)
            if row is not None and row.removed_run is None:
                updates.append({"partner": partner, "task_code": code, "removed_run": run_id})
                changes.append(key | {"task_code": code, "kind": "removed", "element": "", "old": None, "new": None})
        # bulk statements: one INSERT/UPDATE per kind of row, not one per item
        for statement, params in ((insert(CurrentItem), inserts), (update(CurrentItem), updates)):
            if params:
                s.execute(statement, params)
        if changes:
            s.execute(insert(ItemChange), changes)

    @staticmethod
    def _current_rows(s: Session, partner: str, codes: list[str]) -> dict[str, _Row]:
        """The partner's item rows for these codes, read in a few queries rather than one per code."""
        found: dict[str, _Row] = {}
        columns = (CurrentItem.task_code, CurrentItem.removed_run, CurrentItem.content_hash, CurrentItem.record)
        for start in range(0, len(codes), _IN_CHUNK):
            chunk = codes[start : start + _IN_CHUNK]
            query = select(*columns).where(CurrentItem.partner == partner, CurrentItem.task_code.in_(chunk))
            found.update((code, _Row(*rest)) for code, *rest in s.execute(query))
        return found

    def current(self, partner: str) -> dict[str, dict[str, Any]]:
        with self._session() as s:
            rows = s.scalars(
                select(CurrentItem).where(CurrentItem.partner == partner, CurrentItem.removed_run.is_(None))
            )
            return {r.task_code: r.record for r in rows}

    def item(self, partner: str, task_code: str) -> dict[str, Any] | None:
        """The item's current version on the platform as published by us, or None (never, or removed)."""
        with self._session() as s:
            row = s.get(CurrentItem, (partner, task_code))
            return dict(row.record) if row is not None and row.removed_run is None else None

    def current_hashes(self, partner: str) -> dict[str, str]:
        """The content hash of each of the partner's current items, by 实施编码."""
        with self._session() as s:
            query = select(CurrentItem.task_code, CurrentItem.content_hash).where(
                CurrentItem.partner == partner, CurrentItem.removed_run.is_(None)
            )
            return dict(s.execute(query).tuples().all())

    def unreported(self, partner: str, run_id: str) -> list[dict[str, Any]]:
        """History rows of the partner's changes that runs other than ``run_id`` published and no delivered
        report has told of yet, oldest first, each with the item's name (``name``)."""
        with self._session() as s:
            rows = [
                _as_dict(r)
                for r in s.scalars(
                    select(ItemChange)
                    .where(
                        ItemChange.partner == partner, ItemChange.reported_run.is_(None), ItemChange.run_id != run_id
                    )
                    .order_by(ItemChange.id)
                )
            ]
            items = self._current_rows(s, partner, sorted({r["task_code"] for r in rows}))
        return [r | {"name": items[r["task_code"]].record["name"] if r["task_code"] in items else ""} for r in rows]

    def mark_reported(self, partner: str, runs: Iterable[str], by: str) -> int:
        """Note that the report of run ``by``, delivered, told of the partner's changes published by ``runs``
        (those not told of before); how many history rows that was."""
        with self._session() as s, s.begin():
            result = s.execute(
                update(ItemChange)
                .where(
                    ItemChange.partner == partner,
                    ItemChange.run_id.in_(list(runs)),
                    ItemChange.reported_run.is_(None),
                )
                .values(reported_run=by)
            )
            return int(result.rowcount)  # type: ignore[attr-defined]

    def history(self, partner: str, task_code: str) -> list[dict[str, Any]]:
        with self._session() as s:
            rows = s.scalars(
                select(ItemChange)
                .where(ItemChange.partner == partner, ItemChange.task_code == task_code)
                .order_by(ItemChange.id)
            )
            return [_as_dict(r) for r in rows]


def _by_code(row: Mapping[str, Any]) -> str:
    return str(row["task_code"])


def _as_dict(row: Any) -> dict[str, Any]:
    return {c.key: getattr(row, c.key) for c in row.__table__.columns}
