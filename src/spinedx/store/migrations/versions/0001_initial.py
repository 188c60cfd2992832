"""Studies, reviews and PACS jobs.

Revision ID: 0001
Revises:
Create Date: 2026-12-03
"""

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "studies",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("task", sa.String(40), nullable=False),
        sa.Column("kind", sa.String(20), nullable=False),
        sa.Column("status", sa.String(10), nullable=False, index=True),
        sa.Column("progress", sa.Float, nullable=False),
        sa.Column("error", sa.Text),
        sa.Column("created", sa.DateTime(timezone=True), nullable=False, index=True),
        sa.Column("updated", sa.DateTime(timezone=True), nullable=False),
        sa.Column("input_path", sa.String(300), nullable=False),
        sa.Column("result_path", sa.String(300)),
        sa.Column("findings", sa.JSON),
        sa.Column("model_name", sa.String(100)),
        sa.Column("model_version", sa.String(100)),
    )
    op.create_table(
        "reviews",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column(
            "study_id",
            sa.String(32),
            sa.ForeignKey("studies.id", ondelete="CASCADE"),
            nullable=False,
            index=True,
        ),
        sa.Column("finding", sa.String(60), nullable=False),
        sa.Column("reviewer", sa.String(100), nullable=False, index=True),
        sa.Column("time", sa.DateTime(timezone=True), nullable=False, index=True),
        sa.Column("action", sa.String(10), nullable=False),
        sa.Column("before", sa.JSON),
        sa.Column("after", sa.JSON),
        sa.Column("source", sa.String(10), nullable=False),
        sa.Column("model_version", sa.String(100)),
        sa.Column("comment", sa.Text),
    )
    op.create_table(
        "pacs_studies",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("orthanc_id", sa.String(100), nullable=False, unique=True),
        sa.Column("status", sa.String(10), nullable=False, index=True),
        sa.Column("reason", sa.Text),
        sa.Column("attempts", sa.Integer, nullable=False),
        sa.Column("created", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated", sa.DateTime(timezone=True), nullable=False),
        sa.Column("outputs", sa.JSON),
    )


def downgrade() -> None:
    op.drop_table("pacs_studies")
    op.drop_table("reviews")
    op.drop_table("studies")
