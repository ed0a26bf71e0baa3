"""Hub server tables: hub_repos, revision_files, tokens.

Revision ID: 0002
Revises: 0001
Create Date: 2025-01-02

Written by hand so every name is explicit; it matches ``adapterhub.store.orm_hub``.
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
        "hub_repos",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(255), nullable=False),
        sa.Column("private", sa.Boolean(), nullable=False),
        sa.Column("created", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_hub_repos"),
        sa.UniqueConstraint("name", name="uq_hub_repos_name"),
    )

    op.create_table(
        "revision_files",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("revision_id", sa.Integer(), nullable=False),
        sa.Column("path", sa.String(1024), nullable=False),
        sa.Column("digest", sa.String(64), nullable=False),
        sa.Column("size", sa.BigInteger(), nullable=False),
        sa.ForeignKeyConstraint(
            ["revision_id"],
            ["adapter_revisions.id"],
            name="fk_revision_files_revision_id_adapter_revisions",
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name="pk_revision_files"),
        sa.UniqueConstraint("revision_id", "path", name="uq_revision_files_revision_id_path"),
    )
    op.create_index("ix_revision_files_revision_id", "revision_files", ["revision_id"])
    op.create_index("ix_revision_files_digest", "revision_files", ["digest"])

    op.create_table(
        "tokens",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(255), nullable=False),
        sa.Column("token_sha256", sa.String(64), nullable=False),
        sa.Column("write", sa.Boolean(), nullable=False),
        sa.Column("created", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_used", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_tokens"),
        sa.UniqueConstraint("name", name="uq_tokens_name"),
        sa.UniqueConstraint("token_sha256", name="uq_tokens_token_sha256"),
    )


def downgrade() -> None:
    op.drop_table("tokens")
    op.drop_table("revision_files")
    op.drop_table("hub_repos")
