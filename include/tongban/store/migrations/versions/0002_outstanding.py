"""outstanding items (待整改)

Revision ID: 0002_outstanding
Revises: 0001
Create Date: 2026-11-30 00:05:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002_outstanding"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "outstanding",
        sa.Column("partner", sa.String(length=6), nullable=False),
        sa.Column("task_code", sa.String(length=64), nullable=False),
        sa.Column("name", sa.String(length=500), nullable=False),
        sa.Column("kind", sa.String(length=20), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("first_run", sa.String(length=250), nullable=False),
        sa.Column("first_seen", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_run", sa.String(length=250), nullable=False),
        sa.Column("nights", sa.Integer(), nullable=False),
        sa.Column("resolved_run", sa.String(length=250), nullable=True),
        sa.Column("resolution", sa.String(length=16), nullable=True),
        sa.ForeignKeyConstraint(["first_run"], ["runs.run_id"]),
        sa.ForeignKeyConstraint(["last_run"], ["runs.run_id"]),
        sa.ForeignKeyConstraint(["resolved_run"], ["runs.run_id"]),
        sa.PrimaryKeyConstraint("partner", "task_code"),
    )
    with op.batch_alter_table("outstanding", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_outstanding_resolved_run"), ["resolved_run"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("outstanding", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_outstanding_resolved_run"))
    op.drop_table("outstanding")
