"""Grants for login users: the revision table, and spaces through a view.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-22
"""

from collections.abc import Sequence

from alembic import op

from casebase.db.sql_files import run_sql_file

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    run_sql_file("0003_grants.sql")


def downgrade() -> None:
    op.execute("REVOKE SELECT ON public.alembic_version FROM casebase_analyst, casebase_ingest")
    op.execute("DROP VIEW casebase.spaces")
    op.execute(
        "CREATE VIEW casebase.spaces AS SELECT name AS space, model_name, pretrained, "
        "checkpoint_sha256, dim, image_size, preprocess, fusion, is_default, created_at "
        "FROM casebase.embedding_space"
    )
    op.execute("GRANT SELECT ON casebase.spaces TO casebase_analyst")
