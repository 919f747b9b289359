"""Helpers of tests/test_filter_contract.py: a cohort with varied metadata, random search
cases, and the check of a hit against the stored metadata (the analyst views, not the
embedding rows the SQL filters read).

A study is a hit when one of its images passes every filter: an image's view is its own
or else the study's, its flags the study's and its own together. The hit is shown at
that image (``image_id``), with that view and those flags.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from casebase.retrieval.filters import Filters

KINDS = ("image", "text", "study", "vector", "study+text")
FILTERS = (
    "modality",
    "sex",
    "age",
    "views",
    "exclude_flags",
    "require_flags",
    "dates",
    "batches",
    "attributes",
    "exclude_same_patient",
)
VIEWS = ("PA", "AP", "AP_SUPINE", "LATERAL")
FLAGS = ("portable", "supine", "underexposed", "burned_in_text", "low_contrast")
TEXTS = (
    "pleural effusion",
    "pneumonia consolidation",
    "cardiomegaly",
    "pneumothorax",
    "joint effusion",
    "osteophyte",
)
EXTRA_BATCH = "extra"


# ---------------------------------------------------------------- extra rows


def add_varied_studies(conn, n: int, seed: int) -> None:
    """``n`` studies of batch ``extra`` near the cohort's vectors, through the ingest
    writer: 1-3 images each with their own views and flags, views and flags on the study
    too, sex O and unknown, missing ages and dates, a site attribute, shared patients,
    reports about pneumonia consolidation, lateral portable films."""
    from casebase.db.spaces import get_space
    from casebase.ingest import load
    from casebase.ingest.sanitize import SanitizedReport
    from casebase.ingest.studies import StudyInput
    from casebase.retrieval.search import as_array

    rng = np.random.default_rng(seed)
    space = get_space(conn, None)
    rows = conn.execute(
        "SELECT e.modality, e.vec, s.patient_key FROM casebase.embeddings e "
        "JOIN casebase.studies s USING (study_id) ORDER BY e.image_id"
    ).fetchall()
    conn.execute(
        "INSERT INTO casebase.ingest_batch (name, source, space_id) VALUES (%s, 'test', %s)",
        (EXTRA_BATCH, space.space_id),
    )
    chest = [r for r in rows if r[0] == "CXR"]
    studies = []
    for i in range(n):
        # The first three are what issue #12's search asks for: lateral portable chest
        # films whose reports say pneumonia consolidation.
        issue = i < 3
        modality, vec, cohort_patient = (chest if issue else rows)[
            int(rng.integers(len(chest) if issue else len(rows)))
        ]
        base = as_array(vec)
        patient = (cohort_patient, f"extra-p{i % 5}", None)[int(rng.integers(3))]
        words = (
            ["pneumonia consolidation", "pleural effusion"]
            if issue
            else rng.choice(TEXTS, size=2, replace=False)
        )
        study = StudyInput(
            study_id=f"EXTRA-{i:03d}",
            patient_id=None,
            modality=modality,
            body_part=None,
            view="LATERAL" if issue else _maybe(rng, VIEWS),
            age=None if rng.random() < 0.2 else float(rng.integers(1, 100)),
            sex=_maybe(rng, ("F", "M", "O")),
            study_date=None if rng.random() < 0.2 else _date(rng),
            flags=(),
            findings=f"{words[0].capitalize()}. {words[1].capitalize()}.",
            impression=f"{words[0].capitalize()}.",
            report=None,
            accession=None,
            attributes={"site": "AB"[i % 2], "label": str(words[0]).replace(" ", "_")},
        )
        # EXTRA-003's first image is a lateral, its second a PA: the PA is its query image.
        views = ("LATERAL", "PA", "AP") if i == 3 else None
        images = []
        for j in range(3 if views else int(rng.integers(1, 4))):
            v = base + 0.05 * rng.normal(size=base.shape).astype(np.float32)
            images.append(
                load.PreparedImage(
                    uri=f"extra://{i}/{j}",
                    sha256=f"x{i}-{j}",
                    size_bytes=0,
                    width=None,
                    height=None,
                    view=views[j] if views else _maybe(rng, VIEWS),
                    flags=_subset(rng, FLAGS, 0.25),
                    quality={},
                    vector=v / np.linalg.norm(v),
                )
            )
        studies.append(
            load.PreparedStudy(
                study=study,
                patient_key=patient,
                content_sha256=f"extra{i}",
                flags=("portable",) if issue else _subset(rng, ("portable", "underexposed"), 0.3),
                sanitized=SanitizedReport(study.findings, study.impression),
                raw_report=None,
                images=images,
            )
        )
    with conn.transaction():
        load.write_chunk(conn, batch=EXTRA_BATCH, space=space, studies=studies, rejects=[])


def _maybe(rng, values):
    return None if rng.random() < 0.15 else str(rng.choice(values))


def _subset(rng, values, p: float) -> tuple[str, ...]:
    return tuple(sorted(v for v in values if rng.random() < p))


def _date(rng) -> dt.date:
    return dt.date(2023, 6, 1) + dt.timedelta(days=int(rng.integers(0, 1000)))


# ---------------------------------------------------------------- stored metadata


@dataclass
class Meta:
    """The metadata as analysts see it: ``casebase.studies``, ``casebase.images``, and
    which images have a vector in the default space (``casebase.embeddings``)."""

    studies: dict[str, dict]
    images: dict[int, dict]
    images_of: dict[str, list[int]] = field(default_factory=dict)

    @classmethod
    def read(cls, conn) -> Meta:
        def rows(sql: str) -> list[dict]:
            cur = conn.execute(sql)
            names = [c.name for c in cur.description]
            return [dict(zip(names, r, strict=True)) for r in cur.fetchall()]

        studies = {r["study_id"]: r for r in rows("SELECT * FROM casebase.studies")}
        images = {r["image_id"]: r for r in rows("SELECT * FROM casebase.images")}
        meta = cls(studies, images)
        for r in rows(
            "SELECT study_id, image_id FROM casebase.embeddings WHERE space = "
            "(SELECT space FROM casebase.spaces WHERE is_default) ORDER BY image_id"
        ):
            meta.images_of.setdefault(r["study_id"], []).append(r["image_id"])
        return meta

    def view(self, image_id: int) -> str | None:
        image = self.images[image_id]
        return image["view"] or self.studies[image["study_id"]]["view"]

    def flags(self, image_id: int) -> set[str]:
        image = self.images[image_id]
        return set(image["flags"]) | set(self.studies[image["study_id"]]["flags"])


# ---------------------------------------------------------------- cases


@dataclass(frozen=True)
class Case:
    kind: str
    k: int
    filters: Filters
    exact: bool
    study_id: str | None = None
    text: str | None = None
    image: Path | None = None
    vector: np.ndarray | None = field(default=None, compare=False)

    def __str__(self) -> str:
        query = self.study_id or self.image or ("vector" if self.vector is not None else "")
        return f"{self.kind} {query} {self.text or ''} k={self.k} {self.filters.describe()}"


def make_case(meta: Meta, vectors: dict[int, np.ndarray], rng, kind: str, chosen) -> Case:
    """A case of ``kind`` with the filters ``chosen``; each filter is built so that a
    random image (the anchor) passes it four times in five, so most cases have hits."""
    anchor = int(rng.choice(sorted(vectors)))
    study = meta.studies[meta.images[anchor]["study_id"]]
    modality = study["modality"]
    own = rng.random() < 0.8
    values: dict = {}
    if "modality" in chosen or kind in ("image", "text", "vector"):
        values["modality"] = modality if own else str(rng.choice(["CXR", "KXR"]))
    if "sex" in chosen:
        values["sex"] = study["sex"] if own and study["sex"] else str(rng.choice(["F", "M", "O"]))
    if "age" in chosen:
        age = study["age"] if own and study["age"] is not None else float(rng.integers(0, 100))
        low = max(age - float(rng.integers(0, 20)), 0.0)
        high = min(age + float(rng.integers(0, 20)), 130.0)
        values["age"] = [(low, high), (low, None), (None, high)][int(rng.integers(3))]
    if "views" in chosen:
        picked = set(_subset(rng, VIEWS, 0.3))
        if own and meta.view(anchor):
            picked.add(meta.view(anchor))
        values["views"] = tuple(sorted(picked or {str(rng.choice(VIEWS))}))
    if "exclude_flags" in chosen:
        pool = [f for f in FLAGS if not (own and f in meta.flags(anchor))] or list(FLAGS)
        values["exclude_flags"] = tuple(rng.choice(pool, size=min(2, len(pool)), replace=False))
    if "require_flags" in chosen:
        has = sorted(meta.flags(anchor)) if own else []
        values["require_flags"] = tuple(has[:1]) or (str(rng.choice(FLAGS)),)
    if "dates" in chosen:
        day = study["study_date"] if own and study["study_date"] else _date(rng)
        values["date_from"] = day - dt.timedelta(days=int(rng.integers(0, 200)))
        values["date_to"] = day + dt.timedelta(days=int(rng.integers(0, 200)))
    if "batches" in chosen:
        values["batches"] = (study["batch"],) if own else (str(rng.choice(["cohort", "extra"])),)
    if "attributes" in chosen:
        key = "site" if "site" in study["attributes"] and rng.random() < 0.5 else "label"
        values["attributes"] = {key: study["attributes"].get(key, "normal")}
    if "exclude_same_patient" in chosen:
        values["exclude_same_patient"] = bool(rng.random() < 0.3)
    query_study = str(rng.choice(sorted(meta.images_of)))
    image_uris = [
        Path(meta.images[i]["uri"])
        for i in meta.images_of[query_study]
        if not meta.images[i]["uri"].startswith("extra:")
    ]
    if kind == "image" and not image_uris:
        cohort = sorted(s for s in meta.images_of if s.startswith("DEMO-"))
        query_study = str(rng.choice(cohort))
        image_uris = [Path(meta.images[i]["uri"]) for i in meta.images_of[query_study]]
    noise = rng.normal(size=vectors[anchor].shape).astype(np.float32) * 0.05
    return Case(
        kind=kind,
        k=int(rng.choice([5, 10, 25])),
        filters=Filters(**values),
        exact=bool(rng.random() < 0.3),
        study_id=query_study if kind in ("study", "study+text") else None,
        text=str(rng.choice(TEXTS)) if kind in ("text", "study+text") else None,
        image=image_uris[0] if kind == "image" else None,
        vector=vectors[anchor] + noise if kind == "vector" else None,
    )


# ---------------------------------------------------------------- the check


def searched_modality(meta: Meta, case: Case) -> str:
    if case.filters.modality:
        return case.filters.modality
    return meta.studies[case.study_id]["modality"]


def excluded(meta: Meta, case: Case, study_id: str) -> str | None:
    """Why a study query leaves ``study_id`` out (None: it does not)."""
    if case.study_id is None:
        return None
    if study_id == case.study_id:
        return "the query study itself"
    patient = meta.studies[case.study_id]["patient_key"]
    same = patient is not None and meta.studies[study_id]["patient_key"] == patient
    if case.filters.exclude_same_patient and same:
        return "the query study's patient"
    return None


def failures(meta: Meta, case: Case, image_id: int) -> list[str]:
    """The filters that image ``image_id`` (of its study) breaks."""
    f, image = case.filters, meta.images[image_id]
    study = meta.studies[image["study_id"]]
    view, flags, out = meta.view(image_id), meta.flags(image_id), []
    if study["modality"] != searched_modality(meta, case):
        out.append(f"modality {study['modality']}")
    if f.sex and study["sex"] != f.sex:
        out.append(f"sex {study['sex']}")
    if f.age:
        low, high = f.age
        age = study["age"]
        if age is None or (low is not None and age < low) or (high is not None and age > high):
            out.append(f"age {age}")
    if f.views and view not in f.views:
        out.append(f"view {view}")
    if set(f.exclude_flags) & flags or not set(f.require_flags) <= flags:
        out.append(f"flags {sorted(flags)}")
    day = study["study_date"]
    if (f.date_from or f.date_to) and (
        day is None or (f.date_from and day < f.date_from) or (f.date_to and day > f.date_to)
    ):
        out.append(f"date {day}")
    if f.batches and study["batch"] not in f.batches:
        out.append(f"batch {study['batch']}")
    if f.attributes and any(study["attributes"].get(k) != v for k, v in f.attributes.items()):
        out.append(f"attributes {study['attributes']}")
    why = excluded(meta, case, study["study_id"])
    if why:
        out.append(why)
    return out


def n_matching(meta: Meta, case: Case) -> int:
    """How many studies have an image that passes every filter."""
    return sum(
        any(not failures(meta, case, i) for i in images) for images in meta.images_of.values()
    )


def check(meta: Meta, case: Case, hits: list[dict], path: str, *, counted: bool) -> None:
    """Every hit passes every filter at the image it is shown at, and shows that image's
    metadata; with ``counted``, the search returned min(k, matching studies) hits."""
    bad = []
    for hit in hits:
        image_id = hit["image_id"]
        if image_id not in meta.images_of.get(hit["study_id"], []):
            bad.append((hit, f"image {image_id} is not a vector of the study"))
            continue
        broken = failures(meta, case, image_id)
        study = meta.studies[hit["study_id"]]
        shown = (hit["view"], set(hit["flags"]), hit["sex"], hit["modality"])
        stored = (meta.view(image_id), meta.flags(image_id), study["sex"], study["modality"])
        if shown != stored:
            broken.append(f"shows {shown}, stored {stored}")
        if broken:
            bad.append((hit, broken))
    assert not bad, f"{path}: {case}: hits that break the filters: {bad}"
    ids = [h["study_id"] for h in hits]
    assert len(ids) == len(set(ids)) <= case.k, f"{path}: {case}: {ids}"
    if counted:
        want = min(case.k, n_matching(meta, case))
        assert len(hits) == want, f"{path}: {case}: {len(hits)} hits, {want} match: {ids}"
