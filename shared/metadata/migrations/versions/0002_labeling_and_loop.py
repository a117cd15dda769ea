"""labeling tasks and loop cycles

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-27 16:58:14.345370
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:

    op.create_table(
        "labeling_tasks",
        sa.Column("frame", sa.String(length=200), nullable=False),
        sa.Column("fleet", sa.String(length=128), nullable=False),
        sa.Column("project_id", sa.Integer(), nullable=False),
        sa.Column("task_id", sa.Integer(), nullable=False),
        sa.Column("image", sa.String(length=300), nullable=False),
        sa.Column("model_version", sa.String(length=64), nullable=True),
        sa.Column("reason", sa.String(length=64), nullable=True),
        sa.Column("holdout", sa.Boolean(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("annotation_id", sa.Integer(), nullable=True),
        sa.Column("annotation_updated_at", sa.String(length=64), nullable=True),
        sa.Column("labels", sa.Text(), nullable=True),
        sa.Column("pushed_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("labeled_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("frame"),
        sa.UniqueConstraint("project_id", "task_id", name="uq_labeling_tasks_project_task"),
    )
    with op.batch_alter_table("labeling_tasks", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_labeling_tasks_fleet"), ["fleet"], unique=False)
        batch_op.create_index(batch_op.f("ix_labeling_tasks_status"), ["status"], unique=False)

    op.create_table(
        "loop_cycles",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("fleet", sa.String(length=128), nullable=False),
        sa.Column("stage", sa.String(length=16), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("trigger", sa.Text(), nullable=False),
        sa.Column("dataset", sa.String(length=256), nullable=False),
        sa.Column("parent_version", sa.String(length=64), nullable=True),
        sa.Column("candidate_version", sa.String(length=64), nullable=True),
        sa.Column("gate", sa.JSON(), nullable=False),
        sa.Column("seconds", sa.JSON(), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("loop_cycles", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_loop_cycles_fleet"), ["fleet"], unique=False)
        batch_op.create_index(batch_op.f("ix_loop_cycles_status"), ["status"], unique=False)


def downgrade() -> None:

    with op.batch_alter_table("loop_cycles", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_loop_cycles_status"))
        batch_op.drop_index(batch_op.f("ix_loop_cycles_fleet"))

    op.drop_table("loop_cycles")
    with op.batch_alter_table("labeling_tasks", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_labeling_tasks_status"))
        batch_op.drop_index(batch_op.f("ix_labeling_tasks_fleet"))

    op.drop_table("labeling_tasks")
