"""HNSW over ``vector`` (as shipped) against HNSW over ``halfvec``, same leaf, same queries.

The retrieval issue asks for vectors inline or as ``halfvec`` "if it measures better".
This script measures it on the database ``search.py --keep`` leaves behind, with
``search.py``'s own data, filters and queries (regenerated from the same seed, so the
NumPy ground truth is the one ``search.py`` scores against):

- it builds (or reuses) ``<leaf>_hnsw_half``: an HNSW index on ``vec::halfvec(dim)``
  with the same m / ef_construction as the shipped index, beside it;
- for the filters that take casebase's HNSW route (100 % and 10 %), it runs the route's
  query shape (filter in the WHERE, iterative scan ``relaxed_order``, 2k candidates,
  ``max_scan_tuples`` sized as ``similar_to_vector`` sizes it, then an exact re-rank
  on the full-precision vectors) once per index and ef_search;
- two passes over every configuration, interleaved; the second (warm) pass is printed;
- statements are never prepared (``prepare=False``): a generic plan cannot see the
  filter's values, and for the 10 % filter it drops the HNSW index for a filtered scan,
  where ``similar_to_vector``'s ``EXECUTE`` always plans with the values.

Run from the repository root, after a ``search.py --keep`` run with the same --n/--dim::

    CASEBASE_HOME=/tmp/bench_home python benchmarks/halfvec.py --n 1000000 --dim 512 \\
        --database bench_search

``--drop-index`` removes the halfvec index afterwards (it is ~40 % of the HNSW's size).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np
from pgvector import Vector

sys.path.insert(0, str(Path(__file__).resolve().parent))

from search import (
    MODALITY,
    SPACE,
    FilterSpec,
    cxr_meta,
    describe_casebase,
    exact_topk,
    make_data,
    make_filters,
    make_queries,
)

from casebase.db import spaces as db_spaces
from casebase.db.connection import checked_url, connect
from casebase.db.databases import with_database


def where_clause(spec: FilterSpec) -> tuple[str, list[object]]:
    """The filter as SQL with parameters, as similar_to_vector writes it."""
    cond, params = ["true"], []
    if spec.sex is not None:
        cond.append("e.sex = %s")
        params.append(spec.sex)
    if spec.age is not None:
        cond += ["e.age >= %s", "e.age <= %s"]
        params += list(spec.age)
    if spec.views is not None:
        cond.append("e.view = ANY (%s)")
        params.append(list(spec.views))
    if spec.exclude_flags:
        cond.append("NOT (e.flags && %s::text[])")
        params.append(list(spec.exclude_flags))
    if spec.require_flags:
        cond.append("e.flags @> %s::text[]")
        params.append(list(spec.require_flags))
    return " AND ".join(cond), params


def ensure_half_index(conn, leaf: str, dim: int, m: int, ef_construction: int) -> float:
    """Seconds to build the halfvec index (the shipped index's m and ef_construction),
    or NaN when it was already there."""
    name = f"{leaf}_hnsw_half"
    if conn.execute("SELECT to_regclass(%s)", (f"casebase.{name}",)).fetchone()[0]:
        return float("nan")
    conn.execute("SET maintenance_work_mem = '8GB'")
    conn.execute("SET max_parallel_maintenance_workers = 2")
    print(f"  building {name} ...", flush=True)
    start = time.perf_counter()
    conn.execute(
        f'CREATE INDEX "{name}" ON casebase."{leaf}" USING hnsw '
        f"((vec::halfvec({dim})) halfvec_cosine_ops) "
        f"WITH (m = {int(m)}, ef_construction = {int(ef_construction)})"
    )
    return time.perf_counter() - start


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=20_000)
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--queries", type=int, default=50)
    parser.add_argument("--k", type=int, default=100)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--ef", type=int, nargs="+", default=[800, 1000])
    parser.add_argument("--database", default="bench_search", help="made by search.py --keep")
    parser.add_argument("--drop-index", action="store_true")
    args = parser.parse_args()

    print(f"generating search.py's data (n={args.n:,}, dim={args.dim}, seed={args.seed}) ...")
    data = make_data(args.n, args.dim, args.seed)
    meta = cxr_meta(data)
    specs = [s for s in make_filters(meta) if s.target >= 0.1]  # the HNSW-route filters
    queries = make_queries(data, meta, args.queries, args.seed)
    study_ids = np.asarray(data.study_ids)
    cxr_vectors = data.vectors[meta.index]

    url = with_database(checked_url(), args.database)
    with connect(url, autocommit=True) as conn:
        space = db_spaces.get_space(conn, SPACE)
        leaf = f"embedding_s{space.space_id}_{MODALITY.lower()}"
        rows = conn.execute(f'SELECT count(*) FROM casebase."{leaf}"').fetchone()[0]
        if rows != len(meta.index):
            print(
                f"{args.database} holds {rows:,} CXR rows, the data has {len(meta.index):,}: "
                "run search.py --keep with the same --n/--dim/--seed first",
                file=sys.stderr,
            )
            return 2
        shipped = describe_casebase(url)
        build_s = ensure_half_index(
            conn, leaf, args.dim, shipped["hnsw_m"], shipped["hnsw_ef_construction"]
        )
        sizes = {
            kind: conn.execute(
                "SELECT pg_relation_size(%s::regclass)", (f"casebase.{leaf}_{suffix}",)
            ).fetchone()[0]
            for kind, suffix in (("vector", "hnsw"), ("halfvec", "hnsw_half"))
        }
        k_img = min(args.k * 2, 2000)
        configs = [(kind, ef) for ef in args.ef for kind in ("vector", "halfvec")]
        results: dict[tuple[str, str, int], tuple[list[float], list[float]]] = {}
        for spec in specs:
            where, params = where_clause(spec)
            mask = spec.mask(meta)
            rows_in = np.flatnonzero(mask) if mask is not None else np.arange(len(meta.index))
            truth = [
                set(study_ids[meta.index[exact_topk(cxr_vectors[rows_in] @ q, rows_in, args.k)]])
                for q in queries
            ]
            scan = max(
                20_000,
                min(2_000_000, int(k_img * 20 / max(len(rows_in) / len(meta.index), 0.0005))),
            )
            for rep in range(2):
                for kind, ef in configs:
                    cast = f"{kind}({args.dim})"
                    sql = (
                        "WITH cand AS MATERIALIZED ("
                        f" SELECT e.study_id, e.vec::vector({args.dim}) <=> %s AS d"
                        f' FROM casebase."{leaf}" e WHERE {where}'
                        f" ORDER BY e.vec::{cast} <=> %s::vector({args.dim})::{cast}"
                        f" LIMIT {k_img})"
                        f" SELECT study_id FROM cand ORDER BY d LIMIT {args.k}"
                    )
                    lat, rec = [], []
                    for q, want in zip(queries, truth, strict=True):
                        with conn.transaction():
                            conn.execute(f"SET LOCAL hnsw.ef_search = {int(ef)}")
                            conn.execute("SET LOCAL hnsw.iterative_scan = relaxed_order")
                            conn.execute(f"SET LOCAL hnsw.max_scan_tuples = {scan}")
                            start = time.perf_counter()
                            got = conn.execute(
                                sql, [Vector(q), *params, Vector(q)], prepare=False
                            ).fetchall()
                            lat.append((time.perf_counter() - start) * 1000)
                        rec.append(len({r[0] for r in got} & want) / len(want))
                    if rep:
                        results[(spec.label, kind, ef)] = (lat, rec)
        if args.drop_index:
            conn.execute(f'DROP INDEX casebase."{leaf}_hnsw_half"')

    print(
        f"\nHNSW route, {args.queries} queries, k={args.k} ({k_img} candidates re-ranked "
        "exactly), second (warm) pass"
    )
    print(
        f"{'filter':>7}  {'index':8} {'ef':>5}  {'recall@k':>8} {'min':>5}  "
        f"{'p50 ms':>7} {'p95 ms':>7}"
    )
    print("-" * 58)
    for (label, kind, ef), (lat, rec) in results.items():
        print(
            f"{label:>7}  {kind:8} {ef:>5}  {np.mean(rec):8.4f} {min(rec):5.2f}  "
            f"{statistics.median(lat):7.2f} {np.percentile(lat, 95):7.2f}"
        )
    print(
        f"\nindex size: vector {sizes['vector'] / 2**20:,.0f} MiB, "
        f"halfvec {sizes['halfvec'] / 2**20:,.0f} MiB; halfvec build "
        + ("reused (built before this run)" if np.isnan(build_s) else f"{build_s:,.1f} s")
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
