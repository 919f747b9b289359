"""Measuring retrieval quality on the data already loaded (`casebase eval`).

Three questions, answered on the same seeded sample of query studies:
- round trip: does a study's own image come back first? (seed 000's integration test)
- label agreement: are the neighbours clinically alike? P@k and mAP@k where a
  neighbour is relevant when it shares a label (a manifest column) or a present
  finding (``casebase.findings``); queries exclude themselves and their patient;
  for graded labels (a KL grade 0-4) ``match="within:1"`` counts a neighbour one
  grade away as relevant too;
- ANN quality: recall@k of the default search against ``exact=True``, same filters.

``batches`` evaluates on some ingest batches only ("train on last year, evaluate on
this month"): the queries are the studies of those batches, and the searched index is
restricted to them by the search's own filter (``Filters.batches``, the SQL functions'
``batches`` argument), so no hit can come from another batch.
"""

from __future__ import annotations

import json
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from casebase.errors import QueryError
from casebase.retrieval.filters import Filters
from casebase.retrieval.search import search_vector

if TYPE_CHECKING:
    from psycopg import Connection


@dataclass(frozen=True)
class EvalReport:
    space: str
    modality: str
    relevance: str
    n_index: int
    n_queries: int
    ks: tuple[int, ...]
    roundtrip_rate: float
    precision_at_k: dict[int, float]
    map_at_k: dict[int, float]
    recall_vs_exact_at_k: dict[int, float]
    latency_ms_p50: float
    latency_ms_p95: float
    per_label_precision: dict[str, dict[int, float]] = field(default_factory=dict)
    seed: int = 0
    batches: tuple[str, ...] | None = None

    def to_dict(self) -> dict:
        return asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)

    def render(self) -> str:
        ks = self.ks
        where = f" of batch {', '.join(self.batches)}" if self.batches else ""
        lines = [
            f"space {self.space}, {self.modality}: {self.n_queries} queries over {self.n_index} "
            f"studies{where}; relevance = {self.relevance}; seed {self.seed}",
            f"round trip (own image first): {self.roundtrip_rate:.3f}",
            "k      " + "".join(f"{k:>8}" for k in ks),
            "P@k    " + "".join(f"{self.precision_at_k[k]:>8.3f}" for k in ks),
            "mAP@k  " + "".join(f"{self.map_at_k[k]:>8.3f}" for k in ks),
            "recall "
            + "".join(f"{self.recall_vs_exact_at_k[k]:>8.3f}" for k in ks)
            + "   (default search vs exact)",
            f"latency p50 {self.latency_ms_p50:.1f} ms, p95 {self.latency_ms_p95:.1f} ms",
        ]
        if self.per_label_precision:
            lines.append("per label (queries with it: share of top-k neighbours sharing it):")
            for label, row in sorted(self.per_label_precision.items()):
                lines.append(f"  {label[:28]:<28} " + "".join(f"{row[k]:>8.3f}" for k in ks))
        return "\n".join(lines)


def _labels_by_column(
    conn: Connection, space_id: int, modality: str, column: str
) -> dict[str, set[str]]:
    rows = conn.execute(
        "SELECT DISTINCT e.study_id, s.attributes ->> %s FROM casebase.embedding e "
        "JOIN casebase.study s USING (study_pk) WHERE e.space_id = %s AND e.modality = %s",
        (column, space_id, modality),
    ).fetchall()
    out = {}
    for study_id, value in rows:
        if value is not None and value.strip():
            out[study_id] = {v.strip() for v in value.split(";") if v.strip()}
    return out


def _labels_by_findings(conn: Connection, space_id: int, modality: str) -> dict[str, set[str]]:
    rows = conn.execute(
        "SELECT DISTINCT e.study_id, f.finding FROM casebase.embedding e "
        "JOIN casebase.finding f USING (study_pk) "
        "WHERE e.space_id = %s AND e.modality = %s AND f.status = 'present' "
        "AND f.backend = 'rules'",
        (space_id, modality),
    ).fetchall()
    out: dict[str, set[str]] = defaultdict(set)
    for study_id, finding in rows:
        out[study_id].add(finding)
    return dict(out)


def relevance_rule(match: str) -> tuple[Callable[[set[str], set[str]], bool], str]:
    """``match`` → (is b relevant to query a, how the report names it).

    ``any``: a shared value (multi-label columns like ``a;b``); ``exact``: equal label
    sets; ``within:N``: numeric labels (grades) at most N apart.
    """
    if match == "any":
        return (lambda a, b: bool(a & b)), ""
    if match == "exact":
        return (lambda a, b: a == b), " (exact label set)"
    head, _, tol = match.partition(":")
    try:
        tolerance = float(tol) if head == "within" else -1.0
    except ValueError:
        tolerance = -1.0
    if tolerance < 0:
        raise QueryError(f"match must be any, exact or within:N (N >= 0), got {match!r}")

    def near(a: set[str], b: set[str]) -> bool:
        return any(abs(x - y) <= tolerance for x in _numbers(a) for y in _numbers(b))

    return near, f" (within {tol} grade{'s' if tolerance != 1 else ''})"


def _numbers(values: set[str]) -> list[float]:
    try:
        return [float(v) for v in values]
    except ValueError:
        raise QueryError(
            f"match within:N needs numeric labels (grades), got {sorted(values)!r}"
        ) from None


def evaluate(
    conn,
    *,
    space: str | None = None,
    modality: str | None = None,
    label: str | None = None,
    findings: bool = False,
    ks: tuple[int, ...] = (5, 10, 20),
    queries: int = 200,
    seed: int = 0,
    exclude_same_patient: bool = True,
    match: str = "any",
    batches: Sequence[str] | None = None,
) -> EvalReport:
    """``match``: see :func:`relevance_rule`. ``batches``: queries and index are the
    studies of these ingest batches only (the index through the search's own filter)."""
    from casebase.db.spaces import get_space

    if label and findings:
        raise QueryError("choose --label COLUMN or --findings, not both")
    relevant, match_note = relevance_rule(match)
    ks = tuple(sorted(set(ks)))
    if not ks or ks[0] < 1:
        raise QueryError("k values must be positive")
    batches = tuple(dict.fromkeys(batches)) if batches else None
    sp = get_space(conn, space)
    modality = modality or _only_modality(conn, sp.space_id, batches)
    studies = conn.execute(
        "SELECT DISTINCT ON (e.study_id) e.study_id, e.patient_key, e.vec "
        "FROM casebase.embedding e WHERE e.space_id = %s AND e.modality = %s "
        "AND (%s::text[] IS NULL OR e.batch = ANY (%s::text[])) "
        "ORDER BY e.study_id, e.image_pk",
        (sp.space_id, modality, batches and list(batches), batches and list(batches)),
    ).fetchall()
    kmax = ks[-1]
    where = f" of batch {', '.join(batches)}" if batches else ""
    if len(studies) <= kmax:
        raise QueryError(
            f"space {sp.name} has {len(studies)} {modality} studies{where}; "
            f"k={kmax} needs more than that"
        )
    if label:
        labels = _labels_by_column(conn, sp.space_id, modality, label)
        relevance = f"label {label}{match_note}"
        if not labels:
            raise QueryError(f"no {modality} study in space {sp.name} has a {label!r} attribute")
    elif findings:
        labels, relevance = _labels_by_findings(conn, sp.space_id, modality), "shared finding"
        if not labels:
            raise QueryError(f"no {modality} study in space {sp.name} has extracted findings")
    else:
        labels, relevance = {}, "none (round trip and ANN recall only)"
    conn.commit()
    in_index = {s[0] for s in studies}
    labels = {sid: values for sid, values in labels.items() if sid in in_index}
    if (label or findings) and not labels:
        what = f"a {label!r} attribute" if label else "extracted findings"
        raise QueryError(f"no {modality} study{where} in space {sp.name} has {what}")

    rng = np.random.default_rng(seed)
    candidates = [s for s in studies if not labels or s[0] in labels]
    picks = rng.choice(len(candidates), size=min(queries, len(candidates)), replace=False)
    label_counts: dict[str, int] = defaultdict(int)
    for values in labels.values():
        for v in values:
            label_counts[v] += 1
    patient_of = {s[0]: s[1] for s in studies}
    by_patient: dict[str | None, set[str]] = defaultdict(set)
    for sid, pk in patient_of.items():
        by_patient[pk].add(sid)

    roundtrip = 0
    prec: dict[int, list[float]] = defaultdict(list)
    aps: dict[int, list[float]] = defaultdict(list)
    recall: dict[int, list[float]] = defaultdict(list)
    per_label: dict[str, dict[int, list[float]]] = defaultdict(lambda: defaultdict(list))
    latencies = []
    for idx in picks:
        study_id, patient, vec = candidates[int(idx)]
        flt = Filters(modality=modality, batches=batches)
        own = search_vector(conn, vec, k=1, filters=flt, space=sp.name, exact=False)
        roundtrip += bool(own and own[0].study_id == study_id)
        excl = patient if exclude_same_patient else None
        start = time.perf_counter()
        hits = search_vector(
            conn,
            vec,
            k=kmax,
            filters=flt,
            space=sp.name,
            exact=False,
            exclude_patient=excl,
            exclude_study=study_id,
        )
        latencies.append((time.perf_counter() - start) * 1000)
        exact = search_vector(
            conn,
            vec,
            k=kmax,
            filters=flt,
            space=sp.name,
            exact=True,
            exclude_patient=excl,
            exclude_study=study_id,
        )
        got = [h.study_id for h in hits]
        want = [h.study_id for h in exact]
        for k in ks:
            recall[k].append(len(set(got[:k]) & set(want[:k])) / max(1, len(want[:k])))
        if not labels:
            continue
        mine = labels.get(study_id, set())
        rel = [relevant(mine, labels.get(s, set())) for s in got]
        excluded = by_patient.get(patient, {study_id}) if exclude_same_patient else {study_id}
        n_relevant = sum(relevant(mine, labels.get(s, set())) for s in labels if s not in excluded)
        for k in ks:
            top = rel[:k]
            prec[k].append(sum(top) / k)
            hits_so_far, ap = 0, 0.0
            for i, r in enumerate(top, start=1):
                if r:
                    hits_so_far += 1
                    ap += hits_so_far / i
            aps[k].append(ap / max(1, min(k, n_relevant)) if n_relevant else 0.0)
            for value in mine:
                share = sum(value in labels.get(s, set()) for s in got[:k]) / k
                per_label[value][k].append(share)
        conn.commit()

    def mean(values: dict[int, list[float]]) -> dict[int, float]:
        return {k: float(np.mean(values[k])) if values[k] else float("nan") for k in ks}

    return EvalReport(
        space=sp.name,
        modality=modality,
        relevance=relevance,
        n_index=len(studies),
        n_queries=len(picks),
        ks=ks,
        roundtrip_rate=roundtrip / max(1, len(picks)),
        precision_at_k=mean(prec),
        map_at_k=mean(aps),
        recall_vs_exact_at_k=mean(recall),
        latency_ms_p50=float(np.percentile(latencies, 50)) if latencies else float("nan"),
        latency_ms_p95=float(np.percentile(latencies, 95)) if latencies else float("nan"),
        per_label_precision={lab: mean(v) for lab, v in per_label.items() if len(v[ks[0]]) >= 5},
        seed=seed,
        batches=batches,
    )


def _only_modality(conn: Connection, space_id: int, batches: tuple[str, ...] | None) -> str:
    rows = conn.execute(
        "SELECT DISTINCT modality FROM casebase.embedding WHERE space_id = %s "
        "AND (%s::text[] IS NULL OR batch = ANY (%s::text[])) ORDER BY 1",
        (space_id, batches and list(batches), batches and list(batches)),
    ).fetchall()
    if len(rows) == 1:
        return rows[0][0]
    if not rows and batches:
        raise QueryError(f"the space holds no image of batch {', '.join(batches)}")
    names = ", ".join(r[0] for r in rows) or "none"
    raise QueryError(f"choose a modality with --modality (this space holds {names})")
