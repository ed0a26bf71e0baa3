"""Derived artifacts (routing prototypes, fitted routers): the ``artifacts`` table.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-03

Written by hand; it matches ``adapterhub.store.orm_artifacts``.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "artifacts",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("kind", sa.String(64), nullable=False),
        sa.Column("key", sa.String(255), nullable=False),
        sa.Column("source_digest", sa.String(64), nullable=False),
        sa.Column("digest", sa.String(64), nullable=False),
        sa.Column("size", sa.BigInteger(), nullable=False),
        sa.Column("created", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_artifacts"),
        sa.UniqueConstraint("kind", "key", name="uq_artifacts_kind_key"),
    )
    op.create_index("ix_artifacts_source_digest", "artifacts", ["source_digest"])
    op.create_index("ix_artifacts_digest", "artifacts", ["digest"])


def downgrade() -> None:
    op.drop_table("artifacts")
