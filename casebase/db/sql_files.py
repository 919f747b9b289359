"""SQL objects (views, functions, grants) kept as .sql files that psql could run too."""

from __future__ import annotations

from importlib.resources import files


def read_sql(name: str) -> str:
    return files("casebase.db").joinpath("sql", name).read_text(encoding="utf-8")


def run_sql_file(name: str) -> None:
    """Execute one file inside the running Alembic migration."""
    from alembic import op

    op.execute(read_sql(name))
