"""`casebase train`, `casebase spaces list|add|default|drop` and `casebase reembed`.

Argument parsing only: each command calls the client.
"""

from __future__ import annotations

import argparse
import json


def add_parser(sub) -> None:
    t = sub.add_parser(
        "train",
        help="fine-tune a space's model on its image-text pairs (contrastive)",
        description="Contrastive fine-tuning (open_clip's SigLIP loss) with a held-out split "
        "by patient, early stopping on held-out P@k, and a checkpoint that `casebase spaces "
        "add` registers. Re-running with the same --out resumes.",
    )
    t.add_argument("--space", help="the space whose images are trained on (default: default)")
    t.add_argument(
        "--base",
        help="start from: a preset, an open_clip name (with --pretrained), "
        "a checkpoint .pt, or an open_clip model config .json (random init); "
        "default: the space's own model",
    )
    t.add_argument("--pretrained", help="open_clip pretrained tag, with an open_clip --base")
    t.add_argument(
        "--text",
        nargs="+",
        default=["report"],
        metavar="SOURCE",
        help="report (sanitised impression + findings), findings (present "
        "findings as text), or label COLUMN / label:COLUMN (a manifest column)",
    )
    t.add_argument("--out", required=True, help="run directory (model.pt, model.json, last.pt)")
    t.add_argument("--epochs", type=int, default=10)
    t.add_argument("--batch-size", type=int, default=64)
    t.add_argument("--lr", type=float, default=1e-4)
    t.add_argument("--weight-decay", type=float, default=0.1)
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--patience", type=int, default=3, help="epochs without improvement")
    t.add_argument("--max-minutes", type=float, help="stop after this much wall-clock time")
    t.add_argument("--holdout", type=float, default=0.15, help="share of patients held out")
    t.add_argument("-k", type=int, default=5, help="k of the held-out precision@k")
    t.add_argument("--device", help="cpu or cuda (default: cuda when present)")
    t.add_argument(
        "--precision",
        choices=("fp32", "bf16"),
        help="autocast of the training steps (default: bf16 on CUDA, fp32 on CPU)",
    )
    t.add_argument("--workers", type=int, help="image decode workers (default: 0 on CPU)")
    t.add_argument("--no-progress", action="store_true")
    t.add_argument("--json", action="store_true")
    t.set_defaults(run=run_train)

    s = sub.add_parser("spaces", help="embedding spaces: list, add, default, drop")
    ssub = s.add_subparsers(dest="spaces_command", required=True, metavar="ACTION")
    listing = ssub.add_parser(
        "list", help="the spaces, their models and vector counts (* = default)"
    )
    add = ssub.add_parser("add", help="register a `casebase train` checkpoint as a new space")
    add.add_argument("--checkpoint", required=True, help="the model.pt written by train")
    add.add_argument("--name", help="space name (default: ckpt-<sha256 prefix>)")
    default = ssub.add_parser("default", help="make searches use this space")
    default.add_argument("name")
    drop = ssub.add_parser("drop", help="delete a non-default space and its vectors")
    drop.add_argument("name")
    for action in (listing, add, default, drop):
        action.set_defaults(run=run_spaces)

    r = sub.add_parser(
        "reembed",
        help="back-fill a space with the images of another",
        description="Resumable and idempotent: images already in --to are "
        "skipped; each chunk commits.",
    )
    r.add_argument("--from", dest="source", required=True, help="space whose images to embed")
    r.add_argument("--to", dest="target", required=True, help="space to fill (spaces add)")
    r.add_argument("--batch-size", type=int, default=64)
    r.add_argument("--workers", type=int, help="decode worker processes")
    r.add_argument("--device", help="cpu or cuda (default: cuda when present)")
    r.add_argument(
        "--precision",
        choices=("fp32", "bf16", "fp16"),
        default="fp32",
        help="autocast the model to bf16/fp16 (GPU speed; checked against fp32 first)",
    )
    r.add_argument(
        "--batch",
        action="append",
        dest="batches",
        metavar="NAME",
        help="only images of this ingest batch (repeatable)",
    )
    r.add_argument(
        "--fuse-text",
        metavar="SOURCE",
        help="label fusion (seed 003): findings or "
        "label:COLUMN; stores normalize(w_img*v_image + w_text*v_text)",
    )
    r.add_argument("--w-img", type=float, default=0.5)
    r.add_argument("--w-text", type=float, default=0.5)
    r.add_argument("--no-progress", action="store_true")
    r.add_argument("--json", action="store_true")
    r.set_defaults(run=run_reembed)


def run_train(args: argparse.Namespace) -> int:
    from casebase.client import connect

    with connect() as client:
        result = client.train(
            space=args.space,
            base=args.base,
            pretrained=args.pretrained,
            text=":".join(args.text),
            epochs=args.epochs,
            out=args.out,
            device=args.device or client.settings.device,
            batch_size=args.batch_size,
            precision=args.precision,
            lr=args.lr,
            weight_decay=args.weight_decay,
            seed=args.seed,
            patience=args.patience,
            max_minutes=args.max_minutes,
            holdout=args.holdout,
            k=args.k,
            workers=args.workers,
            progress=False if args.no_progress else None,
        )
    print(json.dumps(result.to_dict(), indent=2) if args.json else result.render())
    return 0


def run_spaces(args: argparse.Namespace) -> int:
    from casebase.client import connect
    from casebase.train.spaces import render_spaces

    with connect() as client:
        if args.spaces_command == "list":
            print(render_spaces(client.space_rows()))
        elif args.spaces_command == "add":
            space = client.add_space(args.checkpoint, name=args.name)
            current = next((s.name for s in client.spaces() if s.is_default), "SPACE")
            print(
                f"space {space.name} (dim {space.dim}) registered; fill it with: casebase "
                f"reembed --from {current} --to {space.name}"
            )
        elif args.spaces_command == "default":
            space = client.set_default_space(args.name)
            print(f"searches now use space {space.name}")
        else:
            n = client.drop_space(args.name)
            print(f"space {args.name} dropped ({n} vectors)")
    return 0


def run_reembed(args: argparse.Namespace) -> int:
    from casebase.client import connect

    with connect() as client:
        summary = client.reembed(
            source=args.source,
            target=args.target,
            batch_size=args.batch_size,
            workers=args.workers,
            device=args.device or client.settings.device,
            precision=args.precision,
            fuse_text=args.fuse_text,
            w_img=args.w_img,
            w_text=args.w_text,
            batches=args.batches,
            progress=False if args.no_progress else None,
        )
    print(json.dumps(summary.to_dict(), indent=2) if args.json else summary.render())
    return 0
