"""Search functions: similar_to_vector, similar_cases, hybrid_search; checkpoint paths.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-22

One query builder, ``casebase.similar_to_vector``; everything else calls it. The
functions are replaceable objects under ``casebase/db/sql/<object>/0002.sql``; the
row type they return is not (a composite type cannot be replaced), so it is created
here.
"""

import logging
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from casebase.db import replaceable

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

log = logging.getLogger("casebase.db.migrations")

# Installed in this order (each calls only those before it), dropped in reverse.
_OBJECTS = ("_space", "_leaf", "similar_to_vector", "similar_cases", "hybrid_search")

SIMILAR_CASE = """
CREATE TYPE casebase.similar_case AS (
    rank integer,
    study_id text,
    distance double precision,
    similarity double precision,
    modality text,
    age real,
    sex text,
    view text,
    flags text[],
    study_date date,
    impression text,
    image_id bigint,
    route text,
    sources text[],
    score double precision
)
"""


def upgrade() -> None:
    op.add_column(
        "embedding_space", sa.Column("checkpoint_path", sa.Text(), nullable=True), schema="casebase"
    )
    # A tuned value is kept: a downgrade leaves these rows, and this inserts only defaults.
    op.execute(
        "INSERT INTO casebase.setting (key, value) VALUES"
        " ('max_k', '1000'),"  # the cap on k
        " ('exact_threshold', '20000')"  # filtered rows at or under which the scan is exact
        " ON CONFLICT (key) DO NOTHING"
    )
    op.execute(SIMILAR_CASE)
    for name in _OBJECTS:
        replaceable.install(name, revision)


def downgrade() -> None:
    """Drop the functions and their row type. The settings max_k and exact_threshold
    stay in casebase.setting (nothing below this revision reads them), so a tuned value
    survives a downgrade and the upgrade after it."""
    for name in reversed(_OBJECTS):
        replaceable.reinstall_previous(name, before=revision)
    op.execute("DROP TYPE casebase.similar_case")
    op.drop_column("embedding_space", "checkpoint_path", schema="casebase")
    log.info("casebase.setting keeps max_k and exact_threshold for the next upgrade")
