"""Token scopes: an owner namespace, granted namespaces and an admin flag on each token.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-02

Tokens made before this migration had no owner and could write anywhere; they become ``admin``
tokens (every namespace, every private repo), so a running deployment keeps working after the
upgrade. The operator should replace them with owned tokens (``adapterhub token create --owner``)
and revoke them; the README says so. Written by hand; it matches ``adapterhub.store.orm_hub``.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Added nullable, filled, then made NOT NULL: no server default stays behind (the ORM has none).
    op.add_column("tokens", sa.Column("owner", sa.String(96), nullable=True))
    op.add_column("tokens", sa.Column("namespaces", sa.JSON(), nullable=True))
    op.add_column("tokens", sa.Column("admin", sa.Boolean(), nullable=True))
    tokens = sa.table("tokens", sa.column("namespaces", sa.JSON()), sa.column("admin", sa.Boolean()))
    op.execute(tokens.update().values(namespaces=[], admin=True))
    with op.batch_alter_table("tokens") as batch:
        batch.alter_column("namespaces", existing_type=sa.JSON(), nullable=False)
        batch.alter_column("admin", existing_type=sa.Boolean(), nullable=False)


def downgrade() -> None:
    with op.batch_alter_table("tokens") as batch:
        batch.drop_column("admin")
        batch.drop_column("namespaces")
        batch.drop_column("owner")
