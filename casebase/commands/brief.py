"""`casebase brief` and `casebase relabel`."""

from __future__ import annotations

import argparse
import sys

from casebase.commands.search import add_filter_arguments, filters_from_args, run_search


def add_parser(sub) -> None:
    p = sub.add_parser("brief", help="what the reports of the k most similar cases say")
    add_filter_arguments(p)
    p.set_defaults(k=50)
    fmt = p.add_mutually_exclusive_group()
    fmt.add_argument("--json", action="store_true", help="the brief as JSON (every study id)")
    fmt.add_argument("--markdown", action="store_true", help="the brief as a Markdown table")
    p.add_argument(
        "--html",
        metavar="FILE",
        help="also write the brief as one self-contained HTML page (films as thumbnails, "
        "a findings chart with the study ids behind each bar); its folder must exist",
    )
    p.add_argument(
        "--exclude-flag-after",
        action="append",
        default=[],
        dest="quality",
        help="drop hits with this flag before counting (reported as excluded)",
    )
    llm = p.add_argument_group(
        "LLM second opinion (extra 'llm'; the rule counts stay the brief's numbers)"
    )
    llm.add_argument(
        "--llm",
        nargs="?",
        const="",
        metavar="MODEL",
        help="also label the hits' sanitised reports with this litellm model, e.g. "
        "gemini/gemini-2.5-flash or ollama/llama3.1 (no MODEL: CASEBASE_LLM_MODEL)",
    )
    llm.add_argument(
        "--llm-api-base",
        metavar="URL",
        help="the model's server, e.g. an OpenAI-compatible http://host:8000/v1",
    )
    llm.add_argument(
        "--llm-workers", type=int, metavar="N", help="reports labelled in parallel (default 1)"
    )
    llm.add_argument(
        "--llm-narrate",
        action="store_true",
        help="add a narrative of the rule counts: statements the LLM picks, checked against "
        "the counts and written by casebase",
    )
    p.set_defaults(run=run_brief)
    r = sub.add_parser(
        "relabel", help="re-extract findings after a lexicon change or under another convention"
    )
    r.add_argument("--batch", help="only this batch")
    # Not argparse choices: listing them would read conventions.yaml (and import YAML) at
    # the start of every command; relabel refuses an unknown name, naming the known ones.
    r.add_argument(
        "--convention",
        metavar="NAME",
        help="code as these coders do: strict (the cues as written, until one is chosen) or "
        "a name from casebase/synthesis/conventions.yaml, e.g. iu-coders; every report is "
        "relabelled and new batches follow it. Without it the installation's convention stays",
    )
    r.set_defaults(run=run_relabel)


def _llm_backend(args: argparse.Namespace):
    """The LLM back end of ``--llm``, built before any search so that a missing model,
    extra or option fails at once; None without ``--llm``."""
    from casebase.errors import ConfigError

    if args.llm is None:
        given = [
            flag
            for flag, value in (
                ("--llm-api-base", args.llm_api_base),
                ("--llm-workers", args.llm_workers),
                ("--llm-narrate", args.llm_narrate),
            )
            if value
        ]
        if given:
            raise ConfigError(f"{' and '.join(given)} need --llm [MODEL]")
        return None
    if args.llm_workers is not None and args.llm_workers < 1:
        raise ConfigError("--llm-workers must be at least 1")
    from casebase.config import load_settings
    from casebase.synthesis.second_opinion import make_backend

    return make_backend(
        args.llm, load_settings(), api_base=args.llm_api_base, workers=args.llm_workers
    )


def run_brief(args: argparse.Namespace) -> int:
    from casebase.client import connect

    backend = _llm_backend(args)
    if args.html:  # before the search: a typo in the folder costs nothing
        from casebase.synthesis.brief_html import output_path

        output_path(args.html)
    with connect() as client:
        hits = run_search(client, args)
        query = (
            f"study {args.study}"
            if args.study
            else f"image {args.image}"
            if args.image
            else f"text {args.text!r}"
        )
        if args.modify is not None:
            query += f" + {args.modify!r} (modify weight {args.modify_weight:g})"
        if args.rerank_space:
            query += f", re-ranked in {args.rerank_space} ({args.rerank_candidates} candidates)"
        brief = client.brief(
            hits,
            query=query,
            filters=filters_from_args(args),
            exclude_flags=args.quality,
            space=args.space,
            llm=backend,
            narrate=args.llm_narrate,
        )
        if args.html:
            client.brief_html(
                brief, hits, image=args.image, study_id=args.study, space=args.space, path=args.html
            )
            print(f"HTML brief written to {args.html}", file=sys.stderr)
    if args.json:
        print(brief.to_json())
    elif args.markdown:
        print(brief.render_markdown())
    else:
        print(brief.render_text())
    return 0


def run_relabel(args: argparse.Namespace) -> int:
    from casebase.client import connect

    with connect() as client:
        n_reports, n_findings = client.relabel(batch=args.batch, convention=args.convention)
        version = client.labeller_version()
    print(f"relabelled {n_reports} reports: {n_findings} findings ({version})")
    return 0
