"""Search benchmark: casebase against FAISS, on the same data and queries, in one run.

What is measured, and why
-------------------------
casebase promises filtered similar-case search that is *correct* (recall@100 >= 0.98
against the exact answer) and *fast* (p50 latency <= 3 x FAISS ``IndexFlatIP``, issue
#15; ``peers.py`` compares it with the vector databases a user would deploy instead)
at every filter selectivity. This script checks both promises on synthetic data:

- ``--n`` studies, one image each, clustered L2-normalised vectors of ``--dim``
  dimensions (50 clusters, the recipe of ``casebase.ingest.synthetic.make_set``,
  generated in float32 slices to bound memory) with ``make_set``'s metadata
  (modality 70 % CXR / 30 % KXR, sex, age, view, flags ``portable`` and
  ``burned_in_text``), loaded through the real binary-COPY loader
  (``synthetic.load_set``) with the HNSW indexes dropped during the load and
  built once afterwards (then ``ANALYZE``: the router reads planner estimates).
- ``--queries`` query vectors: perturbed copies of stored CXR vectors (a new
  study that resembles an old one; cosine ~0.9 to its source), the same for
  every method and selectivity, plus a few separate warm-up queries per method.
- Four filters inside the CXR modality, with selectivity ~100 %, 10 %, 1 % and
  0.1 % of the CXR rows, made of sex, an age window, views and flags (the age
  window is chosen from the data so the selectivity lands near its target; the
  measured selectivity is printed).
- Four methods, each searched one query at a time for the top ``--k``:
  1. casebase default (``search_vector(..., exact=False)``: the SQL router picks
     HNSW with iterative scan or an exact filtered scan), as shipped;
  2. casebase ``exact=True``;
  3. FAISS ``IndexFlatIP`` over the CXR vectors, the filter applied exactly with an
     ``IDSelectorBitmap``;
  4. FAISS ``IndexHNSWFlat`` (the same m and ef_construction as casebase, inner
     product) with the same selector and ``efSearch = --ef-search``.
  FAISS indexes hold only the CXR vectors, as casebase's CXR partition does, and
  search on one thread (one query is one PostgreSQL backend too; builds use all cores). The
  FAISS filter is built per query from NumPy metadata arrays, and that time is
  *included* in FAISS latencies (casebase evaluates its filter inside its query
  too); the mask time alone is reported in the footer and the JSON.
- Recall@k against the exact answer computed with NumPy over the filtered CXR
  rows (inner product, ties broken by study index); when fewer than k rows pass
  the filter, recall is over those rows. Latency: p50 and p95 with
  ``time.perf_counter`` around the whole call (casebase: client round trip over
  the local socket included). Build time and index size per method.

Run from the repository root with casebase importable (``pip install -e .`` or
``PYTHONPATH=.``), a CASEBASE_HOME of your own; the database ``--database`` is recreated::

    CASEBASE_HOME=/tmp/bench_home python benchmarks/search.py --n 20000 --dim 512
    CASEBASE_HOME=/tmp/bench_home python benchmarks/search.py --n 1000000 --dim 512 \\
        --json search_1m.json
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import sys
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import faiss
import numpy as np
import psycopg

from casebase.db import databases, migrate
from casebase.db import spaces as db_spaces
from casebase.db.connection import checked_url, connect
from casebase.ingest import synthetic
from casebase.retrieval.filters import Filters
from casebase.retrieval.search import search_vector

SPACE = "bench"
MODALITY = "CXR"
CLUSTERS = 50
QUERY_NOISE = 0.5  # |noise| / |vector|: cosine to the source study ~0.9
METHODS = ("casebase", "casebase exact", "faiss flat", "faiss hnsw")


# ------------------------------------------------------------------ data
@dataclass
class Meta:
    """NumPy metadata of the CXR rows (FAISS-side filters and ground truth)."""

    index: np.ndarray  # CXR row -> global study index
    female: np.ndarray
    age: np.ndarray  # float64, on the 0.1 grid
    view: np.ndarray  # uint8 code: index in synthetic.VIEWS
    portable: np.ndarray
    burned: np.ndarray


@dataclass(frozen=True)
class FilterSpec:
    """One filter, as casebase Filters and as a NumPy mask over Meta."""

    label: str
    target: float
    sex: str | None = None
    age: tuple[float, float] | None = None
    views: tuple[str, ...] | None = None
    exclude_flags: tuple[str, ...] = ()
    require_flags: tuple[str, ...] = ()

    def filters(self) -> Filters:
        return Filters(
            modality=MODALITY,
            sex=self.sex,
            age=self.age,
            views=self.views,
            exclude_flags=self.exclude_flags,
            require_flags=self.require_flags,
        )

    def mask(self, meta: Meta) -> np.ndarray | None:
        """Rows passing the filter, or None when it keeps every CXR row."""
        m = np.ones(len(meta.index), dtype=bool)
        touched = False
        if self.sex is not None:
            m &= meta.female if self.sex == "F" else ~meta.female
            touched = True
        if self.age is not None:
            m &= (meta.age >= self.age[0]) & (meta.age <= self.age[1])
            touched = True
        if self.views is not None:
            # An OR of equalities: np.isin takes ~9 ms on 700k rows, this ~0.3 ms per view.
            in_views = np.zeros(len(meta.view), dtype=bool)
            for view in self.views:
                in_views |= meta.view == synthetic.VIEWS.index(view)
            m &= in_views
            touched = True
        for flag in (*self.exclude_flags, *self.require_flags):
            col = meta.portable if flag == "portable" else meta.burned
            m &= ~col if flag in self.exclude_flags else col
            touched = True
        return m if touched else None


def make_data(n: int, dim: int, seed: int) -> synthetic.SyntheticSet:
    """make_set's metadata and clustered vectors, generated in float32 slices."""
    meta = synthetic.make_set(n, 1, seed=seed, clusters=CLUSTERS)
    rng = np.random.default_rng(seed + 1)
    centers = rng.standard_normal((CLUSTERS, dim), dtype=np.float32)
    assign = rng.integers(0, CLUSTERS, size=n)
    vecs = np.empty((n, dim), dtype=np.float32)
    for start in range(0, n, 50_000):
        stop = min(n, start + 50_000)
        block = centers[assign[start:stop]] + 0.6 * rng.standard_normal(
            (stop - start, dim), dtype=np.float32
        )
        block /= np.linalg.norm(block, axis=1, keepdims=True)
        vecs[start:stop] = block
    return dataclasses.replace(meta, vectors=vecs)


def cxr_meta(data: synthetic.SyntheticSet) -> Meta:
    idx = np.flatnonzero(np.asarray(data.modality) == MODALITY)
    flags = [data.flags[i] for i in idx]
    return Meta(
        index=idx,
        female=np.asarray(data.sex)[idx] == "F",
        age=np.round(np.asarray(data.age, dtype=np.float64)[idx] * 10) / 10,
        view=np.array([synthetic.VIEWS.index(data.view[i]) for i in idx], dtype=np.uint8),
        portable=np.array(["portable" in f for f in flags]),
        burned=np.array(["burned_in_text" in f for f in flags]),
    )


def age_window(ages: np.ndarray, want: int) -> tuple[float, float]:
    """An age window around the median holding about ``want`` of ``ages``.

    Bounds sit half-way between 0.1-year steps, so the float4 ages in PostgreSQL
    and the float64 ages here fall on the same side of them."""
    ages = np.sort(ages)
    want = max(1, min(want, len(ages)))
    lo = max(0, (len(ages) - want) // 2)
    return round(float(ages[lo]) - 0.05, 2), round(float(ages[lo + want - 1]) + 0.05, 2)


def make_filters(meta: Meta) -> list[FilterSpec]:
    """~100 %, 10 %, 1 %, 0.1 % of the CXR rows, from sex / age / view / flags."""
    n = len(meta.index)
    base = [
        FilterSpec("100%", 1.0),
        FilterSpec("10%", 0.1, sex="F", exclude_flags=("portable",)),
        FilterSpec(
            "1%", 0.01, sex="M", exclude_flags=("portable",), require_flags=("burned_in_text",)
        ),
        FilterSpec("0.1%", 0.001, sex="F", views=("AP",), require_flags=("portable",)),
    ]
    out = [base[0]]
    for spec in base[1:]:
        m = spec.mask(meta)
        window = age_window(meta.age[m], round(spec.target * n))
        out.append(dataclasses.replace(spec, age=window))
    return out


def make_queries(data: synthetic.SyntheticSet, meta: Meta, count: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed + 2)
    src = data.vectors[meta.index[rng.choice(len(meta.index), size=count, replace=False)]]
    noise = rng.standard_normal(src.shape, dtype=np.float32)
    noise *= QUERY_NOISE / np.linalg.norm(noise, axis=1, keepdims=True)
    q = src + noise
    return np.ascontiguousarray(q / np.linalg.norm(q, axis=1, keepdims=True), dtype=np.float32)


def exact_topk(scores: np.ndarray, ids: np.ndarray, k: int) -> np.ndarray:
    """Ids of the k highest scores, ties broken by the smaller id."""
    if len(ids) <= k:
        order = np.lexsort((ids, -scores))
        return ids[order]
    part = np.argpartition(-scores, k - 1)[:k]
    keep = np.flatnonzero(scores >= scores[part].min())
    order = np.lexsort((ids[keep], -scores[keep]))[:k]
    return ids[keep][order]


# ------------------------------------------------------------------ database
def fresh_database(name: str) -> str:
    return databases.recreate_database(checked_url(), name)


def drop_database(name: str) -> None:
    databases.drop_database(checked_url(), name)


def load_casebase(
    url: str,
    data: synthetic.SyntheticSet,
    m: int | None,
    ef_construction: int | None,
    *,
    maintenance_work_mem: str = "8GB",
) -> dict[str, float]:
    """Load with the HNSW indexes dropped, then build the CXR one once; time both.

    HNSW parameters: casebase's settings (as shipped) unless given."""
    dim = int(data.vectors.shape[1])
    n = len(data.study_ids)
    with connect(url, autocommit=True) as conn:
        with conn.transaction():
            space = db_spaces.ensure_space(conn, name=SPACE, model_name="synthetic", dim=dim)
            for modality in sorted(set(data.modality)):
                db_spaces.ensure_partition(conn, space, modality)
                db_spaces.drop_vector_index(conn, space, modality)
        done = [0, 0.0]

        def progress(count: int) -> None:
            done[0] += count
            if done[0] >= n or time.perf_counter() - done[1] > 30:
                done[1] = time.perf_counter()
                print(f"  loaded {done[0]:,}/{n:,}", flush=True)

        t0 = time.perf_counter()
        synthetic.load_set(conn, data, space_name=SPACE, batch="bench", progress=progress)
        load_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        conn.execute("ANALYZE casebase.embedding")
        analyze_s = time.perf_counter() - t0
        conn.execute(f"SET maintenance_work_mem = '{maintenance_work_mem}'")
        conn.execute("SET max_parallel_maintenance_workers = 2")
        print("  building the CXR HNSW index ...", flush=True)
        t0 = time.perf_counter()
        # None: the installation's settings, which create_vector_index reads itself.
        db_spaces.create_vector_index(conn, space, MODALITY, m=m, ef_construction=ef_construction)
        build_s = time.perf_counter() - t0
    return {"load_s": load_s, "analyze_s": analyze_s, "build_s": build_s, **describe_casebase(url)}


def describe_casebase(url: str) -> dict[str, object]:
    """Sizes, settings and versions of the benchmark database as it stands."""
    with connect(url, autocommit=True) as conn:
        space = db_spaces.get_space(conn, SPACE)
        leaf = f"embedding_s{space.space_id}_{MODALITY.lower()}"
        index_bytes, heap_bytes, options = conn.execute(
            "SELECT pg_relation_size(%s::regclass), pg_table_size(%s::regclass),"
            " (SELECT reloptions FROM pg_class WHERE oid = %s::regclass)",
            (f"casebase.{leaf}_hnsw", f"casebase.{leaf}", f"casebase.{leaf}_hnsw"),
        ).fetchone()
        built = dict(o.split("=", 1) for o in options or ())
        threshold, ef_factor = conn.execute(
            "SELECT (SELECT value FROM casebase.setting WHERE key = 'exact_threshold'),"
            " (SELECT value FROM casebase.setting WHERE key = 'hnsw_ef_factor')"
        ).fetchone()
        versions = conn.execute(
            "SELECT current_setting('server_version'), "
            "(SELECT extversion FROM pg_extension WHERE extname = 'vector'), "
            "current_setting('shared_buffers')"
        ).fetchone()
    return {
        "index_bytes": int(index_bytes),
        "heap_bytes": int(heap_bytes),
        "exact_threshold": int(threshold),
        "hnsw_ef_factor": int(ef_factor),
        "hnsw_m": int(built.get("m", 16)),
        "hnsw_ef_construction": int(built.get("ef_construction", 64)),
        "postgres": versions[0],
        "pgvector": versions[1],
        "shared_buffers": versions[2],
    }


# ------------------------------------------------------------------ measuring
# (query, k, filter) -> (global study indexes found, casebase route or FAISS mask ms)
SearchFn = Callable[[np.ndarray, int, "FilterSpec"], tuple[np.ndarray, str | float]]


@dataclass
class Result:
    recall: list[float] = field(default_factory=list)
    latency_ms: list[float] = field(default_factory=list)
    mask_ms: list[float] = field(default_factory=list)
    returned: list[int] = field(default_factory=list)
    routes: Counter = field(default_factory=Counter)

    def summary(self) -> dict[str, object]:
        lat = np.asarray(self.latency_ms)
        out: dict[str, object] = {
            "recall_mean": float(np.mean(self.recall)),
            "recall_min": float(np.min(self.recall)),
            "p50_ms": float(np.percentile(lat, 50)),
            "p95_ms": float(np.percentile(lat, 95)),
            "latency_ms": [round(x, 4) for x in self.latency_ms],
            "recall": [round(x, 4) for x in self.recall],
            "returned": self.returned,
        }
        if self.mask_ms:
            out["mask_p50_ms"] = float(np.percentile(self.mask_ms, 50))
        if self.routes:
            out["routes"] = dict(self.routes)
        return out


class FaissSearch:
    """One FAISS index; the filter mask is built per query from Meta (and timed)."""

    def __init__(self, index: faiss.Index, meta: Meta, ef_search: int | None) -> None:
        self.index = index
        self.meta = meta
        self.ef_search = ef_search

    def __call__(self, q: np.ndarray, k: int, spec: FilterSpec) -> tuple[np.ndarray, float]:
        t0 = time.perf_counter()
        mask = spec.mask(self.meta)
        params = None
        if mask is not None:
            bits = np.packbits(mask, bitorder="little")
            sel = faiss.IDSelectorBitmap(len(mask), faiss.swig_ptr(bits))
            if self.ef_search is None:
                params = faiss.SearchParameters(sel=sel)
            else:
                params = faiss.SearchParametersHNSW(sel=sel, efSearch=self.ef_search)
        elif self.ef_search is not None:
            params = faiss.SearchParametersHNSW(efSearch=self.ef_search)
        mask_ms = (time.perf_counter() - t0) * 1000
        _, labels = self.index.search(q[None, :], k, params=params)
        labels = labels[0]
        return self.meta.index[labels[labels >= 0]], mask_ms


def casebase_search(conn: psycopg.Connection, exact: bool) -> SearchFn:
    prefix = len("SYN-")

    def run(q: np.ndarray, k: int, spec: FilterSpec) -> tuple[np.ndarray, str]:
        hits = search_vector(conn, q, k=k, filters=spec.filters(), space=SPACE, exact=exact)
        route = hits[0].route if hits else "empty"
        return np.array([int(h.study_id[prefix:]) for h in hits], dtype=np.int64), route

    return run


def measure(
    fn: SearchFn,
    queries: np.ndarray,
    warmup: np.ndarray,
    truth: list[np.ndarray],
    k: int,
    spec: FilterSpec,
) -> Result:
    for q in warmup:
        fn(q, k, spec)
    res = Result()
    for q, want in zip(queries, truth, strict=True):
        t0 = time.perf_counter()
        got, extra = fn(q, k, spec)
        res.latency_ms.append((time.perf_counter() - t0) * 1000)
        res.returned.append(len(got))
        if isinstance(extra, str):
            res.routes[extra] += 1
        else:
            res.mask_ms.append(extra)
        res.recall.append(len(np.intersect1d(got, want)) / len(want) if len(want) else 1.0)
    return res


# ------------------------------------------------------------------ report
def mib(n: int) -> str:
    return f"{n / 2**20:,.0f} MiB"


def print_report(report: dict) -> None:
    s = report["settings"]
    print()
    print("casebase search benchmark — one run, same data, same queries")
    print(
        f"n={s['n']:,} studies (CXR partition {s['n_cxr']:,}), dim={s['dim']}, k={s['k']}, "
        f"queries={s['queries']} (+{s['warmup']} warm-up per method and filter), seed={s['seed']}"
    )
    print(
        f"casebase: hnsw.ef_search={s['casebase_ef_search']} untuned (`casebase tune`: its own), "
        f"exact_threshold={s['exact_threshold']:,} rows, HNSW m={s['hnsw_m']} "
        f"ef_construction={s['hnsw_ef_construction']} (both sides); "
        f"FAISS HNSW efSearch={s['faiss_ef_search']}"
    )
    print(
        f"hardware: {s['cpus']} cores, {s['ram_gib']:.0f} GiB RAM, {s['machine']}; "
        f"PostgreSQL {s['postgres']} + pgvector {s['pgvector']} (shared_buffers "
        f"{s['shared_buffers']}), FAISS {s['faiss']} (threads: build "
        f"{s['faiss_build_threads']}, search {s['faiss_search_threads']})"
    )
    print()
    print("filters (within CXR):")
    for f in report["filters"]:
        print(
            f"  {f['label']:>5}: actual {f['actual'] * 100:7.3f} % ({f['rows']:,} rows)  "
            f"{f['describe']}"
        )
    print()
    head = f"{'selectivity':>11}  {'method':<15} {'recall@' + str(s['k']):>10} {'min':>6} "
    head += f"{'p50 ms':>9} {'p95 ms':>9}  notes"
    print(head)
    print("-" * len(head) + "-" * 20)
    for f in report["filters"]:
        for method in METHODS:
            r = report["results"][f["label"]][method]
            notes = ""
            if "routes" in r:
                notes = ", ".join(f"{k}×{v}" for k, v in sorted(r["routes"].items()))
            elif "mask_p50_ms" in r:
                notes = f"mask p50 {r['mask_p50_ms']:.2f} ms"
            print(
                f"{f['label']:>11}  {method:<15} {r['recall_mean']:>10.4f} {r['recall_min']:>6.2f} "
                f"{r['p50_ms']:>9.2f} {r['p95_ms']:>9.2f}  {notes}"
            )
        print()
    print(f"{'method':<15} {'build s':>9} {'index size':>12}  what")
    for method in METHODS:
        b = report["build"][method]
        print(f"{method:<15} {b['build_s']:>9.1f} {mib(b['bytes']):>12}  {b['what']}")
    print()
    print(
        "Latency: one query at a time, time.perf_counter around the whole call; casebase "
        "includes the client round trip and the router's EXPLAIN; FAISS INCLUDES building the "
        "filter mask from NumPy metadata per query (its p50 shown as 'mask p50')."
    )
    print(
        f"Recall: against the exact top-{s['k']} by NumPy over the filtered CXR rows, ties by "
        "id ('min' = worst query). casebase load (binary COPY, no HNSW): "
        f"{s['load_s']:.0f} s; ANALYZE {s['analyze_s']:.1f} s."
    )
    print()
    print("targets (casebase default mode):")
    for f in report["filters"]:
        r = report["results"][f["label"]]
        cb, flat = r["casebase"], r["faiss flat"]
        ratio = cb["p50_ms"] / flat["p50_ms"]
        ok_r = "met" if cb["recall_mean"] >= 0.98 else "NOT met"
        ok_l = "met" if ratio <= 3 else "NOT met"
        print(
            f"  {f['label']:>5}: recall {cb['recall_mean']:.4f} >= 0.98 {ok_r}; "
            f"p50 {cb['p50_ms']:.2f} ms = {ratio:.2f} x FAISS flat ({flat['p50_ms']:.2f} ms) "
            f"<= 3 {ok_l}"
        )


# ------------------------------------------------------------------ main
def casebase_ef_search(k: int, factor: int) -> int:
    """hnsw.ef_search as casebase.similar_to_vector sets it on a leaf never tuned
    (revision 0005's default; ``casebase tune`` measures a leaf's own)."""
    k_img = min(k * 2, 2000)
    return min(1000, max(k_img * factor, 200))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=20_000, help="studies (default 20000)")
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--queries", type=int, default=50)
    parser.add_argument("--warmup", type=int, default=3, help="warm-up queries per method")
    parser.add_argument("--k", type=int, default=100)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--ef-search",
        type=int,
        default=None,
        help="FAISS HNSW efSearch (default: what casebase uses for this k)",
    )
    parser.add_argument(
        "--hnsw-m",
        type=int,
        default=None,
        help="HNSW m for both casebase and FAISS (default: casebase's setting)",
    )
    parser.add_argument(
        "--hnsw-ef-construction",
        type=int,
        default=None,
        help="HNSW ef_construction for both (default: casebase's setting)",
    )
    parser.add_argument("--database", default="bench_search", help="recreated each run")
    parser.add_argument("--keep", action="store_true", help="keep the database afterwards")
    parser.add_argument(
        "--reuse",
        action="store_true",
        help="search the database an earlier --keep run loaded (same --n, --dim, --seed) "
        "instead of recreating it; its load and build are then not timed",
    )
    parser.add_argument("--json", type=Path, default=None, help="write the raw numbers here")
    args = parser.parse_args()
    if "CASEBASE_HOME" not in os.environ:
        sys.exit("set CASEBASE_HOME to a directory of your own (the embedded server lives there)")

    t_all = time.perf_counter()
    print(f"generating {args.n:,} x {args.dim} vectors ...", flush=True)
    data = make_data(args.n, args.dim, args.seed)
    meta = cxr_meta(data)
    specs = make_filters(meta)
    total = args.queries + args.warmup
    all_q = make_queries(data, meta, total, args.seed)
    queries, warmup = all_q[: args.queries], all_q[args.queries :]

    if args.reuse:
        print(f"reusing database {args.database!r} (load and build not timed) ...", flush=True)
        url = databases.with_database(checked_url(), args.database)
        migrate.upgrade(url)
        pg = {
            "load_s": float("nan"),
            "analyze_s": float("nan"),
            "build_s": float("nan"),
            **describe_casebase(url),
        }
    else:
        print(f"loading into database {args.database!r} ...", flush=True)
        url = fresh_database(args.database)
        pg = load_casebase(url, data, args.hnsw_m, args.hnsw_ef_construction)
        print(f"  load {pg['load_s']:.0f} s, HNSW build {pg['build_s']:.0f} s", flush=True)

    xb = np.ascontiguousarray(data.vectors[meta.index])
    del data  # the CXR vectors are all that is needed from here on
    print("building FAISS indexes ...", flush=True)
    build_threads = faiss.omp_get_max_threads()
    t0 = time.perf_counter()
    flat = faiss.IndexFlatIP(args.dim)
    flat.add(xb)
    flat_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    hnsw = faiss.IndexHNSWFlat(args.dim, int(pg["hnsw_m"]), faiss.METRIC_INNER_PRODUCT)
    hnsw.hnsw.efConstruction = int(pg["hnsw_ef_construction"])
    hnsw.add(xb)
    hnsw_s = time.perf_counter() - t0
    graph = hnsw.hnsw
    hnsw_bytes = (
        xb.nbytes
        + faiss.vector_to_array(graph.neighbors).nbytes
        + faiss.vector_to_array(graph.levels).nbytes
        + faiss.vector_to_array(graph.offsets).nbytes
    )
    print(f"  flat {flat_s:.1f} s, HNSW {hnsw_s:.0f} s", flush=True)

    print("exact answers (NumPy) ...", flush=True)
    masks = {spec.label: spec.mask(meta) for spec in specs}
    truth: dict[str, list[np.ndarray]] = {spec.label: [] for spec in specs}
    for q in queries:
        scores = xb @ q
        for spec in specs:
            m = masks[spec.label]
            ids = np.arange(len(xb)) if m is None else np.flatnonzero(m)
            truth[spec.label].append(meta.index[exact_topk(scores[ids], ids, args.k)])

    # One query at a time is single-threaded work (a PostgreSQL backend is one process too);
    # with 2 OpenMP threads a single FAISS query spends ~30 ms handing off between threads
    # on a busy 2-core machine, which would flatter casebase. Builds above used all cores.
    faiss.omp_set_num_threads(1)
    conn = connect(url, autocommit=True)
    casebase_ef = casebase_ef_search(args.k, pg["hnsw_ef_factor"])
    faiss_ef = args.ef_search or casebase_ef
    methods = {
        "casebase": casebase_search(conn, exact=False),
        "casebase exact": casebase_search(conn, exact=True),
        "faiss flat": FaissSearch(flat, meta, None),
        "faiss hnsw": FaissSearch(hnsw, meta, faiss_ef),
    }
    results: dict[str, dict[str, dict]] = {}
    for spec in specs:
        results[spec.label] = {}
        for method, fn in methods.items():
            print(f"  {spec.label:>5} {method} ...", flush=True)
            res = measure(fn, queries, warmup, truth[spec.label], args.k, spec)
            results[spec.label][method] = res.summary()
    conn.close()
    if not (args.keep or args.reuse):
        drop_database(args.database)

    n_cxr = len(meta.index)
    filters = []
    for spec in specs:
        m = masks[spec.label]
        rows = n_cxr if m is None else int(m.sum())
        describe = spec.filters().describe()
        filters.append(
            {
                "label": spec.label,
                "target": spec.target,
                "actual": rows / n_cxr,
                "rows": rows,
                "describe": ", ".join(f"{k}={v}" for k, v in describe.items()),
            }
        )
    report = {
        "settings": {
            "n": args.n,
            "n_cxr": n_cxr,
            "dim": args.dim,
            "k": args.k,
            "queries": args.queries,
            "warmup": args.warmup,
            "seed": args.seed,
            "casebase_ef_search": casebase_ef,
            "faiss_ef_search": faiss_ef,
            "cpus": os.cpu_count(),
            "ram_gib": os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30,
            "machine": platform.machine(),
            "faiss": faiss.__version__,
            "faiss_build_threads": build_threads,
            "faiss_search_threads": faiss.omp_get_max_threads(),
            "faiss_mask_time": "included in FAISS latency",
            **{k: v for k, v in pg.items() if k not in ("build_s", "index_bytes")},
            "total_s": time.perf_counter() - t_all,
        },
        "filters": filters,
        "results": results,
        "build": {
            "casebase": {
                "build_s": pg["build_s"],
                "bytes": pg["index_bytes"],
                "what": "pgvector HNSW on the CXR leaf (pg_relation_size; vectors in the index)",
            },
            "casebase exact": {
                "build_s": 0.0,
                "bytes": pg["heap_bytes"],
                "what": "no index: the CXR leaf heap (pg_table_size), B-tree/GIN filters aside",
            },
            "faiss flat": {"build_s": flat_s, "bytes": xb.nbytes, "what": "IndexFlatIP, CXR"},
            "faiss hnsw": {
                "build_s": hnsw_s,
                "bytes": int(hnsw_bytes),
                "what": "IndexHNSWFlat, CXR (vectors + graph)",
            },
        },
    }
    print_report(report)
    if args.json:
        args.json.write_text(json.dumps(report, indent=1))
        print(f"\nraw numbers: {args.json}")


if __name__ == "__main__":
    main()
