"""The engines ``peers.py`` compares: casebase and the vector databases a user would pick
instead, each behind one small adapter.

Every adapter holds the same rows (the CXR rows of the benchmark set: vector, sex, age,
view, the two quality flags), answers ``search(q, k, spec)`` with row positions (indexes
into the CXR array), says how it applies a filter (``strategy``: before the vector search,
during it, or after it), and exposes its one search knob (``knob``: the beam width of its
HNSW) so ``peers.py`` can tune it for recall. Indexes are kept under ``--work`` and reused
when a later run asks for the same data (``build.json`` beside each index records the
data it holds and how long it took to build).

HNSW parameters are the same everywhere they can be set: m (graph degree) 32,
ef_construction 128; distance is cosine (inner product on L2-normalised vectors).
"""

from __future__ import annotations

import gc
import json
import math
import os
import shutil
import time
from pathlib import Path

import numpy as np
from search import SPACE, FilterSpec, Meta

M = 32
EF_CONSTRUCTION = 128
VIEWS = ("PA", "AP", "AP supine", "LATERAL")


def dir_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


class Engine:
    """One engine over the CXR rows. ``knobs``: the values ``peers.py`` tries, ascending."""

    name = ""
    strategy = ""
    knob_name: str | None = None
    knobs: tuple[int, ...] = ()

    def __init__(self, work: Path, tag: str) -> None:
        self.dir = work / f"{self.name.replace(' ', '_')}-{tag}"
        self.build_s = float("nan")
        self.reused = False

    # -- build or reuse
    def prepare(self, xb: np.ndarray, meta: Meta) -> None:
        stamp = self.dir / "build.json"
        if stamp.exists() and self.open(xb, meta):
            self.build_s = json.loads(stamp.read_text())["build_s"]
            self.reused = True
            return
        shutil.rmtree(self.dir, ignore_errors=True)
        self.dir.mkdir(parents=True)
        t0 = time.perf_counter()
        self.build(xb, meta)
        self.build_s = time.perf_counter() - t0
        stamp.write_text(json.dumps({"build_s": self.build_s, "rows": len(xb)}))

    def open(self, xb: np.ndarray, meta: Meta) -> bool:
        """Open a stored index; False when there is none to reuse."""
        return False

    def build(self, xb: np.ndarray, meta: Meta) -> None:
        raise NotImplementedError

    def size_bytes(self) -> int:
        return dir_bytes(self.dir)

    def set_knob(self, value: int) -> None:
        pass

    def search(self, q: np.ndarray, k: int, spec: FilterSpec) -> np.ndarray:
        raise NotImplementedError

    def close(self) -> None:
        pass


def _columns(meta: Meta) -> dict[str, np.ndarray]:
    return {
        "sex": np.where(meta.female, "F", "M"),
        "age": meta.age.astype(np.float64),
        "view": np.array(VIEWS, dtype=object)[meta.view],
        "portable": meta.portable,
        "burned": meta.burned,
    }


_FLAG_COLUMN = {"portable": "portable", "burned_in_text": "burned"}


# ------------------------------------------------------------------ casebase
class Casebase(Engine):
    """casebase as shipped: ``search_vector`` through the SQL router (or exact=True)."""

    strategy = (
        "during: one SQL statement; selective filters: the covering index's half-precision "
        "copies of the passing rows, the nearest re-ranked exactly; broad: HNSW, tuned beam"
    )

    def __init__(self, work: Path, tag: str, url: str, *, exact: bool) -> None:
        self.name = "casebase exact" if exact else "casebase"
        super().__init__(work, tag)
        from casebase.db.connection import connect

        self.exact = exact
        self.conn = connect(url, autocommit=True)
        if exact:
            self.strategy = "exact=True: every passing row ranked as on the exact route"

    def prepare(self, xb: np.ndarray, meta: Meta) -> None:
        self.position = {int(g): i for i, g in enumerate(meta.index)}

    def size_bytes(self) -> int:
        return 0  # reported from the database by peers.py

    def search(self, q: np.ndarray, k: int, spec: FilterSpec) -> np.ndarray:
        from casebase.retrieval.search import search_vector

        hits = search_vector(
            self.conn, q, k=k, filters=spec.filters(), space=SPACE, exact=self.exact
        )
        self.last_route = hits[0].route if hits else "empty"
        return np.array([self.position[int(h.study_id[4:])] for h in hits], dtype=np.int64)

    def close(self) -> None:
        self.conn.close()


# ------------------------------------------------------------------ FAISS
class FaissFlat(Engine):
    name = "faiss flat"
    strategy = "during: a bitmap of passing rows checked in the scan (IDSelectorBitmap)"

    def build(self, xb: np.ndarray, meta: Meta) -> None:
        import faiss

        self.index = faiss.IndexFlatIP(xb.shape[1])
        self.index.add(xb)
        self.meta = meta
        faiss.write_index(self.index, str(self.dir / "index.faiss"))

    def open(self, xb: np.ndarray, meta: Meta) -> bool:
        import faiss

        self.index = faiss.read_index(str(self.dir / "index.faiss"))
        self.meta = meta
        return self.index.ntotal == len(xb)

    def params(self, spec: FilterSpec):
        import faiss

        mask = spec.mask(self.meta)
        kwargs = {}
        if mask is not None:
            self.bits = np.packbits(mask, bitorder="little")
            kwargs["sel"] = faiss.IDSelectorBitmap(len(mask), faiss.swig_ptr(self.bits))
        return kwargs

    def search_parameters(self, k: int, spec: FilterSpec):
        import faiss

        return faiss.SearchParameters(**self.params(spec))

    def search(self, q: np.ndarray, k: int, spec: FilterSpec) -> np.ndarray:
        _, labels = self.index.search(q[None, :], k, params=self.search_parameters(k, spec))
        return labels[0][labels[0] >= 0]


class FaissHnsw(FaissFlat):
    name = "faiss hnsw"
    strategy = "during: the bitmap checked on every graph node the search visits"
    knob_name = "efSearch"
    knobs = (50, 100, 150, 200, 300, 400, 600, 800, 1200, 1600, 2400, 3200, 4800)

    def build(self, xb: np.ndarray, meta: Meta) -> None:
        import faiss

        self.index = faiss.IndexHNSWFlat(xb.shape[1], M, faiss.METRIC_INNER_PRODUCT)
        self.index.hnsw.efConstruction = EF_CONSTRUCTION
        self.index.add(xb)
        self.meta = meta
        faiss.write_index(self.index, str(self.dir / "index.faiss"))

    def set_knob(self, value: int) -> None:
        self.ef = value

    def search_parameters(self, k: int, spec: FilterSpec):
        import faiss

        return faiss.SearchParametersHNSW(efSearch=max(self.ef, k), **self.params(spec))


# ------------------------------------------------------------------ usearch
class Usearch(Engine):
    name = "usearch"
    strategy = "after: no filtered search in its Python API; over-fetch k / selectivity, filter"
    knob_name = "expansion_search"
    knobs = FaissHnsw.knobs

    def build(self, xb: np.ndarray, meta: Meta) -> None:
        from usearch.index import Index

        self.index = Index(
            ndim=xb.shape[1],
            metric="ip",
            dtype="f32",
            connectivity=M,
            expansion_add=EF_CONSTRUCTION,
        )
        self.index.add(np.arange(len(xb), dtype=np.uint64), xb, threads=os.cpu_count() or 1)
        self.index.save(str(self.dir / "index.usearch"))
        self.meta = meta

    def open(self, xb: np.ndarray, meta: Meta) -> bool:
        from usearch.index import Index

        self.index = Index.restore(str(self.dir / "index.usearch"))
        self.meta = meta
        return self.index is not None and len(self.index) == len(xb)

    def set_knob(self, value: int) -> None:
        self.index.expansion_search = value

    def search(self, q: np.ndarray, k: int, spec: FilterSpec) -> np.ndarray:
        mask = spec.mask(self.meta)
        if mask is None:
            return self.index.search(q, k, threads=1).keys.astype(np.int64)
        share = max(mask.mean(), 1 / len(mask))
        want = min(len(mask), math.ceil(k / share * 1.2))
        while True:
            keys = self.index.search(q, want, threads=1).keys.astype(np.int64)
            keep = keys[mask[keys]]
            if len(keep) >= k or want >= len(mask):
                return keep[:k]
            want = min(len(mask), want * 2)


# ------------------------------------------------------------------ Chroma
class Chroma(Engine):
    name = "chroma"
    strategy = "before: metadata filter to an allow-list, then HNSW restricted to it"
    knob_name = "ef_search"
    knobs = FaissHnsw.knobs

    def _client(self):
        import chromadb
        from chromadb.config import Settings

        return chromadb.PersistentClient(
            path=str(self.dir / "db"), settings=Settings(anonymized_telemetry=False)
        )

    def build(self, xb: np.ndarray, meta: Meta) -> None:
        self.client = self._client()
        self.col = self.client.create_collection(
            "cxr",
            configuration={
                "hnsw": {"space": "ip", "max_neighbors": M, "ef_construction": EF_CONSTRUCTION}
            },
        )
        cols = _columns(meta)
        step = self.client.get_max_batch_size()
        for start in range(0, len(xb), step):
            stop = min(len(xb), start + step)
            self.col.add(
                ids=[str(i) for i in range(start, stop)],
                embeddings=xb[start:stop],
                metadatas=[
                    {
                        "sex": str(cols["sex"][i]),
                        "age": float(cols["age"][i]),
                        "view": str(cols["view"][i]),
                        "portable": bool(cols["portable"][i]),
                        "burned": bool(cols["burned"][i]),
                    }
                    for i in range(start, stop)
                ],
            )

    def _load(self) -> None:
        self.client = self._client()
        self.col = self.client.get_collection("cxr")

    def open(self, xb: np.ndarray, meta: Meta) -> bool:
        try:
            self._load()
        except Exception:
            return False
        return self.col.count() == len(xb)

    def set_knob(self, value: int) -> None:
        """A new ef_search reaches only segments loaded after it (measured at 1M: with the
        collection kept open, ef 50 and 400 gave the same answers), so reload them."""
        self.col.modify(configuration={"hnsw": {"ef_search": value}})
        self.close()
        # Drop the old segments before loading new ones: at 1M each load holds ~2-3 GB, and
        # a beam search over seven values was killed for memory (16 GB) before this.
        self.col = self.client = None
        gc.collect()
        self._load()

    def close(self) -> None:
        self.client.clear_system_cache()  # the client caches its segments per process

    @staticmethod
    def where(spec: FilterSpec) -> dict | None:
        cond: list[dict] = []
        if spec.sex is not None:
            cond.append({"sex": spec.sex})
        if spec.age is not None:
            cond += [{"age": {"$gte": spec.age[0]}}, {"age": {"$lte": spec.age[1]}}]
        if spec.views is not None:
            cond.append({"view": {"$in": list(spec.views)}})
        for flag in spec.exclude_flags:
            cond.append({_FLAG_COLUMN[flag]: False})
        for flag in spec.require_flags:
            cond.append({_FLAG_COLUMN[flag]: True})
        if not cond:
            return None
        return cond[0] if len(cond) == 1 else {"$and": cond}

    def search(self, q: np.ndarray, k: int, spec: FilterSpec) -> np.ndarray:
        res = self.col.query(
            query_embeddings=q[None, :], n_results=k, where=self.where(spec), include=[]
        )
        return np.array([int(i) for i in res["ids"][0]], dtype=np.int64)


# ------------------------------------------------------------------ LanceDB
def _sql_where(spec: FilterSpec, *, milvus: bool = False) -> str | None:
    """The filter as the expression LanceDB (SQL) or Milvus (its own syntax) takes."""
    eq, quote = ("==", '"') if milvus else ("=", "'")
    cond = []
    if spec.sex is not None:
        cond.append(f"sex {eq} {quote}{spec.sex}{quote}")
    if spec.age is not None:
        cond.append(f"age >= {spec.age[0]} AND age <= {spec.age[1]}")
    if spec.views is not None:
        views = ", ".join(f"{quote}{v}{quote}" for v in spec.views)
        cond.append(f"view in [{views}]" if milvus else f"view IN ({views})")
    for flag in spec.exclude_flags:
        cond.append(f"{_FLAG_COLUMN[flag]} {eq} false")
    for flag in spec.require_flags:
        cond.append(f"{_FLAG_COLUMN[flag]} {eq} true")
    return " AND ".join(cond) if cond else None


class LanceFlat(Engine):
    name = "lancedb flat"
    strategy = "before: scalar indexes pick the rows (prefilter), exact scan of their vectors"

    def _connect(self):
        import lancedb

        return lancedb.connect(str(self.dir / "db"))

    def build(self, xb: np.ndarray, meta: Meta) -> None:
        import pyarrow as pa

        cols = _columns(meta)
        vectors = pa.FixedSizeListArray.from_arrays(pa.array(xb.ravel()), xb.shape[1])
        table = pa.table(
            {
                "id": pa.array(np.arange(len(xb), dtype=np.int64)),
                "vector": vectors,
                "sex": pa.array(cols["sex"].astype(str)),
                "age": pa.array(cols["age"]),
                "view": pa.array(cols["view"].astype(str)),
                "portable": pa.array(cols["portable"]),
                "burned": pa.array(cols["burned"]),
            }
        )
        self.table = self._connect().create_table("cxr", table)
        for column in ("sex", "view", "portable", "burned"):
            self.table.create_scalar_index(column, index_type="BITMAP")
        self.table.create_scalar_index("age", index_type="BTREE")
        self.index_vectors()

    def index_vectors(self) -> None:
        pass

    def open(self, xb: np.ndarray, meta: Meta) -> bool:
        try:
            self.table = self._connect().open_table("cxr")
        except Exception:
            return False
        return self.table.count_rows() == len(xb)

    def query(self, q: np.ndarray, k: int, spec: FilterSpec):
        query = self.table.search(q, vector_column_name="vector").distance_type("dot")
        query = query.bypass_vector_index()
        return query

    def search(self, q: np.ndarray, k: int, spec: FilterSpec) -> np.ndarray:
        query = self.query(q, k, spec)
        where = _sql_where(spec)
        if where:
            query = query.where(where, prefilter=True)
        out = query.select(["id"]).limit(k).to_arrow()
        return out.column("id").to_numpy()


class LanceHnsw(LanceFlat):
    name = "lancedb hnsw"
    strategy = "before: scalar indexes pick the rows (prefilter), HNSW restricted to them"
    knob_name = "ef"
    knobs = FaissHnsw.knobs

    def index_vectors(self) -> None:
        # One IVF partition: a plain HNSW graph over every row (full-precision vectors).
        self.table.create_index(
            metric="dot",
            index_type="IVF_HNSW_FLAT",
            num_partitions=1,
            m=M,
            ef_construction=EF_CONSTRUCTION,
            vector_column_name="vector",
        )

    def set_knob(self, value: int) -> None:
        self.ef = value

    def query(self, q: np.ndarray, k: int, spec: FilterSpec):
        query = self.table.search(q, vector_column_name="vector").distance_type("dot")
        return query.nprobes(1).ef(max(self.ef, k))


# ------------------------------------------------------------------ Milvus Lite
class Milvus(Engine):
    name = "milvus lite"
    strategy = "during: the scalar filter as a bitset the HNSW search skips rows by"
    knob_name = "ef"
    knobs = FaissHnsw.knobs

    def _client(self):
        from pymilvus import MilvusClient

        return MilvusClient(str(self.dir / "milvus.db"))

    def build(self, xb: np.ndarray, meta: Meta) -> None:
        from pymilvus import DataType, MilvusClient

        self.client = self._client()
        schema = MilvusClient.create_schema(auto_id=False)
        schema.add_field("id", DataType.INT64, is_primary=True)
        schema.add_field("vector", DataType.FLOAT_VECTOR, dim=xb.shape[1])
        schema.add_field("sex", DataType.VARCHAR, max_length=4)
        schema.add_field("age", DataType.DOUBLE)
        schema.add_field("view", DataType.VARCHAR, max_length=16)
        schema.add_field("portable", DataType.BOOL)
        schema.add_field("burned", DataType.BOOL)
        params = self.client.prepare_index_params()
        params.add_index(
            field_name="vector",
            index_type="HNSW",
            metric_type="IP",
            params={"M": M, "efConstruction": EF_CONSTRUCTION},
        )
        self.client.create_collection("cxr", schema=schema, index_params=params)
        cols = _columns(meta)
        for start in range(0, len(xb), 5000):
            stop = min(len(xb), start + 5000)
            rows = [
                {
                    "id": i,
                    "vector": xb[i],
                    "sex": str(cols["sex"][i]),
                    "age": float(cols["age"][i]),
                    "view": str(cols["view"][i]),
                    "portable": bool(cols["portable"][i]),
                    "burned": bool(cols["burned"][i]),
                }
                for i in range(start, stop)
            ]
            self.client.insert("cxr", rows)
        self.client.flush("cxr")
        self.client.load_collection("cxr")

    def open(self, xb: np.ndarray, meta: Meta) -> bool:
        self.client = self._client()
        if not self.client.has_collection("cxr"):
            return False
        self.client.load_collection("cxr")
        stats = self.client.get_collection_stats("cxr")
        return int(stats.get("row_count", 0)) == len(xb)

    def set_knob(self, value: int) -> None:
        self.ef = value

    def search(self, q: np.ndarray, k: int, spec: FilterSpec) -> np.ndarray:
        res = self.client.search(
            "cxr",
            data=[q],
            limit=k,
            filter=_sql_where(spec, milvus=True) or "",
            search_params={"params": {"ef": max(self.ef, k)}},
            output_fields=["id"],
        )
        return np.array([hit["id"] for hit in res[0]], dtype=np.int64)

    def close(self) -> None:
        self.client.close()


PEERS: dict[str, type[Engine]] = {
    e.name: e for e in (FaissFlat, FaissHnsw, Chroma, LanceFlat, LanceHnsw, Milvus, Usearch)
}
