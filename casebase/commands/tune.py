"""`casebase tune`: calibrate each leaf's search from its own vectors (issue #15)."""

from __future__ import annotations

import argparse
import json


def add_parser(sub) -> None:
    p = sub.add_parser(
        "tune",
        help="calibrate search on the loaded vectors (HNSW beam, exact-route threshold)",
        description="Measure, on each leaf's own vectors, the smallest HNSW beam that reaches "
        "the recall target and the filtered-row count below which the exact route is "
        "faster, and store them (casebase.setting rows tune.<leaf>) for every search. "
        "Re-run after a large batch.",
    )
    p.add_argument("--space", help="embedding space (default: the default space)")
    p.add_argument("--modality", help="only this modality's leaf")
    p.add_argument(
        "--target", type=float, default=0.99, help="mean recall@k to reach (default 0.99)"
    )
    p.add_argument("--queries", type=int, default=24, help="queries drawn per leaf (default 24)")
    p.add_argument("--seed", type=int, default=0)
    what = p.add_mutually_exclusive_group()
    what.add_argument("--show", action="store_true", help="print the stored calibrations")
    what.add_argument(
        "--reset", action="store_true", help="forget every calibration (back to the defaults)"
    )
    p.add_argument("--json", action="store_true")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from casebase.client import connect

    with connect() as client:
        if args.reset:
            print(f"forgot {client.reset_tuning()} calibration(s)")
            return 0
        if args.show:
            stored = client.tuning()
            if args.json:
                print(json.dumps(stored, indent=2))
            for leaf, values in stored.items():
                if not args.json:
                    print(f"{leaf}: {json.dumps(values, sort_keys=True)}")
            if not stored and not args.json:
                print("no calibration stored: run `casebase tune`")
            return 0
        report = client.tune(
            space=args.space,
            modality=args.modality,
            target=args.target,
            queries=args.queries,
            seed=args.seed,
        )
    if args.json:
        print(json.dumps([r.__dict__ for r in report], indent=2))
    else:
        for leaf in report:
            print(leaf.describe())
    return 0
