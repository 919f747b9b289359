"""Read replicas on a real primary + hot standby pair: two embedded servers on this machine,
Unix sockets only, made and run by ``casebase db replica``.

The module starts a primary of its own (never the session's server) under a home of its
own, a standby of it, and a second standby that one test promotes; every server it
starts is stopped at the end, killed ones included.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psutil
import psycopg
import pytest

from casebase.client import Client
from casebase.config import Settings, load_settings
from casebase.db import embedded, migrate, postmaster, replica, replica_state, routing
from casebase.db.connection import connect
from casebase.db.replica_registry import Registry
from casebase.db.replication import is_standby
from casebase.errors import DatabaseError, InputError, ReadOnlyError, ReplicaLagError

SEARCH_STUDIES = [f"DEMO-C{i:04d}" for i in range(0, 24, 3)]


@dataclass(frozen=True)
class Pair:
    settings: Settings
    env: dict[str, str]  # for the CLI: this module's home, no DATABASE_URL
    primary: str
    standby: str
    manifest: Path
    tmp: Path


def _stop_everything(settings: Settings) -> None:
    """Every replica of this home, then the primary; killed servers' children too."""
    for record in Registry(settings.home).all():
        info = postmaster.read_pid_file(record.data_dir)
        if info is not None and psutil.pid_exists(info.pid):
            try:
                postmaster.stop(record.data_dir, postmaster.run_as())
            except Exception:
                os.kill(info.pid, signal.SIGKILL)
    embedded.stop(settings.embedded_dir)


@pytest.fixture(scope="module")
def pair(tmp_path_factory) -> Iterator[Pair]:
    from casebase.cohort import generate

    tmp = tmp_path_factory.mktemp("replicas")
    home = tmp / "home"
    settings = load_settings({"CASEBASE_HOME": str(home)})
    env = {"CASEBASE_HOME": str(home), "DATABASE_URL": "", "CASEBASE_DATABASE_URL": ""}
    try:
        primary = embedded.start(settings.embedded_dir)
        migrate.upgrade(primary)
        standby = replica.create(tmp / "standby a", settings=settings)
        assert standby.role == "standby" and standby.url, standby
        manifest = generate(tmp / "cohort", n_chest=24, n_knee=6, seed=5)
        yield Pair(settings, env, primary, standby.url, manifest, tmp)
    finally:
        _stop_everything(settings)


@pytest.fixture(scope="module")
def loaded(pair: Pair) -> Pair:
    """The cohort ingested on the primary through a client that reads from the standby,
    which has replayed it once ``wait_for_replica`` returns."""
    with Client(pair.primary, read_url=pair.standby, settings=pair.settings) as client:
        summary = client.ingest(
            pair.manifest, batch="b1", model="tiny-random", workers=0, progress=False
        )
        assert summary.loaded == 30 and summary.complete, summary
        replay = client.wait_for_replica(timeout=30)
        assert replay.behind_bytes == 0 and replay.replay_lsn is not None, replay
    return pair


def _results(client: Client, **kwargs) -> list[list[tuple[str, float]]]:
    return [
        [(h.study_id, h.distance) for h in client.search(study_id=sid, k=8, **kwargs)]
        for sid in SEARCH_STUDIES
    ]


def test_the_standby_returns_the_primarys_studies_and_distances(loaded: Pair) -> None:
    with (
        Client(loaded.primary, settings=loaded.settings) as on_primary,
        Client(loaded.primary, read_url=loaded.standby, settings=loaded.settings) as on_standby,
    ):
        assert not is_standby(on_primary.read_conn) and is_standby(on_standby.read_conn)
        want = _results(on_primary)
        got = _results(on_standby)
        assert got == want  # same ids, same order, bit-identical distances
        assert all(len(hits) == 8 for hits in got), got
        # Briefs and lookups read there too, and agree.
        hits = on_standby.search(study_id=SEARCH_STUDIES[0], k=10)
        assert on_standby.findings([h.study_id for h in hits]) == on_primary.findings(
            [h.study_id for h in hits]
        )
        # the same brief, but for the second it was generated in (two calls can straddle one)
        briefs = [json.loads(c.brief(hits).to_json()) for c in (on_standby, on_primary)]
        for brief in briefs:
            assert brief.pop("generated_at")
        assert briefs[0] == briefs[1]


def test_a_new_batch_is_on_the_standby_once_wait_for_replica_returns(loaded: Pair) -> None:
    from casebase.cohort import generate

    more = generate(loaded.tmp / "cohort2", n_chest=6, n_knee=0, seed=9)
    more.write_text(more.read_text().replace("DEMO-C", "NEW-C"))  # other studies
    with Client(loaded.primary, read_url=loaded.standby, settings=loaded.settings) as client:
        client.ingest(more, batch="b2", model="tiny-random", workers=0, progress=False)
        lsn = client.write_lsn()
        replay = client.wait_for_replica(min_lsn=lsn, timeout=30)
        assert replay.target_lsn == lsn and replay.behind_bytes == 0
        ids = client.study_ids(batch="b2")  # read on the standby
        assert len(ids) == 6 and all(i.startswith("NEW-C") for i in ids), ids
        hits = client.search(study_id=ids[0], k=5)
        assert hits and ids[0] not in {h.study_id for h in hits}


def test_wait_for_replica_times_out_naming_the_lag(loaded: Pair) -> None:
    with connect(loaded.standby, autocommit=True) as standby:
        standby.execute("SELECT pg_wal_replay_pause()")
        try:
            with Client(
                loaded.primary, read_url=loaded.standby, settings=loaded.settings
            ) as client:
                client.set_default_space("tiny-random")  # a write on the primary
                with pytest.raises(ReplicaLagError) as caught:
                    client.wait_for_replica(timeout=0.5)
        finally:
            standby.execute("SELECT pg_wal_replay_resume()")
    message = str(caught.value)
    assert "has not replayed the primary's WAL up to" in message, message
    assert "after 0.5 s" in message and "bytes behind" in message, message
    assert "\n" not in message


def test_the_standby_searches_with_its_hnsw_indexes(loaded: Pair) -> None:
    with connect(loaded.primary) as conn:
        conn.execute("UPDATE casebase.setting SET value = '0' WHERE key = 'exact_threshold'")
        conn.execute("ANALYZE casebase.embedding")
        conn.commit()
    try:
        with Client(loaded.primary, read_url=loaded.standby, settings=loaded.settings) as client:
            client.wait_for_replica(timeout=30)
            hits = client.search(study_id=SEARCH_STUDIES[1], k=5)
            assert {h.route for h in hits} == {"hnsw"}, hits
        with connect(loaded.standby) as conn:
            assert is_standby(conn)
            vec, leaf, dim = conn.execute(
                "SELECT e.vec::text, format('embedding_s%s_cxr', s.space_id), s.dim "
                "FROM casebase.embeddings e JOIN casebase.embedding_space s ON s.name = e.space "
                "WHERE e.modality = 'CXR' LIMIT 1"
            ).fetchone()
            conn.execute("SET enable_seqscan = off")  # a 24-row leaf: make the plan show it
            plan = "\n".join(
                r[0]
                for r in conn.execute(
                    f"EXPLAIN SELECT image_pk FROM casebase.{leaf} "
                    f"ORDER BY vec::vector({dim}) <=> %s::vector({dim}) LIMIT 5",
                    (vec,),
                )
            )
        assert f"Index Scan using {leaf}_hnsw" in plan, plan
    finally:
        with connect(loaded.primary) as conn:
            conn.execute(
                "UPDATE casebase.setting SET value = '20000' WHERE key = 'exact_threshold'"
            )
            conn.commit()


def _cli(*args: str, env: dict[str, str], timeout: int = 180) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "casebase.cli", *args],
        capture_output=True,
        text=True,
        env={**os.environ, **env},
        timeout=timeout,
    )


def test_a_write_sent_to_the_standby_is_one_line(loaded: Pair) -> None:
    with Client(loaded.standby, settings=loaded.settings) as client:  # reads work there
        assert client.search(study_id=SEARCH_STUDIES[0], k=3)
        with pytest.raises(ReadOnlyError, match=r"^this server is a read-only standby"):
            client.set_default_space("tiny-random")
    with connect(loaded.standby) as conn, pytest.raises(ReadOnlyError) as caught:
        conn.execute("UPDATE casebase.setting SET value = '7' WHERE key = 'max_k'")
    assert str(caught.value).startswith("this server is a read-only standby (cannot execute")
    assert isinstance(caught.value.__cause__, psycopg.errors.ReadOnlySqlTransaction)
    env = {**loaded.env, "DATABASE_URL": loaded.standby}
    for args in (
        ("ingest", str(loaded.manifest), "--batch", "b9", "--model", "tiny-random"),
        ("db", "upgrade"),
    ):
        result = _cli(*args, env=env)
        lines = result.stderr.strip().splitlines()
        assert result.returncode == 1 and len(lines) == 1, result.stderr
        assert lines[0].startswith("casebase: error: this server is a read-only standby"), lines
        assert "DATABASE_URL at the primary" in lines[0]


def test_replica_list_and_wait_from_the_command_line(loaded: Pair) -> None:
    import json

    result = _cli("db", "replica", "list", "--json", env=loaded.env)
    assert result.returncode == 0, result.stderr
    rows = {r["name"]: r for r in json.loads(result.stdout)}
    a = rows["standby-a"]
    assert (a["role"], a["receiver"], a["url"]) == ("standby", "streaming", loaded.standby), a
    assert isinstance(a["retained_bytes"], int) and a["behind_bytes"] is not None
    waited = _cli("db", "replica", "wait", "standby-a", "--timeout", "30", env=loaded.env)
    assert waited.returncode == 0 and "has replayed up to" in waited.stdout, waited


def test_create_refuses_a_used_folder_and_a_taken_name(loaded: Pair) -> None:
    used = loaded.tmp / "used"
    used.mkdir()
    (used / "x").write_text("x")
    with pytest.raises(InputError, match="is not an empty folder"):
        replica.create(used, settings=loaded.settings)
    with pytest.raises(InputError, match="a replica named 'standby-a' exists"):
        replica.create(loaded.tmp / "other", name="standby-a", settings=loaded.settings)
    assert not (loaded.tmp / "other").exists()
    with connect(loaded.primary, autocommit=True) as conn:
        conn.execute("DROP ROLE IF EXISTS reader; CREATE ROLE reader LOGIN")
    reader = loaded.primary.replace("postgres@", "reader@")
    with pytest.raises(DatabaseError, match="role 'reader' may not replicate: ALTER ROLE"):
        replica.create(loaded.tmp / "other", source_url=reader, settings=loaded.settings)
    assert not (loaded.tmp / "other").exists() and len(Registry(loaded.settings.home).all()) == 1


def test_a_multi_host_read_url_prefers_the_standby(loaded: Pair, caplog) -> None:
    def host(url: str) -> str:
        return psycopg.conninfo.conninfo_to_dict(url)["host"]

    multi = psycopg.conninfo.make_conninfo(
        host=f"{host(loaded.standby)},{host(loaded.primary)}",
        user="postgres",
        dbname=psycopg.conninfo.conninfo_to_dict(loaded.primary)["dbname"],
        target_session_attrs="prefer-standby",
    )
    with Client(loaded.primary, read_url=multi, settings=loaded.settings) as client:
        assert is_standby(client.read_conn)
        assert client.search(study_id=SEARCH_STUDIES[0], k=3)
    assert replica.stop("standby-a", settings=loaded.settings)
    try:  # libpq skips the stopped standby by itself: no casebase fallback, no warning
        with caplog.at_level(logging.WARNING, logger="casebase"):
            with Client(loaded.primary, read_url=multi, settings=loaded.settings) as client:
                assert not is_standby(client.read_conn) and client._route.on_read_server
                assert client.search(study_id=SEARCH_STUDIES[0], k=3)
        assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
    finally:
        replica.start("standby-a", settings=loaded.settings)


def test_a_killed_standby_sends_reads_to_the_primary_with_one_warning(
    loaded: Pair, caplog, monkeypatch
) -> None:
    monkeypatch.setattr(routing, "RETRY_AFTER_S", 1.0)
    with Client(loaded.primary, settings=loaded.settings) as on_primary:
        want = _results(on_primary)
    client = Client(loaded.primary, read_url=loaded.standby, settings=loaded.settings)
    try:
        assert is_standby(client.read_conn) and _results(client) == want
        state = replica.start("standby-a", settings=loaded.settings)
        assert state.pid is not None
        server = psutil.Process(state.pid)
        children = server.children(recursive=True)
        caplog.clear()
        with caplog.at_level(logging.INFO, logger="casebase.db.routing"):
            os.kill(state.pid, signal.SIGKILL)  # the postmaster; its backends follow
            psutil.wait_procs([server, *children], timeout=30)
            assert [_results(client) for _ in range(3)] == [want] * 3  # no exception
            assert not is_standby(client.read_conn)
            warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
            assert len(warnings) == 1, [r.getMessage() for r in warnings]
            assert "cannot be reached" in warnings[0].getMessage()
            # The command line, while it is down: the results, and one warning line.
            env = {
                **loaded.env,
                "DATABASE_URL": loaded.primary,
                "CASEBASE_READ_URL": loaded.standby,
            }
            result = _cli("search", "--study", SEARCH_STUDIES[0], "-k", "3", env=env)
            assert result.returncode == 0 and "Traceback" not in result.stderr, result.stderr
            assert result.stderr.count("WARNING") == 1, result.stderr
            assert SEARCH_STUDIES[0] not in result.stdout and "DEMO-C" in result.stdout
            # Started again, it catches up from its slot and reads go back to it.
            replica.start("standby-a", settings=loaded.settings)
            client.wait_for_replica(timeout=30)  # the primary's, while reads are there
            time.sleep(1.1)
            assert _results(client) == want
            assert is_standby(client.read_conn)
            assert any("answers again" in r.getMessage() for r in caplog.records)
            assert len([r for r in caplog.records if r.levelno == logging.WARNING]) == 1
    finally:
        client.close()


def test_promote_makes_a_writable_primary_with_the_data(loaded: Pair) -> None:
    b = replica.create(loaded.tmp / "standby b", settings=loaded.settings)
    assert b.url is not None
    with Client(loaded.primary, read_url=b.url, settings=loaded.settings) as client:
        client.wait_for_replica(timeout=30)
        want = _results(client)
    done = replica.promote("standby-b", settings=loaded.settings)
    # The WAL it had not replayed is reported; the primary's background records (running
    # transactions, checkpoints) may land between the wait and the promotion, the data may not.
    assert done.state.role == "primary" and done.not_replayed_bytes is not None, done
    with Client(b.url, settings=loaded.settings) as promoted:
        assert not is_standby(promoted.conn)
        assert _results(promoted) == want
        promoted.set_default_space("tiny-random")  # writes are accepted now
    with connect(loaded.primary, autocommit=True) as conn:
        slots = [r[0] for r in conn.execute("SELECT slot_name FROM pg_replication_slots")]
    assert "casebase_standby_b" not in slots and "casebase_standby_a" in slots, slots
    with pytest.raises(InputError, match="was promoted already"):
        replica.promote("standby-b", settings=loaded.settings)
    record = replica.drop(str(loaded.tmp / "standby b"), settings=loaded.settings)
    assert record.name == "standby-b"
    assert [s.name for s in replica_state.states(loaded.settings)] == ["standby-a"]
    assert (loaded.tmp / "standby b" / "PG_VERSION").exists()  # drop leaves the folder
