"""The item store's tables (SQLAlchemy 2). The schema itself is created and evolved by Alembic."""

from __future__ import annotations

from datetime import datetime
from typing import Any, ClassVar

from sqlalchemy import JSON, DateTime, ForeignKey, Index, Integer, String, Text, UniqueConstraint, func
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


class Base(DeclarativeBase):
    type_annotation_map: ClassVar = {dict[str, Any]: JSON, list[Any]: JSON}


class Run(Base):
    """One run of the sync (an Airflow DAG run)."""

    __tablename__ = "runs"
    run_id: Mapped[str] = mapped_column(String(250), primary_key=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


class Pull(Base):
    """What one partner delivered in one run."""

    __tablename__ = "pulls"
    __table_args__ = (UniqueConstraint("run_id", "partner"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    run_id: Mapped[str] = mapped_column(ForeignKey("runs.run_id"))
    partner: Mapped[str] = mapped_column(String(6))
    fetched: Mapped[int]
    quarantined: Mapped[int]
    rejected: Mapped[int]
    recorded_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


class CurrentItem(Base):
    """The latest accepted version of each item; ``removed_run`` is set once it left the catalogue."""

    __tablename__ = "items"
    partner: Mapped[str] = mapped_column(String(6), primary_key=True)
    task_code: Mapped[str] = mapped_column(String(64), primary_key=True)
    catalog_code: Mapped[str] = mapped_column(String(32), index=True)
    content_hash: Mapped[str] = mapped_column(String(32))
    record: Mapped[dict[str, Any]]
    first_run: Mapped[str] = mapped_column(ForeignKey("runs.run_id"))
    last_changed_run: Mapped[str] = mapped_column(ForeignKey("runs.run_id"))
    removed_run: Mapped[str | None] = mapped_column(ForeignKey("runs.run_id"), nullable=True)


class ItemChange(Base):
    """Item history: every addition, removal, re-code and element change, with the run that saw it."""

    __tablename__ = "item_history"
    __table_args__ = (
        UniqueConstraint("run_id", "partner", "task_code", "kind", "element"),
        Index("ix_item_history_partner_reported", "partner", "reported_run"),
    )
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    run_id: Mapped[str] = mapped_column(ForeignKey("runs.run_id"), index=True)
    partner: Mapped[str] = mapped_column(String(6))
    task_code: Mapped[str] = mapped_column(String(64), index=True)
    kind: Mapped[str] = mapped_column(String(16))  # added | changed | removed | recoded
    element: Mapped[str] = mapped_column(String(32), default="")
    old: Mapped[Any] = mapped_column(JSON, nullable=True)
    new: Mapped[Any] = mapped_column(JSON, nullable=True)
    # the run whose report, delivered to the partner, told of this change (None: not told yet)
    reported_run: Mapped[str | None] = mapped_column(String(250), nullable=True)


class ReconciliationRow(Base):
    """Counts of one partner's reconciliation in one run."""

    __tablename__ = "reconciliations"
    __table_args__ = (UniqueConstraint("run_id", "partner"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    run_id: Mapped[str] = mapped_column(ForeignKey("runs.run_id"))
    partner: Mapped[str] = mapped_column(String(6))
    counts: Mapped[dict[str, Any]]


class PartnerRun(Base):
    """A run that started for a partner. ``sequence`` is the partner's publish sequence (fencing token):
    it grows with every run that starts for the partner, and only the run holding the highest one may
    publish for it (the platform refuses a lower one too)."""

    __tablename__ = "partner_runs"
    __table_args__ = (UniqueConstraint("partner", "sequence"),)
    partner: Mapped[str] = mapped_column(String(6), primary_key=True)
    run_id: Mapped[str] = mapped_column(ForeignKey("runs.run_id"), primary_key=True)
    sequence: Mapped[int]
    started_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


# publish ledger statuses: a batch is noted ``pending`` before anything is sent, becomes ``sent`` just
# before its request goes out and ``acked`` once the platform's answer is applied to the item store (one
# transaction). A later run settles what a dead run left, asking the platform about ``pending`` and ``sent``
# rows alike by key (a power loss of the SQLite store can roll back a ``sent`` mark): ``acked`` (the platform
# has it), ``unapplied`` (the platform never recorded it; for a ``pending`` row, some of its operations are
# found applied all the same) or ``unsent`` (a ``pending`` row of which the platform shows nothing). An offer
# batch (our items to a partner) left ``pending`` is closed ``unsent``, one left ``sent`` ``superseded``:
# partners are not asked by key; the newer run reads back what the partner has configured and sends what is
# still to change.
PENDING, SENT, ACKED, UNSENT, UNAPPLIED = "pending", "sent", "acked", "unsent", "unapplied"
SUPERSEDED = "superseded"
UNSETTLED = (PENDING, SENT)
PUBLISH, OFFER = "publish", "offer"  # ledger directions: to the platform, or our items offered to a partner


class LedgerEntry(Base):
    """The publish ledger: one row per batch, written before the push and completed on acknowledgement."""

    __tablename__ = "publish_ledger"
    key: Mapped[str] = mapped_column(String(80), primary_key=True)
    run_id: Mapped[str] = mapped_column(ForeignKey("runs.run_id"), index=True)
    partner: Mapped[str] = mapped_column(String(6))
    batch_no: Mapped[int]
    size: Mapped[int]
    status: Mapped[str] = mapped_column(String(16))  # PENDING, SENT, ACKED, UNSENT, UNAPPLIED or SUPERSEDED
    direction: Mapped[str] = mapped_column(String(8), server_default=PUBLISH)  # PUBLISH or OFFER
    sequence: Mapped[int | None] = mapped_column(nullable=True)  # the publish sequence it is sent under
    # the batch itself ({"upserts", "deletes", "recoded"}) until it is acked or closed: what a later run
    # needs to bring the item store in line with what the platform applied
    body: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    platform_batch_id: Mapped[str | None] = mapped_column(String(80), nullable=True)
    replayed: Mapped[bool] = mapped_column(default=False)
    accepted: Mapped[int] = mapped_column(default=0)
    rejected: Mapped[int] = mapped_column(default=0)
    results: Mapped[list[Any] | None] = mapped_column(JSON, nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    sent_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    acked_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    settled_by: Mapped[str | None] = mapped_column(String(250), nullable=True)  # the later run that closed it
    note: Mapped[str | None] = mapped_column(String(500), nullable=True)


class OutstandingItem(Base):
    """待整改: an item kept off the platform (as delivered) by a problem the partner must fix: rejected by
    validation, quarantined, or refused by the platform. Open from the run that first found it until a
    run publishes it (``fixed``) or a full pull no longer has it (``withdrawn``); found again later, it
    opens anew. ``nights``: the partner's runs that found it open, counted once per run."""

    __tablename__ = "outstanding"
    partner: Mapped[str] = mapped_column(String(6), primary_key=True)
    task_code: Mapped[str] = mapped_column(String(64), primary_key=True)
    name: Mapped[str] = mapped_column(String(500), default="")
    kind: Mapped[str] = mapped_column(String(20))  # rejected | quarantined | platform_rejected
    reason: Mapped[str] = mapped_column(Text)
    first_run: Mapped[str] = mapped_column(ForeignKey("runs.run_id"))
    first_seen: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    last_run: Mapped[str] = mapped_column(ForeignKey("runs.run_id"))
    nights: Mapped[int] = mapped_column(default=1)
    resolved_run: Mapped[str | None] = mapped_column(ForeignKey("runs.run_id"), nullable=True, index=True)
    resolution: Mapped[str | None] = mapped_column(String(16), nullable=True)  # fixed | withdrawn
