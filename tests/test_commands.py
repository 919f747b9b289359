"""The command layer: every command registered, no SQL in it, and a light entry point."""

from __future__ import annotations

import argparse
import ast
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from casebase.cli import build_parser, main
from tests.conftest import REPO

COMMANDS_DIR = REPO / "casebase" / "commands"
EXPECTED = {
    "db start",
    "db stop",
    "db status",
    "db url",
    "db upgrade",
    "db downgrade",
    "db psql",
    "db replica create",
    "db replica list",
    "db replica start",
    "db replica stop",
    "db replica promote",
    "db replica drop",
    "db replica wait",
    "init",
    "demo",
    "ingest",
    "search",
    "brief",
    "relabel",
    "eval",
    "tune",
    "train",
    "spaces list",
    "spaces add",
    "spaces default",
    "spaces drop",
    "reembed",
    "prompts add",
    "prompts list",
}
HEAVY = ("spacy", "torch", "open_clip", "litellm", "pydicom", "alembic", "sqlalchemy")


def _leaves(parser: argparse.ArgumentParser, prefix: tuple[str, ...] = ()):
    """(command words, parser) of every command that runs something."""
    subs = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    if not subs:
        yield prefix, parser
        return
    for name, child in subs[0].choices.items():
        yield from _leaves(child, (*prefix, name))


LEAVES = dict(_leaves(build_parser()))


def test_every_command_is_registered():
    assert {" ".join(words) for words in LEAVES} == EXPECTED


@pytest.mark.parametrize("words", sorted(LEAVES), ids=" ".join)
def test_each_command_has_help_and_a_handler_in_commands(words, capsys):
    with pytest.raises(SystemExit) as exit_:
        main([*words, "--help"])
    assert exit_.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith(f"usage: casebase {' '.join(words)}"), out
    run = LEAVES[words].get_default("run")
    assert callable(run) and run.__module__.startswith("casebase.commands."), run


def _sources() -> list[Path]:
    return sorted(COMMANDS_DIR.glob("*.py"))


SQL = re.compile(
    r"\b(SELECT|INSERT|UPDATE|DELETE|CREATE|DROP|ALTER|TRUNCATE|COPY|WHERE|JOIN)\b"
    r"|\bcasebase\.(study|image|report|finding|embedding|studies|images|findings|embeddings)\b"
)


@pytest.mark.parametrize("path", _sources(), ids=lambda p: p.name)
def test_commands_hold_no_sql(path):
    """Commands call the library; SQL (and the connection it runs on) stays below them."""
    source = path.read_text()
    assert ".execute(" not in source
    tree = ast.parse(source)
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            assert not SQL.search(node.value), f"{path.name}:{node.lineno}: {node.value!r}"
        if isinstance(node, ast.Attribute):
            assert node.attr != "conn", f"{path.name}:{node.lineno} reaches into a connection"
        if isinstance(node, ast.Import | ast.ImportFrom):
            names = [getattr(node, "module", None) or ""] + [a.name for a in node.names]
            assert not any(n.split(".")[0] == "psycopg" for n in names), path.name


def test_the_sql_check_catches_sql():
    assert SQL.search("SELECT uri FROM casebase.images WHERE study_id = %s")
    assert SQL.search("uri from casebase.images")
    assert not SQL.search("drop a non-default space and its vectors")


def _imported_after(code: str, env: dict[str, str] | None = None) -> dict:
    """Run ``code`` in a fresh interpreter; which heavy modules it imported, and its output."""
    probe = (
        f"import json, sys\n{code}\n"
        f"print('HEAVY=' + json.dumps(sorted(m for m in {HEAVY!r} if m in sys.modules)))"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=120, env=env
    )
    lines = done.stdout.splitlines()
    heavy = [json.loads(ln[6:]) for ln in lines if ln.startswith("HEAVY=")]
    return {"rc": done.returncode, "out": done.stdout, "err": done.stderr, "heavy": heavy}


def test_building_the_parser_imports_nothing_heavy():
    found = _imported_after("import casebase.cli\ncasebase.cli.build_parser()")
    assert found["heavy"] == [[]], found


def test_help_imports_nothing_heavy():
    found = _imported_after(
        "from casebase.cli import main\ntry:\n    main(['--help'])\nexcept SystemExit:\n    pass"
    )
    assert found["heavy"] == [[]] and "search" in found["out"], found


def test_a_study_search_imports_nothing_heavy(cohort_url):
    env = {**os.environ, "DATABASE_URL": cohort_url}
    argv = ["search", "--study", "DEMO-C0003", "-k", "5"]
    found = _imported_after(f"from casebase.cli import main\nassert main({argv!r}) == 0", env)
    assert found["rc"] == 0 and "DEMO-C" in found["out"], found
    assert found["heavy"] == [[]], found


def test_a_brief_needs_no_spacy_and_the_labeller_is_still_exported():
    found = _imported_after(
        "import casebase.synthesis.brief, casebase.synthesis.aggregate\n"
        "print('BEFORE=' + str('spacy' in sys.modules))\n"
        "from casebase.synthesis.extract import rollup\n"  # the submodule first ...
        "from casebase.synthesis import extract, LABELLER_VERSION\n"  # ... then the package
        "assert callable(extract) and extract('No pleural effusion.'), extract"
    )
    assert found["rc"] == 0, found
    assert "BEFORE=False" in found["out"] and "spacy" in found["heavy"][0], found
