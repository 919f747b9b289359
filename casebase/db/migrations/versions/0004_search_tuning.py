"""Search tuned from the 1M benchmark: a wider HNSW beam, a cheaper exact route.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-22

The numbers are in ``casebase/db/sql/similar_to_vector/0004.sql``.
"""

from collections.abc import Sequence

from casebase.db import replaceable

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    replaceable.install("similar_to_vector", revision)


def downgrade() -> None:
    replaceable.reinstall_previous("similar_to_vector", before=revision)
