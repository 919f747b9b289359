"""Concurrency with a read replica: a primary and one hot standby (both embedded, on this
machine, Unix sockets), a generated batch ingested on the primary, the replay lag, then
analyst searches at 1, 4 and 16 concurrent sessions on the primary and on the standby.

    python benchmarks/concurrency.py                      # 1,000 studies, ~3 minutes here
    python benchmarks/concurrency.py --studies 200 --seconds 2 --no-ingest-under-load

What it prints:

- the batch (``tiny-random``, ``--studies`` generated chest and knee studies) ingested
  on the primary, and the **replay lag**: the most the standby fell behind while it
  loaded (bytes of WAL, and PostgreSQL's own ``replay_lag``), and how long after the
  last commit the standby had replayed it (its ``pg_last_wal_replay_lsn()`` passing the
  primary's ``pg_current_wal_lsn()``);
- one table: for each server and number of sessions (threads, one connection each,
  running ``casebase.similar_cases(study, k => 20)`` over the batch's studies for
  ``--seconds``), queries, errors, wrong results (any result that differs from the
  primary's, single-session answer to the same query), p50 / p95 latency and throughput;
- with ``--ingest-under-load`` (default), the time of a further batch of the same size
  alone, under 16 sessions on the primary, and under 16 sessions on the standby.

Everything runs under a temporary ``CASEBASE_HOME``; both servers are stopped at the end,
on failure too. On one machine the standby shares the primary's cores: the numbers show
that the results are right and where the time goes, not what separate machines give.
"""

from __future__ import annotations

import argparse
import logging
import shutil
import statistics
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from casebase.config import Settings, load_settings
from casebase.db import embedded, migrate, replica, replica_state
from casebase.db.connection import connect
from casebase.db.replication import current_lsn, wait_for_replay

QUERY = "SELECT study_id, distance, route FROM casebase.similar_cases(%s, k => 20)"


@dataclass
class Cell:
    server: str
    sessions: int
    latencies: list[float] = field(default_factory=list)
    errors: int = 0
    wrong: int = 0
    wall: float = 0.0
    routes: set[str] = field(default_factory=set)

    def row(self) -> str:
        ms = sorted(x * 1000 for x in self.latencies)
        p50 = statistics.median(ms) if ms else float("nan")
        p95 = ms[min(len(ms) - 1, int(0.95 * len(ms)))] if ms else float("nan")
        rate = len(ms) / self.wall if self.wall else 0.0
        return (
            f"{self.server:<8} {self.sessions:>8} {len(ms):>8} {self.errors:>6} {self.wrong:>6} "
            f"{p50:>8.2f} {p95:>8.2f} {rate:>8.1f}  {','.join(sorted(self.routes))}"
        )


def renamed(manifest: Path, prefix: str) -> Path:
    """The same images as other studies (a further batch without generating images)."""
    out = manifest.with_name(f"manifest-{prefix}.csv")
    out.write_text(manifest.read_text().replace("DEMO-", f"{prefix}-"))
    return out


def ingest(manifest: Path, batch: str, url: str, encoder) -> float:
    from casebase.ingest.pipeline import IngestOptions, ingest

    start = time.perf_counter()
    summary = ingest(manifest, IngestOptions(batch=batch, progress=False), url=url, encoder=encoder)
    assert summary.rejected == 0 and summary.complete, summary
    return time.perf_counter() - start


class LagSampler(threading.Thread):
    """Samples how far the standby is behind the primary while a batch loads."""

    def __init__(self, primary: str, standby: str) -> None:
        super().__init__(daemon=True)
        self.primary, self.standby = primary, standby
        self.stop = threading.Event()
        self.max_bytes = 0
        self.max_replay_lag = 0.0

    def run(self) -> None:
        with (
            connect(self.primary, autocommit=True) as p,
            connect(self.standby, autocommit=True) as s,
        ):
            while not self.stop.wait(0.05):
                lsn = current_lsn(p)
                behind = s.execute(
                    "SELECT greatest(0, pg_wal_lsn_diff(%s::pg_lsn, pg_last_wal_replay_lsn()))",
                    (lsn,),
                ).fetchone()[0]
                lag = p.execute(
                    "SELECT coalesce(max(extract(epoch FROM replay_lag)), 0) "
                    "FROM pg_stat_replication"
                ).fetchone()[0]
                self.max_bytes = max(self.max_bytes, int(behind))
                self.max_replay_lag = max(self.max_replay_lag, float(lag))


def sessions(
    url: str,
    n: int,
    seconds: float,
    queries: list[str],
    truth: dict,
    cell: Cell,
    stop: threading.Event | None = None,
) -> Cell:
    """``n`` threads, one connection each, cycling through ``queries`` for ``seconds``
    (or until ``stop`` is set)."""
    lock = threading.Lock()
    deadline = time.perf_counter() + seconds
    stop = stop or threading.Event()

    def work(i: int) -> None:
        mine: list[float] = []
        errors = wrong = 0
        routes: set[str] = set()
        with connect(url, autocommit=True) as conn:
            j = i
            while time.perf_counter() < deadline and not stop.is_set():
                sid = queries[j % len(queries)]
                j += n
                start = time.perf_counter()
                try:
                    rows = conn.execute(QUERY, (sid,)).fetchall()
                except Exception:
                    errors += 1
                    continue
                mine.append(time.perf_counter() - start)
                routes |= {r[2] for r in rows}
                wrong += [(r[0], r[1]) for r in rows] != truth[sid]
        with lock:
            cell.latencies += mine
            cell.errors += errors
            cell.wrong += wrong
            cell.routes |= routes

    start = time.perf_counter()
    threads = [threading.Thread(target=work, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    cell.wall = time.perf_counter() - start
    return cell


class Background:
    """``n`` search sessions running until stopped (load while a batch ingests)."""

    def __init__(self, url: str, n: int, queries: list[str], truth: dict) -> None:
        self.cell, self.stop = Cell("bg", n), threading.Event()
        self.thread = threading.Thread(
            target=sessions, args=(url, n, 3600.0, queries, truth, self.cell, self.stop)
        )

    def __enter__(self) -> Background:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop.set()
        self.thread.join()


def run(args: argparse.Namespace, work: Path, settings: Settings) -> None:
    from casebase.cohort import generate
    from casebase.embedding import load_encoder

    primary = embedded.start(settings.embedded_dir)
    migrate.upgrade(primary)
    if args.exact_threshold is not None:
        with connect(primary) as conn:
            conn.execute(
                "UPDATE casebase.setting SET value = %s WHERE key = 'exact_threshold'",
                (str(args.exact_threshold),),
            )
            conn.commit()
    started = time.perf_counter()
    standby = replica.create(work / "standby", settings=settings).url
    assert standby is not None
    print(f"standby created (pg_basebackup + start) in {time.perf_counter() - started:.1f} s")
    chest = round(args.studies * 0.8)
    manifest = generate(work / "cohort", n_chest=chest, n_knee=args.studies - chest, seed=0)
    encoder = load_encoder("tiny-random", device="cpu")

    with connect(primary, autocommit=True) as p:
        before = current_lsn(p)
    sampler = LagSampler(primary, standby)
    sampler.start()
    seconds = ingest(manifest, "b1", primary, encoder)
    sampler.stop.set()
    sampler.join()
    with connect(primary, autocommit=True) as p:
        lsn = current_lsn(p)
        wal = p.execute("SELECT pg_wal_lsn_diff(%s::pg_lsn, %s::pg_lsn)", (lsn, before))
        wal_bytes = int(wal.fetchone()[0])
        p.execute("ANALYZE casebase.embedding")
    with connect(standby) as s:
        replayed = wait_for_replay(s, lsn, timeout=300)
    print(
        f"batch of {args.studies} studies ingested on the primary in {seconds:.1f} s: "
        f"{wal_bytes / 2**20:.1f} MiB of WAL shipped to the standby"
    )
    print(
        f"replay lag: at most {sampler.max_bytes:,} bytes of WAL behind while it loaded "
        f"(replay_lag at most {sampler.max_replay_lag:.3f} s); the last commit was replayed "
        f"{replayed.seconds:.3f} s after the batch returned"
    )

    queries = [f"DEMO-{'C' if i < chest else 'K'}{i:04d}" for i in range(args.studies)]
    with connect(primary, autocommit=True) as p, connect(standby, autocommit=True) as s:
        truth = {q: [(r[0], r[1]) for r in p.execute(QUERY, (q,)).fetchall()] for q in queries}
        wrong = sum([(r[0], r[1]) for r in s.execute(QUERY, (q,)).fetchall()] != truth[q]
                    for q in queries)  # fmt: skip
    print(f"{len(queries)} queries answered on both: {wrong} differ on the standby")

    print(
        f"{'server':<8} {'sessions':>8} {'queries':>8} {'errors':>6} {'wrong':>6} "
        f"{'p50 ms':>8} {'p95 ms':>8} {'q/s':>8}  route"
    )
    for name, url in (("primary", primary), ("standby", standby)):
        for n in args.sessions:
            print(sessions(url, n, args.seconds, queries, truth, Cell(name, n)).row())

    if args.ingest_under_load:
        alone = ingest(renamed(manifest, "ALONE"), "b2", primary, encoder)
        with Background(primary, 16, queries, truth):
            on_primary = ingest(renamed(manifest, "LOADP"), "b3", primary, encoder)
        with Background(standby, 16, queries, truth):
            on_standby = ingest(renamed(manifest, "LOADS"), "b4", primary, encoder)
        print(
            f"a further batch of {args.studies}: {alone:.1f} s alone, {on_primary:.1f} s with "
            f"16 sessions on the primary, {on_standby:.1f} s with 16 sessions on the standby"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--studies", type=int, default=1000)
    parser.add_argument("--sessions", default="1,4,16", help="comma-separated (default 1,4,16)")
    parser.add_argument("--seconds", type=float, default=5.0, help="per server and session count")
    parser.add_argument(
        "--exact-threshold", type=int, help="casebase.setting exact_threshold (0: HNSW always)"
    )
    parser.add_argument("--no-ingest-under-load", dest="ingest_under_load", action="store_false")
    parser.add_argument("--keep", action="store_true", help="keep the temporary home")
    args = parser.parse_args()
    args.sessions = [int(n) for n in args.sessions.split(",")]
    logging.basicConfig(level=logging.ERROR)  # tiny-random's random-weight warning

    work = Path(tempfile.mkdtemp(prefix="casebase-concurrency-"))
    settings = load_settings({"CASEBASE_HOME": str(work / "home")})
    try:
        run(args, work, settings)
    finally:
        for state in replica_state.states(settings):
            replica.stop(state.name, settings=settings)
        embedded.stop(settings.embedded_dir)
        if args.keep:
            print(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
