"""One embedded PostgreSQL per test session; one fresh database per test module."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"


@pytest.fixture(scope="session")
def casebase_home(tmp_path_factory) -> Iterator[Path]:
    """The session's CASEBASE_HOME, with any configured server unset; the environment is
    restored when the session ends."""
    home = tmp_path_factory.mktemp("casebase_home")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("CASEBASE_HOME", str(home))
        mp.delenv("DATABASE_URL", raising=False)
        mp.delenv("CASEBASE_DATABASE_URL", raising=False)
        yield home


@pytest.fixture(scope="session")
def server_url(casebase_home: Path) -> Iterator[str]:
    """The URL of the session's embedded server (database ``casebase``)."""
    from casebase.config import load_settings
    from casebase.db import embedded
    from casebase.db.connection import checked_url

    url = checked_url(load_settings())
    yield url
    embedded.stop(load_settings().embedded_dir)


def make_database(server_url: str, name: str, *, migrate: bool = True) -> str:
    from casebase.db.databases import recreate_database

    return recreate_database(server_url, name, migrate=migrate)


def drop_database(server_url: str, name: str) -> None:
    from casebase.db import databases

    databases.drop_database(server_url, name)


@pytest.fixture(scope="module")
def db_url(server_url: str, request) -> Iterator[str]:
    """A migrated database of its own for each test module."""
    name = "t_" + re.sub(r"\W", "_", request.module.__name__.split(".")[-1])[:50]
    url = make_database(server_url, name)
    yield url
    drop_database(server_url, name)


@pytest.fixture()
def use_db(db_url: str, monkeypatch) -> str:
    """Point every casebase entry point (CLI, client) at the module's database."""
    monkeypatch.setenv("DATABASE_URL", db_url)
    return db_url


@pytest.fixture(scope="session")
def shared_data() -> Path:
    assert SHARED_DATA.is_dir(), f"test data missing: {SHARED_DATA} (see ../shared/data/README.md)"
    return SHARED_DATA


@pytest.fixture(scope="session")
def cohort_url(server_url: str, tmp_path_factory) -> Iterator[str]:
    """A database holding a small generated cohort (60 chest, 20 knee, with reports)."""
    from casebase.cohort import generate
    from casebase.ingest.pipeline import IngestOptions, ingest

    url = make_database(server_url, "t_cohort")
    manifest = generate(tmp_path_factory.mktemp("cohort"), n_chest=60, n_knee=20, seed=3)
    options = IngestOptions(batch="cohort", model="tiny-random", workers=0, progress=False)
    summary = ingest(manifest, options, url=url)
    assert summary.loaded == 80 and summary.rejected == 0, summary
    yield url
    drop_database(server_url, "t_cohort")


@pytest.fixture(scope="session")
def cohort_manifest(cohort_url: str) -> Path:
    from casebase.db.connection import connect

    with connect(cohort_url) as conn:
        uri = conn.execute("SELECT uri FROM casebase.images LIMIT 1").fetchone()[0]
    return Path(uri).parent.parent / "manifest.csv"


@pytest.fixture
def stub_server():
    """Start scripted LLM stubs (tests/llm_stub.py) on demand; they stop with the test,
    sleeping handlers included."""
    from tests.llm_stub import Stub

    started: list[Stub] = []

    def start(script) -> Stub:
        stub = Stub(script)
        stub.thread.start()
        started.append(stub)
        return stub

    yield start
    for stub in started:
        stub.stop.set()
        stub.server.shutdown()
        stub.server.server_close()
        stub.thread.join(timeout=5)
