"""ledger states and batch bodies, per-partner publish sequence, reported changes

Revision ID: 0003
Revises: 0002_outstanding
Create Date: 2026-11-29 23:41:52.113157
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002_outstanding"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "partner_runs",
        sa.Column("partner", sa.String(length=6), nullable=False),
        sa.Column("run_id", sa.String(length=250), nullable=False),
        sa.Column("sequence", sa.Integer(), nullable=False),
        sa.Column(
            "started_at", sa.DateTime(timezone=True), server_default=sa.text("(CURRENT_TIMESTAMP)"), nullable=False
        ),
        sa.ForeignKeyConstraint(["run_id"], ["runs.run_id"]),
        sa.PrimaryKeyConstraint("partner", "run_id"),
        sa.UniqueConstraint("partner", "sequence"),
    )
    with op.batch_alter_table("item_history", schema=None) as batch_op:
        batch_op.add_column(sa.Column("reported_run", sa.String(length=250), nullable=True))
        batch_op.create_index("ix_item_history_partner_reported", ["partner", "reported_run"], unique=False)
    # history written before reports were tracked counts as reported by its own run
    op.execute("UPDATE item_history SET reported_run = run_id")

    with op.batch_alter_table("publish_ledger", schema=None) as batch_op:
        batch_op.add_column(sa.Column("direction", sa.String(length=8), server_default="publish", nullable=False))
        batch_op.add_column(sa.Column("sequence", sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column("body", sa.JSON(), nullable=True))
        batch_op.add_column(sa.Column("sent_at", sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column("settled_by", sa.String(length=250), nullable=True))
        batch_op.add_column(sa.Column("note", sa.String(length=500), nullable=True))
    # before this revision "pending" meant "maybe sent": it is what "sent" means now; offers' keys have a prefix
    op.execute("UPDATE publish_ledger SET status = 'sent' WHERE status = 'pending'")
    op.execute("UPDATE publish_ledger SET direction = 'offer' WHERE key LIKE 'offer-%'")


def downgrade() -> None:
    op.execute("UPDATE publish_ledger SET status = 'pending' WHERE status = 'sent'")
    with op.batch_alter_table("publish_ledger", schema=None) as batch_op:
        for column in ("note", "settled_by", "sent_at", "body", "sequence", "direction"):
            batch_op.drop_column(column)
    with op.batch_alter_table("item_history", schema=None) as batch_op:
        batch_op.drop_index("ix_item_history_partner_reported")
        batch_op.drop_column("reported_run")
    op.drop_table("partner_runs")
