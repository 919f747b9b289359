"""Alembic environment: the only place migrations learn the database URL."""

from __future__ import annotations

import re

from alembic import context
from sqlalchemy import create_engine, pool

from casebase.db.connection import checked_url, sqlalchemy_url
from casebase.db.models import SCHEMA, metadata

config = context.config

LEAF_PARTITION = re.compile(r"^embedding_s\d+(_\w+)?$")


def include_name(name, type_, parent_names) -> bool:
    """Compare only casebase's own schema, and not the leaf partitions made at run time."""
    if type_ == "schema":
        return name == SCHEMA
    if type_ == "table" and name and LEAF_PARTITION.match(name):
        return False
    return True


def run_migrations_online() -> None:
    url = config.attributes.get("url") or checked_url()
    connectable = config.attributes.get("connection")
    if connectable is None:
        engine = create_engine(sqlalchemy_url(url), poolclass=pool.NullPool)
        with engine.connect() as connection:
            _run(connection)
    else:
        _run(connectable)


def _run(connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=metadata,
        include_schemas=True,
        include_name=include_name,
        version_table_schema="public",
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


if context.is_offline_mode():
    raise SystemExit("casebase migrations run online only: use `casebase db upgrade`")
run_migrations_online()
