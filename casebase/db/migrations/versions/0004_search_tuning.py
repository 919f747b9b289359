"""Search tuned from the 1M benchmark: a wider HNSW beam, a cheaper exact route.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-22
"""

from collections.abc import Sequence

from alembic import op

from casebase.db.sql_files import read_sql, run_sql_file

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_START = "-- ------------------------------------------------------------------ the query builder"
_END = "-- ------------------------------------------------------------------ by study id"


def upgrade() -> None:
    run_sql_file("0004_search_tuning.sql")


def downgrade() -> None:
    """Put back revision 0002's function, taken from its own file."""
    text = read_sql("0002_search.sql")
    body = text[text.index(_START) : text.index(_END)]
    op.execute(body.replace("CREATE FUNCTION", "CREATE OR REPLACE FUNCTION", 1))
