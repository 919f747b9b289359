"""`casebase brief` and `casebase relabel`."""

from __future__ import annotations

import argparse


def add_parsers(sub) -> None:
    from casebase.retrieval.cli import add_filter_arguments

    p = sub.add_parser("brief", help="what the reports of the k most similar cases say")
    add_filter_arguments(p)
    p.set_defaults(k=50)
    fmt = p.add_mutually_exclusive_group()
    fmt.add_argument("--json", action="store_true", help="the brief as JSON (every study id)")
    fmt.add_argument("--markdown", action="store_true", help="the brief as a Markdown table")
    p.add_argument(
        "--exclude-flag-after",
        action="append",
        default=[],
        dest="quality",
        help="drop hits with this flag before counting (reported as excluded)",
    )
    r = sub.add_parser("relabel", help="re-extract findings after a lexicon change")
    r.add_argument("--batch", help="only this batch")


def run_brief(args: argparse.Namespace) -> int:
    from casebase.client import connect
    from casebase.retrieval.cli import filters_from_args, run_search

    with connect() as client:
        hits = run_search(client, args)
        query = (
            f"study {args.study}"
            if args.study
            else f"image {args.image}"
            if args.image
            else f"text {args.text!r}"
        )
        brief = client.brief(
            hits,
            query=query,
            filters=filters_from_args(args),
            exclude_flags=args.quality,
            space=args.space,
        )
    if args.json:
        print(brief.to_json())
    elif args.markdown:
        print(brief.render_markdown())
    else:
        print(brief.render_text())
    return 0


def run_relabel(args: argparse.Namespace) -> int:
    from casebase.client import connect
    from casebase.synthesis.store import relabel

    with connect() as client:
        n_reports, n_findings = relabel(client.conn, batch=args.batch)
    print(f"relabelled {n_reports} reports: {n_findings} findings")
    return 0
