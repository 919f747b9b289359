"""Whole databases on one server: a fresh, migrated one per test module or benchmark run."""

from __future__ import annotations

from urllib.parse import urlsplit, urlunsplit


def with_database(url: str, name: str) -> str:
    """The same server URL, pointing at database ``name``."""
    return urlunsplit(urlsplit(url)._replace(path=f"/{name}"))


def recreate_database(server_url: str, name: str, *, migrate: bool = True) -> str:
    """Drop and create ``name`` on the server of ``server_url``; return its URL."""
    import psycopg

    with psycopg.connect(with_database(server_url, "postgres"), autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{name}"')
    url = with_database(server_url, name)
    if migrate:
        from casebase.db import migrate as m

        m.upgrade(url)
    return url


def drop_database(server_url: str, name: str) -> None:
    import psycopg

    with psycopg.connect(with_database(server_url, "postgres"), autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
