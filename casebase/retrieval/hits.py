"""The value a search returns: one ranked study (not image)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Hit:
    """One ranked study. ``image_id`` is the study's nearest image (the one the distance
    is to), ``route`` how the SQL found it (``hnsw``, ``exact``, ``exact-filtered``, ...),
    ``score`` the fused rank score of a hybrid search (None otherwise)."""

    rank: int
    study_id: str
    distance: float
    modality: str
    age: float | None = None
    sex: str | None = None
    view: str | None = None
    flags: tuple[str, ...] = ()
    impression: str | None = None
    sources: tuple[str, ...] = ("image",)
    image_id: int | None = None
    route: str | None = None
    score: float | None = None

    @property
    def similarity(self) -> float:
        """Cosine similarity: pgvector's cosine distance is 1 - similarity."""
        return 1.0 - self.distance

    def to_dict(self) -> dict[str, Any]:
        """The JSON of ``casebase search --json``, key for key what it was before
        ``image_id``, ``route`` and ``score`` became fields: they stay under ``extra``,
        and the two keys that were never filled (``image_path``, ``patient_key``) stay
        null, so scripts that read the output keep working."""
        return {
            "rank": self.rank,
            "study_id": self.study_id,
            "distance": self.distance,
            "modality": self.modality,
            "age": self.age,
            "sex": self.sex,
            "view": self.view,
            "flags": list(self.flags),
            "impression": self.impression,
            "sources": list(self.sources),
            "image_path": None,
            "patient_key": None,
            "extra": {"image_id": self.image_id, "route": self.route, "score": self.score},
            "similarity": self.similarity,
        }
