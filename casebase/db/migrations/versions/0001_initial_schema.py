"""Initial schema: tables, embedding partitions, analyst views, roles.

Revision ID: 0001
Revises:
Create Date: 2026-11-22

Views and functions are replaceable objects (``casebase/db/replaceable.py``): each is
installed from ``casebase/db/sql/<object>/0001.sql``, which carries its own grants.
Roles and the schema-wide grants on tables run once, here.
"""

import logging
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from pgvector.sqlalchemy import VECTOR
from sqlalchemy.dialects import postgresql

from casebase.db import replaceable

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

log = logging.getLogger("casebase.db.migrations")

# Installed in this order; each file also holds the object's grants.
_OBJECTS = (
    "ensure_embedding_partition",
    "studies",
    "images",
    "findings",
    "batches",
    "rejects",
    "spaces",
    "embeddings",
)


def upgrade() -> None:
    op.execute("CREATE EXTENSION IF NOT EXISTS vector")
    op.execute("CREATE SCHEMA IF NOT EXISTS casebase")
    _create_tables()
    op.execute(
        "INSERT INTO casebase.setting (key, value) "
        "VALUES ('patient_salt', encode(sha256(gen_random_uuid()::text::bytea), 'hex'))"
    )
    _create_roles()
    _grant_tables()
    for name in _OBJECTS:
        replaceable.install(name, revision)


def downgrade() -> None:
    """Drop the schema with everything in it. The roles stay: they are the server's."""
    tuned = op.get_bind().execute(
        sa.text("SELECT key, value FROM casebase.setting WHERE key <> 'patient_salt' ORDER BY key")
    )
    log.warning(
        "dropping schema casebase: its data goes, and with it the patient salt and the settings %s",
        ", ".join(f"{key}={value}" for key, value in tuned) or "(none)",
    )
    op.execute("DROP SCHEMA casebase CASCADE")


def _create_roles() -> None:
    op.execute(
        """
DO $roles$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'casebase_analyst') THEN
        CREATE ROLE casebase_analyst NOLOGIN;
    END IF;
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'casebase_ingest') THEN
        CREATE ROLE casebase_ingest NOLOGIN;
    END IF;
END
$roles$;
"""
    )


def _grant_tables() -> None:
    """Tables are private to analysts (they read views); ingest writes every table."""
    op.execute("REVOKE ALL ON ALL TABLES IN SCHEMA casebase FROM PUBLIC")
    op.execute("GRANT USAGE ON SCHEMA casebase TO casebase_analyst, casebase_ingest")
    op.execute(
        "GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA casebase TO casebase_ingest"
    )
    op.execute("GRANT USAGE ON ALL SEQUENCES IN SCHEMA casebase TO casebase_ingest")


def _create_tables() -> None:
    op.create_table(
        "embedding",
        sa.Column("space_id", sa.SmallInteger(), nullable=False),
        sa.Column("modality", sa.Text(), nullable=False),
        sa.Column("image_pk", sa.BigInteger(), nullable=False),
        sa.Column("study_pk", sa.BigInteger(), nullable=False),
        sa.Column("study_id", sa.Text(), nullable=False),
        sa.Column("patient_key", sa.Text(), nullable=True),
        sa.Column("age", sa.REAL(), nullable=True),
        sa.Column("sex", sa.Text(), nullable=True),
        sa.Column("view", sa.Text(), nullable=True),
        sa.Column(
            "flags",
            postgresql.ARRAY(sa.Text()),
            server_default=sa.text("'{}'::text[]"),
            nullable=False,
        ),
        sa.Column("study_date", sa.Date(), nullable=True),
        sa.Column("batch", sa.Text(), nullable=False),
        sa.Column("vec", VECTOR(), nullable=False),
        sa.PrimaryKeyConstraint("space_id", "modality", "image_pk", name=op.f("pk_embedding")),
        schema="casebase",
        comment="Partitioned by space, then modality; filter columns live on each row.",
        postgresql_partition_by="LIST (space_id)",
    )
    op.create_table(
        "embedding_space",
        sa.Column("space_id", sa.SmallInteger(), sa.Identity(always=False), nullable=False),
        sa.Column("name", sa.Text(), nullable=False),
        sa.Column("model_name", sa.Text(), nullable=False),
        sa.Column("pretrained", sa.Text(), nullable=True),
        sa.Column("checkpoint_sha256", sa.Text(), nullable=True),
        sa.Column("dim", sa.Integer(), nullable=False),
        sa.Column("image_size", sa.Integer(), nullable=True),
        sa.Column("preprocess", sa.Text(), server_default="", nullable=False),
        sa.Column("fusion", postgresql.JSONB(astext_type=sa.Text()), nullable=True),
        sa.Column("is_default", sa.Boolean(), server_default=sa.text("false"), nullable=False),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.CheckConstraint("dim > 0 AND dim <= 16000", name=op.f("ck_embedding_space_dim")),
        sa.PrimaryKeyConstraint("space_id", name=op.f("pk_embedding_space")),
        sa.UniqueConstraint("name", name=op.f("uq_embedding_space_name")),
        schema="casebase",
    )
    op.create_index(
        "uq_embedding_space_default",
        "embedding_space",
        ["is_default"],
        unique=True,
        schema="casebase",
        postgresql_where=sa.text("is_default"),
    )
    op.create_table(
        "setting",
        sa.Column("key", sa.Text(), nullable=False),
        sa.Column("value", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("key", name=op.f("pk_setting")),
        schema="casebase",
        comment="Installation values, e.g. the salt of patient keys.",
    )
    op.create_table(
        "ingest_batch",
        sa.Column("name", sa.Text(), nullable=False),
        sa.Column("source", sa.Text(), nullable=False),
        sa.Column("status", sa.Text(), server_default="running", nullable=False),
        sa.Column("space_id", sa.SmallInteger(), nullable=True),
        sa.Column(
            "stats",
            postgresql.JSONB(astext_type=sa.Text()),
            server_default=sa.text("'{}'::jsonb"),
            nullable=False,
        ),
        sa.Column(
            "started_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.CheckConstraint(
            "status IN ('running', 'complete')", name=op.f("ck_ingest_batch_status")
        ),
        sa.ForeignKeyConstraint(
            ["space_id"],
            ["casebase.embedding_space.space_id"],
            name=op.f("fk_ingest_batch_space_id_embedding_space"),
        ),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_ingest_batch")),
        schema="casebase",
    )
    op.create_table(
        "ingest_reject",
        sa.Column("reject_id", sa.BigInteger(), sa.Identity(always=False), nullable=False),
        sa.Column("batch", sa.Text(), nullable=False),
        sa.Column("source", sa.Text(), nullable=False),
        sa.Column("row_ref", sa.Text(), server_default="", nullable=False),
        sa.Column("study_id", sa.Text(), nullable=True),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.ForeignKeyConstraint(
            ["batch"],
            ["casebase.ingest_batch.name"],
            name=op.f("fk_ingest_reject_batch_ingest_batch"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("reject_id", name=op.f("pk_ingest_reject")),
        sa.UniqueConstraint(
            "batch", "source", "row_ref", name=op.f("uq_ingest_reject_batch_source_row_ref")
        ),
        schema="casebase",
    )
    op.create_table(
        "study",
        sa.Column("study_pk", sa.BigInteger(), sa.Identity(always=False), nullable=False),
        sa.Column("study_id", sa.Text(), nullable=False),
        sa.Column("patient_key", sa.Text(), nullable=True),
        sa.Column("modality", sa.Text(), nullable=False),
        sa.Column("body_part", sa.Text(), nullable=True),
        sa.Column("view", sa.Text(), nullable=True),
        sa.Column("age", sa.REAL(), nullable=True),
        sa.Column("sex", sa.Text(), nullable=True),
        sa.Column("study_date", sa.Date(), nullable=True),
        sa.Column(
            "flags",
            postgresql.ARRAY(sa.Text()),
            server_default=sa.text("'{}'::text[]"),
            nullable=False,
        ),
        sa.Column("batch", sa.Text(), nullable=False),
        sa.Column("content_sha256", sa.Text(), nullable=False),
        sa.Column(
            "attributes",
            postgresql.JSONB(astext_type=sa.Text()),
            server_default=sa.text("'{}'::jsonb"),
            nullable=False,
        ),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.CheckConstraint("sex IN ('F', 'M', 'O')", name=op.f("ck_study_sex")),
        sa.CheckConstraint("age >= 0 AND age <= 130", name=op.f("ck_study_age")),
        sa.ForeignKeyConstraint(
            ["batch"], ["casebase.ingest_batch.name"], name=op.f("fk_study_batch_ingest_batch")
        ),
        sa.PrimaryKeyConstraint("study_pk", name=op.f("pk_study")),
        sa.UniqueConstraint("study_id", name=op.f("uq_study_study_id")),
        schema="casebase",
    )
    op.create_index(op.f("ix_study_batch"), "study", ["batch"], unique=False, schema="casebase")
    op.create_index(
        op.f("ix_study_modality_study_date"),
        "study",
        ["modality", "study_date"],
        unique=False,
        schema="casebase",
    )
    op.create_index(
        op.f("ix_study_patient_key"), "study", ["patient_key"], unique=False, schema="casebase"
    )
    op.create_table(
        "finding",
        sa.Column("study_pk", sa.BigInteger(), nullable=False),
        sa.Column("finding", sa.Text(), nullable=False),
        sa.Column("status", sa.Text(), nullable=False),
        sa.Column("backend", sa.Text(), nullable=False),
        sa.Column("version", sa.Text(), nullable=False),
        sa.Column("evidence", sa.Text(), nullable=True),
        sa.Column(
            "location",
            postgresql.JSONB(astext_type=sa.Text()),
            server_default=sa.text("'{}'::jsonb"),
            nullable=False,
        ),
        sa.CheckConstraint(
            "status IN ('present', 'uncertain', 'absent')", name=op.f("ck_finding_status")
        ),
        sa.ForeignKeyConstraint(
            ["study_pk"],
            ["casebase.study.study_pk"],
            name=op.f("fk_finding_study_pk_study"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("study_pk", "finding", "backend", name=op.f("pk_finding")),
        schema="casebase",
    )
    op.create_index(
        op.f("ix_finding_finding_status"),
        "finding",
        ["finding", "status"],
        unique=False,
        schema="casebase",
    )
    op.create_table(
        "image",
        sa.Column("image_pk", sa.BigInteger(), sa.Identity(always=False), nullable=False),
        sa.Column("study_pk", sa.BigInteger(), nullable=False),
        sa.Column("uri", sa.Text(), nullable=False),
        sa.Column("sha256", sa.Text(), nullable=False),
        sa.Column("size_bytes", sa.BigInteger(), nullable=False),
        sa.Column("width", sa.Integer(), nullable=True),
        sa.Column("height", sa.Integer(), nullable=True),
        sa.Column("view", sa.Text(), nullable=True),
        sa.Column(
            "flags",
            postgresql.ARRAY(sa.Text()),
            server_default=sa.text("'{}'::text[]"),
            nullable=False,
        ),
        sa.Column(
            "quality",
            postgresql.JSONB(astext_type=sa.Text()),
            server_default=sa.text("'{}'::jsonb"),
            nullable=False,
        ),
        sa.ForeignKeyConstraint(
            ["study_pk"],
            ["casebase.study.study_pk"],
            name=op.f("fk_image_study_pk_study"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("image_pk", name=op.f("pk_image")),
        sa.UniqueConstraint("study_pk", "sha256", name=op.f("uq_image_study_pk_sha256")),
        schema="casebase",
    )
    op.create_table(
        "report",
        sa.Column("study_pk", sa.BigInteger(), nullable=False),
        sa.Column("findings", sa.Text(), nullable=True),
        sa.Column("impression", sa.Text(), nullable=True),
        sa.Column(
            "removed",
            postgresql.ARRAY(sa.Text()),
            server_default=sa.text("'{}'::text[]"),
            nullable=False,
        ),
        sa.Column(
            "tsv",
            postgresql.TSVECTOR(),
            sa.Computed(
                "to_tsvector('english'::regconfig, coalesce(findings, '') || ' ' || "
                "coalesce(impression, ''))",
                persisted=True,
            ),
            nullable=True,
        ),
        sa.ForeignKeyConstraint(
            ["study_pk"],
            ["casebase.study.study_pk"],
            name=op.f("fk_report_study_pk_study"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("study_pk", name=op.f("pk_report")),
        schema="casebase",
        comment="Sanitised findings and impression: what analysts and LLMs may read.",
    )
    op.create_index(
        op.f("ix_report_tsv"),
        "report",
        ["tsv"],
        unique=False,
        schema="casebase",
        postgresql_using="gin",
    )
    op.create_table(
        "report_raw",
        sa.Column("study_pk", sa.BigInteger(), nullable=False),
        sa.Column("raw_text", sa.Text(), nullable=False),
        sa.Column("accession", sa.Text(), nullable=True),
        sa.ForeignKeyConstraint(
            ["study_pk"],
            ["casebase.study.study_pk"],
            name=op.f("fk_report_raw_study_pk_study"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("study_pk", name=op.f("pk_report_raw")),
        schema="casebase",
        comment="Restricted: the report as received. Never exposed through views.",
    )
