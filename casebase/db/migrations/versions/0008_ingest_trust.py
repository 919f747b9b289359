"""Ingest trust: extra manifest columns kept restricted, and a batch that failed says so.

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-30

* ``casebase.attributes_raw``: a study's extra manifest columns as received (like
  ``report_raw``, analysts cannot read it). ``study.attributes`` keeps only the columns
  on the ingest allow-list (``--attributes``), sanitised. Rows loaded before this
  revision are not moved (no backfill in a schema migration).
* ``ingest_batch.status`` may be ``failed`` (with ``error``): a run that stopped on an
  error no longer leaves its batch ``running`` for ever; the next run sets it back.
  The view ``casebase.batches`` gains ``error``.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

from casebase.db import replaceable

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_STATUS = "ck_ingest_batch_status"  # as named by the naming convention (op.f: as is)


def upgrade() -> None:
    op.create_table(
        "attributes_raw",
        sa.Column("study_pk", sa.BigInteger(), nullable=False),
        sa.Column("attributes", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.ForeignKeyConstraint(
            ["study_pk"],
            ["casebase.study.study_pk"],
            name=op.f("fk_attributes_raw_study_pk_study"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("study_pk", name=op.f("pk_attributes_raw")),
        schema="casebase",
        comment="Restricted: a study's extra manifest columns as received. Never in a view.",
    )
    op.execute("REVOKE ALL ON casebase.attributes_raw FROM PUBLIC")
    op.execute("GRANT SELECT, INSERT, UPDATE, DELETE ON casebase.attributes_raw TO casebase_ingest")
    op.add_column("ingest_batch", sa.Column("error", sa.Text(), nullable=True), schema="casebase")
    op.drop_constraint(op.f(_STATUS), "ingest_batch", schema="casebase", type_="check")
    op.create_check_constraint(
        op.f(_STATUS),
        "ingest_batch",
        "status IN ('running', 'complete', 'failed')",
        schema="casebase",
    )
    replaceable.install("batches", revision)


def downgrade() -> None:
    # The older view lacks ``error``, which CREATE OR REPLACE VIEW cannot remove.
    replaceable.reinstall_previous("batches", before=revision, drop_first=True)
    op.drop_constraint(op.f(_STATUS), "ingest_batch", schema="casebase", type_="check")
    op.execute("UPDATE casebase.ingest_batch SET status = 'running' WHERE status = 'failed'")
    op.create_check_constraint(
        op.f(_STATUS), "ingest_batch", "status IN ('running', 'complete')", schema="casebase"
    )
    op.drop_column("ingest_batch", "error", schema="casebase")
    op.drop_table("attributes_raw", schema="casebase")
