"""One batch, end to end: read → validate → embed → COPY, idempotent and resumable.

Studies are the unit of work: a study loads whole (all its images, report,
findings and vectors in one transaction) or not at all. A re-run skips
studies already loaded with the same content and rejects those whose content
changed, so a batch killed half way finishes when re-run, with no duplicate.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections import Counter, defaultdict
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from casebase.errors import InputError, ManifestError
from casebase.ingest import load
from casebase.ingest.manifest import read_manifest
from casebase.ingest.studies import Plan, Reject, StudyInput, content_sha256, plan_rows
from casebase.progress import progress_bar

if TYPE_CHECKING:
    from psycopg import Connection

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class IngestOptions:
    batch: str
    model: str | None = None
    pretrained: str | None = None
    checkpoint: str | None = None
    images_root: str | None = None
    columns: dict[str, str] = field(default_factory=dict)
    defaults: dict[str, str] = field(default_factory=dict)
    shard: tuple[int, int] = (0, 1)
    device: str | None = None
    batch_size: int = 32
    precision: str = "fp32"  # fp32, bf16 or fp16 autocast (embedding/precision.py)
    workers: int | None = None
    chunk_size: int = 256
    progress: bool | None = None  # None: a bar only on a terminal


@dataclass(frozen=True)
class IngestSummary:
    batch: str
    space: str
    shard: str
    loaded: int
    skipped: int
    rejected: int
    images: int
    seconds: float
    per_modality: dict[str, dict[str, int]]
    complete: bool

    @property
    def images_per_s(self) -> float:
        return self.images / self.seconds if self.seconds > 0 else 0.0

    def to_dict(self) -> dict:
        return {**asdict(self), "images_per_s": round(self.images_per_s, 2)}

    def render(self) -> str:
        lines = [
            f"batch {self.batch} (shard {self.shard}, space {self.space}): "
            f"{self.loaded} loaded, {self.skipped} skipped (already there), "
            f"{self.rejected} rejected — {self.images} images in {self.seconds:.1f} s "
            f"({self.images_per_s:.1f} images/s)"
            + ("" if self.complete else "; other shards still running"),
        ]
        for modality, counts in sorted(self.per_modality.items()):
            lines.append(
                f"  {modality:<4} loaded {counts.get('loaded', 0):>6}  "
                f"skipped {counts.get('skipped', 0):>6}  rejected {counts.get('rejected', 0):>6}"
            )
        if self.rejected:
            lines.append(f"  see: SELECT * FROM casebase.rejects WHERE batch = '{self.batch}'")
        return "\n".join(lines)


def parse_shard(text: str) -> tuple[int, int]:
    try:
        i, n = (int(p) for p in text.split("/"))
    except ValueError:
        raise InputError(f"--shard must look like I/N (e.g. 0/4), got {text!r}") from None
    if n < 1 or not 0 <= i < n:
        raise InputError(f"--shard {text}: need 0 <= I < N")
    return i, n


def in_shard(study_id: str, shard: tuple[int, int]) -> bool:
    i, n = shard
    return n == 1 or int(hashlib.sha256(study_id.encode()).hexdigest()[:12], 16) % n == i


def plan_source(source: Path, options: IngestOptions) -> Plan:
    if source.is_dir():
        from casebase.ingest.dicom_source import plan_dicom_folder

        return plan_dicom_folder(source)
    if not source.exists():
        raise ManifestError(f"no such manifest or folder: {source}")
    rows = read_manifest(source, columns=options.columns, images_root=options.images_root)
    if options.defaults:
        for row in rows:
            for key, value in options.defaults.items():
                row.fields.setdefault(key, value)
    return plan_rows(rows)


def ingest(
    source: str | Path, options: IngestOptions, *, url: str | None = None, encoder=None
) -> IngestSummary:
    """Load one batch (or one shard of it). Raises only when the batch cannot run.

    ``encoder`` lets a caller pass an already loaded ``Encoder`` (benchmarks, a
    long-running worker); otherwise the options name the model to load.
    """
    from casebase.db import migrate
    from casebase.db import spaces as db_spaces
    from casebase.db.connection import checked_url, connect
    from casebase.db.replication import require_primary

    started = time.perf_counter()
    source = Path(source)
    url = url or checked_url()
    with connect(url) as conn:
        require_primary(conn, "ingest")  # before the model loads, not at the first write
        migrate.ensure_current(conn)
        conn.commit()
        try:
            plan = plan_source(source, options)
        except ManifestError as exc:
            _record_failure(conn, options.batch, str(source), str(exc))
            raise
        from casebase.embedding import load_encoder

        encoder = encoder or load_encoder(
            options.model,
            pretrained=options.pretrained,
            checkpoint=options.checkpoint,
            device=options.device,
            precision=options.precision,
        )
        spec = encoder.spec
        with conn.transaction():
            space = db_spaces.ensure_space(
                conn,
                name=spec.name,
                model_name=spec.model_name,
                dim=spec.dim,
                pretrained=spec.pretrained,
                checkpoint_sha256=spec.checkpoint_sha256,
                image_size=spec.image_size,
                preprocess=spec.preprocess,
                checkpoint_path=str(Path(options.checkpoint).resolve())
                if options.checkpoint
                else None,
            )
            load.begin_batch(conn, options.batch, str(source), space)
            salt = load.patient_salt(conn)
        run = _BatchRun(conn, options, space, salt, plan)
        run.execute(encoder)
        shard_text = f"{options.shard[0]}/{options.shard[1]}"
        stats = {**run.stats(time.perf_counter() - started), "precision": encoder.precision}
        with conn.transaction():
            complete = load.finish_batch(conn, options.batch, shard_text, stats, options.shard[1])
    return IngestSummary(
        batch=options.batch,
        space=space.name,
        shard=shard_text,
        loaded=run.loaded,
        skipped=run.skipped,
        rejected=run.rejected,
        images=run.images_done,
        seconds=time.perf_counter() - started,
        per_modality=run.per_modality_dict(),
        complete=complete,
    )


def _record_failure(conn: Connection, batch: str, source: str, reason: str) -> None:
    with conn.transaction():
        conn.execute(
            "INSERT INTO casebase.ingest_batch (name, source) VALUES (%s, %s) "
            "ON CONFLICT (name) DO NOTHING",
            (batch, source),
        )
        load.write_rejects(conn, batch, [Reject(source, "manifest", None, reason)])


class _BatchRun:
    """The mutable state of one run: what is pending, loaded, skipped, rejected."""

    def __init__(
        self, conn: Connection, options: IngestOptions, space, salt: str, plan: Plan
    ) -> None:
        self.conn, self.options, self.space, self.salt = conn, options, space, salt
        self.studies = [s for s in plan.studies if in_shard(s.study_id, options.shard)]
        self.pending_rejects: list[Reject] = [
            r for r in plan.rejects if r.study_id is None or in_shard(r.study_id, options.shard)
        ]
        self.counts: dict[str, Counter] = defaultdict(Counter)
        self.loaded = self.skipped = self.rejected = self.images_done = 0
        self.ready: list[load.PreparedStudy] = []
        self.finding_backend = self.finding_version = ""
        self._writer: ThreadPoolExecutor | None = None
        self._writing: Future | None = None

    # ------------------------------------------------------------------ bookkeeping
    def _reject_study(self, study: StudyInput, reasons: dict[int, str], default: str) -> None:
        """Reject every row of a study (a study loads whole or not at all); counts rows."""
        for img in study.images:
            reason = reasons.get(id(img), default)
            self.pending_rejects.append(Reject(img.source, img.row_ref, study.study_id, reason))
        self.rejected += len(study.images)
        self.counts[study.modality]["rejected"] += len(study.images)

    def stats(self, seconds: float) -> dict:
        return {
            "loaded": self.loaded,
            "skipped": self.skipped,
            "rejected": self.rejected,
            "images": self.images_done,
            "seconds": round(seconds, 2),
            "per_modality": self.per_modality_dict(),
        }

    def per_modality_dict(self) -> dict[str, dict[str, int]]:
        return {m: dict(c) for m, c in self.counts.items()}

    # ------------------------------------------------------------------ the run
    def execute(self, encoder) -> None:
        self.rejected += len({(r.source, r.row_ref) for r in self.pending_rejects})
        todo = self._skip_existing()
        self._writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="casebase-copy")
        try:
            self._embed(encoder, todo)
            self._flush(final=True)
        finally:
            # On an error here, the chunk in flight still commits or rolls back whole
            # before the connection is closed; its own error, if any, is only logged.
            if self._writing is not None:
                try:
                    self._wait_writer()
                except Exception:
                    log.exception("writing the last chunk failed too")
            self._writer.shutdown(wait=True)

    def _skip_existing(self) -> list[StudyInput]:
        from casebase.imaging.files import sha256_file

        todo: list[StudyInput] = []
        for start in range(0, len(self.studies), 5000):
            part = self.studies[start : start + 5000]
            existing = load.existing_studies(self.conn, [s.study_id for s in part])
            for study in part:
                prior = existing.get(study.study_id)
                if prior is None:
                    todo.append(study)
                    continue
                try:
                    hashes = [sha256_file(img.path) for img in study.images]
                except (InputError, OSError) as exc:
                    self._reject_study(study, {}, str(exc))
                    continue
                if content_sha256(study, hashes) == prior.content_sha256:
                    self.skipped += 1
                    self.counts[study.modality]["skipped"] += 1
                    continue
                reason = (
                    f"study {study.study_id} was already loaded (batch {prior.batch}) with "
                    "different content; load it under a new study id or delete the old one"
                )
                self._reject_study(study, {}, reason)
        self.conn.commit()
        return todo

    def _embed(self, encoder, todo: list[StudyInput]) -> None:
        if not todo:
            return
        from casebase.ingest.decode import decode_image, warm_labeller
        from casebase.synthesis import BACKEND, LABELLER_VERSION

        self.finding_backend, self.finding_version = BACKEND, LABELLER_VERSION
        # A study's report goes with its first image: the decode worker that has that
        # image sanitises and labels it, off the model's process.
        items = [
            (img, s.modality, _report_parts(s) if i == 0 else None)
            for s in todo
            for i, img in enumerate(s.images)
        ]
        owner = {id(img): s for s in todo for img in s.images}
        results: dict[str, dict[int, tuple]] = defaultdict(dict)
        failures: dict[str, list[tuple]] = defaultdict(list)
        if any(item[2] is not None for item in items):
            warm_labeller()  # fails fast; forked workers inherit it loaded
        bar = progress_bar(
            len(items), desc="embedding", enabled=self.options.progress, smoothing=0.1
        )
        try:
            for ok, vectors, failed in encoder.embed_stream(
                items,
                decode_image,
                batch_size=self.options.batch_size,
                workers=self.options.workers,  # None: embed_stream's default for the device
                with_extra=True,
                progress=bar.update,
            ):
                touched: list[StudyInput] = []
                for ((img, *_), facts), vec in zip(ok, vectors, strict=True):
                    study = owner[id(img)]
                    results[study.study_id][id(img)] = (facts, vec)
                    touched.append(study)
                for (img, *_), reason in failed:
                    study = owner[id(img)]
                    failures[study.study_id].append((img, reason))
                    touched.append(study)
                for study in {s.study_id: s for s in touched}.values():
                    done = len(results[study.study_id]) + len(failures[study.study_id])
                    if done == len(study.images):
                        self._finish_study(
                            study, results.pop(study.study_id), failures.pop(study.study_id, [])
                        )
                self.images_done += len(ok) + len(failed)
                # A chunk goes when it is full, or as soon as the writer is free: what is
                # ready then is written while the model runs, not left for the end.
                writer_free = self._writing is None or self._writing.done()
                if len(self.ready) >= self.options.chunk_size or (self.ready and writer_free):
                    self._flush()
        finally:
            bar.close()

    def _finish_study(self, study: StudyInput, results: dict, failures: list) -> None:
        if failures:
            bad = {id(img): reason for img, reason in failures}
            self._reject_study(study, bad, "not loaded: another image of this study was rejected")
            return
        self.ready.append(self._prepare(study, results))

    def _prepare(self, study: StudyInput, results: dict) -> load.PreparedStudy:
        from casebase.imaging.values import patient_key

        images = []
        for img in study.images:
            facts, vec = results[id(img)]
            images.append(
                load.PreparedImage(
                    uri=str(img.path),
                    sha256=facts.sha256,
                    size_bytes=facts.size_bytes,
                    width=facts.width,
                    height=facts.height,
                    view=img.view,
                    flags=tuple(sorted(set(img.flags) | set(facts.flags))),
                    quality=facts.quality,
                    vector=vec,
                )
            )
        report = results[id(study.images[0])][0].report  # sanitised + labelled by a worker
        raw = "\n\n".join(
            f"{name.upper()}: {text}" if name != "report" else text
            for name, text in (
                ("findings", study.findings),
                ("impression", study.impression),
                ("report", study.report),
            )
            if text
        )
        return load.PreparedStudy(
            study=study,
            patient_key=patient_key(study.patient_id, self.salt) if study.patient_id else None,
            content_sha256=content_sha256(study, [i.sha256 for i in images]),
            flags=study.flags,
            sanitized=report.sanitized if report is not None else None,
            raw_report=raw or None,
            findings=list(report.findings) if report is not None else [],
            images=images,
            finding_backend=self.finding_backend,
            finding_version=self.finding_version,
        )

    def _flush(self, final: bool = False) -> None:
        """Hand the ready studies (and pending rejects) to the writer thread.

        The writer commits one chunk (at most ``chunk_size`` whole studies) per
        transaction, in order, on this run's connection (which nothing else uses
        meanwhile), while this thread goes on embedding: the COPY, and the HNSW inserts it
        makes the server do, overlap the model. At most one chunk is in flight, so memory
        stays bounded; ``final`` waits for the last one.
        """
        if self.ready or (final and self.pending_rejects):
            chunk, rejects = self.ready, self.pending_rejects
            self.ready, self.pending_rejects = [], []
            self._wait_writer()
            assert self._writer is not None, "run() starts the writer before the first flush"
            self._writing = self._writer.submit(self._write, chunk, rejects)
        if final:
            self._wait_writer()

    def _write(self, chunk: list[load.PreparedStudy], rejects: list[Reject]) -> list:
        with self.conn.transaction():
            load.write_chunk(
                self.conn,
                batch=self.options.batch,
                space=self.space,
                studies=chunk,
                rejects=rejects,
            )
        return chunk

    def _wait_writer(self) -> None:
        """Wait for the chunk in flight; count its studies loaded, or raise its error."""
        if self._writing is None:
            return
        writing, self._writing = self._writing, None
        for p in writing.result():
            self.loaded += 1
            self.counts[p.study.modality]["loaded"] += 1


def _report_parts(study: StudyInput) -> tuple | None:
    """What the decode worker sanitises and labels, or None for a study without a report."""
    if study.findings or study.impression or study.report:
        return (study.findings, study.impression, study.report)
    return None
