"""A covering filter index per leaf, read by the exact route with an index-only scan.

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-23
"""

from collections.abc import Sequence

from alembic import op

from casebase.db import replaceable

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_OBJECTS = ("ensure_embedding_partition", "similar_to_vector")

_COVERING = (
    "(sex, age) INCLUDE (view, flags, study_date, batch, patient_key, study_id, study_pk, image_pk)"
)


def _swap_leaf_indexes(create_suffix: str, columns: str, drop_suffix: str) -> str:
    """A DO block that, on every embedding leaf, creates ``<leaf><create_suffix>`` on
    ``columns`` and drops ``<leaf><drop_suffix>``."""
    return f"""
DO $do$
DECLARE
    leaf record;
BEGIN
    FOR leaf IN
        SELECT c.relname
        FROM pg_inherits i
        JOIN pg_class c ON c.oid = i.inhrelid
        JOIN pg_class p ON p.oid = i.inhparent
        WHERE p.relnamespace = 'casebase'::regnamespace AND p.relname ~ '^embedding_s[0-9]+$'
    LOOP
        EXECUTE format('CREATE INDEX IF NOT EXISTS %I ON casebase.%I {columns}',
            leaf.relname || '{create_suffix}', leaf.relname);
        EXECUTE format('DROP INDEX IF EXISTS casebase.%I', leaf.relname || '{drop_suffix}');
    END LOOP;
END
$do$;
"""


def upgrade() -> None:
    """New leaves get the covering index from ensure_embedding_partition; existing
    leaves get it here."""
    for name in _OBJECTS:
        replaceable.install(name, revision)
    op.execute(_swap_leaf_indexes("_filters", _COVERING, "_sex_age"))


def downgrade() -> None:
    """The functions live before 0006, and the plain (sex, age) index on every leaf."""
    for name in _OBJECTS:
        replaceable.reinstall_previous(name, before=revision)
    op.execute(_swap_leaf_indexes("_sex_age", "(sex, age)", "_filters"))
