"""Alembic environment: the only place migrations learn the database URL."""

from __future__ import annotations

from alembic import context
from sqlalchemy import create_engine, pool

from casebase.db.connection import checked_url, sqlalchemy_url
from casebase.db.models import include_name, metadata

config = context.config


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
