"""Ingest benchmark: does the pipeline keep the model busy, and how fast is COPY?

On the same N images it times

- **model only**: tensors decoded and preprocessed beforehand, fed straight to
  ``Encoder.encode_images`` (the ceiling);
- **stream**: file → decode → preprocess in DataLoader workers → embed, via
  ``Encoder.embed_stream``, worker start-up included;
- **casebase ingest**: the whole pipeline of ``casebase ingest`` on a manifest of
  the same images (read → validate → hash, decode, quality stats in workers →
  embed → sanitise + label reports → binary COPY, one transaction per chunk)
  into a fresh database;

and prints images/s and each ratio to model only (target: ≥ 0.9), and where the
cores went during the whole ingest: CPU seconds of this process (the model's
threads, the writer thread), of the decode workers, and of the embedded
PostgreSQL (COPY, HNSW inserts), read from /proc, against wall × cores. Then it
times the COPY stage alone: ``--copy-rows`` synthetic studies with one
``--copy-dim`` vector each, through the loader's binary COPY (rows/s).
It runs ``tiny-random`` and a ViT-B-32 with random weights (the architecture of
``clip-vit-b-32``, for timing only: its vectors mean nothing, which is why it
needs ``allow_random_weights=True``).

    python benchmarks/ingest.py --images ../shared/data/covid_cxr/images

The labeller (spaCy, lexicon) is loaded once before the timings, as the model is:
both are per-process start-up costs, printed apart. ``--copy-rows 0`` skips the
COPY stage.

Threads: the model's intra-op threads and the decode workers share the cores.
By default torch keeps one thread per core and, on CPU, ``embed_stream`` starts
one (low-priority) decode worker per core, up to 8; a model much cheaper than
decoding (tiny-random) runs on one intra-op thread while streaming.
``--threads`` / ``--workers`` override.

One named model, on a GPU (the number to take the day one is available):

    python benchmarks/ingest.py --device cuda --model metaclip-pe-core-bigg-448 --random-weights

``--model`` takes a preset or an open_clip architecture; ``--random-weights`` builds its
architecture with seeded random weights (no download; timing only: the vectors mean
nothing). It prints images/s of the model alone, of the decode + embed stream, and of
the whole ``casebase ingest`` (``--stages``), each with the peak GPU memory; precision
defaults to bf16 on CUDA (``--precision``). ``--device cpu --model tiny-random`` is the
smoke check this machine can run; ``--device cuda`` without a GPU is a one-line error.
"""

from __future__ import annotations

import argparse
import logging
import os
import resource
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from PIL import Image

from casebase.embedding import Encoder, default_workers, load_encoder

REPO = Path(__file__).resolve().parents[1]

MODELS = {  # --models key: (label printed, loader)
    "tiny-random": ("tiny-random", lambda: load_encoder("tiny-random", device="cpu")),
    "vit-b-32-random": (
        "ViT-B-32 (random weights, timing only)",
        lambda: load_encoder("ViT-B-32", pretrained=None, allow_random_weights=True, device="cpu"),
    ),
}
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg"}


def load_image(path: Path) -> Image.Image:
    """Module-level, so DataLoader workers can use it (what ingest will supply)."""
    return Image.open(path)


def model_only(encoder: Encoder, tensors: torch.Tensor, batch_size: int) -> float:
    encoder.encode_images(tensors[:batch_size])  # warm-up (allocations, kernels)
    start = time.perf_counter()
    for i in range(0, len(tensors), batch_size):
        encoder.encode_images(tensors[i : i + batch_size])
    return len(tensors) / (time.perf_counter() - start)


def pipeline(encoder: Encoder, paths: list[Path], batch_size: int, workers: int) -> float:
    start = time.perf_counter()
    done = 0
    for ok, vectors, failed in encoder.embed_stream(
        paths, load_image, batch_size=batch_size, workers=workers
    ):
        assert len(ok) == len(vectors), failed
        done += len(ok) + len(failed)
    assert done == len(paths)
    return len(paths) / (time.perf_counter() - start)


def fresh_database(name: str) -> str:
    """A new, migrated database on the configured or embedded server."""
    from casebase.db.connection import checked_url
    from casebase.db.databases import recreate_database

    return recreate_database(checked_url(), name)


@dataclass(frozen=True)
class CpuSeconds:
    """Where the cores went during one ingest: CPU seconds per party, and the wall time."""

    main: float  # this process: the model's threads, the writer thread, bookkeeping
    workers: float  # decode workers (counted once they exit)
    server: float | None  # the embedded PostgreSQL, None when it is not on this host
    wall: float


def _proc_seconds(pid: int, *, children: bool) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = int(fields[11]) + int(fields[12])  # utime, stime
    if children:
        ticks += int(fields[13]) + int(fields[14])  # cutime, cstime: reaped backends
    return ticks / os.sysconf("SC_CLK_TCK")


def server_cpu_seconds() -> float | None:
    """CPU seconds the embedded server has used so far (postmaster, live backends and the
    backends it has reaped), or None off Linux or with an external database."""
    from casebase.config import load_settings
    from casebase.db import embedded

    settings = load_settings()
    if settings.database_url or not Path("/proc").is_dir():
        return None
    pid = embedded.status(settings.embedded_dir).pid
    if pid is None:
        return None
    total = _proc_seconds(pid, children=True)
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            if int(stat.read_text().rsplit(")", 1)[1].split()[1]) == pid:
                total += _proc_seconds(int(stat.parent.name), children=False)
        except (OSError, ValueError, IndexError):  # a process that just exited
            continue
    return total


def _own_seconds(who: int) -> float:
    usage = resource.getrusage(who)
    return usage.ru_utime + usage.ru_stime


def whole_ingest(
    encoder: Encoder, paths: list[Path], batch_size: int, workers: int, tmp: Path
) -> tuple[float, CpuSeconds]:
    """images/s of casebase's own ingest (reports included) into a fresh database."""
    import csv

    from casebase.ingest.pipeline import IngestOptions, ingest

    manifest = tmp / "manifest.csv"
    # Images stay inside their root (ingest confines image_path): the root is the images' folder.
    root = Path(os.path.commonpath([str(Path(p).resolve().parent) for p in paths]))
    with manifest.open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["study_id", "image_path", "modality", "body_part", "report"])
        for i, p in enumerate(paths):
            w.writerow(
                [
                    f"B{i:06d}",
                    str(Path(p).resolve().relative_to(root)),
                    "CR",
                    "CHEST",
                    "FINDINGS: Small left pleural effusion. No pneumothorax.\n"
                    "IMPRESSION: Possible left lower lobe pneumonia.",
                ]
            )
    url = fresh_database("bench_ingest")
    options = IngestOptions(
        batch="bench",
        batch_size=batch_size,
        workers=workers,
        progress=False,
        images_root=str(root),
    )
    server0 = server_cpu_seconds()
    main0, kids0 = _own_seconds(resource.RUSAGE_SELF), _own_seconds(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    summary = ingest(manifest, options, url=url, encoder=encoder)
    seconds = time.perf_counter() - start
    server1 = server_cpu_seconds()
    cpu = CpuSeconds(
        main=_own_seconds(resource.RUSAGE_SELF) - main0,
        workers=_own_seconds(resource.RUSAGE_CHILDREN) - kids0,
        server=None if server0 is None or server1 is None else server1 - server0,
        wall=seconds,
    )
    assert summary.loaded == len(paths), summary
    return len(paths) / seconds, cpu


def copy_stage(rows: int, dim: int, *, defer_index: bool) -> tuple[float, float]:
    """rows/s of the binary COPY of whole studies (study, image, embedding rows), and
    the seconds of the HNSW build afterwards when the index was deferred."""
    from casebase.db import spaces
    from casebase.db.connection import connect
    from casebase.ingest.synthetic import load_set, make_set

    data = make_set(rows, dim, seed=0, modalities=("CXR",))
    url = fresh_database("bench_copy")
    with connect(url) as conn:
        start = time.perf_counter()
        space = load_set(conn, data, chunk=10_000, defer_index=defer_index)
        seconds = time.perf_counter() - start
        n = conn.execute("SELECT count(*) FROM casebase.embedding").fetchone()[0]
        assert n == rows and space.dim == dim
        build = 0.0
        if defer_index:
            conn.execute("SET maintenance_work_mem = '2GB'")
            start = time.perf_counter()
            spaces.create_vector_index(conn, space, "CXR")
            conn.commit()
            build = time.perf_counter() - start
    return rows / seconds, build


def load_named(model: str, *, random_weights: bool, device: str, precision: str) -> Encoder:
    """A preset or open_clip architecture; with ``random_weights`` its architecture with
    seeded random weights (``tiny-random`` is random already)."""
    from casebase.embedding import PRESETS

    preset = PRESETS.get(model)
    if not random_weights or (preset is not None and preset.random_seed is not None):
        return load_encoder(model, device=device, precision=precision)
    arch = preset.model_name if preset is not None else model
    return load_encoder(
        arch, pretrained=None, allow_random_weights=True, device=device, precision=precision
    )


def _peak_gib(device: str) -> float | None:
    if not device.startswith("cuda"):
        return None
    peak = torch.cuda.max_memory_allocated() / 2**30
    torch.cuda.reset_peak_memory_stats()
    return peak


def one_model(args: argparse.Namespace, paths: list[Path]) -> None:
    """``--model``: one model on ``--device``, stage by stage, with peak GPU memory."""
    import tempfile

    device = args.device
    precision = args.precision or ("bf16" if device.startswith("cuda") else "fp32")
    workers = default_workers(device) if args.workers is None else args.workers
    start = time.perf_counter()
    encoder = load_named(
        args.model, random_weights=args.random_weights, device=device, precision=precision
    )
    loaded = time.perf_counter() - start
    params = sum(p.numel() for p in encoder.model.visual.parameters())
    where = torch.cuda.get_device_name(device) if device.startswith("cuda") else "CPU"
    random = args.random_weights or encoder.spec.name == "tiny-random"
    print(
        f"{args.model} ({encoder.spec.model_name}, {'random' if random else 'pretrained'} "
        f"weights): image tower {params / 1e6:,.1f} M parameters, {encoder.spec.image_size} "
        f"px, dim {encoder.spec.dim}; loaded in {loaded:.1f} s"
    )
    agrees = (
        ""
        if encoder.agreement is None
        else f" (least cosine with fp32 on the probe batch: {encoder.agreement:.5f})"
    )
    print(
        f"{where}, {precision}{agrees}, batch {args.batch_size}, {workers} decode workers, "
        f"{len(paths)} images from {args.images}, torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads"
    )
    _peak_gib(device)
    stages = [s.strip() for s in args.stages.split(",")]
    rows: list[tuple[str, float, float | None]] = []
    if "model" in stages:
        tensors = torch.stack([encoder.preprocess(load_image(p)) for p in paths])
        if device.startswith("cuda"):
            tensors = tensors.pin_memory()
        encoder.encode_images(tensors[: args.batch_size])  # warm-up: kernels, allocator
        rows.append(
            ("model only", model_only(encoder, tensors, args.batch_size), _peak_gib(device))
        )
        del tensors
    if "stream" in stages:
        rate = pipeline(encoder, paths, args.batch_size, workers)
        rows.append(("decode + embed stream", rate, _peak_gib(device)))
    if "ingest" in stages:
        with tempfile.TemporaryDirectory() as tmp:
            rate, _ = whole_ingest(encoder, paths, args.batch_size, workers, Path(tmp))
        rows.append(("casebase ingest", rate, _peak_gib(device)))
    print(f"{'stage':<24} {'images/s':>10}  {'peak GPU GiB':>12}")
    for stage, rate, peak in rows:
        gib = "n/a (CPU)" if peak is None else f"{peak:.2f}"
        print(f"{stage:<24} {rate:>10.1f}  {gib:>12}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--images", type=Path, default=REPO.parent / "shared" / "data" / "covid_cxr" / "images"
    )
    parser.add_argument("-n", type=int, default=512, help="number of images (default 512)")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument(
        "--workers",
        type=int,
        default=None,
        help=f"decode workers (default here: {default_workers()})",
    )
    parser.add_argument(
        "--threads",
        type=int,
        default=None,
        help=f"torch intra-op threads (default here: {torch.get_num_threads()})",
    )
    parser.add_argument(
        "--repeat",
        type=int,
        default=1,
        help="alternate the two measurements this many times, keep the best "
        "of each (for shared, noisy machines)",
    )
    parser.add_argument(
        "--models", default=",".join(MODELS), help="comma-separated subset of: " + ", ".join(MODELS)
    )
    parser.add_argument("--copy-rows", type=int, default=100_000, help="0: no COPY stage")
    parser.add_argument("--copy-dim", type=int, default=512)
    one = parser.add_argument_group("one named model (e.g. on a GPU)")
    one.add_argument("--model", help="a preset or open_clip architecture: this model only")
    one.add_argument(
        "--random-weights", action="store_true", help="its architecture, random weights"
    )
    one.add_argument("--device", default="cpu", help="cpu or cuda (default cpu)")
    one.add_argument(
        "--precision", choices=("fp32", "bf16", "fp16"), help="default: bf16 on cuda, else fp32"
    )
    one.add_argument(
        "--stages", default="model,stream,ingest", help="of: model, stream, ingest (default all)"
    )
    args = parser.parse_args()
    logging.basicConfig(level=logging.ERROR)  # random-weight warnings are expected here
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        raise SystemExit(
            f"ingest.py: error: --device {args.device}: torch {torch.__version__} sees no CUDA "
            "GPU on this machine (use --device cpu, or run it where there is one)"
        )

    paths = sorted(p for p in args.images.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not paths:
        parser.error(f"no images in {args.images}")
    paths = (paths * (args.n // len(paths) + 1))[: args.n]
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.model:
        from casebase.errors import CasebaseError

        try:
            one_model(args, paths)
        except CasebaseError as exc:
            raise SystemExit(f"ingest.py: error: {exc}") from None
        return
    workers = default_workers() if args.workers is None else args.workers

    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    print(
        f"{len(paths)} images from {args.images}, batch {args.batch_size}, {cpus} CPU cores, "
        f"torch {torch.__version__} with {torch.get_num_threads()} threads, "
        f"{workers} decode workers"
    )
    from casebase.ingest.decode import warm_labeller

    start = time.perf_counter()
    warm_labeller()
    print(f"labeller loaded in {time.perf_counter() - start:.1f} s (once per process, not timed)")
    rows = []
    spent: dict[str, CpuSeconds] = {}
    for key in args.models.split(","):
        if key.strip() not in MODELS:
            parser.error(f"unknown model {key!r}: choose from {', '.join(MODELS)}")
        label, load = MODELS[key.strip()]
        encoder = load()
        tensors = torch.stack([encoder.preprocess(load_image(p)) for p in paths])
        alone = piped = whole = 0.0
        cpu = None
        import tempfile

        with tempfile.TemporaryDirectory() as tmp:
            for _ in range(args.repeat):
                alone = max(alone, model_only(encoder, tensors, args.batch_size))
                piped = max(piped, pipeline(encoder, paths, args.batch_size, workers))
                rate, used = whole_ingest(encoder, paths, args.batch_size, workers, Path(tmp))
                if rate > whole:
                    whole, cpu = rate, used
        rows.append((label, alone, piped, whole))
        spent[label] = cpu
    width = max(len(r[0]) for r in rows)
    print(
        f"{'model':<{width}}  {'model only':>10}  {'stream':>8}  {'ratio':>5}  "
        f"{'casebase ingest':>15}  {'ratio':>5}   (images/s)"
    )
    for label, alone, piped, whole in rows:
        print(
            f"{label:<{width}}  {alone:>10.1f}  {piped:>8.1f}  {piped / alone:>5.2f}  "
            f"{whole:>15.1f}  {whole / alone:>5.2f}"
        )
    print(f"CPU seconds during casebase ingest (capacity = wall x {cpus} cores):")
    for label, cpu in spent.items():
        server = "n/a (not the embedded server)" if cpu.server is None else f"{cpu.server:.1f}"
        print(
            f"  {label:<{width}}  wall {cpu.wall:.1f} s, capacity {cpu.wall * cpus:.1f}: "
            f"main process {cpu.main:.1f}, decode workers {cpu.workers:.1f}, "
            f"PostgreSQL {server}"
        )
    if args.copy_rows <= 0:
        return
    print(
        f"COPY stage alone: {args.copy_rows} studies x 1 vector of {args.copy_dim} dims "
        "(binary COPY of study + image + embedding rows)"
    )
    live, _ = copy_stage(args.copy_rows, args.copy_dim, defer_index=False)
    print(f"  HNSW index live (monthly batch):       {live:>10,.0f} rows/s")
    deferred, build = copy_stage(args.copy_rows, args.copy_dim, defer_index=True)
    overall = args.copy_rows / (args.copy_rows / deferred + build)
    print(
        f"  index dropped, built after (backfill): {deferred:>10,.0f} rows/s, then "
        f"{build:.1f} s to build HNSW ({overall:,.0f} rows/s overall)"
    )


if __name__ == "__main__":
    main()
