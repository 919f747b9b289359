"""`casebase prompts add|list`: text-tower vectors of prompts, stored per space.

SQL cannot run a model's text tower, so a composed query by study id in plain SQL
(``casebase.similar_cases_modified``) reads its prompts' vectors from
``casebase.prompts``; this command writes them (with the neutral prompt). The Python
client and ``casebase search --modify`` embed their text themselves and need none.
Argument parsing only: each command calls the client.
"""

from __future__ import annotations

import argparse


def add_parser(sub) -> None:
    p = sub.add_parser("prompts", help="prompts embedded for composed queries in SQL")
    psub = p.add_subparsers(dest="prompts_command", required=True, metavar="ACTION")
    add = psub.add_parser(
        "add",
        help="embed prompts with a space's text tower and store them",
        description="Stores each prompt's vector (and the neutral prompt's) for "
        "casebase.similar_cases_modified. Re-adding a prompt replaces its vector.",
    )
    add.add_argument("prompt", nargs="+", help="e.g. 'left pleural effusion'")
    add.add_argument("--space", help="embedding space (default: the default space)")
    add.set_defaults(run=run_add)
    listing = psub.add_parser("list", help="the stored prompts")
    listing.add_argument("--space", help="only this space's")
    listing.set_defaults(run=run_list)


def run_add(args: argparse.Namespace) -> int:
    from casebase.client import connect

    with connect() as client:
        stored = client.embed_prompts(args.prompt, space=args.space)
    space = stored[0].space if stored else args.space
    print(f"space {space}: {len(stored)} prompts stored: {', '.join(p.prompt for p in stored)}")
    return 0


def run_list(args: argparse.Namespace) -> int:
    from casebase.client import connect

    with connect() as client:
        stored = client.prompts(space=args.space)
    if not stored:
        print("no prompts stored: casebase prompts add 'left pleural effusion'")
    for p in stored:
        print(f"{p.space:<24} {p.prompt}")
    return 0
