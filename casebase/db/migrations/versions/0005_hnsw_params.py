"""HNSW parameters as settings (m, ef_construction, ef_search factor), tuned for recall.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-22
"""

from collections.abc import Sequence

from alembic import op

from casebase.db.sql_files import read_sql, run_sql_file

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_FUNCTION = "CREATE FUNCTION casebase.ensure_embedding_partition"


def upgrade() -> None:
    run_sql_file("0005_hnsw_params.sql")


def downgrade() -> None:
    """Put back revision 0001's partition function and 0004's query builder, each taken
    from its own file."""
    text = read_sql("0001_objects.sql")
    start = text.index(_FUNCTION)
    end = text.index("$fn$;", start) + len("$fn$;")
    op.execute(text[start:end].replace("CREATE FUNCTION", "CREATE OR REPLACE FUNCTION", 1))
    run_sql_file("0004_search_tuning.sql")
    op.execute(
        "DELETE FROM casebase.setting"
        " WHERE key IN ('hnsw_m', 'hnsw_ef_construction', 'hnsw_ef_factor')"
    )
