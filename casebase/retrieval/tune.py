"""Calibrating each leaf's search from its own vectors (``casebase tune``, issue #15).

``casebase.similar_to_vector`` answers a broad filter by walking the leaf's HNSW graph
with a beam of ``hnsw.ef_search`` candidates, and a selective one exactly. How wide a beam
a recall target needs, and where the exact route stops being the faster one, depend on
the data: a fixed beam of 800 wasted most of its time where 100 already gave recall 0.99.
This module measures both on the leaf itself and stores them in one ``casebase.setting``
row per leaf, ``tune.<leaf>`` (JSON), which the SQL function reads on every search:

- ``images_per_study``: how many images to ask the graph for per study wanted;
- ``ef_search`` at k = 10 and k = 100: the smallest beam whose mean recall (the default
  search against ``exact => true``, both through ``similar_to_vector`` itself, the query's
  own study excluded) reaches ``target`` on queries drawn from the leaf: stored vectors
  (leave-one-out) and stored vectors moved by the leaf's typical nearest-neighbour distance
  (as a new image lands near, not on, an old one);
- ``exact_threshold``: the filtered-row count below which the exact route is faster, or
  the graph misses the target, measured with age-window filters of growing size;
- ``filtered_oversample``: how many times the rows wanted a filtered walk of the graph
  asks for (1, 1.25, 1.5, 2 or 3): pgvector's iterative scan stops once that many rows
  have passed the filter, and with a tight LIMIT those come from the beam's fringe. It is
  the smallest factor whose recall reaches ``target`` at the most selective age window the
  graph route takes (the hardest filtered case for the graph), measured on every
  calibration query: on a 700k-row leaf the first eight of them said 0.994 at 10 % where
  all 24 said 0.983 (and 50 benchmark queries 0.979);
- ``trust_distance``: 1.5 x the largest distance from a sampled stored vector to its
  nearest other study. A graph answer whose nearest study is farther than that is
  answered again exactly: a beam too narrow to leave the graph's entry region (a cluster
  the walk cannot reach) returns far-away rows with nothing to say so, and a sample of a
  few dozen queries may never land in such a cluster (seen on the low-dimensional
  benchmark set: one query in 50 at recall 0 with the calibrated beam).

Everything runs in the caller's transaction; the candidate settings it tries are written
there and replaced by the final row, so other sessions never see them. Re-run it after a
large batch: it ANALYZEs the leaf first (the router reads those statistics too).
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import time
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING

import numpy as np

from casebase.db.connection import scalar
from casebase.errors import QueryError

if TYPE_CHECKING:
    from collections.abc import Callable

    from psycopg import Connection

log = logging.getLogger(__name__)

#: Beams tried (pgvector allows 1..1000), smallest first.
EF_GRID = (10, 16, 24, 32, 40, 48, 64, 80, 100, 128, 160, 200, 256, 320, 400, 500, 640, 800, 1000)
#: Shares of the leaf's rows passed by the age windows that place the route threshold
#: (1.0: no filter at all).
THRESHOLD_SHARES = (0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0)
#: Factors a filtered graph walk may ask for more rows by, smallest first.
OVERSAMPLE_GRID = (1.0, 1.25, 1.5, 2.0, 3.0)
KS = (10, 100)
SETTING_PREFIX = "tune."


@dataclass(frozen=True)
class LeafTuning:
    """What ``tune`` measured on one leaf (the JSON of its setting row, plus names)."""

    space: str
    modality: str
    leaf: str
    rows: int
    images_per_study: float
    ef_search: dict[str, int]
    recall: dict[str, float]
    recall_target: float
    exact_threshold: int
    filtered_oversample: float
    trust_distance: float | None
    queries: int
    seconds: float
    tuned_at: str

    def setting(self) -> str:
        keep = {k: v for k, v in asdict(self).items() if k not in ("space", "modality", "leaf")}
        return json.dumps(keep, sort_keys=True)

    def describe(self) -> str:
        ef = ", ".join(
            f"k={k}: {v} (recall {self.recall[k]:.3f})" for k, v in self.ef_search.items()
        )
        return (
            f"{self.space}/{self.modality} ({self.leaf}): {self.rows:,} rows, "
            f"{self.images_per_study:.2f} images/study; ef_search {ef}; exact below "
            f"{self.exact_threshold:,} rows; filtered walks ask for "
            f"{self.filtered_oversample:g} x the rows; graph answers checked beyond distance "
            f"{self.trust_distance}; {self.seconds:.1f} s"
        )


def tune(
    conn: Connection,
    *,
    space: str | None = None,
    modality: str | None = None,
    target: float = 0.99,
    queries: int = 24,
    seed: int = 0,
) -> list[LeafTuning]:
    """Calibrate every leaf of ``space`` (or one ``modality``) and store the settings."""
    from casebase.db.spaces import get_space, leaf_partitions

    if not 0 < target <= 1:
        raise QueryError(f"the recall target must be in (0, 1], got {target}")
    if queries < 2:
        raise QueryError(f"--queries must be at least 2, got {queries}")
    sp = get_space(conn, space)
    leaves = [(m, t) for m, t in leaf_partitions(conn, sp) if modality in (None, m)]
    if not leaves:
        raise QueryError(f"space {sp.name!r} holds no {modality or 'studies'} to tune")
    return [
        _tune_leaf(conn, sp.name, m, t, target=target, queries=queries, seed=seed)
        for m, t in leaves
    ]


def tuned(conn: Connection) -> dict[str, dict]:
    """Every stored calibration, by leaf."""
    rows = conn.execute(
        "SELECT key, value FROM casebase.setting WHERE key LIKE %s ORDER BY key",
        (SETTING_PREFIX + "%",),
    ).fetchall()
    return {key.removeprefix(SETTING_PREFIX): json.loads(value) for key, value in rows}


def reset(conn: Connection) -> int:
    """Forget every calibration (searches fall back to the installation defaults)."""
    cur = conn.execute("DELETE FROM casebase.setting WHERE key LIKE %s", (SETTING_PREFIX + "%",))
    return cur.rowcount


# ---------------------------------------------------------------- one leaf


class _Leaf:
    """Calls of ``similar_to_vector`` on one leaf, with candidate settings in place."""

    def __init__(self, conn: Connection, space: str, modality: str, leaf: str) -> None:
        self.conn, self.space, self.modality, self.leaf = conn, space, modality, leaf
        self.key = SETTING_PREFIX + leaf
        self.settings: dict = {}

    def set(self, **values) -> None:
        self.settings.update(values)
        self.conn.execute(
            "INSERT INTO casebase.setting (key, value) VALUES (%s, %s) "
            "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            (self.key, json.dumps(self.settings)),
        )

    def search(self, q, exclude: str, k: int, *, exact: bool = False, age=None) -> list[str]:
        return [sid for sid, _ in self.hits(q, exclude, k, exact=exact, age=age)]

    def hits(self, q, exclude: str, k: int, *, exact: bool = False, age=None) -> list:
        """(study id, distance) of the k nearest, the study ``exclude`` left out."""
        low, high = age or (None, None)
        return self.conn.execute(
            "SELECT study_id, distance FROM casebase.similar_to_vector(%s::vector, k => %s, "
            "space => %s, modality => %s, exclude_study => %s, age_min => %s, age_max => %s, "
            "exact => %s)",
            (q, k, self.space, self.modality, exclude, low, high, exact),
        ).fetchall()


def _tune_leaf(
    conn: Connection, space: str, modality: str, leaf: str, *, target, queries, seed
) -> LeafTuning:
    from pgvector import Vector

    t0 = time.perf_counter()
    conn.execute(f'ANALYZE casebase."{leaf}"')
    rows, studies = conn.execute(
        f'SELECT count(*), count(DISTINCT study_pk) FROM casebase."{leaf}"'
    ).fetchone() or (0, 0)
    if rows == 0:
        raise QueryError(f"{space}/{modality} has no vectors to tune on")
    per_study = round(rows / max(studies, 1), 3)
    run = _Leaf(conn, space, modality, leaf)
    run.set(images_per_study=per_study)

    sample = _sample(conn, leaf, queries, rows, seed)
    loo = [(Vector(v), sid) for sid, v in sample[: (len(sample) + 1) // 2]]
    # The exact answers are the calibration's dearest part (they read the whole leaf):
    # each is timed, so the route threshold reuses them for the unfiltered case.
    exact_s: list[float] = []
    hits_loo = [_timed(run.hits, exact_s, q, sid, max(KS), exact=True) for q, sid in loo]
    truth_loo = [[sid for sid, _ in hits] for hits in hits_loo]
    # The typical distance from a stored vector to its nearest other one: how far a new
    # image lands from its closest old one.
    nearest = [hits[0][1] for hits in hits_loo if hits]
    moved = _moved(sample[len(loo) :], float(np.median(nearest)) if nearest else 0.1, seed)
    hits_moved = [_timed(run.hits, exact_s, q, sid, max(KS), exact=True) for q, sid in moved]
    truth_moved = [[sid for sid, _ in hits] for hits in hits_moved]
    cases = list(zip(loo + moved, truth_loo + truth_moved, strict=True))
    # Until measured, no check: the beam search below must see the graph's own answers.
    # Stored vectors only: a moved one's nearest is far by construction (its own study is
    # left out, and the move leaves the data's manifold).
    farthest = max(nearest, default=None)
    trust = round(1.5 * farthest, 4) if farthest is not None else None

    ef_search, recall = {}, {}
    for k in KS:
        ef, got = _smallest_beam(run, cases, k, target)
        ef_search[str(k)], recall[str(k)] = ef, round(got, 4)
    run.set(ef_search=ef_search)
    few = max(4, len(cases) // 3)
    threshold = _threshold(conn, run, cases[:few], exact_s[:few], rows, target)
    oversample = _oversample(conn, run, cases, rows, threshold, target)
    tuning = LeafTuning(
        space=space,
        modality=modality,
        leaf=leaf,
        rows=int(rows),
        images_per_study=per_study,
        ef_search=ef_search,
        recall=recall,
        recall_target=target,
        exact_threshold=threshold,
        filtered_oversample=oversample,
        trust_distance=trust,
        queries=len(cases),
        seconds=round(time.perf_counter() - t0, 1),
        tuned_at=dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
    )
    conn.execute(
        "INSERT INTO casebase.setting (key, value) VALUES (%s, %s) "
        "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
        (run.key, tuning.setting()),
    )
    log.info("tuned %s", tuning.describe())
    return tuning


def _sample(conn: Connection, leaf: str, n: int, rows: int, seed: int) -> list:
    """``n`` stored (study id, vector) pairs, drawn from sampled pages, one per study."""
    from casebase.retrieval.search import as_array

    share = min(100.0, 100.0 * 20 * n / rows)
    found = conn.execute(
        f'SELECT study_id, vec FROM casebase."{leaf}" TABLESAMPLE SYSTEM (%s) REPEATABLE (%s)',
        (share, seed),
    ).fetchall()
    by_study = {sid: as_array(v) for sid, v in found}
    ids = sorted(by_study)
    rng = np.random.default_rng(seed)
    pick = rng.choice(len(ids), size=min(n, len(ids)), replace=False)
    return [(ids[i], by_study[ids[i]]) for i in sorted(pick)]


def _moved(sample: list, distance: float, seed: int) -> list:
    """Each vector moved in a random direction to cosine distance ``distance`` from itself."""
    from pgvector import Vector

    rng = np.random.default_rng(seed + 1)
    cos = min(max(1.0 - distance, 0.05), 0.999)
    out = []
    for sid, v in sample:
        unit = v / np.linalg.norm(v)
        noise = rng.standard_normal(unit.shape).astype(np.float32)
        noise -= (noise @ unit) * unit
        noise /= np.linalg.norm(noise)
        q = cos * unit + np.sqrt(1 - cos * cos) * noise
        out.append((Vector(q.astype(np.float32)), sid))
    return out


def _timed(call, seconds: list[float], *args, **kwargs):
    """``call(*args, **kwargs)``, its wall time appended to ``seconds``."""
    t0 = time.perf_counter()
    out = call(*args, **kwargs)
    seconds.append(time.perf_counter() - t0)
    return out


def _recall(run: _Leaf, cases, k: int, **search) -> float:
    got = []
    for (q, sid), truth in cases:
        want = set(truth[:k])
        if want:
            got.append(len(want & set(run.search(q, sid, k, **search))) / len(want))
    return float(np.mean(got)) if got else 1.0


def _smallest_beam(run: _Leaf, cases, k: int, target: float) -> tuple[int, float]:
    """The smallest beam of EF_GRID, k or more, whose mean recall@k reaches ``target`` (the
    graph route forced: threshold 0); recall grows with the beam, so a bisection finds it.

    Below k the beam saves no time (pgvector's iterative scan goes on until it has the k
    rows, batch after batch) and loses recall on queries unlike the sampled ones."""
    run.set(exact_threshold=0)
    grid = [ef for ef in EF_GRID if ef >= min(k, EF_GRID[-1])]

    def recall_at(i: int) -> float:
        run.set(ef_search={"10": grid[i], "100": grid[i]})
        return _recall(run, cases, k)

    i, got = smallest_reaching(len(grid), recall_at, target)
    if got < target:
        log.warning("ef_search %s reaches recall %.3f < %s at k=%s", grid[i], got, target, k)
    return grid[i], got


def _oversample(
    conn: Connection, run: _Leaf, cases, rows: int, threshold: int, target: float
) -> float:
    """The smallest OVERSAMPLE_GRID factor whose recall@100 reaches ``target`` under the
    most selective age window of THRESHOLD_SHARES that the graph route takes (its rows
    above ``threshold``), on every calibration query; the largest factor when none does,
    and 1 when no filtered search takes the graph route.

    The least selective filters need no more rows (the first beam already holds several
    times the rows asked for), and the factor only matters once the filter is selective:
    so one window, the one nearest the route threshold, decides it."""
    shares = [s for s in THRESHOLD_SHARES if s < 1 and s * rows > threshold]
    if not shares:
        return 1.0
    share = shares[0]
    (age,) = _age_windows(conn, run.leaf, [share])
    run.set(exact_threshold=0)  # the graph route, whatever the router would estimate
    k = max(KS)
    truth = [((q, sid), run.search(q, sid, k, exact=True, age=age)) for (q, sid), _ in cases]

    def recall_at(i: int) -> float:
        run.set(filtered_oversample=OVERSAMPLE_GRID[i])
        return _recall(run, truth, k, age=age)

    i, got = smallest_reaching(len(OVERSAMPLE_GRID), recall_at, target)
    log.info(
        "tune %s: %.1f %% of rows pass: the graph asks for %g x the rows (recall %.3f)",
        run.leaf,
        share * 100,
        OVERSAMPLE_GRID[i],
        got,
    )
    return OVERSAMPLE_GRID[i]


def smallest_reaching(
    count: int, score: Callable[[int], float], target: float
) -> tuple[int, float]:
    """The smallest index in ``range(count)`` whose ``score`` reaches ``target``, by
    bisection (``score`` must grow with the index, as recall grows with a search beam);
    the last index when none does; with its score. Looks at the last index first, then
    O(log count) more, each index once: each look is a batch of timed searches, so the
    fewer the better."""
    seen: dict[int, float] = {}

    def at(i: int) -> float:
        if i not in seen:
            seen[i] = score(i)
        return seen[i]

    low, high = 0, count - 1
    if at(high) < target:
        return high, seen[high]
    while low < high:
        mid = (low + high) // 2
        if at(mid) >= target:
            high = mid
        else:
            low = mid + 1
    return high, at(high)


def _age_windows(
    conn: Connection, leaf: str, shares: list[float]
) -> list[tuple[float, float] | None]:
    """Per share of the leaf's rows, the age window around the median that passes it
    (None for the whole leaf: no filter)."""
    bounds = scalar(
        conn,
        f'SELECT percentile_disc(%s::float8[]) WITHIN GROUP (ORDER BY age) FROM casebase."{leaf}"',
        ([x for s in shares for x in (0.5 - s / 2, 0.5 + s / 2)],),
    )
    return [
        None if share >= 1 else (float(bounds[2 * i]), float(bounds[2 * i + 1]))
        for i, share in enumerate(shares)
    ]


def _threshold(
    conn: Connection, run: _Leaf, cases, exact_s: list[float], rows: int, target: float
) -> int:
    """The passing-row count above which the graph route is faster and reaches the target.

    Age windows around the median pass shrinking shares of the leaf, from all of it; at
    each, both routes answer the same queries, and the exact route's answers are the truth
    the graph's recall is measured against. Unfiltered, the exact answers and their times
    are those the calibration already has (``cases``, ``exact_s``); a search under 50 ms is
    timed as the best of two runs (against a busy machine's noise). The graph only gets
    dearer (and less exact) as fewer rows pass and the exact route cheaper, so the search
    stops once the graph has lost twice in a row."""
    shares = [s for s in THRESHOLD_SHARES if s * rows >= 200]
    if not shares:
        return int(rows)  # a small leaf: the exact route reads all of it in no time
    leaf = run.leaf
    windows = _age_windows(conn, leaf, shares)
    run.set(exact_threshold=0)  # the default search takes the graph route
    k = max(KS)
    outcomes: list[tuple[int, bool]] = []
    for i, share in reversed(list(enumerate(shares))):
        age = windows[i]
        answers: dict[str, list[list[str]]] = {"exact": [], "graph": []}
        timed = {}
        for route, search in (("exact", {"exact": True}), ("graph", {})):
            times = []
            for (q, sid), truth in cases:
                if route == "exact" and age is None:
                    answers[route].append(truth[:k])
                    continue
                best, found = float("inf"), []
                for _ in range(2):
                    t0 = time.perf_counter()
                    found = run.search(q, sid, k, age=age, **search)
                    best = min(best, time.perf_counter() - t0)
                    if best > 0.05:
                        break
                times.append(best)
                answers[route].append(found)
            timed[route] = float(np.median(times if times else exact_s))
        pairs = zip(answers["exact"], answers["graph"], strict=True)
        shares_found = [len(set(want) & set(found)) / len(want) for want, found in pairs if want]
        got = float(np.mean(shares_found)) if shares_found else 1.0
        wins = timed["graph"] < timed["exact"] and got >= target
        log.info(
            "tune %s: %.1f %% of rows pass: exact %.1f ms, graph %.1f ms (recall %.3f)",
            leaf,
            share * 100,
            timed["exact"] * 1e3,
            timed["graph"] * 1e3,
            got,
        )
        outcomes.append((int(share * rows), wins))
        if len(outcomes) >= 2 and not outcomes[-1][1] and not outcomes[-2][1]:
            break
    # Exact up to the largest share where the graph lost; the graph above it.
    losing = [n for n, wins in outcomes if not wins]
    if not losing:
        return max(200, outcomes[-1][0] // 2)
    last = max(losing)
    above = sorted(n for n, _ in outcomes if n > last)
    return int(np.sqrt(last * above[0])) if above else int(rows)
