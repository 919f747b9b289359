"""The image–text pairs `casebase train` learns from, and the held-out P@k it stops on.

A pair is one embedded image of a space and a text about its study. The text
comes from what ingest already stored, never from raw reports:

- ``report``: the sanitised impression and findings (``casebase.report``);
- ``findings``: the present findings of the rule labeller, rendered as text
  ("cardiomegaly, pleural effusion", or "no finding");
- ``label:COLUMN``: a manifest column (``study.attributes ->> COLUMN``), rendered
  the same way (values split on ``;``).

Each pair also carries *relevance labels* (the label values, or the present
findings) for the held-out precision@k: a neighbour is relevant when it shares
one, the same agreement `casebase eval` measures. The held-out split is by
patient, so no patient has images on both sides (a study without a patient key
is its own patient).
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from casebase.db.spaces import Space
from casebase.errors import InputError

if TYPE_CHECKING:
    from psycopg import Connection

log = logging.getLogger(__name__)

NO_FINDING = "no finding"


@dataclass(frozen=True)
class TextSource:
    """Where a pair's text comes from: ``report``, ``findings`` or ``label`` + column."""

    kind: str
    column: str | None = None

    @classmethod
    def parse(cls, text: str) -> TextSource:
        text = text.strip()
        if text in ("report", "findings"):
            return cls(text)
        for sep in (":", "=", " "):
            head, _, column = text.partition(sep)
            if head == "label" and column.strip():
                return cls("label", column.strip())
        raise InputError(
            f"--text must be report, findings or label:COLUMN (a manifest column), got {text!r}"
        )

    def __str__(self) -> str:
        return f"label:{self.column}" if self.kind == "label" else self.kind


@dataclass(frozen=True)
class Pair:
    image_pk: int
    study_pk: int
    study_id: str
    group: str  # the patient (or the study, when it has no patient key)
    modality: str
    uri: str
    text: str
    labels: frozenset[str]


def split_values(value: str | None) -> list[str]:
    """A label cell → its values (``;``-separated, as `casebase eval` reads them)."""
    if value is None:
        return []
    return sorted({v.strip() for v in value.split(";") if v.strip()})


def render_values(values: Sequence[str]) -> str:
    """Label values or finding names as text: ``pleural_effusion`` → "pleural effusion"."""
    return ", ".join(v.replace("_", " ") for v in values) or NO_FINDING


_PAIRS_SQL = """
SELECT e.image_pk, e.study_pk, e.study_id, e.patient_key, e.modality, i.uri,
       s.attributes ->> %(column)s AS label,
       r.impression, r.findings, (r.study_pk IS NOT NULL) AS has_report,
       ARRAY(SELECT f.finding FROM casebase.finding f
             WHERE f.study_pk = e.study_pk AND f.status = 'present' AND f.backend = 'rules'
             ORDER BY f.finding) AS present
FROM casebase.embedding e
JOIN casebase.image i ON i.image_pk = e.image_pk
JOIN casebase.study s ON s.study_pk = e.study_pk
LEFT JOIN casebase.report r ON r.study_pk = e.study_pk
WHERE e.space_id = %(space)s {extra}
ORDER BY e.image_pk
"""


def load_pairs(
    conn,
    space: Space,
    source: TextSource,
    *,
    image_pks: Sequence[int] | None = None,
    exclude_batches: Sequence[str] = (),
) -> list[Pair]:
    """The (image, text) pairs of a space; images without a text of that kind are left
    out, and so are the images of ``exclude_batches`` (kept for evaluation)."""
    extra = "AND e.image_pk = ANY(%(pks)s)" if image_pks is not None else ""
    if exclude_batches:
        extra += " AND NOT (e.batch = ANY(%(exclude)s))"
    rows = conn.execute(
        _PAIRS_SQL.format(extra=extra),
        {
            "column": source.column or "",
            "space": space.space_id,
            "pks": list(image_pks or []),
            "exclude": list(exclude_batches),
        },
    ).fetchall()
    pairs = []
    for (
        pk,
        spk,
        sid,
        patient,
        modality,
        uri,
        label,
        impression,
        findings,
        has_report,
        present,
    ) in rows:
        found = sorted(present or [])
        relevance = frozenset(found or ([NO_FINDING] if has_report else []))
        if source.kind == "label":
            values = split_values(label)
            if not values:
                continue
            text, relevance = render_values(values), frozenset(values)
        elif source.kind == "findings":
            if not has_report:
                continue
            text = render_values(found)
        else:
            text = " ".join(t.strip() for t in (impression, findings) if t and t.strip())
            if not text:
                continue
        group = patient or f"study:{sid}"
        pairs.append(Pair(pk, spk, sid, group, modality, uri, text, relevance))
    return pairs


def text_of_study(conn: Connection, source: TextSource, study_pks: Sequence[int]) -> dict[int, str]:
    """study_pk → its text (label fusion renders the same text training used)."""
    rows = conn.execute(
        """
        SELECT s.study_pk, s.attributes ->> %(column)s, (r.study_pk IS NOT NULL),
               r.impression, r.findings,
               ARRAY(SELECT f.finding FROM casebase.finding f
                     WHERE f.study_pk = s.study_pk AND f.status = 'present'
                       AND f.backend = 'rules' ORDER BY f.finding)
        FROM casebase.study s LEFT JOIN casebase.report r ON r.study_pk = s.study_pk
        WHERE s.study_pk = ANY(%(pks)s)
        """,
        {"column": source.column or "", "pks": list(study_pks)},
    ).fetchall()
    out: dict[int, str] = {}
    for spk, label, has_report, impression, findings, present in rows:
        if source.kind == "label":
            values = split_values(label)
            if values:
                out[spk] = render_values(values)
        elif source.kind == "findings":
            if has_report:
                out[spk] = render_values(sorted(present or []))
        else:
            text = " ".join(t.strip() for t in (impression, findings) if t and t.strip())
            if text:
                out[spk] = text
    return out


def grades_of(pairs: Sequence[Pair]) -> list[float]:
    """The numeric grade of each pair, for ``ordinal`` training: each needs exactly one
    label value that is a number (``0``..``4``, ``2.5``)."""
    grades, bad = [], set()
    for p in pairs:
        try:
            (value,) = p.labels
            grades.append(float(value))
        except ValueError:
            bad.add(";".join(sorted(p.labels)))
    if bad:
        shown = ", ".join(repr(b) for b in sorted(bad)[:5])
        raise InputError(
            f"--ordinal needs one numeric grade per image (a label column like kl = 0..4); "
            f"got {shown}" + (f" and {len(bad) - 5} more" if len(bad) > 5 else "")
        )
    return grades


def epoch_order(texts: Sequence[str], *, seed: int, epoch: int, balanced: bool) -> list[int]:
    """The order images are visited in one epoch (as many draws as images): a seeded
    permutation, or with ``balanced`` a seeded draw with replacement in which every text
    (label) is equally likely, so rare grades are seen as often as common ones."""
    rng = np.random.default_rng([seed, epoch])
    n = len(texts)
    if not balanced:
        return rng.permutation(n).tolist()
    _, inverse, counts = np.unique(np.array(texts, dtype=object), return_inverse=True,
                                   return_counts=True)  # fmt: skip
    weights = 1.0 / counts[inverse]
    return rng.choice(n, size=n, replace=True, p=weights / weights.sum()).tolist()


def split_by_patient(
    pairs: Sequence[Pair], fraction: float, seed: int
) -> tuple[list[Pair], list[Pair]]:
    """(train, held-out): a seeded share of the *patients* is held out, all their images."""
    if not 0.0 < fraction < 1.0:
        raise InputError(f"the held-out fraction must be between 0 and 1, got {fraction}")
    groups = sorted({p.group for p in pairs})
    if len(groups) < 2:
        raise InputError(f"need at least 2 patients to hold some out, got {len(groups)}")
    rng = np.random.default_rng(seed)
    n_held = min(len(groups) - 1, max(1, round(fraction * len(groups))))
    held_groups = {groups[i] for i in rng.choice(len(groups), size=n_held, replace=False)}
    train = [p for p in pairs if p.group not in held_groups]
    held = [p for p in pairs if p.group in held_groups]
    return train, held


class PairImages:
    """Map-style dataset: index → (tensor | None, index). Picklable for DataLoader workers.

    ``transform`` maps a decoded image to a tensor; ``load``, when given, maps the URI
    itself to the tensor (a cached, augmenting loader: ``casebase.train.augment``).
    An image that no longer decodes (moved, truncated since ingest) yields None
    and is dropped by ``collate``; training goes on without it.
    """

    def __init__(self, uris: Sequence[str], transform: Any, *, load: Any = None) -> None:
        self.uris, self.transform, self.load = list(uris), transform, load

    def __len__(self) -> int:
        return len(self.uris)

    def __getitem__(self, index: int) -> tuple[Any, int]:
        from casebase.imaging.images import load_image

        try:
            if self.load is not None:
                return self.load(self.uris[index]), index
            return self.transform(load_image(self.uris[index])), index
        except Exception as exc:  # one unreadable file must not stop training
            log.debug("cannot read %s: %s", self.uris[index], exc)
            return None, index


def collate(samples: list[tuple[Any, int]]) -> tuple[Any, list[int], int]:
    """Stack the readable images; return (batch | None, their indices, number dropped)."""
    import torch

    ok = [(t, i) for t, i in samples if t is not None]
    batch = torch.stack([t for t, _ in ok]) if ok else None
    return batch, [i for _, i in ok], len(samples) - len(ok)


def precision_at_k(
    vectors: np.ndarray,
    labels: Sequence[frozenset[str]],
    groups: Sequence[str],
    modalities: Sequence[str],
    k: int,
    *,
    max_queries: int = 2000,
    seed: int = 0,
) -> float:
    """Exact in-memory kNN P@k: the share of each query's k nearest (cosine) held-out
    images that share a relevance label with it. A query never sees its own patient's
    images, nor another modality's (searches are per modality). Queries without a
    relevance label are skipped; a seeded sample of ``max_queries`` bounds the cost."""
    n = len(vectors)
    vocab: dict[str, int] = {}
    for values in labels:
        for v in values:
            vocab.setdefault(v, len(vocab))
    member = np.zeros((n, max(1, len(vocab))), dtype=bool)
    for row, values in enumerate(labels):
        member[row, [vocab[v] for v in values]] = True
    group_ids = _codes(groups)
    modality_ids = _codes(modalities)
    queries = np.flatnonzero(member.any(axis=1))
    if len(queries) == 0 or n <= k:
        return float("nan")
    if len(queries) > max_queries:
        queries = np.sort(np.random.default_rng(seed).choice(queries, max_queries, replace=False))
    vecs = vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
    precisions = []
    for start in range(0, len(queries), 256):
        q = queries[start : start + 256]
        sims = vecs[q] @ vecs.T
        blocked = (group_ids[q][:, None] == group_ids[None, :]) | (
            modality_ids[q][:, None] != modality_ids[None, :]
        )
        sims[blocked] = -np.inf
        top = np.argpartition(-sims, k - 1, axis=1)[:, :k]
        valid = np.isfinite(np.take_along_axis(sims, top, axis=1))
        shared = (member[q][:, None, :] & member[top]).any(axis=2) & valid
        precisions.append(shared.sum(axis=1) / k)
    return float(np.concatenate(precisions).mean())


def _codes(values: Sequence[str]) -> np.ndarray:
    index: dict[str, int] = defaultdict(lambda: len(index))
    return np.array([index[v] for v in values], dtype=np.int64)
