"""The ``casebase`` commands, one module per command group.

Each module has ``add_parser(subparsers)``, which adds its commands and binds each to
its handler with ``set_defaults(run=handler)``. A handler takes the parsed arguments,
calls the library (mostly ``casebase.client.Client``; never SQL), prints the result,
and returns the exit status; a ``CasebaseError`` it lets through becomes a one-line
error in ``casebase.cli``. At import, a command module imports only argparse and
the standard library: the library is imported inside the handlers, so that building
the parser (and ``casebase --help``) stays fast.
"""

from __future__ import annotations

from importlib import import_module

#: Command groups in the order ``casebase --help`` lists them.
GROUPS = ("db", "demo", "ingest", "search", "brief", "eval", "tune", "train", "prompts")


def add_parsers(subparsers) -> None:
    """Add every group's commands to ``subparsers``."""
    for group in GROUPS:
        import_module(f"casebase.commands.{group}").add_parser(subparsers)
