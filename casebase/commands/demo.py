"""`casebase demo`: the offline end-to-end tour on the embedded database.

Generates a cohort (chest and knee films in which the findings are visible, with
reports that negate and hedge), ingests it, trains a small model on it when no
pretrained weights are available (saying so, with eval before and after), runs a
filtered search, prints the hits and the brief, writes the contact sheet, and
shows the SQL to do the same by hand. A re-run reuses everything already done.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from casebase.commands.search import render_table

if TYPE_CHECKING:
    from casebase.client import Client

BATCH = "demo-cohort"
BASE_SPACE = "tiny-random"
TRAINED_SPACE = "demo-trained"


def add_parser(sub) -> None:
    p = sub.add_parser("demo", help="the offline end-to-end demo on the embedded database")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    run_demo()
    return 0


def _pretrained_available(model: str) -> bool:
    from casebase.embedding import load_encoder
    from casebase.errors import ModelError

    try:
        load_encoder(model, device="cpu")
    except ModelError:
        return False
    return True


def run_demo(
    out: Callable[[str], None] = print,
    *,
    n_chest: int = 400,
    n_knee: int = 120,
    train_minutes: float = 2.0,
) -> Path:
    """Run the tour; return the contact sheet's path."""
    from casebase.client import connect
    from casebase.cohort import generate
    from casebase.config import load_settings
    from casebase.db import migrate
    from casebase.db.connection import checked_url

    started = time.perf_counter()
    settings = load_settings()
    url = checked_url(settings)
    migrate.upgrade(url)
    demo = settings.home / "demo"
    manifest = demo / "cohort" / "manifest.csv"
    out(f"== casebase demo (database {url})")
    if not manifest.exists():
        out(
            f"generating a cohort of {n_chest} chest and {n_knee} knee radiographs with reports "
            f"under {manifest.parent} (synthetic; no patient data) ..."
        )
        generate(manifest.parent, n_chest=n_chest, n_knee=n_knee, seed=0)

    with connect(url, settings=settings) as client:
        out("\n== 1. ingest (idempotent: a re-run loads nothing)")
        out(client.ingest(manifest, batch=BATCH, model=BASE_SPACE).render())

        out("\n== 2. the model")
        if _pretrained_available(settings.model):
            out(
                f"pretrained weights for {settings.model} are available; "
                f"`casebase ingest --model {settings.model}` gives a real space"
            )
        else:
            out(
                f"no pretrained weights for {settings.model} on this machine (offline): "
                "training a small open_clip model on the cohort with `casebase train` instead "
                "(random initialisation; its numbers are about this cohort only)"
            )
        before = client.evaluate(
            space=BASE_SPACE, label="label", ks=(5, 10), queries=100, modality="CXR", match="exact"
        )
        out("before training (tiny-random, random weights):")
        out(_indent(before.render()))
        trained = _train_once(client, demo / "model", train_minutes, out)
        after = client.evaluate(
            space=trained, label="label", ks=(5, 10), queries=100, modality="CXR", match="exact"
        )
        out(f"after training ({trained}):")
        out(_indent(after.render()))

        query = _query_study(client)
        out(
            f"\n== 3. search: the 50 studies most similar to {query}, CXR only, "
            "age 30-90, excluding portable films"
        )
        hits = client.search(study_id=query, k=50, age=(30, 90), exclude_flags=["portable"])
        out(render_table(hits[:10]) + f"\n  … {len(hits) - 10} more")

        out("\n== 4. the brief")
        brief = client.brief(
            hits,
            query=f"study {query}",
            filters={"modality": "CXR", "age": "30-90"},
            exclude_flags=[],
        )
        out(brief.render_text(max_ids=8))

        sheet = client.contact_sheet(demo / "contact_sheet.png", hits[:14], study_id=query)
        out(f"\n== 5. contact sheet: {sheet}")

    out("\n== 6. the same by hand, in SQL")
    out(f'psql "{url}"')
    from importlib.resources import files

    by_hand = files("casebase.commands").joinpath("demo.sql").read_text(encoding="utf-8")
    out("\n".join(ln for ln in by_hand.splitlines() if not ln.startswith("--")).format(query=query))
    out(f"\ndemo finished in {time.perf_counter() - started:.0f} s")
    return sheet


def _indent(text: str) -> str:
    return "\n".join("  " + line for line in text.splitlines())


def _train_once(client: Client, out_dir: Path, minutes: float, out) -> str:
    """Train, register, back-fill and make default — each step skipped when done."""
    from casebase.train.loop import Recipe

    if TRAINED_SPACE not in {s.name for s in client.spaces()}:
        out_dir.mkdir(parents=True, exist_ok=True)
        # `casebase train --base small-resnet --image-size 64 --epochs 12`: the random-init
        # defaults otherwise. 12 epochs fit the budget on 2 cores; planning more than fit
        # would leave the run in its warm-up, its best epoch the untrained first one.
        result = client.train(
            space=BASE_SPACE,
            base="small-resnet",
            text="label:label",
            epochs=12,
            out=out_dir / "run",
            max_minutes=minutes,
            recipe=Recipe(image_size=64),
        )
        out(_indent(result.render()))
        client.add_space(result.checkpoint, name=TRAINED_SPACE)
    else:
        out(f"  space {TRAINED_SPACE} exists: training skipped")
    summary = client.reembed(source=BASE_SPACE, target=TRAINED_SPACE)
    out(f"  re-embedded into {TRAINED_SPACE}: {summary}")
    client.set_default_space(TRAINED_SPACE)
    return TRAINED_SPACE


def _query_study(client: Client) -> str:
    """A chest film with a pleural effusion, not portable: the tour's query."""
    ids = client.study_ids(
        batch=BATCH,
        modality="CXR",
        exclude_flags=["portable"],
        attribute_contains={"label": "pleural_effusion"},
        limit=1,
    )
    return ids[0]
