"""`casebase reembed`: back-fill one space with another model's vectors of the same images.

The images of space S1 are embedded again with S2's model and written to S2's
partitions, with the same image/study keys and the filter columns copied from
the S1 rows, so a search in S2 filters exactly as in S1. Like ingest it is
resumable and idempotent: images already in S2 are skipped, each chunk commits
on its own (a run killed half way continues where it stopped), and the rows go
in by binary COPY. An image that cannot be read any more is counted and left
out; a later run tries it again.

Label fusion (seed 003): with ``fuse_text``, S2 stores
``normalize(w_img · v_image + w_text · v_text(text))`` for studies that have the
text (a label column or their present findings), and the plain image vector for
the others. The weights and the text source are recorded on the space
(``embedding_space.fusion``); queries stay plain image vectors of S2's model.
A space holds fused or plain vectors, never a mix.
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
from psycopg.types.json import Jsonb

from casebase.db import spaces as db_spaces
from casebase.db.bulk import EMBEDDING_ROWS, copy_rows
from casebase.db.connection import scalar
from casebase.db.spaces import Space
from casebase.errors import InputError
from casebase.progress import progress_bar
from casebase.train.data import TextSource, text_of_study

if TYPE_CHECKING:
    from psycopg import Connection

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ReembedSummary:
    source: str
    target: str
    added: int
    already: int  # in the target before this run
    failed: int
    fused: int
    seconds: float
    fusion: dict | None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def render(self) -> str:
        rate = self.added / self.seconds if self.seconds > 0 else 0.0
        text = (
            f"reembed {self.source} → {self.target}: {self.added} added, {self.already} "
            f"already there, {self.failed} unreadable, in {self.seconds:.1f} s "
            f"({rate:.1f} images/s)"
        )
        if self.fusion:
            text += (
                f"; {self.fused} fused with {self.fusion['text']} "
                f"(w_img {self.fusion['w_img']}, w_text {self.fusion['w_text']})"
            )
        if self.failed:
            text += "; re-run to retry the unreadable images"
        return text


def fusion_spec(fuse_text: str | None, w_img: float, w_text: float) -> dict | None:
    """The ``embedding_space.fusion`` value of these options (None: plain image vectors)."""
    if fuse_text is None:
        return None
    source = TextSource.parse(fuse_text)
    if source.kind == "report":
        raise InputError(
            "--fuse-text takes findings or label:COLUMN (short texts that name "
            "the findings), not report"
        )
    if w_img <= 0 or w_text < 0 or not np.isfinite([w_img, w_text]).all():
        raise InputError(f"need --w-img > 0 and --w-text >= 0, got {w_img}, {w_text}")
    return {"text": str(source), "w_img": float(w_img), "w_text": float(w_text)}


def _settle_fusion(conn: Connection, space: Space, wanted: dict | None) -> None:
    has_rows = scalar(
        conn,
        "SELECT EXISTS (SELECT 1 FROM casebase.embedding WHERE space_id = %s)",
        (space.space_id,),
    )
    if space.fusion == wanted:
        return
    if space.fusion is not None:
        raise InputError(
            f"space {space.name} holds label-fused vectors ({space.fusion}): "
            "re-run with the same --fuse-text, --w-img and --w-text"
        )
    if has_rows:
        raise InputError(
            f"space {space.name} already holds plain image vectors; fused "
            "vectors need a space of their own (casebase spaces add --checkpoint "
            f"PATH --name {space.name}-fused)"
        )
    conn.execute(
        "UPDATE casebase.embedding_space SET fusion = %s WHERE space_id = %s",
        (Jsonb(wanted), space.space_id),
    )


_TODO = """
FROM casebase.embedding e JOIN casebase.image i ON i.image_pk = e.image_pk
WHERE e.space_id = %(src)s {batches}
  AND NOT EXISTS (SELECT 1 FROM casebase.embedding d WHERE d.space_id = %(dst)s
                  AND d.modality = e.modality AND d.image_pk = e.image_pk)
"""


def _load_row(row: tuple) -> Any:
    """Decode worker: a page row → its image (module level, so it pickles)."""
    from casebase.imaging.images import load_image

    return load_image(row[-1])


def reembed(
    conn,
    *,
    source: str,
    target: str,
    batch_size: int = 64,
    workers: int | None = None,
    device: str | None = None,
    precision: str = "fp32",
    fuse_text: str | None = None,
    w_img: float = 0.5,
    w_text: float = 0.5,
    batches: list[str] | None = None,
    chunk_size: int = 1024,
    progress: bool | None = None,
    rebuild_index_over: int = 50_000,
) -> ReembedSummary:
    """Back-fill ``target`` with its model's vectors of the images in ``source``.

    ``batches`` limits it to images of those ingest batches (e.g. a fused index of
    the reference studies only). A back-fill of more than ``rebuild_index_over``
    images into an empty space drops its HNSW indexes first and builds them once
    at the end, which is much faster than growing the graphs row by row.
    """
    from casebase.retrieval.encode import encoder_for_space

    started = time.perf_counter()
    src, dst = db_spaces.get_space(conn, source), db_spaces.get_space(conn, target)
    if src.space_id == dst.space_id:
        raise InputError("--from and --to name the same space")
    wanted = fusion_spec(fuse_text, w_img, w_text)
    _settle_fusion(conn, dst, wanted)
    text_source = TextSource.parse(fuse_text) if fuse_text else None
    params = {"src": src.space_id, "dst": dst.space_id, "batches": list(batches or [])}
    todo_sql = _TODO.format(batches="AND e.batch = ANY(%(batches)s)" if batches else "")
    todo = scalar(conn, "SELECT count(*) " + todo_sql, params)
    already = scalar(
        conn, "SELECT count(*) FROM casebase.embedding WHERE space_id = %s", (dst.space_id,)
    )
    modalities = [
        r[0]
        for r in conn.execute(
            "SELECT DISTINCT modality FROM casebase.embedding WHERE space_id = %s", (src.space_id,)
        ).fetchall()
    ]
    bulk = already == 0 and todo >= rebuild_index_over
    for modality in modalities if bulk else []:
        db_spaces.ensure_partition(conn, dst, modality)
        db_spaces.drop_vector_index(conn, dst, modality)
    conn.commit()
    encoder = encoder_for_space(dst, device, precision)

    added = failed = fused = 0
    text_vectors: dict[str, np.ndarray] = {}
    bar = progress_bar(todo, desc="reembed", enabled=progress, smoothing=0.1)
    last = 0
    try:
        while True:
            page = conn.execute(
                "SELECT e.image_pk, e.modality, e.study_pk, e.study_id, e.patient_key, e.age, "
                "e.sex, e.view, e.flags, e.study_date, e.batch, i.uri "
                + todo_sql
                + " AND e.image_pk > %(last)s ORDER BY e.image_pk LIMIT %(limit)s",
                {**params, "last": last, "limit": chunk_size},
            ).fetchall()
            if not page:
                break
            last = page[-1][0]
            texts = (
                text_of_study(conn, text_source, sorted({r[2] for r in page}))
                if text_source
                else {}
            )
            rows = []
            for ok, vectors, bad in encoder.embed_stream(
                page,
                _load_row,
                batch_size=batch_size,
                workers=workers,
                progress=bar.update,
            ):
                failed += len(bad)
                for row, vec in zip(ok, vectors, strict=True):
                    text = texts.get(row[2])
                    if wanted is not None and text is not None:
                        vec = _fuse(vec, _text_vector(encoder, text, text_vectors), wanted)
                        fused += 1
                    image_pk, modality, *filters = row[:11]
                    rows.append(
                        (dst.space_id, modality, image_pk, *filters, np.asarray(vec, np.float32))
                    )
            for modality in sorted({r[1] for r in rows}):
                db_spaces.ensure_partition(conn, dst, modality)
            copy_rows(conn, EMBEDDING_ROWS, rows)
            conn.commit()
            added += len(rows)
    except BaseException:
        conn.rollback()
        raise
    finally:
        bar.close()
    if bulk:
        for modality in modalities:
            db_spaces.create_vector_index(conn, dst, modality)
        conn.commit()
    if failed:
        log.warning("%d images could not be read; re-run to retry them", failed)
    return ReembedSummary(
        src.name, dst.name, added, already, failed, fused, time.perf_counter() - started, wanted
    )


def _text_vector(encoder: Any, text: str, cache: dict[str, np.ndarray]) -> np.ndarray:
    if text not in cache:
        cache[text] = encoder.encode_text([text])[0]
    return cache[text]


def _fuse(image: np.ndarray, text: np.ndarray, fusion: dict) -> np.ndarray:
    v = fusion["w_img"] * image + fusion["w_text"] * text
    return v / max(float(np.linalg.norm(v)), 1e-12)
