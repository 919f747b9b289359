"""Composed queries on the demo cohort: does ``--modify`` bring a finding into the top 10?

    python benchmarks/composed.py --work /tmp/casebase-composed

The cohort and the trained space are benchmarks/demo_cohort.py's (400 generated chest
films whose findings are drawn on them; a small open_clip model trained here on the
findings text, since no pretrained weights can be downloaded). For each modifier
(pleural effusion, also worded "left pleural effusion", cardiomegaly, pneumothorax) the
queries are up to ``--queries`` chest films (seeded) whose label lacks that finding.
Each is searched by study id as ``client.search(study_id=..., k=10, modify=...,
modify_weight=w)`` runs it (the study and its patient excluded), in the trained space
and in ``tiny-random`` (random weights: a control, where no lift is expected). Per row:

- ``with``: share of the top 10 whose label (the generator's ground truth, not the
  reports) contains the modifier's finding; ``w = 0`` is the plain search;
- ``keeps``: for each finding the query has, the share of the top 10 that has it too,
  averaged (queries with at least one finding);
- ``prevalence``: the finding's share among the films searched (what a random top 10
  would give).

A second table compares neutral prompts for the rule
``normalize(q + w * (t(modify) - t(neutral)))`` at one weight: "no finding" (casebase's
default), "normal", "a chest x-ray", and none (``q + w * t(modify)``).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np

MODIFIERS = {
    "pleural effusion": "pleural_effusion",
    "left pleural effusion": "pleural_effusion",  # the words; training saw the above
    "cardiomegaly": "cardiomegaly",
    "pneumothorax": "pneumothorax",
}
NEUTRALS = ("no finding", "normal", "a chest x-ray", None)
K = 10


def labels_of(client) -> dict[str, set[str]]:
    rows = client.conn.execute(
        "SELECT study_id, attributes ->> 'label' FROM casebase.studies WHERE modality = 'CXR'"
    ).fetchall()
    client.conn.commit()
    return {
        sid: {v for v in (label or "").split(";") if v and v != "normal"} for sid, label in rows
    }


def score(hits, query_findings: set[str], finding: str, labels) -> tuple[float, float | None]:
    """(share of hits with ``finding``, mean share of hits keeping each query finding)."""
    found = [labels[h.study_id] for h in hits]
    with_share = sum(finding in f for f in found) / K
    keeps = (
        float(np.mean([sum(q in f for f in found) / K for q in query_findings]))
        if query_findings
        else None
    )
    return with_share, keeps


def run_weights(client, space: str, queries, finding: str, prompt: str, weights, labels):
    rows = []
    for w in weights:
        withs, keeps = [], []
        for sid in queries:
            if w == 0:
                hits = client.search(study_id=sid, k=K, space=space)
            else:
                hits = client.search(study_id=sid, k=K, space=space, modify=prompt, modify_weight=w)
            a, b = score(hits, labels[sid], finding, labels)
            withs.append(a)
            if b is not None:
                keeps.append(b)
        rows.append((w, float(np.mean(withs)), float(np.mean(keeps)) if keeps else float("nan")))
    return rows


def run_neutrals(client, space: str, queries, finding: str, prompt: str, weight: float, labels):
    """The same searches through the library, with each neutral prompt's vector."""
    from casebase.retrieval import compose, search
    from casebase.retrieval.filters import Filters
    from casebase.retrieval.lookup import query_image

    sp = client.space(space)
    out = []
    for neutral in NEUTRALS:
        texts = [prompt] + ([neutral] if neutral else [])
        vecs = compose.prompt_vectors(sp, texts)
        neutral_vec = vecs[1] if neutral else np.zeros_like(vecs[0])
        withs, keeps = [], []
        for sid in queries:
            q = query_image(client.conn, sid, sp.name)
            hits = search.search_composed(
                client.conn,
                q.vector,
                vecs[0],
                neutral_vec,
                weight,
                k=K,
                filters=Filters(modality=q.modality),
                space=sp.name,
                exact=False,
                exclude_patient=q.patient_key,
                exclude_study=sid,
            )
            a, b = score(hits, labels[sid], finding, labels)
            withs.append(a)
            if b is not None:
                keeps.append(b)
        client.conn.commit()
        out.append((neutral or "(none)", float(np.mean(withs)), float(np.mean(keeps))))
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--work", help="working folder (default: a new temporary one)")
    p.add_argument("--queries", type=int, default=100, help="query films per modifier")
    p.add_argument("--weights", default="0,0.25,0.5,1,2,4")
    p.add_argument("--neutral-weight", type=float, default=1.0)
    p.add_argument("--epochs", type=int, default=60)
    p.add_argument("--max-minutes", type=float, default=12.0, help="training budget")
    p.add_argument("--retrain", action="store_true")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    weights = [float(w) for w in args.weights.split(",")]

    work = Path(args.work or tempfile.mkdtemp(prefix="casebase-composed-")).resolve()
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import demo_cohort

    demo_cohort.use_home(work)
    import casebase

    try:
        cohort = demo_cohort.prepare(
            work, epochs=args.epochs, max_minutes=args.max_minutes, retrain=args.retrain
        )
        table, neutral_table = [], []
        with casebase.connect(cohort.url) as client:
            labels = labels_of(client)
            n_films = len(labels)
            rng = np.random.default_rng(args.seed)
            for prompt, finding in MODIFIERS.items():
                pool = sorted(sid for sid, f in labels.items() if finding not in f)
                picks = sorted(rng.choice(pool, size=min(args.queries, len(pool)), replace=False))
                prevalence = sum(finding in f for f in labels.values()) / n_films
                for space in (cohort.trained, cohort.base):
                    for w, with_share, keeps in run_weights(
                        client, space, picks, finding, prompt, weights, labels
                    ):
                        table.append((space, prompt, len(picks), prevalence, w, with_share, keeps))
                if prompt == "pleural effusion":
                    neutral_table = run_neutrals(
                        client, cohort.trained, picks, finding, prompt, args.neutral_weight, labels
                    )
    finally:
        demo_cohort.stop_server()

    print(f"\nComposed queries, demo cohort ({n_films} chest films), top {K} by study id")
    print(f"model: {cohort.training}")
    print(
        f"{'space':<12} {'modifier':<22} {'queries':>7} {'prevalence':>10} {'w':>5} "
        f"{'with':>6} {'keeps':>6}"
    )
    for space, prompt, n, prevalence, w, with_share, keeps in table:
        print(
            f"{space:<12} {prompt:<22} {n:>7} {prevalence:>10.3f} {w:>5g} "
            f"{with_share:>6.3f} {keeps:>6.3f}"
        )
    print(
        f"\nneutral prompt, space {cohort.trained}, modifier 'pleural effusion', "
        f"w = {args.neutral_weight:g}"
    )
    print(f"{'neutral':<16} {'with':>6} {'keeps':>6}")
    for neutral, with_share, keeps in neutral_table:
        print(f"{neutral:<16} {with_share:>6.3f} {keeps:>6.3f}")
    print(f"\nwork folder: {work} (re-run with --work to reuse the cohort and the model)")
    print("commands (as the library calls above):")
    print("  casebase search --study ID -k 10 --space trained --modify 'pleural effusion' "
          "--modify-weight W")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
