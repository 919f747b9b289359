"""casebase against the vector databases a user would deploy instead, in one run.

Same rows, same filters, same queries for every engine: the CXR rows of ``search.py``'s
synthetic set (``--n`` studies, 70 % CXR, one image each, its metadata: sex, age, view,
quality flags) with vectors from one of two distributions:

- ``clustered``: ``search.py``'s (50 Gaussian clusters in ``--dim`` dimensions, heavy
  isotropic noise: hard for every HNSW graph); queries are stored CXR vectors plus noise;
- ``lowdim``: ``normalize(A z + e)``, ``z`` a 50-component Gaussian mixture in 32
  dimensions, ``A`` a random ``dim x 32`` matrix, ``e`` small isotropic noise (closer to
  real image embeddings, whose intrinsic dimension is low); queries are new draws near a
  stored row's ``z`` (on the manifold, as a new image is).

The engines (``peer_engines.py``): casebase as shipped (the SQL router) and with
``exact=True``; FAISS ``IndexFlatIP`` and ``IndexHNSWFlat``; Chroma; LanceDB without a
vector index and with HNSW (prefilter, scalar indexes on the filter columns); Milvus Lite
(HNSW); usearch (post-filter: its Python API has no filtered search). HNSW m=32,
ef_construction=128 wherever settable. Each peer's search knob (its HNSW beam) is tuned per
filter on separate tuning queries: the smallest value whose mean recall@k reaches
``--recall-target`` (0.95), or its largest value if none does. casebase is not tuned
here: it runs with what ``casebase tune`` calibrated from the leaf's own vectors.

Measured per filter (selectivity ~100 %, 10 %, 1 %, 0.1 % of the CXR rows): recall@k
against NumPy's exact answer over the filtered rows, p50/p95 latency (one query at a time,
``time.perf_counter`` around the whole call; the engines interleaved query by query,
``--repeats`` passes, so a burst of load on a shared machine lands on all of them), and
CPU milliseconds per query (this process, plus the PostgreSQL backend for casebase), which
a busy machine inflates less than wall time. Build time and index size per engine; then
casebase with 1, 4 and 16 concurrent clients (threads, one connection each).

Indexes are kept under ``--work`` and casebase's databases on the embedded server, and both
are reused by later runs with the same ``--n``/``--dim``/``--seed`` (build times are those of
the run that built them)::

    CASEBASE_HOME=/tmp/bench_home python benchmarks/peers.py --n 100000 \\
        --work /tmp/peers --json peers_100k.json
"""

from __future__ import annotations

import argparse
import concurrent.futures
import dataclasses
import json
import os
import platform
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

import search
from peer_engines import PEERS, Casebase, Engine
from search import FilterSpec, Meta

from casebase.db import databases
from casebase.db.connection import checked_url, connect
from casebase.ingest import synthetic
from casebase.retrieval.tune import smallest_reaching

DISTRIBUTIONS = ("clustered", "lowdim")
LATENT_DIM = 32
LATENT_COMPONENTS = 50


# ------------------------------------------------------------------ data
def lowdim_data(n: int, dim: int, seed: int) -> tuple[synthetic.SyntheticSet, dict]:
    """make_set's metadata with vectors normalize(A z + e); the generator's parts are
    returned for the queries."""
    base = synthetic.make_set(n, 1, seed=seed, clusters=1)
    rng = np.random.default_rng(seed + 11)
    centers = rng.standard_normal((LATENT_COMPONENTS, LATENT_DIM)).astype(np.float32)
    a = (rng.standard_normal((dim, LATENT_DIM)) / np.sqrt(LATENT_DIM)).astype(np.float32)
    z = centers[rng.integers(0, LATENT_COMPONENTS, size=n)]
    z += 0.5 * rng.standard_normal(z.shape, dtype=np.float32)
    vecs = np.empty((n, dim), dtype=np.float32)
    for start in range(0, n, 50_000):
        stop = min(n, start + 50_000)
        block = z[start:stop] @ a.T
        block += 0.2 * rng.standard_normal(block.shape, dtype=np.float32)
        vecs[start:stop] = block / np.linalg.norm(block, axis=1, keepdims=True)
    return dataclasses.replace(base, vectors=vecs), {"z": z, "a": a}


def lowdim_queries(parts: dict, meta: Meta, count: int, seed: int) -> np.ndarray:
    """New images near stored ones: a stored CXR row's z moved a little, through A."""
    rng = np.random.default_rng(seed + 12)
    src = parts["z"][meta.index[rng.choice(len(meta.index), size=count, replace=False)]]
    z = src + 0.35 * rng.standard_normal(src.shape).astype(np.float32)
    q = z @ parts["a"].T + 0.2 * rng.standard_normal((count, parts["a"].shape[0]))
    q = q.astype(np.float32)
    return np.ascontiguousarray(q / np.linalg.norm(q, axis=1, keepdims=True))


@dataclass
class Dataset:
    name: str
    data: synthetic.SyntheticSet
    meta: Meta
    specs: list[FilterSpec]
    queries: np.ndarray
    tuning: np.ndarray
    xb: np.ndarray = field(init=False)

    def __post_init__(self) -> None:
        self.xb = np.ascontiguousarray(self.data.vectors[self.meta.index])


def make_dataset(name: str, n: int, dim: int, seed: int, count: int, tuning: int) -> Dataset:
    if name == "clustered":
        data = search.make_data(n, dim, seed)
        meta = search.cxr_meta(data)
        q = search.make_queries(data, meta, count + tuning, seed)
    else:
        data, parts = lowdim_data(n, dim, seed)
        meta = search.cxr_meta(data)
        q = lowdim_queries(parts, meta, count + tuning, seed)
    return Dataset(name, data, meta, search.make_filters(meta), q[:count], q[count:])


def truth_for(ds: Dataset, queries: np.ndarray, k: int) -> dict[str, list[np.ndarray]]:
    """Exact top-k positions (indexes into ds.xb) per filter and query."""
    masks = {s.label: s.mask(ds.meta) for s in ds.specs}
    out: dict[str, list[np.ndarray]] = {s.label: [] for s in ds.specs}
    for q in queries:
        scores = ds.xb @ q
        for spec in ds.specs:
            m = masks[spec.label]
            ids = np.arange(len(ds.xb)) if m is None else np.flatnonzero(m)
            out[spec.label].append(search.exact_topk(scores[ids], ids, k))
    return out


def recall(got: np.ndarray, want: np.ndarray) -> float:
    return len(np.intersect1d(got, want)) / len(want) if len(want) else 1.0


# ------------------------------------------------------------------ casebase database
def database_exists(name: str) -> bool:
    """Whether the embedded server holds database ``name``."""
    with connect(databases.with_database(checked_url(), "postgres"), autocommit=True) as c:
        return bool(c.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone())


def casebase_database(ds: Dataset, args) -> tuple[str, dict]:
    """The dataset's database, loaded (or reused) and calibrated by ``casebase tune``."""
    name = f"{args.database}_{ds.name}_{args.n}"
    url = databases.with_database(checked_url(), name)
    info: dict = {}
    if database_exists(name) and args.reuse:
        from casebase.db import migrate

        migrate.upgrade(url)
        info.update(load_s=float("nan"), build_s=ensure_vector_index(url, args))
    else:
        print(f"  loading {ds.name} into {name} ...", flush=True)
        url = databases.recreate_database(checked_url(), name)
        info.update(
            search.load_casebase(
                url, ds.data, None, None, maintenance_work_mem=args.maintenance_work_mem
            )
        )
        with connect(url, autocommit=True) as conn:  # what autovacuum does after a load
            conn.execute("VACUUM (ANALYZE) casebase.embedding")
    info.update(calibrate(url, args))
    info.update(casebase_sizes(url))
    return url, info


def ensure_vector_index(url: str, args) -> float:
    """Build the CXR leaf's HNSW index if a reused database lacks it (an interrupted
    build); its seconds, or NaN when it was there."""
    from casebase.db import spaces

    with connect(url, autocommit=True) as conn:
        space = spaces.get_space(conn, search.SPACE)
        index = f"casebase.embedding_s{space.space_id}_{search.MODALITY.lower()}_hnsw"
        if conn.execute("SELECT to_regclass(%s)", (index,)).fetchone()[0]:
            return float("nan")
        print(f"  building {index} ...", flush=True)
        conn.execute(f"SET maintenance_work_mem = '{args.maintenance_work_mem}'")
        t0 = time.perf_counter()
        spaces.create_vector_index(conn, space, search.MODALITY)
        seconds = time.perf_counter() - t0
        conn.execute("VACUUM (ANALYZE) casebase.embedding")
    return seconds


def calibrate(url: str, args) -> dict:
    """``casebase tune`` on the CXR leaf, unless a calibration is stored (``--retune``)."""
    try:
        from casebase.retrieval.tune import tune, tuned
    except ImportError:  # an older casebase: nothing to calibrate
        return {"tune_s": float("nan")}
    with connect(url) as conn:
        stored = [v for leaf, v in tuned(conn).items() if leaf.endswith("_cxr")]
        if stored and not args.retune:
            return {"tune_s": stored[0]["seconds"], "tuned": [json.dumps(stored[0])]}
        t0 = time.perf_counter()
        report = tune(conn, space=search.SPACE, modality=search.MODALITY)
        conn.commit()
    return {"tune_s": time.perf_counter() - t0, "tuned": [r.describe() for r in report]}


def casebase_sizes(url: str) -> dict:
    with connect(url, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT c.relname, pg_relation_size(c.oid), pg_table_size(c.oid) FROM pg_class c "
            "WHERE c.relnamespace = 'casebase'::regnamespace AND c.relname LIKE "
            "'embedding\\_s%\\_cxr%' ESCAPE '\\'"
        ).fetchall()
    return {"relations": {r[0]: int(r[2] if r[0].endswith("_cxr") else r[1]) for r in rows}}


# ------------------------------------------------------------------ measuring
class Meter:
    """CPU time of this process and, for casebase, of its PostgreSQL backend."""

    def __init__(self, engine: Engine) -> None:
        pid = engine.conn.info.backend_pid if isinstance(engine, Casebase) else None
        self.stat = Path(f"/proc/{pid}/schedstat") if pid else None
        if self.stat is not None and not self.stat.exists():
            self.stat = None  # a server elsewhere: client CPU only

    def now(self) -> float:
        server = int(self.stat.read_text().split()[0]) / 1e9 if self.stat else 0.0
        return time.process_time() + server


@dataclass
class Runs:
    recall: list[float] = field(default_factory=list)
    wall_ms: list[float] = field(default_factory=list)
    cpu_ms: list[float] = field(default_factory=list)
    routes: dict[str, int] = field(default_factory=dict)

    def summary(self) -> dict:
        return {
            "recall": float(np.mean(self.recall)),
            "recall_min": float(np.min(self.recall)),
            "p50_ms": float(np.percentile(self.wall_ms, 50)),
            "p95_ms": float(np.percentile(self.wall_ms, 95)),
            "cpu_p50_ms": float(np.percentile(self.cpu_ms, 50)),
            **({"routes": self.routes} if self.routes else {}),
        }


def tune_knob(engine: Engine, ds: Dataset, spec: FilterSpec, truth, k: int, target: float):
    """The smallest knob value whose mean recall on the tuning queries reaches target
    (recall grows with the beam: bisection), the recall there, and the seconds a query
    took at it."""
    if not engine.knobs:
        return None, None, None
    seconds: dict[int, float] = {}

    def at(i: int) -> float:
        engine.set_knob(engine.knobs[i])
        t0 = time.perf_counter()
        got = [recall(engine.search(q, k, spec), t) for q, t in zip(ds.tuning, truth, strict=True)]
        seconds[i] = (time.perf_counter() - t0) / len(got)
        return float(np.mean(got))

    i, got = smallest_reaching(len(engine.knobs), at, target)
    return engine.knobs[i], got, seconds[i]


def measure(engines: list[Engine], ds: Dataset, spec: FilterSpec, truth, args, slow) -> dict:
    """Every query on every engine, interleaved; ``args.repeats`` passes (one for the
    engines in ``slow``, whose queries take longer than --slow-ms)."""
    runs = {e.name: Runs() for e in engines}
    meters = {e.name: Meter(e) for e in engines}
    for q in ds.tuning[:3]:  # warm-up
        for e in engines:
            e.search(q, args.k, spec)
    for rep in range(args.repeats):
        active = [e for e in engines if rep == 0 or e.name not in slow]
        for i, (q, want) in enumerate(zip(ds.queries, truth, strict=True)):
            order = active[(i + rep) % len(active) :] + active[: (i + rep) % len(active)]
            for e in order:
                c0 = meters[e.name].now()
                t0 = time.perf_counter()
                got = e.search(q, args.k, spec)
                wall = (time.perf_counter() - t0) * 1000
                r = runs[e.name]
                r.cpu_ms.append((meters[e.name].now() - c0) * 1000)
                r.wall_ms.append(wall)
                r.recall.append(recall(got, want))
                if isinstance(e, Casebase):
                    r.routes[e.last_route] = r.routes.get(e.last_route, 0) + 1
    return {
        name: r.summary() | {"passes": 1 if name in slow else args.repeats}
        for name, r in runs.items()
    }


def concurrency(url: str, ds: Dataset, spec: FilterSpec, clients: int, per_client: int, k: int):
    """casebase under ``clients`` concurrent clients (threads, one connection each)."""
    from casebase.retrieval.search import search_vector

    conns = [connect(url, autocommit=True) for _ in range(clients)]
    latencies: list[float] = []
    lock = threading.Lock()
    start = threading.Barrier(clients)

    def client(i: int) -> None:
        mine = []
        start.wait()
        for j in range(per_client):
            q = ds.queries[(i * 7 + j) % len(ds.queries)]
            t0 = time.perf_counter()
            search_vector(conns[i], q, k=k, filters=spec.filters(), space=search.SPACE, exact=False)
            mine.append((time.perf_counter() - t0) * 1000)
        with lock:
            latencies.extend(mine)

    t0 = time.perf_counter()
    with concurrent.futures.ThreadPoolExecutor(clients) as pool:
        list(pool.map(client, range(clients)))
    wall = time.perf_counter() - t0
    for c in conns:
        c.close()
    return {
        "clients": clients,
        "p50_ms": float(np.percentile(latencies, 50)),
        "p95_ms": float(np.percentile(latencies, 95)),
        "qps": len(latencies) / wall,
    }


# ------------------------------------------------------------------ one dataset
def _tag(ds: Dataset, args) -> str:
    """The name of a dataset's indexes under ``--work``: built once, reused by later runs."""
    return f"{ds.name}-{args.n}-{args.dim}-{args.seed}"


def _prepared_peer(name: str, ds: Dataset, args) -> Engine:
    """Peer ``name`` with its index of ``ds`` built or reused, saying which."""
    engine = PEERS[name](args.work, _tag(ds, args))
    print(f"  {name}: ", end="", flush=True)
    engine.prepare(ds.xb, ds.meta)
    print("reused" if engine.reused else f"built in {engine.build_s:.0f} s", flush=True)
    return engine


def build_only(ds: Dataset, args) -> None:
    """Build (or check) every index of ``ds``, one engine in memory at a time."""
    for name in args.engines:
        if name in PEERS:
            _prepared_peer(name, ds, args).close()
    if "casebase" in args.engines:
        print(f"[{ds.name}] casebase database ...", flush=True)
        _, db = casebase_database(ds, args)
        print(f"  {db.get('tuned')}", flush=True)


def run_dataset(ds: Dataset, args) -> dict:
    print(f"[{ds.name}] casebase database ...", flush=True)
    url, db = casebase_database(ds, args)
    ds.data = dataclasses.replace(ds.data, vectors=ds.data.vectors[:0])  # xb holds the CXR rows
    print(f"[{ds.name}] peers ...", flush=True)
    tag = _tag(ds, args)
    engines: list[Engine] = [Casebase(args.work, tag, url, exact=False)]
    if "casebase exact" in args.engines:
        engines.append(Casebase(args.work, tag, url, exact=True))
    for name in args.engines:
        if name in PEERS:
            engines.append(_prepared_peer(name, ds, args))
    for e in engines[:2]:
        e.prepare(ds.xb, ds.meta)
    truth = truth_for(ds, ds.queries, args.k)
    tuning_truth = truth_for(ds, ds.tuning, args.k)
    results: dict = {}
    for spec in ds.specs:
        knobs, slow = {}, set()
        for e in engines:
            value, got, seconds = tune_knob(
                e, ds, spec, tuning_truth[spec.label], args.k, args.recall_target
            )
            knobs[e.name] = value
            if value is not None:
                print(
                    f"  {spec.label:>5} {e.name}: {e.knob_name} {value} (tuning recall {got:.3f})"
                )
                e.set_knob(value)
                if seconds * 1000 > args.slow_ms:
                    slow.add(e.name)
        print(f"  {spec.label:>5} measuring ...", flush=True)
        res = measure(engines, ds, spec, truth[spec.label], args, slow)
        for name, value in knobs.items():
            res[name]["knob"] = value
        results[spec.label] = res
    conc = {}
    if args.concurrency:
        for spec in ds.specs:
            print(f"  {spec.label:>5} concurrency ...", flush=True)
            conc[spec.label] = [
                concurrency(url, ds, spec, c, args.per_client, args.k) for c in args.concurrency
            ]
    build = {
        e.name: {
            "build_s": e.build_s,
            "bytes": e.size_bytes(),
            "strategy": e.strategy,
            "knob": e.knob_name,
            "reused": e.reused,
        }
        for e in engines
    }
    for e in engines:
        e.close()
    n_cxr = len(ds.meta.index)
    filters = []
    for spec in ds.specs:
        m = spec.mask(ds.meta)
        rows = n_cxr if m is None else int(m.sum())
        filters.append({"label": spec.label, "rows": rows, "share": rows / n_cxr})
    return {
        "casebase": db,
        "filters": filters,
        "results": results,
        "concurrency": conc,
        "build": build,
    }


# ------------------------------------------------------------------ report
def print_dataset(name: str, rep: dict, args) -> None:
    print()
    rows = rep["filters"][0]["rows"]
    print(
        f"== {name}: {args.n:,} studies, CXR rows {rows:,}, dim {args.dim}, k {args.k}, "
        f"{args.queries} queries x {args.repeats} passes"
    )
    engines = list(rep["build"])
    head = f"{'filter':>6}  {'engine':<15} {'recall':>7} {'min':>5} {'p50 ms':>8} {'p95 ms':>8}"
    head += f" {'cpu ms':>7}  knob / routes"
    print(head)
    print("-" * (len(head) + 12))
    for f in rep["filters"]:
        for e in engines:
            r = rep["results"][f["label"]][e]
            extra = ""
            if "routes" in r:
                extra = ", ".join(f"{k}x{v}" for k, v in sorted(r["routes"].items()))
            elif r.get("knob") is not None:
                extra = f"{rep['build'][e]['knob']}={r['knob']}"
            print(
                f"{f['label']:>6}  {e:<15} {r['recall']:>7.4f} {r['recall_min']:>5.2f} "
                f"{r['p50_ms']:>8.2f} {r['p95_ms']:>8.2f} {r['cpu_p50_ms']:>7.2f}  {extra}"
            )
        print()
    print(f"{'engine':<15} {'build s':>9} {'size MiB':>9}  filter strategy")
    for e, b in rep["build"].items():
        size = b["bytes"] / 2**20
        if e.startswith("casebase"):
            rel = rep["casebase"]["relations"]
            size = sum(rel.values()) / 2**20
        seconds = b["build_s"]
        if e == "casebase":
            seconds = rep["casebase"].get("build_s", float("nan"))  # the HNSW build
        built = f"{seconds:.0f}" + ("*" if b["reused"] else "")
        print(f"{e:<15} {built:>9} {size:>9,.0f}  {b['strategy']}")
    db = rep["casebase"]
    print(
        "casebase: the CXR leaf, its HNSW and filter indexes (build = HNSW build, after a "
        f"{db.get('load_s', float('nan')):.0f} s COPY; calibration "
        f"{db.get('tune_s', float('nan')):.1f} s); * = built by an earlier run"
    )
    for line in db.get("tuned", []):
        print(f"  tuned: {line}")
    if rep["concurrency"]:
        print()
        print("casebase, concurrent clients (threads, one connection each):")
        print(
            f"{'filter':>6}  "
            + "  ".join(f"{c:>2} clients p50/p95 ms, q/s" for c in args.concurrency)
        )
        for label, rows in rep["concurrency"].items():
            cells = [f"{r['p50_ms']:8.2f} {r['p95_ms']:8.2f} {r['qps']:7.1f}" for r in rows]
            print(f"{label:>6}  " + "   ".join(cells))


def print_targets(name: str, rep: dict) -> None:
    print()
    print(f"targets ({name}):")
    peers = ("chroma", "lancedb flat", "lancedb hnsw", "milvus lite")
    for f in rep["filters"]:
        res = rep["results"][f["label"]]
        cb = res["casebase"]
        ok = [(p, res[p]["p50_ms"]) for p in peers if p in res and res[p]["recall"] >= 0.95]
        best = min(ok, key=lambda x: x[1]) if ok else None
        flat = res.get("faiss flat", {}).get("p50_ms")
        met = "met" if cb["recall"] >= 0.98 else "NOT met"
        line = f"  {f['label']:>5}: recall {cb['recall']:.4f} (>= 0.98 {met})"
        if best:
            verdict = "met" if cb["p50_ms"] <= best[1] else "NOT met"
            line += f"; p50 {cb['p50_ms']:.2f} ms vs fastest peer {best[0]} {best[1]:.2f} ms"
            line += f": {verdict}"
        if flat:
            ratio = cb["p50_ms"] / flat
            line += f"; {ratio:.2f} x FAISS flat (<= 3 {'met' if ratio <= 3 else 'NOT met'})"
        print(line)


def reprint(paths: list[Path]) -> None:
    """The tables of earlier runs (their --json files), as the runs printed them."""
    for path in paths:
        report = json.loads(path.read_text())
        settings = argparse.Namespace(**report["settings"])
        print(f"{path}: load average before {settings.load_before}, after {settings.load_after}")
        for name, rep in report["datasets"].items():
            print_dataset(name, rep, settings)
            print_targets(name, rep)
        print()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=100_000)
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--k", type=int, default=100)
    parser.add_argument("--queries", type=int, default=50)
    parser.add_argument("--tuning-queries", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--dist", choices=(*DISTRIBUTIONS, "both"), default="both")
    parser.add_argument(
        "--engines",
        default="casebase exact," + ",".join(PEERS),
        help="comma-separated (casebase always runs): " + ", ".join(["casebase exact", *PEERS]),
    )
    parser.add_argument(
        "--filters",
        default="",
        help="only these filters, e.g. '100%%' (a peer taking seconds a query at the others "
        "takes most of an hour at 1M); default: all four",
    )
    parser.add_argument("--recall-target", type=float, default=0.95)
    parser.add_argument(
        "--slow-ms",
        type=float,
        default=400,
        help="engines slower than this per query (while tuning) run one pass, not --repeats",
    )
    parser.add_argument("--concurrency", default="1,4,16", help="client counts; '' to skip")
    parser.add_argument("--per-client", type=int, default=40, help="queries per client")
    parser.add_argument("--work", type=Path, default=None, help="peer indexes live here")
    parser.add_argument("--database", default="bench_peers", help="casebase database prefix")
    parser.add_argument("--reuse", action="store_true", help="reuse casebase's databases")
    parser.add_argument(
        "--maintenance-work-mem",
        default="2560MB",
        help="for casebase's HNSW build (its graph at 700k x 512 is ~1.8 GB)",
    )
    parser.add_argument("--retune", action="store_true", help="calibrate casebase again")
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument(
        "--report",
        type=Path,
        nargs="+",
        default=None,
        help="print the tables of earlier --json files and stop (no --work needed)",
    )
    parser.add_argument(
        "--build-only",
        action="store_true",
        help="build the indexes (and casebase's database, if 'casebase' is in --engines), "
        "one engine in memory at a time, and stop",
    )
    args = parser.parse_args()
    args.engines = [e.strip() for e in args.engines.split(",") if e.strip()]
    args.filters = [f.strip() for f in args.filters.split(",") if f.strip()]
    args.concurrency = [int(c) for c in args.concurrency.split(",") if c.strip()]
    if args.report:
        reprint(args.report)
        return
    if args.work is None:
        parser.error("--work is required")
    if "CASEBASE_HOME" not in os.environ:
        sys.exit("set CASEBASE_HOME to a directory of your own (the embedded server lives there)")
    args.work.mkdir(parents=True, exist_ok=True)
    report = {
        "settings": {
            **{k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
            "cpus": os.cpu_count(),
            "machine": platform.machine(),
            "load_before": os.getloadavg(),
        },
        "datasets": {},
    }
    for name in DISTRIBUTIONS if args.dist == "both" else (args.dist,):
        print(f"[{name}] generating {args.n:,} x {args.dim} ...", flush=True)
        ds = make_dataset(name, args.n, args.dim, args.seed, args.queries, args.tuning_queries)
        if args.filters:
            ds.specs = [s for s in ds.specs if s.label in args.filters]
        if args.build_only:
            build_only(ds, args)
            continue
        report["datasets"][name] = run_dataset(ds, args)
        del ds
    if args.build_only:
        return
    report["settings"]["load_after"] = os.getloadavg()
    print()
    load = report["settings"]
    print(
        f"machine: {os.cpu_count()} cores; load average before {load['load_before']}, "
        f"after {load['load_after']}"
    )
    for name, rep in report["datasets"].items():
        print_dataset(name, rep, args)
        print_targets(name, rep)
    if args.json:
        args.json.write_text(json.dumps(report, indent=1, default=float))
        print(f"\nraw numbers: {args.json}")


if __name__ == "__main__":
    main()
