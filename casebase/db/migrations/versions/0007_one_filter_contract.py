"""One filter contract for every search function; definer functions owned by a NOLOGIN role.

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-30

- ``casebase._filter`` (``casebase/db/sql/_filter/0007.sql``) is the one builder of
  search filters: it validates every filter argument with the same guardrails and
  returns a ``casebase.search_filter`` record (created here: a composite type is not a
  replaceable object) holding the leaf, the checked values and the WHERE clause over
  them. ``similar_to_vector``, ``similar_cases`` and ``hybrid_search`` (both arms) use
  it; ``hybrid_search`` takes every filter of ``similar_to_vector`` now, so its argument
  list changes (dropped and re-created).
- ``casebase.query_image`` is the one rule for the query image of a study.
- Every function of the schema is owned by ``casebase_owner``, a NOLOGIN role created
  here, with ``pg_temp`` last in its ``search_path`` (an analyst's temp table named
  ``pg_inherits`` or ``setting`` shadowed the real one inside a SECURITY DEFINER
  function owned by the superuser). The role holds only what the functions need:
  USAGE and CREATE on the schema, SELECT on the tables they read, and the ownership of
  ``casebase.embedding`` and its partitions (PostgreSQL lets only a table's owner add a
  partition to it: ``ensure_embedding_partition`` does, for ingest). Each object file
  sets its owner, so a re-created function is owned like a fresh one.

The downgrade gives the functions and tables back to the schema's owner (the role that
ran the migrations that created them) and revokes the role's grants; the role itself
stays, like the other roles: it is the server's, and other databases may use it.
"""

from collections.abc import Sequence

from alembic import op

from casebase.db import replaceable

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

OWNER = "casebase_owner"

# Installed in this order (each calls only those before it), put back in reverse.
_OBJECTS = (
    "_space",
    "_leaf",
    "ensure_embedding_partition",
    "_filter",
    "query_image",
    "similar_to_vector",
    "similar_cases",
    "hybrid_search",
)
# Their argument list changes: dropped before the other version is created.
_NEW_SIGNATURE = {"hybrid_search"}

# The tables the functions read (besides casebase.embedding, which the role owns).
_READS = ("setting", "embedding_space", "study", "report")

SEARCH_FILTER = """
CREATE TYPE casebase.search_filter AS (
    space_id smallint,
    space text,
    dim integer,
    modality text,
    leaf text,
    sex text,
    age_min double precision,
    age_max double precision,
    exclude_flags text[],
    exclude_patient text,
    views text[],
    require_flags text[],
    date_from date,
    date_to date,
    batches text[],
    exclude_study text,
    attributes jsonb,
    predicate text
)
"""


def upgrade() -> None:
    _create_owner()
    op.execute(f"GRANT USAGE, CREATE ON SCHEMA casebase TO {OWNER}")
    op.execute(f"GRANT SELECT ON {', '.join('casebase.' + t for t in _READS)} TO {OWNER}")
    op.execute(_give_embedding_tables(f"'{OWNER}'"))
    op.execute(SEARCH_FILTER)
    for name in _OBJECTS:
        replaceable.install(name, revision, drop_first=name in _NEW_SIGNATURE)


def downgrade() -> None:
    """The functions live before 0007, owned again by the schema's owner; the tables
    too; the role's grants revoked."""
    for name in reversed(_OBJECTS):
        replaceable.reinstall_previous(name, before=revision, drop_first=name in _NEW_SIGNATURE)
    op.execute("DROP TYPE casebase.search_filter")
    schema_owner = "(SELECT nspowner::regrole::text FROM pg_namespace WHERE nspname = 'casebase')"
    op.execute(_give_functions(schema_owner))
    op.execute(_give_embedding_tables(schema_owner))
    op.execute(f"REVOKE SELECT ON {', '.join('casebase.' + t for t in _READS)} FROM {OWNER}")
    op.execute(f"REVOKE USAGE, CREATE ON SCHEMA casebase FROM {OWNER}")


def _create_owner() -> None:
    """The role, NOLOGIN; an existing one that can log in is refused, not altered (it
    is the server's, and someone gave it a login on purpose or by mistake)."""
    op.execute(
        f"""
DO $roles$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = '{OWNER}') THEN
        CREATE ROLE {OWNER} NOLOGIN;
    ELSIF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = '{OWNER}'
                  AND (rolcanlogin OR rolsuper)) THEN
        RAISE EXCEPTION 'role {OWNER} exists and can log in or is a superuser: it must be '
            'a NOLOGIN role that owns the search functions (ALTER ROLE {OWNER} NOLOGIN '
            'NOSUPERUSER, then upgrade again)';
    END IF;
END
$roles$;
"""
    )


def _give_embedding_tables(new_owner: str) -> str:
    """A DO block that makes ``new_owner`` (an SQL expression) the owner of
    casebase.embedding and every partition under it (their indexes follow)."""
    return f"""
DO $own$
DECLARE
    t regclass;
BEGIN
    FOR t IN SELECT relid FROM pg_partition_tree('casebase.embedding'::regclass) LOOP
        EXECUTE format('ALTER TABLE %s OWNER TO %I', t, {new_owner});
    END LOOP;
END
$own$;
"""


def _give_functions(new_owner: str) -> str:
    """A DO block that gives every function of the schema owned by the role to
    ``new_owner`` (an SQL expression)."""
    return f"""
DO $own$
DECLARE
    fn regprocedure;
BEGIN
    FOR fn IN SELECT p.oid FROM pg_proc p
              WHERE p.pronamespace = 'casebase'::regnamespace
                AND p.proowner = '{OWNER}'::regrole
    LOOP
        EXECUTE format('ALTER FUNCTION %s OWNER TO %I', fn, {new_owner});
    END LOOP;
END
$own$;
"""
