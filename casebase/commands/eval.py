"""`casebase eval`: retrieval quality on the loaded data."""

from __future__ import annotations

import argparse

from casebase.errors import InputError


def add_parser(sub) -> None:
    p = sub.add_parser("eval", help="measure retrieval quality (round trip, P@k, mAP@k, recall)")
    p.add_argument("--space", help="embedding space (default: the default space)")
    rel = p.add_mutually_exclusive_group()
    rel.add_argument("--label", help="relevance = same value of this manifest column")
    rel.add_argument("--findings", action="store_true", help="relevance = a shared finding")
    p.add_argument(
        "--match",
        default="any",
        metavar="any|exact|within:N",
        help="with --label: relevant if any ';'-separated value is shared, if the "
        "label sets are equal, or if numeric labels (grades) are at most N apart",
    )
    p.add_argument("-k", default="5,10,20", help="comma-separated k values (default 5,10,20)")
    p.add_argument("--queries", type=int, default=200, help="number of query studies")
    p.add_argument("--modality", help="the modality to evaluate")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--include-same-patient", action="store_true")
    p.add_argument(
        "--batch",
        action="append",
        dest="batches",
        metavar="NAME",
        help="queries and index: the studies of this ingest batch only (repeatable)",
    )
    p.add_argument("--json", action="store_true")
    p.set_defaults(run=run)


def parse_ks(text: str) -> tuple[int, ...]:
    try:
        ks = tuple(int(x) for x in text.split(",") if x.strip())
    except ValueError:
        raise InputError(f"-k must be comma-separated integers, got {text!r}") from None
    if not ks or min(ks) < 1:
        raise InputError(f"-k values must be positive, got {text!r}")
    return ks


def run(args: argparse.Namespace) -> int:
    from casebase.client import connect

    with connect() as client:
        report = client.evaluate(
            space=args.space,
            label=args.label,
            findings=args.findings,
            ks=parse_ks(args.k),
            queries=args.queries,
            modality=args.modality,
            seed=args.seed,
            exclude_same_patient=not args.include_same_patient,
            match=args.match,
            batches=args.batches,
        )
    print(report.to_json() if args.json else report.render())
    return 0
