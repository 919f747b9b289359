"""Two-stage retrieval: candidates from space A, order from space B. Does A→B keep B's P@5?

    python benchmarks/rerank.py --work /tmp/casebase-rerank \\
        --pneumoniamnist ../shared/data/pneumoniamnist.npz

Space A is ``tiny-random`` (random weights: cheap, a stand-in for a small fast model),
space B a model trained here with ``casebase train`` (no pretrained weights can be
downloaded). Four searches per query, top 5: A alone, B alone, and A→B re-ranked
(``rerank_space=B``) from 50 and from 200 candidates, with the p50 and p95 wall time of
each call (the client's round trip: one SQL statement each; on this data size every
first stage is an exact scan, ``exact_threshold`` being 20,000 rows).

1. The demo cohort (benchmarks/demo_cohort.py: 400 generated chest films; B trained on
   the findings text). Queries: every chest film by study id (the study and its patient
   excluded). P@5: share of the top 5 with the same label set as the query, and sharing
   at least one finding (a normal film: another normal one).
2. PneumoniaMNIST (benchmarks/pneumoniamnist.py's files and recipe): the train split
   (3,882 images) is the index, the 624 test images are the queries, by vector (each
   query's vector in A and in B; ``casebase.similar_reranked`` takes both). B is trained
   on the train split only. P@5 by label (normal / pneumonia).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

K = 5
CANDIDATES = (50, 200)


def timed(run: Callable[[], list]) -> tuple[list, float]:
    started = time.perf_counter()
    hits = run()
    return hits, (time.perf_counter() - started) * 1000


def measure(methods, queries, relevant) -> list[tuple[str, dict[str, float], float, float]]:
    """(method, {metric: P@5}, p50 ms, p95 ms) per method; the methods run in turn for
    each query, so a slow moment of the machine falls on all of them alike."""
    shares: dict[str, dict[str, list[float]]] = {name: {} for name, _ in methods}
    times: dict[str, list[float]] = {name: [] for name, _ in methods}
    for query in queries:
        for name, search in methods:
            hits, ms = timed(lambda s=search, q=query: s(q))
            times[name].append(ms)
            for metric, share in relevant(query, hits).items():
                shares[name].setdefault(metric, []).append(share)
    return [
        (
            name,
            {m: float(np.mean(v)) for m, v in shares[name].items()},
            float(np.percentile(times[name], 50)),
            float(np.percentile(times[name], 95)),
        )
        for name, _ in methods
    ]


def print_table(title: str, rows, metrics: list[str]) -> None:
    print(f"\n{title}")
    head = f"{'method':<26}" + "".join(f"{m:>16}" for m in metrics)
    print(head + f"{'p50 ms':>9}{'p95 ms':>9}")
    for name, p, p50, p95 in rows:
        cells = "".join(f"{p[m]:>16.3f}" for m in metrics)
        print(f"{name:<26}{cells}{p50:>9.1f}{p95:>9.1f}")


# ---------------------------------------------------------------- the demo cohort


def demo_cohort(work: Path, args) -> tuple[list, str]:
    import demo_cohort as dc

    import casebase

    cohort = dc.prepare(work, epochs=args.epochs, max_minutes=args.max_minutes)
    a, b = cohort.base, cohort.trained
    with casebase.connect(cohort.url) as client:
        rows = client.conn.execute(
            "SELECT study_id, attributes ->> 'label' FROM casebase.studies WHERE modality = 'CXR'"
        ).fetchall()
        client.conn.commit()
        labels = {sid: frozenset((label or "normal").split(";")) for sid, label in rows}

        def relevant(sid, hits):
            mine = labels[sid]
            return {
                "same labels": sum(labels[h.study_id] == mine for h in hits) / K,
                "shared finding": sum(bool(labels[h.study_id] & mine) for h in hits) / K,
            }

        methods = [
            ("A alone (tiny-random)", lambda s: client.search(study_id=s, k=K, space=a)),
            (f"B alone ({b})", lambda s: client.search(study_id=s, k=K, space=b)),
        ] + [
            (
                f"A -> B, {n} candidates",
                lambda s, n=n: client.search(
                    study_id=s, k=K, space=a, rerank_space=b, rerank_candidates=n
                ),
            )
            for n in CANDIDATES
        ]
        queries = sorted(labels)[: args.queries] if args.queries else sorted(labels)
        for _name, search in methods:  # warm caches and the models' first call
            search(queries[0])
        return measure(methods, queries, relevant), cohort.training


# ---------------------------------------------------------------- PneumoniaMNIST


def pneumoniamnist(work: Path, args) -> tuple[list, str]:
    from pneumoniamnist import write_split

    import casebase
    from casebase.db.connection import checked_url, connect
    from casebase.db.databases import recreate_database, with_database
    from casebase.ingest.pipeline import IngestOptions, ingest
    from casebase.retrieval import search as s
    from casebase.retrieval.filters import Filters
    from casebase.train import add_checkpoint_space, reembed, train
    from casebase.train.checkpoint import SMALL_RESNET_CFG

    data = np.load(args.pneumoniamnist)
    folder = work / "pmnist"
    server = checked_url()
    urls = {}
    for split in ("train", "test"):
        manifest = write_split(data, split, folder / "images")
        url = with_database(server, f"rerank_pm_{split}")
        done = folder / f"{split}.loaded"
        if not done.exists():
            recreate_database(server, f"rerank_pm_{split}")
            options = IngestOptions(batch=split, model="tiny-random", progress=False)
            ingest(manifest, options, url=url)
            done.write_text("ok")
        urls[split] = url
    run = folder / "run"
    if (run / "model.pt").exists():
        training = (run / "training.txt").read_text().strip() + " (reused)"
    else:
        config = folder / "pmnist-rn16-64.json"
        config.write_text(json.dumps(SMALL_RESNET_CFG, indent=2))
        started = time.perf_counter()
        with connect(urls["train"]) as conn:
            result = train(
                conn,
                space="tiny-random",
                base=str(config),
                text="label:label",
                epochs=args.pm_epochs,
                out=run,
                device="cpu",
                batch_size=128,
                lr=1e-3,
                weight_decay=0.05,
                patience=5,
                max_minutes=args.pm_max_minutes,
                progress=False,
            )
        training = (
            f"trained {result.epochs_done} epochs in {time.perf_counter() - started:.0f} s "
            f"(stopped by {result.stopped}); held-out P@5 {result.baseline_precision:.3f} -> "
            f"{result.best_precision:.3f}"
        )
        (run / "training.txt").write_text(training)
    for url in urls.values():
        with connect(url) as conn:
            add_checkpoint_space(conn, run / "model.pt", name="trained")
            reembed(conn, source="tiny-random", target="trained", progress=False)
            conn.execute("ANALYZE casebase.embedding")
            conn.commit()

    with connect(urls["test"]) as conn:
        rows = conn.execute(
            "SELECT e.study_id, e.space, e.vec, s.attributes ->> 'label' "
            "FROM casebase.embeddings e JOIN casebase.studies s USING (study_id)"
        ).fetchall()
    queries: dict[str, dict] = {}
    for sid, space, vec, label in rows:
        queries.setdefault(sid, {"label": label})[space] = vec.to_numpy()
    with casebase.connect(urls["train"]) as client:
        train_label = dict(
            client.conn.execute(
                "SELECT study_id, attributes ->> 'label' FROM casebase.studies"
            ).fetchall()
        )
        client.conn.commit()
        f = Filters(modality="CXR", exclude_same_patient=False)

        def relevant(sid, hits):
            return {"P@5": sum(train_label[h.study_id] == queries[sid]["label"] for h in hits) / K}

        def rerank(sid, n):
            q = queries[sid]
            found = s.search_reranked(
                client.conn,
                q["tiny-random"],
                q["trained"],
                rerank_space="trained",
                rerank_candidates=n,
                k=K,
                filters=f,
                space="tiny-random",
                exact=False,
            )
            client.conn.commit()
            return found

        methods = [
            ("A alone (tiny-random)", lambda q: client.search(
                vector=queries[q]["tiny-random"], k=K, space="tiny-random", filters=f)),
            ("B alone (trained)", lambda q: client.search(
                vector=queries[q]["trained"], k=K, space="trained", filters=f)),
        ] + [
            (f"A -> B, {n} candidates", lambda q, n=n: rerank(q, n)) for n in CANDIDATES
        ]  # fmt: skip
        order = sorted(queries)
        for _name, search in methods:
            search(order[0])
        return measure(methods, order, relevant), training


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--work", help="working folder (default: a new temporary one)")
    p.add_argument("--pneumoniamnist", help="pneumoniamnist.npz (omit to skip that table)")
    p.add_argument("--queries", type=int, default=0, help="demo queries (default: all 400)")
    p.add_argument("--epochs", type=int, default=60)
    p.add_argument("--max-minutes", type=float, default=12.0, help="demo training budget")
    p.add_argument("--pm-epochs", type=int, default=20)
    p.add_argument("--pm-max-minutes", type=float, default=10.0)
    args = p.parse_args(argv)

    work = Path(args.work or tempfile.mkdtemp(prefix="casebase-rerank-")).resolve()
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import demo_cohort as dc

    dc.use_home(work)
    try:
        demo_rows, demo_training = demo_cohort(work, args)
        pm = pneumoniamnist(work, args) if args.pneumoniamnist else None
    finally:
        dc.stop_server()
    print_table(
        f"Demo cohort: 400 chest films, top {K} by study id; B: {demo_training}",
        demo_rows,
        ["same labels", "shared finding"],
    )
    if pm is not None:
        rows, training = pm
        print_table(
            f"PneumoniaMNIST: 624 test images as queries, 3,882 train images as index; "
            f"B: {training}",
            rows,
            ["P@5"],
        )
    print(f"\nwork folder: {work} (re-run with --work to reuse the databases and models)")
    print("commands (as the library calls above):")
    print("  casebase search --study ID -k 5 --space tiny-random --rerank-space trained "
          "--rerank-candidates 50")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
