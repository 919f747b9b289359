"""`casebase demo`: the offline end-to-end tour on the embedded database."""

from __future__ import annotations

from casebase.config import load_settings
from casebase.db import migrate
from casebase.db.connection import checked_url, connect


def run_demo(out=print) -> None:
    settings = load_settings()
    url = checked_url(settings)
    migrate.upgrade(url)
    with connect(url) as conn:
        revision = migrate.current_revision(conn)
        views = [
            r[0]
            for r in conn.execute(
                "SELECT table_name FROM information_schema.views "
                "WHERE table_schema = 'casebase' ORDER BY 1"
            ).fetchall()
        ]
    out(f"database: {url}")
    out(f"schema revision: {revision}")
    out("views: " + ", ".join(f"casebase.{v}" for v in views))
    out(f"try: psql \"{url}\" -c '\\dv casebase.*'")
