"""`casebase ingest`: argument parsing for the ingest pipeline (the library does the work)."""

from __future__ import annotations

import argparse
import json

from casebase.errors import InputError


def parse_defaults(pairs: list[str] | None) -> dict[str, str]:
    from casebase.ingest.manifest import KNOWN

    out: dict[str, str] = {}
    for pair in pairs or []:
        if "=" not in pair:
            raise InputError(f"--set {pair!r} is not NAME=VALUE")
        name, value = (p.strip() for p in pair.split("=", 1))
        if name not in KNOWN:
            raise InputError(f"--set {name!r}: unknown name (known: {', '.join(KNOWN)})")
        out[name] = value
    return out


def add_parser(sub) -> None:
    p = sub.add_parser(
        "ingest",
        help="load a batch from a CSV manifest or a DICOM folder",
        description="Load a batch: idempotent (re-running adds nothing) and resumable.",
    )
    p.add_argument("source", help="a CSV manifest or a folder of DICOM files (recursive)")
    p.add_argument("--batch", required=True, help="batch name, e.g. 2026-11")
    model = p.add_mutually_exclusive_group()
    model.add_argument("--model", help="preset, open_clip name or hf-hub: id (CASEBASE_MODEL)")
    model.add_argument("--checkpoint", help="a checkpoint written by `casebase train`")
    p.add_argument("--pretrained", help="open_clip pretrained tag, with an open_clip --model name")
    p.add_argument(
        "--images-root",
        help="image paths are relative to this and must stay inside it (default: the "
        "manifest's folder)",
    )
    p.add_argument(
        "--allow-outside-root",
        action="store_true",
        help="let image paths (and symlinks) lead outside the images root",
    )
    p.add_argument(
        "--attributes",
        metavar="COLUMNS",
        help="extra manifest columns analysts may see, e.g. 'finding,grade' (sanitised; "
        "default: label,finding; 'none': none). The others are kept restricted",
    )
    p.add_argument("--columns", help="map site headers: 'patientid=patient_id,notes=report'")
    p.add_argument(
        "--set",
        action="append",
        metavar="NAME=VALUE",
        dest="defaults",
        help="value for rows that lack NAME, e.g. --set body_part=chest",
    )
    p.add_argument("--shard", default="0/1", help="I/N: load only shard I of N (parallel workers)")
    p.add_argument("--device", help="cpu or cuda (default: cuda when present)")
    p.add_argument("--batch-size", type=int, default=32, help="images per model batch")
    p.add_argument(
        "--precision",
        choices=("fp32", "bf16", "fp16"),
        default="fp32",
        help="autocast the model to bf16/fp16 (GPU speed; checked against fp32 first)",
    )
    p.add_argument("--workers", type=int, help="decode worker processes")
    p.add_argument("--chunk-size", type=int, default=256, help="studies per transaction")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from casebase.config import load_settings
    from casebase.ingest.manifest import parse_attribute_list, parse_column_map
    from casebase.ingest.pipeline import IngestOptions, ingest, parse_shard

    model = args.model or (None if args.checkpoint else load_settings().model)
    options = IngestOptions(
        batch=args.batch,
        model=model,
        pretrained=args.pretrained,
        checkpoint=args.checkpoint,
        images_root=args.images_root,
        allow_outside_root=args.allow_outside_root,
        attributes=parse_attribute_list(args.attributes),
        columns=parse_column_map(args.columns),
        defaults=parse_defaults(args.defaults),
        shard=parse_shard(args.shard),
        device=args.device or load_settings().device,
        batch_size=args.batch_size,
        precision=args.precision,
        workers=args.workers,
        chunk_size=args.chunk_size,
        progress=False if args.no_progress else None,
    )
    summary = ingest(args.source, options)
    print(json.dumps(summary.to_dict(), indent=2) if args.json else summary.render())
    return 0
