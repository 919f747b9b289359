"""HNSW parameters as settings (m, ef_construction, ef_search factor), tuned for recall.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-22

The recall they buy is in ``casebase/db/sql/ensure_embedding_partition/0005.sql``.
"""

import logging
from collections.abc import Sequence

from alembic import op

from casebase.db import replaceable

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

log = logging.getLogger("casebase.db.migrations")

_OBJECTS = ("ensure_embedding_partition", "similar_to_vector")


def upgrade() -> None:
    # A tuned value is kept: a downgrade leaves these rows, and this inserts only defaults.
    op.execute(
        "INSERT INTO casebase.setting (key, value) VALUES"
        " ('hnsw_m', '32'),"  # HNSW graph degree of new indexes
        " ('hnsw_ef_construction', '128'),"  # HNSW build beam of new indexes
        " ('hnsw_ef_factor', '4')"  # hnsw.ef_search = factor x images asked for (200..1000)
        " ON CONFLICT (key) DO NOTHING"
    )
    for name in _OBJECTS:
        replaceable.install(name, revision)


def downgrade() -> None:
    """Put back the functions live before 0005. The hnsw_* settings stay in
    casebase.setting (the older functions do not read them), so a tuned value survives
    a downgrade and the upgrade after it."""
    for name in _OBJECTS:
        replaceable.reinstall_previous(name, before=revision)
    log.info(
        "casebase.setting keeps hnsw_m, hnsw_ef_construction and hnsw_ef_factor "
        "for the next upgrade"
    )
