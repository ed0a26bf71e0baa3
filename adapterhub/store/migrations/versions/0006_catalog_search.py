"""Indices for a catalog of a million entries: keyset pages and searches that never scan the table.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-04

Written by hand; it matches ``adapterhub.store.orm`` (see ``store/paging.py`` for the queries).

- ``(task, name)`` and ``(base_model, name)`` replace the single-column indices: an equality filter
  plus the listing order (name) plus the cursor (``name > :after``) is then one index range, read in
  order and stopped after one page, on both backends.
- PostgreSQL only: a trigram GIN index (``pg_trgm``) on ``adapterhub_search_text(...)``, one text
  holding the name, task, description and tags of a row, joined by newlines. The free-text filter
  is ``adapterhub_search_text(...) ILIKE '%q%'``: exact for a text without a newline (such a match
  cannot span two fields), ANDed with the per-field test otherwise; so a rare term is a bitmap
  index scan. Why one index instead of four: one scan per search, and the tags (a JSON list on the
  row) need a function anyway. ``pg_trgm`` ships with PostgreSQL (contrib) and is a trusted
  extension (13+): a database owner may create it. Where it cannot be created the migration still
  succeeds, without that index (the function is always created): searches stay correct, slower.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

# Newline separates the fields (a tag has none, ``normalise_tags``), so a match of a text without a
# newline lies in one field. COST 1000 (10x the default) because it is about that much dearer than
# an operator (it parses the tags' JSON): with the default, the planner scans a few thousand rows
# calling it rather than asking the trigram index.
SEARCH_FUNCTION = """
CREATE OR REPLACE FUNCTION adapterhub_search_text(name text, task text, description text, tags json)
RETURNS text LANGUAGE sql IMMUTABLE PARALLEL SAFE COST 1000 AS $$
  SELECT name || E'\\n' || coalesce(task, '') || E'\\n' || coalesce(description, '') || E'\\n'
         || coalesce((SELECT string_agg(value, E'\\n') FROM json_array_elements_text(tags)), '')
$$
"""
SEARCH_INDEX = (
    "CREATE INDEX IF NOT EXISTS ix_adapters_search_trgm ON adapters"
    " USING gin (adapterhub_search_text(name, task, description, tags) gin_trgm_ops)"
)


def upgrade() -> None:
    op.drop_index("ix_adapters_task", table_name="adapters")
    op.drop_index("ix_adapters_base_model", table_name="adapters")
    op.create_index("ix_adapters_task_name", "adapters", ["task", "name"])
    op.create_index("ix_adapters_base_model_name", "adapters", ["base_model", "name"])
    bind = op.get_bind()
    if bind.dialect.name != "postgresql":
        return
    bind.execute(sa.text(SEARCH_FUNCTION))  # the queries call it, with or without the index
    try:
        with bind.begin_nested():  # a savepoint: a refused extension must not abort the migration
            bind.execute(sa.text("CREATE EXTENSION IF NOT EXISTS pg_trgm"))
    except sa.exc.DBAPIError:
        return  # no pg_trgm here: free-text search falls back to scanning (still correct)
    bind.execute(sa.text(SEARCH_INDEX))


def downgrade() -> None:
    bind = op.get_bind()
    if bind.dialect.name == "postgresql":
        bind.execute(sa.text("DROP INDEX IF EXISTS ix_adapters_search_trgm"))
        bind.execute(sa.text("DROP FUNCTION IF EXISTS adapterhub_search_text(text, text, text, json)"))
    op.drop_index("ix_adapters_base_model_name", table_name="adapters")
    op.drop_index("ix_adapters_task_name", table_name="adapters")
    op.create_index("ix_adapters_base_model", "adapters", ["base_model"])
    op.create_index("ix_adapters_task", "adapters", ["task"])
