"""Search functions: similar_to_vector, similar_cases, hybrid_search; checkpoint paths.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-22
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from casebase.db.sql_files import run_sql_file

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column(
        "embedding_space", sa.Column("checkpoint_path", sa.Text(), nullable=True), schema="casebase"
    )
    run_sql_file("0002_search.sql")


def downgrade() -> None:
    op.execute("DROP FUNCTION casebase.hybrid_search")
    op.execute("DROP FUNCTION casebase.similar_cases")
    op.execute("DROP FUNCTION casebase.similar_to_vector")
    op.execute("DROP FUNCTION casebase._leaf")
    op.execute("DROP FUNCTION casebase._space")
    op.execute("DROP TYPE casebase.similar_case")
    op.execute("DELETE FROM casebase.setting WHERE key IN ('max_k', 'exact_threshold')")
    op.drop_column("embedding_space", "checkpoint_path", schema="casebase")
