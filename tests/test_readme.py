"""Every command in the README works: CLI lines parse, SQL runs as an analyst, Python runs.

The CLI lines are parsed by the real argument parser (their behaviour is tested in
the feature tests); the SQL and Python blocks run for real on a generated cohort.
"""

from __future__ import annotations

import re
import shlex

import pytest

from casebase.cli import build_parser
from casebase.db.connection import connect
from tests.conftest import REPO

README = (REPO / "README.md").read_text()
BLOCKS = re.findall(r"```(\w+)\n(.*?)```", README, flags=re.S)


def _commands(lang: str) -> list[str]:
    out = []
    for block_lang, body in BLOCKS:
        if block_lang != lang:
            continue
        body = body.replace("\\\n", " ")
        for line in body.splitlines():
            line = line.split("  #")[0].strip()
            if line.startswith("casebase "):
                out.append(line)
    return out


CLI_LINES = _commands("sh")
SQL_BLOCKS = [body for lang, body in BLOCKS if lang == "sql"]
PY_BLOCKS = [body for lang, body in BLOCKS if lang == "python"]


def test_readme_has_the_two_quickstart_commands():
    quick = README[README.index("## Quickstart") : README.index("## For analysts")]
    assert "make demo" in quick and "make test" in quick


@pytest.mark.parametrize("line", CLI_LINES)
def test_cli_line_parses(line):
    argv = shlex.split(line)[1:]
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as exc:  # argparse exits on an unknown flag
        pytest.fail(f"README command does not parse: {line} ({exc})")
    assert args.command


def test_every_cli_command_family_is_in_the_readme():
    used = {shlex.split(line)[1] for line in CLI_LINES}
    assert {"db", "ingest", "search", "brief", "eval", "relabel"} <= used


#: The searches of issue #18 (composed, re-ranked) need what the README sets up for them:
#: the demo's two spaces and the prompts its `casebase prompts add` lines store.
TWO_SPACES = ("similar_cases_modified", "similar_composed", "_reranked", "modify=", "rerank_")


@pytest.fixture(scope="module")
def two_spaces_url(db_url, tmp_path_factory) -> str:
    """A cohort in tiny-random and a second model's space named demo-trained (as `casebase
    demo` leaves them), and every `casebase prompts add` line of the README run on it."""
    from casebase.cli import main
    from casebase.cohort import generate
    from casebase.ingest.pipeline import IngestOptions, ingest
    from tests.second_space import add_second_space

    manifest = generate(tmp_path_factory.mktemp("readme18"), n_chest=30, n_knee=0, seed=4)
    options = IngestOptions(batch="cohort", model="tiny-random", workers=0, progress=False)
    assert ingest(manifest, options, url=db_url).loaded == 30
    add_second_space(db_url, tmp_path_factory.mktemp("demo-trained"), name="demo-trained")
    lines = [line for line in CLI_LINES if line.startswith("casebase prompts add")]
    assert lines, "the README shows how to store prompts"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("DATABASE_URL", db_url)
        for line in lines:
            assert main(shlex.split(line)[1:]) == 0, line
    return db_url


def _url_for(block: str, request) -> str:
    fixture = "two_spaces_url" if any(w in block for w in TWO_SPACES) else "cohort_url"
    return request.getfixturevalue(fixture)


@pytest.mark.parametrize("sql", SQL_BLOCKS, ids=lambda s: s.strip().splitlines()[0][:40])
def test_sql_block_runs_as_analyst(request, sql):
    with connect(_url_for(sql, request)) as conn:
        conn.execute("SET ROLE casebase_analyst")
        try:
            for statement in [s for s in sql.split(";") if s.strip()]:
                cur = conn.execute(statement)
                rows = cur.fetchall()
                assert cur.description, statement
                # Searches and the batch list have rows on the cohort (its rejects are none).
                if "similar_" in statement or "casebase.batches" in statement:
                    assert rows, statement
        finally:
            conn.rollback()


@pytest.mark.parametrize("code", PY_BLOCKS, ids=lambda s: s.strip().splitlines()[0][:40])
def test_python_block_runs(request, monkeypatch, capsys, code):
    monkeypatch.setenv("DATABASE_URL", _url_for(code, request))
    exec(compile(code, "README.md", "exec"), {})
    out = capsys.readouterr().out
    assert "DEMO-C" in out, out
    if "brief" in code:
        assert "not a diagnosis" in out.lower(), out
