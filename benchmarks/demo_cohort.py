"""The demo cohort with a trained space, set up once for benchmarks/composed.py and rerank.py.

In ``--work`` (its own CASEBASE_HOME, so its own embedded server): the generated chest
cohort of ``casebase demo`` (``casebase.cohort.generate``: the findings are drawn on the
films, reports negate and hedge), ingested with ``tiny-random`` into database
``bench_cohort``, and a small open_clip model trained on it with ``casebase train`` from
random initialisation (no pretrained weights here), registered as space ``trained`` and
back-filled. The recipe is the demo's (``SMALL_RESNET_CFG``, lr 1e-3, weight decay 0.05)
with two changes for a text tower worth composing with: the text is the rule labeller's
findings ("cardiomegaly, pleural effusion", "no finding" for none) and the text context
is 40 tokens (16 in the demo's config, which cuts a long list of findings). Every step is
skipped when done: a second run reuses the database and the model (``--retrain`` trains
again from scratch).
"""

from __future__ import annotations

import copy
import json
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

BASE = "tiny-random"
TRAINED = "trained"
DATABASE = "bench_cohort"
BATCH = "cohort"


@dataclass(frozen=True)
class Cohort:
    url: str
    base: str
    trained: str
    training: str  # one line: how the model was trained (or that it was reused)


def use_home(work: Path) -> None:
    """Point casebase at ``work/home`` (its own embedded server), before any import of it
    reads the settings."""
    os.environ["CASEBASE_HOME"] = str(work / "home")
    for var in ("DATABASE_URL", "CASEBASE_DATABASE_URL"):
        os.environ.pop(var, None)


def stop_server() -> None:
    from casebase.config import load_settings
    from casebase.db import embedded

    embedded.stop(load_settings().embedded_dir)


def _database(name: str) -> str:
    """The database ``name`` of the home's server, created (and migrated) if missing."""
    import psycopg

    from casebase.db import migrate
    from casebase.db.connection import checked_url
    from casebase.db.databases import recreate_database, with_database

    server = checked_url()
    url = with_database(server, name)
    try:
        psycopg.connect(url).close()
    except psycopg.OperationalError:
        return recreate_database(server, name)
    migrate.upgrade(url)
    return url


def prepare(
    work: Path,
    *,
    n_chest: int = 400,
    epochs: int = 60,
    max_minutes: float = 12.0,
    retrain: bool = False,
    log=print,
) -> Cohort:
    from casebase.cohort import generate
    from casebase.db.connection import connect
    from casebase.ingest.pipeline import IngestOptions, ingest
    from casebase.train import add_checkpoint_space, reembed, train
    from casebase.train.checkpoint import SMALL_RESNET_CFG

    work.mkdir(parents=True, exist_ok=True)
    manifest = work / "cohort" / "manifest.csv"
    if not manifest.exists():
        log(f"generating {n_chest} chest films under {manifest.parent} ...")
        generate(manifest.parent, n_chest=n_chest, n_knee=0, seed=0)
    url = _database(DATABASE)
    summary = ingest(manifest, IngestOptions(batch=BATCH, model=BASE, progress=False), url=url)
    log(f"ingest: {summary.loaded} loaded, {summary.skipped} already there")

    run = work / "run"
    checkpoint = run / "model.pt"
    if retrain and run.exists():
        shutil.rmtree(run)
        with connect(url) as conn:
            conn.execute("DELETE FROM casebase.embedding_space WHERE name = %s", (TRAINED,))
            conn.commit()
    if checkpoint.exists():
        note = run / "training.txt"
        training = note.read_text().strip() if note.exists() else f"model from {checkpoint}"
        training += " (reused; --retrain to train again)"
    else:
        config = copy.deepcopy(SMALL_RESNET_CFG)
        config["model_cfg"]["text_cfg"]["context_length"] = 40
        arch = work / "architecture.json"
        arch.write_text(json.dumps(config, indent=2))
        started = time.perf_counter()
        with connect(url) as conn:
            result = train(
                conn,
                space=BASE,
                base=str(arch),
                text="findings",
                epochs=epochs,
                out=run,
                device="cpu",
                batch_size=64,
                lr=1e-3,
                weight_decay=0.05,
                patience=10,
                max_minutes=max_minutes,
                progress=False,
            )
        training = (
            f"trained {result.epochs_done} epochs in {time.perf_counter() - started:.0f} s "
            f"(stopped by {result.stopped}); held-out P@5 (shared finding) "
            f"{result.baseline_precision:.3f} -> {result.best_precision:.3f} at epoch "
            f"{result.best_epoch}"
        )
        (run / "training.txt").write_text(training)
        log(training)
    with connect(url) as conn:
        add_checkpoint_space(conn, checkpoint, name=TRAINED)
        reembed(conn, source=BASE, target=TRAINED, progress=False)
        conn.execute("ANALYZE casebase.embedding")
        conn.commit()
    return Cohort(url=url, base=BASE, trained=TRAINED, training=training)
