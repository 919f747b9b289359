"""Where casebase's search time goes at scale, and what a binary-quantized scan would save.

    CASEBASE_HOME=/tmp/p1m/home python benchmarks/binary_scan.py --n 1000000 --dist lowdim

A probe for issue #15's two open peer gaps, on the databases ``peers.py`` built and
``casebase tune`` calibrated (same rows, filters and queries; run ``peers.py --build-only``
first). It measures, per filter, with recall@k against NumPy's exact answer:

- ``casebase``: ``search_vector`` as shipped (the SQL router and its calibrated routes);
- ``bare walk ef N`` (unfiltered only): pgvector's HNSW scan alone, ``SELECT study_id
  ... ORDER BY vec <=> q LIMIT k`` with ``hnsw.ef_search = N`` and the relaxed iterative
  scan, nothing else: the floor of any search that walks pgvector's graph. The gap between
  it and ``casebase`` is the router, the study grouping and the client;
- ``binary scan L``: the direction the issue names, not yet shipped: a copy of each passing
  row's vector as one bit per dimension (pgvector's ``binary_quantize``) in a covering
  B-tree that leads with the same filter columns as casebase's own, scanned index-only and
  ordered by Hamming distance (``<~>``); the nearest ``L`` are re-ranked exactly by their
  full vectors, fetched by primary key. The copy lives in a scratch table of this script
  (schema ``bench_probe``, built once: 64 bytes a row at 512 dimensions).

- ``bare half walk ef N`` (``--half``): the same over a second HNSW graph on the leaf's
  half-precision copy (``halfvec_cosine_ops``, built once by the script, minutes at 1M;
  drop ``casebase.embedding_s1_cxr_half_hnsw_probe`` afterwards), unfiltered and with the
  10 % filter applied during the walk (beside the float graph's).

It prints one table per distribution. The p50/p95 are of one query at a time, measured by
``peers.measure`` (``--repeats`` passes over ``--queries`` queries after a warm-up, the
methods interleaved query by query).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

import peers
from peer_engines import Casebase, Engine
from search import FilterSpec

from casebase.db import databases
from casebase.db.connection import checked_url, connect

LEAF = "casebase.embedding_s1_cxr"  # the CXR leaf of peers.py's space (the first one)
PROBE = "bench_probe.bits_cxr"
HALF_GRAPH = "casebase.embedding_s1_cxr_half_hnsw_probe"  # built by --half, dropped by hand


def build_once(conn, relation: str, statements: list[str]) -> float | None:
    """Run ``statements`` unless ``relation`` exists (built by an earlier run): seconds."""
    if conn.execute("SELECT to_regclass(%s)", (relation,)).fetchone()[0]:
        return None
    t = time.perf_counter()
    for statement in statements:
        conn.execute(statement)
    return time.perf_counter() - t


# The scratch copy: filter columns + image_pk + binary vector, one covering index.
PROBE_BUILD = [
    "CREATE SCHEMA IF NOT EXISTS bench_probe",
    f"CREATE TABLE {PROBE} AS SELECT sex, flag_mask, view, age, image_pk, "
    f"binary_quantize(vec) AS bits FROM {LEAF}",
    f"CREATE INDEX bits_cxr_cover ON {PROBE} (sex, flag_mask, view, age) INCLUDE (image_pk, bits)",
    f"VACUUM (ANALYZE) {PROBE}",
]
# A second HNSW graph on the leaf, over the half-precision copy (same m and
# ef_construction as the shipped one): is pgvector's walk cheaper on 2-byte components?
HALF_GRAPH_BUILD = [
    "SET maintenance_work_mem = '3GB'",
    f"CREATE INDEX {HALF_GRAPH.split('.')[1]} ON {LEAF} USING hnsw "
    "((vec_half::halfvec(512)) halfvec_cosine_ops) WITH (m = 32, ef_construction = 128)",
]


def predicate(spec: FilterSpec) -> str:
    """The filter over the probe table, as casebase's router writes it for the leaf."""
    parts = ["true"]
    if spec.sex is not None:
        parts.append(f"sex = '{spec.sex}'")
    if spec.views is not None:
        parts.append("view = ANY (ARRAY[" + ",".join(f"'{v}'" for v in spec.views) + "])")
    if spec.age is not None:
        parts.append(f"age >= {spec.age[0]} AND age <= {spec.age[1]}")
    if spec.require_flags or spec.exclude_flags:
        req = "ARRAY[" + ",".join(f"'{f}'" for f in spec.require_flags) + "]::text[]"
        exc = "ARRAY[" + ",".join(f"'{f}'" for f in spec.exclude_flags) + "]::text[]"
        parts.append(f"flag_mask = ANY (casebase._flag_masks({req}, {exc}))")
    return " AND ".join(parts)


def binary_sql(spec: FilterSpec, k: int) -> str:
    return f"""
        WITH cand AS MATERIALIZED (
            SELECT image_pk FROM {PROBE} WHERE {predicate(spec)}
            ORDER BY bits <~> binary_quantize(%(q)s::vector) LIMIT %(L)s)
        SELECT e.study_id FROM cand c JOIN {LEAF} e
          ON e.space_id = 1 AND e.modality = 'CXR' AND e.image_pk = c.image_pk
        ORDER BY e.vec <=> %(q)s::vector LIMIT {k}"""


class _Probe(Engine):
    """A query of this script on the peers database, answering ``peers.measure``."""

    def __init__(self, name: str, conn, position: dict[int, int]) -> None:
        self.name, self.conn, self.position = name, conn, position

    def ids(self, rows) -> np.ndarray:
        return np.array([self.position[int(r[0][4:])] for r in rows], dtype=np.int64)


class BareWalk(_Probe):
    """pgvector's graph alone: the leaf's HNSW index over ``vec`` (``half``: the probe's
    index over ``vec_half``, see ``build_half_graph``), the filter applied during the walk."""

    def __init__(self, conn, position: dict[int, int], ef: int, dim: int, half: bool) -> None:
        super().__init__(f"bare {'half ' if half else ''}walk ef {ef}", conn, position)
        self.ef, self.dim = ef, dim
        self.expr = f"vec_half::halfvec({dim})" if half else f"vec::vector({dim})"
        self.cast = f"halfvec({dim})" if half else f"vector({dim})"

    def search(self, q: np.ndarray, k: int, spec: FilterSpec) -> np.ndarray:
        self.conn.execute(f"SET hnsw.ef_search = {self.ef}")
        sql = (
            f"SELECT study_id FROM {LEAF} WHERE {predicate(spec)} ORDER BY {self.expr} "
            f"<=> %s::vector::{self.cast} LIMIT {k}"
        )
        return self.ids(self.conn.execute(sql, (q,), prepare=True))


class BinaryScan(_Probe):
    def __init__(self, conn, position: dict[int, int], rerank: int) -> None:
        super().__init__(f"binary scan L {rerank}", conn, position)
        self.rerank = rerank

    def search(self, q: np.ndarray, k: int, spec: FilterSpec) -> np.ndarray:
        sql = binary_sql(spec, k)
        return self.ids(self.conn.execute(sql, {"q": q, "L": self.rerank}, prepare=True))


def run(ds: peers.Dataset, args) -> list[tuple]:
    from pgvector.psycopg import register_vector

    name = f"{args.database}_{ds.name}_{args.n}"
    if not peers.database_exists(name):
        sys.exit(
            f"no database {name}: build it first with benchmarks/peers.py --n {args.n} "
            f"--dist {ds.name} --build-only --engines casebase --work DIR, then tune it"
        )
    url = databases.with_database(checked_url(), name)
    conn = connect(url, autocommit=True)
    register_vector(conn)
    builds = [("probe table", PROBE, PROBE_BUILD)]
    if args.half:
        builds.append(("half-precision graph", HALF_GRAPH, HALF_GRAPH_BUILD))
    for what, relation, statements in builds:
        built = build_once(conn, relation, statements)
        if built is not None:
            print(f"[{ds.name}] {what} built in {built:.0f} s", flush=True)
    # As inside similar_to_vector: the covering index, never a bitmap or sequential scan.
    conn.execute("SET enable_bitmapscan = off")
    conn.execute("SET enable_seqscan = off")
    conn.execute("SET hnsw.iterative_scan = relaxed_order")
    conn.execute("SET hnsw.max_scan_tuples = 1000000")  # filtered walks run to k rows
    walks = [False, True] if args.half else [False]
    casebase = Casebase(Path(tempfile.gettempdir()), peers._tag(ds, args), url, exact=False)
    casebase.prepare(ds.xb, ds.meta)
    position = casebase.position
    truth = peers.truth_for(ds, ds.queries, args.k)
    rows = []
    for spec in ds.specs:
        probes: list[Engine] = [
            BareWalk(conn, position, ef, args.dim, half)
            for half in walks
            for ef in args.ef
            if spec.target == 1.0 or (args.half and spec.target >= 0.1)  # graph's filters
        ]
        if spec.target != 1.0:
            probes += [BinaryScan(conn, position, rerank) for rerank in args.L]
        engines = [casebase, *probes]
        measured = peers.measure(engines, ds, spec, truth[spec.label], args, slow=set())
        for engine in engines:
            m = measured[engine.name]
            rows.append(
                (spec.label, engine.name, m["p50_ms"], m["p95_ms"], m["recall"], m["recall_min"])
            )
    casebase.close()
    conn.close()
    return rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--n", type=int, default=1_000_000)
    p.add_argument("--dim", type=int, default=512)
    p.add_argument("--k", type=int, default=100)
    p.add_argument("--queries", type=int, default=50)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--dist", choices=(*peers.DISTRIBUTIONS, "both"), default="both")
    p.add_argument("--database", default="bench_peers", help="peers.py's database prefix")
    p.add_argument("--ef", default="10,40,100,200", help="beams of the bare walk")
    p.add_argument("--L", default="300,600,1000,2000", help="rows the binary scan re-ranks")
    p.add_argument(
        "--half",
        action="store_true",
        help="also walk a graph over the half-precision copy (built on the leaf once, "
        "minutes at 1M), filtered walks included",
    )
    args = p.parse_args()
    args.ef = [int(x) for x in args.ef.split(",")]
    args.L = [int(x) for x in args.L.split(",") if x]
    if "CASEBASE_HOME" not in os.environ:
        sys.exit("set CASEBASE_HOME to the one peers.py used (its databases are reused here)")
    for name in peers.DISTRIBUTIONS if args.dist == "both" else (args.dist,):
        ds = peers.make_dataset(name, args.n, args.dim, args.seed, args.queries, 20)
        rows = run(ds, args)
        print(f"\n{name}, {args.n:,} x {args.dim}, k = {args.k}, {args.queries} queries")
        print(f"{'filter':<7} {'method':<22} {'p50 ms':>8} {'p95 ms':>8} {'recall':>7} {'min':>5}")
        for label, method, p50, p95, rec, low in rows:
            print(f"{label:<7} {method:<22} {p50:8.2f} {p95:8.2f} {rec:7.4f} {low:5.2f}")


if __name__ == "__main__":
    main()
