"""`casebase search`: arguments → Client.search → a table, JSON, or a contact sheet.

The query and filter flags are shared with `casebase brief` (``add_filter_arguments``,
``run_search``).
"""

from __future__ import annotations

import argparse
import json
from typing import TYPE_CHECKING

from casebase.imaging.vocabulary import Sex

if TYPE_CHECKING:
    from casebase.client import Client
    from casebase.retrieval.filters import Filters
    from casebase.retrieval.hits import Hit


def add_filter_arguments(p: argparse.ArgumentParser) -> None:
    query = p.add_mutually_exclusive_group(required=True)
    query.add_argument("--image", help="a query image file (PNG, JPEG, DICOM)")
    query.add_argument("--study", help="an existing study id")
    query.add_argument("--text", help="a text query, e.g. 'left pleural effusion'")
    p.add_argument("-k", type=int, default=20, help="number of studies (default 20)")
    p.add_argument("--modality", help="CXR, KXR, CT, ... (the partition searched)")
    p.add_argument("--sex", choices=sorted(Sex))
    p.add_argument("--age", help="age range in years, e.g. 40-60, 65-, -18")
    p.add_argument("--view", action="append", help="only these views (repeatable), e.g. PA")
    p.add_argument("--exclude-flag", action="append", default=[], help="e.g. portable")
    p.add_argument("--require-flag", action="append", default=[])
    p.add_argument("--from", dest="date_from", help="study date from (YYYY-MM-DD)")
    p.add_argument("--to", dest="date_to", help="study date to (YYYY-MM-DD)")
    p.add_argument("--batch", action="append", dest="batches", help="only these batches")
    p.add_argument(
        "--attr",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="only studies whose manifest attribute KEY equals VALUE (exact scan)",
    )
    p.add_argument(
        "--include-same-patient",
        action="store_true",
        help="also return the query patient's other studies",
    )
    p.add_argument("--exact", action="store_true", help="exact scan (slower, always exact)")
    p.add_argument("--space", help="embedding space (default: the default space)")
    p.add_argument("--with-text", dest="extra_text", help="add report text to an image query")
    p.add_argument("--diverse", type=float, help="drop near-duplicates closer than this distance")
    p.add_argument(
        "--modify",
        metavar="TEXT",
        help="cases like the --image/--study query, but with this, e.g. 'left pleural effusion'",
    )
    p.add_argument(
        "--modify-weight",
        type=float,
        default=1.0,
        metavar="W",
        help="how far --modify moves the query, 0-10 (default 1; 0 is the plain search)",
    )
    p.add_argument(
        "--rerank-space",
        metavar="SPACE",
        help="re-score the candidates of --space exactly by this space's vectors",
    )
    p.add_argument(
        "--rerank-candidates",
        type=int,
        default=200,
        metavar="N",
        help="how many candidates the first space passes on (k to max_k; default 200)",
    )


def add_parser(sub) -> None:
    p = sub.add_parser("search", help="the k most similar studies to an image, study or text")
    add_filter_arguments(p)
    p.add_argument("--json", action="store_true", help="print hits as JSON")
    p.add_argument("--grid", help="write a contact sheet PNG here")
    p.set_defaults(run=run)


def filters_from_args(args: argparse.Namespace) -> Filters:
    from casebase.retrieval.filters import Filters, parse_age_range, parse_date

    return Filters(
        modality=args.modality,
        sex=args.sex,
        age=parse_age_range(args.age),
        views=tuple(args.view) if args.view else None,
        exclude_flags=tuple(args.exclude_flag),
        require_flags=tuple(args.require_flag),
        date_from=parse_date(args.date_from),
        date_to=parse_date(args.date_to),
        batches=tuple(args.batches) if args.batches else None,
        attributes=_attributes(args.attr) or None,
        exclude_same_patient=not args.include_same_patient,
    )


def _attributes(pairs: list[str]) -> dict[str, str]:
    from casebase.errors import QueryError

    out = {}
    for pair in pairs:
        if "=" not in pair:
            raise QueryError(f"--attr {pair!r} is not KEY=VALUE")
        key, value = pair.split("=", 1)
        out[key.strip()] = value.strip()
    return out


def run_search(client: Client, args: argparse.Namespace) -> list[Hit]:
    text = args.text or args.extra_text
    return client.search(
        image=args.image,
        study_id=args.study,
        text=text,
        k=args.k,
        filters=filters_from_args(args),
        exact=args.exact,
        space=args.space,
        diverse=args.diverse,
        modify=args.modify,
        modify_weight=args.modify_weight,
        rerank_space=args.rerank_space,
        rerank_candidates=args.rerank_candidates,
    )


def _dist(d: float) -> str:
    """Distances of an untrained model can all be below 0.001: keep them apart."""
    return f"{d:.4f}" if d >= 0.001 or d == 0 else f"{d:.1e}"


def render_table(hits: list[Hit]) -> str:
    if not hits:
        return "no study matches these filters"
    head = f"{'#':>3}  {'study':<24} {'dist':>8}  {'mod':<4} {'sex':<3} {'age':>5}  {'view':<9} "
    head += f"{'flags':<20} impression"
    lines = [head, "-" * len(head)]
    for h in hits:
        age = f"{h.age:.0f}" if h.age is not None else "-"
        imp = " ".join((h.impression or "").split())
        imp = imp if len(imp) <= 60 else imp[:59] + "…"
        via = "" if h.sources == ("image",) else f" [{'+'.join(h.sources)}]"
        lines.append(
            f"{h.rank:>3}  {h.study_id[:24]:<24} {_dist(h.distance):>8}  {h.modality:<4} "
            f"{h.sex or '-':<3} {age:>5}  {(h.view or '-')[:9]:<9} "
            f"{','.join(h.flags)[:20]:<20} {imp}{via}"
        )
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    from casebase.client import connect

    with connect() as client:
        hits = run_search(client, args)
        if args.json:
            print(json.dumps([h.to_dict() for h in hits], indent=2, default=str))
        else:
            print(render_table(hits))
        if args.grid:
            path = client.contact_sheet(
                args.grid,
                hits,
                image=args.image,
                study_id=args.study,
                text=args.text,
                space=args.space,
            )
            print(f"contact sheet: {path}")
    return 0
