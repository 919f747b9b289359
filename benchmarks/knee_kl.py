"""Knee radiographs graded 0-4 (Kellgren-Lawrence): does `casebase train` learn fine detail?

    python benchmarks/knee_kl.py --data ../shared/data/knee_kl --work /tmp/knee \\
        --methods raw,tiny-random,recipe,shipped --shipped-src /tmp/base --seeds 0,1,2 \\
        --splits val,test

One database, three ingest batches (knee_data.py: the fixed test split, a validation
fifth of the other images' near-duplicate groups, the rest to train on), all ingested
with ``tiny-random``. Every trained model is trained with ``--exclude-batch knee-val
--exclude-batch knee-test`` and measured with ``casebase eval --batch knee-val`` /
``--batch knee-test`` (queries and index = that batch; a query's near-duplicate group is
its "patient" and never counts): P@5, P@10, mAP@5 by exact grade, and P@5 within one
grade (``--match within:1``). Methods:

- ``raw``: grey pixels squashed to 64x64, L2-normalised, exact kNN (numpy; no learning);
- ``tiny-random``: the random-weight space everything is ingested with;
- ``shipped``: ``casebase train`` as shipped before this issue (commit 95f4e22, passed as
  ``--shipped-src``, a ``git archive`` of it), running the issue's command ``casebase
  train --space tiny-random --base <SMALL_RESNET_CFG as JSON> --text label:kl --epochs 60
  --max-minutes 12``: its defaults were lr 1e-4, weight decay 0.1, batch 64, patience 3;
  64 px squashed, no augmentation, SigLIP with same-text positives. It cannot exclude
  batches, so it trains in a second database holding knee-train only, as the issue did;
  its checkpoint is then registered and back-filled in the benchmark's database;
- ``issue``: the same command run by today's code (its defaults for random init);
- ``recipe``: ``RECIPE`` below, i.e. ``casebase train --space tiny-random --base
  small-resnet --text label:kl --ordinal --hflip --exclude-batch knee-val --exclude-batch
  knee-test`` (128 px letterboxed, rotation/zoom/shift/exposure jitter and mirror images,
  ordinal SigLIP targets, flip test-time augmentation; 30 epochs, lr 1e-3, weight decay
  0.05, patience 10: the random-init defaults). ``--set epochs=14 --name recipe-14ep`` is
  the shorter run sized for a machine whose other jobs inflate CPU time.

``--set key=value`` changes the recipe (for ablations; ``--name`` labels the row):
lr, epochs, batch_size, weight_decay, patience, max_minutes, base, image_size,
resize_mode, ordinal, neighbour, balanced, hflip, augment (off), precision (bf16).
Results are appended to ``WORK/results.jsonl`` (one line per method, seed and split);
``--table`` prints the table of everything there without running anything.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path

import knee_data as kd
import numpy as np

KS = (5, 10)
EXCLUDE = ("knee-val", "knee-test")
ISSUE = {"epochs": 60, "max_minutes": 12.0}  # the issue's command; lr etc. are defaults
RECIPE = {
    "base": "small-resnet",
    "image_size": 128,
    "ordinal": True,
    "hflip": True,
}


def _value(text: str):
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    return {"true": True, "false": False}.get(text.lower(), text)


def _train_call(options: dict, work: Path, seed: int) -> tuple[dict, object]:
    """train() keyword arguments and a Recipe from a flat option dict."""
    from casebase.train.augment import Augment
    from casebase.train.checkpoint import SMALL_RESNET_CFG
    from casebase.train.loop import Recipe
    from casebase.train.presets import ARCHITECTURES, architecture

    o = dict(options)
    base = o.pop("base", None)
    size = o.pop("image_size", None)
    resize = o.pop("resize_mode", None)
    if base == "issue-json" or resize is not None:
        cfg = SMALL_RESNET_CFG if base == "issue-json" else architecture(base, size)
        if resize is not None:
            cfg = {**cfg, "preprocess_cfg": {**cfg["preprocess_cfg"], "resize_mode": resize}}
        path = work / f"arch-{base}-{size}-{resize}.json"
        path.write_text(json.dumps(cfg, indent=2))
        base, size = str(path), (size if base == "issue-json" else None)
    elif base not in ARCHITECTURES and base is not None:
        raise SystemExit(f"unknown base {base}")
    augment = Augment.off() if o.pop("augment", None) == "off" else Augment()
    augment = Augment(**{**augment.to_dict(), "hflip": bool(o.pop("hflip", False))})
    recipe = Recipe(
        image_size=size,
        augment=augment,
        balanced=bool(o.pop("balanced", False)),
        ordinal=bool(o.pop("ordinal", False)),
        neighbour=float(o.pop("neighbour", 0.5)),
    )
    if o.pop("cpu_bf16", False):  # the earlier name of --set precision=bf16
        o["precision"] = "bf16"
    return {"base": base, "seed": seed, **o}, recipe


def prepare(data: Path, work: Path, url: str) -> dict[str, Path]:
    from casebase.ingest.options import IngestOptions
    from casebase.ingest.pipeline import ingest

    images = kd.read_images(data)
    groups = kd.duplicate_groups(images, work / "duplicate_groups.json")
    manifests = kd.write_manifests(images, groups, work / "manifests")
    for batch, manifest in manifests.items():
        options = IngestOptions(
            batch=batch,
            model="tiny-random",
            progress=False,
            images_root=str(data.resolve()),  # the manifests live elsewhere (WORK/manifests)
            attributes=("kl", "kl_expert_ii"),  # the grades, for --text label:kl / --label kl
        )
        ingest(manifest, options, url=url)
    return manifests


def evaluate(url: str, space: str, split: str) -> dict[str, float]:
    import casebase

    common = {"space": space, "label": "kl", "modality": "KXR", "queries": 10_000}
    with casebase.connect(url) as client:
        exact = client.evaluate(ks=KS, match="exact", batches=[split], **common)
        near = client.evaluate(ks=(5,), match="within:1", batches=[split], **common)
    out = {}
    for k in KS:
        out[f"P@{k}"] = exact.precision_at_k[k]
        out[f"mAP@{k}"] = exact.map_at_k[k]
    out["P@5±1"] = near.precision_at_k[5]
    out["n_queries"] = exact.n_queries
    return out


def train_and_register(url: str, name: str, options: dict, work: Path, seed: int) -> dict:
    """Train (knee-val and knee-test excluded), register, back-fill the eval batches."""
    from casebase.db.connection import connect
    from casebase.train import add_checkpoint_space, reembed, train
    from casebase.train.loop import epoch_line

    kwargs, recipe = _train_call(options, work, seed)
    out = work / "runs" / f"{name}-s{seed}"
    with connect(url) as conn:
        result = train(
            conn,
            space="tiny-random",
            text="label:kl",
            out=out,
            device="cpu",
            recipe=recipe,
            exclude_batches=EXCLUDE,
            on_epoch=lambda r: print("  " + epoch_line(r), file=sys.stderr, flush=True),
            **kwargs,
        )
        space = f"{name}-s{seed}"
        _register(conn, result.checkpoint, space, add_checkpoint_space, reembed)
    return {
        "space": space,
        "cpu_seconds": result.cpu_seconds,
        "seconds": result.seconds,
        "epochs": result.epochs_done,
        "best_epoch": result.best_epoch,
        "stopped": result.stopped,
        "held_out": result.best_precision,
        "options": {**kwargs, "recipe": recipe.to_dict()},
    }


def _register(conn, checkpoint, space, add_checkpoint_space, reembed) -> None:
    from casebase.db.spaces import list_spaces

    if space not in {s.name for s in list_spaces(conn)}:
        add_checkpoint_space(conn, checkpoint, name=space)
    conn.commit()
    reembed(conn, source="tiny-random", target=space, batches=list(EXCLUDE), progress=False)


def train_shipped(url: str, server: str, manifests: dict, src: Path, work: Path, seed: int):
    """The issue's command, run by the code before this change, in a train-only database."""
    from casebase.db.connection import connect
    from casebase.db.databases import recreate_database
    from casebase.train import add_checkpoint_space, reembed
    from casebase.train.checkpoint import SMALL_RESNET_CFG

    out = work / "runs" / f"shipped-s{seed}"
    if not (out / "model.pt").is_file():
        train_url = recreate_database(server, "knee_train_only")
        env = {**os.environ, "PYTHONPATH": str(src), "DATABASE_URL": train_url}
        cli = [sys.executable, "-m", "casebase.cli"]
        subprocess.run(
            [*cli, "ingest", str(manifests["knee-train"]), "--batch", "knee-train",
             "--model", "tiny-random", "--no-progress"],
            env=env, check=True, stdout=subprocess.DEVNULL, cwd=src,
        )  # fmt: skip
        arch = work / "issue-small-resnet-64.json"
        arch.write_text(json.dumps(SMALL_RESNET_CFG, indent=2))
        cpu = _children_cpu()
        wall = time.perf_counter()
        subprocess.run(
            [*cli, "train", "--space", "tiny-random", "--base", str(arch), "--text", "label:kl",
             "--epochs", "60", "--max-minutes", "12", "--seed", str(seed), "--device", "cpu",
             "--no-progress", "--out", str(out)],
            env=env, check=True, cwd=src,  # cwd: `-m` imports casebase from there
        )  # fmt: skip
        timing = {"cpu_seconds": _children_cpu() - cpu, "seconds": time.perf_counter() - wall}
        (out / "timing.json").write_text(json.dumps(timing))
    timing = json.loads((out / "timing.json").read_text())
    space = f"shipped-s{seed}"
    with connect(url) as conn:
        _register(conn, out / "model.pt", space, add_checkpoint_space, reembed)
    info = json.loads((out / "model.json").read_text())
    return {
        "space": space,
        **timing,
        "epochs": len(info["history"]),
        "best_epoch": info["best_epoch"],
        "held_out": info["held_out_precision"],
        "options": {"command": "issue", "src": str(src)},
    }


def _children_cpu() -> float:
    import resource

    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return kids.ru_utime + kids.ru_stime


def raw_rows(manifests: dict, splits: list[str]) -> list[dict]:
    rows = []
    for split in splits:
        paths, grades, groups = kd.split_rows(manifests[split])
        metrics = kd.retrieval_metrics(kd.raw_pixels(paths), grades, groups, KS)
        rows.append({"method": "raw", "seed": 0, "split": split, **metrics})
    return rows


def print_table(results: Path) -> None:
    rows = [json.loads(line) for line in results.read_text().splitlines() if line.strip()]
    latest: dict[tuple, dict] = {}
    for r in rows:  # a re-run of a method, seed and split replaces the earlier one
        latest[(r["method"], r["seed"], r["split"])] = r
    by: dict[tuple, list[dict]] = defaultdict(list)
    for (method, _, split), r in latest.items():
        by[(method, split)].append(r)
    cols = ["P@5", "P@10", "mAP@5", "P@5±1"]
    print(f"\n{'method':<28} {'split':<10} {'seeds':>5} " + "".join(f"{c:>15}" for c in cols)
          + f"{'train CPU s':>18}{'wall s':>8}")  # fmt: skip
    for (method, split), group in sorted(by.items(), key=lambda kv: (kv[0][1], kv[0][0])):
        cells = []
        for c in cols:
            v = np.array([g[c] for g in group])
            cells.append(f"{v.mean():.3f} ± {v.std():.3f}" if len(v) > 1 else f"{v[0]:.3f}")
        cpu = [g["cpu_seconds"] for g in group if "cpu_seconds" in g]
        wall = [g["seconds"] for g in group if "seconds" in g]
        timing = f"{np.mean(cpu):>18.0f}{np.mean(wall):>8.0f}" if cpu else ""
        print(f"{method:<28} {split:<10} {len(group):>5} " + "".join(f"{c:>15}" for c in cells)
              + timing)  # fmt: skip
    print("(mean ± standard deviation over seeds; CPU = the training process's user+system)")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data", default="../shared/data/knee_kl")
    p.add_argument("--work", required=True, help="working folder (reused between runs)")
    p.add_argument("--methods", default="raw,tiny-random,recipe")
    p.add_argument("--seeds", default="0")
    p.add_argument("--splits", default="val")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--name", default="recipe", help="row label of the recipe method")
    p.add_argument("--shipped-src", help="source tree of the code before this change")
    p.add_argument("--table", action="store_true", help="only print the table")
    args = p.parse_args(argv)

    work = Path(args.work).resolve()
    results = work / "results.jsonl"
    if args.table:
        print_table(results)
        return 0
    work.mkdir(parents=True, exist_ok=True)
    os.environ["CASEBASE_HOME"] = str(work / "home")  # its own embedded server
    for var in ("DATABASE_URL", "CASEBASE_DATABASE_URL"):
        os.environ.pop(var, None)
    import torch

    torch.set_num_threads(min(2, os.cpu_count() or 1))

    from casebase.config import load_settings
    from casebase.db import embedded
    from casebase.db.connection import checked_url
    from casebase.db.databases import with_database

    server = checked_url()
    url = with_database(server, "knee")
    _ensure_database(server, url)
    manifests = prepare(Path(args.data), work, url)
    splits = [s if s.startswith("knee-") else f"knee-{s}" for s in args.splits.split(",")]
    seeds = [int(s) for s in args.seeds.split(",")]
    overrides = dict(kv.split("=", 1) for kv in args.set)
    out = results.open("a")
    try:
        for method in args.methods.split(","):
            if method == "raw":
                for row in raw_rows(manifests, splits):
                    out.write(json.dumps(row) + "\n")
                continue
            if method == "tiny-random":
                for split in splits:
                    row = {"method": method, "seed": 0, "split": split}
                    out.write(json.dumps({**row, **evaluate(url, "tiny-random", split)}) + "\n")
                continue
            for seed in seeds:
                if method == "shipped":
                    if not args.shipped_src:
                        raise SystemExit("--methods shipped needs --shipped-src")
                    info = train_shipped(url, server, manifests, Path(args.shipped_src), work,
                                         seed)  # fmt: skip
                    label = "shipped"
                elif method == "issue":
                    options = {"base": "issue-json", **ISSUE}
                    info, label = train_and_register(url, "issue", options, work, seed), "issue"
                else:
                    options = {**RECIPE, **{k: _value(v) for k, v in overrides.items()}}
                    info = train_and_register(url, args.name, options, work, seed)
                    label = args.name
                for split in splits:
                    row = {"method": label, "seed": seed, "split": split, **info}
                    row.update(evaluate(url, info["space"], split))
                    out.write(json.dumps(row) + "\n")
                    out.flush()
                    print(f"{label} seed {seed} {split}: " + ", ".join(
                        f"{k} {row[k]:.3f}" for k in ("P@5", "P@10", "mAP@5", "P@5±1")
                    ), flush=True)  # fmt: skip
    finally:
        out.close()
        embedded.stop(load_settings().embedded_dir)
    print_table(results)
    return 0


def _ensure_database(server: str, url: str) -> None:
    import psycopg

    from casebase.db import migrate
    from casebase.db.databases import with_database

    with psycopg.connect(with_database(server, "postgres"), autocommit=True) as conn:
        if not conn.execute("SELECT 1 FROM pg_database WHERE datname = 'knee'").fetchone():
            conn.execute('CREATE DATABASE "knee"')
    migrate.upgrade(url)


if __name__ == "__main__":
    sys.exit(main())
