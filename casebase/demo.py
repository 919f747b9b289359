"""`casebase demo`: the offline end-to-end tour on the embedded database.

Generates a cohort (chest and knee films in which the findings are visible, with
reports that negate and hedge), ingests it, trains a small model on it when no
pretrained weights are available (saying so, with eval before and after), runs a
filtered search, prints the hits and the brief, writes the contact sheet, and
shows the SQL to do the same by hand. A re-run reuses everything already done.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

from casebase.config import load_settings
from casebase.errors import ModelError

BATCH = "demo-cohort"
BASE_SPACE = "tiny-random"
TRAINED_SPACE = "demo-trained"


def _pretrained_available(model: str) -> bool:
    from casebase.embedding import load_encoder

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
    import casebase
    from casebase.cohort import generate
    from casebase.db import migrate
    from casebase.db.connection import checked_url
    from casebase.ingest.pipeline import IngestOptions, ingest

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

    out("\n== 1. ingest (idempotent: a re-run loads nothing)")
    summary = ingest(manifest, IngestOptions(batch=BATCH, model=BASE_SPACE), url=url)
    out(summary.render())

    with casebase.connect(url) as client:
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
        from casebase.retrieval.cli import render_table

        out(render_table(hits[:10]) + f"\n  … {len(hits) - 10} more")

        out("\n== 4. the brief")
        brief = client.brief(
            hits,
            query=f"study {query}",
            filters={"modality": "CXR", "age": "30-90"},
            exclude_flags=[],
        )
        out(brief.render_text(max_ids=8))

        sheet = _contact_sheet(client, query, hits[:14], demo / "contact_sheet.png")
        out(f"\n== 5. contact sheet: {sheet}")

    out("\n== 6. the same by hand, in SQL")
    out(f'psql "{url}"')
    out(f"""SELECT rank, study_id, round(distance::numeric, 4) AS distance, age, sex, flags
FROM casebase.similar_cases('{query}', k => 50, age_min => 30, age_max => 90,
                            exclude_flags => ARRAY['portable']);

SELECT f.finding, count(*) FILTER (WHERE f.status = 'present') AS present,
       array_agg(s.study_id) FILTER (WHERE f.status = 'present') AS study_ids
FROM casebase.similar_cases('{query}', k => 50, age_min => 30, age_max => 90,
                            exclude_flags => ARRAY['portable']) s
JOIN casebase.findings f USING (study_id)
GROUP BY f.finding ORDER BY present DESC;""")
    out(f"\ndemo finished in {time.perf_counter() - started:.0f} s")
    return sheet


def _indent(text: str) -> str:
    return "\n".join("  " + line for line in text.splitlines())


def _train_once(client, out_dir: Path, minutes: float, out) -> str:
    """Train, register, back-fill and make default — each step skipped when done."""
    from casebase.db.spaces import list_spaces, set_default
    from casebase.train import add_checkpoint_space, reembed, train
    from casebase.train.checkpoint import SMALL_RESNET_CFG

    names = {s.name for s in list_spaces(client.conn)}
    client.conn.commit()
    if TRAINED_SPACE not in names:
        import json

        out_dir.mkdir(parents=True, exist_ok=True)
        config = out_dir / "architecture.json"
        config.write_text(json.dumps(SMALL_RESNET_CFG, indent=2))
        result = train(
            client.conn,
            space=BASE_SPACE,
            base=str(config),
            text="label:label",
            epochs=40,
            out=out_dir / "run",
            max_minutes=minutes,
            batch_size=64,
            lr=1e-3,
            weight_decay=0.05,
            patience=8,
        )
        out(_indent(result.render()))
        add_checkpoint_space(client.conn, result.checkpoint, name=TRAINED_SPACE)
    else:
        out(f"  space {TRAINED_SPACE} exists: training skipped")
    summary = reembed(client.conn, source=BASE_SPACE, target=TRAINED_SPACE)
    out(f"  re-embedded into {TRAINED_SPACE}: {summary}")
    set_default(client.conn, TRAINED_SPACE)
    client.conn.commit()
    return TRAINED_SPACE


def _query_study(client) -> str:
    row = client.conn.execute(
        "SELECT study_id FROM casebase.studies WHERE batch = %s AND modality = 'CXR' "
        "AND attributes ->> 'label' LIKE '%%pleural_effusion%%' AND NOT 'portable' = ANY(flags) "
        "ORDER BY study_id LIMIT 1",
        (BATCH,),
    ).fetchone()
    client.conn.commit()
    return row[0]


def _contact_sheet(client, query: str, hits, path: Path) -> Path:
    from casebase.retrieval.grid import _open, contact_sheet

    ids = [h.image_id for h in hits]
    paths = dict(
        client.conn.execute(
            "SELECT image_id, uri FROM casebase.images WHERE image_id = ANY(%s)", (ids,)
        ).fetchall()
    )
    row = client.conn.execute(
        "SELECT uri FROM casebase.images WHERE study_id = %s ORDER BY image_id LIMIT 1", (query,)
    ).fetchone()
    client.conn.commit()
    return contact_sheet(
        path, query_image=_open(row[0]), query_label=query, hits=hits, image_paths=paths
    )
