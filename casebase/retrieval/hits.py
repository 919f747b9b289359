"""The value a search returns: one ranked study (not image)."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Hit:
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
    image_path: str | None = None
    patient_key: str | None = None
    extra: dict = field(default_factory=dict)

    @property
    def similarity(self) -> float:
        """Cosine similarity: pgvector's cosine distance is 1 - similarity."""
        return 1.0 - self.distance
