"""One batch, end to end: read → validate → embed → COPY, idempotent and resumable.

Studies are the unit of work: a study loads whole (all its images, report,
findings and vectors in one transaction) or not at all. A re-run skips
studies already loaded with the same content and rejects those whose content
changed, so a batch killed half way finishes when re-run, with no duplicate.

One run per batch (and shard) at a time: a run takes an advisory lock first, and a
second run of the same batch stops at once with a one-line error, before writing
anything (a scheduler's retry then finds the batch done, or finishes it). A run that
stops on an error marks its batch ``failed`` with the error; the next run resumes it.
"""

from __future__ import annotations

import logging
import time
from collections import Counter, defaultdict
from pathlib import Path
from typing import TYPE_CHECKING

from casebase.errors import DatabaseError, IngestError, InputError, ManifestError
from casebase.imaging.limits import check_batch_name
from casebase.ingest import load
from casebase.ingest.manifest import read_manifest
from casebase.ingest.options import IngestOptions, IngestSummary, in_shard, parse_shard
from casebase.ingest.studies import Plan, Reject, StudyInput, content_sha256, plan_rows
from casebase.ingest.writer import ChunkWriter, Written
from casebase.progress import progress_bar

if TYPE_CHECKING:
    from psycopg import Connection

__all__ = ["IngestOptions", "IngestSummary", "in_shard", "ingest", "parse_shard", "plan_source"]

log = logging.getLogger(__name__)


def plan_source(source: Path, options: IngestOptions) -> Plan:
    confined = not options.allow_outside_root
    if source.is_dir():
        from casebase.ingest.dicom_source import plan_dicom_folder

        return plan_dicom_folder(source, confined=confined)
    if not source.exists():
        raise ManifestError(f"no such manifest or folder: {source}")
    rows = read_manifest(
        source,
        columns=options.columns,
        images_root=options.images_root,
        attributes=options.attributes,
        confined=confined,
    )
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
    from casebase.db.connection import checked_url, connect
    from casebase.db.replication import require_primary

    started = time.perf_counter()
    check_batch_name(options.batch)
    source = Path(source)
    url = url or checked_url()
    with connect(url) as conn:
        require_primary(conn, "ingest")  # before the model loads, not at the first write
        migrate.ensure_current(conn)
        conn.commit()
        if not load.try_lock_batch(conn, options.batch, options.shard):
            shard = (
                "" if options.shard[1] == 1 else f" (shard {options.shard[0]}/{options.shard[1]})"
            )
            raise IngestError(
                f"batch {options.batch}{shard} is being loaded by another process; "
                "nothing was written (run it again when that one has finished)"
            )
        try:
            plan = plan_source(source, options)
        except ManifestError as exc:
            load.record_manifest_failure(conn, options.batch, str(source), str(exc))
            raise
        try:
            return _run(conn, source, options, plan, encoder, started)
        except BaseException as exc:
            load.record_stop(conn, url, options.batch, exc)
            if load.is_database_error(exc):
                reason = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
                raise DatabaseError(
                    f"batch {options.batch} stopped: {reason or type(exc).__name__}; "
                    "what was committed stays, re-run it to finish"
                ) from exc
            raise


def _run(
    conn: Connection, source: Path, options: IngestOptions, plan: Plan, encoder, started: float
):
    from casebase.db import spaces as db_spaces

    if encoder is None:
        from casebase.embedding import load_encoder

        encoder = load_encoder(
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
            checkpoint_path=str(Path(options.checkpoint).resolve()) if options.checkpoint else None,
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
        self._writer = ChunkWriter(conn, batch=options.batch, space=space)

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
        try:
            self._embed(encoder, todo)
            self._flush(final=True)
        finally:
            self._writer.close()

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
        from casebase.synthesis import BACKEND, labeller_version
        from casebase.synthesis.store import stored_convention

        # The installation's coding convention, as `casebase relabel --convention` chose.
        convention = stored_convention(self.conn)
        self.conn.commit()  # no snapshot held open while the batch embeds
        self.finding_backend = BACKEND
        self.finding_version = labeller_version(convention)
        # A study's report goes with its first image: the decode worker that has that
        # image sanitises and labels it, off the model's process.
        items = [
            (img, s.modality, _report_parts(s) if i == 0 else None, convention)
            for s in todo
            for i, img in enumerate(s.images)
        ]
        owner = {id(img): s for s in todo for img in s.images}
        results: dict[str, dict[int, tuple]] = defaultdict(dict)
        failures: dict[str, list[tuple]] = defaultdict(list)
        if any(item[2] is not None for item in items):
            warm_labeller(convention)  # fails fast; forked workers inherit it loaded
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
                writer_free = self._writer.idle
                if len(self.ready) >= self.options.chunk_size or (self.ready and writer_free):
                    self._flush()
        finally:
            bar.close()

    def _finish_study(self, study: StudyInput, results: dict, failures: list) -> None:
        # Two rows of one study naming files with the same bytes would break the image key
        # (study, sha256) in the COPY: the second is a bad row like any other.
        first_with: dict[str, str] = {}
        for img in study.images:
            if id(img) not in results:
                continue
            sha = results[id(img)][0].sha256
            if sha in first_with:
                reason = f"the same image as {first_with[sha]} of this study (identical bytes)"
                failures = [*failures, (img, reason)]
            else:
                first_with[sha] = img.row_ref
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
        """Hand the ready studies (and pending rejects) to the writer thread
        (:class:`~casebase.ingest.writer.ChunkWriter`), which commits them while this
        thread goes on embedding; ``final`` waits for the last chunk."""
        if self.ready or (final and self.pending_rejects):
            chunk, rejects = self.ready, self.pending_rejects
            self.ready, self.pending_rejects = [], []
            self._count(self._writer.submit(chunk, rejects))
        if final:
            self._count(self._writer.wait())

    def _count(self, written: Written | None) -> None:
        """Count what a chunk came to: loaded, skipped (another run loaded it), rejected."""
        if written is None:
            return
        for p in written.loaded:
            self.loaded += 1
            self.counts[p.study.modality]["loaded"] += 1
        for p in written.skipped:
            self.skipped += 1
            self.counts[p.study.modality]["skipped"] += 1
        for p, _ in written.rejected:
            self.rejected += len(p.study.images)
            self.counts[p.study.modality]["rejected"] += len(p.study.images)


def _report_parts(study: StudyInput) -> tuple | None:
    """What the decode worker sanitises and labels, or None for a study without a report."""
    if study.findings or study.impression or study.report:
        return (study.findings, study.impression, study.report)
    return None
