"""Synthetic studies with clustered vectors and realistic metadata, loaded by the real loader.

For tests and benchmarks that need many rows fast without images: it goes through
``load.write_chunk`` (binary COPY), so what it exercises is the production path.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import numpy as np

from casebase.imaging.vocabulary import Modality, Sex, View
from casebase.ingest import load
from casebase.ingest.studies import StudyInput

VIEWS = tuple(v.value for v in (View.PA, View.AP, View.AP_SUPINE, View.LATERAL))
SEXES = (Sex.FEMALE.value, Sex.MALE.value)


@dataclass(frozen=True)
class SyntheticSet:
    study_ids: list[str]
    vectors: np.ndarray  # one per study, L2-normalised
    modality: list[str]
    sex: list[str]
    age: np.ndarray
    view: list[str]
    flags: list[tuple[str, ...]]
    patient: list[str]
    study_date: list[dt.date]


def make_set(
    n: int,
    dim: int,
    *,
    seed: int = 0,
    clusters: int = 50,
    modalities: tuple[str, ...] = (Modality.CXR.value, Modality.KXR.value),
    prefix: str = "SYN",
) -> SyntheticSet:
    rng = np.random.default_rng(seed)
    centers = rng.normal(size=(clusters, dim)).astype(np.float32)
    assign = rng.integers(0, clusters, size=n)
    vecs = centers[assign] + 0.6 * rng.normal(size=(n, dim)).astype(np.float32)
    vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
    modality = [modalities[i] for i in rng.choice(len(modalities), size=n, p=_mod_p(modalities))]
    sex = list(rng.choice(SEXES, size=n))
    age = np.clip(rng.normal(55, 18, size=n), 0, 100).round(1)
    view = list(rng.choice(VIEWS, size=n, p=[0.5, 0.2, 0.15, 0.15]))
    portable = rng.random(n) < 0.15
    text = rng.random(n) < 0.1
    flags = [
        tuple(sorted({*(("portable",) if p else ()), *(("burned_in_text",) if t else ())}))
        for p, t in zip(portable, text, strict=True)
    ]
    patients = [f"P{int(x)}" for x in rng.integers(0, max(1, n // 2), size=n)]
    start = dt.date(2015, 1, 1)
    dates = [start + dt.timedelta(days=int(d)) for d in rng.integers(0, 3650, size=n)]
    ids = [f"{prefix}-{i:07d}" for i in range(n)]
    return SyntheticSet(ids, vecs, modality, sex, age, view, flags, patients, dates)


def _mod_p(modalities: tuple[str, ...]) -> list[float]:
    if len(modalities) == 1:
        return [1.0]
    first = 0.7
    rest = (1 - first) / (len(modalities) - 1)
    return [first] + [rest] * (len(modalities) - 1)


def prepared(data: SyntheticSet, i: int, salt: str) -> load.PreparedStudy:
    from casebase.imaging.values import patient_key

    study = StudyInput(
        study_id=data.study_ids[i],
        patient_id=data.patient[i],
        modality=data.modality[i],
        body_part=None,
        view=data.view[i],
        age=float(data.age[i]),
        sex=data.sex[i],
        study_date=data.study_date[i],
        flags=data.flags[i],
        findings=None,
        impression=None,
        report=None,
        accession=None,
        attributes={},
    )
    image = load.PreparedImage(
        uri=f"synthetic://{data.study_ids[i]}",
        sha256=f"{i:064x}",
        size_bytes=0,
        width=None,
        height=None,
        view=data.view[i],
        flags=(),
        quality={},
        vector=data.vectors[i],
    )
    return load.PreparedStudy(
        study=study,
        patient_key=patient_key(data.patient[i], salt),
        content_sha256=f"{i:064x}",
        flags=data.flags[i],
        sanitized=None,
        raw_report=None,
        images=[image],
    )


def load_set(
    conn,
    data: SyntheticSet,
    *,
    space_name: str = "synthetic",
    batch: str = "synthetic",
    chunk: int = 5000,
    progress=None,
    defer_index: bool = False,
) -> load.Space:
    """Load ``data``; with ``defer_index`` the HNSW indexes are dropped first (a
    back-fill): the caller rebuilds them with ``spaces.create_vector_index``."""
    from casebase.db import spaces as db_spaces

    with conn.transaction():
        space = db_spaces.ensure_space(
            conn, name=space_name, model_name="synthetic", dim=int(data.vectors.shape[1])
        )
        load.begin_batch(conn, batch, "synthetic", space)
        salt = load.patient_salt(conn)
        if defer_index:
            for modality in sorted(set(data.modality)):
                db_spaces.ensure_partition(conn, space, modality)
                db_spaces.drop_vector_index(conn, space, modality)
    n = len(data.study_ids)
    for start in range(0, n, chunk):
        studies = [prepared(data, i, salt) for i in range(start, min(n, start + chunk))]
        with conn.transaction():
            load.write_chunk(conn, batch=batch, space=space, studies=studies, rejects=[])
        if progress:
            progress(len(studies))
    return space
