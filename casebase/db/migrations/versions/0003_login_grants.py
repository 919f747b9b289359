"""Grants for login users: the revision table, and spaces through a view.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-22

Both groups check the schema revision before working, and resolve spaces through the
view ``casebase.spaces`` (``casebase/db/sql/spaces/0003.sql``), which gains the columns
they need.
"""

from collections.abc import Sequence

from alembic import op

from casebase.db import replaceable

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.execute("GRANT SELECT ON public.alembic_version TO casebase_analyst, casebase_ingest")
    replaceable.install("spaces", revision)


def downgrade() -> None:
    op.execute("REVOKE SELECT ON public.alembic_version FROM casebase_analyst, casebase_ingest")
    # The older view has fewer columns, which CREATE OR REPLACE VIEW cannot remove.
    replaceable.reinstall_previous("spaces", before=revision, drop_first=True)
