"""Composed queries and two-stage (re-ranked) retrieval in SQL (issue #18).

Revision ID: 0009
Revises: 0008
Create Date: 2026-11-30

- ``casebase.prompt_embedding`` (a table: it runs once, here): the text-tower vector of
  a prompt per space, written by ``casebase prompts add`` / ``Client.embed_prompts``,
  because SQL cannot run a text tower. ``casebase.prompts`` is its view for analysts.
  Rows go with their space (``ON DELETE CASCADE``).
- ``casebase.similar_composed`` (vectors in: image, modify text, neutral text) and
  ``casebase.similar_cases_modified`` (a study and a stored prompt): "cases like this
  one, but with X", ``normalize(q + w * (t(X) - t(neutral)))`` searched by
  ``similar_to_vector`` with every filter.
- ``casebase.similar_reranked`` (two query vectors) and
  ``casebase.similar_cases_reranked`` (a study): candidates from one space by
  ``similar_to_vector`` (filters applied there), re-scored exactly by a second space.

The owner role of the definer functions reads two more tables: the prompts, and
``casebase.image`` (a study's images, by study: how the re-ranker finds the second
space's vectors of a candidate without scanning the leaf).
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from pgvector.sqlalchemy import VECTOR

from casebase.db import replaceable

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

OWNER = "casebase_owner"

# Installed in this order (each calls only those before it), dropped in reverse.
_OBJECTS = (
    "prompts",
    "similar_composed",
    "similar_cases_modified",
    "similar_reranked",
    "similar_cases_reranked",
)


def upgrade() -> None:
    op.create_table(
        "prompt_embedding",
        sa.Column("space_id", sa.SmallInteger(), nullable=False),
        sa.Column("prompt", sa.Text(), nullable=False),
        sa.Column("vec", VECTOR(), nullable=False),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.CheckConstraint(
            "length(prompt) BETWEEN 1 AND 300", name=op.f("ck_prompt_embedding_prompt")
        ),
        sa.ForeignKeyConstraint(
            ["space_id"],
            ["casebase.embedding_space.space_id"],
            name=op.f("fk_prompt_embedding_space_id_embedding_space"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("space_id", "prompt", name=op.f("pk_prompt_embedding")),
        schema="casebase",
        comment="Text-tower vectors of prompts per space, for composed queries in SQL.",
    )
    # Like every table: private to analysts (they read the view), written by ingest.
    op.execute("REVOKE ALL ON casebase.prompt_embedding FROM PUBLIC")
    op.execute(
        "GRANT SELECT, INSERT, UPDATE, DELETE ON casebase.prompt_embedding TO casebase_ingest"
    )
    op.execute(f"GRANT SELECT ON casebase.prompt_embedding, casebase.image TO {OWNER}")
    for name in _OBJECTS:
        replaceable.install(name, revision)


def downgrade() -> None:
    """The five objects and the table go (none existed before); the owner's grant on
    casebase.image is revoked."""
    for name in reversed(_OBJECTS):
        replaceable.reinstall_previous(name, before=revision)
    op.execute(f"REVOKE SELECT ON casebase.image FROM {OWNER}")
    op.drop_table("prompt_embedding", schema="casebase")
