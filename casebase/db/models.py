"""The tables, as SQLAlchemy metadata: the source of truth for ``alembic check``.

Views, SQL functions, roles and the embedding leaf partitions are not tables of
this metadata: migrations create the first three (views and functions from
``db/sql/<object>/<revision>.sql``, see ``db/replaceable.py``), the SQL function
``casebase.ensure_embedding_partition`` the last, when ``db/spaces.py`` asks for a
leaf. ``include_name`` keeps those leaves out of the comparison.
"""

from __future__ import annotations

import re

from pgvector.sqlalchemy import HALFVEC, VECTOR
from sqlalchemy import (
    REAL,
    BigInteger,
    Boolean,
    CheckConstraint,
    Column,
    Computed,
    Date,
    DateTime,
    ForeignKey,
    Identity,
    Index,
    Integer,
    MetaData,
    PrimaryKeyConstraint,
    SmallInteger,
    Table,
    Text,
    UniqueConstraint,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import ARRAY, JSONB, TSVECTOR

from casebase.imaging.vocabulary import MAX_AGE_YEARS, Sex, Status

SCHEMA = "casebase"

NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

metadata = MetaData(schema=SCHEMA, naming_convention=NAMING_CONVENTION)

LEAF_PARTITION = re.compile(r"^embedding_s\d+(_\w+)?$")


def include_name(name: str | None, type_: str, parent_names) -> bool:
    """What ``alembic check`` compares: casebase's own schema, without the leaf
    partitions made at run time (they are not in this metadata)."""
    if type_ == "schema":
        return name == SCHEMA
    return not (type_ == "table" and name and LEAF_PARTITION.match(name))


def _one_of(column: str, values: list[str]) -> str:
    """A CHECK clause from the vocabulary, e.g. ``sex IN ('F', 'M', 'O')``.

    The values are the Python enum's (imaging/vocabulary.py), our own constants, so
    quoting them is safe. A value added there needs a migration too: tests/test_vocabulary.py
    fails until the migrated database agrees.
    """
    quoted = ", ".join(f"'{v}'" for v in values)
    return f"{column} IN ({quoted})"


def _created() -> Column:
    return Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now())


setting = Table(
    "setting",
    metadata,
    Column("key", Text, primary_key=True),
    Column("value", Text, nullable=False),
    comment="Installation values, e.g. the salt of patient keys.",
)

ingest_batch = Table(
    "ingest_batch",
    metadata,
    Column("name", Text, primary_key=True),
    Column("source", Text, nullable=False),
    Column("status", Text, nullable=False, server_default="running"),
    Column("space_id", SmallInteger, ForeignKey("embedding_space.space_id"), nullable=True),
    Column("stats", JSONB, nullable=False, server_default=text("'{}'::jsonb")),
    Column("started_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("finished_at", DateTime(timezone=True), nullable=True),
    Column("error", Text, nullable=True),
    CheckConstraint("status IN ('running', 'complete', 'failed')", name="status"),
)

ingest_reject = Table(
    "ingest_reject",
    metadata,
    Column("reject_id", BigInteger, Identity(), primary_key=True),
    Column("batch", Text, ForeignKey("ingest_batch.name", ondelete="CASCADE"), nullable=False),
    Column("source", Text, nullable=False),
    Column("row_ref", Text, nullable=False, server_default=""),
    Column("study_id", Text, nullable=True),
    Column("reason", Text, nullable=False),
    _created(),
    UniqueConstraint("batch", "source", "row_ref"),
)

study = Table(
    "study",
    metadata,
    Column("study_pk", BigInteger, Identity(), primary_key=True),
    Column("study_id", Text, nullable=False, unique=True),
    Column("patient_key", Text, nullable=True),
    Column("modality", Text, nullable=False),
    Column("body_part", Text, nullable=True),
    Column("view", Text, nullable=True),
    Column("age", REAL, nullable=True),
    Column("sex", Text, nullable=True),
    Column("study_date", Date, nullable=True),
    Column("flags", ARRAY(Text), nullable=False, server_default=text("'{}'::text[]")),
    Column("batch", Text, ForeignKey("ingest_batch.name"), nullable=False),
    Column("content_sha256", Text, nullable=False),
    Column("attributes", JSONB, nullable=False, server_default=text("'{}'::jsonb")),
    _created(),
    CheckConstraint(f"age >= 0 AND age <= {MAX_AGE_YEARS:g}", name="age"),
    CheckConstraint(_one_of("sex", sorted(Sex)), name="sex"),
    Index(None, "patient_key"),
    Index(None, "batch"),
    Index(None, "modality", "study_date"),
)

image = Table(
    "image",
    metadata,
    Column("image_pk", BigInteger, Identity(), primary_key=True),
    Column(
        "study_pk", BigInteger, ForeignKey("study.study_pk", ondelete="CASCADE"), nullable=False
    ),
    Column("uri", Text, nullable=False),
    Column("sha256", Text, nullable=False),
    Column("size_bytes", BigInteger, nullable=False),
    Column("width", Integer, nullable=True),
    Column("height", Integer, nullable=True),
    Column("view", Text, nullable=True),
    Column("flags", ARRAY(Text), nullable=False, server_default=text("'{}'::text[]")),
    Column("quality", JSONB, nullable=False, server_default=text("'{}'::jsonb")),
    UniqueConstraint("study_pk", "sha256"),
)

report = Table(
    "report",
    metadata,
    Column(
        "study_pk", BigInteger, ForeignKey("study.study_pk", ondelete="CASCADE"), primary_key=True
    ),
    Column("findings", Text, nullable=True),
    Column("impression", Text, nullable=True),
    Column("removed", ARRAY(Text), nullable=False, server_default=text("'{}'::text[]")),
    Column(
        "tsv",
        TSVECTOR,
        Computed(
            "to_tsvector('english'::regconfig, coalesce(findings, '') || ' ' || "
            "coalesce(impression, ''))",
            persisted=True,
        ),
    ),
    Index(None, "tsv", postgresql_using="gin"),
    comment="Sanitised findings and impression: what analysts and LLMs may read.",
)

report_raw = Table(
    "report_raw",
    metadata,
    Column(
        "study_pk", BigInteger, ForeignKey("study.study_pk", ondelete="CASCADE"), primary_key=True
    ),
    Column("raw_text", Text, nullable=False),
    Column("accession", Text, nullable=True),
    comment="Restricted: the report as received. Never exposed through views.",
)

attributes_raw = Table(
    "attributes_raw",
    metadata,
    Column(
        "study_pk", BigInteger, ForeignKey("study.study_pk", ondelete="CASCADE"), primary_key=True
    ),
    Column("attributes", JSONB, nullable=False),
    comment="Restricted: a study's extra manifest columns as received. Never in a view.",
)

finding = Table(
    "finding",
    metadata,
    Column(
        "study_pk", BigInteger, ForeignKey("study.study_pk", ondelete="CASCADE"), nullable=False
    ),
    Column("finding", Text, nullable=False),
    Column("status", Text, nullable=False),
    Column("backend", Text, nullable=False),
    Column("version", Text, nullable=False),
    Column("evidence", Text, nullable=True),
    Column("location", JSONB, nullable=False, server_default=text("'{}'::jsonb")),
    PrimaryKeyConstraint("study_pk", "finding", "backend"),
    CheckConstraint(_one_of("status", list(Status)), name="status"),
    Index(None, "finding", "status"),
)

embedding_space = Table(
    "embedding_space",
    metadata,
    Column("space_id", SmallInteger, Identity(), primary_key=True),
    Column("name", Text, nullable=False, unique=True),
    Column("model_name", Text, nullable=False),
    Column("pretrained", Text, nullable=True),
    Column("checkpoint_sha256", Text, nullable=True),
    Column("dim", Integer, nullable=False),
    Column("image_size", Integer, nullable=True),
    Column("preprocess", Text, nullable=False, server_default=""),
    Column("fusion", JSONB, nullable=True),
    Column("is_default", Boolean, nullable=False, server_default=text("false")),
    _created(),
    Column("checkpoint_path", Text, nullable=True),
    CheckConstraint("dim > 0 AND dim <= 16000", name="dim"),
    Index(
        "uq_embedding_space_default",
        "is_default",
        unique=True,
        postgresql_where=text("is_default"),
    ),
)

embedding = Table(
    "embedding",
    metadata,
    Column("space_id", SmallInteger, nullable=False),
    Column("modality", Text, nullable=False),
    Column("image_pk", BigInteger, nullable=False),
    Column("study_pk", BigInteger, nullable=False),
    Column("study_id", Text, nullable=False),
    Column("patient_key", Text, nullable=True),
    Column("age", REAL, nullable=True),
    Column("sex", Text, nullable=True),
    Column("view", Text, nullable=True),
    Column("flags", ARRAY(Text), nullable=False, server_default=text("'{}'::text[]")),
    Column("study_date", Date, nullable=True),
    Column("batch", Text, nullable=False),
    Column("vec", VECTOR(), nullable=False),
    # Revision 0010: what the covering index of each leaf carries (the exact route ranks
    # by vec_half, then re-ranks the nearest in full precision; filters on casebase's own
    # quality flags narrow the index scan through flag_mask).
    Column("flag_mask", SmallInteger, Computed("casebase._flag_mask(flags)", persisted=True)),
    Column(
        "vec_half",
        HALFVEC(),
        Computed("CASE WHEN vector_dims(vec) <= 1024 THEN vec::halfvec END", persisted=True),
    ),
    PrimaryKeyConstraint("space_id", "modality", "image_pk"),
    postgresql_partition_by="LIST (space_id)",
    comment="Partitioned by space, then modality; filter columns live on each row.",
)

prompt_embedding = Table(
    "prompt_embedding",
    metadata,
    Column(
        "space_id",
        SmallInteger,
        ForeignKey("embedding_space.space_id", ondelete="CASCADE"),
        nullable=False,
    ),
    Column("prompt", Text, nullable=False),
    Column("vec", VECTOR(), nullable=False),
    _created(),
    PrimaryKeyConstraint("space_id", "prompt"),
    CheckConstraint("length(prompt) BETWEEN 1 AND 300", name="prompt"),
    comment="Text-tower vectors of prompts per space, for composed queries in SQL.",
)
