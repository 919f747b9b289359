"""Search speed (issue #15): a compact vector copy in each leaf's covering index, a flag
mask to narrow it, and a router that reads what ``casebase tune`` measured.

Revision ID: 0010
Revises: 0009
Create Date: 2026-11-30

- ``casebase.embedding`` gets two stored generated columns: ``vec_half`` (the vector in
  half precision; NULL above 1024 dimensions, too big for a B-tree row) and ``flag_mask``
  (``casebase._flag_mask(flags)``: the quality flags casebase raises, as bits). Adding them
  rewrites every leaf and rebuilds its indexes, the HNSW graph included (the HNSW build
  time of the ingest benchmark per leaf: plan the upgrade of a large installation like a
  back-fill).
- Each leaf's covering index ``<leaf>_filters`` (0006) becomes ``<leaf>_cover``: on
  PostgreSQL 18 it leads with ``(sex, flag_mask, view, age)``, the columns filters name
  by equality (18 skips over the ones a filter leaves out), and carries ``vec_half``;
  before 18 (no skip scan) it keeps ``(sex, age)`` first.
- ``_filter`` adds the flag-mask condition, ``similar_to_vector`` ranks the exact routes
  from ``vec_half`` and reads the leaf's tuned settings (``tune.<leaf>`` rows), and
  ``ensure_embedding_partition`` creates the new index on new leaves.

The downgrade puts the 0006 index back and drops the columns; ``tune.<leaf>`` setting rows
stay (older functions do not read them), so a calibration survives a downgrade and the
upgrade after it.
"""

from collections.abc import Sequence

from alembic import op

from casebase.db import replaceable

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Installed in this order (each calls only those before it), put back in reverse.
_OBJECTS = ("_flag_mask", "_flag_masks", "ensure_embedding_partition", "_filter",
            "similar_to_vector")  # fmt: skip

_COLUMNS = """
ALTER TABLE casebase.embedding
    ADD COLUMN flag_mask smallint GENERATED ALWAYS AS (casebase._flag_mask(flags)) STORED,
    ADD COLUMN vec_half halfvec
        GENERATED ALWAYS AS (CASE WHEN vector_dims(vec) <= 1024 THEN vec::halfvec END) STORED
"""

_COVER_18 = (
    "(sex, flag_mask, view, age) INCLUDE "
    "(flags, study_date, batch, patient_key, study_id, study_pk, image_pk, vec_half)"
)
_COVER_OLD = (
    "(sex, age) INCLUDE "
    "(flag_mask, view, flags, study_date, batch, patient_key, study_id, study_pk, image_pk, "
    "vec_half)"
)
_FILTERS_0006 = (
    "(sex, age) INCLUDE (view, flags, study_date, batch, patient_key, study_id, study_pk, image_pk)"
)


def _swap_leaf_indexes(create_suffix: str, columns: str, old: str, drop_suffix: str) -> str:
    """A DO block that, on every embedding leaf, creates ``<leaf><create_suffix>`` on
    ``columns`` (``old`` before PostgreSQL 18) and drops ``<leaf><drop_suffix>``."""
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
        EXECUTE format('CREATE INDEX IF NOT EXISTS %I ON casebase.%I %s',
            leaf.relname || '{create_suffix}', leaf.relname,
            CASE WHEN current_setting('server_version_num')::integer >= 180000
                 THEN '{columns}' ELSE '{old}' END);
        EXECUTE format('DROP INDEX IF EXISTS casebase.%I', leaf.relname || '{drop_suffix}');
    END LOOP;
END
$do$;
"""


def upgrade() -> None:
    replaceable.install("_flag_mask", revision)
    replaceable.install("_flag_masks", revision)
    op.execute(_COLUMNS)
    op.execute(_swap_leaf_indexes("_cover", _COVER_18, _COVER_OLD, "_filters"))
    for name in _OBJECTS[2:]:
        replaceable.install(name, revision)


def downgrade() -> None:
    """The functions live before 0010, the 0006 covering index, no generated columns."""
    for name in reversed(_OBJECTS[2:]):
        replaceable.reinstall_previous(name, before=revision)
    op.execute(_swap_leaf_indexes("_filters", _FILTERS_0006, _FILTERS_0006, "_cover"))
    op.execute("ALTER TABLE casebase.embedding DROP COLUMN vec_half, DROP COLUMN flag_mask")
    replaceable.reinstall_previous("_flag_masks", before=revision)
    replaceable.reinstall_previous("_flag_mask", before=revision)
